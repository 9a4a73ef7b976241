//! Model weights as rows: safetensors files in and out of the `tensors` table.
//!
//! A tensor is stored as one or more rows of at most [`CHUNK_BYTES`] of its raw little-endian bytes (a 47 MB embedding
//! matrix is 12 rows), so every row passes through default Flight clients and Lance pages:
//!
//! | column | type | |
//! |---|---|---|
//! | model | TEXT | the model's name (import `--model`) |
//! | name | TEXT | the tensor's name in the file |
//! | dtype | TEXT | safetensors dtype (F32, F16, BF16, I8, …) |
//! | shape | LIST<BIGINT> | |
//! | quantization | TEXT | NULL for raw bytes; a scheme such as q8_0 for GGUF block bytes |
//! | chunk | INT | 0, 1, … in byte order |
//! | n_chunks | INT | |
//! | data | BINARY | |
//!
//! The primary key is (model, name, chunk). `models` holds one row per model: its `__metadata__` as JSON, the number
//! of tensors and bytes, and when it was imported.
//!
//! The safetensors header is parsed and checked here (length inside the file, known dtypes, offsets in range, in
//! order and without overlap or holes, sizes matching shapes) before anything is written; an import is one commit
//! of `tensors` (then one row in `models`), so a bad file imports nothing.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, RecordBatch, StringArray};
use arrow::datatypes::DataType;
use serde_json::Value;

use crate::catalog::builtin::{MODELS_DDL, TENSORS_DDL};
use crate::error::{Error, ErrorKind, Result};
use crate::models::safetensors::{
    chunk_schema, dtype_size, model_files, read_chunks, read_header, ChunkBatches, TensorInfo,
    CHUNK_BYTES,
};
use crate::session::Session;
use crate::statements::ingest::IngestMode;

/// What an import wrote.
#[derive(Debug, Clone, Copy)]
pub struct ImportStats {
    pub tensors: u64,
    pub bytes: u64,
    pub rows: u64,
}

/// The one `count(*)` a query returns.
async fn count_of(session: &Session, sql: &str) -> Result<i64> {
    let (_, batches) = session.execute(sql).await?.collect().await?;
    Ok(batches
        .first()
        .and_then(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .map(|a| a.value(0))
        })
        .unwrap_or(0))
}

pub(crate) async fn model_exists(session: &Session, model: &str) -> Result<bool> {
    let sql = format!(
        "SELECT count(*) FROM models WHERE model = {}",
        crate::sql::literal(model)
    );
    Ok(count_of(session, &sql).await? > 0)
}

async fn require_model(session: &Session, model: &str) -> Result<()> {
    if model_exists(session, model).await? {
        Ok(())
    } else {
        Err(Error::not_found(format!("model '{model}' not found")))
    }
}

/// Import a safetensors file, or a directory of shards, as model `model`: one commit of `tensors`, then its row in
/// `models`. Nothing is written if any file is invalid or the model exists.
pub async fn import(
    session: &Session,
    path: &Path,
    model: &str,
    progress: Option<&AtomicU64>,
) -> Result<ImportStats> {
    import_as(session, path, model, "safetensors", progress).await
}

