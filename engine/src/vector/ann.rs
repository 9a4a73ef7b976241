//! The direct ANN path: one IVF index segment that covers every fragment, a fixed number of probes and no filter —
//! the steady state of a memory table after `OPTIMIZE TABLE` — is searched here without Lance's scanner. The plan
//! holds the opened index (from the shared Lance session's cache); execution ranks the partitions, searches the
//! nearest `nprobes` of them on up to `query_parallelism` threads (deleted rows masked by Lance's own prefilter),
//! keeps the best `k × refine_factor` candidates by index distance (ties by row id, as Lance does) and takes their
//! rows. The sort above recomputes exact distances, so the result is the one Lance's scanner gives, minus its
//! per-query planning. Every other shape (filters, unindexed or overlaid fragments, several segments, adaptive
//! probing) goes through the scanner.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float32Type, SchemaRef, UInt64Type};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet, Time,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::{stream, StreamExt, TryStreamExt};
use lance::dataset::fragment::{FragReadConfig, FragmentReader};
use lance::dataset::ProjectionRequest;
use lance::index::prefilter::DatasetPreFilter;
use lance::index::{DatasetIndexExt, DatasetIndexInternalExt};
use lance::table::format::IndexMetadata;
use lance::Dataset;
use lance_index::metrics::NoOpMetricsCollector;
use lance_index::prefilter::PreFilter;
use lance_index::vector::{ApproxMode, Query, VectorIndex};
use lance_linalg::distance::DistanceType;

use crate::vector::{lance_err, query_vector, MarrowOptions};

/// Why a query cannot take the direct path (shown in EXPLAIN), or the plan that takes it.
pub(crate) enum Direct {
    Plan(Arc<dyn ExecutionPlan>),
    Scanner(String),
}

/// What one direct search needs, fixed at planning time.
pub(crate) struct DirectSearch<'a> {
    pub ds: &'a Arc<Dataset>,
    pub index_name: &'a str,
    pub column: &'a str,
    pub key: arrow::array::ArrayRef,
    /// The query as the plan gave it (before `key`'s cast to the column type), with the table and column type
    /// `key` was checked against: a cached plan re-derives `key` from a new value the same way.
    pub constant: ScalarValue,
    pub table: String,
    pub column_type: DataType,
    pub k: usize,
    pub metric: DistanceType,
    pub opts: &'a MarrowOptions,
    pub columns: Vec<String>,
    pub schema: SchemaRef,
    pub has_filter: bool,
}

