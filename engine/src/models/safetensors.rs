//! The safetensors format: the header parsed and checked (length inside the file, known dtypes, offsets in range,
//! in order and without overlap or holes, sizes matching shapes) before anything is written, and a model's files
//! read as `tensors` chunk rows.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, Int32Array, Int64Builder, ListBuilder, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde_json::Value;

use crate::error::{Error, Result};

/// The largest `data` value of one row.
pub const CHUNK_BYTES: usize = 4 << 20;
/// Headers larger than this are refused (the format's own reference implementation uses the same bound).
const MAX_HEADER: u64 = 100 << 20;

/// Bytes per element of the safetensors dtypes.
pub(crate) fn dtype_size(dtype: &str) -> Option<usize> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" => 1,
        "I16" | "U16" | "F16" | "BF16" => 2,
        "I32" | "U32" | "F32" => 4,
        "I64" | "U64" | "F64" => 8,
        _ => return None,
    })
}

/// One tensor of a safetensors file, as its header describes it.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<i64>,
    /// Byte range inside the data section.
    pub begin: u64,
    pub end: u64,
}

/// A checked safetensors header.
#[derive(Debug)]
pub struct Header {
    pub tensors: Vec<TensorInfo>,
    pub metadata: BTreeMap<String, String>,
    /// Where the data section starts in the file.
    pub data_start: u64,
}

fn corrupt(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::invalid(format!(
        "{}: not a valid safetensors file: {msg}",
        path.display()
    ))
}

/// Read and check a safetensors header; tensors come back in data order.
pub fn read_header(root: Option<&Path>, path: &Path) -> Result<Header> {
    let mut f = crate::fence::open_inside(root, path)?;
    let file_len = f.metadata()?.len();
    parse_header(&mut f, file_len, path)
}

/// Check the safetensors header at the start of `f`, a file of `file_len` bytes named `path` in messages.
pub fn parse_header(f: &mut impl Read, file_len: u64, path: &Path) -> Result<Header> {
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|_| corrupt(path, "shorter than its 8-byte header length"))?;
    let n = u64::from_le_bytes(len);
    if n > MAX_HEADER || 8 + n > file_len {
        return Err(corrupt(
            path,
            format!("header length {n} runs past the end of the {file_len}-byte file"),
        ));
    }
    let mut text = vec![0u8; n as usize];
    f.read_exact(&mut text)?;
    let json: Value = serde_json::from_slice(&text)
        .map_err(|e| corrupt(path, format!("header is not JSON: {e}")))?;
    let Value::Object(entries) = json else {
        return Err(corrupt(path, "header is not a JSON object"));
    };
    let data_len = file_len - 8 - n;
    let mut metadata = BTreeMap::new();
    let mut tensors = vec![];
    for (name, v) in entries {
        if name == "__metadata__" {
            let Value::Object(m) = v else {
                return Err(corrupt(path, "__metadata__ is not an object of strings"));
            };
            for (k, v) in m {
                let Value::String(s) = v else {
                    return Err(corrupt(path, format!("__metadata__.{k} is not a string")));
                };
                metadata.insert(k, s);
            }
            continue;
        }
        let dtype = v
            .get("dtype")
            .and_then(Value::as_str)
            .ok_or_else(|| corrupt(path, format!("tensor {name} has no dtype")))?
            .to_string();
        let size = dtype_size(&dtype)
            .ok_or_else(|| corrupt(path, format!("tensor {name} has unknown dtype {dtype}")))?;
        let shape: Vec<i64> = v
            .get("shape")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(|d| d.as_i64().filter(|d| *d >= 0)).collect())
            .ok_or_else(|| corrupt(path, format!("tensor {name} has no valid shape")))?;
        let offsets: Vec<u64> = v
            .get("data_offsets")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(Value::as_u64).collect())
            .filter(|o: &Vec<u64>| o.len() == 2)
            .ok_or_else(|| corrupt(path, format!("tensor {name} has no valid data_offsets")))?;
        let (begin, end) = (offsets[0], offsets[1]);
        if begin > end || end > data_len {
            return Err(corrupt(
                path,
                format!(
                    "tensor {name}: offsets [{begin}, {end}] are outside the {data_len}-byte data section"
                ),
            ));
        }
        let elements = element_count(&shape).ok_or_else(|| {
            corrupt(
                path,
                format!("tensor {name}: shape {shape:?} has a negative dimension or overflows"),
            )
        })?;
        if elements.checked_mul(size as u64) != Some(end - begin) {
            return Err(corrupt(
                path,
                format!(
                    "tensor {name}: shape {shape:?} of {dtype} needs {} bytes, its offsets hold {}",
                    elements.saturating_mul(size as u64),
                    end - begin
                ),
            ));
        }
        tensors.push(TensorInfo {
            name,
            dtype,
            shape,
            begin,
            end,
        });
    }
    tensors.sort_by_key(|t| (t.begin, t.end));
    let mut at = 0;
    for t in &tensors {
        if t.begin < at {
            return Err(corrupt(
                path,
                format!("tensor {} overlaps the tensor before it", t.name),
            ));
        }
        if t.begin > at {
            return Err(corrupt(
                path,
                format!("a gap of {} bytes before tensor {}", t.begin - at, t.name),
            ));
        }
        at = t.end;
    }
    if at != data_len {
        return Err(corrupt(
            path,
            format!("{} bytes after the last tensor", data_len - at),
        ));
    }
    Ok(Header {
        tensors,
        metadata,
        data_start: 8 + n,
    })
}

