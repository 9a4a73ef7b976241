//! Vector search as SQL. `SELECT … FROM t [WHERE …] ORDER BY <distance>(col, <constant>) LIMIT k` is recognized in
//! the optimized logical plan; the table scan under it is replaced by a [`VectorSearchTable`], which at execution
//! time either asks Lance's ANN index for the k nearest rows that satisfy the WHERE clause (a prefilter), or — with no
//! index for that column and metric — scans exactly. Either way the original sort stays on top and recomputes the
//! distance with Marrow's kernels, so the distances a query returns are exact for the rows it returns, and Lance's own
//! conventions (squared L2, 1 − dot) never reach the user.

pub(crate) mod ann;
pub(crate) mod plan_cache;

use std::sync::Arc;

use arrow::array::{Array, ArrayRef};
use arrow::datatypes::{DataType, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session as CatalogSession;
use datafusion::catalog::TableProvider;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result as DFResult, ScalarValue};
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{
    Expr, LogicalPlan, SortExpr, TableProviderFilterPushDown, TableScan, TableType,
};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::physical_plan::ExecutionPlan;
use lance::index::DatasetIndexExt;
use lance::Dataset;
use lance_linalg::distance::DistanceType;

use crate::catalog::MarrowTable;
use crate::error::Error;
use crate::options::MarrowOptions;
use ann::{Direct, DirectSearch};

/// The largest k served from an ANN index; beyond it the exact path is both correct and not slower.
pub const MAX_ANN_K: usize = 10_000;

/// Which distance function orders the rows, and the index metric that ranks rows the same way.
fn metric_of(function: &str, asc: bool) -> Option<DistanceType> {
    match (function, asc) {
        ("cosine_distance", true) => Some(DistanceType::Cosine),
        ("l2_distance" | "l2_distance_squared", true) => Some(DistanceType::L2),
        ("negative_inner_product", true) => Some(DistanceType::Dot),
        ("inner_product" | "dot_product", false) => Some(DistanceType::Dot),
        ("hamming_distance", true) => Some(DistanceType::Hamming),
        _ => None,
    }
}

pub(crate) fn metric_name(m: DistanceType) -> &'static str {
    match m {
        DistanceType::L2 => "l2",
        DistanceType::Cosine => "cosine",
        DistanceType::Dot => "dot",
        DistanceType::Hamming => "hamming",
    }
}

/// The distance function `vector_search` reports as `_distance` for a metric (smaller is nearer).
pub(crate) fn function_for(m: DistanceType) -> &'static str {
    match m {
        DistanceType::L2 => "l2_distance",
        DistanceType::Cosine => "cosine_distance",
        DistanceType::Dot => "negative_inner_product",
        DistanceType::Hamming => "hamming_distance",
    }
}

/// Turns `ORDER BY <distance>(col, const) LIMIT k` over a Marrow table into a vector search.
#[derive(Debug, Default)]
pub struct VectorTopKRule;

impl OptimizerRule for VectorTopKRule {
    fn name(&self) -> &str {
        "marrow_vector_top_k"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> DFResult<Transformed<LogicalPlan>> {
        let LogicalPlan::Sort(sort) = &plan else {
            return Ok(Transformed::no(plan));
        };
        let (Some(k), [order]) = (sort.fetch, sort.expr.as_slice()) else {
            return Ok(Transformed::no(plan));
        };
        let opts = MarrowOptions::of(&config.options());
        match rewrite_input(&sort.input, order, k, &opts)? {
            Some(input) => {
                let mut sort = sort.clone();
                sort.input = Arc::new(input);
                Ok(Transformed::yes(LogicalPlan::Sort(sort)))
            }
            None => Ok(Transformed::no(plan)),
        }
    }
}

/// Follow the sort's input through projections and aliases down to a table scan, substituting projected
/// expressions so the sort key is expressed in the scan's columns.
fn rewrite_input(
    input: &LogicalPlan,
    order: &SortExpr,
    k: usize,
    opts: &MarrowOptions,
) -> DFResult<Option<LogicalPlan>> {
    let Some((key, scan)) = key_at_scan(input, &order.expr)? else {
        return Ok(None);
    };
    let Some(new_scan) = rewrite_scan(scan, &key, order.asc, k, opts)? else {
        return Ok(None);
    };
    Ok(Some(replace_scan(input, new_scan)?))
}

/// The table scan under `input` (through projections and aliases only) and `key`, an expression over `input`'s
/// columns, rewritten over the scan's columns; `None` when another node stands in between.
pub(crate) fn key_at_scan<'a>(
    input: &'a LogicalPlan,
    key: &Expr,
) -> DFResult<Option<(Expr, &'a TableScan)>> {
    let mut key = key.clone();
    let mut node = input;
    loop {
        match node {
            LogicalPlan::Projection(p) => {
                key = key
                    .transform(|e| {
                        if let Expr::Column(c) = &e {
                            if let Some(i) = p.schema.maybe_index_of_column(c) {
                                return Ok(Transformed::yes(
                                    p.expr[i].clone().unalias_nested().data,
                                ));
                            }
                        }
                        Ok(Transformed::no(e))
                    })?
                    .data;
                node = &p.input;
            }
            LogicalPlan::SubqueryAlias(a) => node = &a.input,
            LogicalPlan::TableScan(scan) => return Ok(Some((key, scan))),
            _ => return Ok(None),
        }
    }
}

