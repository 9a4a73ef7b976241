//! Quantization: `quantize(values, scheme)` packs a vector of floats into a `Binary` blob and
//! `dequantize(blob, scheme)` unpacks it into a `List<Float32>`. The kernels are in [`ggml`] (the llama.cpp block
//! formats), [`nf4`] and [`int8`]; [`Scheme`] dispatches to them and can be called directly:
//!
//! ```
//! use marrow_udfs::quant::Scheme;
//!
//! let x: Vec<f32> = (0..32).map(|i| i as f32 - 16.0).collect();
//! let scheme = Scheme::parse("q8_0").unwrap();
//! let mut blob = vec![0u8; scheme.quantized_len(x.len()).unwrap()];
//! scheme.quantize(&x, &mut blob).unwrap();
//! assert_eq!(blob.len(), 34); // one block: fp16 scale + 32 int8
//! let mut y = vec![0f32; scheme.dequantized_len(blob.len()).unwrap()];
//! scheme.dequantize(&blob, &mut y).unwrap();
//! assert!(x.iter().zip(&y).all(|(a, b)| (a - b).abs() <= 16.0 / 127.0 / 2.0 + 1e-3));
//! ```
//!
//! # Schemes and byte layouts
//!
//! All multi-byte numbers are little-endian. A blob is the concatenation of its blocks, in order.
//!
//! | scheme | values per block | bytes per block | block layout |
//! |--------|------------------|-----------------|--------------|
//! | `q8_0` | 32  | 34  | fp16 `d`, 32 × int8 `q`; value = `q·d` |
//! | `q4_0` | 32  | 18  | fp16 `d`, 16 bytes: byte `j` holds value `j` in its low nibble and value `j+16` in its high nibble; value = `(nibble−8)·d` |
//! | `q4_k` | 256 | 144 | fp16 `d`, fp16 `dmin`, 12 bytes of 6-bit scales and mins for 8 sub-blocks of 32, 128 bytes of nibbles (ggml `block_q4_K`) |
//! | `q2_k` | 256 | 84  | 16 bytes of 4-bit scale/min pairs for 16 sub-blocks of 16, 64 bytes of 2-bit quants, fp16 `d`, fp16 `dmin` (ggml `block_q2_K`) |
//! | `nf4`  | 64  | 36  | f32 `absmax`, 32 bytes: byte `j` holds value `2j` in its **high** nibble and value `2j+1` in its low nibble (bitsandbytes' order); value = `NF4[code]·absmax` |
//! | `int8` | the whole vector | 4 + n | f32 `scale` (= max\|x\| / 127), then n × int8 `q`; value = `q·scale` |
//!
//! The ggml blobs are exactly the bytes of GGUF tensor data of those types (`GGMLQuantizationType` Q8_0 = 8,
//! Q4_0 = 2, Q2_K = 10, Q4_K = 12), so a row quantized here can be written into a GGUF file as is.
//!
//! * `q8_0` and `q4_0` quantize bit for bit like llama.cpp's reference (`quantize_row_q8_0_ref`,
//!   `quantize_row_q4_0_ref`) as gguf-py 0.19's numpy code computes it (`gguf.quants`): `q8_0` takes
//!   `d = max|x|/127`, `id = 1/d` (0 when `d = 0`) and `q = round(x·id)`, halves away from zero; `q4_0` takes the
//!   signed value `m` of largest magnitude (the first one on ties), `d = m/−8`, and `q = min(15, trunc(x·id + 8.5))`.
//!   Products and sums are rounded separately (no fused multiply-add), as numpy does. One corner case follows
//!   numpy on x86-64 rather than C (where it is undefined): when `1/d` overflows (a block whose largest magnitude is
//!   below about 4e-37 for `q8_0`, 2e-38 for `q4_0`, so that `d` is 0 in fp16 anyway) the quants are all 0.
//! * `q4_k` and `q2_k` dequantize exactly as ggml's `dequantize_row_q4_K` / `dequantize_row_q2_K` (and gguf-py).
//!   Quantizing them follows ggml's reference quantizers (`quantize_row_q4_K_ref`, `quantize_row_q2_K_ref`:
//!   the weighted min/scale search of `make_qkx2_quants`, no importance matrix); gguf-py has no K-quant quantizer
//!   to compare against, so those blobs are checked by their round-trip error, not bit for bit.
//! * `nf4` is QLoRA's 4-bit NormalFloat with bitsandbytes' 16-value codebook ([`nf4::CODEBOOK`]) and block size
//!   64: each value is scaled by `1/absmax` and stored as the code of the nearest codebook value (bitsandbytes'
//!   midpoint thresholds; a value exactly on a midpoint takes the lower code). No GGUF type exists for it.
//! * `int8` is symmetric per-vector quantization for embeddings: the `q8_0` rule with a single block spanning the
//!   whole vector and an f32 scale, so any length works and a 384-float embedding takes 388 bytes instead of 1536.
//!
//! # Arguments
//!
//! `values` is a `List`, `LargeList` or `FixedSizeList` of floats (`Float32`; other numeric elements are cast to
//! `Float32` first), or a `Binary`/`LargeBinary`/`BinaryView` holding a tensor's raw little-endian f32 bytes (its
//! length must be a multiple of 4). The ggml schemes need a whole number of blocks (a multiple of 32, or of 256 for
//! the K-quants), `nf4` a multiple of 64, and `int8` any length. NaN and infinite values are an error. A NULL
//! argument, or a list holding a NULL element, gives NULL. `scheme` is a string, case-insensitive
//! (`'Q4_K'` works too); an unknown scheme is an error listing the known ones.
//!
//! `blob` is `Binary` (or `LargeBinary`, `BinaryView`, `FixedSizeBinary`); its length must be a whole number of the
//! scheme's blocks (at least the 4-byte scale for `int8`), otherwise the error names the scheme and block size.

