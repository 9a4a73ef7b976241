//! `l2_distance_squared(a, b)`: squared Euclidean distance (orders like `l2_distance`, one square root cheaper).

use datafusion_macros::user_doc;

use super::float64_vector_udf;
use super::kernels::{self, Element, Operand};
use super::vectors::Metric;

float64_vector_udf!(
    #[user_doc(
        doc_section(label = "Vector Functions"),
        description = "Returns the squared Euclidean distance `sum((a[i] - b[i])^2)` of two vectors of equal \
length as Float64; 0.0 for two empty vectors, Inf when the sum exceeds the Float64 range. NULL if either argument \
is NULL or contains a NULL element; an error if the lengths differ. NaN and infinite elements propagate as IEEE \
arithmetic says. Vectors are FixedSizeList, List or LargeList of Float32, Float16, Float64 or Int8 (other numeric \
elements are cast to Float64); a constant is converted once to the column's element type.",
        syntax_example = "l2_distance_squared(a, b)",
        sql_example = r#"```sql
> SELECT l2_distance_squared([1.0, 2.0], [4.0, 6.0]);
25.0
```"#,
        argument(
            name = "a",
            description = "Vector expression: a column, a constant or any expression."
        ),
        argument(
            name = "b",
            description = "Vector expression of the same length as `a`."
        ),
        related_udf(name = "l2_distance")
    )]
    L2DistanceSquared,
    "l2_distance_squared",
    arity = 2,
    invoke = invoke_metric,
    aliases = []
);

impl Metric for L2DistanceSquared {
    #[inline]
    fn eval<E: Element, B: Operand<E>>(a: &[E], b: B) -> Option<f64> {
        Some(kernels::l2_squared(a, b))
    }
}
