//! `marrow_versions('t')`: version, timestamp, operation, rows and tags of every version of a table that is kept.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, RecordBatch, StringArray, TimestampMicrosecondArray, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result as DFResult, ScalarValue};
use datafusion::logical_expr::Expr as DFExpr;

use super::Listing;
use crate::catalog::MarrowSchema;
use crate::error::{Error, Result};

pub struct VersionsFunction(pub Arc<MarrowSchema>);

impl std::fmt::Debug for VersionsFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("marrow_versions")
    }
}

fn versions_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("version", DataType::UInt64, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("operation", DataType::Utf8, false),
        Field::new("rows", DataType::UInt64, true),
        Field::new("tags", DataType::Utf8, true),
        Field::new("is_latest", DataType::Boolean, false),
    ]))
}

impl TableFunctionImpl for VersionsFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DFResult<Arc<dyn TableProvider>> {
        let table = match args.exprs() {
            [DFExpr::Literal(ScalarValue::Utf8(Some(s)), _)] => s.clone(),
            _ => {
                return Err(Error::invalid(
                    "marrow_versions(table) takes one argument, the table name as a string",
                )
                .into())
            }
        };
        if !self.0.lance_table_exists(&table) {
            return Err(Error::not_found(format!("table '{table}' not found")).into());
        }
        let schema = self.0.clone();
        Ok(Listing::new(versions_schema(), move || {
            let (schema, table) = (schema.clone(), table.clone());
            Box::pin(async move { versions_batch(&schema, &table).await })
        }))
    }
}

async fn versions_batch(schema: &MarrowSchema, table: &str) -> Result<RecordBatch> {
    let ds = schema.open_dataset(table).await?;
    let versions = ds.versions().await?;
    let latest = ds.version_id();
    let mut tags: HashMap<u64, Vec<String>> = HashMap::new();
    for (name, t) in ds.tags().list().await? {
        tags.entry(t.version).or_default().push(name);
    }
    let mut operations = Vec::with_capacity(versions.len());
    for v in &versions {
        let op = match ds.read_version_transaction(v.version).await {
            Ok(t) => t
                .transaction
                .map(|t| t.operation.name().to_string())
                .unwrap_or_else(|| "Unknown".into()),
            Err(_) => "Unknown".into(),
        };
        operations.push(op);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from_iter_values(
            versions.iter().map(|v| v.version),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(
                versions.iter().map(|v| v.timestamp.timestamp_micros()),
            )
            .with_timezone("UTC"),
        ),
        Arc::new(StringArray::from(operations)),
        Arc::new(UInt64Array::from_iter(versions.iter().map(|v| {
            v.metadata
                .get("total_rows")
                .and_then(|s| s.parse::<u64>().ok())
        }))),
        Arc::new(StringArray::from_iter(versions.iter().map(|v| {
            tags.get_mut(&v.version).map(|names| {
                names.sort();
                names.join(",")
            })
        }))),
        Arc::new(BooleanArray::from_iter(
            versions.iter().map(|v| Some(v.version == latest)),
        )),
    ];
    Ok(RecordBatch::try_new(versions_schema(), columns)?)
}
