//! The distance functions' arguments: type checks at planning time, and per batch a view of each vector argument
//! (the rows of a column, or one constant prepared once) in a single element type, plus the row loops that apply
//! DataFusion's NULL and length rules.
//!
//! # Element types
//!
//! Vectors are `FixedSizeList`, `List` or `LargeList` of `Int8`, `Float16`, `Float32` or `Float64`, used as they
//! are; any other numeric element type (integers, unsigned integers, decimals, and `Null` from an untyped literal)
//! is cast to `Float64` first.
//!
//! * Column against constant (the hot case, e.g. `cosine_distance(embedding, [0.1, …])`): the constant is converted
//!   once per batch to the column's compute type (`f32` for `Float32` and `Float16` columns, `f64` for `Float64`,
//!   `i8` for `Int8`) and its norm computed once; the column is never converted. Values outside the target range
//!   become ±Inf (IEEE rounding). An `Int8` column compared with a constant that is not all integers in
//!   `-128..=127` is computed in `f32` instead (the column is cast to `Float32`).
//! * Two columns (or two constants) of different element types: the narrower is cast to the wider, in the order
//!   `Int8 < Float16 < Float32 < Float64`.
//!
//! # NULLs and lengths (DataFusion's rules)
//!
//! A row is NULL when either argument is NULL or contains a NULL element. Otherwise the two vectors must have the
//! same length, or the query fails with an execution error naming both lengths (checked before NULL elements, as
//! DataFusion does).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Builder};
use arrow::buffer::NullBuffer;
use arrow::compute::{cast_with_options, CastOptions};
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, FieldRef, Float16Type, Float32Type, Float64Type, Int8Type,
    UInt8Type,
};
use datafusion::common::utils::take_function_args;
use datafusion::common::{exec_err, internal_err, plan_err, Result, ScalarValue};
use datafusion::logical_expr::ColumnarValue;

use super::kernels::{Compute, Element, Operand, Query};

/// A vector element type, ordered from narrowest to widest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    I8,
    F16,
    F32,
    F64,
}

impl Kind {
    /// The kind a list element type is computed as (anything but the four native types becomes `F64`).
    pub(crate) fn of(element: &DataType) -> Kind {
        match element {
            DataType::Int8 => Kind::I8,
            DataType::Float16 => Kind::F16,
            DataType::Float32 => Kind::F32,
            _ => Kind::F64,
        }
    }

    pub(crate) fn data_type(self) -> DataType {
        match self {
            Kind::I8 => DataType::Int8,
            Kind::F16 => DataType::Float16,
            Kind::F32 => DataType::Float32,
            Kind::F64 => DataType::Float64,
        }
    }
}

/// The element field of a `List`, `LargeList` or `FixedSizeList` type.
pub(crate) fn list_field(dt: &DataType) -> Option<&FieldRef> {
    match dt {
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => Some(f),
        _ => None,
    }
}

/// The same list container as `dt` with elements of type `element`.
pub(crate) fn with_element(dt: &DataType, element: DataType) -> Option<DataType> {
    let field = |f: &FieldRef| Arc::new(f.as_ref().clone().with_data_type(element.clone()));
    Some(match dt {
        DataType::List(f) => DataType::List(field(f)),
        DataType::LargeList(f) => DataType::LargeList(field(f)),
        DataType::FixedSizeList(f, d) => DataType::FixedSizeList(field(f), *d),
        _ => return None,
    })
}

fn arity_error<T>(name: &str, arity: usize, got: usize) -> Result<T> {
    let noun = if arity == 1 { "argument" } else { "arguments" };
    plan_err!("{name} function requires {arity} {noun}, got {got}")
}

/// `coerce_types` of the vector functions: `arity` arguments, each NULL or a list of numbers. Types are kept as
/// they are (no cast of the column to `Float64`).
pub(crate) fn check_vector_args(
    name: &str,
    arg_types: &[DataType],
    arity: usize,
) -> Result<Vec<DataType>> {
    if arg_types.len() != arity {
        return arity_error(name, arity, arg_types.len());
    }
    for t in arg_types {
        let ok = matches!(t, DataType::Null)
            || list_field(t)
                .is_some_and(|f| f.data_type().is_numeric() || f.data_type() == &DataType::Null);
        if !ok {
            return plan_err!("{name} does not support type {t}");
        }
    }
    Ok(arg_types.to_vec())
}

