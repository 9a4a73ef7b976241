//! `read_safetensors(file)`: a safetensors file (or directory of shards) under the import root as chunk rows.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;

use crate::config::Config;
use crate::error::Error;
use crate::fence::check_import;
use crate::models::safetensors::{chunk_schema, model_files, read_chunks, read_header};

/// `read_safetensors('file')`: a safetensors file under the import root as chunk rows (name, dtype, shape,
/// quantization, chunk, n_chunks, data), so `INSERT INTO tensors SELECT 'm', * FROM read_safetensors('f')` imports.
#[derive(Debug)]
pub struct ReadSafetensors(pub Config);

impl datafusion::catalog::TableFunctionImpl for ReadSafetensors {
    fn call_with_args(
        &self,
        args: datafusion::catalog::TableFunctionArgs,
    ) -> datafusion::common::Result<Arc<dyn datafusion::catalog::TableProvider>> {
        let file =
            match args.exprs() {
                [datafusion::logical_expr::Expr::Literal(
                    datafusion::common::ScalarValue::Utf8(Some(s)),
                    _,
                )] => s.clone(),
                _ => return Err(Error::invalid(
                    "read_safetensors(file) takes one argument, a file name under the import root",
                )
                .into()),
            };
        let path = check_import(&self.0, &file)?;
        let root = self.0.import_root.clone();
        let files = model_files(root.as_deref(), &path)?;
        for f in &files {
            read_header(root.as_deref(), f)?;
        }
        Ok(Arc::new(SafetensorsTable(files, root)))
    }
}

#[derive(Debug)]
/// The shard files, and the root each must still be inside when it is read.
struct SafetensorsTable(Vec<PathBuf>, Option<PathBuf>);

#[async_trait::async_trait]
impl datafusion::catalog::TableProvider for SafetensorsTable {
    fn schema(&self) -> SchemaRef {
        chunk_schema(false)
    }
    fn table_type(&self) -> datafusion::logical_expr::TableType {
        datafusion::logical_expr::TableType::View
    }
    async fn scan(
        &self,
        state: &dyn datafusion::catalog::Session,
        projection: Option<&Vec<usize>>,
        filters: &[datafusion::logical_expr::Expr],
        limit: Option<usize>,
    ) -> datafusion::common::Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
        let (files, root) = (self.0.clone(), self.1.clone());
        let (batches, ..) =
            tokio::task::spawn_blocking(move || read_chunks(root.as_deref(), &files, None, None))
                .await
                .map_err(|e| Error::internal(format!("reading safetensors: {e}")))??;
        datafusion::datasource::MemTable::try_new(chunk_schema(false), vec![batches])?
            .scan(state, projection, filters, limit)
            .await
    }
}