fn replace_scan(plan: &LogicalPlan, scan: LogicalPlan) -> DFResult<LogicalPlan> {
    match plan {
        LogicalPlan::TableScan(_) => Ok(scan),
        other => {
            let child = replace_scan(other.inputs()[0], scan)?;
            other.with_new_exprs(other.expressions(), vec![child])
        }
    }
}

pub(crate) fn strip_casts(e: &Expr) -> &Expr {
    match e {
        Expr::Cast(c) => strip_casts(&c.expr),
        Expr::TryCast(c) => strip_casts(&c.expr),
        Expr::Alias(a) => strip_casts(&a.expr),
        other => other,
    }
}

fn rewrite_scan(
    scan: &TableScan,
    key: &Expr,
    asc: bool,
    k: usize,
    opts: &MarrowOptions,
) -> DFResult<Option<LogicalPlan>> {
    if scan.fetch.is_some() {
        return Ok(None);
    }
    let Expr::ScalarFunction(f) = strip_casts(key) else {
        return Ok(None);
    };
    let Some(metric) = metric_of(f.func.name(), asc) else {
        return Ok(None);
    };
    let [a, b] = f.args.as_slice() else {
        return Ok(None);
    };
    let (column, constant) = match (strip_casts(a), strip_casts(b)) {
        (Expr::Column(c), Expr::Literal(v, _)) | (Expr::Literal(v, _), Expr::Column(c)) => (c, v),
        _ => return Ok(None),
    };
    let Ok(provider) = source_as_provider(&scan.source) else {
        return Ok(None);
    };
    let Some(table) = provider.downcast_ref::<MarrowTable>() else {
        return Ok(None);
    };
    let schema = table.schema();
    let Ok(field) = schema.field_with_name(&column.name) else {
        return Ok(None);
    };
    let table_name = scan.table_name.table().to_string();
    let Some(query) = query_vector(constant, &table_name, &column.name, field.data_type())? else {
        return Ok(None);
    };
    let search = VectorSearchTable {
        inner: provider.clone(),
        table: table_name,
        column: column.name.clone(),
        query,
        constant: constant.clone(),
        k,
        metric,
        opts: opts.clone(),
    };
    let new_scan = TableScan::try_new(
        scan.table_name.clone(),
        provider_as_source(Arc::new(search)),
        scan.projection.clone(),
        scan.filters.clone(),
        None,
    )?;
    Ok(Some(LogicalPlan::TableScan(new_scan)))
}

/// The constant side of a distance call as a one-vector array of the column's element type, checked against the
/// column. `None` for a NULL query (every distance is NULL; nothing to search).
pub(crate) fn query_vector(
    value: &ScalarValue,
    table: &str,
    column: &str,
    column_type: &DataType,
) -> DFResult<Option<ArrayRef>> {
    let DataType::FixedSizeList(item, dim) = column_type else {
        return Ok(None);
    };
    let values: ArrayRef = match value {
        ScalarValue::List(a) if !a.is_null(0) => a.value(0),
        ScalarValue::LargeList(a) if !a.is_null(0) => a.value(0),
        ScalarValue::FixedSizeList(a) if !a.is_null(0) => a.value(0),
        ScalarValue::Binary(Some(b))
        | ScalarValue::LargeBinary(Some(b))
        | ScalarValue::FixedSizeBinary(_, Some(b)) => {
            Arc::new(arrow::array::UInt8Array::from(b.clone()))
        }
        _ => return Ok(None),
    };
    if values.len() != *dim as usize {
        return Err(Error::invalid(format!(
            "query vector has {} dimensions; {table}.{column} has {dim}",
            values.len()
        ))
        .into());
    }
    if values.null_count() > 0 {
        return Err(Error::invalid("query vector contains NULL elements").into());
    }
    let as_f64 = arrow::compute::cast(&values, &DataType::Float64)?;
    let as_f64 = as_f64
        .as_any()
        .downcast_ref::<arrow::array::Float64Array>()
        .ok_or_else(|| DataFusionError::Internal("cast to Float64".into()))?;
    if as_f64.values().iter().any(|v| !v.is_finite()) {
        return Err(Error::invalid("query vector contains NaN or infinite values").into());
    }
    Ok(Some(arrow::compute::cast(&values, item.data_type())?))
}

