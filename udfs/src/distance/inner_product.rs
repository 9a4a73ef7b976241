//! `inner_product(a, b)` (alias `dot_product`): replaces DataFusion's built-in of the same name, with its semantics.

use datafusion_macros::user_doc;

use super::float64_vector_udf;
use super::kernels::{self, Element, Operand};
use super::vectors::Metric;

float64_vector_udf!(
    #[user_doc(
        doc_section(label = "Vector Functions"),
        description = "Returns the inner (dot) product `sum(a[i] * b[i])` of two vectors of equal length as \
Float64; 0.0 for two empty vectors. NULL if either argument is NULL or contains a NULL element; an error if the \
lengths differ. NaN and infinite elements propagate as IEEE arithmetic says. Vectors are FixedSizeList, List or \
LargeList of Float32, Float16, Float64 or Int8 (other numeric elements are cast to Float64); a constant is converted \
once to the column's element type. Float32 and Float16 vectors are summed in single precision \
lanes (error at most (n+32)·2^-24 of sum(|a[i]·b[i]|)), Float64 in double, Int8 exactly. Replaces DataFusion's \
built-in `inner_product` (and its alias `dot_product`) with the same semantics.",
        syntax_example = "inner_product(a, b)",
        sql_example = r#"```sql
> SELECT inner_product([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]);
32.0
```"#,
        argument(
            name = "a",
            description = "Vector expression: a column, a constant or any expression."
        ),
        argument(
            name = "b",
            description = "Vector expression of the same length as `a`."
        ),
        related_udf(name = "negative_inner_product")
    )]
    InnerProduct,
    "inner_product",
    arity = 2,
    invoke = invoke_metric,
    aliases = ["dot_product"]
);

impl Metric for InnerProduct {
    #[inline]
    fn eval<E: Element, B: Operand<E>>(a: &[E], b: B) -> Option<f64> {
        Some(kernels::dot(a, b))
    }
}
