//! The SQL functions `quantize(values, scheme)` and `dequantize(blob, scheme)` over [`Scheme`].
//!
//! Each batch is written straight into one output buffer (one `Binary` values buffer, or one `Float32` values buffer
//! behind a `List`), so there is no allocation per row.

use std::sync::Arc;

use arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, BinaryArray, BooleanBufferBuilder, Float32Array,
    GenericListArray, ListArray, OffsetSizeTrait, StringArray,
};
use arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, Field, Float32Type};
use datafusion::common::utils::take_function_args;
use datafusion::common::{exec_datafusion_err, exec_err, plan_err, Result, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use datafusion_macros::user_doc;

use super::{QuantError, Scheme};

fn quant_err(name: &str, e: QuantError) -> DataFusionError {
    exec_datafusion_err!("{name}: {e}")
}

/// The `scheme` argument: one constant (parsed once) or a column (parsed per row).
enum Schemes {
    Constant(Option<Scheme>),
    Column(StringArray),
}

impl Schemes {
    fn new(name: &str, arg: &ColumnarValue, rows: usize) -> Result<Schemes> {
        match arg {
            ColumnarValue::Scalar(s) => match s {
                ScalarValue::Utf8(v) | ScalarValue::LargeUtf8(v) | ScalarValue::Utf8View(v) => {
                    let scheme = v
                        .as_deref()
                        .map(Scheme::parse)
                        .transpose()
                        .map_err(|e| quant_err(name, e))?;
                    Ok(Schemes::Constant(scheme))
                }
                ScalarValue::Null => Ok(Schemes::Constant(None)),
                other => exec_err!(
                    "{name}: the scheme must be a string, got {}",
                    other.data_type()
                ),
            },
            ColumnarValue::Array(_) => {
                let array = arg.to_array(rows)?;
                let array = arrow::compute::cast(&array, &DataType::Utf8)?;
                Ok(Schemes::Column(array.as_string::<i32>().clone()))
            }
        }
    }

    fn get(&self, name: &str, row: usize) -> Result<Option<Scheme>> {
        match self {
            Schemes::Constant(s) => Ok(*s),
            Schemes::Column(a) if a.is_null(row) => Ok(None),
            Schemes::Column(a) => Scheme::parse(a.value(row))
                .map(Some)
                .map_err(|e| quant_err(name, e)),
        }
    }

    fn all_null(&self) -> bool {
        matches!(self, Schemes::Constant(None))
    }
}

/// The number of rows to evaluate and whether the result is a scalar (every argument is).
fn shape(args: &ScalarFunctionArgs) -> (usize, bool) {
    let scalar = args
        .args
        .iter()
        .all(|a| matches!(a, ColumnarValue::Scalar(_)));
    (if scalar { 1 } else { args.number_rows }, scalar)
}

fn finish(array: ArrayRef, scalar: bool) -> Result<ColumnarValue> {
    if scalar {
        Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
            &array, 0,
        )?))
    } else {
        Ok(ColumnarValue::Array(array))
    }
}

fn coerce_scheme(name: &str, t: &DataType) -> Result<DataType> {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => {
            Ok(DataType::Utf8)
        }
        other => plan_err!(
            "{name}: the scheme must be a string ({}), got {other}",
            super::SCHEME_NAMES
        ),
    }
}

