//! Hot loops of the distance functions: SIMD sums (simsimd) finished in `f64`, with an exact `f64` fallback for the
//! rare rows where a SIMD sum over- or underflowed.
//!
//! # Element and compute types
//!
//! A vector is stored as [`Element`]s (`i8`, `f16`, `f32`, `f64`); the SIMD kernels run on its [`Compute`] type:
//! `i8` on `i8` (integer sums, exact), `f32` on `f32`, `f64` on `f64`, and `f16` on `f32` (converted in blocks of
//! [`CHUNK`] elements; simsimd's own `f16` kernels accumulate in half precision on CPUs with AVX-512 FP16, which is
//! far too coarse). A constant operand (the query vector) is a [`Query`]: already in the compute type, with its squared
//! norm computed once.
//!
//! # Accuracy
//!
//! With `u` the unit roundoff of the accumulation type, `n` the length and `S` the sum of the terms' magnitudes
//! (`Σ|aᵢ·bᵢ|`, `Σ(aᵢ−bᵢ)²` or `Σaᵢ²`), each sum is within `(n + 32)·u·S` of the exact one (the property tests in
//! `tests.rs` check these bounds; the errors observed are a few `u`, as the SIMD lanes split the sums):
//!
//! * `i8`: integer sums, exact; only the final `f64` division or square root rounds.
//! * `f64`: `f64` lanes, `u = 2⁻⁵³`.
//! * `f32` and `f16`: `f32` lanes (reduced in `f64`; `f16` blocks of [`CHUNK`] elements are summed in `f64`),
//!   `u = 2⁻²⁴`. Cosine distance is then within `3·(n + 32)·u` absolute of the exact value (a few `1e-7` in
//!   practice). Identical vectors still give exactly `0.0`, since `sqrt(x · x) == x` in IEEE arithmetic.
//!
//! A SIMD sum that is not finite, or whose magnitude is below [`Compute::TINY`] (it may have lost bits to
//! subnormal products), is recomputed by a plain `f64` loop over the elements converted to `f64`. For cosine
//! distance, Euclidean distance and the norm that loop also scales the elements by a power of two near the largest
//! magnitude (exactly, no rounding), so finite inputs whose squares overflow or underflow `f64` (say
//! `[3e200, 4e200]`) still give the right answer. NaN and ±Inf in the inputs propagate as IEEE arithmetic says
//! (`inf / inf` is NaN, and so on); cosine distance is NULL (`None`) when either vector is all zeros, even if the
//! other holds NaN, as in DataFusion.

use half::f16;
use half::slice::HalfFloatSliceExt;
use simsimd::{BinarySimilarity, SpatialSimilarity};

/// Number of elements converted at a time when an element type needs converting to its compute type.
pub const CHUNK: usize = 256;

/// Conversion of a vector element to `f64`, exact for every supported type.
pub trait ToF64: Copy {
    /// The value as `f64`.
    fn to_f64(self) -> f64;
}

/// A type the SIMD kernels compute on: `i8`, `f32` or `f64`.
pub trait Compute: ToF64 + Default + Send + Sync + 'static {
    /// Whether [`Compute::dot`] and [`Compute::l2sq`] are exact (integer arithmetic).
    const EXACT: bool;
    /// A SIMD sum below this magnitude may have lost precision to subnormal terms and is recomputed in `f64`.
    const TINY: f64;
    /// `Σ aᵢ·bᵢ`; `a` and `b` have the same length.
    fn dot(a: &[Self], b: &[Self]) -> f64;
    /// `Σ (aᵢ − bᵢ)²`; `a` and `b` have the same length.
    fn l2sq(a: &[Self], b: &[Self]) -> f64;
    /// Converts an `f64` to this type (rounding; callers check ranges where it matters).
    fn from_f64(v: f64) -> Self;
}

