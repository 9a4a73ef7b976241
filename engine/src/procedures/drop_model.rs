//! `CALL drop_model`.

use arrow::array::RecordBatch;

use super::{one_row, text, uint};
use crate::models::weights;

use crate::error::Result;
use crate::extension::{Args, Param, Procedure};
use crate::session::Session;

pub struct DropModel;

#[async_trait::async_trait]
impl Procedure for DropModel {
    fn name(&self) -> &'static str {
        "drop_model"
    }

    fn params(&self) -> &'static [Param] {
        const PARAMS: &[Param] = &[Param::required("model", "the model name")];
        PARAMS
    }

    fn doc(&self) -> &'static str {
        "Delete a model's tensors and its `models` row; returns model, rows_deleted."
    }

    async fn call(&self, session: &Session, args: Args) -> Result<RecordBatch> {
        let model = args.string(0)?;
        let rows = weights::drop_model(session, &model).await?;
        one_row(&[("model", text(&model)), ("rows_deleted", uint(rows))])
    }
}