impl DirectSearch<'_> {
    /// The direct plan, or why the scanner must answer.
    pub(crate) async fn plan(self) -> lance::Result<Direct> {
        let scanner = |why: &str| Ok(Direct::Scanner(why.to_string()));
        if !self.opts.direct_search {
            return scanner("SET marrow.direct_search = false");
        }
        if self.opts.nprobes == 0 {
            return scanner("nprobes is auto (Lance's adaptive probing)");
        }
        if self.has_filter {
            return scanner("the WHERE clause runs as Lance's prefilter");
        }
        if self.columns.is_empty() {
            return scanner("no column is read");
        }
        let all = self.ds.load_indices().await?;
        if all.iter().any(|i| i.name.starts_with("__lance_frag_reuse")) {
            return scanner("compaction left row ids to remap");
        }
        let field_id = self.ds.schema().field_id(self.column)?;
        let segments: Vec<&IndexMetadata> = all
            .iter()
            .filter(|i| i.name == self.index_name && i.fields.first() == Some(&field_id))
            .collect();
        let [segment] = segments.as_slice() else {
            return scanner(&format!(
                "index {} has {} segments (OPTIMIZE TABLE merges them)",
                self.index_name,
                segments.len()
            ));
        };
        let Some(covered) = segment.fragment_bitmap.as_ref() else {
            return scanner("the index does not record which fragments it covers");
        };
        let fragments = self.ds.fragments();
        let unindexed = fragments
            .iter()
            .filter(|f| !covered.contains(f.id as u32))
            .count();
        if unindexed > 0 {
            return scanner(&format!(
                "{unindexed} fragment(s) are not indexed yet (OPTIMIZE TABLE adds them)"
            ));
        }
        if fragments.iter().any(|f| !f.overlays.is_empty()) {
            return scanner("fragments carry data overlays");
        }
        let index = self
            .ds
            .open_vector_index(self.column, &segment.uuid, &NoOpMetricsCollector)
            .await?;
        if !index.supports_prepared_partition_search() {
            return scanner("the index type searches only through the scanner");
        }
        if index.metric_type() != self.metric {
            return scanner("the index metric differs");
        }
        let key = search_key(self.key, self.metric)?;
        let nprobes = self.opts.nprobes;
        let query = Query {
            column: self.column.to_string(),
            key,
            k: self.k,
            lower_bound: None,
            upper_bound: None,
            minimum_nprobes: nprobes,
            maximum_nprobes: Some(nprobes),
            search_effort: 0.5,
            ef: (self.opts.ef > 0).then_some(self.opts.ef),
            refine_factor: (self.opts.refine_factor > 0).then_some(self.opts.refine_factor as u32),
            metric_type: Some(self.metric),
            use_index: true,
            query_parallelism: 0,
            dist_q_c: 0.0,
            approx_mode: ApproxMode::default(),
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let parallelism = match self.opts.query_parallelism {
            n if n > 0 => n as usize,
            _ => cores,
        }
        .clamp(1, nprobes);
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(self.schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Ok(Direct::Plan(Arc::new(DirectAnnExec {
            constant: self.constant,
            table: self.table,
            column_type: self.column_type,
            search: Arc::new(Search {
                ds: self.ds.clone(),
                segment: (*segment).clone(),
                index,
                query,
                columns: self.columns,
                schema: self.schema,
                parallelism,
                readers: Arc::default(),
                // Deleted rows (and rows of fragments removed since the build) must not come back from the index.
                // The mask belongs to the dataset version, so every search of this plan shares it.
                prefilter: Arc::new(DatasetPreFilter::new(
                    self.ds.clone(),
                    std::slice::from_ref(segment),
                    None,
                )),
            }),
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        })))
    }
}

/// The key the index is searched with: unit length for cosine, because the index stores unit vectors and ranks
/// partitions by L2, as Lance's scanner does.
fn search_key(key: ArrayRef, metric: DistanceType) -> lance::Result<ArrayRef> {
    if metric == DistanceType::Cosine {
        return Ok(lance_linalg::kernels::normalize_arrow(key.as_ref())?.0);
    }
    Ok(key)
}

/// Searches one index segment directly (see the module docs).
pub(crate) struct DirectAnnExec {
    search: Arc<Search>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
    constant: ScalarValue,
    table: String,
    column_type: DataType,
}

impl DirectAnnExec {
    /// The query value this search was planned for.
    pub(crate) fn constant(&self) -> &ScalarValue {
        &self.constant
    }

    /// The dataset version the search reads.
    pub(crate) fn dataset(&self) -> &Arc<Dataset> {
        &self.search.ds
    }

    /// The same search for another query value, with fresh metrics: how a cached plan runs with new parameters.
    /// The value is checked as planning checks it (dimension, NULL elements, NaN); `None` when it gives no search
    /// (a NULL vector), so the caller plans the statement afresh.
    pub(crate) fn with_constant(&self, value: &ScalarValue) -> DFResult<Option<Arc<Self>>> {
        let q = &self.search.query;
        let Some(key) = query_vector(value, &self.table, &q.column, &self.column_type)? else {
            return Ok(None);
        };
        let mut search = Search::clone(&self.search);
        search.query.key = search_key(key, self.search.index.metric_type()).map_err(lance_err)?;
        Ok(Some(Arc::new(Self {
            search: Arc::new(search),
            properties: self.properties.clone(),
            metrics: ExecutionPlanMetricsSet::new(),
            constant: value.clone(),
            table: self.table.clone(),
            column_type: self.column_type.clone(),
        })))
    }
}

impl fmt::Debug for DirectAnnExec {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.debug_struct("DirectAnnExec")
            .field("index", &self.search.segment.name)
            .field("k", &self.search.query.k)
            .finish()
    }
}

