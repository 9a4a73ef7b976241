//! Committing changes to a Lance dataset: every write statement becomes exactly one Lance transaction.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{new_null_array, Array, ArrayRef, RecordBatch};
use arrow::compute::{cast_with_options, CastOptions};
use arrow::datatypes::{DataType, SchemaRef};
use lance::dataset::transaction::{Operation, Transaction, UpdateMode};
use lance::dataset::{CommitBuilder, InsertBuilder, WriteMode, WriteParams};
use lance::table::format::Fragment;
use lance::Dataset;

use arrow::array::AsArray;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;
use marrow_udfs::text::{SharedModels, TextModels};

use crate::catalog::{META_ALLOW_NON_FINITE, META_EMBED};
use crate::error::{Error, ErrorKind, Result};

fn describe(dt: &DataType) -> String {
    match dt {
        DataType::FixedSizeList(f, n) => format!("{}[{n}]", describe(f.data_type())),
        DataType::List(f) | DataType::LargeList(f) => format!("{}[]", describe(f.data_type())),
        other => other.to_string(),
    }
}

fn coerce_column(name: &str, array: &ArrayRef, target: &DataType) -> Result<ArrayRef> {
    if array.data_type() == target {
        return Ok(array.clone());
    }
    if let (DataType::FixedSizeList(_, want), Some(got)) =
        (target, list_len_mismatch(array, target))
    {
        return Err(Error::invalid(format!(
            "column '{name}' expects vectors of length {want}, got a vector of length {got}"
        )));
    }
    let options = CastOptions {
        safe: false,
        ..Default::default()
    };
    cast_with_options(array, target, &options).map_err(|e| {
        Error::invalid(format!(
            "column '{name}' has type {} and cannot take a value of type {}: {e}",
            describe(target),
            describe(array.data_type())
        ))
    })
}

/// The first list length that differs from a fixed-size target, for a clear error message.
fn list_len_mismatch(array: &ArrayRef, target: &DataType) -> Option<i64> {
    let DataType::FixedSizeList(_, want) = target else {
        return None;
    };
    let want = *want as i64;
    match array.data_type() {
        DataType::List(_) => {
            let list = array.as_any().downcast_ref::<arrow::array::ListArray>()?;
            (0..list.len())
                .filter(|i| list.is_valid(*i))
                .map(|i| list.value_length(i) as i64)
                .find(|l| *l != want)
        }
        DataType::LargeList(_) => {
            let list = array
                .as_any()
                .downcast_ref::<arrow::array::LargeListArray>()?;
            (0..list.len())
                .filter(|i| list.is_valid(*i))
                .map(|i| list.value_length(i))
                .find(|l| *l != want)
        }
        DataType::FixedSizeList(_, got) if *got as i64 != want => Some(*got as i64),
        _ => None,
    }
}

/// Shape batches to a table's stored schema: match columns by name, cast types, fill absent nullable columns with
/// NULL, and reject NULLs in NOT NULL columns.
pub fn coerce_batches(batches: &[RecordBatch], schema: &SchemaRef) -> Result<Vec<RecordBatch>> {
    let allow_non_finite = schema
        .metadata()
        .get(META_ALLOW_NON_FINITE)
        .is_some_and(|v| v == "true");
    batches
        .iter()
        .filter(|b| b.num_rows() > 0)
        .map(|batch| {
            let mut columns = Vec::with_capacity(schema.fields().len());
            for field in schema.fields() {
                let column = match batch.column_by_name(field.name()) {
                    Some(c) => coerce_column(field.name(), c, field.data_type())?,
                    None => new_null_array(field.data_type(), batch.num_rows()),
                };
                check_vectors(field.name(), &column, allow_non_finite)?;
                if !field.is_nullable() && column.null_count() > 0 {
                    return Err(Error::constraint(format!(
                        "column '{}' is NOT NULL and got a NULL",
                        field.name()
                    )));
                }
                columns.push(column);
            }
            for c in batch.schema().fields() {
                if schema.field_with_name(c.name()).is_err() {
                    return Err(Error::not_found(format!(
                        "table has no column named '{}'",
                        c.name()
                    )));
                }
            }
            Ok(RecordBatch::try_new(schema.clone(), columns)?)
        })
        .collect()
}

