//! `negative_inner_product(a, b)`: `-inner_product(a, b)`, so that `ORDER BY … ASC LIMIT k` finds the largest
//! inner products.

use datafusion_macros::user_doc;

use super::float64_vector_udf;
use super::kernels::{self, Element, Operand};
use super::vectors::Metric;

float64_vector_udf!(
    #[user_doc(
        doc_section(label = "Vector Functions"),
        description = "Returns the negated inner product `-sum(a[i] * b[i])` of two vectors of equal length as \
Float64 (never -0.0: the product of empty vectors is 0.0), so that ascending order puts the largest inner products \
first. NULL, error and type rules are those of `inner_product`.",
        syntax_example = "negative_inner_product(a, b)",
        sql_example = r#"```sql
> SELECT negative_inner_product([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]);
-32.0
> SELECT id FROM memories ORDER BY negative_inner_product(embedding, $1) LIMIT 10;
```"#,
        argument(
            name = "a",
            description = "Vector expression: a column, a constant or any expression."
        ),
        argument(
            name = "b",
            description = "Vector expression of the same length as `a`."
        ),
        related_udf(name = "inner_product")
    )]
    NegativeInnerProduct,
    "negative_inner_product",
    arity = 2,
    invoke = invoke_metric,
    aliases = []
);

impl Metric for NegativeInnerProduct {
    #[inline]
    fn eval<E: Element, B: Operand<E>>(a: &[E], b: B) -> Option<f64> {
        // `0.0 - x` rather than `-x`: no -0.0 for a zero product.
        Some(0.0 - kernels::dot(a, b))
    }
}
