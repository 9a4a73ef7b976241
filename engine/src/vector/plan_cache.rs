//! Physical plans of vector queries run again with new `$n` values.
//!
//! A prepared memory lookup (`SELECT … ORDER BY cosine_distance(emb, $1) LIMIT k`) spends about as long being
//! planned — parse, logical plan, optimizer, physical plan, index lookup — as being searched. DataFusion has no
//! placeholders in physical plans, so Marrow keeps the physical plan of such a query per session and SQL text and, for
//! the next execution, rebuilds it with the new values in place of the old: the literals of the sort and projection
//! expressions and the direct ANN search's query. A plan is kept only when that substitution is provably complete:
//!
//! - every parameter is a vector (a list value), and each sits in the plan as the very value that was bound (the same
//!   array), so it can be found by identity and never confused with a literal written in the SQL;
//! - planning the statement with different values gives the same optimized plan as substituting them, so no
//!   optimizer step folded a parameter into something else (a cast, `normalize($1)`);
//! - every node of the physical plan is one whose expressions the substitution knows (the direct ANN path and the
//!   projections, sorts, merges and round-robin repartitions above it); Lance's scanner plans are planned per
//!   execution.
//!
//! A kept plan is used only while nothing it depends on has changed: no statement that can change what queries plan
//! to ran in this database since it was planned (DDL, `SET`, procedures, a write that creates or replaces a table),
//! and every dataset it reads is still at its latest version (which notices row writes, this process's and other
//! processes' commits). Otherwise the statement is planned afresh.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, FixedSizeListArray, Float64Array, LargeListArray, ListArray};
use arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{ParamValues, Result as DFResult, ScalarValue};
use datafusion::datasource::source_as_provider;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_expr::{LexOrdering, PhysicalExpr, PhysicalSortExpr};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::limit::{GlobalLimitExec, LocalLimitExec};
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::{ExecutionPlan, Partitioning};
use lance::Dataset;

use crate::exec::PassExec;
use crate::vector::ann::DirectAnnExec;
use crate::vector::VectorSearchTable;

/// Plans kept per session; beyond this many SQL texts the cache starts over.
const CAPACITY: usize = 64;

#[derive(Default)]
pub(crate) struct PlanCache {
    entries: Mutex<HashMap<String, Arc<CachedPlan>>>,
    /// Statements whose check failed, with the generation it failed in: not checked again (it plans the statement
    /// a second time) until something changes.
    rejected: Mutex<HashMap<String, u64>>,
    hits: AtomicU64,
    /// Queries run on the plan their prepare made (a one-shot statement's GetFlightInfo), not planned again.
    ready_hits: AtomicU64,
}

pub(crate) struct CachedPlan {
    generation: u64,
    /// The values the plan was made with: their arrays mark where each parameter sits.
    params: Vec<ScalarValue>,
    plan: Arc<dyn ExecutionPlan>,
    task: Arc<TaskContext>,
    datasets: Vec<Arc<Dataset>>,
}

impl std::fmt::Debug for PlanCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.entries.lock().map(|e| e.len()).unwrap_or(0);
        write!(f, "PlanCache({n} plans)")
    }
}