impl DisplayAs for DirectAnnExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let s = &self.search;
        write!(
            f,
            "DirectAnnExec: index={}, partitions searched={}, threads={}, candidates={}, columns=[{}]",
            s.segment.name,
            s.query.minimum_nprobes,
            s.parallelism,
            candidates(&s.query),
            s.columns.join(", ")
        )
    }
}

fn candidates(q: &Query) -> usize {
    q.k * q.refine_factor.unwrap_or(1) as usize
}

impl ExecutionPlan for DirectAnnExec {
    fn name(&self) -> &str {
        "DirectAnnExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "DirectAnnExec takes no children".into(),
            ))
        }
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> DFResult<SendableRecordBatchStream> {
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        // EXPLAIN ANALYZE splits the time: ranking and searching the partitions, then taking the rows.
        let times = Times {
            search: MetricBuilder::new(&self.metrics).subset_time("search_time", partition),
            take: MetricBuilder::new(&self.metrics).subset_time("take_time", partition),
        };
        let search = self.search.clone();
        let batch = stream::once(async move {
            let timer = baseline.elapsed_compute().timer();
            let batch = search.run(&times).await?;
            timer.done();
            baseline.record_output(batch.num_rows());
            baseline.done();
            Ok(batch)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.search.schema.clone(),
            batch,
        )))
    }
}

struct Times {
    search: Time,
    take: Time,
}

#[derive(Clone)]
struct Search {
    ds: Arc<Dataset>,
    segment: IndexMetadata,
    index: Arc<dyn VectorIndex>,
    query: Query,
    columns: Vec<String>,
    schema: SchemaRef,
    parallelism: usize,
    /// Shared by the searches a cached plan rebuilds for new query values (see `FragmentReaders`).
    readers: Arc<FragmentReaders>,
    prefilter: Arc<dyn PreFilter>,
}

/// Readers of the searched dataset version's fragments, opened on first use and kept as long as the plan: opening
/// one reads the file's metadata and the deletion vector, which costs more than taking the few rows a search
/// returns. The plan pins one dataset version, so a kept reader never sees rows that version does not have.
#[derive(Default)]
struct FragmentReaders(Mutex<HashMap<u64, Arc<FragmentReader>>>);

/// A table with more fragments than this keeps readers for the first ones only (each holds file metadata).
const MAX_KEPT_READERS: usize = 1024;

impl FragmentReaders {
    /// The reader of one fragment of `ds`, projected to `columns`.
    async fn get(
        &self,
        ds: &Dataset,
        columns: &[String],
        fragment_id: u64,
    ) -> DFResult<Arc<FragmentReader>> {
        if let Some(r) = self.0.lock().expect("readers").get(&fragment_id) {
            return Ok(r.clone());
        }
        let fragment = ds.get_fragment(fragment_id as usize).ok_or_else(|| {
            DataFusionError::Internal(format!(
                "the index returned a row of fragment {fragment_id}, which the dataset version does not have"
            ))
        })?;
        let projection = ds.schema().project(columns).map_err(lance_err)?;
        let reader = Arc::new(
            fragment
                .open(&projection, FragReadConfig::default())
                .await
                .map_err(lance_err)?,
        );
        let mut kept = self.0.lock().expect("readers");
        if kept.len() < MAX_KEPT_READERS {
            kept.insert(fragment_id, reader.clone());
        }
        Ok(reader)
    }
}

