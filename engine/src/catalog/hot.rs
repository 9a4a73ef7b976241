//! The hot tier: decoded columns of Lance fragments kept in memory, so that scans which decode heavy columns
//! (vectors for exact search and distance functions, binary chunks for quantization) read memory instead of files.
//!
//! An entry is one column of one fragment as a scan sees it (deleted rows removed), keyed by the fragment's data
//! files and deletion file. Lance never rewrites a file in place (a write makes new files, a delete a new deletion
//! file), so a key names the same rows forever: a write or delete changes the keys of what it touches and no entry
//! is ever stale; old versions and time travel find their own entries. Entries are evicted least recently used
//! first once the budget is exceeded. A scan is served from here when it reads a vector or binary column; its
//! `EXPLAIN` shows `HotScanExec` with how many fragment columns were already in memory.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::Session as CatalogSession;
use datafusion::common::hash_utils::{create_hashes, RandomState};
use datafusion::common::{DFSchema, Result as DFResult};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use lance::index::DatasetIndexExt;
use lance::table::format::Fragment;
use lance::Dataset;

use crate::error::Result;

/// One column of one fragment, as of its data files and deletion file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    table: String,
    fragment: u64,
    files: String,
    deletions: Option<(u64, u64)>,
    column: String,
}

impl Key {
    fn new(table: &str, fragment: &Fragment, column: &str) -> Self {
        Self {
            table: table.to_string(),
            fragment: fragment.id,
            files: fragment
                .files
                .iter()
                .map(|f| f.path.as_str())
                .collect::<Vec<_>>()
                .join(","),
            deletions: fragment
                .deletion_file
                .as_ref()
                .map(|d| (d.read_version, d.id)),
            column: column.to_string(),
        }
    }

    /// The key hashes of `column` in a fragment's data files. A deletion only removes keys, so the entry stays
    /// valid (a deleted key is a false positive, which the caller's lookup settles) and deletes don't rebuild it.
    fn key_hashes(table: &str, fragment: &Fragment, column: &str) -> Self {
        Self {
            fragment: 0,
            deletions: None,
            column: format!("\0key hashes\0{column}"),
            ..Self::new(table, fragment, column)
        }
    }
}

struct Entry {
    array: ArrayRef,
    bytes: usize,
    used: u64,
}

/// Decoded fragment columns within a memory budget.
pub struct HotTier {
    budget: usize,
    tick: AtomicU64,
    entries: Mutex<(HashMap<Key, Entry>, usize)>,
}

impl fmt::Debug for HotTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HotTier")
            .field("budget", &self.budget)
            .field("used", &self.used())
            .finish()
    }
}

/// Whether a column is heavy to decode (what the tier is for).
fn heavy(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::FixedSizeList(..)
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
    )
}

/// Bytes a column of `rows` rows takes decoded, estimated from its type.
fn estimate(dt: &DataType, rows: usize) -> usize {
    let width = match dt {
        DataType::FixedSizeList(item, n) => {
            item.data_type().primitive_width().unwrap_or(8) * (*n).max(0) as usize
        }
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => 4 << 10,
        other => other.primitive_width().unwrap_or(32),
    };
    width.saturating_mul(rows)
}

