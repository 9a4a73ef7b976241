//! `l2_distance(a, b)`: Euclidean distance.

use datafusion_macros::user_doc;

use super::float64_vector_udf;
use super::kernels::{self, Element, Operand};
use super::vectors::Metric;

float64_vector_udf!(
    #[user_doc(
        doc_section(label = "Vector Functions"),
        description = "Returns the Euclidean distance `sqrt(sum((a[i] - b[i])^2))` of two vectors of equal length \
as Float64; 0.0 for two empty vectors. Finite inputs never overflow or underflow (the sum is rescaled when its \
squares would). NULL if either argument is NULL or contains a NULL element; an error if the lengths differ. NaN \
elements give NaN, infinite ones Inf (or NaN for Inf - Inf). Vectors are FixedSizeList, List or LargeList of \
Float32, Float16, Float64 or Int8 (other numeric elements are cast to Float64); a constant is converted once to the \
column's element type.",
        syntax_example = "l2_distance(a, b)",
        sql_example = r#"```sql
> SELECT l2_distance([1.0, 2.0], [4.0, 6.0]);
5.0
```"#,
        argument(
            name = "a",
            description = "Vector expression: a column, a constant or any expression."
        ),
        argument(
            name = "b",
            description = "Vector expression of the same length as `a`."
        ),
        related_udf(name = "l2_distance_squared")
    )]
    L2Distance,
    "l2_distance",
    arity = 2,
    invoke = invoke_metric,
    aliases = []
);

impl Metric for L2Distance {
    #[inline]
    fn eval<E: Element, B: Operand<E>>(a: &[E], b: B) -> Option<f64> {
        Some(kernels::l2(a, b))
    }
}
