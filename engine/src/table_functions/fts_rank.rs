//! `ORDER BY bm25(column, query) DESC LIMIT k` over one Marrow table, planned as a full-text search: the table scan
//! under the sort becomes the same search `fts_search` runs (the k best rows by BM25, the WHERE clause pushed into
//! the scan as Lance's prefilter), with `_score` added to its columns, and each `bm25(…)` in the sort key and the
//! projections between becomes that column. A `bm25` the rule cannot place (no LIMIT, ascending, a join or another
//! node in between) stays a call, whose evaluation explains how to use it.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, Result as DFResult, ScalarValue};
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::logical_expr::{Expr, LogicalPlan, Projection, SubqueryAlias, TableScan};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

use super::fts_search::{ranking, SCORE_COLUMN};
use crate::catalog::MarrowTable;
use crate::vector::{key_at_scan, strip_casts};

/// The function this rule plans.
const BM25: &str = "bm25";

/// Turns `ORDER BY bm25(col, 'query') DESC LIMIT k` over a Marrow table into a full-text search.
#[derive(Debug, Default)]
pub struct FullTextTopKRule;

impl OptimizerRule for FullTextTopKRule {
    fn name(&self) -> &str {
        "marrow_full_text_top_k"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> DFResult<Transformed<LogicalPlan>> {
        let LogicalPlan::Sort(sort) = &plan else {
            return Ok(Transformed::no(plan));
        };
        let (Some(k), [order]) = (sort.fetch, sort.expr.as_slice()) else {
            return Ok(Transformed::no(plan));
        };
        if order.asc {
            return Ok(Transformed::no(plan));
        }
        let Some((key, scan)) = key_at_scan(&sort.input, &order.expr)? else {
            return Ok(Transformed::no(plan));
        };
        let Some((column, query)) = bm25_call(&key) else {
            return Ok(Transformed::no(plan));
        };
        if scan.fetch.is_some() {
            return Ok(Transformed::no(plan));
        }
        let Ok(provider) = source_as_provider(&scan.source) else {
            return Ok(Transformed::no(plan));
        };
        if provider.downcast_ref::<MarrowTable>().is_none() {
            return Ok(Transformed::no(plan));
        }
        let table_columns = provider.schema().fields().len();
        let search = ranking(provider, scan.table_name.table(), &column.name, &query, k)?;
        let mut projection = scan
            .projection
            .clone()
            .unwrap_or_else(|| (0..table_columns).collect());
        projection.push(table_columns);
        let new_scan = LogicalPlan::TableScan(TableScan::try_new(
            scan.table_name.clone(),
            provider_as_source(search),
            Some(projection),
            scan.filters.clone(),
            None,
        )?);
        let score = Expr::Column(Column::new(Some(scan.table_name.clone()), SCORE_COLUMN));
        let (input, score) = rebuild(sort.input.as_ref(), new_scan, score)?;
        let mut new_sort = sort.clone();
        new_sort.expr[0].expr = replace_calls(order.expr.clone(), &score)?;
        new_sort.input = Arc::new(input);
        let new_sort = LogicalPlan::Sort(new_sort);
        // `_score` flowed up for the sort key: the result keeps the columns it had.
        if new_sort.schema().fields().len() == plan.schema().fields().len() {
            return Ok(Transformed::yes(new_sort));
        }
        let columns = plan
            .schema()
            .columns()
            .into_iter()
            .map(Expr::Column)
            .collect();
        Ok(Transformed::yes(LogicalPlan::Projection(
            Projection::try_new(columns, Arc::new(new_sort))?,
        )))
    }
}

/// `bm25(column, '<query>')` (through casts and aliases): the column and the query.
fn bm25_call(e: &Expr) -> Option<(Column, String)> {
    let e = strip_casts(e);
    let Expr::ScalarFunction(f) = e else {
        return None;
    };
    if f.func.name() != BM25 {
        return None;
    }
    let [a, b] = f.args.as_slice() else {
        return None;
    };
    match (strip_casts(a), strip_casts(b)) {
        (
            Expr::Column(c),
            Expr::Literal(
                ScalarValue::Utf8(Some(q))
                | ScalarValue::LargeUtf8(Some(q))
                | ScalarValue::Utf8View(Some(q)),
                _,
            ),
        ) => Some((c.clone(), q.clone())),
        _ => None,
    }
}

/// `plan` (the sort's input, down to the scan) over `scan`, whose `_score` is `score`: each `bm25(…)` in a
/// projection becomes the score, and each projection also passes the score up, for a sort key that names the call
/// itself. Returns the plan and how its output names the score.
fn rebuild(plan: &LogicalPlan, scan: LogicalPlan, score: Expr) -> DFResult<(LogicalPlan, Expr)> {
    match plan {
        LogicalPlan::Projection(p) => {
            let (input, score) = rebuild(&p.input, scan, score)?;
            let mut exprs = p
                .expr
                .iter()
                .map(|e| replace_calls(e.clone(), &score))
                .collect::<DFResult<Vec<_>>>()?;
            if !exprs.contains(&score) {
                exprs.push(score.clone());
            }
            let projection = Projection::try_new(exprs, Arc::new(input))?;
            Ok((LogicalPlan::Projection(projection), score))
        }
        LogicalPlan::SubqueryAlias(a) => {
            let (input, _) = rebuild(&a.input, scan, score)?;
            let alias = SubqueryAlias::try_new(Arc::new(input), a.alias.clone())?;
            let score = Expr::Column(Column::new(Some(a.alias.clone()), SCORE_COLUMN));
            Ok((LogicalPlan::SubqueryAlias(alias), score))
        }
        _ => Ok((scan, score)),
    }
}

/// `e` with each `bm25(…)` call replaced by `score`.
fn replace_calls(e: Expr, score: &Expr) -> DFResult<Expr> {
    Ok(e.transform(|e| {
        if bm25_call(&e).is_some() {
            Ok(Transformed::yes(score.clone()))
        } else {
            Ok(Transformed::no(e))
        }
    })?
    .data)
}
