//! `vector_search(table, column, query_vector, k [, metric])`.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{
    Session as CatalogSession, TableFunctionArgs, TableFunctionImpl, TableProvider,
};
use datafusion::common::{Result as DFResult, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;

use crate::catalog::MarrowSchema;
use crate::vector::query_vector;

use super::*;
use crate::vector::project;

/// `vector_search(table, column, query_vector, k [, metric])`.
#[derive(Debug)]
pub struct VectorSearchFunction(pub Arc<MarrowSchema>);

impl TableFunctionImpl for VectorSearchFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DFResult<Arc<dyn TableProvider>> {
        const NAME: &str = "vector_search";
        let values = constant_args(&args, NAME)?;
        if !(4..=5).contains(&values.len()) {
            return Err(plan_err(
                "vector_search(table, column, query_vector, k [, metric]) takes 4 or 5 arguments",
            ));
        }
        let table = string_arg(&values[0], NAME, "table")?;
        let column = string_arg(&values[1], NAME, "column")?;
        let schema = table_schema(&self.0, &table, NAME)?;
        let column_type = vector_column(&schema, &table, &column, NAME)?;
        if query_vector(&values[2], &table, &column, &column_type)?.is_none() {
            return Err(plan_err(
                "vector_search: the query vector must be a non-NULL list of numbers",
            ));
        }
        let spec = SearchSpec {
            k: k_arg(&values[3], NAME)?,
            metric: metric_arg(values.get(4), NAME)?,
            table,
            column,
        };
        Ok(Arc::new(VectorSearchProvider {
            catalog: self.0.clone(),
            schema: output_schema(&schema, None),
            spec,
            query: values[2].clone(),
        }))
    }
}

#[derive(Debug)]
struct VectorSearchProvider {
    catalog: Arc<MarrowSchema>,
    schema: SchemaRef,
    spec: SearchSpec,
    query: ScalarValue,
}

pub(crate) fn session_state(state: &dyn CatalogSession) -> DFResult<&SessionState> {
    state
        .as_any()
        .downcast_ref::<SessionState>()
        .ok_or_else(|| {
            DataFusionError::Internal("table function planned outside a DataFusion session".into())
        })
}

#[async_trait]
impl TableProvider for VectorSearchProvider {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn table_type(&self) -> TableType {
        TableType::Temporary
    }
    async fn scan(
        &self,
        state: &dyn CatalogSession,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let plan = self
            .spec
            .plan(&self.catalog, session_state(state)?, self.query.clone())
            .await?;
        project(plan, projection)
    }
}