/// [`import`], recording `format` in the `models` row.
pub(crate) async fn import_as(
    session: &Session,
    path: &Path,
    model: &str,
    format: &str,
    progress: Option<&AtomicU64>,
) -> Result<ImportStats> {
    if model.is_empty() {
        return Err(Error::invalid("the model needs a name"));
    }
    // Files are read only inside the import root when one is set (SQL's procedures require one; the CLI, run by
    // the machine's user, reads the path it is given).
    let root = session.database().config().import_root.clone();
    let root = root.as_deref();
    let files = model_files(root, path)?;
    // Check every header before reading data.
    for f in &files {
        read_header(root, f)?;
    }
    session.execute(TENSORS_DDL).await?;
    session.execute(MODELS_DDL).await?;
    if model_exists(session, model).await? {
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            format!("model or adapter '{model}' already exists; CALL drop_model('{model}') first"),
        ));
    }
    let (batches, metadata, tensors, bytes) = read_chunks(root, &files, Some(model), progress)?;
    let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
    session
        .ingest("tensors", IngestMode::Append, chunk_schema(true), batches)
        .await?;
    let metadata = if metadata.is_empty() {
        "NULL".to_string()
    } else {
        crate::sql::literal(&serde_json::to_string(&metadata).unwrap_or_default())
    };
    let insert = format!(
        "INSERT INTO models VALUES ({}, {}, {metadata}, {tensors}, {bytes}, now())",
        crate::sql::literal(model),
        crate::sql::literal(format)
    );
    if let Err(e) = session.execute(&insert).await {
        // Keep the two tables consistent: take the tensors back out.
        let _ = session
            .execute(&format!(
                "DELETE FROM tensors WHERE model = {}",
                crate::sql::literal(model)
            ))
            .await;
        return Err(e);
    }
    Ok(ImportStats {
        tensors,
        bytes,
        rows,
    })
}

/// Delete a model's tensors and its `models` row.
pub async fn drop_model(session: &Session, model: &str) -> Result<u64> {
    require_model(session, model).await?;
    let m = crate::sql::literal(model);
    let (_, b) = session
        .execute(&format!("DELETE FROM tensors WHERE model = {m}"))
        .await?
        .collect()
        .await?;
    session
        .execute(&format!("DELETE FROM models WHERE model = {m}"))
        .await?;
    if session
        .database()
        .schema_provider()
        .lance_table_exists("adapters")
    {
        session
            .execute(&format!("DELETE FROM adapters WHERE id = {m}"))
            .await?;
    }
    Ok(crate::session::QueryOutput::count_in(&b))
}

/// One stored tensor, as the export writers and merges see it.
#[derive(Debug, Clone)]
pub(crate) struct TensorMeta {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<i64>,
    pub quantization: Option<String>,
    /// The bytes its chunks must add up to.
    pub bytes: u64,
}

/// Bytes and values per block of the GGML schemes (the ones a GGUF file holds), from the quantization kernels' table.
pub(crate) fn block_layout(scheme: &str) -> Option<(u64, u64)> {
    use marrow_udfs::quant::Scheme;
    match Scheme::parse(scheme).ok()? {
        s @ (Scheme::Q8_0 | Scheme::Q4_0 | Scheme::Q4K | Scheme::Q2K) => s
            .block()
            .map(|(values, bytes)| (bytes as u64, values as u64)),
        _ => None,
    }
}

