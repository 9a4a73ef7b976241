//! `CALL merge_adapter`.

use arrow::array::RecordBatch;

use super::{one_row, text, uint};
use crate::models::adapters;

use crate::error::Result;
use crate::extension::{Args, Param, Procedure};
use crate::session::Session;

pub struct MergeAdapter;

#[async_trait::async_trait]
impl Procedure for MergeAdapter {
    fn name(&self) -> &'static str {
        "merge_adapter"
    }

    fn params(&self) -> &'static [Param] {
        const PARAMS: &[Param] = &[
            Param::required("id", "the adapter's id"),
            Param::required("new_model", "the new model's name"),
            Param::optional("base_model", "the base model"),
        ];
        PARAMS
    }

    fn doc(&self) -> &'static str {
        "Store base + scale·B·A for every adapted module as a new model (the base defaults to the adapter's base_model); returns model, tensors_merged."
    }

    async fn call(&self, session: &Session, args: Args) -> Result<RecordBatch> {
        let id = args.string(0)?;
        let target = args.string(1)?;
        let base = args.optional_string(2)?;
        let merged = adapters::merge(session, &id, &target, base.as_deref()).await?;
        one_row(&[
            ("model", text(&target)),
            ("tensors_merged", uint(merged as u64)),
        ])
    }
}
