//! The ggml block formats `q8_0`, `q4_0`, `q4_k` and `q2_k`: byte for byte the GGUF tensor data of those types.
//!
//! Every kernel takes whole blocks: `x.len()` a multiple of the block's values and `out` exactly the matching number
//! of bytes (or the reverse for dequantization); they panic otherwise. Inputs must be finite ([`super::Scheme`]
//! checks that). Multiplications and additions are rounded one at a time (Rust never fuses them into FMAs), which
//! is what makes `q8_0` and `q4_0` bit-exact with gguf-py's numpy reference and the dequantizers bit-exact with
//! ggml compiled without floating-point contraction.
//!
//! The K-quant quantizers follow ggml's reference quantizers (`quantize_row_q4_K_ref`, `quantize_row_q2_K_ref`,
//! MIT-licensed, © the ggml authors): per sub-block a weighted search for the scale and minimum
//! (`make_qkx2_quants`), then those quantized to 6 bits (`q4_k`) or 4 bits (`q2_k`) against fp16 super-block
//! scales, then every value re-quantized against the stored scales.

use half::f16;

use super::{amax, dispatch, round_away, trunc_positive};

/// Values per `q8_0` block.
pub const QK8_0: usize = 32;
/// Bytes per `q8_0` block: fp16 `d`, 32 × int8.
pub const Q8_0_BYTES: usize = 2 + QK8_0;
/// Values per `q4_0` block.
pub const QK4_0: usize = 32;
/// Bytes per `q4_0` block: fp16 `d`, 16 bytes of nibbles.
pub const Q4_0_BYTES: usize = 2 + QK4_0 / 2;
/// Values per K-quant super-block.
pub const QK_K: usize = 256;
/// Bytes per `q4_k` super-block: fp16 `d`, fp16 `dmin`, 12 bytes of scales, 128 bytes of nibbles.
pub const Q4_K_BYTES: usize = 2 + 2 + 12 + QK_K / 2;
/// Bytes per `q2_k` super-block: 16 bytes of scales, 64 bytes of 2-bit quants, fp16 `d`, fp16 `dmin`.
pub const Q2_K_BYTES: usize = QK_K / 16 + QK_K / 4 + 2 + 2;

#[inline(always)]
fn put_f16(out: &mut [u8], v: f32) {
    out[..2].copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
}

#[inline(always)]
fn get_f16(b: &[u8]) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()
}