/// The model's metadata and its tensors (sorted by name), each checked for complete chunks.
pub(crate) async fn stored_tensors(
    session: &Session,
    model: &str,
) -> Result<(Option<BTreeMap<String, String>>, Vec<TensorMeta>)> {
    require_model(session, model).await?;
    let m = crate::sql::literal(model);
    let (_, meta) = session
        .execute(&format!("SELECT metadata FROM models WHERE model = {m}"))
        .await?
        .collect()
        .await?;
    let metadata: Option<BTreeMap<String, String>> = meta
        .first()
        .and_then(|b| b.column(0).as_any().downcast_ref::<StringArray>().cloned())
        .filter(|a| !a.is_empty() && !a.is_null(0))
        .and_then(|a| serde_json::from_str(a.value(0)).ok());
    let (_, listing) = session
        .execute(&format!(
            "SELECT name, dtype, shape, quantization, count(*) AS chunks, max(n_chunks) AS n_chunks \
             FROM tensors WHERE model = {m} GROUP BY name, dtype, shape, quantization ORDER BY name"
        ))
        .await?
        .collect()
        .await?;
    let mut out = vec![];
    for b in &listing {
        let col = |name: &str| b.column(b.schema().index_of(name).unwrap_or(0)).clone();
        let names = col("name");
        let dtypes = col("dtype");
        let shapes = col("shape");
        let quant = col("quantization");
        let quant = arrow::compute::cast(&quant, &DataType::Utf8)?;
        let counts = arrow::compute::cast(&col("chunks"), &DataType::Int64)?;
        let n_chunks = arrow::compute::cast(&col("n_chunks"), &DataType::Int64)?;
        let (Some(names), Some(dtypes), Some(shapes), Some(quant), Some(counts), Some(n_chunks)) = (
            names.as_any().downcast_ref::<StringArray>(),
            dtypes.as_any().downcast_ref::<StringArray>(),
            shapes.as_any().downcast_ref::<arrow::array::ListArray>(),
            quant.as_any().downcast_ref::<StringArray>(),
            counts.as_any().downcast_ref::<arrow::array::Int64Array>(),
            n_chunks.as_any().downcast_ref::<arrow::array::Int64Array>(),
        ) else {
            return Err(Error::internal("tensors table has unexpected column types"));
        };
        for i in 0..b.num_rows() {
            let name = names.value(i).to_string();
            if counts.value(i) != n_chunks.value(i) {
                return Err(Error::invalid(format!(
                    "tensor {name} has {} of its {} chunks",
                    counts.value(i),
                    n_chunks.value(i)
                )));
            }
            let shape: Vec<i64> = shapes
                .value(i)
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .map(|a| a.values().to_vec())
                .unwrap_or_default();
            // The tensors table is SQL-writable: a shape is checked before anything sizes a buffer or a file by it.
            let invalid = || {
                Error::invalid(format!(
                    "tensor {name} has an invalid shape {shape:?} (a negative dimension, or more elements than a \
                     file can hold); re-import the model"
                ))
            };
            let elements = crate::models::safetensors::element_count(&shape).ok_or_else(invalid)?;
            let quantization = (!quant.is_null(i)).then(|| quant.value(i).to_string());
            let bytes = match &quantization {
                None => {
                    let size = dtype_size(dtypes.value(i)).ok_or_else(|| {
                        Error::invalid(format!(
                            "tensor {name} has dtype {}, not a safetensors dtype",
                            dtypes.value(i)
                        ))
                    })?;
                    elements.checked_mul(size as u64).ok_or_else(invalid)?
                }
                Some(q) => {
                    let (block_bytes, block) = block_layout(q).ok_or_else(|| {
                        Error::unsupported(format!(
                            "tensor {name} is quantized as {q}, which no weight file format Marrow writes holds"
                        ))
                    })?;
                    elements
                        .div_ceil(block)
                        .checked_mul(block_bytes)
                        .ok_or_else(invalid)?
                }
            };
            out.push(TensorMeta {
                name,
                dtype: dtypes.value(i).to_string(),
                shape,
                quantization,
                bytes,
            });
        }
    }
    Ok((metadata, out))
}

/// A model's tensors (sorted by name), each checked for complete chunks.
pub(crate) async fn tensor_listing(session: &Session, model: &str) -> Result<Vec<TensorMeta>> {
    Ok(stored_tensors(session, model).await?.1)
}

/// Chunk rows of new tensors for model `model`, built from whole tensors.
pub(crate) struct ChunkRows(ChunkBatches);

impl ChunkRows {
    pub fn new(model: &str) -> Self {
        Self(ChunkBatches::new(Some(model.to_string())))
    }

    pub fn push_tensor(&mut self, t: &TensorMeta, bytes: &[u8]) -> Result<()> {
        let info = TensorInfo {
            name: t.name.clone(),
            dtype: t.dtype.clone(),
            shape: t.shape.clone(),
            begin: 0,
            end: bytes.len() as u64,
        };
        let n_chunks = bytes.len().div_ceil(CHUNK_BYTES).max(1) as i32;
        for chunk in 0..n_chunks {
            let at = chunk as usize * CHUNK_BYTES;
            let part = &bytes[at..(at + CHUNK_BYTES).min(bytes.len())];
            self.0.push(&info, chunk, n_chunks, part)?;
        }
        Ok(())
    }