/// Vectors (fixed-size lists of floats) are stored only whole and finite: a NULL, NaN or infinite element would
/// make every distance to the row NaN and silently drop it from (or float it to the top of) searches. A whole NULL
/// vector is allowed where the column is nullable. A table with `allow_non_finite` takes NaN and infinite elements
/// (never NULL ones: a vector has every element or is NULL as a whole).
fn check_vectors(name: &str, column: &ArrayRef, allow_non_finite: bool) -> Result<()> {
    use arrow::datatypes::{Float16Type, Float32Type, Float64Type};
    let DataType::FixedSizeList(_, n) = column.data_type() else {
        return Ok(());
    };
    let list = column.as_fixed_size_list();
    let values = list.values();
    let n = *n as usize;
    // Fast path: one pass over the elements of the valid rows (a tight loop the compiler vectorizes); only a batch
    // that fails it is walked element by element to name the first bad one.
    fn all_finite<T: arrow::datatypes::ArrowPrimitiveType>(
        values: &ArrayRef,
        ranges: &[(usize, usize)],
        finite: fn(T::Native) -> bool,
    ) -> bool {
        let v = values.as_primitive::<T>();
        v.null_count() == 0
            && ranges
                .iter()
                .all(|&(a, b)| v.values()[a..b].iter().fold(true, |ok, &x| ok & finite(x)))
    }
    let base = list.offset() * n;
    let ranges: Vec<(usize, usize)> = if list.null_count() == 0 {
        vec![(base, base + list.len() * n)]
    } else {
        (0..list.len())
            .filter(|&r| list.is_valid(r))
            .map(|r| (base + r * n, base + (r + 1) * n))
            .collect()
    };
    let fine = match values.data_type() {
        DataType::Float16 | DataType::Float32 | DataType::Float64 if allow_non_finite => {
            values.nulls().is_none_or(|nulls| {
                ranges
                    .iter()
                    .all(|&(a, b)| nulls.slice(a, b - a).null_count() == 0)
            })
        }
        DataType::Float32 => all_finite::<Float32Type>(values, &ranges, f32::is_finite),
        DataType::Float64 => all_finite::<Float64Type>(values, &ranges, f64::is_finite),
        DataType::Float16 => all_finite::<Float16Type>(values, &ranges, |x| x.is_finite()),
        _ => return Ok(()),
    };
    if fine {
        return Ok(());
    }
    let finite: Box<dyn Fn(usize) -> bool> = match values.data_type() {
        DataType::Float32 => {
            let v = values.as_primitive::<Float32Type>();
            Box::new(move |i| v.value(i).is_finite())
        }
        DataType::Float64 => {
            let v = values.as_primitive::<Float64Type>();
            Box::new(move |i| v.value(i).is_finite())
        }
        _ => {
            let v = values.as_primitive::<Float16Type>();
            Box::new(move |i| v.value(i).is_finite())
        }
    };
    for row in (0..list.len()).filter(|r| list.is_valid(*r)) {
        let start = (list.offset() + row) * n;
        for i in start..start + n {
            let problem = if values.is_null(i) {
                "a NULL element"
            } else if !allow_non_finite && !finite(i) {
                "a NaN or infinite element"
            } else {
                continue;
            };
            return Err(Error::invalid(format!(
                "column '{name}' got a vector with {problem} (row {}, element {}): vectors must be whole and \
                 finite; store NULL for a missing vector",
                row + 1,
                i - start
            )));
        }
    }
    Ok(())
}