/// A stored vector element: `i8`, `f16`, `f32` or `f64`.
pub trait Element: ToF64 + Send + Sync + 'static {
    /// The type the SIMD kernels compute on.
    type C: Compute;
    /// The slice itself when no conversion is needed.
    fn as_compute(x: &[Self]) -> Option<&[Self::C]>;
    /// Converts `x` into `out` (same length).
    fn convert(x: &[Self], out: &mut [Self::C]);
}

impl ToF64 for i8 {
    #[inline]
    fn to_f64(self) -> f64 {
        self as f64
    }
}
impl ToF64 for f16 {
    #[inline]
    fn to_f64(self) -> f64 {
        f16::to_f64(self)
    }
}
impl ToF64 for f32 {
    #[inline]
    fn to_f64(self) -> f64 {
        self as f64
    }
}
impl ToF64 for f64 {
    #[inline]
    fn to_f64(self) -> f64 {
        self
    }
}

/// simsimd sums `i8` products into 32-bit integers: blocks of this many elements cannot overflow them
/// (`16384 · 255² < 2³¹`).
const I8_BLOCK: usize = 1 << 14;

impl Compute for i8 {
    const EXACT: bool = true;
    const TINY: f64 = 0.0;
    #[inline]
    fn dot(a: &[i8], b: &[i8]) -> f64 {
        a.chunks(I8_BLOCK)
            .zip(b.chunks(I8_BLOCK))
            .map(|(x, y)| <i8 as SpatialSimilarity>::dot(x, y).unwrap_or(f64::NAN))
            .fold(0.0, |s, v| s + v)
    }
    #[inline]
    fn l2sq(a: &[i8], b: &[i8]) -> f64 {
        a.chunks(I8_BLOCK)
            .zip(b.chunks(I8_BLOCK))
            .map(|(x, y)| <i8 as SpatialSimilarity>::l2sq(x, y).unwrap_or(f64::NAN))
            .fold(0.0, |s, v| s + v)
    }
    #[inline]
    fn from_f64(v: f64) -> i8 {
        v as i8
    }
}

impl Compute for f32 {
    const EXACT: bool = false;
    const TINY: f64 = 1e-30;
    #[inline]
    fn dot(a: &[f32], b: &[f32]) -> f64 {
        if a.is_empty() {
            return 0.0;
        }
        <f32 as SpatialSimilarity>::dot(a, b).unwrap_or(f64::NAN)
    }
    #[inline]
    fn l2sq(a: &[f32], b: &[f32]) -> f64 {
        if a.is_empty() {
            return 0.0;
        }
        <f32 as SpatialSimilarity>::l2sq(a, b).unwrap_or(f64::NAN)
    }
    #[inline]
    fn from_f64(v: f64) -> f32 {
        v as f32
    }
}

impl Compute for f64 {
    const EXACT: bool = false;
    const TINY: f64 = 1e-290;
    #[inline]
    fn dot(a: &[f64], b: &[f64]) -> f64 {
        if a.is_empty() {
            return 0.0;
        }
        <f64 as SpatialSimilarity>::dot(a, b).unwrap_or(f64::NAN)
    }
    #[inline]
    fn l2sq(a: &[f64], b: &[f64]) -> f64 {
        if a.is_empty() {
            return 0.0;
        }
        <f64 as SpatialSimilarity>::l2sq(a, b).unwrap_or(f64::NAN)
    }
    #[inline]
    fn from_f64(v: f64) -> f64 {
        v
    }
}

macro_rules! identity_element {
    ($($t:ty),*) => {$(
        impl Element for $t {
            type C = $t;
            #[inline]
            fn as_compute(x: &[$t]) -> Option<&[$t]> {
                Some(x)
            }
            #[inline]
            fn convert(x: &[$t], out: &mut [$t]) {
                out.copy_from_slice(x);
            }
        }
    )*};
}
identity_element!(i8, f32, f64);

impl Element for f16 {
    type C = f32;
    #[inline]
    fn as_compute(_: &[f16]) -> Option<&[f32]> {
        None
    }
    #[inline]
    fn convert(x: &[f16], out: &mut [f32]) {
        x.convert_to_f32_slice(out);
    }
}

