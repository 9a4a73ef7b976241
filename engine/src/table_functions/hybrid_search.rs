//! `hybrid_search(table, text_column, vector_column, query_text, query_vector, k [, fusion [, text_weight,
//! vector_weight [, window]]]])`: a keyword search (BM25 over `text_column`, as `fts_search`) and a vector search
//! (nearest `vector_column` to `query_vector`, through its index when there is one), fused; a side that did not find
//! a row adds nothing to its score, so rows found by only one side stay (a full outer fusion). `fusion`:
//!
//! - a number, or `'rrf'` (60): reciprocal rank, `text_weight / (rrf_k + text_rank) + vector_weight / (rrf_k +
//!   vector_rank)`. Ranks only: a side's clear winner and its tenth-best differ by 1/61 - 1/70.
//! - `'relative'`: relative scores (Weaviate's `relativeScoreFusion`), each side's scores min-max scaled to [0, 1]
//!   over its candidates (BM25 as is, the distance negated), then `text_weight * text + vector_weight * vector`.
//!   How far ahead a side's best is counts, which rank fusion throws away (LoCoMo dev, k = 10: R@5 0.569 against
//!   RRF's 0.551, better in each of the five conversations).
//!
//! Each side ranks its best `window` candidates (default k, as Elasticsearch's `rank_window_size` and LanceDB's
//! hybrid query): under RRF, with deeper lists a row both sides rank lowly outscores one side's best (1/(60+30)
//! twice beats 1/(60+1) once), which measured worse on LoCoMo (R@5 0.482 at 50 per side against 0.551 at k = 10).
//! A WHERE clause on the table's columns filters both sides before they rank. The two searches run concurrently.
//! The result: the table's columns, `_score` (the fused score, best first), `_text_score` (BM25, NULL when the
//! keyword side did not find the row) and `_distance` (the row's distance to the query vector, for every row: the
//! vector side's, or computed for a row only the keyword side found).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Float32Array, Float64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Float32Type, Float64Type, Schema, SchemaRef, UInt64Type};
use async_trait::async_trait;
use datafusion::catalog::{
    Session as CatalogSession, TableFunctionArgs, TableFunctionImpl, TableProvider,
};
use datafusion::common::{Result as DFResult, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{collect, ExecutionPlan};
/// The row address column Lance adds with `with_row_address()` (`lance_core::ROW_ADDR`).
const ROW_ADDR: &str = "_rowaddr";
use lance_linalg::distance::DistanceType;

use super::fts_search::{inverted_index, text_column, SCORE_COLUMN};
use super::*;
use crate::catalog::MarrowSchema;
use crate::options::MarrowOptions;
use crate::session::{has_placeholder, resolve_deferred, BoundParams};
use crate::vector::{lance_err, project, query_vector};

/// The reciprocal-rank constant when none is given (Cormack et al.'s 60).
pub const DEFAULT_RRF_K: f64 = 60.0;
const TEXT_SCORE: &str = "_text_score";

/// `hybrid_search(table, text_column, vector_column, query_text, query_vector, k [, fusion [, text_weight,
/// vector_weight [, window]]])`.
#[derive(Debug)]
pub struct HybridSearchFunction(pub Arc<MarrowSchema>);

impl TableFunctionImpl for HybridSearchFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DFResult<Arc<dyn TableProvider>> {
        const NAME: &str = "hybrid_search";
        // The query text and vector may be `$n`, read when the plan executes (session/deferred.rs).
        let given = constant_or_deferred_args(&args, NAME, &[3, 4])?;
        let values: Vec<ScalarValue> = given
            .iter()
            .map(|v| v.clone().unwrap_or(ScalarValue::Null))
            .collect();
        if !matches!(values.len(), 6 | 7 | 9 | 10) {
            return Err(plan_err(
                "hybrid_search(table, text_column, vector_column, query_text, query_vector, k [, fusion \
                 [, text_weight, vector_weight [, window]]]) takes 6, 7, 9 or 10 arguments (fusion: 'rrf', \
                 'relative' or an RRF constant)",
            ));
        }
        let table = string_arg(&values[0], NAME, "table")?;
        let text = string_arg(&values[1], NAME, "text_column")?;
        let vector = string_arg(&values[2], NAME, "vector_column")?;
        let schema = table_schema(&self.0, &table, NAME)?;
        text_column(&schema, &table, &text, NAME)?;
        let vector_type = vector_column(&schema, &table, &vector, NAME)?;
        let query = match &given[3] {
            Some(v) => Arg::Value(checked_query(v, &text)?),
            None => Arg::Deferred(args.exprs()[3].clone()),
        };
        let query_vector = match &given[4] {
            Some(v) => Arg::Value(checked_vector(v, &table, &vector, &vector_type)?),
            None => Arg::Deferred(args.exprs()[4].clone()),
        };
        let k = k_arg(&values[5], NAME)?;
        let number = |i: usize, what: &str, positive: bool| -> DFResult<Option<f64>> {
            let Some(v) = values.get(i) else {
                return Ok(None);
            };
            let x = match v.cast_to(&DataType::Float64)? {
                ScalarValue::Float64(Some(x)) => x,
                _ => {
                    return Err(plan_err(format!(
                        "{NAME}: {what} must be a number, got {v}"
                    )))
                }
            };
            if !x.is_finite() || x < 0.0 || (positive && x == 0.0) {
                return Err(plan_err(format!(
                    "{NAME}: {what} must be a finite number {}, got {x}",
                    if positive { "above 0" } else { "of at least 0" }
                )));
            }
            Ok(Some(x))
        };
        let method = match values.get(6) {
            Some(ScalarValue::Utf8(Some(m)) | ScalarValue::LargeUtf8(Some(m)) | ScalarValue::Utf8View(Some(m))) => {
                match m.trim().to_ascii_lowercase().as_str() {
                    "rrf" => Method::Rrf(DEFAULT_RRF_K),
                    "relative" => Method::Relative,
                    _ => {
                        return Err(plan_err(format!(
                            "{NAME}: unknown fusion '{m}'; use 'rrf', 'relative' or an RRF constant such as 60"
                        )))
                    }
                }
            }
            _ => Method::Rrf(number(6, "rrf_k", true)?.unwrap_or(DEFAULT_RRF_K)),
        };
        let text_weight = number(7, "text_weight", false)?.unwrap_or(1.0);
        let vector_weight = number(8, "vector_weight", false)?.unwrap_or(1.0);
        if text_weight == 0.0 && vector_weight == 0.0 {
            return Err(plan_err(format!(
                "{NAME}: text_weight and vector_weight are both 0; give one side a weight"
            )));
        }
        let window = match values.get(9) {
            Some(v) => match v.cast_to(&DataType::Int64)? {
                ScalarValue::Int64(Some(w)) if w >= k as i64 && w <= MAX_K => w as usize,
                _ => {
                    return Err(plan_err(format!(
                        "{NAME}: window (candidates per side) must be an integer from k = {k} to {MAX_K}, got {v}"
                    )))
                }
            },
            None => k,
        };
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(SCORE_COLUMN, DataType::Float64, false));
        fields.push(Field::new(TEXT_SCORE, DataType::Float32, true));
        fields.push(Field::new(DISTANCE_COLUMN, DataType::Float64, true));
        Ok(Arc::new(HybridSearchProvider {
            catalog: self.0.clone(),
            schema: Arc::new(Schema::new(fields)),
            table_columns: schema.fields().len(),
            table,
            text,
            vector,
            vector_type,
            query,
            query_vector,
            k,
            window,
            fusion: Fusion {
                method,
                text_weight,
                vector_weight,
            },
        }))
    }
}

