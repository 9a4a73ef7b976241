//! Plans kept per session and SQL text whose `$n` values are read when the plan executes, not when it is made.
//!
//! A prepared hybrid recall (`SELECT … FROM hybrid_search('memories', 'content', 'embedding', $3, $2, 10, …) WHERE
//! namespace = $1 AND (expires_at IS NULL OR expires_at > now()) ORDER BY _score DESC LIMIT 10`) spent most of its
//! server time being planned again at every execution: the table function needs its arguments as values, so they
//! were written into the SQL as literals (384 numbers for the vector) and the statement was parsed, planned and
//! optimized afresh. Here it is planned once with its placeholders left in place:
//!
//! - a table function that takes deferred arguments ([`hybrid_search`](crate::table_functions)) keeps a `$n` in
//!   its arguments and in the WHERE conditions pushed into it, and resolves them from the [`BoundParams`] of the
//!   task that executes the plan;
//! - `now()` is planned as the placeholder [`NOW`], valued at each execution (DataFusion folds `now()` to a constant
//!   while optimizing; a kept plan must not keep that instant);
//! - the plan is kept only when no placeholder is left anywhere else, and no other function that is folded per
//!   statement (`current_date()` …) is in it; otherwise the statement goes the usual way, planned per execution.
//!
//! A kept plan is used while no statement that changes what queries plan to (DDL, `SET`, procedures, a write that
//! creates or replaces a table) ran since it was made; the tables it reads are opened at their latest version when it
//! executes, so row writes need no invalidation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, ParamValues, Result as DFResult, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::expr::Placeholder;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{Expr, ExprSchemable, LogicalPlan, Volatility};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_plan::ExecutionPlan;

/// The placeholder that stands for `now()` in a kept plan.
pub(crate) const NOW: &str = "$__now";

/// Plans kept per session; beyond this many SQL texts the cache starts over.
const CAPACITY: usize = 64;

/// The values of one execution: the bound parameters and the statement's `now()`.
#[derive(Debug)]
pub(crate) struct BoundParams {
    pub values: ParamValues,
    pub now: ScalarValue,
}

impl BoundParams {
    pub(crate) fn new(values: ParamValues) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_nanos()).ok());
        Self {
            values,
            now: ScalarValue::TimestampNanosecond(now, Some("+00:00".into())),
        }
    }

    /// The values bound to the task executing a plan, if it was planned with deferred placeholders.
    pub(crate) fn of(task: &TaskContext) -> Option<Arc<BoundParams>> {
        task.session_config().get_extension::<BoundParams>()
    }

    fn value(&self, id: &str) -> DFResult<ScalarValue> {
        if id == NOW {
            return Ok(self.now.clone());
        }
        Ok(self
            .values
            .get_placeholders_with_values(id)?
            .value()
            .clone())
    }
}

/// Whether `expr` has a placeholder anywhere in it.
pub(crate) fn has_placeholder(expr: &Expr) -> bool {
    expr.exists(|e| Ok(matches!(e, Expr::Placeholder(_))))
        .unwrap_or(true)
}

/// `expr` (over the columns of `schema`) with every placeholder replaced by its value in `bound`, cast to the type
/// the plan gave it, and folded to a constant where it can be (`embed($1)` becomes the vector).
pub(crate) fn resolve(
    expr: &Expr,
    bound: &BoundParams,
    task: &TaskContext,
    schema: &SchemaRef,
) -> DFResult<Expr> {
    let replaced = expr
        .clone()
        .transform(|e| match e {
            Expr::Placeholder(Placeholder { id, field }) => {
                let mut value = bound.value(&id)?;
                if let Some(field) = field {
                    if !value.is_null() && value.data_type() != *field.data_type() {
                        value = value.cast_to(field.data_type())?;
                    }
                }
                Ok(Transformed::yes(Expr::Literal(value, None)))
            }
            other => Ok(Transformed::no(other)),
        })
        .data()?;
    let simplifier = ExprSimplifier::new(
        SimplifyContext::builder()
            .with_config_options(Arc::new(task.session_config().options().as_ref().clone()))
            .with_schema(Arc::new(DFSchema::try_from(schema.as_ref().clone())?))
            .build(),
    );
    simplifier.simplify(replaced)
}

