//! Property tests of the kernels against plain `f64` references, and tests of the argument paths (column against
//! constant, sliced arrays, mixed element types) against each other.
//!
//! Error bounds, with `u` the unit roundoff of the accumulation type (`2⁻²⁴` for `f32` and `f16`, `2⁻⁵³` for `f64`),
//! `n` the length and `S = Σ|aᵢ·bᵢ|` (or `Σ(aᵢ−bᵢ)²`, `Σaᵢ²`):
//!
//! * `i8`: inner product and squared L2 exact; everything else within `4·2⁻⁵³` relative.
//! * inner product: `|err| ≤ (n + 32)·u·S`.
//! * squared L2 and squared norm: `|err| ≤ (n + 32)·u·S` (all terms non-negative, so relative); L2 and norm: half
//!   that, relative.
//! * cosine distance: `|err| ≤ 3·(n + 32)·u` absolute (the similarity is a ratio of such sums, each term bounded
//!   by `‖a‖·‖b‖`).

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, FixedSizeListArray, Float16Array, Float32Array, Float64Array, Int8Array,
    ListArray, PrimitiveArray,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Field, Float16Type, Float32Type, Float64Type, Int8Type,
};
use datafusion::common::config::ConfigOptions;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl};
use half::f16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::kernels::{self, Compute, Element, Query, ToF64};
use super::{
    CosineDistance, HammingDistance, InnerProduct, L2Distance, L2DistanceSquared,
    NegativeInnerProduct, Normalize, VectorNorm,
};

// ---------------------------------------------------------------------------------------------------------------
// f64 references

fn f64s<T: ToF64>(x: &[T]) -> Vec<f64> {
    x.iter().map(|v| v.to_f64()).collect()
}

fn ref_dot(a: &[f64], b: &[f64]) -> (f64, f64) {
    let dot = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let mag = a.iter().zip(b).map(|(x, y)| (x * y).abs()).sum();
    (dot, mag)
}

