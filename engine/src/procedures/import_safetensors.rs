//! `CALL import_safetensors`.

use arrow::array::RecordBatch;

use super::{one_row, text, uint};
use crate::fence::check_import;
use crate::models::weights;

use crate::error::Result;
use crate::extension::{Args, Param, Procedure};
use crate::session::Session;

pub struct ImportSafetensors;

#[async_trait::async_trait]
impl Procedure for ImportSafetensors {
    fn name(&self) -> &'static str {
        "import_safetensors"
    }

    fn params(&self) -> &'static [Param] {
        const PARAMS: &[Param] = &[
            Param::required("file", "the file"),
            Param::required("model", "the model name"),
        ];
        PARAMS
    }

    fn doc(&self) -> &'static str {
        "Import a safetensors file, or a directory of shards, under the import root as the model's rows of `tensors` (one commit) and its row of `models`; returns model, tensors, bytes, rows."
    }

    async fn call(&self, session: &Session, args: Args) -> Result<RecordBatch> {
        let file = args.string(0)?;
        let model = args.string(1)?;
        let path = check_import(session.database().config(), &file)?;
        let stats = weights::import(session, &path, &model, None).await?;
        one_row(&[
            ("model", text(&model)),
            ("tensors", uint(stats.tensors)),
            ("bytes", uint(stats.bytes)),
            ("rows", uint(stats.rows)),
        ])
    }
}