impl HotTier {
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            tick: AtomicU64::new(0),
            entries: Mutex::new((HashMap::new(), 0)),
        }
    }

    /// Bytes held.
    pub fn used(&self) -> usize {
        self.entries.lock().expect("hot tier").1
    }

    pub fn budget(&self) -> usize {
        self.budget
    }

    fn get(&self, key: &Key) -> Option<ArrayRef> {
        let mut guard = self.entries.lock().expect("hot tier");
        let e = guard.0.get_mut(key)?;
        e.used = self.tick.fetch_add(1, Ordering::Relaxed);
        Some(e.array.clone())
    }

    fn put(&self, key: Key, array: ArrayRef) {
        let bytes = array.get_array_memory_size();
        if bytes > self.budget {
            return;
        }
        let used = self.tick.fetch_add(1, Ordering::Relaxed);
        let mut guard = self.entries.lock().expect("hot tier");
        let (map, total) = &mut *guard;
        if let Some(old) = map.insert(key, Entry { array, bytes, used }) {
            *total -= old.bytes;
        }
        *total += bytes;
        while *total > self.budget {
            let Some(oldest) = map
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(e) = map.remove(&oldest) {
                *total -= e.bytes;
            }
        }
    }

    /// A plan answering `scan(projection, filters, limit)` of `ds` from memory, or `None` when this scan is not one
    /// for the tier: no heavy column read, or more data than half the budget.
    pub(crate) async fn scan(
        &self,
        ds: &Arc<Dataset>,
        schema: &SchemaRef,
        state: &dyn CatalogSession,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        // A LIMIT reaching the scan has no order above it: Lance reads only what it needs.
        if limit.is_some() {
            return Ok(None);
        }
        let projected: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..schema.fields().len()).collect(),
        };
        if !projected
            .iter()
            .any(|&i| heavy(schema.field(i).data_type()))
        {
            return Ok(None);
        }
        // The columns read: the projection's, then those only the filters use.
        let mut columns = projected.clone();
        for f in filters {
            for c in f.column_refs() {
                let i = schema.index_of(&c.name)?;
                if !columns.contains(&i) {
                    columns.push(i);
                }
            }
        }
        // A filter on an indexed column is an index lookup in Lance, cheaper than any scan.
        let filtered: Vec<i32> = columns
            .iter()
            .filter(|&&i| {
                filters.iter().any(|f| {
                    f.column_refs()
                        .iter()
                        .any(|c| c.name == *schema.field(i).name())
                })
            })
            .filter_map(|&i| ds.schema().field(schema.field(i).name()).map(|f| f.id))
            .collect();
        if !filtered.is_empty() {
            let indices = ds.load_indices().await?;
            if indices
                .iter()
                .any(|i| i.fields.iter().any(|f| filtered.contains(f)))
            {
                return Ok(None);
            }
        }
        let fragments = ds.fragments();
        let rows: usize = fragments.iter().map(|f| f.num_rows().unwrap_or(0)).sum();
        let size: usize = columns
            .iter()
            .map(|&i| estimate(schema.field(i).data_type(), rows))
            .sum();
        if size > self.budget / 2 {
            return Ok(None);
        }
        let read_schema = Arc::new(schema.project(&columns)?);
        let table = ds.uri().to_string();
        let mut batches = Vec::with_capacity(fragments.len());
        let (mut hits, mut loaded) = (0usize, 0usize);
        for fragment in fragments.iter() {
            let keys: Vec<Key> = columns
                .iter()
                .map(|&i| Key::new(&table, fragment, schema.field(i).name()))
                .collect();
            let mut arrays: Vec<Option<ArrayRef>> = keys.iter().map(|k| self.get(k)).collect();
            hits += arrays.iter().filter(|a| a.is_some()).count();
            let missing: Vec<usize> = (0..keys.len()).filter(|&j| arrays[j].is_none()).collect();
            if !missing.is_empty() {
                let names: Vec<&str> = missing
                    .iter()
                    .map(|&j| schema.field(columns[j]).name().as_str())
                    .collect();
                let batch = ds
                    .scan()
                    .with_fragments(vec![fragment.clone()])
                    .project(&names)?
                    .try_into_batch()
                    .await?;
                for (n, &j) in missing.iter().enumerate() {
                    let array = batch.column(n).clone();
                    self.put(keys[j].clone(), array.clone());
                    arrays[j] = Some(array);
                }
                loaded += missing.len();
            }
            let arrays: Vec<ArrayRef> = arrays.into_iter().map(|a| a.expect("filled")).collect();
            let rows = arrays.first().map_or(0, |a| a.len());
            if rows > 0 {
                batches.push(RecordBatch::try_new_with_options(
                    read_schema.clone(),
                    arrays,
                    &arrow::array::RecordBatchOptions::new().with_row_count(Some(rows)),
                )?);
            }
        }
        // Fragments spread over the session's partitions, so the scan runs on every core.
        let parts = state.config().target_partitions().max(1);
        let mut partitions: Vec<Vec<RecordBatch>> = vec![vec![]; parts.min(batches.len()).max(1)];
        let n = partitions.len();
        for (i, b) in batches.into_iter().enumerate() {
            partitions[i % n].push(b);
        }
        let mut plan: Arc<dyn ExecutionPlan> =
            MemorySourceConfig::try_new_exec(&partitions, read_schema.clone(), None)?;
        if let Some(predicate) = conjunction(filters.to_vec()) {
            let df_schema = DFSchema::try_from(read_schema.as_ref().clone())?;
            let predicate = state.create_physical_expr(predicate, &df_schema)?;
            plan = Arc::new(FilterExec::try_new(predicate, plan)?);
        }
        if columns.len() > projected.len() {
            let exprs: Vec<(Arc<dyn datafusion::physical_plan::PhysicalExpr>, String)> = (0
                ..projected.len())
                .map(|i| {
                    let name = read_schema.field(i).name().clone();
                    let col: Arc<dyn datafusion::physical_plan::PhysicalExpr> = Arc::new(
                        datafusion::physical_expr::expressions::Column::new(&name, i),
                    );
                    (col, name)
                })
                .collect();
            plan = Arc::new(ProjectionExec::try_new(exprs, plan)?);
        }
        Ok(Some(Arc::new(HotScanExec {
            input: plan,
            table: ds
                .uri()
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .trim_end_matches(".lance")
                .to_string(),
            fragments: fragments.len(),
            hits,
            loaded,
        })))
    }
}

