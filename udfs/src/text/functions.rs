//! The SQL functions over [`TextModels`]: `tokenize`, `token_count`, `detokenize`, `embed`. Each works on a whole
//! column at once (one batch encode, one batched model run), never per row.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListArray, Float32Array, Int32Builder, Int64Array,
    ListBuilder, StringArray, StringBuilder,
};
use arrow::datatypes::{DataType, Field, Int64Type};
use datafusion::common::{exec_err, plan_err, Result, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};

use super::SharedModels;

fn err(msg: String) -> DataFusionError {
    DataFusionError::Execution(msg)
}

/// The optional tokenizer-name argument: a constant string.
fn tokenizer_name<'a>(name: &str, args: &'a [ColumnarValue]) -> Result<Option<&'a str>> {
    match args.get(1) {
        None => Ok(None),
        Some(ColumnarValue::Scalar(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)),
        )) => Ok(Some(s.as_str())),
        Some(_) => exec_err!("{name}: the tokenizer name must be a constant string"),
    }
}

/// The text argument as one array (a scalar becomes a one-row array).
fn texts(args: &[ColumnarValue], rows: usize) -> Result<(StringArray, bool)> {
    let is_scalar = matches!(args[0], ColumnarValue::Scalar(_));
    let array = args[0].to_array(if is_scalar { 1 } else { rows })?;
    let array = arrow::compute::cast(&array, &DataType::Utf8)?;
    Ok((array.as_string::<i32>().clone(), is_scalar))
}

fn finish(array: ArrayRef, is_scalar: bool) -> Result<ColumnarValue> {
    if is_scalar {
        Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
            &array, 0,
        )?))
    } else {
        Ok(ColumnarValue::Array(array))
    }
}

fn text_signature() -> Signature {
    Signature::one_of(
        vec![TypeSignature::String(1), TypeSignature::String(2)],
        Volatility::Immutable,
    )
}

macro_rules! models_udf {
    ($ty:ident) => {
        #[derive(Debug)]
        pub struct $ty {
            models: SharedModels,
            signature: Signature,
        }
        impl PartialEq for $ty {
            fn eq(&self, other: &Self) -> bool {
                Arc::ptr_eq(&self.models, &other.models)
            }
        }
        impl Eq for $ty {}
        impl Hash for $ty {
            fn hash<H: Hasher>(&self, state: &mut H) {
                (Arc::as_ptr(&self.models) as usize).hash(state);
            }
        }
    };
}

models_udf!(Tokenize);
models_udf!(TokenCount);
models_udf!(Detokenize);
models_udf!(Embed);

fn encode(
    models: &SharedModels,
    name: &str,
    args: &ScalarFunctionArgs,
) -> Result<(Vec<Option<Vec<u32>>>, bool)> {
    let tokenizer = models
        .tokenizer(tokenizer_name(name, &args.args)?)
        .map_err(err)?;
    let (texts, is_scalar) = texts(&args.args, args.number_rows)?;
    let present: Vec<&str> = texts.iter().flatten().collect();
    let encodings = tokenizer
        .encode_batch_fast(present, true)
        .map_err(|e| err(format!("{name}: {e}")))?;
    let mut encodings = encodings.into_iter();
    let out = texts
        .iter()
        .map(|t| {
            t.map(|_| {
                encodings
                    .next()
                    .map(|e| e.get_ids().to_vec())
                    .unwrap_or_default()
            })
        })
        .collect();
    Ok((out, is_scalar))
}

impl ScalarUDFImpl for Tokenize {
    fn name(&self) -> &str {
        "tokenize"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::new_list(DataType::Int32, true))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let (ids, is_scalar) = encode(&self.models, self.name(), &args)?;
        let mut b = ListBuilder::new(Int32Builder::new());
        for row in ids {
            match row {
                Some(ids) => {
                    b.values().extend(ids.into_iter().map(|i| Some(i as i32)));
                    b.append(true);
                }
                None => b.append(false),
            }
        }
        finish(Arc::new(b.finish()), is_scalar)
    }
}

impl ScalarUDFImpl for TokenCount {
    fn name(&self) -> &str {
        "token_count"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let (ids, is_scalar) = encode(&self.models, self.name(), &args)?;
        let counts: Int64Array = ids.into_iter().map(|r| r.map(|v| v.len() as i64)).collect();
        finish(Arc::new(counts), is_scalar)
    }
}

