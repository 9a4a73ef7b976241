//! `CALL restore_table`.

use arrow::array::RecordBatch;
use datafusion::common::ScalarValue;

use super::{one_row, table_arg, text, uint, version_number};
use crate::catalog::versions::checkout;
use crate::error::Error;

use crate::error::Result;
use crate::extension::{Args, Param, Procedure};
use crate::session::Session;

pub struct RestoreTable;

#[async_trait::async_trait]
impl Procedure for RestoreTable {
    fn name(&self) -> &'static str {
        "restore_table"
    }

    fn params(&self) -> &'static [Param] {
        const PARAMS: &[Param] = &[
            Param::required("table", "the table name"),
            Param::required("version", "the version (a number or a tag name)"),
        ];
        PARAMS
    }

    fn doc(&self) -> &'static str {
        "Commit a new version of the table with the contents of an older version or tag; returns table_name, restored_version, new_version."
    }

    async fn call(&self, session: &Session, args: Args) -> Result<RecordBatch> {
        let table = table_arg(session, &args)?;
        let db = session.database();
        let schema = db.schema_provider();
        let lock = db.write_lock(&table);
        let _guard = lock.lock().await;
        let latest = schema.open_dataset(&table).await?;
        let version = match args.get(1) {
            Some(v) if version_number(v).is_some() => version_number(v).unwrap_or_default(),
            Some(ScalarValue::Utf8(Some(tag))) => latest
                .tags()
                .get_version(tag)
                .await
                .map_err(|_| Error::not_found(format!("table '{table}' has no tag '{tag}'")))?,
            other => {
                return Err(Error::invalid(format!(
                    "CALL restore_table: the version must be a number or a tag name, got {}",
                    other.map(|v| v.to_string()).unwrap_or_default()
                )))
            }
        };
        let mut old = checkout(schema, &table, version).await?;
        old.restore().await?;
        one_row(&[
            ("table_name", text(&table)),
            ("restored_version", uint(version)),
            ("new_version", uint(old.version_id())),
        ])
    }
}