impl PlanCache {
    pub(crate) fn note_ready_hit(&self) {
        self.ready_hits.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn ready_hits(&self) -> u64 {
        self.ready_hits.load(Ordering::Relaxed)
    }

    /// How many plans are kept, and how many executions reused one.
    pub(crate) fn stats(&self) -> (usize, u64) {
        let n = self.entries.lock().expect("plan cache").len();
        (n, self.hits.load(Ordering::Relaxed))
    }

    fn get(&self, sql: &str) -> Option<Arc<CachedPlan>> {
        self.entries.lock().expect("plan cache").get(sql).cloned()
    }

    fn remove(&self, sql: &str) {
        self.entries.lock().expect("plan cache").remove(sql);
    }

    fn insert(&self, sql: &str, plan: CachedPlan) {
        let mut entries = self.entries.lock().expect("plan cache");
        if entries.len() >= CAPACITY && !entries.contains_key(sql) {
            entries.clear();
        }
        entries.insert(sql.to_string(), Arc::new(plan));
    }

    /// The kept plan of `sql` rebuilt for `params`, when there is one and it is still valid; `None` means plan
    /// afresh (also for values the substitution does not take, such as a NULL vector, so that planning reports
    /// them exactly as it always does).
    pub(crate) async fn lookup(
        &self,
        sql: &str,
        params: &ParamValues,
        generation: u64,
    ) -> Option<(Arc<dyn ExecutionPlan>, Arc<TaskContext>)> {
        let entry = self.get(sql)?;
        if entry.generation != generation {
            self.remove(sql);
            return None;
        }
        let values = vector_params(params)?;
        if values.len() != entry.params.len()
            || values
                .iter()
                .zip(&entry.params)
                .any(|(new, old)| new.data_type() != old.data_type())
        {
            return None;
        }
        if !at_latest_versions(&entry.datasets).await {
            self.remove(sql);
            return None;
        }
        let subs = Substitution::new(&entry.params, values);
        let plan = rebind(&entry.plan, &subs).ok().flatten()?;
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some((plan, entry.task.clone()))
    }

    /// Keep `physical` for `sql` if the substitution is complete for it (see the module docs). `replan` plans the
    /// statement with other values (to the optimized logical plan) for the check.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn offer<F, Fut>(
        &self,
        sql: &str,
        params: &ParamValues,
        generation: u64,
        optimized: &LogicalPlan,
        physical: &Arc<dyn ExecutionPlan>,
        task: Arc<TaskContext>,
        replan: F,
    ) where
        F: FnOnce(ParamValues) -> Fut,
        Fut: std::future::Future<Output = crate::Result<LogicalPlan>>,
    {
        let Some(values) = vector_params(params) else {
            return;
        };
        if self.rejected.lock().expect("plan cache").get(sql) == Some(&generation) {
            return;
        }
        // Every node must be one the substitution rebuilds, and the plan must read only datasets it can check.
        let same = Substitution::new(&values, values.clone());
        if !matches!(rebind(physical, &same), Ok(Some(_))) {
            return;
        }
        let mut datasets = vec![];
        let _ = physical.apply(|node| {
            if let Some(d) = node.downcast_ref::<DirectAnnExec>() {
                datasets.push(d.dataset().clone());
            }
            Ok(TreeNodeRecursion::Continue)
        });
        if datasets.is_empty() {
            return;
        }
        if !substitution_is_complete(optimized, &values, replan).await {
            let mut rejected = self.rejected.lock().expect("plan cache");
            if rejected.len() >= CAPACITY {
                rejected.clear();
            }
            rejected.insert(sql.to_string(), generation);
            return;
        }
        self.insert(
            sql,
            CachedPlan {
                generation,
                params: values,
                plan: physical.clone(),
                task,
                datasets,
            },
        );
    }
}

/// Whether every dataset a kept plan reads is still its table's latest version (which also notices other
/// processes' commits). A table gone or unreadable counts as changed: planning afresh reports it.
pub(crate) async fn at_latest_versions(datasets: &[Arc<Dataset>]) -> bool {
    for ds in datasets {
        if ds.latest_version_id().await.ok() != Some(ds.version_id()) {
            return false;
        }
    }
    true
}

/// Whether planning with other values gives the plan that substituting them gives.
async fn substitution_is_complete<F, Fut>(
    optimized: &LogicalPlan,
    values: &[ScalarValue],
    replan: F,
) -> bool
where
    F: FnOnce(ParamValues) -> Fut,
    Fut: std::future::Future<Output = crate::Result<LogicalPlan>>,
{
    let Some(probe) = values.iter().map(perturb).collect::<Option<Vec<_>>>() else {
        return false;
    };
    let Ok(other) = replan(ParamValues::List(
        probe.iter().cloned().map(Into::into).collect(),
    ))
    .await
    else {
        return false;
    };
    let subs = Substitution::new(values, probe);
    let Ok(substituted) = substitute_logical(optimized, &subs) else {
        return false;
    };
    substituted == other
        && vector_sources(optimized)
            .iter()
            .map(|v| subs.get(v).unwrap_or(v).clone())
            .collect::<Vec<_>>()
            == vector_sources(&other)
}

