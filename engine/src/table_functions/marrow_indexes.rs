//! `marrow_indexes()`: every index with its kind, column, metric and coverage.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, UInt64Builder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::Result as DFResult;

use super::{plan_err, Listing};
use crate::catalog::MarrowSchema;
use crate::error::Result;
use crate::statements::index::{list_indexes, IndexInfo};

#[derive(Debug)]
pub struct IndexesFunction(pub Arc<MarrowSchema>);

fn indexes_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("table_name", DataType::Utf8, false),
        Field::new("index_name", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("metric", DataType::Utf8, true),
        Field::new("rows_indexed", DataType::UInt64, false),
        Field::new("rows_unindexed", DataType::UInt64, false),
    ]))
}

impl TableFunctionImpl for IndexesFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DFResult<Arc<dyn TableProvider>> {
        if !args.exprs().is_empty() {
            return Err(plan_err("marrow_indexes() takes no arguments"));
        }
        let schema = self.0.clone();
        Ok(Listing::new(indexes_schema(), move || {
            let schema = schema.clone();
            Box::pin(async move { indexes_batch(&schema).await })
        }))
    }
}

async fn indexes_batch(schema: &MarrowSchema) -> Result<RecordBatch> {
    let list = list_indexes(schema).await?;
    let text = |f: fn(&IndexInfo) -> Option<&str>| -> ArrayRef {
        Arc::new(list.iter().map(f).collect::<StringArray>())
    };
    let mut indexed = UInt64Builder::new();
    let mut unindexed = UInt64Builder::new();
    for i in &list {
        indexed.append_value(i.rows_indexed);
        unindexed.append_value(i.rows_unindexed);
    }
    Ok(RecordBatch::try_new(
        indexes_schema(),
        vec![
            text(|i| Some(&i.table)),
            text(|i| Some(&i.name)),
            text(|i| Some(&i.kind)),
            text(|i| Some(&i.column)),
            text(|i| i.metric.as_deref()),
            Arc::new(indexed.finish()),
            Arc::new(unindexed.finish()),
        ],
    )?)
}
