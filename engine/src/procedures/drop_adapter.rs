//! `CALL drop_adapter`.

use arrow::array::RecordBatch;

use super::{one_row, text, uint};
use crate::models::{adapters, weights};

use crate::error::Result;
use crate::extension::{Args, Param, Procedure};
use crate::session::Session;

pub struct DropAdapter;

#[async_trait::async_trait]
impl Procedure for DropAdapter {
    fn name(&self) -> &'static str {
        "drop_adapter"
    }

    fn params(&self) -> &'static [Param] {
        const PARAMS: &[Param] = &[Param::required("id", "the adapter's id")];
        PARAMS
    }

    fn doc(&self) -> &'static str {
        "Delete an adapter's row and its tensors; returns adapter, rows_deleted."
    }

    async fn call(&self, session: &Session, args: Args) -> Result<RecordBatch> {
        let id = args.string(0)?;
        adapters::require(session, &id).await?;
        let rows = weights::drop_model(session, &id).await?;
        one_row(&[("adapter", text(&id)), ("rows_deleted", uint(rows))])
    }
}