/// A vector index usable for a query: its name and metric.
#[derive(Debug, Clone)]
pub(crate) struct VectorIndex {
    pub name: String,
    pub kind: String,
    pub metric: Option<DistanceType>,
}

/// The metric a vector index was built for, from its details.
pub(crate) fn details_metric(desc: &dyn lance_index::IndexDescription) -> Option<DistanceType> {
    let details: serde_json::Value = desc
        .details()
        .ok()
        .and_then(|d| serde_json::from_str(&d).ok())?;
    ["metric_type", "distance_type", "metric"]
        .iter()
        .find_map(|k| details.get(*k).and_then(|v| v.as_str()))
        .and_then(|s| DistanceType::try_from(s).ok())
}

/// The vector indexes on one column.
pub(crate) async fn vector_indexes(ds: &Dataset, column: &str) -> crate::Result<Vec<VectorIndex>> {
    let Some(field) = ds.schema().field(column) else {
        return Ok(vec![]);
    };
    let id = field.id;
    let mut out = vec![];
    for desc in ds.describe_indices(None).await? {
        if desc.name().starts_with("__") || desc.field_ids().first().map(|f| *f as i32) != Some(id)
        {
            continue;
        }
        let kind = desc.index_type().to_uppercase();
        if !kind.starts_with("IVF") && !kind.contains("HNSW") && kind != "VECTOR" {
            continue;
        }
        let metric = details_metric(desc.as_ref());
        out.push(VectorIndex {
            name: desc.name().to_string(),
            kind,
            metric,
        });
    }
    Ok(out)
}

/// A table scan that answers `ORDER BY distance LIMIT k`: the k nearest rows that pass the pushed-down filters.
#[derive(Debug)]
pub struct VectorSearchTable {
    inner: Arc<dyn TableProvider>,
    table: String,
    column: String,
    query: ArrayRef,
    /// The query value `query` was derived from (what a cached plan's parameter substitution looks for).
    constant: ScalarValue,
    k: usize,
    metric: DistanceType,
    opts: MarrowOptions,
}

impl VectorSearchTable {
    pub(crate) fn constant(&self) -> &ScalarValue {
        &self.constant
    }

    pub(crate) fn marrow_table(&self) -> DFResult<&MarrowTable> {
        self.inner.downcast_ref::<MarrowTable>().ok_or_else(|| {
            DataFusionError::Internal("vector search over a non-Marrow table".into())
        })
    }

