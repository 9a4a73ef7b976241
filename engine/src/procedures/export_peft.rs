//! `CALL export_peft`.

use arrow::array::RecordBatch;

use super::{one_row, text, uint};
use crate::fence::check_export;
use crate::models::adapters;

use crate::error::Result;
use crate::extension::{Args, Param, Procedure};
use crate::session::Session;

pub struct ExportPeft;

#[async_trait::async_trait]
impl Procedure for ExportPeft {
    fn name(&self) -> &'static str {
        "export_peft"
    }

    fn params(&self) -> &'static [Param] {
        const PARAMS: &[Param] = &[
            Param::required("id", "the adapter's id"),
            Param::required("dir", "the directory"),
        ];
        PARAMS
    }

    fn doc(&self) -> &'static str {
        "Write an adapter as a PEFT directory (adapter_config.json, adapter_model.safetensors) under the export root; returns adapter, bytes."
    }

    async fn call(&self, session: &Session, args: Args) -> Result<RecordBatch> {
        let id = args.string(0)?;
        let dir = args.string(1)?;
        let path = check_export(session.database().config(), &dir)?;
        let bytes = adapters::export(session, &id, &path).await?;
        one_row(&[("adapter", text(&id)), ("bytes", uint(bytes))])
    }
}