/// The bound values when every one is a non-NULL vector (a list), the only parameters a cached plan takes.
fn vector_params(params: &ParamValues) -> Option<Vec<ScalarValue>> {
    let ParamValues::List(list) = params else {
        return None;
    };
    if list.is_empty() {
        return None;
    }
    list.iter()
        .map(|p| (array_id(&p.value).is_some() && !p.value.is_null()).then(|| p.value.clone()))
        .collect()
}

/// The identity of a list value's array: the same bound value, wherever the plan carries it.
fn array_id(v: &ScalarValue) -> Option<usize> {
    match v {
        ScalarValue::List(a) => Some(Arc::as_ptr(a) as *const () as usize),
        ScalarValue::LargeList(a) => Some(Arc::as_ptr(a) as *const () as usize),
        ScalarValue::FixedSizeList(a) => Some(Arc::as_ptr(a) as *const () as usize),
        _ => None,
    }
}

/// Old bound values (by identity) to new ones.
struct Substitution(Vec<(usize, ScalarValue)>);

impl Substitution {
    fn new(old: &[ScalarValue], new: Vec<ScalarValue>) -> Self {
        Self(
            old.iter()
                .zip(new)
                .filter_map(|(o, n)| Some((array_id(o)?, n)))
                .collect(),
        )
    }

    fn get(&self, v: &ScalarValue) -> Option<&ScalarValue> {
        let id = array_id(v)?;
        self.0.iter().find(|(o, _)| *o == id).map(|(_, n)| n)
    }
}

/// Another value of the same type, different in every element: each element moved by one towards (and past) zero.
fn perturb(v: &ScalarValue) -> Option<ScalarValue> {
    fn shift(values: &ArrayRef) -> Option<ArrayRef> {
        let f64s = arrow::compute::cast(values, &DataType::Float64).ok()?;
        let f64s = f64s.as_any().downcast_ref::<Float64Array>()?;
        let moved: Float64Array = f64s
            .iter()
            .map(|x| x.map(|x| if x > 0.0 { x - 1.0 } else { x + 1.0 }))
            .collect();
        let back = arrow::compute::cast(&moved, values.data_type()).ok()?;
        (back.null_count() == values.null_count()).then_some(back)
    }
    let out = match v {
        ScalarValue::List(a) => {
            let (field, offsets, values, nulls) = a.as_ref().clone().into_parts();
            ScalarValue::List(Arc::new(
                ListArray::try_new(field, offsets, shift(&values)?, nulls).ok()?,
            ))
        }
        ScalarValue::LargeList(a) => {
            let (field, offsets, values, nulls) = a.as_ref().clone().into_parts();
            ScalarValue::LargeList(Arc::new(
                LargeListArray::try_new(field, offsets, shift(&values)?, nulls).ok()?,
            ))
        }
        ScalarValue::FixedSizeList(a) => {
            let (field, size, values, nulls) = a.as_ref().clone().into_parts();
            ScalarValue::FixedSizeList(Arc::new(
                FixedSizeListArray::try_new(field, size, shift(&values)?, nulls).ok()?,
            ))
        }
        _ => return None,
    };
    (out != *v).then_some(out)
}

/// The optimized logical plan with the substitution's literals replaced.
fn substitute_logical(plan: &LogicalPlan, subs: &Substitution) -> DFResult<LogicalPlan> {
    plan.clone()
        .transform_up_with_subqueries(|node| {
            node.map_expressions(|e| {
                e.transform_up(|e| match &e {
                    Expr::Literal(v, meta) => match subs.get(v) {
                        Some(n) => Ok(Transformed::yes(Expr::Literal(n.clone(), meta.clone()))),
                        None => Ok(Transformed::no(e)),
                    },
                    _ => Ok(Transformed::no(e)),
                })
            })
        })
        .data()
}