fn check_blocks(x: usize, values: usize, out: usize, bytes: usize) {
    assert!(
        x.is_multiple_of(values) && out == x / values * bytes,
        "{x} values and {out} bytes are not whole blocks of {values} values in {bytes} bytes"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// q8_0

dispatch!(
    /// `q8_0`: per block of 32, `d = max|x|/127` stored as fp16, `q = round(x/d)` (as `x·(1/d)`, halves away from
    /// zero). When `1/d` overflows the quants are 0 (as numpy computes it on x86-64); `d` is fp16 zero then.
    pub fn quantize_q8_0(x: &[f32], out: &mut [u8]) => quantize_q8_0_impl
);

#[inline(always)]
fn quantize_q8_0_impl(x: &[f32], out: &mut [u8]) {
    check_blocks(x.len(), QK8_0, out.len(), Q8_0_BYTES);
    for (x, out) in x.chunks_exact(QK8_0).zip(out.chunks_exact_mut(Q8_0_BYTES)) {
        let x: &[f32; QK8_0] = x.try_into().expect("a whole block");
        let d = amax(x) / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(out, d);
        let qs: &mut [u8; QK8_0] = (&mut out[2..]).try_into().expect("a whole block");
        if id.is_finite() {
            for j in 0..QK8_0 {
                qs[j] = round_away(x[j] * id) as i8 as u8;
            }
        } else {
            qs.fill(0);
        }
    }
}

dispatch!(
    /// `q8_0` back to floats: `q·d`.
    pub fn dequantize_q8_0(blob: &[u8], out: &mut [f32]) => dequantize_q8_0_impl
);

#[inline(always)]
fn dequantize_q8_0_impl(blob: &[u8], out: &mut [f32]) {
    check_blocks(out.len(), QK8_0, blob.len(), Q8_0_BYTES);
    for (b, y) in blob
        .chunks_exact(Q8_0_BYTES)
        .zip(out.chunks_exact_mut(QK8_0))
    {
        let d = get_f16(b);
        for (y, &q) in y.iter_mut().zip(&b[2..]) {
            *y = (q as i8) as f32 * d;
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// q4_0

dispatch!(
    /// `q4_0`: per block of 32, `m` = the value of largest magnitude (the first on ties, keeping its sign),
    /// `d = m/−8` stored as fp16, `q = min(15, trunc(x·(1/d) + 8.5))`; byte `j` = `q[j] | q[j+16] << 4`.
    pub fn quantize_q4_0(x: &[f32], out: &mut [u8]) => quantize_q4_0_impl
);

/// An `i32` that orders like the float (total order: -0.0 < +0.0), so that min and max reduce as integers, which
/// vectorize (float min/max reductions do not, without fast-math).
#[inline(always)]
fn order_key(v: f32) -> i32 {
    let b = v.to_bits() as i32;
    b ^ ((b >> 31) & 0x7fff_ffff)
}

#[inline(always)]
fn from_order_key(k: i32) -> f32 {
    f32::from_bits((k ^ ((k >> 31) & 0x7fff_ffff)) as u32)
}

#[inline(always)]
fn quantize_q4_0_impl(x: &[f32], out: &mut [u8]) {
    check_blocks(x.len(), QK4_0, out.len(), Q4_0_BYTES);
    for (x, out) in x.chunks_exact(QK4_0).zip(out.chunks_exact_mut(Q4_0_BYTES)) {
        let x: &[f32; QK4_0] = x.try_into().expect("a whole block");
        // numpy's argmax of |x|: the first index reaching the largest magnitude, whose signed value is `max`
        // (index 0 for an all-zero block, keeping a -0.0 there, which makes d = +0.0). The largest and smallest
        // values settle it unless both +a and -a occur; only then search.
        let (mut hi, mut lo) = (i32::MIN, i32::MAX);
        for &v in x {
            let k = order_key(v);
            hi = hi.max(k);
            lo = lo.min(k);
        }
        let (hi, lo) = (from_order_key(hi), from_order_key(lo));
        let max = if hi == 0.0 && lo == 0.0 {
            x[0]
        } else if hi > -lo {
            hi
        } else if -lo > hi {
            lo
        } else {
            x.iter().copied().find(|v| v.abs() == hi).unwrap_or(hi)
        };
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(out, d);
        let qs: &mut [u8; QK4_0 / 2] = (&mut out[2..]).try_into().expect("a whole block");
        if id.is_finite() {
            for j in 0..QK4_0 / 2 {
                let qa = trunc_positive(x[j] * id + 8.5).min(15) as u8;
                let qb = trunc_positive(x[j + QK4_0 / 2] * id + 8.5).min(15) as u8;
                qs[j] = qa | (qb << 4);
            }
        } else {
            qs.fill(0);
        }
    }
}

dispatch!(
    /// `q4_0` back to floats: `(nibble − 8)·d`.
    pub fn dequantize_q4_0(blob: &[u8], out: &mut [f32]) => dequantize_q4_0_impl
);

#[inline(always)]
fn dequantize_q4_0_impl(blob: &[u8], out: &mut [f32]) {
    check_blocks(out.len(), QK4_0, blob.len(), Q4_0_BYTES);
    for (b, y) in blob
        .chunks_exact(Q4_0_BYTES)
        .zip(out.chunks_exact_mut(QK4_0))
    {
        let d = get_f16(b);
        let (lo, hi) = y.split_at_mut(QK4_0 / 2);
        for ((lo, hi), &q) in lo.iter_mut().zip(hi).zip(&b[2..]) {
            *lo = ((q & 0x0f) as i32 - 8) as f32 * d;
            *hi = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// K-quants: shared pieces

/// ggml's `nearest_int`: round half to even through the float adder, for `|f| <= 2^22`.
#[inline(always)]
fn nearest_int(f: f32) -> i32 {
    let v = f + 12_582_912.0;
    (v.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// ggml's `make_qkx2_quants`: quantize `x` to `0..=nmax` as `x ≈ scale·l − min` (`min >= 0`), searching the
/// scale that minimizes the weighted error (absolute if `use_mad`, else squared). Writes the levels to `l` and
/// returns `(scale, min)`.
#[allow(clippy::too_many_arguments)]
fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    laux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l[..n].fill(0);
        return (0.0, -min);
    }
    let err = |diff: f32| if use_mad { diff.abs() } else { diff * diff };
    let nmax_f = nmax as f32;
    let mut iscale = nmax_f / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l[i] = q as u8;
        let diff = scale * q as f32 + min - x[i];
        best_error += weights[i] * err(diff);
    }
    if nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax_f) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = q as u8;
            let wl = weights[i] * q as f32;
            sum_l += wl;
            sum_l2 += wl * q as f32;
            sum_xl += wl * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * err(diff);
            }
            if cur_error < best_error {
                l[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Scale and min of `q4_k` sub-block `j` (0..8) from the 12 packed bytes (ggml's `get_scale_min_k4`).
#[inline(always)]
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

// ---------------------------------------------------------------------------------------------------------------
// q4_k

dispatch!(
    /// `q4_k` (ggml `block_q4_K`): per super-block of 256, eight sub-blocks of 32 each get a 6-bit scale and min
    /// (relative to fp16 `d` and `dmin`); values are 4-bit, `x ≈ d·sc·q − dmin·m`.
    pub fn quantize_q4_k(x: &[f32], out: &mut [u8]) => quantize_q4_k_impl
);

#[inline(always)]
fn quantize_q4_k_impl(x: &[f32], out: &mut [u8]) {
    check_blocks(x.len(), QK_K, out.len(), Q4_K_BYTES);
    let mut l = [0u8; QK_K];
    let mut laux = [0u8; 32];
    let mut weights = [0f32; 32];
    for (x, out) in x.chunks_exact(QK_K).zip(out.chunks_exact_mut(Q4_K_BYTES)) {
        let mut scales = [0f32; 8];
        let mut mins = [0f32; 8];
        let mut max_scale = 0f32;
        let mut max_min = 0f32;
        for j in 0..8 {
            let xs = &x[32 * j..32 * j + 32];
            let mut sum_x2 = 0f32;
            for &v in xs {
                sum_x2 += v * v;
            }
            let av_x = (sum_x2 / 32.0).sqrt();
            for (w, &v) in weights.iter_mut().zip(xs) {
                *w = av_x + v.abs();
            }
            let (scale, min) = make_qkx2_quants(
                15,
                xs,
                &weights,
                &mut l[32 * j..32 * j + 32],
                &mut laux,
                -1.0,
                0.1,
                20,
                false,
            );
            scales[j] = scale;
            mins[j] = min;
            if scale > max_scale {
                max_scale = scale;
            }
            if min > max_min {
                max_min = min;
            }
        }
        let inv_scale = if max_scale > 0.0 {
            63.0 / max_scale
        } else {
            0.0
        };
        let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
        let mut sc = [0u8; 12];
        for j in 0..8 {
            let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
            let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
            if j < 4 {
                sc[j] = ls;
                sc[j + 4] = lm;
            } else {
                sc[j + 4] = (ls & 0x0f) | ((lm & 0x0f) << 4);
                sc[j - 4] |= (ls >> 4) << 6;
                sc[j] |= (lm >> 4) << 6;
            }
        }
        put_f16(&mut out[0..2], max_scale / 63.0);
        put_f16(&mut out[2..4], max_min / 63.0);
        out[4..16].copy_from_slice(&sc);
        let d_all = get_f16(&out[0..2]);
        let dmin_all = get_f16(&out[2..4]);
        for j in 0..8 {
            let (s, m) = scale_min_k4(j, &sc);
            let d = d_all * s as f32;
            if d == 0.0 {
                continue;
            }
            let dm = dmin_all * m as f32;
            for (q, &v) in l[32 * j..32 * j + 32]
                .iter_mut()
                .zip(&x[32 * j..32 * j + 32])
            {
                *q = nearest_int((v + dm) / d).clamp(0, 15) as u8;
            }
        }
        let qs = &mut out[16..];
        for (c, q) in qs.chunks_exact_mut(32).enumerate() {
            let base = 64 * c;
            for (i, q) in q.iter_mut().enumerate() {
                *q = l[base + i] | (l[base + i + 32] << 4);
            }
        }
    }
}

dispatch!(
    /// `q4_k` back to floats, exactly as ggml's `dequantize_row_q4_K`: `d·sc·q − dmin·m`, each product rounded.
    pub fn dequantize_q4_k(blob: &[u8], out: &mut [f32]) => dequantize_q4_k_impl
);

#[inline(always)]
fn dequantize_q4_k_impl(blob: &[u8], out: &mut [f32]) {
    check_blocks(out.len(), QK_K, blob.len(), Q4_K_BYTES);
    for (b, y) in blob
        .chunks_exact(Q4_K_BYTES)
        .zip(out.chunks_exact_mut(QK_K))
    {
        let d = get_f16(&b[0..2]);
        let min = get_f16(&b[2..4]);
        let scales = &b[4..16];
        let qs = &b[16..];
        for (c, (q, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
            let (sc1, m1) = scale_min_k4(2 * c, scales);
            let (sc2, m2) = scale_min_k4(2 * c + 1, scales);
            let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
            let (lo, hi) = y.split_at_mut(32);
            for ((lo, hi), &q) in lo.iter_mut().zip(hi).zip(q) {
                *lo = d1 * (q & 0x0f) as f32 - m1;
                *hi = d2 * (q >> 4) as f32 - m2;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// q2_k

dispatch!(
    /// `q2_k` (ggml `block_q2_K`): per super-block of 256, sixteen sub-blocks of 16 each get a 4-bit scale and min
    /// (relative to fp16 `d` and `dmin`); values are 2-bit, `x ≈ d·sc·q − dmin·m`.
    pub fn quantize_q2_k(x: &[f32], out: &mut [u8]) => quantize_q2_k_impl
);

#[inline(always)]
fn quantize_q2_k_impl(x: &[f32], out: &mut [u8]) {
    check_blocks(x.len(), QK_K, out.len(), Q2_K_BYTES);
    let mut l = [0u8; QK_K];
    let mut laux = [0u8; 16];
    let mut weights = [0f32; 16];
    for (x, out) in x.chunks_exact(QK_K).zip(out.chunks_exact_mut(Q2_K_BYTES)) {
        let mut scales = [0f32; 16];
        let mut mins = [0f32; 16];
        let mut max_scale = 0f32;
        let mut max_min = 0f32;
        for j in 0..16 {
            let xs = &x[16 * j..16 * j + 16];
            for (w, &v) in weights.iter_mut().zip(xs) {
                *w = v.abs();
            }
            let (scale, min) = make_qkx2_quants(
                3,
                xs,
                &weights,
                &mut l[16 * j..16 * j + 16],
                &mut laux,
                -0.5,
                0.1,
                15,
                true,
            );
            scales[j] = scale;
            mins[j] = min;
            if scale > max_scale {
                max_scale = scale;
            }
            if min > max_min {
                max_min = min;
            }
        }
        let (sc, rest) = out.split_at_mut(QK_K / 16);
        let (qs, dd) = rest.split_at_mut(QK_K / 4);
        if max_scale > 0.0 {
            let iscale = 15.0 / max_scale;
            for (s, &scale) in sc.iter_mut().zip(&scales) {
                *s = nearest_int(iscale * scale) as u8;
            }
            put_f16(&mut dd[0..2], max_scale / 15.0);
        } else {
            sc.fill(0);
            put_f16(&mut dd[0..2], 0.0);
        }
        if max_min > 0.0 {
            let iscale = 15.0 / max_min;
            for (s, &min) in sc.iter_mut().zip(&mins) {
                *s |= (nearest_int(iscale * min) << 4) as u8;
            }
            put_f16(&mut dd[2..4], max_min / 15.0);
        } else {
            put_f16(&mut dd[2..4], 0.0);
        }
        let d_all = get_f16(&dd[0..2]);
        let dmin_all = get_f16(&dd[2..4]);
        for j in 0..16 {
            let d = d_all * (sc[j] & 0x0f) as f32;
            if d == 0.0 {
                continue;
            }
            let dm = dmin_all * (sc[j] >> 4) as f32;
            for (q, &v) in l[16 * j..16 * j + 16]
                .iter_mut()
                .zip(&x[16 * j..16 * j + 16])
            {
                *q = nearest_int((v + dm) / d).clamp(0, 3) as u8;
            }
        }
        for (half, q) in qs.chunks_exact_mut(32).enumerate() {
            let l = &l[128 * half..128 * half + 128];
            for (i, q) in q.iter_mut().enumerate() {
                *q = l[i] | (l[i + 32] << 2) | (l[i + 64] << 4) | (l[i + 96] << 6);
            }
        }
    }
}

dispatch!(
    /// `q2_k` back to floats, exactly as ggml's `dequantize_row_q2_K`: `d·sc·q − dmin·m`, each product rounded.
    pub fn dequantize_q2_k(blob: &[u8], out: &mut [f32]) => dequantize_q2_k_impl
);

#[inline(always)]
fn dequantize_q2_k_impl(blob: &[u8], out: &mut [f32]) {
    check_blocks(out.len(), QK_K, blob.len(), Q2_K_BYTES);
    for (b, y) in blob
        .chunks_exact(Q2_K_BYTES)
        .zip(out.chunks_exact_mut(QK_K))
    {
        let scales = &b[..16];
        let qs = &b[16..80];
        let d = get_f16(&b[80..82]);
        let min = get_f16(&b[82..84]);
        for (half, (q, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(128)).enumerate() {
            for (j, y) in y.chunks_exact_mut(32).enumerate() {
                let shift = 2 * j;
                let (ya, yb) = y.split_at_mut(16);
                for (k, y) in [ya, yb].into_iter().enumerate() {
                    let sc = scales[8 * half + 2 * j + k];
                    let dl = d * (sc & 0x0f) as f32;
                    let ml = min * (sc >> 4) as f32;
                    for (y, &q) in y.iter_mut().zip(&q[16 * k..16 * k + 16]) {
                        *y = dl * ((q >> shift) & 3) as f32 - ml;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::gaussian;
    use super::*;

    type Kernel = fn(&[f32], &mut [u8]);
    type Inverse = fn(&[u8], &mut [f32]);
    type RoundTrip = fn(&[f32]) -> Vec<f32>;

    fn round_trip(q: Kernel, dq: Inverse, values: usize, bytes: usize, x: &[f32]) -> Vec<f32> {
        let mut blob = vec![0u8; x.len() / values * bytes];
        q(x, &mut blob);
        let mut y = vec![0f32; x.len()];
        dq(&blob, &mut y);
        y
    }

    fn q8(x: &[f32]) -> Vec<f32> {
        round_trip(quantize_q8_0, dequantize_q8_0, QK8_0, Q8_0_BYTES, x)
    }
    fn q4(x: &[f32]) -> Vec<f32> {
        round_trip(quantize_q4_0, dequantize_q4_0, QK4_0, Q4_0_BYTES, x)
    }
    fn q4k(x: &[f32]) -> Vec<f32> {
        round_trip(quantize_q4_k, dequantize_q4_k, QK_K, Q4_K_BYTES, x)
    }
    fn q2k(x: &[f32]) -> Vec<f32> {
        round_trip(quantize_q2_k, dequantize_q2_k, QK_K, Q2_K_BYTES, x)
    }

    /// Max over blocks of (max error in the block / max |x| in the block).
    fn worst_relative_error(x: &[f32], y: &[f32], block: usize) -> f64 {
        x.chunks(block)
            .zip(y.chunks(block))
            .map(|(x, y)| {
                let a = amax(x) as f64;
                let e = x
                    .iter()
                    .zip(y)
                    .map(|(a, b)| (*a as f64 - *b as f64).abs())
                    .fold(0.0, f64::max);
                if a == 0.0 {
                    e
                } else {
                    e / a
                }
            })
            .fold(0.0, f64::max)
    }

    fn rmse(x: &[f32], y: &[f32]) -> f64 {
        let s: f64 = x
            .iter()
            .zip(y)
            .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
            .sum();
        (s / x.len() as f64).sqrt()
    }

    #[test]
    fn q8_0_known_block() {
        // amax = 127 → d = 1, id = 1: the quants are the values rounded half away from zero.
        let mut x = [0f32; 32];
        x[0] = 127.0;
        x[1] = 0.5;
        x[2] = -0.5;
        x[3] = 1.5;
        x[4] = -2.5;
        x[5] = 0.49999997;
        x[31] = -127.0;
        let mut blob = [0u8; 34];
        quantize_q8_0(&x, &mut blob);
        assert_eq!(&blob[..2], &[0x00, 0x3c]); // fp16 1.0
        assert_eq!(blob[2] as i8, 127);
        assert_eq!(blob[3] as i8, 1);
        assert_eq!(blob[4] as i8, -1);
        assert_eq!(blob[5] as i8, 2);
        assert_eq!(blob[6] as i8, -3);
        assert_eq!(blob[7] as i8, 0);
        assert_eq!(blob[33] as i8, -127);
        assert!(blob[8..33].iter().all(|&b| b == 0));
    }

    #[test]
    fn q4_0_known_block() {
        // max = -8 (the first of the largest magnitudes) → d = 1, id = 1; q = trunc(x + 8.5) capped at 15.
        let mut x = [0f32; 32];
        x[0] = -8.0;
        x[1] = 8.0;
        x[2] = 7.4;
        x[16] = 0.5;
        x[17] = -3.0;
        let mut blob = [0u8; 18];
        quantize_q4_0(&x, &mut blob);
        assert_eq!(&blob[..2], &[0x00, 0x3c]);
        // x[0] → 0, x[1] → 16 capped to 15, x[2] → 15, x[16] → 9, x[17] → 5, zeros → 8.
        let mut expect = [0x88u8; 16];
        expect[0] = 0x90;
        expect[1] = 0x5f;
        expect[2] = 0x8f;
        assert_eq!(&blob[2..], &expect);
    }

    #[test]
    fn ggml_round_trip_error_bounds() {
        let x = gaussian(4096, 1);
        // q8_0: at most half a step of d = amax/127, plus the fp16 rounding of d (2^-11 relative) times |q| <= 127.
        let fp16 = 2f64.powi(-11);
        let e = worst_relative_error(&x, &q8(&x), 32);
        assert!(e <= (0.5 + 127.0 * fp16) / 127.0, "q8_0 {e}");
        // q4_0: steps of amax/8; the value at +amax (when the block's extreme is negative) is clipped to 7·d, a whole
        // step away; plus the fp16 rounding of d times |q - 8| <= 8.
        let e = worst_relative_error(&x, &q4(&x), 32);
        assert!(e <= (1.0 + 8.0 * fp16) / 8.0, "q4_0 {e}");
        // K-quants: compare the RMSE with the data's spread (1.0): ggml's own figures are about 0.07-0.1 for q4_K
        // and 0.25-0.3 for q2_K.
        let r8 = rmse(&x, &q8(&x));
        let r4 = rmse(&x, &q4(&x));
        let r4k = rmse(&x, &q4k(&x));
        let r2k = rmse(&x, &q2k(&x));
        assert!(r8 < 0.01, "q8_0 rmse {r8}");
        assert!(r4 < 0.15, "q4_0 rmse {r4}");
        assert!(r4k < 0.1 && r4k < r4, "q4_k rmse {r4k} vs q4_0 {r4}");
        assert!(r2k < 0.35 && r2k > r4k, "q2_k rmse {r2k}");
        let e = worst_relative_error(&x, &q4k(&x), 256);
        assert!(e < 0.2, "q4_k {e}");
        let e = worst_relative_error(&x, &q2k(&x), 256);
        assert!(e < 0.6, "q2_k {e}");
    }

    #[test]
    fn edge_cases() {
        let all: [(&str, RoundTrip); 4] =
            [("q8_0", q8), ("q4_0", q4), ("q4_k", q4k), ("q2_k", q2k)];
        for (name, f) in all {
            // All zeros (and negative zeros) stay zero.
            let zeros = vec![0f32; 512];
            assert!(f(&zeros).iter().all(|&v| v == 0.0), "{name} zeros");
            let neg_zeros = vec![-0.0f32; 512];
            assert!(f(&neg_zeros).iter().all(|&v| v == 0.0), "{name} -0");
            // One outlier: it survives within a few percent (bounded by the fp16 scale and the format's step).
            let mut outlier = gaussian(512, 2)
                .iter()
                .map(|v| v * 0.01)
                .collect::<Vec<_>>();
            outlier[100] = 50.0;
            let y = f(&outlier);
            assert!(
                (y[100] - 50.0).abs() < 50.0 * 0.1,
                "{name} outlier {}",
                y[100]
            );
            // All negative: errors stay within the format's step; q8_0 and q4_0 (no offset) keep every sign.
            let neg: Vec<f32> = gaussian(512, 3).iter().map(|v| -v.abs() - 0.1).collect();
            let y = f(&neg);
            if name.ends_with("_0") {
                assert!(y.iter().all(|&v| v <= 0.0), "{name} negative");
            }
            assert!(worst_relative_error(&neg, &y, 256) < 0.6, "{name} negative");
            // Tiny values: the fp16 scales underflow to zero, so everything dequantizes to zero, never NaN.
            for tiny in [1e-30f32, 1e-38, 1e-45] {
                let x: Vec<f32> = gaussian(512, 4).iter().map(|v| v * tiny).collect();
                assert!(f(&x).iter().all(|&v| v == 0.0), "{name} {tiny}");
            }
            // Large values: within fp16's range the round trip holds; beyond it the scale is infinite.
            let big: Vec<f32> = gaussian(512, 5).iter().map(|v| v * 1000.0).collect();
            let y = f(&big);
            assert!(y.iter().all(|v| v.is_finite()), "{name} big");
        }
    }

    #[test]
    fn tiny_blocks_match_numpy_x86_behaviour() {
        // 1/d overflows: gguf-py's numpy on x86-64 stores quants 0 (its float→int casts of ±Inf/NaN give 0).
        let x = [1e-38f32; 32];
        let mut blob = [0xffu8; 34];
        quantize_q8_0(&x, &mut blob);
        assert_eq!(blob, [0u8; 34]);
        let mut blob = [0xffu8; 18];
        quantize_q4_0(&x, &mut blob);
        assert_eq!(&blob[..2], &[0x00, 0x80]); // d = -0.0
        assert!(blob[2..].iter().all(|&b| b == 0));
        // d underflows to exactly zero: id = 0, so every quant is the zero point.
        let x = [1e-45f32; 32];
        quantize_q4_0(&x, &mut blob);
        assert!(blob[2..].iter().all(|&b| b == 0x88));
    }

    #[test]
    fn k_quant_dequantize_layout() {
        // q4_k: d = 1, dmin = 0.5; sub-block 0 scale 1 min 2, sub-block 5 scale 0x25 min 0x13 (high bits in 1, 5).
        let mut b = [0u8; Q4_K_BYTES];
        put_f16(&mut b[0..2], 1.0);
        put_f16(&mut b[2..4], 0.5);
        b[4] = 1;
        b[8] = 2;
        // sub-block 5: low nibbles in byte 4+9 (scale low | min low << 4), high 2 bits in bytes 4+1 and 4+5.
        b[4 + 9] = 0x5 | (0x3 << 4);
        b[4 + 1] = 0x2 << 6;
        b[4 + 5] = 0x1 << 6;
        assert_eq!(scale_min_k4(5, &b[4..16]), (0x25, 0x13));
        b[16] = 0x73; // value 0 = 3, value 32 = 7
        b[16 + 64 + 5] = 0xf0; // qs[64..96] hold sub-blocks 4 (low nibbles) and 5 (high): value 165 → 15
        let mut y = [0f32; 256];
        dequantize_q4_k(&b, &mut y);
        assert_eq!(y[0], 3.0 - 1.0);
        assert_eq!(y[1], -1.0);
        assert_eq!(y[32], 0.0); // sub-block 1: scale 0, min 0
        assert_eq!(y[165], 37.0 * 15.0 - 0.5 * 19.0);
        assert_eq!(y[164], -0.5 * 19.0);
        assert_eq!(y[133], 0.0);
        // q2_k: d = 2, dmin = 1, sub-block 0 scale 3 min 1; byte 0 of qs: value 0 = 1, value 32 = 2, value 64 = 3.
        let mut b = [0u8; Q2_K_BYTES];
        b[0] = 3 | (1 << 4);
        b[2] = 1; // sub-block 2 = values 32..48
        b[4] = 2 << 4; // sub-block 4 = values 64..80
        b[16] = 1 | (2 << 2) | (3 << 4);
        put_f16(&mut b[80..82], 2.0);
        put_f16(&mut b[82..84], 1.0);
        let mut y = [0f32; 256];
        dequantize_q2_k(&b, &mut y);
        assert_eq!(y[0], 6.0 - 1.0);
        assert_eq!(y[1], -1.0);
        assert_eq!(y[32], 2.0 * 2.0);
        assert_eq!(y[64], -2.0);
        assert_eq!(y[16], 0.0);
    }

    #[test]
    fn k_quants_quantize_known_grid() {
        // Values already on a 4-bit grid of one sub-block scale come back nearly exactly.
        let x: Vec<f32> = (0..256).map(|i| (i % 16) as f32 * 0.25 - 1.0).collect();
        let y = q4k(&x);
        assert!(rmse(&x, &y) < 0.01, "{}", rmse(&x, &y));
        let x: Vec<f32> = (0..256).map(|i| (i % 4) as f32 * 0.5 - 0.5).collect();
        let y = q2k(&x);
        assert!(rmse(&x, &y) < 0.02, "{}", rmse(&x, &y));
    }

    #[test]
    #[should_panic(expected = "not whole blocks")]
    fn partial_blocks_panic_in_kernels() {
        let mut out = [0u8; 34];
        quantize_q8_0(&[0.0; 33], &mut out);
    }
}