/// `coerce_types` of bit-vector functions: NULL, a binary type, or a list of integers (or of NULLs).
pub(crate) fn check_bit_args(
    name: &str,
    arg_types: &[DataType],
    arity: usize,
) -> Result<Vec<DataType>> {
    if arg_types.len() != arity {
        return arity_error(name, arity, arg_types.len());
    }
    for t in arg_types {
        let ok = matches!(
            t,
            DataType::Null
                | DataType::Binary
                | DataType::LargeBinary
                | DataType::BinaryView
                | DataType::FixedSizeBinary(_)
        ) || list_field(t)
            .is_some_and(|f| f.data_type().is_integer() || f.data_type() == &DataType::Null);
        if !ok {
            return plan_err!("{name} does not support type {t}");
        }
    }
    Ok(arg_types.to_vec())
}

/// One evaluated argument.
pub(crate) enum Input {
    /// NULL (a NULL constant or a column of type `Null`): every result row is NULL.
    Null,
    /// A column.
    Rows(ArrayRef),
    /// A constant, as a one-row array.
    Constant(ArrayRef),
}

impl Input {
    pub(crate) fn new(value: &ColumnarValue) -> Result<Input> {
        Ok(match value {
            ColumnarValue::Scalar(s) if s.is_null() => Input::Null,
            ColumnarValue::Scalar(s) => Input::Constant(s.to_array()?),
            ColumnarValue::Array(a) if a.data_type() == &DataType::Null => Input::Null,
            ColumnarValue::Array(a) => Input::Rows(Arc::clone(a)),
        })
    }
}

/// Number of result rows, and whether the result is a scalar (every argument a constant).
pub(crate) fn output_shape(args: &[ColumnarValue]) -> (usize, bool) {
    match args.iter().find_map(|a| match a {
        ColumnarValue::Array(a) => Some(a.len()),
        ColumnarValue::Scalar(_) => None,
    }) {
        Some(n) => (n, false),
        None => (1, true),
    }
}

/// Wraps a result array as the function's return value.
pub(crate) fn finish(out: ArrayRef, scalar: bool) -> Result<ColumnarValue> {
    if scalar {
        Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
    } else {
        Ok(ColumnarValue::Array(out))
    }
}

/// Casts a list array's elements to `kind` (no-op if they already are).
pub(crate) fn to_kind(array: &ArrayRef, kind: Kind) -> Result<ArrayRef> {
    let target = kind.data_type();
    match list_field(array.data_type()) {
        Some(f) if f.data_type() == &target => Ok(Arc::clone(array)),
        Some(_) => {
            let Some(dt) = with_element(array.data_type(), target) else {
                return internal_err!("not a list: {}", array.data_type());
            };
            Ok(cast_with_options(array, &dt, &CastOptions::default())?)
        }
        None => internal_err!("not a list: {}", array.data_type()),
    }
}

/// The element kind of a list array.
pub(crate) fn kind_of(array: &ArrayRef) -> Result<Kind> {
    match list_field(array.data_type()) {
        Some(f) => Ok(Kind::of(f.data_type())),
        None => internal_err!("not a list: {}", array.data_type()),
    }
}

#[derive(Clone, Copy)]
enum Layout<'a> {
    Fixed(usize),
    Small(&'a [i32]),
    Large(&'a [i64]),
}

/// The rows of a list (or binary) array as slices of its values.
pub(crate) struct Rows<'a, T> {
    values: &'a [T],
    layout: Layout<'a>,
    nulls: Option<&'a NullBuffer>,
    value_nulls: Option<&'a NullBuffer>,
    len: usize,
    /// A one-row constant standing for every row.
    broadcast: bool,
}

/// One row of a [`Rows`].
pub(crate) enum Row<'a, T> {
    Null,
    /// The row's values, and whether any of them is NULL.
    Values(&'a [T], bool),
}

impl<'a, T: arrow::datatypes::ArrowNativeType> Rows<'a, T> {
    /// A list array whose elements are `P`.
    pub(crate) fn of_list<P: ArrowPrimitiveType<Native = T>>(array: &'a dyn Array) -> Result<Self> {
        let (values, layout, nulls) = match array.data_type() {
            DataType::FixedSizeList(_, d) => {
                let l = array.as_fixed_size_list();
                (l.values(), Layout::Fixed(*d as usize), l.nulls())
            }
            DataType::List(_) => {
                let l = array.as_list::<i32>();
                (l.values(), Layout::Small(l.value_offsets()), l.nulls())
            }
            DataType::LargeList(_) => {
                let l = array.as_list::<i64>();
                (l.values(), Layout::Large(l.value_offsets()), l.nulls())
            }
            other => return internal_err!("not a list: {other}"),
        };
        let Some(p) = values.as_primitive_opt::<P>() else {
            return internal_err!("unexpected list element type {}", values.data_type());
        };
        Ok(Self {
            values: &p.values()[..],
            layout,
            nulls: nulls.filter(|n| n.null_count() > 0),
            value_nulls: p.nulls().filter(|n| n.null_count() > 0),
            len: array.len(),
            broadcast: false,
        })
    }
}