/// Calls `f(row, values)` for each row of a vector column: `None` for a NULL row or a row holding a NULL element.
fn for_each_vector(
    name: &str,
    array: &ArrayRef,
    mut f: impl FnMut(usize, Option<&[f32]>) -> Result<()>,
) -> Result<()> {
    fn lists<O: OffsetSizeTrait>(
        list: &GenericListArray<O>,
        f: &mut impl FnMut(usize, Option<&[f32]>) -> Result<()>,
    ) -> Result<()> {
        let values = list.values().as_primitive::<Float32Type>();
        let offsets = list.value_offsets();
        for i in 0..list.len() {
            let (start, end) = (offsets[i].as_usize(), offsets[i + 1].as_usize());
            f(i, row(list.is_null(i), values, start, end))?;
        }
        Ok(())
    }
    fn row(null: bool, values: &Float32Array, start: usize, end: usize) -> Option<&[f32]> {
        if null {
            return None;
        }
        if let Some(nulls) = values.nulls().filter(|n| n.null_count() > 0) {
            if nulls.slice(start, end - start).null_count() > 0 {
                return None;
            }
        }
        Some(&values.values()[start..end])
    }
    fn binary<'a>(
        name: &str,
        rows: impl Iterator<Item = Option<&'a [u8]>>,
        f: &mut impl FnMut(usize, Option<&[f32]>) -> Result<()>,
    ) -> Result<()> {
        let mut scratch: Vec<f32> = Vec::new();
        for (i, bytes) in rows.enumerate() {
            match bytes {
                None => f(i, None)?,
                Some(b) if b.len() % 4 != 0 => {
                    return exec_err!(
                        "{name}: binary values must be little-endian f32 bytes; got {} bytes, not a multiple of 4",
                        b.len()
                    )
                }
                Some(b) => {
                    scratch.clear();
                    scratch.extend(
                        b.chunks_exact(4)
                            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                    );
                    f(i, Some(&scratch))?;
                }
            }
        }
        Ok(())
    }
    match array.data_type() {
        DataType::List(_) => lists(array.as_list::<i32>(), &mut f),
        DataType::LargeList(_) => lists(array.as_list::<i64>(), &mut f),
        DataType::FixedSizeList(_, n) => {
            let list = array.as_fixed_size_list();
            let values = list.values().as_primitive::<Float32Type>();
            let n = *n as usize;
            for i in 0..list.len() {
                f(i, row(list.is_null(i), values, i * n, (i + 1) * n))?;
            }
            Ok(())
        }
        DataType::Binary => binary(name, array.as_binary::<i32>().iter(), &mut f),
        DataType::LargeBinary => binary(name, array.as_binary::<i64>().iter(), &mut f),
        DataType::BinaryView => binary(name, array.as_binary_view().iter(), &mut f),
        DataType::Null => (0..array.len()).try_for_each(|i| f(i, None)),
        other => exec_err!("{name}: unexpected argument type {other}"),
    }
}

/// Calls `f(row, blob)` for each row of a binary column (`None` for NULL).
fn for_each_blob(
    name: &str,
    array: &ArrayRef,
    mut f: impl FnMut(usize, Option<&[u8]>) -> Result<()>,
) -> Result<()> {
    fn each<'a>(
        rows: impl Iterator<Item = Option<&'a [u8]>>,
        f: &mut impl FnMut(usize, Option<&[u8]>) -> Result<()>,
    ) -> Result<()> {
        rows.enumerate().try_for_each(|(i, b)| f(i, b))
    }
    match array.data_type() {
        DataType::Binary => each(array.as_binary::<i32>().iter(), &mut f),
        DataType::LargeBinary => each(array.as_binary::<i64>().iter(), &mut f),
        DataType::BinaryView => each(array.as_binary_view().iter(), &mut f),
        DataType::Null => (0..array.len()).try_for_each(|i| f(i, None)),
        other => exec_err!("{name}: unexpected argument type {other}"),
    }
}

fn offset(name: &str, len: usize) -> Result<i32> {
    i32::try_from(len).map_err(|_| {
        exec_datafusion_err!("{name}: the batch's output is over 2 GiB; use smaller batches")
    })
}

#[user_doc(
    doc_section(label = "Quantization Functions"),
    description = "Quantizes a vector of floats into a binary blob. Schemes: `q8_0`, `q4_0` (ggml blocks of 32 \
values, bit-exact with llama.cpp's reference / gguf-py), `q4_k`, `q2_k` (ggml super-blocks of 256), `nf4` \
(bitsandbytes' NormalFloat4, blocks of 64 with an f32 absmax) and `int8` (symmetric per vector: an f32 scale then one \
int8 per value). The blob of a ggml scheme is exactly its GGUF tensor bytes. The number of values must be a \
multiple of the block size (32, 256 or 64; any length for `int8`). NaN or infinite values are an error; NULL (or a \
NULL element) gives NULL. The module documentation of `marrow_udfs::quant` describes every byte layout.",
    syntax_example = "quantize(values, scheme)",
    sql_example = r#"```sql