    pub fn finish(mut self) -> Result<Vec<RecordBatch>> {
        self.0.flush()?;
        Ok(self.0.done)
    }
}

/// Append chunk rows (with their model column) to `tensors` as one commit.
pub(crate) async fn append_chunks(session: &Session, batches: Vec<RecordBatch>) -> Result<()> {
    session
        .ingest("tensors", IngestMode::Append, chunk_schema(true), batches)
        .await?;
    Ok(())
}

/// Write `header`, then each tensor's chunks at its offset (zero padding between), to `out` through a temporary
/// name. Returns the bytes of tensor data written.
pub(crate) async fn write_tensor_file(
    session: &Session,
    model: &str,
    out: &Path,
    header: &[u8],
    tensors: &[(&TensorMeta, u64)],
    progress: Option<&AtomicU64>,
) -> Result<u64> {
    let m = crate::sql::literal(model);
    let parent = out.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let temp = parent.join(format!(
        ".{}.marrow-tmp-{}",
        out.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let result = async {
        let mut f = std::io::BufWriter::with_capacity(1 << 20, File::create(&temp)?);
        f.write_all(header)?;
        let mut at = header.len() as u64;
        let mut total = 0u64;
        for (t, offset) in tensors {
            if *offset > at {
                f.write_all(&vec![0u8; (*offset - at) as usize])?;
                at = *offset;
            }
            let mut written = 0u64;
            let mut stream = session
                .execute(&format!(
                    "SELECT data FROM tensors WHERE model = {m} AND name = {} ORDER BY chunk",
                    crate::sql::literal(&t.name)
                ))
                .await?
                .into_stream();
            use futures::StreamExt;
            while let Some(b) = stream.next().await {
                let data = arrow::compute::cast(b?.column(0), &DataType::Binary)?;
                let data = data
                    .as_any()
                    .downcast_ref::<arrow::array::BinaryArray>()
                    .ok_or_else(|| Error::internal("data is not binary"))?;
                for v in data.iter().flatten() {
                    written += v.len() as u64;
                    if written > t.bytes {
                        break;
                    }
                    f.write_all(v)?;
                    if let Some(p) = progress {
                        p.fetch_add(v.len() as u64, Ordering::Relaxed);
                    }
                }
            }
            if written != t.bytes {
                return Err(Error::invalid(format!(
                    "tensor {}: its chunks hold {written} bytes, its shape and type need {}",
                    t.name, t.bytes
                )));
            }
            at += written;
            total += written;
        }
        f.into_inner()
            .map_err(|e| Error::from(e.into_error()))?
            .sync_all()?;
        Ok::<_, Error>(total)
    }
    .await;
    match result {
        Ok(total) => {
            std::fs::rename(&temp, out)?;
            Ok(total)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            Err(e)
        }
    }
}

/// Write model `model` back as one safetensors file at `out` (written under a temporary name, then renamed).
/// Tensors are read one at a time, so memory holds at most the largest tensor.
pub async fn export(
    session: &Session,
    model: &str,
    out: &Path,
    progress: Option<&AtomicU64>,
) -> Result<u64> {
    let (metadata, tensors) = stored_tensors(session, model).await?;
    let mut header = serde_json::Map::new();
    if let Some(md) = metadata {
        header.insert(
            "__metadata__".into(),
            serde_json::to_value(md).unwrap_or_default(),
        );
    }
    let mut plan = vec![];
    let mut offset = 0u64;
    for t in &tensors {
        if let Some(q) = &t.quantization {
            return Err(Error::unsupported(format!(
                "tensor {} is quantized ({q}); safetensors holds raw dtypes only: CALL export_gguf",
                t.name
            )));
        }
        header.insert(
            t.name.clone(),
            serde_json::json!({
                "dtype": t.dtype,
                "shape": t.shape,
                "data_offsets": [offset, offset + t.bytes],
            }),
        );
        plan.push((t, offset));
        offset += t.bytes;
    }
    let mut text = serde_json::to_vec(&Value::Object(header))
        .map_err(|e| Error::internal(format!("header: {e}")))?;
    // The data section starts 8-aligned, as the reference writer does.
    while (text.len() + 8) % 8 != 0 {
        text.push(b' ');
    }
    let mut head = (text.len() as u64).to_le_bytes().to_vec();
    head.extend_from_slice(&text);
    // safetensors offsets are relative to the data section: shift them past the header for the writer.
    let base = head.len() as u64;
    let plan: Vec<(&TensorMeta, u64)> = plan.into_iter().map(|(t, o)| (t, o + base)).collect();
    write_tensor_file(session, model, out, &head, &plan, progress).await
}

/// Quantize model `source` into a new model `target`: every F32 tensor whose rows are whole blocks of `scheme`
/// (q8_0, q4_0, q4_k, q2_k) is stored as GGML block bytes (`quantize(data, scheme)`, chunk by chunk: chunks are
/// whole blocks), every other tensor is copied as it is. One commit of `tensors`, then the `models` row.
/// Returns (tensors quantized, tensors copied).
pub async fn quantize_model(
    session: &Session,
    source: &str,
    target: &str,
    scheme: &str,
) -> Result<(u64, u64)> {
    let scheme = scheme.to_ascii_lowercase();
    let (_, block) = block_layout(&scheme).ok_or_else(|| {
        Error::invalid(format!(
            "a model is quantized to a GGML type (q8_0, q4_0, q4_k, q2_k), not '{scheme}'; \
             quantize(values, scheme) works on any vector"
        ))
    })?;
    require_model(session, source).await?;
    if target.is_empty() || model_exists(session, target).await? {
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            format!("model '{target}' already exists (or has no name)"),
        ));
    }
    let (s, t, q) = (
        crate::sql::literal(source),
        crate::sql::literal(target),
        crate::sql::literal(&scheme),
    );
    let fits = format!(
        "dtype = 'F32' AND quantization IS NULL AND array_element(shape, CAST(array_length(shape) AS BIGINT)) % {block} = 0"
    );
    let quantized = count_of(
        session,
        &format!("SELECT count(DISTINCT name) FROM tensors WHERE model = {s} AND {fits}"),
    )
    .await? as u64;
    let copied = count_of(
        session,
        &format!("SELECT count(DISTINCT name) FROM tensors WHERE model = {s} AND NOT ({fits})"),
    )
    .await? as u64;
    // Listed (and so checked) before anything is written: a bad row fails the call without leaving a half model.
    let (_, stored) = stored_tensors(session, source).await?;
    session
        .execute(&format!(
            "INSERT INTO tensors \
             SELECT {t}, name, dtype, shape, {q}, chunk, n_chunks, quantize(data, {q}) FROM tensors \
             WHERE model = {s} AND {fits} \
             UNION ALL \
             SELECT {t}, name, dtype, shape, quantization, chunk, n_chunks, data FROM tensors \
             WHERE model = {s} AND NOT ({fits})"
        ))
        .await?;
    let (block_bytes, _) = block_layout(&scheme).unwrap_or((1, 1));
    let bytes: u64 = stored
        .iter()
        .map(|x| {
            let inner = x.shape.last().copied().unwrap_or(1) as u64;
            if x.dtype == "F32" && x.quantization.is_none() && inner.is_multiple_of(block) {
                x.bytes / 4 / block * block_bytes
            } else {
                x.bytes
            }
        })
        .fold(0u64, u64::saturating_add);
    let insert = format!(
        "INSERT INTO models SELECT {t}, {}, metadata, tensors, {bytes}, now() FROM models WHERE model = {s}",
        crate::sql::literal(&format!("quantized:{scheme}"))
    );
    if let Err(e) = session.execute(&insert).await {
        let _ = session
            .execute(&format!("DELETE FROM tensors WHERE model = {t}"))
            .await;
        return Err(e);
    }
    Ok((quantized, copied))
}
