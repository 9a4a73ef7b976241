//! `CALL cleanup_versions`.

use arrow::array::RecordBatch;

use super::{interval_micros, one_row, table_arg, text, uint};
use crate::catalog::versions::cleanup;
use crate::error::Error;
use crate::options::MarrowOptions;

use crate::error::Result;
use crate::extension::{Args, Param, Procedure};
use crate::session::Session;

pub struct CleanupVersions;

#[async_trait::async_trait]
impl Procedure for CleanupVersions {
    fn name(&self) -> &'static str {
        "cleanup_versions"
    }

    fn params(&self) -> &'static [Param] {
        const PARAMS: &[Param] = &[
            Param::required("table", "the table name"),
            Param::optional("retention", "the retention period"),
        ];
        PARAMS
    }

    fn doc(&self) -> &'static str {
        "Delete versions older than the retention (default: SET marrow.version_retention, 7 days) except tagged ones, the latest and any a running query reads; returns table_name, versions_removed, bytes_removed, oldest_kept."
    }

    async fn call(&self, session: &Session, args: Args) -> Result<RecordBatch> {
        let table = table_arg(session, &args)?;
        let retention = match args.get(1) {
            Some(v) => interval_micros(v)?,
            None => {
                let text = MarrowOptions::of(session.state().config_options()).version_retention;
                let v = session
                    .eval_constants(&[format!("INTERVAL '{}'", text.replace('\'', "''"))], None)
                    .await
                    .map_err(|e| {
                        Error::invalid(format!(
                            "marrow.version_retention = '{text}' is not an interval: {}",
                            e.message()
                        ))
                    })?;
                interval_micros(&v[0])?
            }
        };
        let db = session.database();
        let lock = db.write_lock(&table);
        let _guard = lock.lock().await;
        let stats = cleanup(db.schema_provider(), &table, retention).await?;
        one_row(&[
            ("table_name", text(&table)),
            ("versions_removed", uint(stats.old_versions)),
            ("bytes_removed", uint(stats.bytes_removed)),
            ("oldest_kept", uint(stats.oldest_kept)),
        ])
    }
}