> SELECT encode(quantize([1.0, 2.0, 3.0], 'int8'), 'hex');
0683c13c2a557f
> INSERT INTO embeddings_int8 SELECT id, quantize(embedding, 'int8') FROM memories;
```"#,
    argument(
        name = "values",
        description = "A List, LargeList or FixedSizeList of Float32 (other numeric elements are cast to Float32), \
or Binary holding little-endian f32 bytes."
    ),
    argument(
        name = "scheme",
        description = "'q8_0', 'q4_0', 'q4_k', 'q2_k', 'nf4' or 'int8' (case-insensitive)."
    ),
    related_udf(name = "dequantize")
)]
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Quantize {
    signature: Signature,
}

impl Default for Quantize {
    fn default() -> Self {
        Self::new()
    }
}

impl Quantize {
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for Quantize {
    fn name(&self) -> &str {
        "quantize"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let name = self.name();
        let [values, scheme] = take_function_args(name, arg_types)?;
        let float32 = |f: &Arc<Field>| -> Result<Arc<Field>> {
            let t = f.data_type();
            if t.is_numeric() || t.is_null() {
                Ok(Arc::new(
                    f.as_ref().clone().with_data_type(DataType::Float32),
                ))
            } else {
                plan_err!("{name}: vector elements must be numbers, got {t}")
            }
        };
        let values = match values {
            DataType::List(f) => DataType::List(float32(f)?),
            DataType::LargeList(f) => DataType::LargeList(float32(f)?),
            DataType::FixedSizeList(f, n) => DataType::FixedSizeList(float32(f)?, *n),
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => values.clone(),
            DataType::FixedSizeBinary(_) => DataType::Binary,
            DataType::Null => DataType::new_list(DataType::Float32, true),
            other => {
                return plan_err!(
                    "{name}(values, scheme): values must be a list of floats or binary little-endian f32 bytes, \
                     got {other}"
                )
            }
        };
        Ok(vec![values, coerce_scheme(name, scheme)?])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Binary)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let name = self.name();
        let (rows, scalar) = shape(&args);
        let schemes = Schemes::new(name, &args.args[1], rows)?;
        if schemes.all_null() {
            return finish(new_null_array(&DataType::Binary, rows), scalar);
        }
        let values = args.args[0].to_array(rows)?;
        let mut bytes: Vec<u8> = Vec::new();
        let mut offsets: Vec<i32> = Vec::with_capacity(rows + 1);
        offsets.push(0);
        let mut valid = BooleanBufferBuilder::new(rows);
        for_each_vector(name, &values, |i, x| {
            match (x, schemes.get(name, i)?) {
                (Some(x), Some(scheme)) => {
                    let len = scheme
                        .quantized_len(x.len())
                        .map_err(|e| quant_err(name, e))?;
                    let start = bytes.len();
                    if bytes.capacity() - start < len {
                        // Reserve for the rest of the batch at this row's rate.
                        bytes.reserve(len * (rows - i).clamp(1, 1 << 16));
                    }
                    bytes.resize(start + len, 0);
                    scheme
                        .quantize(x, &mut bytes[start..])
                        .map_err(|e| quant_err(name, e))?;
                    valid.append(true);
                }
                _ => valid.append(false),
            }
            offsets.push(offset(name, bytes.len())?);
            Ok(())
        })?;
        let nulls = NullBuffer::from(valid.finish());
        let out = BinaryArray::try_new(
            OffsetBuffer::new(ScalarBuffer::from(offsets)),
            Buffer::from_vec(bytes),
            Some(nulls).filter(|n| n.null_count() > 0),
        )?;
        finish(Arc::new(out), scalar)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.doc()
    }
}

#[user_doc(
    doc_section(label = "Quantization Functions"),
    description = "Unpacks a blob made by `quantize` (or GGUF tensor bytes of type Q8_0, Q4_0, Q4_K or Q2_K) into a \
List of Float32, exactly as ggml's dequantize_row_* functions do for the ggml schemes. The blob's length must be a \
whole number of the scheme's blocks (34 bytes for q8_0, 18 for q4_0, 144 for q4_k, 84 for q2_k, 36 for nf4; at \
least the 4-byte scale for int8), otherwise it is an error naming the scheme and block size. NULL gives NULL.",
    syntax_example = "dequantize(blob, scheme)",
    sql_example = r#"```sql