fn ref_l2sq(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

fn ref_cosine(a: &[f64], b: &[f64]) -> Option<f64> {
    let (dot, _) = ref_dot(a, b);
    let (na, nb) = (ref_dot(a, a).0, ref_dot(b, b).0);
    if na == 0.0 || nb == 0.0 {
        return None;
    }
    Some(1.0 - dot / (na.sqrt() * nb.sqrt()))
}

// ---------------------------------------------------------------------------------------------------------------
// Random vectors

trait Gen: Element {
    /// Unit roundoff of the accumulation (0 for exact integer sums).
    const U: f64;
    fn random(rng: &mut StdRng, scale: f64) -> Self;
}

impl Gen for i8 {
    const U: f64 = 0.0;
    fn random(rng: &mut StdRng, _: f64) -> i8 {
        rng.random()
    }
}
impl Gen for f16 {
    const U: f64 = 1.0 / (1u64 << 24) as f64;
    fn random(rng: &mut StdRng, scale: f64) -> f16 {
        // f16 holds up to 65504: keep squares and sums of a 1000-vector well inside f32.
        f16::from_f64(rng.random_range(-1.0..1.0) * scale.min(100.0))
    }
}
impl Gen for f32 {
    const U: f64 = 1.0 / (1u64 << 24) as f64;
    fn random(rng: &mut StdRng, scale: f64) -> f32 {
        (rng.random_range(-1.0..1.0) * scale) as f32
    }
}
impl Gen for f64 {
    const U: f64 = 1.0 / (1u64 << 53) as f64;
    fn random(rng: &mut StdRng, scale: f64) -> f64 {
        rng.random_range(-1.0..1.0) * scale
    }
}

fn vector<T: Gen>(rng: &mut StdRng, n: usize, scale: f64) -> Vec<T> {
    (0..n).map(|_| T::random(rng, scale)).collect()
}

/// Lengths 0..1000: all small ones, SIMD-width boundaries, and random ones.
fn lengths(rng: &mut StdRng) -> Vec<usize> {
    let mut v: Vec<usize> = (0..=40).collect();
    v.extend([
        63, 64, 65, 127, 128, 129, 255, 256, 257, 383, 384, 385, 511, 512, 513, 767, 768, 769, 999,
    ]);
    v.extend((0..40).map(|_| rng.random_range(0..1000)));
    v
}

fn query_of<T: Element>(b: &[T]) -> Query<T::C> {
    let mut values = vec![T::C::default(); b.len()];
    T::convert(b, &mut values);
    Query::new(values)
}

fn check_kernels<T: Gen>(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let exact_ints = T::U == 0.0;
    for n in lengths(&mut rng) {
        for scale in [1e-3, 1.0, 1e3] {
            let a: Vec<T> = vector(&mut rng, n, scale);
            let b: Vec<T> = vector(&mut rng, n, scale);
            let (fa, fb) = (f64s(&a), f64s(&b));
            let q = query_of(&b);
            let k = (n + 32) as f64 * T::U;
            let ctx = format!("{} n={n} scale={scale}", std::any::type_name::<T>());

            // Inner product, against a row and against a prepared query.
            let (dot, mag) = ref_dot(&fa, &fb);
            for got in [kernels::dot(&a, &b[..]), kernels::dot(&a, &q)] {
                if exact_ints {
                    assert_eq!(got, dot, "{ctx}");
                } else {
                    assert!(
                        (got - dot).abs() <= k * mag + 1e-300,
                        "dot {ctx}: {got} vs {dot}"
                    );
                }
            }

            // Squared L2 and L2.
            let l2sq = ref_l2sq(&fa, &fb);
            for got in [kernels::l2_squared(&a, &b[..]), kernels::l2_squared(&a, &q)] {
                if exact_ints {
                    assert_eq!(got, l2sq, "{ctx}");
                } else {
                    assert!(
                        (got - l2sq).abs() <= k * l2sq,
                        "l2sq {ctx}: {got} vs {l2sq}"
                    );
                }
            }
            let l2 = l2sq.sqrt();
            for got in [kernels::l2(&a, &b[..]), kernels::l2(&a, &q)] {
                let bound = if exact_ints { 4e-16 } else { k };
                assert!((got - l2).abs() <= bound * l2, "l2 {ctx}: {got} vs {l2}");
            }

            // Norm.
            let norm = ref_dot(&fa, &fa).0.sqrt();
            let got = kernels::norm(&a);
            let bound = if exact_ints { 4e-16 } else { k };
            assert!(
                (got - norm).abs() <= bound * norm,
                "norm {ctx}: {got} vs {norm}"
            );

            // Cosine distance.
            let want = ref_cosine(&fa, &fb);
            for got in [
                kernels::cosine_distance(&a, &b[..]),
                kernels::cosine_distance(&a, &q),
            ] {
                match (got, want) {
                    (None, None) => {}
                    (Some(g), Some(w)) => {
                        let bound = if exact_ints { 1e-15 } else { 3.0 * k };
                        assert!((g - w).abs() <= bound, "cosine {ctx}: {g} vs {w}");
                    }
                    _ => panic!("cosine {ctx}: {got:?} vs {want:?}"),
                }
            }
            // A vector against itself is exactly 0 (unless it is all zeros).
            if let Some(d) = kernels::cosine_distance(&a, &a[..]) {
                assert_eq!(d, 0.0, "cosine self {ctx}");
            }
        }
    }
}

#[test]
fn kernels_i8_match_reference() {
    check_kernels::<i8>(1);
}

#[test]
fn kernels_f16_match_reference() {
    check_kernels::<f16>(2);
}

#[test]
fn kernels_f32_match_reference() {
    check_kernels::<f32>(3);
}

#[test]
fn kernels_f64_match_reference() {
    check_kernels::<f64>(4);
}

#[test]
fn hamming_matches_reference() {
    let mut rng = StdRng::seed_from_u64(5);
    for n in lengths(&mut rng) {
        let a: Vec<u8> = (0..n).map(|_| rng.random()).collect();
        let b: Vec<u8> = (0..n).map(|_| rng.random()).collect();
        let want: u64 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x ^ y).count_ones() as u64)
            .sum();
        assert_eq!(kernels::hamming(&a, &b), want, "n={n}");
        assert_eq!(kernels::hamming(&a, &a), 0);
    }
}