/// Hashes of `keys` (cast to `dtype`, the key column's type), as key filters store them.
fn hash_keys(keys: &ArrayRef, dtype: &DataType) -> Result<Vec<u64>> {
    let keys = arrow::compute::cast(keys, dtype)?;
    let mut hashes = vec![0u64; keys.len()];
    create_hashes([&keys], &RandomState::default(), &mut hashes)?;
    Ok(hashes)
}

impl HotTier {
    /// Which of `keys` may be stored in `column` of `ds`: `false` means certainly not, `true` that a lookup must
    /// decide. Each fragment's key hashes are read once and kept (sorted) in the tier, so a write's primary-key check
    /// costs no scan when its keys are new, however many fragments the table has.
    pub(crate) async fn may_contain(
        &self,
        ds: &Arc<Dataset>,
        column: &str,
        dtype: &DataType,
        keys: &ArrayRef,
    ) -> Result<Vec<bool>> {
        let probes = hash_keys(keys, dtype)?;
        let mut hit = vec![false; probes.len()];
        let table = ds.uri().to_string();
        for fragment in ds.fragments().iter() {
            let key = Key::key_hashes(&table, fragment, column);
            let hashes = match self.get(&key) {
                Some(h) => h,
                None => {
                    let batch = ds
                        .scan()
                        .with_fragments(vec![fragment.clone()])
                        .project(&[column])?
                        .try_into_batch()
                        .await?;
                    let h = self.keep_key_hashes(key, batch.column(0), dtype)?;
                    Arc::new(h) as ArrayRef
                }
            };
            let sorted = hashes
                .as_any()
                .downcast_ref::<UInt64Array>()
                .expect("key hashes are UInt64")
                .values();
            for (i, p) in probes.iter().enumerate() {
                hit[i] = hit[i] || sorted.binary_search(p).is_ok();
            }
        }
        Ok(hit)
    }

    /// Record the keys written to a new fragment (its data files name it before and after the commit), so the next
    /// check need not read them back.
    pub(crate) fn note_keys(
        &self,
        table: &str,
        fragment: &Fragment,
        column: &str,
        dtype: &DataType,
        keys: &ArrayRef,
    ) -> Result<()> {
        self.keep_key_hashes(Key::key_hashes(table, fragment, column), keys, dtype)?;
        Ok(())
    }

    fn keep_key_hashes(&self, key: Key, keys: &ArrayRef, dtype: &DataType) -> Result<UInt64Array> {
        let mut hashes = hash_keys(keys, dtype)?;
        hashes.sort_unstable();
        hashes.dedup();
        let array = UInt64Array::from(hashes);
        self.put(key, Arc::new(array.clone()));
        Ok(array)
    }
}

/// A scan answered from the hot tier (its input reads memory); shown in EXPLAIN.
#[derive(Debug)]
struct HotScanExec {
    input: Arc<dyn ExecutionPlan>,
    table: String,
    fragments: usize,
    /// Fragment columns found in memory, and read from files (and kept) when the plan was made.
    hits: usize,
    loaded: usize,
}

impl DisplayAs for HotScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "HotScanExec: table={}, fragments={}, hot tier: {} fragment columns in memory, {} read from files",
            self.table, self.fragments, self.hits, self.loaded
        )
    }
}

impl ExecutionPlan for HotScanExec {
    fn name(&self) -> &str {
        "HotScanExec"
    }
    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }
    fn schema(&self) -> SchemaRef {
        self.input.schema()
    }
    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }
    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(HotScanExec {
            input: children.remove(0),
            table: self.table.clone(),
            fragments: self.fragments,
            hits: self.hits,
            loaded: self.loaded,
        }))
    }
    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DFResult<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }
}
