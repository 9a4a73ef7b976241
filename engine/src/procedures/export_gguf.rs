//! `CALL export_gguf`.

use arrow::array::RecordBatch;

use super::{one_row, text, uint};
use crate::fence::check_export;
use crate::models::gguf;

use crate::error::Result;
use crate::extension::{Args, Param, Procedure};
use crate::session::Session;

pub struct ExportGguf;

#[async_trait::async_trait]
impl Procedure for ExportGguf {
    fn name(&self) -> &'static str {
        "export_gguf"
    }

    fn params(&self) -> &'static [Param] {
        const PARAMS: &[Param] = &[
            Param::required("model", "the model name"),
            Param::required("file", "the file"),
        ];
        PARAMS
    }

    fn doc(&self) -> &'static str {
        "Write a model (raw, or quantized with GGML block schemes) as a GGUF file under the export root; returns model, bytes."
    }

    async fn call(&self, session: &Session, args: Args) -> Result<RecordBatch> {
        let model = args.string(0)?;
        let file = args.string(1)?;
        let path = check_export(session.database().config(), &file)?;
        let bytes = gguf::export_gguf(session, &model, &path, None).await?;
        one_row(&[("model", text(&model)), ("bytes", uint(bytes))])
    }
}
