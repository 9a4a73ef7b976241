//! `normalize(a)`: the unit vector in the direction of `a`.

use std::sync::Arc;

use arrow::array::{
    new_null_array, ArrayRef, BooleanBufferBuilder, FixedSizeListArray, LargeListArray, ListArray,
    PrimitiveArray,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Field, Float16Type, Float32Type, Float64Type, Int8Type,
};
use datafusion::common::utils::take_function_args;
use datafusion::common::{internal_err, Result};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use datafusion_macros::user_doc;
use half::f16;

use super::kernels::{self, Element, ToF64};
use super::vectors::{self, Input, Kind, Row, Rows};

#[user_doc(
    doc_section(label = "Vector Functions"),
    description = "Returns the unit vector `a / ‖a‖` (L2 norm) in the same container as `a` (FixedSizeList, List \
or LargeList). The element type is kept for Float16, Float32 and Float64; Int8 vectors give Float32, other numeric \
elements Float64. Each element is computed in Float64 and rounded once. NULL if the argument is NULL, contains a \
NULL element or is all zeros (so also for an empty vector). NaN elements give a vector of NaN; an infinite element \
gives NaN in its place and 0 elsewhere.",
    syntax_example = "normalize(a)",
    sql_example = r#"```sql
> SELECT normalize([3.0, 4.0]);
[0.6, 0.8]
> UPDATE memories SET embedding = normalize(embedding);
```"#,
    argument(
        name = "a",
        description = "Vector expression: a column, a constant or any expression."
    ),
    related_udf(name = "vector_norm")
)]
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Normalize {
    signature: Signature,
}

impl Default for Normalize {
    fn default() -> Self {
        Self::new()
    }
}

impl Normalize {
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

/// The element type `normalize` returns for a vector of `kind`.
fn output_element(kind: Kind) -> DataType {
    match kind {
        Kind::I8 | Kind::F32 => DataType::Float32,
        Kind::F16 => DataType::Float16,
        Kind::F64 => DataType::Float64,
    }
}

impl ScalarUDFImpl for Normalize {
    fn name(&self) -> &str {
        "normalize"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        vectors::check_vector_args(self.name(), arg_types, 1)
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        let [arg] = take_function_args(self.name(), arg_types)?;
        match vectors::list_field(arg) {
            Some(f) => {
                let element = output_element(Kind::of(f.data_type()));
                Ok(vectors::with_element(arg, element).expect("a list type"))
            }
            None => Ok(DataType::List(Arc::new(Field::new_list_field(
                DataType::Float64,
                true,
            )))),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [a] = take_function_args(self.name(), &args.args)?;
        let (n, scalar) = vectors::output_shape(&args.args);
        let out_type = args.return_field.data_type();
        let out = match Input::new(a)? {
            Input::Null => new_null_array(out_type, n),
            Input::Rows(x) | Input::Constant(x) => {
                let kind = vectors::kind_of(&x)?;
                let x = vectors::to_kind(&x, kind)?;
                match kind {
                    Kind::I8 => normalize_rows::<Int8Type, Float32Type>(&x, out_type)?,
                    Kind::F16 => normalize_rows::<Float16Type, Float16Type>(&x, out_type)?,
                    Kind::F32 => normalize_rows::<Float32Type, Float32Type>(&x, out_type)?,
                    Kind::F64 => normalize_rows::<Float64Type, Float64Type>(&x, out_type)?,
                }
            }
        };
        vectors::finish(out, scalar)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.doc()
    }
}

/// Rounding from `f64` to an output element type.
trait FromF64: Copy + Default {
    fn from_f64(v: f64) -> Self;
}
impl FromF64 for f16 {
    fn from_f64(v: f64) -> Self {
        f16::from_f64(v)
    }
}
impl FromF64 for f32 {
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}
impl FromF64 for f64 {
    fn from_f64(v: f64) -> Self {
        v
    }
}

fn normalize_rows<P: ArrowPrimitiveType, O: ArrowPrimitiveType>(
    x: &ArrayRef,
    out_type: &DataType,
) -> Result<ArrayRef>
where
    P::Native: Element,
    O::Native: FromF64,
{
    let rows = Rows::<P::Native>::of_list::<P>(x.as_ref())?;
    let n = rows.len();
    let fixed = match out_type {
        DataType::FixedSizeList(_, d) => Some(*d as usize),
        _ => None,
    };
    let mut values: Vec<O::Native> = Vec::new();
    let mut lengths = Vec::with_capacity(if fixed.is_some() { 0 } else { n });
    let mut valid = BooleanBufferBuilder::new(n);
    for i in 0..n {
        let unit = match rows.row(i) {
            Row::Values(v, false) => Some((v, kernels::norm(v))).filter(|(_, norm)| *norm != 0.0),
            _ => None,
        };
        match unit {
            Some((v, norm)) => {
                values.extend(v.iter().map(|e| O::Native::from_f64(e.to_f64() / norm)));
                lengths.push(v.len());
                valid.append(true);
            }
            None => {
                match fixed {
                    Some(d) => values.extend(std::iter::repeat_n(O::Native::default(), d)),
                    None => lengths.push(0),
                }
                valid.append(false);
            }
        }
    }
    let nulls = Some(NullBuffer::new(valid.finish())).filter(|n| n.null_count() > 0);
    let values = Arc::new(PrimitiveArray::<O>::new(values.into(), None));
    Ok(match out_type {
        DataType::FixedSizeList(f, d) => Arc::new(FixedSizeListArray::try_new(
            Arc::clone(f),
            *d,
            values,
            nulls,
        )?),
        DataType::List(f) => Arc::new(ListArray::try_new(
            Arc::clone(f),
            OffsetBuffer::from_lengths(lengths),
            values,
            nulls,
        )?),
        DataType::LargeList(f) => Arc::new(LargeListArray::try_new(
            Arc::clone(f),
            OffsetBuffer::from_lengths(lengths),
            values,
            nulls,
        )?),
        other => return internal_err!("normalize: unexpected return type {other}"),
    })
}
