//! `cosine_distance(a, b)`: replaces DataFusion's built-in of the same name, with its semantics.

use datafusion_macros::user_doc;

use super::float64_vector_udf;
use super::kernels::{self, Element, Operand};
use super::vectors::Metric;

float64_vector_udf!(
    #[user_doc(
        doc_section(label = "Vector Functions"),
        description = "Returns the cosine distance `1 - dot(a, b) / (‖a‖ · ‖b‖)` of two vectors of equal length \
as Float64: 0 for vectors pointing the same way, 1 for orthogonal ones, 2 for opposite ones. NULL if either argument \
is NULL, contains a NULL element or is all zeros (so also for empty vectors); an error if the lengths differ. NaN or \
infinite elements give NaN. Vectors are FixedSizeList, List or LargeList of Float32, Float16, Float64 or Int8 (other \
numeric elements are cast to Float64); a constant is converted once to the column's element type. Float32 and \
Float16 vectors are summed in single precision (typically within a few 1e-7 of the exact distance, at most \
3·(n+32)·2^-24), Float64 in double, Int8 exactly. Replaces DataFusion's built-in `cosine_distance` with the same \
semantics, and also gives the right answer where the squares of finite elements overflow or underflow Float64.",
        syntax_example = "cosine_distance(a, b)",
        sql_example = r#"```sql
> SELECT cosine_distance([1.0, 0.0], [0.0, 1.0]);
1.0
> SELECT id FROM memories ORDER BY cosine_distance(embedding, $1) LIMIT 10;
```"#,
        argument(
            name = "a",
            description = "Vector expression: a column, a constant or any expression."
        ),
        argument(
            name = "b",
            description = "Vector expression of the same length as `a`."
        )
    )]
    CosineDistance,
    "cosine_distance",
    arity = 2,
    invoke = invoke_metric,
    aliases = []
);

impl Metric for CosineDistance {
    #[inline]
    fn eval<E: Element, B: Operand<E>>(a: &[E], b: B) -> Option<f64> {
        kernels::cosine_distance(a, b)
    }
}
