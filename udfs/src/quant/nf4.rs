//! `nf4`: QLoRA's 4-bit NormalFloat with bitsandbytes' codebook, block size 64 and an f32 absmax per block.
//!
//! Block layout (36 bytes for 64 values): the block's `absmax = max|x|` as a little-endian f32, then 32 bytes of
//! codes; byte `j` holds the code of value `2j` in its **high** nibble and of value `2j+1` in its low nibble, the
//! order bitsandbytes packs them in (so bytes 4..36 of each block are bitsandbytes' packed data for that block).
//! A value is stored as the code of the codebook entry nearest to `x/absmax` (computed as `x·(1/absmax)`, as
//! bitsandbytes does), using bitsandbytes' midpoint thresholds; a value exactly on a midpoint takes the lower code.
//! It dequantizes to `CODEBOOK[code]·absmax`. An all-zero block has absmax 0 and every code 7 (the codebook's 0).

use super::{amax, dispatch};

/// Values per block.
pub const BLOCK: usize = 64;
/// Bytes per block: f32 absmax + 32 bytes of codes.
pub const BLOCK_BYTES: usize = 4 + BLOCK / 2;

/// bitsandbytes' NF4 codebook (quantiles of N(0, 1) normalized to [-1, 1], with an exact 0 at code 7).
#[allow(clippy::excessive_precision)]
pub const CODEBOOK: [f32; 16] = [
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
];

/// The midpoints between consecutive codebook entries, as bitsandbytes' `dQuantizeNF4` compares with them: the code
/// of `v` is the number of thresholds `v` is greater than.
#[allow(clippy::excessive_precision)]
const THRESHOLDS: [f32; 15] = [
    -0.8480964004993439,
    -0.6106329262256622,
    -0.4599952697753906,
    -0.33967943489551544,
    -0.23460740596055984,
    -0.13791173323988914,
    -0.045525018125772476,
    0.03979014977812767,
    0.1202552504837513,
    0.2035212516784668,
    0.2920137718319893,
    0.3893125355243683,
    0.5016634166240692,
    0.6427869200706482,
    0.8614784181118011,
];

/// The code of a normalized value (in [-1, 1]).
#[inline(always)]
pub fn code(v: f32) -> u8 {
    let mut c = 0i32;
    for t in THRESHOLDS {
        c += (v > t) as i32;
    }
    c as u8
}

dispatch!(
    /// Quantize whole blocks of 64 values into 36-byte blocks.
    pub fn quantize(x: &[f32], out: &mut [u8]) => quantize_impl
);

#[inline(always)]
fn quantize_impl(x: &[f32], out: &mut [u8]) {
    assert!(
        x.len().is_multiple_of(BLOCK) && out.len() == x.len() / BLOCK * BLOCK_BYTES,
        "{} values and {} bytes are not whole nf4 blocks",
        x.len(),
        out.len()
    );
    for (x, out) in x.chunks_exact(BLOCK).zip(out.chunks_exact_mut(BLOCK_BYTES)) {
        let absmax = amax(x);
        out[..4].copy_from_slice(&absmax.to_le_bytes());
        let inv = if absmax > 0.0 { 1.0 / absmax } else { 0.0 };
        let x: &[f32; BLOCK] = x.try_into().expect("a whole block");
        let mut v = [0f32; BLOCK];
        if inv.is_finite() {
            for j in 0..BLOCK {
                v[j] = x[j] * inv;
            }
        } else {
            // absmax is subnormal: 1/absmax overflows, so divide instead.
            for j in 0..BLOCK {
                v[j] = x[j] / absmax;
            }
        }
        // code(v) for the whole block, thresholds outermost: 32-bit counters keep every step a full vector.
        let mut codes = [0i32; BLOCK];
        for t in THRESHOLDS {
            for j in 0..BLOCK {
                codes[j] += (v[j] > t) as i32;
            }
        }
        for (b, pair) in out[4..].iter_mut().zip(codes.chunks_exact(2)) {
            *b = ((pair[0] << 4) | pair[1]) as u8;
        }
    }
}

dispatch!(
    /// Dequantize whole 36-byte blocks into 64 values each.
    pub fn dequantize(blob: &[u8], out: &mut [f32]) => dequantize_impl
);