#[test]
fn i8_sums_do_not_overflow_32_bits() {
    // 40,000 · 255² > 2³¹: simsimd's 32-bit integer sums would wrap without blocking.
    let a = vec![-128i8; 40_000];
    let b = vec![127i8; 40_000];
    assert_eq!(kernels::l2_squared(&a, &b[..]), 40_000.0 * 255.0 * 255.0);
    assert_eq!(kernels::dot(&a, &a[..]), 40_000.0 * 128.0 * 128.0);
    assert_eq!(kernels::dot(&a, &b[..]), -40_000.0 * 128.0 * 127.0);
}

#[test]
fn extreme_magnitudes_are_rescaled() {
    // Squares overflow f64: DataFusion 54.1's built-in gives NaN here; the scaled fallback gives the true values.
    let a = [3e200, 4e200];
    assert_eq!(kernels::cosine_distance(&a, &a[..]), Some(0.0));
    assert!((kernels::norm(&a) / 5e200 - 1.0).abs() < 1e-15);
    assert!((kernels::l2(&a, &[0.0, 0.0][..]) / 5e200 - 1.0).abs() < 1e-15);
    let far = [1e200, 0.0];
    assert_eq!(
        kernels::cosine_distance(&far, &[-1e-200, 0.0][..]),
        Some(2.0)
    );
    // Squares underflow f64.
    let tiny = [1e-200, 2e-200];
    assert_eq!(kernels::cosine_distance(&tiny, &tiny[..]), Some(0.0));
    assert!((kernels::norm(&tiny) - 5f64.sqrt() * 1e-200).abs() < 1e-214);
    // f32 squares underflow f32 (SIMD sums are f32): the f64 fallback still sees them.
    let small = [1e-25f32, 2e-25];
    let d = kernels::cosine_distance(&small, &[2e-25f32, 4e-25][..]).unwrap();
    assert!(d.abs() < 1e-7, "{d}");
    let n = kernels::norm(&small);
    assert!((n - 5f64.sqrt() * 1e-25).abs() < 1e-31, "{n}");
    assert!(kernels::dot(&small, &small[..]) > 0.0);
    // f32 squares overflow f32.
    let big = [3e30f32, 4e30];
    assert!((kernels::norm(&big) - 5e30).abs() < 1e24);
    assert_eq!(kernels::cosine_distance(&big, &big[..]), Some(0.0));
    let q = Query::new(vec![3e30f32, 4e30]);
    assert_eq!(kernels::cosine_distance(&big, &q), Some(0.0));
}

#[test]
fn zero_and_non_finite_vectors() {
    let zero = [0.0f32; 4];
    let one = [1.0f32, 0.0, 0.0, 0.0];
    assert_eq!(kernels::cosine_distance(&zero, &one[..]), None);
    assert_eq!(kernels::cosine_distance(&one, &zero[..]), None);
    assert_eq!(
        kernels::cosine_distance(&one, &Query::new(zero.to_vec())),
        None
    );
    assert_eq!(kernels::cosine_distance::<f32, &[f32]>(&[], &[][..]), None);
    assert_eq!(kernels::dot::<f32, &[f32]>(&[], &[][..]), 0.0);
    assert_eq!(kernels::norm(&zero), 0.0);
    let nan = [f32::NAN, 1.0, 0.0, 0.0];
    assert!(kernels::cosine_distance(&nan, &one[..]).unwrap().is_nan());
    assert!(kernels::dot(&nan, &one[..]).is_nan());
    assert!(kernels::l2(&nan, &one[..]).is_nan());
    // A zero vector wins over NaN, as in DataFusion.
    assert_eq!(kernels::cosine_distance(&nan, &zero[..]), None);
    let inf = [f64::INFINITY, 1.0];
    assert!(kernels::cosine_distance(&inf, &[1.0, 1.0][..])
        .unwrap()
        .is_nan());
    assert_eq!(kernels::norm(&inf), f64::INFINITY);
    assert_eq!(kernels::l2(&inf, &[1.0, 1.0][..]), f64::INFINITY);
    assert!(kernels::l2(&inf, &inf[..]).is_nan());
    assert_eq!(kernels::dot(&inf, &[1.0, 1.0][..]), f64::INFINITY);
}