/// An argument known when the statement is planned, or a `$n` read when the plan executes.
#[derive(Debug, Clone)]
enum Arg<T> {
    Value(T),
    Deferred(Expr),
}

impl<T: Clone> Arg<T> {
    /// The value, resolving a deferred argument from the values bound to `task` and checking it with `check`.
    fn value(
        &self,
        task: &TaskContext,
        check: impl Fn(&ScalarValue) -> DFResult<T>,
    ) -> DFResult<T> {
        match self {
            Arg::Value(v) => Ok(v.clone()),
            Arg::Deferred(e) => check(&bound_constant(e, task)?),
        }
    }
}

impl<T> std::fmt::Display for Arg<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Arg::Value(_) => write!(f, "given"),
            Arg::Deferred(e) => write!(f, "{e} (bound at execution)"),
        }
    }
}

/// A deferred expression's value for the execution running on `task`.
fn bound_constant(expr: &Expr, task: &TaskContext) -> DFResult<ScalarValue> {
    let bound = BoundParams::of(task)
        .ok_or_else(|| plan_err(format!("hybrid_search: no value is bound for {expr}")))?;
    match resolve_deferred(expr, &bound, task, &Arc::new(Schema::empty()))? {
        Expr::Literal(v, _) => Ok(v),
        other => Err(plan_err(format!(
            "hybrid_search: argument {other} must be a constant"
        ))),
    }
}