/// The files of a model: one `.safetensors` file, or every `.safetensors` shard in a directory. With a `root`, a
/// shard that leads outside it (a symlink) is refused here, and again when it is opened.
pub fn model_files(root: Option<&Path>, path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        if let Some(root) = root {
            if let Some(out) = files.iter().find(|f| !crate::fence::is_inside(root, f)) {
                return Err(Error::denied(format!(
                    "{} leads outside the allowed root {}: symlinks may not leave it",
                    out.display(),
                    root.display()
                )));
            }
        }
        files.sort();
        if files.is_empty() {
            return Err(Error::not_found(format!(
                "{} holds no .safetensors files",
                path.display()
            )));
        }
        Ok(files)
    } else {
        Ok(vec![path.to_path_buf()])
    }
}

/// The schema of `tensors` rows, without the model column (read_safetensors' result).
pub fn chunk_schema(with_model: bool) -> SchemaRef {
    let mut fields = vec![];
    if with_model {
        fields.push(Field::new("model", DataType::Utf8, false));
    }
    fields.extend([
        Field::new("name", DataType::Utf8, false),
        Field::new("dtype", DataType::Utf8, false),
        Field::new(
            "shape",
            DataType::List(Arc::new(Field::new("item", DataType::Int64, true))),
            false,
        ),
        Field::new("quantization", DataType::Utf8, true),
        Field::new("chunk", DataType::Int32, false),
        Field::new("n_chunks", DataType::Int32, false),
        Field::new("data", DataType::Binary, false),
    ]);
    Arc::new(Schema::new(fields))
}

/// Collects chunk rows into batches of about 64 MiB.
pub(crate) struct ChunkBatches {
    model: Option<String>,
    schema: SchemaRef,
    names: Vec<String>,
    dtypes: Vec<String>,
    shapes: ListBuilder<Int64Builder>,
    chunks: Vec<i32>,
    n_chunks: Vec<i32>,
    data: BinaryBuilder,
    bytes: usize,
    pub(crate) done: Vec<RecordBatch>,
}

impl ChunkBatches {
    pub(crate) fn new(model: Option<String>) -> Self {
        Self {
            schema: chunk_schema(model.is_some()),
            model,
            names: vec![],
            dtypes: vec![],
            shapes: ListBuilder::new(Int64Builder::new()),
            chunks: vec![],
            n_chunks: vec![],
            data: BinaryBuilder::new(),
            bytes: 0,
            done: vec![],
        }
    }