// ---------------------------------------------------------------------------------------------------------------
// Argument paths: the same answers whichever way the vectors arrive.

fn call(
    udf: &dyn ScalarUDFImpl,
    args: Vec<ColumnarValue>,
) -> datafusion::common::Result<ColumnarValue> {
    let arg_fields = args
        .iter()
        .map(|a| Arc::new(Field::new("a", a.data_type(), true)))
        .collect::<Vec<_>>();
    let types: Vec<DataType> = args.iter().map(|a| a.data_type()).collect();
    let return_type = udf.return_type(&udf.coerce_types(&types)?)?;
    let number_rows = args
        .iter()
        .find_map(|a| match a {
            ColumnarValue::Array(a) => Some(a.len()),
            ColumnarValue::Scalar(_) => None,
        })
        .unwrap_or(1);
    udf.invoke_with_args(ScalarFunctionArgs {
        args,
        arg_fields,
        number_rows,
        return_field: Arc::new(Field::new("r", return_type, true)),
        config_options: Arc::new(ConfigOptions::default()),
    })
}

fn to_array(v: ColumnarValue) -> ArrayRef {
    match v {
        ColumnarValue::Array(a) => a,
        ColumnarValue::Scalar(s) => s.to_array().unwrap(),
    }
}

fn f64_values(v: ColumnarValue) -> Vec<Option<f64>> {
    let a = to_array(v);
    let a = a.as_any().downcast_ref::<Float64Array>().unwrap();
    a.iter().collect()
}

/// A FixedSizeList column of `rows` random vectors of `dim` elements of `P`, every fifth row NULL, every seventh
/// with a NULL element, sliced by one row so that offsets matter.
fn fixed_column<P: ArrowPrimitiveType>(
    rng: &mut StdRng,
    rows: usize,
    dim: usize,
    gen: impl Fn(&mut StdRng) -> P::Native,
) -> ArrayRef {
    let values: Vec<Option<P::Native>> = (0..(rows + 1) * dim)
        .map(|i| (i % (7 * dim) != 3.min(dim.saturating_sub(1)) || dim == 0).then(|| gen(rng)))
        .collect();
    let values = Arc::new(values.into_iter().collect::<PrimitiveArray<P>>());
    let nulls = NullBuffer::from((0..rows + 1).map(|i| i % 5 != 2).collect::<Vec<_>>());
    let field = Arc::new(Field::new_list_field(P::DATA_TYPE, true));
    let array = FixedSizeListArray::new(field, dim as i32, values, Some(nulls));
    Arc::new(array.slice(1, rows))
}

/// The same rows as a List column (with an offset into its values).
fn as_list(fixed: &ArrayRef) -> ArrayRef {
    let l = fixed.as_any().downcast_ref::<FixedSizeListArray>().unwrap();
    let dim = l.value_length() as usize;
    let field = Arc::new(Field::new_list_field(l.value_type(), true));
    let values = l.values().clone();
    // Prepend `dim` unused values so that offsets start past zero.
    let values =
        arrow::compute::concat(&[&values.slice(0, dim.min(values.len())), &values]).unwrap();
    let offsets = OffsetBuffer::<i32>::from_lengths(std::iter::repeat_n(dim, l.len()));
    let offsets = OffsetBuffer::new(
        offsets
            .iter()
            .map(|o| o + dim as i32)
            .collect::<Vec<_>>()
            .into(),
    );
    Arc::new(ListArray::new(field, offsets, values, l.nulls().cloned()))
}

/// Row `i` of a list array as a one-row constant.
fn constant_of(list: &ArrayRef, i: usize) -> ColumnarValue {
    ColumnarValue::Scalar(ScalarValue::try_from_array(list, i).unwrap())
}

/// Broadcasts row `i` of `list` to `n` rows.
fn repeat_row(list: &ArrayRef, i: usize, n: usize) -> ArrayRef {
    ScalarValue::try_from_array(list, i)
        .unwrap()
        .to_array_of_size(n)
        .unwrap()
}