fn checked_query(value: &ScalarValue, text: &str) -> DFResult<String> {
    let query = string_arg(value, "hybrid_search", "query_text")?;
    super::fts_query::parse(&query, text, "hybrid_search")?;
    Ok(query)
}

fn checked_vector(
    value: &ScalarValue,
    table: &str,
    vector: &str,
    vector_type: &DataType,
) -> DFResult<ArrayRef> {
    query_vector(value, table, vector, vector_type)?.ok_or_else(|| {
        plan_err("hybrid_search: the query vector must be a non-NULL list of numbers")
    })
}

#[derive(Debug, Clone, Copy)]
enum Method {
    /// Reciprocal rank with this constant.
    Rrf(f64),
    /// Min-max scaled scores.
    Relative,
}

#[derive(Debug, Clone, Copy)]
struct Fusion {
    method: Method,
    text_weight: f64,
    vector_weight: f64,
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Method::Rrf(k) => write!(f, "rrf(k={k})"),
            Method::Relative => write!(f, "relative"),
        }
    }
}

/// Whether `provider` is a `hybrid_search`: it opens its table, and resolves the `$n` in its arguments and
/// pushed-down conditions, when its plan executes.
pub(crate) fn is_provider(provider: &dyn TableProvider) -> bool {
    provider.downcast_ref::<HybridSearchProvider>().is_some()
}

#[derive(Debug, Clone)]
struct HybridSearchProvider {
    catalog: Arc<MarrowSchema>,
    schema: SchemaRef,
    table_columns: usize,
    table: String,
    text: String,
    vector: String,
    vector_type: DataType,
    query: Arg<String>,
    query_vector: Arg<ArrayRef>,
    k: usize,
    window: usize,
    fusion: Fusion,
}

#[async_trait]
impl TableProvider for HybridSearchProvider {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    /// As `fts_search`: conditions on the table's columns filter both sides, exactly, before they rank.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DFResult<Vec<TableProviderFilterPushDown>> {
        Ok(prefilter_pushdown(
            filters,
            &[SCORE_COLUMN, TEXT_SCORE, DISTANCE_COLUMN],
        ))
    }

    async fn scan(
        &self,
        state: &dyn CatalogSession,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        // The dataset alone: opening it as a table would build the column defaults a search never writes.
        let ds = &self.catalog.open_dataset(&self.table).await?;
        let opts = MarrowOptions::of(state.config_options());
        let filter = conjunction(filters.iter().cloned());
        let vector_index = crate::vector::vector_indexes(ds, &self.vector).await?;
        let metric = vector_index
            .first()
            .and_then(|i| i.metric)
            .unwrap_or(DistanceType::Cosine);
        let deferred = match (&self.query, &self.query_vector) {
            (Arg::Value(_), Arg::Value(_)) => String::new(),
            (q, v) => format!(" query={q} vector={v}"),
        };
        let describe = format!(
            "table={} k={} candidates={} fusion={} weights=({}, {}) text: column={} {} vector: column={} {} \
             metric={} filter={}{deferred}",
            self.table,
            self.k,
            self.window,
            self.fusion.method,
            self.fusion.text_weight,
            self.fusion.vector_weight,
            self.text,
            match inverted_index(ds, &self.text).await? {
                Some(name) => format!("index={name}"),
                None => "index=none (exhaustive BM25)".to_string(),
            },
            self.vector,
            match vector_index.first() {
                Some(i) => format!("index={}", i.name),
                None => "index=none (exact)".to_string(),
            },
            crate::vector::metric_name(metric),
            filter.as_ref().map_or("none".to_string(), |f| f.to_string())
        );
        let fused = Arc::new(Fused {
            search: self.clone(),
            filter,
            metric,
            nprobes: opts.nprobes,
            ef: opts.ef,
        });
        let plan = StreamingTableExec::try_new(
            self.schema.clone(),
            vec![fused as Arc<dyn PartitionStream>],
            None,
            vec![],
            false,
            None,
        )?;
        let plan = Arc::new(
            crate::exec::PassExec::new("HybridSearchExec", Arc::new(plan), describe).serial(),
        );
        project(plan, projection)
    }
}