    pub(crate) fn push(
        &mut self,
        t: &TensorInfo,
        chunk: i32,
        n_chunks: i32,
        bytes: &[u8],
    ) -> Result<()> {
        self.names.push(t.name.clone());
        self.dtypes.push(t.dtype.clone());
        self.shapes.values().append_slice(&t.shape);
        self.shapes.append(true);
        self.chunks.push(chunk);
        self.n_chunks.push(n_chunks);
        self.data.append_value(bytes);
        self.bytes += bytes.len();
        if self.bytes >= 64 << 20 {
            self.flush()?;
        }
        Ok(())
    }

    pub(crate) fn flush(&mut self) -> Result<()> {
        let n = self.names.len();
        if n == 0 {
            return Ok(());
        }
        let mut columns: Vec<ArrayRef> = vec![];
        if let Some(m) = &self.model {
            columns.push(Arc::new(StringArray::from(vec![m.as_str(); n])));
        }
        columns.push(Arc::new(StringArray::from(std::mem::take(&mut self.names))));
        columns.push(Arc::new(StringArray::from(std::mem::take(
            &mut self.dtypes,
        ))));
        columns.push(Arc::new(self.shapes.finish()));
        columns.push(Arc::new(StringArray::from(vec![None::<&str>; n])));
        columns.push(Arc::new(Int32Array::from(std::mem::take(&mut self.chunks))));
        columns.push(Arc::new(Int32Array::from(std::mem::take(
            &mut self.n_chunks,
        ))));
        columns.push(Arc::new(self.data.finish()));
        self.done
            .push(RecordBatch::try_new(self.schema.clone(), columns)?);
        self.bytes = 0;
        Ok(())
    }
}

/// A model's files as chunk rows: the batches, the merged `__metadata__`, the tensor count and the byte count.
pub type Chunks = (Vec<RecordBatch>, BTreeMap<String, String>, u64, u64);

/// Read a model's files into chunk rows (with a `model` column when `model` is given). `progress` counts bytes.
pub fn read_chunks(
    root: Option<&Path>,
    files: &[PathBuf],
    model: Option<&str>,
    progress: Option<&AtomicU64>,
) -> Result<Chunks> {
    let mut out = ChunkBatches::new(model.map(str::to_string));
    let mut metadata = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    let (mut tensors, mut bytes) = (0u64, 0u64);
    let mut buf = vec![0u8; CHUNK_BYTES];
    for path in files {
        let header = read_header(root, path)?;
        metadata.extend(header.metadata);
        let mut f = crate::fence::open_inside(root, path)?;
        for t in &header.tensors {
            if !seen.insert(t.name.clone()) {
                return Err(Error::invalid(format!(
                    "tensor {} appears in more than one shard",
                    t.name
                )));
            }
            let len = (t.end - t.begin) as usize;
            let n_chunks = len.div_ceil(CHUNK_BYTES).max(1) as i32;
            f.seek(SeekFrom::Start(header.data_start + t.begin))?;
            for chunk in 0..n_chunks {
                let part = (len - chunk as usize * CHUNK_BYTES).min(CHUNK_BYTES);
                f.read_exact(&mut buf[..part])
                    .map_err(|e| corrupt(path, format!("reading tensor {}: {e}", t.name)))?;
                out.push(t, chunk, n_chunks, &buf[..part])?;
                if let Some(p) = progress {
                    p.fetch_add(part as u64, Ordering::Relaxed);
                }
            }
            tensors += 1;
            bytes += len as u64;
        }
    }
    out.flush()?;
    Ok((out.done, metadata, tensors, bytes))
}

/// The number of elements of a tensor of `shape`: `None` for a negative dimension or a count past u64.
pub fn element_count(shape: &[i64]) -> Option<u64> {
    shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(u64::try_from(d).ok()?))
}
