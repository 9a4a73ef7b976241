//! Marrow's SQL functions and their compute kernels. Pure compute: nothing here knows about storage or Flight.
//!
//! [`register_all`] adds every function to a DataFusion session, replacing DataFusion's built-ins of the same name
//! (`cosine_distance`, `inner_product`/`dot_product`). The vector distance functions are in [`distance`]; their
//! SIMD loops in [`distance::kernels`] can also be called directly:
//!
//! ```
//! use marrow_udfs::distance::kernels;
//!
//! let a = [1.0f32, 0.0, 0.0];
//! let b = [1.0f32, 1.0, 0.0];
//! assert_eq!(kernels::dot(&a, &b[..]), 1.0);
//! assert_eq!(kernels::l2_squared(&a, &b[..]), 1.0);
//! let d = kernels::cosine_distance(&a, &b[..]).unwrap();
//! assert!((d - (1.0 - 1.0 / 2f64.sqrt())).abs() < 1e-7);
//! // A query vector is prepared once (converted, its norm computed) and compared with many rows.
//! let q = kernels::Query::new(vec![0.0f32, 1.0, 0.0]);
//! assert_eq!(kernels::cosine_distance(&b, &q), Some(1.0 - 1.0 / 2f64.sqrt()));
//! ```
//!
//! Quantization (`quantize`/`dequantize`: ggml's q8_0, q4_0, q4_k, q2_k blocks, NF4, int8) is in [`quant`].
//!
//! In SQL:
//!
//! ```sql
//! SELECT id, cosine_distance(embedding, [0.1, 0.2, …]) AS d FROM memories ORDER BY d LIMIT 10;
//! ```

use datafusion::error::Result;
use datafusion::execution::FunctionRegistry;

pub mod distance;
pub mod json;
pub mod quant;
pub mod tensor;
pub mod text;

/// Register every Marrow function with a session, replacing DataFusion built-ins of the same name.
pub fn register_all(registry: &mut dyn FunctionRegistry) -> Result<()> {
    for udf in distance::functions() {
        registry.register_udf(udf)?;
    }
    registry.register_udf(std::sync::Arc::new(json::to_json()))?;
    registry.register_udf(std::sync::Arc::new(text::bm25()))?;
    quant::functions()
        .into_iter()
        .try_for_each(|udf| registry.register_udf(udf).map(drop))?;
    Ok(())
}

/// Register the text functions (`tokenize`, `token_count`, `detokenize`, `embed`) over one shared set of models.
pub fn register_text(
    registry: &mut dyn FunctionRegistry,
    models: text::SharedModels,
) -> Result<()> {
    for udf in text::functions(models) {
        registry.register_udf(std::sync::Arc::new(udf))?;
    }
    Ok(())
}