/// The two searches and their fusion, planned and run when the plan executes: the table is read at its latest
/// version, and `$n` arguments and conditions take the values bound to that execution.
#[derive(Debug, Clone)]
struct Fused {
    search: HybridSearchProvider,
    filter: Option<Expr>,
    metric: DistanceType,
    nprobes: usize,
    ef: usize,
}

impl Fused {
    async fn run(self, ctx: Arc<TaskContext>) -> DFResult<RecordBatch> {
        let search = &self.search;
        let query = search
            .query
            .value(&ctx, |v| checked_query(v, &search.text))?;
        let query_vector = search.query_vector.value(&ctx, |v| {
            checked_vector(v, &search.table, &search.vector, &search.vector_type)
        })?;
        let filter = match &self.filter {
            Some(f) if has_placeholder(f) => {
                let bound = BoundParams::of(&ctx)
                    .ok_or_else(|| plan_err(format!("hybrid_search: no value is bound for {f}")))?;
                Some(resolve_deferred(f, &bound, &ctx, &search.schema)?)
            }
            f => f.clone(),
        };
        let ds = &search.catalog.open_dataset(&search.table).await?;
        let columns: Vec<String> = search.schema.fields()[..search.table_columns]
            .iter()
            .map(|f| f.name().clone())
            .collect();

        let mut text_columns = columns.clone();
        text_columns.push(SCORE_COLUMN.to_string());
        let mut fts = ds.scan();
        fts.disable_scoring_autoprojection();
        fts.project(&text_columns).map_err(lance_err)?;
        fts.with_row_address();
        fts.full_text_search(super::fts_query::parse(
            &query,
            &search.text,
            "hybrid_search",
        )?)
        .map_err(lance_err)?;
        fts.prefilter(true);
        if let Some(f) = &filter {
            fts.filter_expr(f.clone());
        }
        fts.limit(Some(search.window as i64), None)
            .map_err(lance_err)?;
        let fts = fts.create_plan().await.map_err(lance_err)?;

        let mut vector_columns = columns;
        vector_columns.push(DISTANCE_COLUMN.to_string());
        let mut ann = ds.scan();
        ann.disable_scoring_autoprojection();
        ann.project(&vector_columns).map_err(lance_err)?;
        ann.with_row_address();
        ann.nearest(&search.vector, query_vector.as_ref(), search.window)
            .map_err(lance_err)?;
        ann.distance_metric(self.metric);
        ann.prefilter(true);
        if let Some(f) = &filter {
            ann.filter_expr(f.clone());
        }
        if self.nprobes > 0 {
            ann.nprobes(self.nprobes);
        }
        if self.ef > 0 {
            ann.ef(self.ef);
        }
        let ann = ann.create_plan().await.map_err(lance_err)?;

        let distance = QueryDistance {
            column: search.vector.clone(),
            query: f32_values(&query_vector)?,
            metric: self.metric,
        };
        let (text, vector) = futures::try_join!(collect(fts, ctx.clone()), collect(ann, ctx))?;
        fuse(
            &search.schema,
            search.table_columns,
            concat(text)?,
            concat(vector)?,
            search.k,
            search.fusion,
            &distance,
        )
    }
}

impl PartitionStream for Fused {
    fn schema(&self) -> &SchemaRef {
        &self.search.schema
    }

    fn execute(&self, ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        Box::pin(RecordBatchStreamAdapter::new(
            self.search.schema.clone(),
            futures::stream::once(self.clone().run(ctx)),
        ))
    }
}

fn concat(batches: Vec<RecordBatch>) -> DFResult<Option<RecordBatch>> {
    match batches.first() {
        None => Ok(None),
        Some(first) => Ok(Some(arrow::compute::concat_batches(
            &first.schema(),
            &batches,
        )?)),
    }
}