    async fn plan_ann(
        &self,
        ds: &Arc<Dataset>,
        index: &VectorIndex,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let schema = self.inner.schema();
        let columns: Vec<String> = match projection {
            Some(p) => p.iter().map(|i| schema.field(*i).name().clone()).collect(),
            None => schema.fields().iter().map(|f| f.name().clone()).collect(),
        };
        let projected = Arc::new(match projection {
            Some(p) => schema.project(p)?,
            None => schema.as_ref().clone(),
        });
        let direct = DirectSearch {
            ds,
            index_name: &index.name,
            column: &self.column,
            key: self.query.clone(),
            constant: self.constant.clone(),
            table: self.table.clone(),
            column_type: schema.field_with_name(&self.column)?.data_type().clone(),
            k: self.k,
            metric: self.metric,
            opts: &self.opts,
            columns: columns.clone(),
            schema: projected,
            has_filter: !filters.is_empty(),
        }
        .plan()
        .await
        .map_err(lance_err)?;
        let describe = |search: &str| {
            format!(
                "mode=ann, index={} ({}, {}), column={}, k={}, nprobes={}, refine_factor={}, ef={}, prefilter={}, search={search}",
                index.name,
                index.kind,
                metric_name(self.metric),
                self.column,
                self.k,
                setting(self.opts.nprobes),
                setting(self.opts.refine_factor),
                setting(self.opts.ef),
                conjunction(filters.iter().cloned()).map_or("none".to_string(), |f| f.to_string()),
            )
        };
        let why = match direct {
            Direct::Plan(plan) => {
                return Ok(Arc::new(
                    crate::exec::PassExec::new("VectorSearchExec", plan, describe("direct"))
                        .serial(),
                ))
            }
            Direct::Scanner(why) => why,
        };
        let mut scan = ds.scan();
        scan.disable_scoring_autoprojection();
        scan.project(&columns).map_err(lance_err)?;
        scan.prefilter(true);
        scan.nearest(&self.column, self.query.as_ref(), self.k)
            .map_err(lance_err)?;
        scan.distance_metric(self.metric);
        if let Some(filter) = conjunction(filters.iter().cloned()) {
            scan.filter_expr(filter);
        }
        if self.opts.nprobes > 0 {
            scan.nprobes(self.opts.nprobes);
        }
        if self.opts.refine_factor > 0 {
            scan.refine(self.opts.refine_factor as u32);
        }
        if self.opts.ef > 0 {
            scan.ef(self.opts.ef);
        }
        if self.opts.query_parallelism != 0 {
            scan.query_parallelism(self.opts.query_parallelism);
        }
        let plan = scan.create_plan().await.map_err(lance_err)?;
        // Keep exactly the columns DataFusion asked for, in its order (Lance may add its own).
        let plan_schema = plan.schema();
        let indices = columns
            .iter()
            .map(|name| plan_schema.index_of(name))
            .collect::<Result<Vec<_>, _>>()?;
        let plan = project(plan, Some(&indices))?;
        Ok(Arc::new(
            crate::exec::PassExec::new(
                "VectorSearchExec",
                plan,
                describe(&format!("lance scanner ({why})")),
            )
            .serial(),
        ))
    }
}

fn setting(v: usize) -> String {
    if v == 0 {
        "auto".into()
    } else {
        v.to_string()
    }
}

pub(crate) fn lance_err(e: lance::Error) -> DataFusionError {
    DataFusionError::from(Error::from(e))
}

#[async_trait]
impl TableProvider for VectorSearchTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn CatalogSession,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let ds = self.marrow_table()?.dataset().clone();
        let reason = if self.opts.exact_search {
            "SET marrow.exact_search = true".to_string()
        } else if self.k > MAX_ANN_K {
            format!(
                "k = {} is above {MAX_ANN_K}, the largest k served from an index",
                self.k
            )
        } else {
            let indexes = vector_indexes(&ds, &self.column).await?;
            match indexes.iter().find(|i| i.metric == Some(self.metric)) {
                Some(index) => return self.plan_ann(&ds, index, projection, filters).await,
                None => match indexes.first() {
                    Some(other) => format!(
                        "index {} on {} uses metric {}, the query orders by {}",
                        other.name,
                        self.column,
                        other.metric.map(metric_name).unwrap_or("unknown"),
                        metric_name(self.metric)
                    ),
                    None => format!("no vector index on {}.{}", self.table, self.column),
                },
            }
        };
        let plan = self.inner.scan(state, projection, filters, limit).await?;
        Ok(Arc::new(crate::exec::PassExec::new(
            "VectorSearchExec",
            plan,
            format!(
                "mode=exact, column={}, metric={}, k={}, reason={reason}",
                self.column,
                metric_name(self.metric),
                self.k
            ),
        )))
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DFResult<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }
}

/// Keep the columns at `projection` of a plan's output, by name and in that order.
pub(crate) fn project(
    plan: Arc<dyn ExecutionPlan>,
    projection: Option<&Vec<usize>>,
) -> DFResult<Arc<dyn ExecutionPlan>> {
    use datafusion::physical_expr::expressions::Column;
    let Some(p) = projection else {
        return Ok(plan);
    };
    let schema = plan.schema();
    let exprs = p
        .iter()
        .map(|i| {
            let name = schema.field(*i).name().clone();
            (
                Arc::new(Column::new(&name, *i))
                    as Arc<dyn datafusion::physical_expr::PhysicalExpr>,
                name,
            )
        })
        .collect::<Vec<_>>();
    Ok(Arc::new(
        datafusion::physical_plan::projection::ProjectionExec::try_new(exprs, plan)?,
    ))
}