pub mod ggml;
pub mod int8;
pub mod nf4;

mod functions;

use std::fmt;
use std::sync::Arc;

use datafusion::logical_expr::ScalarUDF;

pub use functions::{Dequantize, Quantize};

/// `quantize` and `dequantize`, ready to register.
pub fn functions() -> Vec<Arc<ScalarUDF>> {
    vec![
        Arc::new(ScalarUDF::from(Quantize::new())),
        Arc::new(ScalarUDF::from(Dequantize::new())),
    ]
}

/// A quantization scheme: see the [module documentation](self) for the byte layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    Q8_0,
    Q4_0,
    Q4K,
    Q2K,
    Nf4,
    Int8,
}

/// The scheme names, as error messages list them.
pub const SCHEME_NAMES: &str = "q8_0, q4_0, q4_k, q2_k, nf4, int8";

/// Why a vector or a blob cannot be (de)quantized.
#[derive(Clone, Debug, PartialEq)]
pub enum QuantError {
    /// The scheme name is not one of [`SCHEME_NAMES`].
    UnknownScheme(String),
    /// The number of values is not a whole number of blocks.
    ValueCount { scheme: Scheme, values: usize },
    /// The blob length is not a whole number of blocks.
    BlobLength { scheme: Scheme, bytes: usize },
    /// A NaN or infinite value.
    NonFinite { index: usize, value: f32 },
}

impl fmt::Display for QuantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuantError::UnknownScheme(name) => {
                write!(f, "unknown quantization scheme '{name}'; expected one of {SCHEME_NAMES}")
            }
            QuantError::ValueCount { scheme, values } => {
                let (block, _) = scheme.block().unwrap_or((1, 1));
                write!(
                    f,
                    "{scheme} quantizes blocks of {block} values; got {values} values, not a multiple of {block}"
                )
            }
            QuantError::BlobLength { scheme, bytes } => match scheme.block() {
                Some((values, block_bytes)) => write!(
                    f,
                    "a {scheme} blob is a whole number of {block_bytes}-byte blocks ({values} values each); \
                     got {bytes} bytes"
                ),
                None => write!(
                    f,
                    "an {scheme} blob is a 4-byte f32 scale followed by one byte per value; got {bytes} bytes"
                ),
            },
            QuantError::NonFinite { index, value } => write!(
                f,
                "cannot quantize a NaN or infinite value ({value} at index {index})"
            ),
        }
    }
}