/// One side's rows by row address, ranked 1, 2, … in the side's order (best first).
fn ranks(batch: Option<&RecordBatch>) -> DFResult<Vec<u64>> {
    let Some(b) = batch else {
        return Ok(vec![]);
    };
    let addr = b
        .column_by_name(ROW_ADDR)
        .ok_or_else(|| DataFusionError::Internal("search without row addresses".into()))?;
    Ok(addr.as_primitive::<UInt64Type>().values().to_vec())
}

/// A row found by either side: its fused score, where to take its columns from (side, row), and its row in each
/// side's ranking.
struct Candidate {
    addr: u64,
    score: f64,
    from: (usize, usize),
    text_row: Option<usize>,
    vector_row: Option<usize>,
}

impl Candidate {
    fn new(addr: u64, from: (usize, usize)) -> Self {
        Self {
            addr,
            score: 0.0,
            from,
            text_row: None,
            vector_row: None,
        }
    }

    fn best_rank(&self) -> usize {
        self.text_row
            .unwrap_or(usize::MAX)
            .min(self.vector_row.unwrap_or(usize::MAX))
    }
}

fn fuse(
    schema: &SchemaRef,
    table_columns: usize,
    text: Option<RecordBatch>,
    vector: Option<RecordBatch>,
    k: usize,
    fusion: Fusion,
    distance: &QueryDistance,
) -> DFResult<RecordBatch> {
    // Lance ranks each side (BM25 descending, distance ascending); sorted again here so the fusion does not
    // depend on how a plan happens to emit its rows.
    let text = text.map(|b| sort_by(&b, SCORE_COLUMN, true)).transpose()?;
    let vector = vector
        .map(|b| sort_by(&b, DISTANCE_COLUMN, false))
        .transpose()?;
    let distances = side_scores(vector.as_ref(), DISTANCE_COLUMN)?;
    let text_shares = shares(
        &side_scores(text.as_ref(), SCORE_COLUMN)?,
        fusion.method,
        fusion.text_weight,
        true,
    );
    let vector_shares = shares(&distances, fusion.method, fusion.vector_weight, false);
    let mut rows: HashMap<u64, Candidate> = HashMap::new();
    for (rank, addr) in ranks(text.as_ref())?.into_iter().enumerate() {
        let c = rows
            .entry(addr)
            .or_insert_with(|| Candidate::new(addr, (0, rank)));
        c.score += text_shares[rank];
        c.text_row = Some(rank);
    }
    for (rank, addr) in ranks(vector.as_ref())?.into_iter().enumerate() {
        let c = rows
            .entry(addr)
            .or_insert_with(|| Candidate::new(addr, (1, rank)));
        c.score += vector_shares[rank];
        c.vector_row = Some(rank);
    }
    let mut order: Vec<Candidate> = rows.into_values().collect();
    // Best fused score first; ties by the better single rank, then by address, so the order is deterministic.
    order.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(a.best_rank().cmp(&b.best_rank()))
            .then(a.addr.cmp(&b.addr))
    });
    order.truncate(k);

    // The table's columns of one side (empty columns for a side that found nothing: no pick refers to it).
    let side = |b: Option<&RecordBatch>| -> DFResult<Vec<ArrayRef>> {
        schema.fields()[..table_columns]
            .iter()
            .map(|f| match b {
                None => Ok(arrow::array::new_empty_array(f.data_type())),
                Some(b) => b.column_by_name(f.name()).cloned().ok_or_else(|| {
                    DataFusionError::Internal(format!("search result without column {}", f.name()))
                }),
            })
            .collect()
    };
    let (text_columns, vector_columns) = (side(text.as_ref())?, side(vector.as_ref())?);
    let picks: Vec<(usize, usize)> = order.iter().map(|c| c.from).collect();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (t, v) in text_columns.iter().zip(&vector_columns) {
        columns.push(arrow::compute::interleave(
            &[t.as_ref(), v.as_ref()],
            &picks,
        )?);
    }
    columns.push(Arc::new(Float64Array::from_iter_values(
        order.iter().map(|c| c.score),
    )));
    let text_scores = text
        .as_ref()
        .and_then(|b| b.column_by_name(SCORE_COLUMN))
        .map(|c| arrow::compute::cast(c, &DataType::Float32))
        .transpose()?;
    columns.push(Arc::new(Float32Array::from_iter(order.iter().map(|c| {
        c.text_row
            .zip(text_scores.as_ref())
            .map(|(i, s)| s.as_primitive::<Float32Type>().value(i))
    }))));
    // A row only the keyword side found gets its distance computed here, from the vector in its row.
    let mut row_distances = Vec::with_capacity(order.len());
    for c in &order {
        row_distances.push(match c.vector_row {
            Some(i) => Some(distances[i]).filter(|d| !d.is_nan()),
            None => match (c.text_row, text.as_ref()) {
                (Some(i), Some(b)) => distance.of_row(b, i)?,
                _ => None,
            },
        });
    }
    columns.push(Arc::new(Float64Array::from(row_distances)));
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// One side's scores (BM25 or distance) as f64, in the side's order; empty when the side found nothing.
fn side_scores(batch: Option<&RecordBatch>, column: &str) -> DFResult<Vec<f64>> {
    let Some(b) = batch else {
        return Ok(vec![]);
    };
    let c = b.column_by_name(column).ok_or_else(|| {
        DataFusionError::Internal(format!("search result without column {column}"))
    })?;
    let c = arrow::compute::cast(c, &DataType::Float64)?;
    Ok(c.as_primitive::<Float64Type>()
        .iter()
        .map(|v| v.unwrap_or(f64::NAN))
        .collect())
}

