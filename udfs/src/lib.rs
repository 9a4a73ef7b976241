//! Marrow's SQL functions and their compute kernels. Pure compute: nothing here knows about storage or Flight.

use datafusion::error::Result;
use datafusion::execution::FunctionRegistry;

/// Register every Marrow function with a session, replacing DataFusion built-ins of the same name.
pub fn register_all(registry: &mut dyn FunctionRegistry) -> Result<()> {
    let _ = registry;
    Ok(())
}
