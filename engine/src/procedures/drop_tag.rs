//! `CALL drop_tag`.

use arrow::array::RecordBatch;

use super::{one_row, table_arg, text};
use crate::error::Error;

use crate::error::Result;
use crate::extension::{Args, Param, Procedure};
use crate::session::Session;

pub struct DropTag;

#[async_trait::async_trait]
impl Procedure for DropTag {
    fn name(&self) -> &'static str {
        "drop_tag"
    }

    fn params(&self) -> &'static [Param] {
        const PARAMS: &[Param] = &[
            Param::required("table", "the table name"),
            Param::required("name", "the tag name"),
        ];
        PARAMS
    }

    fn doc(&self) -> &'static str {
        "Remove a tag from the table (the version it named may then be cleaned up); returns table_name, tag."
    }

    async fn call(&self, session: &Session, args: Args) -> Result<RecordBatch> {
        let table = table_arg(session, &args)?;
        let tag = args.string(1)?;
        let ds = session
            .database()
            .schema_provider()
            .open_dataset(&table)
            .await?;
        ds.tags()
            .delete(&tag)
            .await
            .map_err(|_| Error::not_found(format!("table '{table}' has no tag '{tag}'")))?;
        one_row(&[("table_name", text(&table)), ("tag", text(&tag))])
    }
}