/// Each candidate's share of the fused score, in the side's order (rank 0 first), times `weight`. Under RRF
/// `1 / (rrf_k + rank + 1)`; relative: the score min-max scaled over the side's candidates to [0, 1], 1 the side's
/// best. A side whose candidates all score the same (one candidate, or ties) gives each 1; a NaN score gives 0.
fn shares(scores: &[f64], method: Method, weight: f64, higher_is_better: bool) -> Vec<f64> {
    if let Method::Rrf(rrf_k) = method {
        return (0..scores.len())
            .map(|rank| weight / (rrf_k + rank as f64 + 1.0))
            .collect();
    }
    let (lo, hi) = scores
        .iter()
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    scores
        .iter()
        .map(|&v| {
            weight
                * if !v.is_finite() {
                    0.0
                } else if hi <= lo {
                    1.0
                } else if higher_is_better {
                    (v - lo) / (hi - lo)
                } else {
                    (hi - v) / (hi - lo)
                }
        })
        .collect()
}

/// The distance of a row's vector to the query, in the vector side's metric.
struct QueryDistance {
    column: String,
    query: Vec<f32>,
    metric: DistanceType,
}

impl QueryDistance {
    /// The distance for row `i` of `batch`; None for a NULL vector.
    fn of_row(&self, batch: &RecordBatch, i: usize) -> DFResult<Option<f64>> {
        let Some(col) = batch.column_by_name(&self.column) else {
            return Ok(None);
        };
        // Lance has no f32 kernel for Hamming (bit vectors): such a row keeps a NULL distance.
        if self.metric == DistanceType::Hamming {
            return Ok(None);
        }
        if col.is_null(i) {
            return Ok(None);
        }
        // hybrid_search takes only FixedSizeList vector columns (`vector_column`).
        let Some(list) = col.as_fixed_size_list_opt() else {
            return Ok(None);
        };
        let row = f32_values(&list.value(i))?;
        if row.len() != self.query.len() {
            return Ok(None);
        }
        Ok(Some(self.metric.func::<f32>()(&self.query, &row) as f64))
    }
}

fn f32_values(values: &ArrayRef) -> DFResult<Vec<f32>> {
    let v = arrow::compute::cast(values, &DataType::Float32)?;
    Ok(v.as_primitive::<Float32Type>().values().to_vec())
}

/// A batch in the order of one column (descending or ascending), NULLs last.
fn sort_by(batch: &RecordBatch, column: &str, descending: bool) -> DFResult<RecordBatch> {
    let c = batch.column_by_name(column).ok_or_else(|| {
        DataFusionError::Internal(format!("search result without column {column}"))
    })?;
    let indices = arrow::compute::sort_to_indices(
        c,
        Some(arrow::compute::SortOptions {
            descending,
            nulls_first: false,
        }),
        None,
    )?;
    Ok(arrow::compute::take_record_batch(batch, &indices)?)
}