/// Fill the vector columns a table computes from text (its `marrow.embed` setting) where a written row leaves them
/// NULL. Without a configured model the rows are written as they are.
pub fn embed_missing(
    metadata: &std::collections::HashMap<String, String>,
    models: &TextModels,
    batches: Vec<RecordBatch>,
) -> Result<Vec<RecordBatch>> {
    let Some(setting) = metadata.get(META_EMBED) else {
        return Ok(batches);
    };
    let pairs: BTreeMap<String, String> = serde_json::from_str(setting)
        .map_err(|e| Error::internal(format!("table setting {META_EMBED} is unreadable: {e}")))?;
    let mut out = Vec::with_capacity(batches.len());
    for batch in batches {
        let mut columns = batch.columns().to_vec();
        for (target, source) in &pairs {
            let (Ok(t), Ok(s)) = (
                batch.schema().index_of(target),
                batch.schema().index_of(source),
            ) else {
                continue;
            };
            let texts = arrow::compute::cast(batch.column(s), &DataType::Utf8)?;
            let texts = texts.as_string::<i32>();
            let current = &columns[t];
            let missing: Vec<usize> = (0..batch.num_rows())
                .filter(|&r| current.is_null(r) && texts.is_valid(r))
                .collect();
            if missing.is_empty() {
                continue;
            }
            if !models.has_model() {
                tracing::warn!(
                    "{} row(s) written without {target}: no embedding model is configured to compute it from {source}",
                    missing.len()
                );
                continue;
            }
            let DataType::FixedSizeList(item, dim) = current.data_type() else {
                return Err(Error::invalid(format!(
                    "{target} is not a vector column; cannot embed {source} into it"
                )));
            };
            let embedder = models.embedder().map_err(Error::invalid)?;
            if embedder.dim() != *dim as usize {
                return Err(Error::invalid(format!(
                    "{target} has {dim} dimensions but the embedding model produces {}",
                    embedder.dim()
                )));
            }
            let wanted: Vec<&str> = missing.iter().map(|&r| texts.value(r)).collect();
            let vectors = embedder.embed(&wanted).map_err(Error::invalid)?;
            let list = current.as_fixed_size_list();
            let old = arrow::compute::cast(list.values(), &DataType::Float32)?;
            let mut values: Vec<f32> = old
                .as_primitive::<arrow::datatypes::Float32Type>()
                .values()
                .to_vec();
            let mut valid: Vec<bool> = (0..batch.num_rows()).map(|r| list.is_valid(r)).collect();
            for (&r, v) in missing.iter().zip(vectors) {
                values[r * *dim as usize..(r + 1) * *dim as usize].copy_from_slice(&v);
                valid[r] = true;
            }
            let values =
                arrow::compute::cast(&arrow::array::Float32Array::from(values), item.data_type())?;
            columns[t] = Arc::new(arrow::array::FixedSizeListArray::try_new(
                item.clone(),
                *dim,
                values,
                Some(valid.into()),
            )?);
        }
        out.push(RecordBatch::try_new(batch.schema(), columns)?);
    }
    Ok(out)
}