/// The query values held by the plan's vector-search scans (plan equality does not compare table sources).
fn vector_sources(plan: &LogicalPlan) -> Vec<ScalarValue> {
    let mut out = vec![];
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            if let Ok(provider) = source_as_provider(&scan.source) {
                if let Some(search) = provider.downcast_ref::<VectorSearchTable>() {
                    out.push(search.constant().clone());
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    out
}

fn substitute_expr(
    expr: &Arc<dyn PhysicalExpr>,
    subs: &Substitution,
) -> DFResult<Arc<dyn PhysicalExpr>> {
    Arc::clone(expr)
        .transform_up(|e| {
            if let Some(l) = e.downcast_ref::<Literal>() {
                if let Some(n) = subs.get(l.value()) {
                    return Ok(Transformed::yes(Arc::new(Literal::new(n.clone())) as _));
                }
            }
            Ok(Transformed::no(e))
        })
        .data()
}

fn substitute_ordering(
    ordering: &LexOrdering,
    subs: &Substitution,
) -> DFResult<Option<LexOrdering>> {
    let exprs = ordering
        .iter()
        .map(|e| {
            Ok(PhysicalSortExpr::new(
                substitute_expr(&e.expr, subs)?,
                e.options,
            ))
        })
        .collect::<DFResult<Vec<_>>>()?;
    Ok(LexOrdering::new(exprs))
}

/// A new plan of new nodes (fresh metrics and sort state) with the substitution applied; `None` when a node is not
/// one the substitution knows, or the direct search does not take a value.
fn rebind(
    plan: &Arc<dyn ExecutionPlan>,
    subs: &Substitution,
) -> DFResult<Option<Arc<dyn ExecutionPlan>>> {
    if let Some(search) = plan.downcast_ref::<DirectAnnExec>() {
        let value = subs.get(search.constant()).unwrap_or(search.constant());
        return Ok(search
            .with_constant(value)?
            .map(|p| p as Arc<dyn ExecutionPlan>));
    }
    let mut children = Vec::with_capacity(plan.children().len());
    for child in plan.children() {
        match rebind(child, subs)? {
            Some(c) => children.push(c),
            None => return Ok(None),
        }
    }
    if let Some(p) = plan.downcast_ref::<ProjectionExec>() {
        let Ok([child]) = <[_; 1]>::try_from(children) else {
            return Ok(None);
        };
        let exprs = p
            .expr()
            .iter()
            .map(|e| {
                Ok(ProjectionExpr::new(
                    substitute_expr(&e.expr, subs)?,
                    e.alias.clone(),
                ))
            })
            .collect::<DFResult<Vec<_>>>()?;
        return Ok(Some(Arc::new(ProjectionExec::try_new(exprs, child)?)));
    }
    if let Some(s) = plan.downcast_ref::<SortExec>() {
        let Ok([child]) = <[_; 1]>::try_from(children) else {
            return Ok(None);
        };
        let Some(ordering) = substitute_ordering(s.expr(), subs)? else {
            return Ok(None);
        };
        let sort = SortExec::new(ordering, child)
            .with_preserve_partitioning(s.preserve_partitioning())
            .with_fetch(s.fetch());
        return Ok(Some(Arc::new(sort)));
    }
    if let Some(m) = plan.downcast_ref::<SortPreservingMergeExec>() {
        let Ok([child]) = <[_; 1]>::try_from(children) else {
            return Ok(None);
        };
        let Some(ordering) = substitute_ordering(m.expr(), subs)? else {
            return Ok(None);
        };
        let merge = SortPreservingMergeExec::new(ordering, child).with_fetch(m.fetch());
        return Ok(Some(Arc::new(merge)));
    }
    let round_robin = plan
        .downcast_ref::<RepartitionExec>()
        .is_some_and(|r| matches!(r.partitioning(), Partitioning::RoundRobinBatch(_)));
    // Nodes without expressions of their own.
    if round_robin
        || plan.is::<PassExec>()
        || plan.is::<CooperativeExec>()
        || plan.is::<CoalescePartitionsExec>()
        || plan.is::<GlobalLimitExec>()
        || plan.is::<LocalLimitExec>()
    {
        return Ok(Some(
            plan.clone().with_new_children(children)?.reset_state()?,
        ));
    }
    Ok(None)
}
