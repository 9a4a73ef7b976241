//! `hamming_distance(a, b)`: number of differing bits between two packed bit vectors.

use std::sync::Arc;

use arrow::array::Int64Builder;
use arrow::datatypes::DataType;
use datafusion::common::utils::take_function_args;
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use datafusion_macros::user_doc;

use super::kernels;
use super::vectors::{self, Input, Rows};

#[user_doc(
    doc_section(label = "Vector Functions"),
    description = "Returns the Hamming distance of two packed bit vectors (8 bits per byte) as Int64: the number of \
bit positions where they differ; 0 for two empty vectors. Bit vectors are Binary, LargeBinary, BinaryView or \
FixedSizeBinary, or FixedSizeList, List or LargeList of UInt8 (lists of other integer types are accepted when every \
element is between 0 and 255, otherwise the query fails). NULL if either argument is NULL or contains a NULL \
element; an error if the byte lengths differ.",
    syntax_example = "hamming_distance(a, b)",
    sql_example = r#"```sql
> SELECT hamming_distance(X'FF00', X'0F01');
5
> SELECT hamming_distance([255, 0], [15, 1]);
5
```"#,
    argument(
        name = "a",
        description = "Bit vector expression: a column, a constant or any expression."
    ),
    argument(
        name = "b",
        description = "Bit vector expression with as many bytes as `a`."
    )
)]
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct HammingDistance {
    signature: Signature,
}

impl Default for HammingDistance {
    fn default() -> Self {
        Self::new()
    }
}

impl HammingDistance {
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for HammingDistance {
    fn name(&self) -> &str {
        "hamming_distance"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        vectors::check_bit_args(self.name(), arg_types, 2)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let name = self.name();
        let [a, b] = take_function_args(name, &args.args)?;
        let (n, scalar) = vectors::output_shape(&args.args);
        let mut out = Int64Builder::with_capacity(n);
        let side = |input: Input| -> Result<Option<(_, bool)>> {
            Ok(match input {
                Input::Null => None,
                Input::Rows(x) => Some((vectors::to_bytes(name, &x)?, false)),
                Input::Constant(x) => Some((vectors::to_bytes(name, &x)?, !scalar)),
            })
        };
        match (side(Input::new(a)?)?, side(Input::new(b)?)?) {
            (Some((x, x_broadcast)), Some((y, y_broadcast))) => {
                let mut rx = Rows::of_bytes(x.as_ref())?;
                let mut ry = Rows::of_bytes(y.as_ref())?;
                if x_broadcast {
                    rx = rx.broadcast();
                }
                if y_broadcast {
                    ry = ry.broadcast();
                }
                vectors::pairwise(
                    name,
                    "inputs",
                    n,
                    &rx,
                    &ry,
                    |p, q| Some(kernels::hamming(p, q) as i64),
                    |v| out.append_option(v),
                )?;
            }
            _ => out.append_nulls(n),
        }
        vectors::finish(Arc::new(out.finish()), scalar)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.doc()
    }
}
