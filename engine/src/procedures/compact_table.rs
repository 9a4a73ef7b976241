//! `CALL compact_table`.

use arrow::array::RecordBatch;
use lance::dataset::optimize::{compact_files, CompactionOptions};

use super::{one_row, table_arg, text, uint};

use crate::error::Result;
use crate::extension::{Args, Param, Procedure};
use crate::session::Session;

pub struct CompactTable;

#[async_trait::async_trait]
impl Procedure for CompactTable {
    fn name(&self) -> &'static str {
        "compact_table"
    }

    fn params(&self) -> &'static [Param] {
        const PARAMS: &[Param] = &[Param::required("table", "the table name")];
        PARAMS
    }

    fn doc(&self) -> &'static str {
        "Rewrite the table's small fragments into fewer large ones in one commit (old versions stay until cleanup); returns table_name, fragments_removed, fragments_added, version."
    }

    async fn call(&self, session: &Session, args: Args) -> Result<RecordBatch> {
        let table = table_arg(session, &args)?;
        let db = session.database();
        let lock = db.write_lock(&table);
        let _guard = lock.lock().await;
        let mut ds = db
            .schema_provider()
            .open_dataset(&table)
            .await?
            .as_ref()
            .clone();
        let m = compact_files(&mut ds, CompactionOptions::default(), None).await?;
        one_row(&[
            ("table_name", text(&table)),
            ("fragments_removed", uint(m.fragments_removed as u64)),
            ("fragments_added", uint(m.fragments_added as u64)),
            ("version", uint(ds.version_id())),
        ])
    }
}
