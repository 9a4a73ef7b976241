//! Vector distance functions: `cosine_distance`, `inner_product`, `negative_inner_product`, `l2_distance`,
//! `l2_distance_squared`, `hamming_distance`, `vector_norm`, `normalize`, and `apply_lora` (a low-rank adapter applied to a
//! vector).
//!
//! Each function lives in its own file; [`kernels`] holds the SIMD loops and [`vectors`] the argument decoding
//! (element types, column vs constant, NULL and length rules) they share.

use std::sync::Arc;

use datafusion::logical_expr::ScalarUDF;

pub mod kernels;
mod vectors;

mod apply_lora;
mod cosine_distance;
mod hamming_distance;
mod inner_product;
mod l2_distance;
mod l2_distance_squared;
mod negative_inner_product;
mod normalize;
mod vector_norm;

pub use apply_lora::ApplyLora;
pub use cosine_distance::CosineDistance;
pub use hamming_distance::HammingDistance;
pub use inner_product::InnerProduct;
pub use l2_distance::L2Distance;
pub use l2_distance_squared::L2DistanceSquared;
pub use negative_inner_product::NegativeInnerProduct;
pub use normalize::Normalize;
pub use vector_norm::VectorNorm;

/// Every distance function, ready to register.
pub fn functions() -> Vec<Arc<ScalarUDF>> {
    vec![
        Arc::new(ScalarUDF::from(CosineDistance::new())),
        Arc::new(ScalarUDF::from(InnerProduct::new())),
        Arc::new(ScalarUDF::from(NegativeInnerProduct::new())),
        Arc::new(ScalarUDF::from(L2Distance::new())),
        Arc::new(ScalarUDF::from(L2DistanceSquared::new())),
        Arc::new(ScalarUDF::from(HammingDistance::new())),
        Arc::new(ScalarUDF::from(VectorNorm::new())),
        Arc::new(ScalarUDF::from(Normalize::new())),
        Arc::new(ScalarUDF::from(ApplyLora::new())),
    ]
}

/// Defines a function of vectors returning `Float64`: the struct (with the attributes given, i.e. its `#[user_doc]`),
/// its constructor and its `ScalarUDFImpl`, which checks `arity` vector arguments and evaluates with `invoke`
/// (a generic function of `vectors` taking the struct as its kernel).
macro_rules! float64_vector_udf {
    (
        $(#[$($attr:tt)*])*
        $ty:ident, $name:literal, arity = $arity:literal, invoke = $invoke:ident, aliases = [$($alias:literal),*]
    ) => {
        $(#[$($attr)*])*
        #[derive(Debug, PartialEq, Eq, Hash)]
        pub struct $ty {
            signature: datafusion::logical_expr::Signature,
            aliases: Vec<String>,
        }

        impl Default for $ty {
            fn default() -> Self {
                Self::new()
            }
        }

        impl $ty {
            pub fn new() -> Self {
                Self {
                    signature: datafusion::logical_expr::Signature::user_defined(
                        datafusion::logical_expr::Volatility::Immutable,
                    ),
                    aliases: vec![$($alias.to_string()),*],
                }
            }
        }

        impl datafusion::logical_expr::ScalarUDFImpl for $ty {
            fn name(&self) -> &str {
                $name
            }

            fn aliases(&self) -> &[String] {
                &self.aliases
            }

            fn signature(&self) -> &datafusion::logical_expr::Signature {
                &self.signature
            }

            fn coerce_types(
                &self,
                arg_types: &[arrow::datatypes::DataType],
            ) -> datafusion::common::Result<Vec<arrow::datatypes::DataType>> {
                super::vectors::check_vector_args(self.name(), arg_types, $arity)
            }

            fn return_type(
                &self,
                _arg_types: &[arrow::datatypes::DataType],
            ) -> datafusion::common::Result<arrow::datatypes::DataType> {
                Ok(arrow::datatypes::DataType::Float64)
            }

            fn invoke_with_args(
                &self,
                args: datafusion::logical_expr::ScalarFunctionArgs,
            ) -> datafusion::common::Result<datafusion::logical_expr::ColumnarValue> {
                super::vectors::$invoke::<Self>(self.name(), &args.args)
            }

            fn documentation(&self) -> Option<&datafusion::logical_expr::Documentation> {
                self.doc()
            }
        }
    };
}
use float64_vector_udf;

#[cfg(test)]
mod tests;