impl<'a, T: Copy> Rows<'a, T> {
    /// Makes row 0 stand for every row.
    pub(crate) fn broadcast(mut self) -> Self {
        self.broadcast = true;
        self
    }

    /// Number of rows.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub(crate) fn row(&self, i: usize) -> Row<'a, T> {
        let i = if self.broadcast { 0 } else { i };
        if self.nulls.is_some_and(|n| n.is_null(i)) {
            return Row::Null;
        }
        let (start, end) = match self.layout {
            Layout::Fixed(d) => (i * d, i * d + d),
            Layout::Small(o) => (o[i] as usize, o[i + 1] as usize),
            Layout::Large(o) => (o[i] as usize, o[i + 1] as usize),
        };
        let has_nulls = self
            .value_nulls
            .is_some_and(|n| n.inner().slice(start, end - start).count_set_bits() != end - start);
        Row::Values(&self.values[start..end], has_nulls)
    }
}

impl<'a> Rows<'a, u8> {
    /// Packed bit vectors: `Binary`, `LargeBinary`, `FixedSizeBinary`, or a list of `UInt8`.
    pub(crate) fn of_bytes(array: &'a dyn Array) -> Result<Self> {
        let (values, layout, nulls) = match array.data_type() {
            DataType::Binary => {
                let b = array.as_binary::<i32>();
                (b.value_data(), Layout::Small(b.value_offsets()), b.nulls())
            }
            DataType::LargeBinary => {
                let b = array.as_binary::<i64>();
                (b.value_data(), Layout::Large(b.value_offsets()), b.nulls())
            }
            DataType::FixedSizeBinary(d) => {
                let b = array.as_fixed_size_binary();
                (b.value_data(), Layout::Fixed(*d as usize), b.nulls())
            }
            _ => return Self::of_list::<UInt8Type>(array),
        };
        Ok(Self {
            values,
            layout,
            nulls: nulls.filter(|n| n.null_count() > 0),
            value_nulls: None,
            len: array.len(),
            broadcast: false,
        })
    }
}

/// Casts a bit-vector argument to a type [`Rows::of_bytes`] reads: lists of other integer types to `UInt8`
/// (values outside `0..=255` are an error), `BinaryView` to `Binary`.
pub(crate) fn to_bytes(name: &str, array: &ArrayRef) -> Result<ArrayRef> {
    let target = match array.data_type() {
        DataType::BinaryView => DataType::Binary,
        dt => match list_field(dt) {
            Some(f) if f.data_type() != &DataType::UInt8 => {
                with_element(dt, DataType::UInt8).expect("a list type")
            }
            _ => return Ok(Arc::clone(array)),
        },
    };
    let options = CastOptions {
        safe: false,
        ..Default::default()
    };
    match cast_with_options(array, &target, &options) {
        Ok(a) => Ok(a),
        Err(e) => exec_err!("{name}: bit vector elements must be between 0 and 255: {e}"),
    }
}

pub(crate) fn length_error<T>(name: &str, what: &str, a: usize, b: usize) -> Result<T> {
    exec_err!("{name} requires both {what} to have the same length, got {a} and {b}")
}

/// What the length error calls list arguments (DataFusion's wording).
pub(crate) const LIST_INPUTS: &str = "list inputs";

/// Applies `f` row by row to two sides of equal row count, with DataFusion's NULL and length rules; `out` receives
/// each row's result (`None` for NULL).
pub(crate) fn pairwise<T: Copy, R>(
    name: &str,
    what: &str,
    n: usize,
    a: &Rows<'_, T>,
    b: &Rows<'_, T>,
    mut f: impl FnMut(&[T], &[T]) -> Option<R>,
    mut out: impl FnMut(Option<R>),
) -> Result<()> {
    for i in 0..n {
        match (a.row(i), b.row(i)) {
            (Row::Values(x, x_nulls), Row::Values(y, y_nulls)) => {
                if x.len() != y.len() {
                    return length_error(name, what, x.len(), y.len());
                }
                out(if x_nulls || y_nulls { None } else { f(x, y) });
            }
            _ => out(None),
        }
    }
    Ok(())
}