/// A constant operand (a query vector) in the compute type of the column it is compared with, with its squared
/// norm computed once.
#[derive(Debug, Clone)]
pub struct Query<C> {
    values: Vec<C>,
    norm_sq: f64,
    zero: bool,
}

impl<C: Compute> Query<C> {
    /// Prepares a query vector.
    pub fn new(values: Vec<C>) -> Self {
        let norm_sq = C::dot(&values, &values);
        let zero = values.iter().all(|v| v.to_f64() == 0.0);
        Self {
            values,
            norm_sq,
            zero,
        }
    }

    /// The query's elements.
    pub fn values(&self) -> &[C] {
        &self.values
    }

    /// The query's length.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the query has no elements.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// The second operand of a kernel: another vector of the same element type (`&[E]`), or a prepared [`Query`] in
/// that element type's compute type. Its length equals the first operand's.
pub trait Operand<E: Element>: Copy {
    /// Number of elements.
    fn operand_len(&self) -> usize;
    /// The whole operand in the compute type, when no conversion is needed.
    fn whole(&self) -> Option<&[E::C]>;
    /// Elements `start .. start + buf.len()` in the compute type (converted into `buf` if needed).
    fn chunk<'s>(&'s self, start: usize, buf: &'s mut [E::C]) -> &'s [E::C];
    /// Element `i` as `f64`.
    fn get(&self, i: usize) -> f64;
    /// The squared norm, when known in advance (a prepared query).
    fn known_norm_sq(&self) -> Option<f64> {
        None
    }
    /// Whether the operand is known to be all zeros.
    fn known_zero(&self) -> bool {
        false
    }
}

impl<E: Element> Operand<E> for &[E] {
    #[inline]
    fn operand_len(&self) -> usize {
        self.len()
    }
    #[inline]
    fn whole(&self) -> Option<&[E::C]> {
        E::as_compute(self)
    }
    #[inline]
    fn chunk<'s>(&'s self, start: usize, buf: &'s mut [E::C]) -> &'s [E::C] {
        let end = start + buf.len();
        match E::as_compute(self) {
            Some(c) => &c[start..end],
            None => {
                E::convert(&self[start..end], buf);
                buf
            }
        }
    }
    #[inline]
    fn get(&self, i: usize) -> f64 {
        self[i].to_f64()
    }
}

impl<E: Element> Operand<E> for &Query<E::C> {
    #[inline]
    fn operand_len(&self) -> usize {
        self.values.len()
    }
    #[inline]
    fn whole(&self) -> Option<&[E::C]> {
        Some(&self.values)
    }
    #[inline]
    fn chunk<'s>(&'s self, start: usize, buf: &'s mut [E::C]) -> &'s [E::C] {
        &self.values[start..start + buf.len()]
    }
    #[inline]
    fn get(&self, i: usize) -> f64 {
        self.values[i].to_f64()
    }
    #[inline]
    fn known_norm_sq(&self) -> Option<f64> {
        Some(self.norm_sq)
    }
    #[inline]
    fn known_zero(&self) -> bool {
        self.zero
    }
}

/// Applies `f` to `a` and `b` in the compute type (whole, or in blocks of [`CHUNK`] when converting) and sums the
/// results.
#[inline]
fn sums<E: Element, B: Operand<E>, const K: usize>(
    a: &[E],
    b: B,
    f: impl Fn(&[E::C], &[E::C]) -> [f64; K],
) -> [f64; K] {
    if let (Some(x), Some(y)) = (E::as_compute(a), b.whole()) {
        return f(x, y);
    }
    let mut acc = [0.0; K];
    let mut buf_a = [E::C::default(); CHUNK];
    let mut buf_b = [E::C::default(); CHUNK];
    let mut start = 0;
    while start < a.len() {
        let n = CHUNK.min(a.len() - start);
        let x = Operand::<E>::chunk(&a, start, &mut buf_a[..n]);
        let y = b.chunk(start, &mut buf_b[..n]);
        for (s, r) in acc.iter_mut().zip(f(x, y)) {
            *s += r;
        }
        start += n;
    }
    acc
}

#[inline]
fn check_lengths(a: usize, b: usize) {
    assert_eq!(a, b, "vector kernels need operands of the same length");
}

/// Inner product `Σ aᵢ·bᵢ` as `f64` (`0.0` for empty vectors).
///
/// # Panics
/// If `a` and `b` differ in length.
#[inline]
pub fn dot<E: Element, B: Operand<E>>(a: &[E], b: B) -> f64 {
    check_lengths(a.len(), b.operand_len());
    let [s] = sums(a, b, |x, y| [E::C::dot(x, y)]);
    if E::C::EXACT || (s.is_finite() && s.abs() >= E::C::TINY) {
        s
    } else {
        exact::dot(a, b)
    }
}

/// Squared Euclidean distance `Σ (aᵢ − bᵢ)²` as `f64`.
///
/// # Panics
/// If `a` and `b` differ in length.
#[inline]
pub fn l2_squared<E: Element, B: Operand<E>>(a: &[E], b: B) -> f64 {
    check_lengths(a.len(), b.operand_len());
    let [s] = sums(a, b, |x, y| [E::C::l2sq(x, y)]);
    if E::C::EXACT || (s.is_finite() && s >= E::C::TINY) {
        s
    } else {
        exact::l2_squared(a, b)
    }
}

/// Euclidean distance `sqrt(Σ (aᵢ − bᵢ)²)` as `f64`, without overflow or underflow for finite inputs.
///
/// # Panics
/// If `a` and `b` differ in length.
#[inline]
pub fn l2<E: Element, B: Operand<E>>(a: &[E], b: B) -> f64 {
    check_lengths(a.len(), b.operand_len());
    let [s] = sums(a, b, |x, y| [E::C::l2sq(x, y)]);
    if E::C::EXACT || (s.is_finite() && s >= E::C::TINY) {
        s.sqrt()
    } else {
        exact::l2(a, b)
    }
}

/// Cosine distance `1 − a·b / (‖a‖·‖b‖)`; `None` when either vector is all zeros (or empty).
///
/// # Panics
/// If `a` and `b` differ in length.
#[inline]
pub fn cosine_distance<E: Element, B: Operand<E>>(a: &[E], b: B) -> Option<f64> {
    check_lengths(a.len(), b.operand_len());
    if b.known_zero() {
        return None;
    }
    let (dot, na, nb) = match b.known_norm_sq() {
        Some(nb) => {
            let [dot, na] = sums(a, b, |x, y| [E::C::dot(x, y), E::C::dot(x, x)]);
            (dot, na, nb)
        }
        None => {
            let [dot, na, nb] = sums(a, b, |x, y| {
                [E::C::dot(x, y), E::C::dot(x, x), E::C::dot(y, y)]
            });
            (dot, na, nb)
        }
    };
    if E::C::EXACT {
        if na == 0.0 || nb == 0.0 {
            return None;
        }
        return Some(1.0 - dot / (na * nb).sqrt());
    }
    if dot.is_finite() && na >= E::C::TINY && nb >= E::C::TINY {
        let p = na * nb;
        if p.is_normal() {
            return Some(1.0 - dot / p.sqrt());
        }
    }
    exact::cosine_distance(a, b)
}

/// L2 norm `sqrt(Σ aᵢ²)` as `f64`, without overflow or underflow for finite inputs.
#[inline]
pub fn norm<E: Element>(a: &[E]) -> f64 {
    let s = match E::as_compute(a) {
        Some(x) => E::C::dot(x, x),
        None => {
            let mut buf = [E::C::default(); CHUNK];
            a.chunks(CHUNK)
                .map(|c| {
                    let x = &mut buf[..c.len()];
                    E::convert(c, x);
                    E::C::dot(x, x)
                })
                .fold(0.0, |s, v| s + v)
        }
    };
    if E::C::EXACT || (s.is_finite() && s >= E::C::TINY) {
        s.sqrt()
    } else {
        exact::norm(a)
    }
}

/// Number of differing bits between two packed bit vectors.
///
/// # Panics
/// If `a` and `b` differ in length.
#[inline]
pub fn hamming(a: &[u8], b: &[u8]) -> u64 {
    check_lengths(a.len(), b.len());
    // simsimd counts into 32 bits: 2²⁸ bytes hold fewer than 2³¹ bits.
    a.chunks(1 << 28)
        .zip(b.chunks(1 << 28))
        .map(|(x, y)| <u8 as BinarySimilarity>::hamming(x, y).unwrap_or(0.0) as u64)
        .sum()
}

/// Plain `f64` loops: the reference the SIMD paths fall back to.
mod exact {
    use super::{Element, Operand};