fn assert_close(got: &[Option<f64>], want: &[Option<f64>], tol: f64, ctx: &str) {
    assert_eq!(got.len(), want.len(), "{ctx}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        match (g, w) {
            (None, None) => {}
            (Some(g), Some(w)) if g.is_nan() && w.is_nan() => {}
            (Some(g), Some(w)) => assert!(
                (g - w).abs() <= tol * w.abs().max(1.0),
                "{ctx} row {i}: {g} vs {w}"
            ),
            _ => panic!("{ctx} row {i}: {g:?} vs {w:?}"),
        }
    }
}

fn metrics() -> Vec<Box<dyn ScalarUDFImpl>> {
    vec![
        Box::new(CosineDistance::new()),
        Box::new(InnerProduct::new()),
        Box::new(NegativeInnerProduct::new()),
        Box::new(L2Distance::new()),
        Box::new(L2DistanceSquared::new()),
    ]
}

/// Column against a constant (either side), column against the constant repeated as a column, and every row as
/// two scalars, all agree; and so does the same data as a List column.
fn check_paths(column: ArrayRef, tol: f64) {
    let n = column.len();
    let list = as_list(&column);
    for udf in metrics() {
        for q in [0, 3] {
            let ctx = format!("{} {} q={q}", udf.name(), column.data_type());
            let constant = constant_of(&column, q);
            let col = ColumnarValue::Array(Arc::clone(&column));
            let vs_const =
                f64_values(call(udf.as_ref(), vec![col.clone(), constant.clone()]).unwrap());
            let const_vs =
                f64_values(call(udf.as_ref(), vec![constant.clone(), col.clone()]).unwrap());
            let repeated = ColumnarValue::Array(repeat_row(&column, q, n));
            let vs_col = f64_values(call(udf.as_ref(), vec![col, repeated]).unwrap());
            let list_vs_const = f64_values(
                call(
                    udf.as_ref(),
                    vec![ColumnarValue::Array(Arc::clone(&list)), constant.clone()],
                )
                .unwrap(),
            );
            let scalars: Vec<Option<f64>> = (0..n)
                .map(|i| {
                    let r = call(
                        udf.as_ref(),
                        vec![constant_of(&column, i), constant.clone()],
                    )
                    .unwrap();
                    assert!(
                        matches!(r, ColumnarValue::Scalar(_)),
                        "{ctx}: scalar in, scalar out"
                    );
                    f64_values(r)[0]
                })
                .collect();
            assert_close(
                &vs_const,
                &vs_col,
                tol,
                &format!("{ctx} col-const vs col-col"),
            );
            assert_close(
                &const_vs,
                &vs_col,
                tol,
                &format!("{ctx} const-col vs col-col"),
            );
            assert_close(&list_vs_const, &vs_col, tol, &format!("{ctx} list"));
            assert_close(&scalars, &vs_col, tol, &format!("{ctx} scalars"));
            assert!(vs_col.iter().any(|v| v.is_none()), "{ctx}");
        }
    }
}

#[test]
fn argument_paths_agree() {
    let mut rng = StdRng::seed_from_u64(6);
    // (A zero-length FixedSizeList cannot be a DataFusion scalar: ScalarValue makes it an empty array.)
    for dim in [1, 3, 17, 384] {
        check_paths(
            fixed_column::<Float32Type>(&mut rng, 40, dim, |r| r.random_range(-1.0..1.0)),
            1e-6,
        );
        check_paths(
            fixed_column::<Float64Type>(&mut rng, 40, dim, |r| r.random_range(-1.0..1.0)),
            1e-12,
        );
        check_paths(
            fixed_column::<Float16Type>(&mut rng, 40, dim, |r| {
                f16::from_f64(r.random_range(-1.0..1.0))
            }),
            1e-6,
        );
        check_paths(
            fixed_column::<Int8Type>(&mut rng, 40, dim, |r| r.random()),
            1e-15,
        );
    }
}

