//! `CALL import_peft`.

use arrow::array::RecordBatch;

use super::{one_row, text, uint};
use crate::fence::check_import;
use crate::models::adapters;

use crate::error::Result;
use crate::extension::{Args, Param, Procedure};
use crate::session::Session;

pub struct ImportPeft;

#[async_trait::async_trait]
impl Procedure for ImportPeft {
    fn name(&self) -> &'static str {
        "import_peft"
    }

    fn params(&self) -> &'static [Param] {
        const PARAMS: &[Param] = &[
            Param::required("dir", "the PEFT directory"),
            Param::required("id", "the adapter's id"),
            Param::optional("description", "the description"),
            Param::optional("base_model", "the base model"),
            Param::optional("metrics", "the metrics (a JSON object)"),
        ];
        PARAMS
    }

    fn doc(&self) -> &'static str {
        "Import a PEFT LoRA adapter directory under the import root as a row of `adapters` and its tensors; returns adapter, base_model, modules, tensors, bytes."
    }

    async fn call(&self, session: &Session, args: Args) -> Result<RecordBatch> {
        let dir = args.string(0)?;
        let id = args.string(1)?;
        let description = args.optional_string(2)?;
        let base = args.optional_string(3)?;
        let metrics = args.optional_string(4)?;
        let path = check_import(session.database().config(), &dir)?;
        let done = adapters::import(
            session,
            &path,
            &id,
            description.as_deref(),
            base.as_deref(),
            metrics.as_deref(),
        )
        .await?;
        one_row(&[
            ("adapter", text(&id)),
            ("base_model", text(&done.base_model)),
            ("modules", uint(done.modules as u64)),
            ("tensors", uint(done.stats.tensors)),
            ("bytes", uint(done.stats.bytes)),
        ])
    }
}