impl std::error::Error for QuantError {}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Values checked for NaN/Inf and quantized at a time: a multiple of every block size, small enough to stay in cache
/// between the check and the kernel.
const CHUNK: usize = 8192;

impl Scheme {
    pub const ALL: [Scheme; 6] = [
        Scheme::Q8_0,
        Scheme::Q4_0,
        Scheme::Q4K,
        Scheme::Q2K,
        Scheme::Nf4,
        Scheme::Int8,
    ];

    /// The scheme called `name` (ASCII case-insensitive).
    pub fn parse(name: &str) -> Result<Scheme, QuantError> {
        Scheme::ALL
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| QuantError::UnknownScheme(name.to_string()))
    }

    pub fn name(self) -> &'static str {
        match self {
            Scheme::Q8_0 => "q8_0",
            Scheme::Q4_0 => "q4_0",
            Scheme::Q4K => "q4_k",
            Scheme::Q2K => "q2_k",
            Scheme::Nf4 => "nf4",
            Scheme::Int8 => "int8",
        }
    }

    /// `(values, bytes)` per block; `None` for `int8`, whose one block spans the vector.
    pub fn block(self) -> Option<(usize, usize)> {
        match self {
            Scheme::Q8_0 => Some((ggml::QK8_0, ggml::Q8_0_BYTES)),
            Scheme::Q4_0 => Some((ggml::QK4_0, ggml::Q4_0_BYTES)),
            Scheme::Q4K => Some((ggml::QK_K, ggml::Q4_K_BYTES)),
            Scheme::Q2K => Some((ggml::QK_K, ggml::Q2_K_BYTES)),
            Scheme::Nf4 => Some((nf4::BLOCK, nf4::BLOCK_BYTES)),
            Scheme::Int8 => None,
        }
    }

    /// The blob length for `n` values.
    pub fn quantized_len(self, n: usize) -> Result<usize, QuantError> {
        match self.block() {
            Some((values, bytes)) if n.is_multiple_of(values) => Ok(n / values * bytes),
            Some(_) => Err(QuantError::ValueCount {
                scheme: self,
                values: n,
            }),
            None => Ok(int8::quantized_len(n)),
        }
    }

    /// The number of values in a blob of `bytes` bytes.
    pub fn dequantized_len(self, bytes: usize) -> Result<usize, QuantError> {
        let n = match self.block() {
            Some((values, block_bytes)) if bytes.is_multiple_of(block_bytes) => {
                Some(bytes / block_bytes * values)
            }
            Some(_) => None,
            None => int8::dequantized_len(bytes),
        };
        n.ok_or(QuantError::BlobLength {
            scheme: self,
            bytes,
        })
    }

    /// Quantize `x` into `out`, which must be exactly [`Scheme::quantized_len`] bytes long.
    pub fn quantize(self, x: &[f32], out: &mut [u8]) -> Result<(), QuantError> {
        let len = self.quantized_len(x.len())?;
        assert_eq!(out.len(), len, "output length for {self}");
        let Some((values, bytes)) = self.block() else {
            check_finite(x, 0)?;
            int8::quantize(x, out);
            return Ok(());
        };
        let kernel = match self {
            Scheme::Q8_0 => ggml::quantize_q8_0,
            Scheme::Q4_0 => ggml::quantize_q4_0,
            Scheme::Q4K => ggml::quantize_q4_k,
            Scheme::Q2K => ggml::quantize_q2_k,
            Scheme::Nf4 => nf4::quantize,
            Scheme::Int8 => unreachable!("int8 has no blocks"),
        };
        let out_chunk = CHUNK / values * bytes;
        for (i, (x, out)) in x.chunks(CHUNK).zip(out.chunks_mut(out_chunk)).enumerate() {
            check_finite(x, i * CHUNK)?;
            kernel(x, out);
        }
        Ok(())
    }

    /// Dequantize `blob` into `out`, which must be exactly [`Scheme::dequantized_len`] values long.
    pub fn dequantize(self, blob: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
        let len = self.dequantized_len(blob.len())?;
        assert_eq!(out.len(), len, "output length for {self}");
        match self {
            Scheme::Q8_0 => ggml::dequantize_q8_0(blob, out),
            Scheme::Q4_0 => ggml::dequantize_q4_0(blob, out),
            Scheme::Q4K => ggml::dequantize_q4_k(blob, out),
            Scheme::Q2K => ggml::dequantize_q2_k(blob, out),
            Scheme::Nf4 => nf4::dequantize(blob, out),
            Scheme::Int8 => int8::dequantize(blob, out),
        }
        Ok(())
    }
}

