//! `int8`: symmetric per-vector quantization for embeddings.
//!
//! Layout (`4 + n` bytes for `n` values): `scale = max|x|/127` as a little-endian f32, then `n` int8 values
//! `q = round(x·(1/scale))` (halves away from zero, so `|q| <= 127`; all 0 when `scale` is 0). It dequantizes to
//! `q·scale`. This is the `q8_0` rule with one block spanning the vector and an f32 scale, so its error is at most
//! half a step, `max|x|/254`. When `1/scale` overflows (`max|x|` below about 4e-37) it divides by `scale` instead,
//! so even subnormal vectors keep their shape.

use super::{amax, dispatch, round_away};

/// Bytes for `n` values.
pub fn quantized_len(n: usize) -> usize {
    4 + n
}

/// Values in a blob of `bytes` bytes (`None` if it is shorter than the scale).
pub fn dequantized_len(bytes: usize) -> Option<usize> {
    bytes.checked_sub(4)
}

dispatch!(
    /// Quantize `x` into `out` (`4 + x.len()` bytes).
    pub fn quantize(x: &[f32], out: &mut [u8]) => quantize_impl
);

#[inline(always)]
fn quantize_impl(x: &[f32], out: &mut [u8]) {
    assert_eq!(out.len(), quantized_len(x.len()), "int8 output length");
    let scale = amax(x) / 127.0;
    out[..4].copy_from_slice(&scale.to_le_bytes());
    let qs = &mut out[4..];
    let inv = if scale != 0.0 { 1.0 / scale } else { 0.0 };
    if inv.is_finite() {
        for (q, &v) in qs.iter_mut().zip(x) {
            *q = round_away(v * inv) as i8 as u8;
        }
    } else {
        for (q, &v) in qs.iter_mut().zip(x) {
            *q = round_away(v / scale) as i8 as u8;
        }
    }
}

dispatch!(
    /// Dequantize a blob (`4 + out.len()` bytes) into `out`.
    pub fn dequantize(blob: &[u8], out: &mut [f32]) => dequantize_impl
);

#[inline(always)]
fn dequantize_impl(blob: &[u8], out: &mut [f32]) {
    assert_eq!(blob.len(), quantized_len(out.len()), "int8 blob length");
    let scale = f32::from_le_bytes([blob[0], blob[1], blob[2], blob[3]]);
    for (y, &q) in out.iter_mut().zip(&blob[4..]) {
        *y = (q as i8) as f32 * scale;
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::gaussian;
    use super::*;

    fn round_trip(x: &[f32]) -> (Vec<u8>, Vec<f32>) {
        let mut blob = vec![0u8; quantized_len(x.len())];
        quantize(x, &mut blob);
        let mut y = vec![0f32; x.len()];
        dequantize(&blob, &mut y);
        (blob, y)
    }

    #[test]
    fn layout() {
        let (blob, y) = round_trip(&[127.0, -63.5, 0.4, 1.5]);
        assert_eq!(&blob[..4], &1.0f32.to_le_bytes());
        assert_eq!(&blob[4..], &[127u8, (-64i8) as u8, 0, 2]);
        assert_eq!(y, vec![127.0, -64.0, 0.0, 2.0]);
        let (blob, y) = round_trip(&[]);
        assert_eq!(blob, vec![0, 0, 0, 0]);
        assert!(y.is_empty());
    }

    #[test]
    fn error_bound_and_edge_cases() {
        for (seed, n) in [(1u64, 384usize), (2, 7), (3, 1000)] {
            let x = gaussian(n, seed);
            let (_, y) = round_trip(&x);
            let bound = amax(&x) / 254.0 * 1.0001;
            for (a, b) in x.iter().zip(&y) {
                assert!((a - b).abs() <= bound, "{a} {b}");
            }
        }
        let (_, y) = round_trip(&[0.0; 10]);
        assert!(y.iter().all(|&v| v == 0.0));
        let (_, y) = round_trip(&[-3.0, -1.0, -2.0]);
        assert!(y.iter().all(|&v| v < 0.0));
        assert_eq!(y[0], -3.0);
        let mut x = vec![1e-3f32; 100];
        x[50] = 1e4;
        let (_, y) = round_trip(&x);
        assert_eq!(y[50], 1e4);
        assert_eq!(y[0], 0.0);
        for tiny in [1e-30f32, 1e-38, 1e-44] {
            let x: Vec<f32> = gaussian(64, 4).iter().map(|v| v * tiny).collect();
            let (_, y) = round_trip(&x);
            let a = amax(&x);
            assert!(a > 0.0 && y.iter().all(|v| v.is_finite()));
            let i = x.iter().position(|v| v.abs() == a).unwrap();
            // The largest value survives to within the rounding of the (possibly subnormal) scale.
            assert!(
                (y[i] - x[i]).abs() <= a * 0.05 + f32::from_bits(1) * 127.0,
                "{tiny}"
            );
        }
    }
}