/// Replace the rows at `deleted` (row addresses from the same snapshot) with `inserted`, in one commit:
/// a Delete, an Append or an Update transaction depending on which sides are present.
pub async fn commit(
    ds: &Arc<Dataset>,
    models: &TextModels,
    deleted: Vec<u64>,
    inserted: Vec<RecordBatch>,
) -> Result<Arc<Dataset>> {
    let inserted: Vec<RecordBatch> = inserted.into_iter().filter(|b| b.num_rows() > 0).collect();
    let inserted = embed_missing(&ds.schema().metadata, models, inserted)?;
    if deleted.is_empty() && inserted.is_empty() {
        return Ok(ds.clone());
    }
    let mut by_fragment: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    for addr in deleted {
        by_fragment.entry(addr >> 32).or_default().push(addr as u32);
    }
    let mut updated_fragments = vec![];
    let mut removed_fragment_ids = vec![];
    for (fragment_id, offsets) in by_fragment {
        let fragment = ds.get_fragment(fragment_id as usize).ok_or_else(|| {
            Error::internal(format!("fragment {fragment_id} vanished during the write"))
        })?;
        match fragment.extend_deletions(offsets).await? {
            Some(f) => updated_fragments.push(f.metadata().clone()),
            None => removed_fragment_ids.push(fragment_id),
        }
    }
    let new_fragments = if inserted.is_empty() {
        vec![]
    } else {
        stage(ds, inserted).await?
    };
    let operation = if new_fragments.is_empty() {
        Operation::Delete {
            updated_fragments,
            deleted_fragment_ids: removed_fragment_ids,
            predicate: "marrow: rows selected by the statement".to_string(),
        }
    } else if updated_fragments.is_empty() && removed_fragment_ids.is_empty() {
        Operation::Append {
            fragments: new_fragments,
        }
    } else {
        Operation::Update {
            removed_fragment_ids,
            updated_fragments,
            new_fragments,
            fields_modified: vec![],
            compacted_sstables: vec![],
            fields_for_preserving_frag_bitmap: vec![],
            update_mode: Some(UpdateMode::RewriteRows),
            inserted_rows_filter: None,
            updated_fragment_offsets: None,
        }
    };
    let transaction = Transaction::new(ds.version().version, operation, None);
    let new = CommitBuilder::new(ds.clone()).execute(transaction).await?;
    Ok(Arc::new(new))
}

/// What a [`shaped`] stream let through: the rows counted and the first error it raised itself. The storage layer
/// rewraps a failing input's error in its own; [`Passed::explain`] puts the original (its kind and message) back.
#[derive(Clone, Default)]
pub struct Passed {
    rows: Arc<AtomicU64>,
    error: Arc<Mutex<Option<Error>>>,
}

impl Passed {
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    /// The error to report for a write that failed with `e`: the input's own if it raised one.
    pub fn explain(&self, e: Error) -> Error {
        self.error
            .lock()
            .expect("error slot poisoned")
            .take()
            .unwrap_or(e)
    }

    fn keep(&self, e: Error) -> DataFusionError {
        let message = e.message().to_string();
        let mut slot = self.error.lock().expect("error slot poisoned");
        if slot.is_none() {
            *slot = Some(e);
        }
        DataFusionError::Execution(message)
    }
}

/// Rows on their way into a table, shaped to its stored `schema` batch by batch as they stream (the checks of
/// [`coerce_batches`], then `step`, e.g. embedding). Nothing is collected: the write holds one batch at a time.
pub fn shaped(
    input: SendableRecordBatchStream,
    schema: SchemaRef,
    step: impl Fn(RecordBatch) -> Result<RecordBatch> + Send + 'static,
) -> (SendableRecordBatchStream, Passed) {
    let passed = Passed::default();
    let watch = passed.clone();
    let target = schema.clone();
    let stream = input.filter_map(move |batch| {
        let out = match batch {
            Err(e) => Err(watch.keep(Error::from(e))),
            Ok(b) if b.num_rows() == 0 => return futures::future::ready(None),
            Ok(b) => coerce_batches(&[b], &target)
                .and_then(|mut v| step(v.pop().expect("a non-empty batch stays one batch")))
                .inspect(|b| {
                    watch.rows.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                })
                .map_err(|e| watch.keep(e)),
        };
        futures::future::ready(Some(out))
    });
    (
        Box::pin(RecordBatchStreamAdapter::new(schema, stream)),
        passed,
    )
}

/// Batches already in memory as a stream, for the writers that take one.
pub fn batch_stream(schema: SchemaRef, batches: Vec<RecordBatch>) -> SendableRecordBatchStream {
    Box::pin(RecordBatchStreamAdapter::new(
        schema,
        futures::stream::iter(batches.into_iter().map(Ok)),
    ))
}