#[test]
fn constant_is_converted_to_the_column_type() {
    let field = Arc::new(Field::new_list_field(DataType::Float32, true));
    let column: ArrayRef = Arc::new(FixedSizeListArray::new(
        field,
        2,
        Arc::new(Float32Array::from(vec![1.0, 0.1, 3.0, 4.0])),
        None,
    ));
    // 0.1 as f64 rounds to 0.1f32 as in the column: an f32 row and the f64 constant [1.0, 0.1] are identical.
    let q = ColumnarValue::Scalar(ScalarValue::List(ScalarValue::new_list_nullable(
        &[
            ScalarValue::Float64(Some(1.0)),
            ScalarValue::Float64(Some(0.1)),
        ],
        &DataType::Float64,
    )));
    let got = f64_values(
        call(
            &L2DistanceSquared::new(),
            vec![ColumnarValue::Array(column), q],
        )
        .unwrap(),
    );
    assert_eq!(got[0], Some(0.0));
}

#[test]
fn int8_column_with_fractional_constant_uses_f32() {
    let field = Arc::new(Field::new_list_field(DataType::Int8, true));
    let column: ArrayRef = Arc::new(FixedSizeListArray::new(
        field,
        2,
        Arc::new(Int8Array::from(vec![1, 2, -3, 4])),
        None,
    ));
    let q = |v: [f64; 2]| {
        ColumnarValue::Scalar(ScalarValue::List(ScalarValue::new_list_nullable(
            &[
                ScalarValue::Float64(Some(v[0])),
                ScalarValue::Float64(Some(v[1])),
            ],
            &DataType::Float64,
        )))
    };
    let col = ColumnarValue::Array(column);
    let got = f64_values(call(&InnerProduct::new(), vec![col.clone(), q([0.5, 0.25])]).unwrap());
    assert_eq!(got, vec![Some(1.0), Some(-0.5)]);
    let got = f64_values(call(&InnerProduct::new(), vec![col.clone(), q([200.0, 1.0])]).unwrap());
    assert_eq!(got, vec![Some(202.0), Some(-596.0)]);
    let got = f64_values(call(&InnerProduct::new(), vec![col, q([2.0, -1.0])]).unwrap());
    assert_eq!(got, vec![Some(0.0), Some(-10.0)]);
}

#[test]
fn mixed_column_types_widen() {
    let f16s: ArrayRef = Arc::new(FixedSizeListArray::new(
        Arc::new(Field::new_list_field(DataType::Float16, true)),
        2,
        Arc::new(Float16Array::from(vec![
            f16::from_f32(1.5),
            f16::from_f32(-2.0),
        ])),
        None,
    ));
    let i8s: ArrayRef = Arc::new(FixedSizeListArray::new(
        Arc::new(Field::new_list_field(DataType::Int8, true)),
        2,
        Arc::new(Int8Array::from(vec![2, 3])),
        None,
    ));
    let got = f64_values(
        call(
            &InnerProduct::new(),
            vec![ColumnarValue::Array(f16s), ColumnarValue::Array(i8s)],
        )
        .unwrap(),
    );
    assert_eq!(got, vec![Some(-3.0)]);
}

#[test]
fn length_mismatch_is_an_error_naming_both_lengths() {
    let mut rng = StdRng::seed_from_u64(7);
    let column = fixed_column::<Float32Type>(&mut rng, 10, 3, |r| r.random_range(-1.0..1.0));
    let q = ColumnarValue::Scalar(ScalarValue::List(ScalarValue::new_list_nullable(
        &[
            ScalarValue::Float64(Some(1.0)),
            ScalarValue::Float64(Some(2.0)),
        ],
        &DataType::Float64,
    )));
    let col = ColumnarValue::Array(column);
    let err = call(&CosineDistance::new(), vec![col.clone(), q.clone()]).unwrap_err();
    assert!(
        err.to_string().contains(
            "cosine_distance requires both list inputs to have the same length, got 3 and 2"
        ),
        "{err}"
    );
    let err = call(&CosineDistance::new(), vec![q, col]).unwrap_err();
    assert!(err.to_string().contains("got 2 and 3"), "{err}");
}

