//! `to_json(value)`: any value as JSON text. Vectors and lists become JSON arrays (`[0.1,0.2]`), structs JSON objects;
//! NaN and infinities, which JSON cannot spell, become `null`. COPY … STORED AS CSV uses it for nested columns.

use std::sync::Arc;

use arrow::array::{Array, StringBuilder};
use arrow::datatypes::{DataType, Field};
use arrow::json::writer::{make_encoder, EncoderOptions};
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ToJson {
    signature: Signature,
}

impl Default for ToJson {
    fn default() -> Self {
        Self {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

/// The `to_json` function.
pub fn to_json() -> ScalarUDF {
    ScalarUDF::new_from_impl(ToJson::default())
}

impl ScalarUDFImpl for ToJson {
    fn name(&self) -> &str {
        "to_json"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let is_scalar = matches!(args.args[0], ColumnarValue::Scalar(_));
        let values = args.args[0].to_array(if is_scalar { 1 } else { args.number_rows })?;
        let out = encode(values.as_ref())?;
        if is_scalar {
            Ok(ColumnarValue::Scalar(
                datafusion::common::ScalarValue::try_from_array(&out, 0)?,
            ))
        } else {
            Ok(ColumnarValue::Array(Arc::new(out)))
        }
    }
}

/// Each row of `values` as JSON text; a null row stays null.
pub fn encode(values: &dyn Array) -> Result<arrow::array::StringArray> {
    let field = Arc::new(Field::new("v", values.data_type().clone(), true));
    let options = EncoderOptions::default().with_explicit_nulls(true);
    let mut encoder = make_encoder(&field, values, &options)?;
    let mut out = StringBuilder::with_capacity(values.len(), values.len() * 16);
    let mut buf = Vec::with_capacity(64);
    for i in 0..values.len() {
        if values.is_null(i) {
            out.append_null();
            continue;
        }
        buf.clear();
        encoder.encode(i, &mut buf);
        out.append_value(String::from_utf8_lossy(&buf));
    }
    Ok(out.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{FixedSizeListArray, Float32Array, StringArray};

    #[test]
    fn vectors_become_json_arrays() {
        let values = Float32Array::from(vec![0.5, -1.25, f32::NAN, 3.0e-8]);
        let list = FixedSizeListArray::new(
            Arc::new(Field::new("item", DataType::Float32, true)),
            2,
            Arc::new(values),
            Some(vec![true, false].into()),
        );
        let json = encode(&list).unwrap();
        assert_eq!(json.value(0), "[0.5,-1.25]");
        assert!(json.is_null(1));
        let strings = StringArray::from(vec![Some("a \"quoted\" word"), None]);
        let json = encode(&strings).unwrap();
        assert_eq!(json.value(0), "\"a \\\"quoted\\\" word\"");
        let nan = FixedSizeListArray::new(
            Arc::new(Field::new("item", DataType::Float32, true)),
            2,
            Arc::new(Float32Array::from(vec![f32::NAN, 3.0e-8])),
            None,
        );
        assert_eq!(encode(&nan).unwrap().value(0), "[null,3.0e-8]");
    }
}