/// A constant vector argument, prepared once per batch.
pub(crate) enum Constant<C> {
    Null,
    /// A vector of this length with a NULL element.
    NullElements(usize),
    Values(Query<C>),
}

/// A constant's elements as `f64`, before choosing the compute type.
enum Decoded {
    Null,
    NullElements(usize),
    Values(Vec<f64>),
}

impl Decoded {
    fn new(constant: &ArrayRef) -> Result<Decoded> {
        if constant.is_null(0) {
            return Ok(Decoded::Null);
        }
        let values = match constant.data_type() {
            DataType::List(_) => constant.as_list::<i32>().value(0),
            DataType::LargeList(_) => constant.as_list::<i64>().value(0),
            DataType::FixedSizeList(..) => constant.as_fixed_size_list().value(0),
            other => return internal_err!("not a list: {other}"),
        };
        if values.logical_null_count() > 0 {
            return Ok(Decoded::NullElements(values.len()));
        }
        let values = cast_with_options(&values, &DataType::Float64, &CastOptions::default())?;
        Ok(Decoded::Values(
            values.as_primitive::<Float64Type>().values().to_vec(),
        ))
    }

    /// Whether every value converts to `i8` exactly.
    fn fits_i8(&self) -> bool {
        match self {
            Decoded::Values(v) => v
                .iter()
                .all(|x| x.fract() == 0.0 && (-128.0..=127.0).contains(x)),
            _ => true,
        }
    }

    fn prepare<C: Compute>(self) -> Constant<C> {
        match self {
            Decoded::Null => Constant::Null,
            Decoded::NullElements(n) => Constant::NullElements(n),
            Decoded::Values(v) => {
                Constant::Values(Query::new(v.into_iter().map(C::from_f64).collect()))
            }
        }
    }
}

/// Applies `f` to every row of `rows` against a prepared constant. `swapped` says the constant was the first
/// argument (for the order of lengths in the error message).
fn against_query<E: Element, R>(
    name: &str,
    rows: &Rows<'_, E>,
    constant: &Constant<E::C>,
    swapped: bool,
    mut f: impl FnMut(&[E], &Query<E::C>) -> Option<R>,
    mut out: impl FnMut(Option<R>),
) -> Result<()> {
    let (query, q_len) = match constant {
        Constant::Null => {
            (0..rows.len()).for_each(|_| out(None));
            return Ok(());
        }
        Constant::NullElements(n) => (None, *n),
        Constant::Values(q) => (Some(q), q.len()),
    };
    for i in 0..rows.len() {
        match rows.row(i) {
            Row::Null => out(None),
            Row::Values(x, x_nulls) => {
                if x.len() != q_len {
                    let (a, b) = if swapped {
                        (q_len, x.len())
                    } else {
                        (x.len(), q_len)
                    };
                    return length_error(name, LIST_INPUTS, a, b);
                }
                match query {
                    Some(q) if !x_nulls => out(f(x, q)),
                    _ => out(None),
                }
            }
        }
    }
    Ok(())
}

/// A distance between two vectors of one element type, the second given either as another row or as a prepared
/// constant; `None` is a NULL result.
pub(crate) trait Metric {
    fn eval<E: Element, B: Operand<E>>(a: &[E], b: B) -> Option<f64>;
}

/// Evaluates a two-argument [`Metric`] function: `Float64` results, NULL in → NULL out.
pub(crate) fn invoke_metric<M: Metric>(
    name: &str,
    args: &[ColumnarValue],
) -> Result<ColumnarValue> {
    let [a, b] = take_function_args(name, args)?;
    let (n, scalar) = output_shape(args);
    let mut out = Float64Builder::with_capacity(n);
    match (Input::new(a)?, Input::new(b)?) {
        (Input::Null, _) | (_, Input::Null) => out.append_nulls(n),
        (Input::Rows(col), Input::Constant(c)) => {
            against_constant::<M>(name, &col, &c, false, &mut out)?
        }
        (Input::Constant(c), Input::Rows(col)) => {
            against_constant::<M>(name, &col, &c, true, &mut out)?
        }
        (Input::Rows(x), Input::Rows(y)) | (Input::Constant(x), Input::Constant(y)) => {
            two_columns::<M>(name, &x, &y, &mut out)?
        }
    }
    finish(Arc::new(out.finish()), scalar)
}