#[test]
fn normalize_keeps_container_and_element_type() {
    let mut rng = StdRng::seed_from_u64(8);
    for column in [
        fixed_column::<Float32Type>(&mut rng, 30, 5, |r| r.random_range(-1.0..1.0)),
        fixed_column::<Float64Type>(&mut rng, 30, 5, |r| r.random_range(-1.0..1.0)),
        fixed_column::<Float16Type>(&mut rng, 30, 5, |r| {
            f16::from_f64(r.random_range(-1.0..1.0))
        }),
        fixed_column::<Int8Type>(&mut rng, 30, 5, |r| r.random()),
    ] {
        for input in [Arc::clone(&column), as_list(&column)] {
            let out = to_array(
                call(
                    &Normalize::new(),
                    vec![ColumnarValue::Array(Arc::clone(&input))],
                )
                .unwrap(),
            );
            let want_type = Normalize::new()
                .return_type(&[input.data_type().clone()])
                .unwrap();
            assert_eq!(out.data_type(), &want_type);
            assert_eq!(out.len(), input.len());
            // Every non-NULL output row has norm 1; NULL rows are exactly the NULL or NULL-element input rows.
            let norms = f64_values(
                call(
                    &VectorNorm::new(),
                    vec![ColumnarValue::Array(Arc::clone(&out))],
                )
                .unwrap(),
            );
            let input_norms =
                f64_values(call(&VectorNorm::new(), vec![ColumnarValue::Array(input)]).unwrap());
            for (i, (n, m)) in norms.iter().zip(&input_norms).enumerate() {
                assert_eq!(n.is_some(), m.is_some_and(|m| m != 0.0), "row {i}");
                if let Some(n) = n {
                    let element = super::vectors::list_field(&want_type).unwrap().data_type();
                    let tol = if element == &DataType::Float16 {
                        2e-3
                    } else {
                        1e-6
                    };
                    assert!((n - 1.0).abs() < tol, "row {i}: {n}");
                }
            }
        }
    }
}

#[test]
fn hamming_over_binary_and_lists() {
    let bin: ArrayRef = Arc::new(arrow::array::BinaryArray::from(vec![
        Some(&[0xFFu8, 0x00][..]),
        None,
        Some(&[0x0F, 0xF0][..]),
    ]));
    let q = ColumnarValue::Scalar(ScalarValue::Binary(Some(vec![0x0F, 0x01])));
    let got = to_array(
        call(
            &HammingDistance::new(),
            vec![ColumnarValue::Array(bin), q.clone()],
        )
        .unwrap(),
    );
    let got = got
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap();
    assert_eq!(got.iter().collect::<Vec<_>>(), vec![Some(5), None, Some(5)]);
    let list = ColumnarValue::Scalar(ScalarValue::List(ScalarValue::new_list_nullable(
        &[ScalarValue::Int64(Some(255)), ScalarValue::Int64(Some(0))],
        &DataType::Int64,
    )));
    let got = call(&HammingDistance::new(), vec![list, q.clone()]).unwrap();
    assert!(
        matches!(got, ColumnarValue::Scalar(ScalarValue::Int64(Some(5)))),
        "{got:?}"
    );
    let bad = ColumnarValue::Scalar(ScalarValue::List(ScalarValue::new_list_nullable(
        &[ScalarValue::Int64(Some(256)), ScalarValue::Int64(Some(0))],
        &DataType::Int64,
    )));
    assert!(call(&HammingDistance::new(), vec![bad, q]).is_err());
}

#[test]
fn every_function_has_docs() {
    for udf in super::functions() {
        let doc = udf
            .documentation()
            .unwrap_or_else(|| panic!("{} has no documentation", udf.name()));
        assert!(!doc.description.is_empty());
        assert!(doc.syntax_example.starts_with(udf.name()));
    }
}

// The kernels' Element/Compute impls are used generically above; make sure Compute::from_f64 rounds as documented.
#[test]
fn from_f64_conversions() {
    assert_eq!(<f32 as Compute>::from_f64(0.1), 0.1f32);
    assert_eq!(<i8 as Compute>::from_f64(-128.0), -128);
    assert_eq!(<f32 as Compute>::from_f64(1e300), f32::INFINITY);
}