/// Collect a stream that must be seen whole (a primary key is checked across all its rows), refusing it once it
/// holds more than `limit` bytes, before the rest is read.
pub async fn collect_within(
    mut input: SendableRecordBatchStream,
    limit: Option<usize>,
) -> Result<Vec<RecordBatch>> {
    let mut batches = vec![];
    let mut held = 0usize;
    while let Some(batch) = input.next().await {
        let batch = batch?;
        held += batch.get_array_memory_size();
        if let Some(limit) = limit.filter(|l| held > *l) {
            return Err(Error::new(
                ErrorKind::ResourcesExhausted,
                format!(
                    "the rows written take more than the server's memory limit ({limit} bytes) and were refused \
                     unread past that point; nothing was written. A table with a primary key checks all the rows \
                     of one write together: write them in several statements (each one commit)"
                ),
            ));
        }
        batches.push(batch);
    }
    Ok(batches)
}

/// The step of [`shaped`] that fills a table's embedded columns (its `marrow.embed` setting) as rows pass.
pub fn embed_step(
    metadata: std::collections::HashMap<String, String>,
    models: SharedModels,
) -> impl Fn(RecordBatch) -> Result<RecordBatch> + Send + 'static {
    move |b| {
        let mut v = embed_missing(&metadata, &models, vec![b])?;
        Ok(v.pop().expect("one batch in, one out"))
    }
}

/// Write a [`shaped`] stream of rows as new data files of `ds`, one batch at a time, without committing them:
/// the fragments a later `Append` commit makes visible. No rows, no fragments.
pub async fn stage_stream(
    ds: &Arc<Dataset>,
    input: SendableRecordBatchStream,
    passed: &Passed,
) -> Result<Vec<Fragment>> {
    let schema = input.schema();
    let mut input = input.peekable();
    if std::pin::Pin::new(&mut input).peek().await.is_none() {
        return Ok(vec![]);
    }
    let stream: SendableRecordBatchStream = Box::pin(RecordBatchStreamAdapter::new(schema, input));
    let staged = InsertBuilder::new(ds.clone())
        .with_params(&append_params(ds))
        .execute_uncommitted_stream(stream)
        .await
        .map_err(|e| passed.explain(e.into()))?;
    appended_fragments(staged.operation)
}

/// Write rows in memory as new data files of `ds` without committing them (see [`stage_stream`]).
pub async fn stage(ds: &Arc<Dataset>, rows: Vec<RecordBatch>) -> Result<Vec<Fragment>> {
    let rows: Vec<RecordBatch> = rows.into_iter().filter(|b| b.num_rows() > 0).collect();
    if rows.is_empty() {
        return Ok(vec![]);
    }
    let staged = InsertBuilder::new(ds.clone())
        .with_params(&append_params(ds))
        .execute_uncommitted(rows)
        .await?;
    appended_fragments(staged.operation)
}

fn append_params(ds: &Dataset) -> WriteParams {
    WriteParams {
        mode: WriteMode::Append,
        session: Some(ds.session()),
        auto_cleanup: None,
        ..Default::default()
    }
}

fn appended_fragments(operation: Operation) -> Result<Vec<Fragment>> {
    match operation {
        Operation::Append { fragments } | Operation::Overwrite { fragments, .. } => Ok(fragments),
        other => Err(Error::internal(format!(
            "unexpected staged write: {other:?}"
        ))),
    }
}

/// Make staged fragments visible in one `Append` commit on top of `ds` (Lance assigns their ids).
pub async fn commit_fragments(ds: &Arc<Dataset>, fragments: Vec<Fragment>) -> Result<Arc<Dataset>> {
    if fragments.is_empty() {
        return Ok(ds.clone());
    }
    let transaction = Transaction::new(ds.version().version, Operation::Append { fragments }, None);
    Ok(Arc::new(
        CommitBuilder::new(ds.clone()).execute(transaction).await?,
    ))
}