impl ScalarUDFImpl for Detokenize {
    fn name(&self) -> &str {
        "detokenize"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let ids = match arg_types.first() {
            Some(DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _))
                if f.data_type().is_integer() || f.data_type().is_null() =>
            {
                DataType::new_list(DataType::Int64, true)
            }
            Some(DataType::Null) => DataType::new_list(DataType::Int64, true),
            other => {
                return plan_err!(
                    "detokenize(ids [, tokenizer]): ids must be a list of integers, got {other:?}"
                )
            }
        };
        match arg_types.len() {
            1 => Ok(vec![ids]),
            2 => Ok(vec![ids, DataType::Utf8]),
            n => plan_err!("detokenize takes 1 or 2 arguments, got {n}"),
        }
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let tokenizer = self
            .models
            .tokenizer(tokenizer_name(self.name(), &args.args)?)
            .map_err(err)?;
        let is_scalar = matches!(args.args[0], ColumnarValue::Scalar(_));
        let lists = args.args[0].to_array(if is_scalar { 1 } else { args.number_rows })?;
        let lists = lists.as_list::<i32>();
        let vocab = tokenizer.get_vocab_size(true) as i64;
        let mut out = StringBuilder::new();
        for row in lists.iter() {
            match row {
                None => out.append_null(),
                Some(values) => {
                    let values = values.as_primitive::<Int64Type>();
                    let mut ids = Vec::with_capacity(values.len());
                    for v in values.iter() {
                        match v {
                            Some(v) if (0..vocab).contains(&v) => ids.push(v as u32),
                            Some(v) => {
                                return exec_err!(
                                "detokenize: token id {v} is outside the vocabulary (0..{vocab})"
                            )
                            }
                            None => return exec_err!("detokenize: token ids must not be NULL"),
                        }
                    }
                    out.append_value(
                        tokenizer
                            .decode(&ids, true)
                            .map_err(|e| err(format!("detokenize: {e}")))?,
                    );
                }
            }
        }
        finish(Arc::new(out.finish()), is_scalar)
    }
}

impl ScalarUDFImpl for Embed {
    fn name(&self) -> &str {
        "embed"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        let dim = self.models.embedding_dim().map_err(err)?;
        Ok(DataType::FixedSizeList(
            Arc::new(Field::new_list_field(DataType::Float32, true)),
            dim as i32,
        ))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if args.args.len() != 1 {
            return exec_err!("embed(text) takes one argument");
        }
        let embedder = self.models.embedder().map_err(err)?;
        let (texts, is_scalar) = texts(&args.args, args.number_rows)?;
        let present: Vec<&str> = texts.iter().flatten().collect();
        let vectors = embedder
            .embed(&present)
            .map_err(|e| err(format!("embed: {e}")))?;
        let dim = embedder.dim();
        let mut values = Vec::with_capacity(texts.len() * dim);
        let mut vectors = vectors.into_iter();
        let mut validity = Vec::with_capacity(texts.len());
        for t in texts.iter() {
            match t {
                Some(_) => {
                    values.extend(vectors.next().unwrap_or_else(|| vec![0.0; dim]));
                    validity.push(true);
                }
                None => {
                    values.extend(std::iter::repeat_n(0.0, dim));
                    validity.push(false);
                }
            }
        }
        let array = FixedSizeListArray::try_new(
            Arc::new(Field::new_list_field(DataType::Float32, true)),
            dim as i32,
            Arc::new(Float32Array::from(values)),
            Some(validity.into()),
        )?;
        finish(Arc::new(array), is_scalar)
    }
}

/// The text functions, sharing one set of models.
pub fn functions(models: SharedModels) -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::new_from_impl(Tokenize {
            models: models.clone(),
            signature: text_signature(),
        }),
        ScalarUDF::new_from_impl(TokenCount {
            models: models.clone(),
            signature: text_signature(),
        }),
        ScalarUDF::new_from_impl(Detokenize {
            models: models.clone(),
            signature: Signature::user_defined(Volatility::Immutable),
        }),
        ScalarUDF::new_from_impl(Embed {
            models,
            signature: Signature::one_of(vec![TypeSignature::String(1)], Volatility::Immutable),
        }),
    ]
}