impl Search {
    /// The rows at `row_ids` (ascending), with the plan's columns.
    async fn take(&self, row_ids: &[u64]) -> DFResult<RecordBatch> {
        if self.ds.manifest.uses_stable_row_ids() {
            // Stable row ids are not addresses: Lance's take maps them.
            return self
                .ds
                .take_rows(
                    row_ids,
                    ProjectionRequest::from_columns(&self.columns, self.ds.schema()),
                )
                .await
                .map_err(lance_err);
        }
        // A row id is the row's address: fragment id in the high 32 bits, offset in the fragment below.
        let groups: Vec<(u64, Vec<u32>)> = row_ids
            .chunk_by(|a, b| a >> 32 == b >> 32)
            .map(|rows| (rows[0] >> 32, rows.iter().map(|r| *r as u32).collect()))
            .collect();
        // Fragments are read concurrently, as Lance's take does.
        let (ds, readers, columns) = (self.ds.clone(), self.readers.clone(), self.columns.clone());
        let batches: Vec<RecordBatch> = stream::iter(groups)
            .map(move |(fragment_id, offsets)| {
                let (ds, readers, columns) = (ds.clone(), readers.clone(), columns.clone());
                async move {
                    let reader = readers.get(&ds, &columns, fragment_id).await?;
                    reader
                        .take_as_batch(&offsets, None)
                        .await
                        .map_err(lance_err)
                }
            })
            .buffered(8)
            .try_collect()
            .await?;
        let schema = batches
            .first()
            .map(|b| b.schema())
            .unwrap_or_else(|| Arc::new(arrow::datatypes::Schema::empty()));
        Ok(arrow::compute::concat_batches(&schema, &batches)?)
    }

    async fn run(&self, times: &Times) -> DFResult<RecordBatch> {
        let search_timer = times.search.timer();
        let (partitions, centroid_distances) =
            self.index.find_partitions(&self.query).map_err(lance_err)?;
        let probes = self.query.minimum_nprobes.min(partitions.len());
        let prefilter = &self.prefilter;
        let results: Vec<RecordBatch> = stream::iter(0..probes)
            .map(|i| {
                let index = self.index.clone();
                let prefilter = prefilter.clone();
                let mut query = self.query.clone();
                query.dist_q_c = centroid_distances.value(i);
                let partition = partitions.value(i) as usize;
                let threaded = self.parallelism > 1;
                async move {
                    let prepared = index
                        .prepare_partition_search(
                            partition,
                            &query,
                            prefilter,
                            &NoOpMetricsCollector,
                        )
                        .await
                        .map_err(lance_err)?;
                    let search =
                        move || index.search_prepared_partition(prepared, &NoOpMetricsCollector);
                    // One thread: search here, without a hand-off; several: each partition on a blocking thread.
                    let batch = if threaded {
                        tokio::task::spawn_blocking(search).await.map_err(|e| {
                            DataFusionError::Execution(format!("partition search failed: {e}"))
                        })?
                    } else {
                        search()
                    };
                    batch.map_err(lance_err)
                }
            })
            .buffered(self.parallelism)
            .try_collect()
            .await?;

        let mut found: Vec<(f32, u64)> = vec![];
        for batch in &results {
            let (Some(distances), Some(row_ids)) = (
                batch.column_by_name("_distance"),
                batch.column_by_name("_rowid"),
            ) else {
                return Err(DataFusionError::Internal(
                    "index partition search returned no _distance/_rowid".into(),
                ));
            };
            let distances = distances.as_primitive::<Float32Type>();
            let row_ids = row_ids.as_primitive::<UInt64Type>();
            found.extend(
                distances
                    .iter()
                    .zip(row_ids.iter())
                    .filter_map(|(d, r)| Some((d?, r?))),
            );
        }
        found.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        found.truncate(candidates(&self.query));
        // Ascending addresses let Lance read each fragment's rows in order without re-ordering them afterwards; the
        // sort above this scan puts the rows in distance order anyway.
        let mut row_ids: Vec<u64> = found.iter().map(|(_, r)| *r).collect();
        row_ids.sort_unstable();
        search_timer.done();
        let _take_timer = times.take.timer();
        if row_ids.is_empty() {
            return Ok(RecordBatch::new_empty(self.schema.clone()));
        }
        let rows = self.take(&row_ids).await?;
        let columns = self
            .columns
            .iter()
            .map(|c| {
                rows.column_by_name(c).cloned().ok_or_else(|| {
                    DataFusionError::Internal(format!("take_rows did not return column {c}"))
                })
            })
            .collect::<DFResult<Vec<_>>>()?;
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}