> SELECT dequantize(quantize([1.0, 2.0, 3.0], 'int8'), 'int8');
[0.992126, 2.007874, 3.0]
```"#,
    argument(
        name = "blob",
        description = "Binary (or LargeBinary, BinaryView, FixedSizeBinary) in the scheme's layout."
    ),
    argument(
        name = "scheme",
        description = "'q8_0', 'q4_0', 'q4_k', 'q2_k', 'nf4' or 'int8' (case-insensitive)."
    ),
    related_udf(name = "quantize")
)]
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Dequantize {
    signature: Signature,
}

impl Default for Dequantize {
    fn default() -> Self {
        Self::new()
    }
}

impl Dequantize {
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

fn float32_list() -> DataType {
    DataType::new_list(DataType::Float32, true)
}

impl ScalarUDFImpl for Dequantize {
    fn name(&self) -> &str {
        "dequantize"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let name = self.name();
        let [blob, scheme] = take_function_args(name, arg_types)?;
        let blob = match blob {
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => blob.clone(),
            DataType::FixedSizeBinary(_) | DataType::Null => DataType::Binary,
            other => return plan_err!("{name}(blob, scheme): blob must be binary, got {other}"),
        };
        Ok(vec![blob, coerce_scheme(name, scheme)?])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(float32_list())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let name = self.name();
        let (rows, scalar) = shape(&args);
        let schemes = Schemes::new(name, &args.args[1], rows)?;
        if schemes.all_null() {
            return finish(new_null_array(&float32_list(), rows), scalar);
        }
        let blobs = args.args[0].to_array(rows)?;
        let mut values: Vec<f32> = Vec::new();
        let mut offsets: Vec<i32> = Vec::with_capacity(rows + 1);
        offsets.push(0);
        let mut valid = BooleanBufferBuilder::new(rows);
        for_each_blob(name, &blobs, |i, blob| {
            match (blob, schemes.get(name, i)?) {
                (Some(blob), Some(scheme)) => {
                    let len = scheme
                        .dequantized_len(blob.len())
                        .map_err(|e| quant_err(name, e))?;
                    let start = values.len();
                    if values.capacity() - start < len {
                        values.reserve(len * (rows - i).clamp(1, 1 << 16));
                    }
                    values.resize(start + len, 0.0);
                    scheme
                        .dequantize(blob, &mut values[start..])
                        .map_err(|e| quant_err(name, e))?;
                    valid.append(true);
                }
                _ => valid.append(false),
            }
            offsets.push(offset(name, values.len())?);
            Ok(())
        })?;
        let nulls = NullBuffer::from(valid.finish());
        let out = ListArray::try_new(
            Arc::new(Field::new_list_field(DataType::Float32, true)),
            OffsetBuffer::new(ScalarBuffer::from(offsets)),
            Arc::new(Float32Array::from(values)),
            Some(nulls).filter(|n| n.null_count() > 0),
        )?;
        finish(Arc::new(out), scalar)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.doc()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{FixedSizeListArray, LargeBinaryArray};
    use arrow::datatypes::Field;
    use datafusion::config::ConfigOptions;

    fn call(
        udf: &dyn ScalarUDFImpl,
        args: Vec<ColumnarValue>,
        rows: usize,
    ) -> Result<ColumnarValue> {
        let arg_fields = args
            .iter()
            .map(|a| Arc::new(Field::new("a", a.data_type(), true)))
            .collect();
        let types: Vec<DataType> = args.iter().map(|a| a.data_type()).collect();
        let ret = udf.return_type(&types)?;
        udf.invoke_with_args(ScalarFunctionArgs {
            args,
            arg_fields,
            number_rows: rows,
            return_field: Arc::new(Field::new("r", ret, true)),
            config_options: Arc::new(ConfigOptions::default()),
        })
    }

    fn utf8(s: &str) -> ColumnarValue {
        ColumnarValue::Scalar(ScalarValue::Utf8(Some(s.to_string())))
    }

    #[test]
    fn columns_round_trip_with_nulls() {
        let x: Vec<f32> = (0..96).map(|i| (i as f32 * 0.37).sin()).collect();
        let values = FixedSizeListArray::new(
            Arc::new(Field::new("item", DataType::Float32, true)),
            32,
            Arc::new(Float32Array::from(x.clone())),
            Some(vec![true, false, true].into()),
        );
        let q = call(
            &Quantize::new(),
            vec![ColumnarValue::Array(Arc::new(values)), utf8("q8_0")],
            3,
        )
        .unwrap()
        .to_array(3)
        .unwrap();
        let q = q.as_binary::<i32>();
        assert_eq!(q.value(0).len(), 34);
        assert!(q.is_null(1));
        let d = call(
            &Dequantize::new(),
            vec![ColumnarValue::Array(Arc::new(q.clone())), utf8("Q8_0")],
            3,
        )
        .unwrap()
        .to_array(3)
        .unwrap();
        let d = d.as_list::<i32>();
        assert!(d.is_null(1));
        let row2 = d.value(2);
        let row2 = row2.as_primitive::<Float32Type>();
        for (a, b) in x[64..].iter().zip(row2.values()) {
            assert!((a - b).abs() < 0.005);
        }
    }

    #[test]
    fn binary_f32_bytes_and_scheme_column() {
        let x = [1.0f32, -2.0, 0.5];
        let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        let blobs = LargeBinaryArray::from(vec![Some(&bytes[..]), Some(&bytes[..])]);
        let schemes = StringArray::from(vec![Some("int8"), None]);
        let q = call(
            &Quantize::new(),
            vec![
                ColumnarValue::Array(Arc::new(blobs)),
                ColumnarValue::Array(Arc::new(schemes)),
            ],
            2,
        )
        .unwrap()
        .to_array(2)
        .unwrap();
        let q = q.as_binary::<i32>();
        assert_eq!(q.value(0).len(), 7);
        assert!(q.is_null(1));
        let bad = LargeBinaryArray::from(vec![Some(&bytes[..5])]);
        let e = call(
            &Quantize::new(),
            vec![ColumnarValue::Array(Arc::new(bad)), utf8("int8")],
            1,
        )
        .unwrap_err();
        assert!(e.to_string().contains("not a multiple of 4"), "{e}");
    }

    #[test]
    fn errors() {
        let blob = ColumnarValue::Scalar(ScalarValue::Binary(Some(vec![0; 35])));
        let e = call(&Dequantize::new(), vec![blob, utf8("q8_0")], 1).unwrap_err();
        assert!(
            e.to_string().contains(
                "dequantize: a q8_0 blob is a whole number of 34-byte blocks (32 values each); got 35 bytes"
            ),
            "{e}"
        );
        let blob = ColumnarValue::Scalar(ScalarValue::Binary(Some(vec![0; 34])));
        let e = call(&Dequantize::new(), vec![blob, utf8("q5_0")], 1).unwrap_err();
        assert!(e.to_string().contains("unknown quantization scheme 'q5_0'"));
        assert!(Quantize::new()
            .coerce_types(&[DataType::Utf8, DataType::Utf8])
            .is_err());
        assert!(Quantize::new()
            .coerce_types(&[DataType::new_list(DataType::Float32, true), DataType::Int32])
            .is_err());
        assert_eq!(
            Quantize::new()
                .coerce_types(&[
                    DataType::new_large_list(DataType::Float64, true),
                    DataType::Utf8View
                ])
                .unwrap(),
            vec![
                DataType::new_large_list(DataType::Float32, true),
                DataType::Utf8
            ]
        );
    }
}