/// The bits of `max |x|` (sign bits cleared): for non-negative floats the bit patterns order like the values, and
/// NaN and ±Inf have the largest patterns, so one vectorizable pass gives both the magnitude and whether `x` is
/// finite.
#[inline(always)]
pub(crate) fn amax_bits(x: &[f32]) -> u32 {
    x.iter().fold(0u32, |m, v| m.max(v.to_bits() & 0x7fff_ffff))
}

/// `max |x|` of finite values (`+0.0` for an empty or all-zero slice).
#[inline(always)]
pub(crate) fn amax(x: &[f32]) -> f32 {
    f32::from_bits(amax_bits(x))
}

const INF_BITS: u32 = 0x7f80_0000;

fn check_finite(x: &[f32], offset: usize) -> Result<(), QuantError> {
    if amax_bits(x) < INF_BITS {
        return Ok(());
    }
    let index = x.iter().position(|v| !v.is_finite()).unwrap_or(0);
    Err(QuantError::NonFinite {
        index: offset + index,
        value: x[index],
    })
}

const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds |v| < 2^22 to an integer, ties to even

/// `roundf(v)` (halves away from zero) for `|v| < 2^22`, in float and integer operations only (no float→int
/// conversion, whose saturating form does not vectorize well): round `|v|` to nearest-even with the magic number,
/// step up when that was a tie rounded down, restore the sign. Any other input gives an unspecified value.
#[inline(always)]
pub(crate) fn round_away(v: f32) -> i32 {
    let a = v.abs();
    let m = a + MAGIC;
    let r = m - MAGIC;
    let q = (m.to_bits() as i32 - MAGIC.to_bits() as i32) + ((a - r) == 0.5) as i32;
    let sign = (v.to_bits() as i32) >> 31;
    (q ^ sign) - sign
}

/// `trunc(v)` for `0 <= v < 2^22` the same way (round to nearest, step down if that went up). Any other input gives
/// an unspecified value.
#[inline(always)]
pub(crate) fn trunc_positive(v: f32) -> i32 {
    let m = v + MAGIC;
    let r = m - MAGIC;
    (m.to_bits() as i32 - MAGIC.to_bits() as i32) - (r > v) as i32
}

