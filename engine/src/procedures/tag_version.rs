//! `CALL tag_version`.

use arrow::array::RecordBatch;

use super::{one_row, table_arg, text, uint, version_number};
use crate::catalog::versions::tag_error;
use crate::error::Error;

use crate::error::Result;
use crate::extension::{Args, Param, Procedure};
use crate::session::Session;

pub struct TagVersion;

#[async_trait::async_trait]
impl Procedure for TagVersion {
    fn name(&self) -> &'static str {
        "tag_version"
    }

    fn params(&self) -> &'static [Param] {
        const PARAMS: &[Param] = &[
            Param::required("table", "the table name"),
            Param::required("name", "the tag name"),
            Param::optional("version", "the version"),
        ];
        PARAMS
    }

    fn doc(&self) -> &'static str {
        "Name a version of the table (the latest when none is given): cleanup keeps it and time travel can use the name; returns table_name, tag, version."
    }

    async fn call(&self, session: &Session, args: Args) -> Result<RecordBatch> {
        let table = table_arg(session, &args)?;
        let tag = args.string(1)?;
        let ds = session
            .database()
            .schema_provider()
            .open_dataset(&table)
            .await?;
        let version = match args.get(2) {
            None => ds.version_id(),
            Some(v) => version_number(v).ok_or_else(|| {
                Error::invalid(format!(
                    "CALL tag_version: the version must be a positive integer, got {v}"
                ))
            })?,
        };
        ds.tags()
            .create(&tag, version)
            .await
            .map_err(|e| tag_error(e, &table, &tag, version, ds.version_id()))?;
        one_row(&[
            ("table_name", text(&table)),
            ("tag", text(&tag)),
            ("version", uint(version)),
        ])
    }
}