fn two_columns<M: Metric>(
    name: &str,
    x: &ArrayRef,
    y: &ArrayRef,
    out: &mut Float64Builder,
) -> Result<()> {
    let kind = kind_of(x)?.max(kind_of(y)?);
    let (x, y) = (to_kind(x, kind)?, to_kind(y, kind)?);
    match kind {
        Kind::I8 => two_columns_typed::<M, Int8Type>(name, &x, &y, out),
        Kind::F16 => two_columns_typed::<M, Float16Type>(name, &x, &y, out),
        Kind::F32 => two_columns_typed::<M, Float32Type>(name, &x, &y, out),
        Kind::F64 => two_columns_typed::<M, Float64Type>(name, &x, &y, out),
    }
}

fn two_columns_typed<M: Metric, P: ArrowPrimitiveType>(
    name: &str,
    x: &ArrayRef,
    y: &ArrayRef,
    out: &mut Float64Builder,
) -> Result<()>
where
    P::Native: Element,
{
    let a = Rows::<P::Native>::of_list::<P>(x.as_ref())?;
    let b = Rows::<P::Native>::of_list::<P>(y.as_ref())?;
    pairwise(
        name,
        LIST_INPUTS,
        a.len(),
        &a,
        &b,
        |p, q| M::eval(p, q),
        |v| out.append_option(v),
    )
}

fn against_constant<M: Metric>(
    name: &str,
    col: &ArrayRef,
    constant: &ArrayRef,
    swapped: bool,
    out: &mut Float64Builder,
) -> Result<()> {
    let q = Decoded::new(constant)?;
    let kind = kind_of(col)?;
    match kind {
        Kind::I8 if q.fits_i8() => {
            against_constant_typed::<M, Int8Type>(name, col, q.prepare(), swapped, out)
        }
        Kind::I8 => {
            let col = to_kind(col, Kind::F32)?;
            against_constant_typed::<M, Float32Type>(name, &col, q.prepare(), swapped, out)
        }
        Kind::F16 => against_constant_typed::<M, Float16Type>(name, col, q.prepare(), swapped, out),
        Kind::F32 => against_constant_typed::<M, Float32Type>(name, col, q.prepare(), swapped, out),
        Kind::F64 => {
            let col = to_kind(col, Kind::F64)?;
            against_constant_typed::<M, Float64Type>(name, &col, q.prepare(), swapped, out)
        }
    }
}

fn against_constant_typed<M: Metric, P: ArrowPrimitiveType>(
    name: &str,
    col: &ArrayRef,
    constant: Constant<<P::Native as Element>::C>,
    swapped: bool,
    out: &mut Float64Builder,
) -> Result<()>
where
    P::Native: Element,
{
    let rows = Rows::<P::Native>::of_list::<P>(col.as_ref())?;
    against_query(
        name,
        &rows,
        &constant,
        swapped,
        |x, q| M::eval(x, q),
        |v| out.append_option(v),
    )
}

/// A function of one vector; `None` is a NULL result.
pub(crate) trait UnaryMetric {
    fn eval<E: Element>(a: &[E]) -> Option<f64>;
}

/// Evaluates a one-argument [`UnaryMetric`] function: `Float64` results, NULL in → NULL out.
pub(crate) fn invoke_unary<M: UnaryMetric>(
    name: &str,
    args: &[ColumnarValue],
) -> Result<ColumnarValue> {
    let [a] = take_function_args(name, args)?;
    let (n, scalar) = output_shape(args);
    let mut out = Float64Builder::with_capacity(n);
    match Input::new(a)? {
        Input::Null => out.append_nulls(n),
        Input::Rows(x) | Input::Constant(x) => {
            let kind = kind_of(&x)?;
            let x = to_kind(&x, kind)?;
            match kind {
                Kind::I8 => unary_typed::<M, Int8Type>(&x, &mut out)?,
                Kind::F16 => unary_typed::<M, Float16Type>(&x, &mut out)?,
                Kind::F32 => unary_typed::<M, Float32Type>(&x, &mut out)?,
                Kind::F64 => unary_typed::<M, Float64Type>(&x, &mut out)?,
            }
        }
    }
    finish(Arc::new(out.finish()), scalar)
}

fn unary_typed<M: UnaryMetric, P: ArrowPrimitiveType>(
    x: &ArrayRef,
    out: &mut Float64Builder,
) -> Result<()>
where
    P::Native: Element,
{
    let rows = Rows::<P::Native>::of_list::<P>(x.as_ref())?;
    for i in 0..rows.len() {
        match rows.row(i) {
            Row::Values(v, false) => out.append_option(M::eval(v)),
            _ => out.append_null(),
        }
    }
    Ok(())
}
