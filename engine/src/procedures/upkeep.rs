//! `CALL upkeep()`.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};

use crate::error::Result;
use crate::extension::{Args, Param, Procedure};
use crate::session::Session;

pub struct Upkeep;

#[async_trait::async_trait]
impl Procedure for Upkeep {
    fn name(&self) -> &'static str {
        "upkeep"
    }

    fn params(&self) -> &'static [Param] {
        &[]
    }

    fn doc(&self) -> &'static str {
        "Run one pass of the table upkeep the server also runs in the background: compact tables with 8 or more small or mostly-deleted fragments, and fold new rows into indexes that leave 10,000 or more (and a tenth of their rows) unindexed; returns one row per table it acted on: table_name, fragments_before, fragments_after, rows_indexed, note."
    }

    async fn call(&self, session: &Session, _args: Args) -> Result<RecordBatch> {
        let policy = session
            .database()
            .config()
            .upkeep
            .clone()
            .unwrap_or_default();
        let reports = session.database().upkeep(&policy).await?;
        let uint = |f: &dyn Fn(&crate::upkeep::UpkeepReport) -> u64| -> ArrayRef {
            Arc::new(UInt64Array::from_iter_values(reports.iter().map(f)))
        };
        let schema = Schema::new(vec![
            Field::new("table_name", DataType::Utf8, false),
            Field::new("fragments_before", DataType::UInt64, false),
            Field::new("fragments_after", DataType::UInt64, false),
            Field::new("rows_indexed", DataType::UInt64, false),
            Field::new("note", DataType::Utf8, true),
        ]);
        Ok(RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(StringArray::from_iter_values(
                    reports.iter().map(|r| r.table.clone()),
                )),
                uint(&|r| r.fragments_before as u64),
                uint(&|r| r.fragments_after as u64),
                uint(&|r| r.rows_indexed),
                Arc::new(StringArray::from_iter(
                    reports.iter().map(|r| r.note.clone()),
                )),
            ],
        )?)
    }
}