/// Defines `pub fn $name` calling `$imp` (an `#[inline(always)]` kernel), compiled a second time with AVX2 enabled
/// and chosen at run time. AVX2 only widens the vectors: Rust never fuses multiplies and adds, so both versions
/// compute the same bits.
macro_rules! dispatch {
    ($(#[$meta:meta])* pub fn $name:ident($($arg:ident: $ty:ty),*) => $imp:ident) => {
        $(#[$meta])*
        pub fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) {
                    $imp($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2, the only feature `avx2` was compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $imp($($arg),*)
        }
    };
}
pub(crate) use dispatch;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// `n` standard normal floats (Box-Muller over a seeded RNG).
    pub(crate) fn gaussian(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let u: f64 = rng.random_range(1e-12..1.0);
                let v: f64 = rng.random_range(0.0..1.0);
                ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
            })
            .collect()
    }

    #[test]
    fn round_away_matches_roundf() {
        let mut v = -130.0f32;
        while v <= 130.0 {
            assert_eq!(round_away(v), v.round() as i32, "{v}");
            v += 0.03125;
        }
        for v in [
            0.49999997f32,
            -0.49999997,
            0.5,
            -0.5,
            126.5,
            -126.5,
            1e-30,
            -0.0,
        ] {
            assert_eq!(round_away(v), v.round() as i32, "{v}");
        }
    }

    #[test]
    fn parse_and_lengths() {
        assert_eq!(Scheme::parse("Q4_K"), Ok(Scheme::Q4K));
        assert_eq!(
            Scheme::parse("q3_k").unwrap_err().to_string(),
            "unknown quantization scheme 'q3_k'; expected one of q8_0, q4_0, q4_k, q2_k, nf4, int8"
        );
        assert_eq!(Scheme::Q8_0.quantized_len(64), Ok(68));
        assert_eq!(Scheme::Q4_0.quantized_len(32), Ok(18));
        assert_eq!(Scheme::Q4K.quantized_len(512), Ok(288));
        assert_eq!(Scheme::Q2K.quantized_len(256), Ok(84));
        assert_eq!(Scheme::Nf4.quantized_len(128), Ok(72));
        assert_eq!(Scheme::Int8.quantized_len(3), Ok(7));
        assert_eq!(Scheme::Int8.quantized_len(0), Ok(4));
        for s in Scheme::ALL {
            assert_eq!(s.quantized_len(0).and_then(|b| s.dequantized_len(b)), Ok(0));
        }
        assert_eq!(
            Scheme::Q8_0.quantized_len(33).unwrap_err().to_string(),
            "q8_0 quantizes blocks of 32 values; got 33 values, not a multiple of 32"
        );
        assert_eq!(
            Scheme::Q4K.quantized_len(32).unwrap_err().to_string(),
            "q4_k quantizes blocks of 256 values; got 32 values, not a multiple of 256"
        );
        assert_eq!(
            Scheme::Q8_0.dequantized_len(35).unwrap_err().to_string(),
            "a q8_0 blob is a whole number of 34-byte blocks (32 values each); got 35 bytes"
        );
        assert_eq!(
            Scheme::Int8.dequantized_len(3).unwrap_err().to_string(),
            "an int8 blob is a 4-byte f32 scale followed by one byte per value; got 3 bytes"
        );
    }

    #[test]
    fn non_finite_values_are_errors() {
        for s in Scheme::ALL {
            let mut x = vec![0.5f32; 512];
            x[300] = f32::NAN;
            let mut out = vec![0u8; s.quantized_len(512).unwrap()];
            assert_eq!(
                s.quantize(&x, &mut out).unwrap_err().to_string(),
                "cannot quantize a NaN or infinite value (NaN at index 300)"
            );
            x[300] = 0.0;
            x[9000 % 512] = f32::NEG_INFINITY;
            assert!(matches!(
                s.quantize(&x, &mut out),
                Err(QuantError::NonFinite { index: 296, .. })
            ));
        }
        // Past the first chunk the index is still the position in the whole vector.
        let mut x = vec![1.0f32; 3 * CHUNK];
        x[CHUNK + 7] = f32::INFINITY;
        let mut out = vec![0u8; Scheme::Q8_0.quantized_len(x.len()).unwrap()];
        assert_eq!(
            Scheme::Q8_0.quantize(&x, &mut out),
            Err(QuantError::NonFinite {
                index: CHUNK + 7,
                value: f32::INFINITY
            })
        );
    }
}