    pub(super) fn dot<E: Element, B: Operand<E>>(a: &[E], b: B) -> f64 {
        a.iter()
            .enumerate()
            .fold(0.0, |s, (i, x)| s + x.to_f64() * b.get(i))
    }

    pub(super) fn l2_squared<E: Element, B: Operand<E>>(a: &[E], b: B) -> f64 {
        a.iter().enumerate().fold(0.0, |s, (i, x)| {
            let d = x.to_f64() - b.get(i);
            s + d * d
        })
    }

    /// `2⁻ᵉ` for `2ᵉ ≤ max` (e clamped to a normal range): multiplying by it is exact, and brings `max` near 1.
    fn scale_for(max: f64) -> f64 {
        let e = ((max.to_bits() >> 52) & 0x7ff) as i64 - 1023;
        let e = e.clamp(-1021, 1022);
        f64::from_bits(((1023 - e) as u64) << 52)
    }

    /// `sqrt(Σ dᵢ²)`, scaled by a power of two near the largest `|dᵢ|` so that finite inputs neither overflow
    /// nor underflow (and the scaling itself rounds nothing).
    fn hypot(d: impl Fn(usize) -> f64, n: usize) -> f64 {
        let mut max = 0.0f64;
        let mut finite = true;
        for i in 0..n {
            let v = d(i);
            finite &= v.is_finite();
            max = max.max(v.abs());
        }
        if !finite {
            return (0..n).fold(0.0, |s, i| s + d(i) * d(i)).sqrt();
        }
        if max == 0.0 {
            return 0.0;
        }
        let scale = scale_for(max);
        let s = (0..n).fold(0.0, |s, i| {
            let v = d(i) * scale;
            s + v * v
        });
        s.sqrt() / scale
    }

