//! `vector_norm(a)`: the L2 (Euclidean) norm of a vector.

use datafusion_macros::user_doc;

use super::float64_vector_udf;
use super::kernels::{self, Element};
use super::vectors::UnaryMetric;

float64_vector_udf!(
    #[user_doc(
        doc_section(label = "Vector Functions"),
        description = "Returns the L2 norm `sqrt(sum(a[i]^2))` of a vector as Float64; 0.0 for an empty vector. \
Finite inputs never overflow or underflow (the sum is rescaled when its squares would). NULL if the argument is \
NULL or contains a NULL element. NaN elements give NaN, infinite ones Inf. Vectors are FixedSizeList, List or \
LargeList of Float32, Float16, Float64 or Int8 (other numeric elements are cast to Float64).",
        syntax_example = "vector_norm(a)",
        sql_example = r#"```sql
> SELECT vector_norm([3.0, 4.0]);
5.0
```"#,
        argument(
            name = "a",
            description = "Vector expression: a column, a constant or any expression."
        ),
        related_udf(name = "normalize")
    )]
    VectorNorm,
    "vector_norm",
    arity = 1,
    invoke = invoke_unary,
    aliases = []
);

impl UnaryMetric for VectorNorm {
    #[inline]
    fn eval<E: Element>(a: &[E]) -> Option<f64> {
        Some(kernels::norm(a))
    }
}
