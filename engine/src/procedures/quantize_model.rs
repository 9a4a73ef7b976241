//! `CALL quantize_model`.

use arrow::array::RecordBatch;

use super::{one_row, text, uint};
use crate::models::weights;

use crate::error::Result;
use crate::extension::{Args, Param, Procedure};
use crate::session::Session;

pub struct QuantizeModel;

#[async_trait::async_trait]
impl Procedure for QuantizeModel {
    fn name(&self) -> &'static str {
        "quantize_model"
    }

    fn params(&self) -> &'static [Param] {
        const PARAMS: &[Param] = &[
            Param::required("model", "the source model"),
            Param::required("new_model", "the new model's name"),
            Param::required("scheme", "the scheme"),
        ];
        PARAMS
    }

    fn doc(&self) -> &'static str {
        "Store a quantized copy of a model under a new name (GGML schemes such as q8_0 and q4_0; tensors that cannot be quantized are copied); returns model, tensors_quantized, tensors_copied."
    }

    async fn call(&self, session: &Session, args: Args) -> Result<RecordBatch> {
        let source = args.string(0)?;
        let target = args.string(1)?;
        let scheme = args.string(2)?;
        let (quantized, copied) =
            weights::quantize_model(session, &source, &target, &scheme).await?;
        one_row(&[
            ("model", text(&target)),
            ("tensors_quantized", uint(quantized)),
            ("tensors_copied", uint(copied)),
        ])
    }
}
