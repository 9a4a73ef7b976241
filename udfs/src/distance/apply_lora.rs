//! `apply_lora(v, lora_a, lora_b [, scale])`: a vector through a low-rank residual map, `v + scale·B·(A·v)`.

use std::sync::Arc;

use arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, BooleanBufferBuilder, FixedSizeListArray,
    Float32Array, ListArray,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{DataType, Field, Float32Type};
use datafusion::common::{exec_err, plan_err, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use datafusion_macros::user_doc;

use super::vectors::{self, Input, Kind, Row, Rows};

#[user_doc(
    doc_section(label = "Vector Functions"),
    description = "Maps a vector through a low-rank residual adapter: `v + scale · B · (A · v)`, with `A` an r×d and \
`B` a d×r matrix (row-major), the form of a LoRA pair (`lora_A.weight` [r, in], `lora_B.weight` [out, r]). Marrow's \
query adapters (trained by the Python layer from retrieval feedback and stored in `adapters` / `tensors`) are applied \
this way to a query embedding before a search; `scale` defaults to 1. The matrices are raw little-endian float32 \
bytes (the `data` of an F32 row of `tensors`) or lists of numbers; r is their length divided by d. Returns Float32 \
in the vector's container (FixedSizeList keeps its size). NULL if any argument is NULL.",
    syntax_example = "apply_lora(v, lora_a, lora_b [, scale])",
    sql_example = r#"```sql
> SELECT apply_lora([1.0, 2.0], [1.0, 0.0], [0.5, 0.0]);
[1.5, 2.0]
> SELECT id FROM vector_search('memories', 'embedding',
    apply_lora(embed('what does Bob eat?'), X'…', X'…'), 5);
```"#,
    argument(name = "v", description = "Vector expression (d values)."),
    argument(
        name = "lora_a",
        description = "The down projection A, r×d: float32 bytes or a list of r·d numbers."
    ),
    argument(
        name = "lora_b",
        description = "The up projection B, d×r: float32 bytes or a list of d·r numbers."
    ),
    argument(name = "scale", description = "Multiplies B·A·v (default 1.0)."),
    related_udf(name = "normalize")
)]
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ApplyLora {
    signature: Signature,
}

impl Default for ApplyLora {
    fn default() -> Self {
        Self::new()
    }
}

impl ApplyLora {
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

fn is_binary(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView
    )
}

impl ScalarUDFImpl for ApplyLora {
    fn name(&self) -> &str {
        "apply_lora"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if !(3..=4).contains(&arg_types.len()) {
            return plan_err!(
                "apply_lora(v, lora_a, lora_b [, scale]) takes 3 or 4 arguments, got {}",
                arg_types.len()
            );
        }
        let mut out = vectors::check_vector_args(self.name(), &arg_types[..1], 1)?;
        for (t, what) in arg_types[1..3].iter().zip(["lora_a", "lora_b"]) {
            out.push(match t {
                t if is_binary(t) => DataType::LargeBinary,
                DataType::Null => DataType::LargeBinary,
                t if vectors::list_field(t).is_some() => {
                    DataType::new_large_list(DataType::Float32, true)
                }
                other => {
                    return plan_err!(
                        "apply_lora: {what} must be float32 bytes or a list of numbers, got {other}"
                    )
                }
            });
        }
        if let Some(t) = arg_types.get(3) {
            if !t.is_numeric() && t != &DataType::Null {
                return plan_err!("apply_lora: scale must be a number, got {t}");
            }
            out.push(DataType::Float64);
        }
        Ok(out)
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(match vectors::list_field(&arg_types[0]) {
            Some(_) => {
                vectors::with_element(&arg_types[0], DataType::Float32).expect("a list type")
            }
            None => DataType::new_list(DataType::Float32, true),
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let (n, scalar) = vectors::output_shape(&args.args);
        let out_type = args.return_field.data_type().clone();
        let scale = match args.args.get(3) {
            None => Some(1.0),
            Some(ColumnarValue::Scalar(ScalarValue::Float64(s))) => *s,
            Some(_) => return exec_err!("apply_lora: scale must be a constant"),
        };
        let inputs = [&args.args[0], &args.args[1], &args.args[2]].map(|a| {
            Input::new(a).map(|i| match i {
                Input::Null => None,
                Input::Rows(x) => Some((x, false)),
                Input::Constant(x) => Some((x, true)),
            })
        });
        let [v, a, b] = inputs;
        let (Some(v), Some(a), Some(b), Some(scale)) = (v?, a?, b?, scale) else {
            return vectors::finish(new_null_array(&out_type, n), scalar);
        };
        let v0 = vectors::to_kind(&v.0, Kind::F32)?;
        let mut rows = Rows::<f32>::of_list::<Float32Type>(v0.as_ref())?;
        if v.1 {
            rows = rows.broadcast();
        }
        let (a, b) = (Matrix::new(a)?, Matrix::new(b)?);
        let fixed = match &out_type {
            DataType::FixedSizeList(_, d) => Some(*d as usize),
            _ => None,
        };
        let mut values: Vec<f32> = Vec::new();
        let mut lengths = Vec::with_capacity(n);
        let mut valid = BooleanBufferBuilder::new(n);
        for i in 0..n {
            let out = match rows.row(i) {
                Row::Values(x, false) => match (a.row(i)?, b.row(i)?) {
                    (Some(a), Some(b)) => Some(residual(x, &a, &b, scale as f32)?),
                    _ => None,
                },
                _ => None,
            };
            match out {
                Some(y) => {
                    lengths.push(y.len());
                    values.extend(y);
                    valid.append(true);
                }
                None => {
                    match fixed {
                        Some(d) => values.extend(std::iter::repeat_n(0.0, d)),
                        None => lengths.push(0),
                    }
                    valid.append(false);
                }
            }
        }
        let nulls = Some(NullBuffer::new(valid.finish())).filter(|n| n.null_count() > 0);
        let values = Arc::new(Float32Array::from(values));
        let item = Arc::new(Field::new_list_field(DataType::Float32, true));
        let out: ArrayRef = match fixed {
            Some(d) => Arc::new(FixedSizeListArray::try_new(item, d as i32, values, nulls)?),
            None => Arc::new(ListArray::try_new(
                item,
                OffsetBuffer::from_lengths(lengths),
                values,
                nulls,
            )?),
        };
        let out = if out.data_type() == &out_type {
            out
        } else {
            arrow::compute::cast(&out, &out_type)?
        };
        vectors::finish(out, scalar)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.doc()
    }
}

/// An A or B argument: one matrix per row (or one for all rows), as f32 values.
struct Matrix {
    array: ArrayRef,
    constant: bool,
}

impl Matrix {
    fn new((array, constant): (ArrayRef, bool)) -> Result<Self> {
        Ok(Self { array, constant })
    }

    fn row(&self, i: usize) -> Result<Option<Vec<f32>>> {
        let i = if self.constant { 0 } else { i };
        if self.array.is_null(i) {
            return Ok(None);
        }
        match self.array.data_type() {
            DataType::LargeBinary => {
                let bytes = self.array.as_binary::<i64>().value(i);
                if !bytes.len().is_multiple_of(4) {
                    return exec_err!(
                        "apply_lora: a matrix of float32 bytes has a length divisible by 4, got {}",
                        bytes.len()
                    );
                }
                Ok(Some(
                    bytes
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                ))
            }
            _ => {
                let list = self.array.as_list::<i64>().value(i);
                let list = arrow::compute::cast(&list, &DataType::Float32)?;
                let list = list.as_primitive::<Float32Type>();
                if list.null_count() > 0 {
                    return Ok(None);
                }
                Ok(Some(list.values().to_vec()))
            }
        }
    }
}

/// `x + scale·B·(A·x)`, the rank r read from A's length.
fn residual(x: &[f32], a: &[f32], b: &[f32], scale: f32) -> Result<Vec<f32>> {
    let d = x.len();
    if d == 0 || !a.len().is_multiple_of(d) || a.is_empty() {
        return exec_err!(
            "apply_lora: lora_a has {} values, not r×{d} for the vector's {d} dimensions",
            a.len()
        );
    }
    let r = a.len() / d;
    if b.len() != d * r {
        return exec_err!(
            "apply_lora: lora_b has {} values, expected {d}×{r} = {} (d×r, with r = {r} from lora_a)",
            b.len(),
            d * r
        );
    }
    let h: Vec<f32> = a
        .chunks_exact(d)
        .map(|row| super::kernels::dot(row, x) as f32 * scale)
        .collect();
    Ok(x.iter()
        .zip(b.chunks_exact(r))
        .map(|(xi, brow)| xi + brow.iter().zip(&h).map(|(p, q)| p * q).sum::<f32>())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn residual_matches_a_hand_computation() {
        // A = [[1, 0], [0, 2]] (r = 2), B = [[1, 1], [0, 1]], x = [1, 1]: A·x = [1, 2], B·[1, 2] = [3, 2].
        let y = residual(
            &[1.0, 1.0],
            &[1.0, 0.0, 0.0, 2.0],
            &[1.0, 1.0, 0.0, 1.0],
            0.5,
        )
        .unwrap();
        assert_eq!(y, vec![2.5, 2.0]);
        assert!(residual(&[1.0, 1.0], &[1.0, 0.0, 0.0], &[1.0, 1.0], 1.0).is_err());
        assert!(residual(&[1.0, 1.0], &[1.0, 0.0], &[1.0, 1.0, 1.0], 1.0).is_err());
    }
}