/// `plan` with each `now()` replaced by the [`NOW`] placeholder, or an error when the plan has another function
/// that the optimizer folds once per statement (a kept plan would keep its first value).
pub(crate) fn defer_now(plan: LogicalPlan) -> DFResult<LogicalPlan> {
    let empty = datafusion::common::DFSchema::empty();
    plan.transform_up_with_subqueries(|node| {
        node.map_expressions(|e| {
            e.transform(|e| match &e {
                Expr::ScalarFunction(f) if f.name() == "now" && f.args.is_empty() => {
                    let field = e.to_field(&empty)?.1;
                    Ok(Transformed::yes(Expr::Placeholder(
                        Placeholder::new_with_field(NOW.to_string(), Some(field)),
                    )))
                }
                Expr::ScalarFunction(f) if f.func.signature().volatility == Volatility::Stable => {
                    Err(DataFusionError::Plan(format!(
                        "{} is evaluated once per statement",
                        f.name()
                    )))
                }
                _ => Ok(Transformed::no(e)),
            })
        })
    })
    .data()
}

/// Whether an optimized plan keeps placeholders only where `defers` says they are resolved at execution (the
/// table scans of providers that take deferred arguments).
pub(crate) fn placeholders_only_in(
    plan: &LogicalPlan,
    defers: &dyn Fn(&LogicalPlan) -> bool,
) -> bool {
    let mut ok = true;
    let _ = plan.apply_with_subqueries(|node| {
        if defers(node) {
            return Ok(TreeNodeRecursion::Continue);
        }
        let _ = node.apply_expressions(|e| {
            if has_placeholder(e) {
                ok = false;
                return Ok(TreeNodeRecursion::Stop);
            }
            Ok(TreeNodeRecursion::Continue)
        });
        Ok(if ok {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
    ok
}

/// A plan ready to execute, and the task that executes it.
pub(crate) type Runnable = (Arc<dyn ExecutionPlan>, Arc<TaskContext>);

struct Kept {
    generation: u64,
    plan: Arc<dyn ExecutionPlan>,
    task: Arc<TaskContext>,
}

/// The kept plans of one session (and its clones).
#[derive(Default)]
pub(crate) struct DeferredPlans {
    kept: Mutex<HashMap<String, Arc<Kept>>>,
    /// Statements that cannot be kept, with the generation that was found in.
    rejected: Mutex<HashMap<String, u64>>,
    hits: AtomicU64,
}

impl std::fmt::Debug for DeferredPlans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.kept.lock().map(|e| e.len()).unwrap_or(0);
        write!(f, "DeferredPlans({n} plans)")
    }
}

impl DeferredPlans {
    pub(crate) fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    pub(crate) fn is_rejected(&self, sql: &str, generation: u64) -> bool {
        self.rejected.lock().expect("deferred plans").get(sql) == Some(&generation)
    }

    pub(crate) fn reject(&self, sql: &str, generation: u64) {
        let mut rejected = self.rejected.lock().expect("deferred plans");
        if rejected.len() >= CAPACITY {
            rejected.clear();
        }
        rejected.insert(sql.to_string(), generation);
    }

    pub(crate) fn keep(
        &self,
        sql: &str,
        generation: u64,
        plan: Arc<dyn ExecutionPlan>,
        task: Arc<TaskContext>,
    ) {
        let mut kept = self.kept.lock().expect("deferred plans");
        if kept.len() >= CAPACITY && !kept.contains_key(sql) {
            kept.clear();
        }
        kept.insert(
            sql.to_string(),
            Arc::new(Kept {
                generation,
                plan,
                task,
            }),
        );
    }

    /// The kept plan of `sql`, fresh for one more execution, and a task that carries `bound`.
    pub(crate) fn lookup(
        &self,
        sql: &str,
        generation: u64,
        bound: Arc<BoundParams>,
    ) -> DFResult<Option<Runnable>> {
        let entry = {
            let mut kept = self.kept.lock().expect("deferred plans");
            match kept.get(sql) {
                Some(e) if e.generation == generation => e.clone(),
                Some(_) => {
                    kept.remove(sql);
                    return Ok(None);
                }
                None => return Ok(None),
            }
        };
        // Operators keep state from a run (a TopK's dynamic filter): each execution starts from a clean copy.
        let plan =
            datafusion::physical_plan::execution_plan::reset_plan_states(entry.plan.clone())?;
        self.hits.fetch_add(1, Ordering::Relaxed);
        Ok(Some((plan, with_params(&entry.task, bound))))
    }
}

/// `task` carrying `bound` for the deferred placeholders of the plan it executes.
pub(crate) fn with_params(task: &TaskContext, bound: Arc<BoundParams>) -> Arc<TaskContext> {
    let config = task.session_config().clone().with_extension(bound);
    Arc::new(TaskContext::new(
        task.task_id(),
        task.session_id(),
        config,
        task.scalar_functions().clone(),
        task.higher_order_functions().clone(),
        task.aggregate_functions().clone(),
        task.window_functions().clone(),
        task.runtime_env(),
    ))
}