#[inline(always)]
fn dequantize_impl(blob: &[u8], out: &mut [f32]) {
    assert!(
        blob.len().is_multiple_of(BLOCK_BYTES) && out.len() == blob.len() / BLOCK_BYTES * BLOCK,
        "{} bytes and {} values are not whole nf4 blocks",
        blob.len(),
        out.len()
    );
    for (b, y) in blob
        .chunks_exact(BLOCK_BYTES)
        .zip(out.chunks_exact_mut(BLOCK))
    {
        let absmax = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        for (pair, &c) in y.chunks_exact_mut(2).zip(&b[4..]) {
            pair[0] = CODEBOOK[(c >> 4) as usize] * absmax;
            pair[1] = CODEBOOK[(c & 0x0f) as usize] * absmax;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::gaussian;
    use super::*;

    fn round_trip(x: &[f32]) -> (Vec<u8>, Vec<f32>) {
        let mut blob = vec![0u8; x.len() / BLOCK * BLOCK_BYTES];
        quantize(x, &mut blob);
        let mut y = vec![0f32; x.len()];
        dequantize(&blob, &mut y);
        (blob, y)
    }

    #[test]
    fn codes_are_nearest_codebook_entries() {
        for (i, &c) in CODEBOOK.iter().enumerate() {
            assert_eq!(code(c) as usize, i);
        }
        // Against a brute-force nearest search (ties can only fall on exact midpoints).
        let mut v = -1.0f32;
        while v <= 1.0 {
            let nearest = (0..16)
                .min_by(|&a, &b| {
                    (CODEBOOK[a] - v)
                        .abs()
                        .partial_cmp(&(CODEBOOK[b] - v).abs())
                        .unwrap()
                })
                .unwrap();
            let got = code(v) as usize;
            assert!(
                got == nearest || (CODEBOOK[got] - v).abs() == (CODEBOOK[nearest] - v).abs(),
                "{v}: {got} vs {nearest}"
            );
            v += 0.0009765625;
        }
        assert_eq!(code(THRESHOLDS[7]), 7); // on a midpoint: the lower code
        assert_eq!(code(-2.0), 0);
        assert_eq!(code(2.0), 15);
    }

    #[test]
    fn layout() {
        let mut x = [0f32; 64];
        x[0] = -2.0; // code 0 (−1·absmax), high nibble of byte 0
        x[1] = 2.0; // code 15, low nibble of byte 0
        x[2] = 0.1; // 0.05 normalized → code 8
        let (blob, y) = round_trip(&x);
        assert_eq!(&blob[..4], &2.0f32.to_le_bytes());
        assert_eq!(blob[4], 0x0f);
        assert_eq!(blob[5], 0x87);
        assert!(blob[6..].iter().all(|&b| b == 0x77));
        assert_eq!(y[0], -2.0);
        assert_eq!(y[1], 2.0);
        assert_eq!(y[2], CODEBOOK[8] * 2.0);
        assert!(y[3..].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn round_trip_error_and_edge_cases() {
        let x = gaussian(64 * 64, 11);
        let (_, y) = round_trip(&x);
        // At most half the widest gap in the codebook (−1 to −0.696) times absmax per block.
        let gap = CODEBOOK.windows(2).map(|w| w[1] - w[0]).fold(0.0, f32::max);
        assert!((gap - 0.3038072).abs() < 1e-6);
        for (x, y) in x.chunks(BLOCK).zip(y.chunks(BLOCK)) {
            let a = amax(x);
            for (v, w) in x.iter().zip(y) {
                assert!((v - w).abs() <= a * gap / 2.0 * 1.0001, "{v} {w}");
            }
        }
        // All zeros, negative zeros.
        let (blob, y) = round_trip(&[0.0; 64]);
        assert_eq!(&blob[..4], &[0, 0, 0, 0]);
        assert!(y.iter().all(|&v| v == 0.0));
        let (_, y) = round_trip(&[-0.0; 64]);
        assert!(y.iter().all(|&v| v == 0.0));
        // All negative: every value keeps its sign, the largest magnitude is exact.
        let neg: Vec<f32> = gaussian(64, 12).iter().map(|v| -v.abs() - 0.01).collect();
        let (_, y) = round_trip(&neg);
        assert!(y.iter().all(|&v| v <= 0.0));
        let i = neg.iter().position(|v| v.abs() == amax(&neg)).unwrap();
        assert_eq!(y[i], neg[i]);
        // One outlier is exact; the rest collapse towards 0.
        let mut x: Vec<f32> = gaussian(64, 13).iter().map(|v| v * 1e-3).collect();
        x[5] = 100.0;
        let (_, y) = round_trip(&x);
        assert_eq!(y[5], 100.0);
        // Tiny and subnormal values: scaled by their own absmax, so they survive.
        for tiny in [1e-30f32, 1e-39, 1e-44] {
            let x: Vec<f32> = gaussian(64, 14).iter().map(|v| v * tiny).collect();
            let (_, y) = round_trip(&x);
            let a = amax(&x);
            assert!(a > 0.0);
            let i = x.iter().position(|v| v.abs() == a).unwrap();
            assert_eq!(y[i], x[i], "{tiny}");
            assert!(y
                .iter()
                .zip(&x)
                .all(|(y, x)| y.signum() == x.signum() || *y == 0.0));
        }
    }
}