    pub(super) fn l2<E: Element, B: Operand<E>>(a: &[E], b: B) -> f64 {
        hypot(|i| a[i].to_f64() - b.get(i), a.len())
    }

    pub(super) fn norm<E: Element>(a: &[E]) -> f64 {
        hypot(|i| a[i].to_f64(), a.len())
    }

    pub(super) fn cosine_distance<E: Element, B: Operand<E>>(a: &[E], b: B) -> Option<f64> {
        let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
        let (mut max_a, mut max_b) = (0.0f64, 0.0f64);
        let mut finite = true;
        for (i, x) in a.iter().enumerate() {
            let (x, y) = (x.to_f64(), b.get(i));
            dot += x * y;
            na += x * x;
            nb += y * y;
            finite &= x.is_finite() && y.is_finite();
            max_a = max_a.max(x.abs());
            max_b = max_b.max(y.abs());
        }
        if !finite {
            // NaN / ±Inf propagate exactly as in DataFusion's built-in.
            if na == 0.0 || nb == 0.0 {
                return None;
            }
            return Some(1.0 - dot / (na.sqrt() * nb.sqrt()));
        }
        if max_a == 0.0 || max_b == 0.0 {
            return None;
        }
        let (scale_a, scale_b) = (scale_for(max_a), scale_for(max_b));
        let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
        for (i, x) in a.iter().enumerate() {
            let (x, y) = (x.to_f64() * scale_a, b.get(i) * scale_b);
            dot += x * y;
            na += x * x;
            nb += y * y;
        }
        Some(1.0 - dot / (na * nb).sqrt())
    }
}
