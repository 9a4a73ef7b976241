//! The graph of persisted views: which names a view's definition reads, and a check that following those names
//! never comes back to the view itself nor goes deeper than a planner's stack allows.
//!
//! Checked when a view is created or replaced (so a cycle is refused with the path that closes it) and again each
//! time a view is planned (so a data directory that holds a cycle from before still lists, queries and drops its
//! other views, and the broken one fails with a clear error instead of recursing until the stack runs out).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::ops::ControlFlow;
use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session as CatalogSession, TableProvider};
use datafusion::common::{DataFusionError, Result as DFResult};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{Query, Visit, Visitor};

use crate::error::{Error, Result};

/// How many views one view may stack on (v1 reads v2 reads … v32).
pub const MAX_VIEW_DEPTH: usize = 32;

tokio::task_local! {
    static PLANNING: ();
}

/// Run `f` as the planning of a statement: within it a view that no longer plans is an error naming the view.
/// Outside it (a catalog listing such as `information_schema.columns`, which looks up every table) such a view is a
/// [`BrokenView`], so one broken view cannot make the whole catalog unreadable.
pub async fn planning<F: Future>(f: F) -> F::Output {
    if PLANNING.try_with(|_| ()).is_ok() {
        return f.await;
    }
    PLANNING.scope((), f).await
}

/// Whether a view that no longer plans should fail the caller (see [`planning`]).
pub fn strict() -> bool {
    PLANNING.try_with(|_| ()).is_ok()
}

/// A view whose definition no longer plans, as listed outside statement planning: no columns, and reading it fails
/// with the planning error.
#[derive(Debug)]
pub struct BrokenView {
    error: String,
}

impl BrokenView {
    pub fn new(error: &DataFusionError) -> Self {
        Self {
            error: crate::error::without_locations(&error.to_string()),
        }
    }
}

#[async_trait]
impl TableProvider for BrokenView {
    fn schema(&self) -> SchemaRef {
        Arc::new(Schema::empty())
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn CatalogSession,
        _projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        Err(DataFusionError::Plan(self.error.clone()))
    }
}

/// The relation names a view definition reads, normalized as DataFusion resolves them, without the names of its
/// own common table expressions.
pub fn references(definition: &str) -> Result<BTreeSet<String>> {
    struct Names {
        relations: BTreeSet<String>,
        ctes: BTreeSet<String>,
    }
    impl Visitor for Names {
        type Break = ();
        fn pre_visit_relation(
            &mut self,
            relation: &datafusion::sql::sqlparser::ast::ObjectName,
        ) -> ControlFlow<()> {
            if let Ok(name) = crate::sql::table_name(relation) {
                self.relations.insert(name);
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
            if let Some(with) = &query.with {
                for cte in &with.cte_tables {
                    let ident = &cte.alias.name;
                    self.ctes.insert(match ident.quote_style {
                        Some(_) => ident.value.clone(),
                        None => ident.value.to_lowercase(),
                    });
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut names = Names {
        relations: BTreeSet::new(),
        ctes: BTreeSet::new(),
    };
    for statement in crate::sql::parse(definition)? {
        if let DFStatement::Statement(s) = statement {
            // A stored definition may be the whole CREATE VIEW: only its query reads anything.
            let _ = match s.as_ref() {
                datafusion::sql::sqlparser::ast::Statement::CreateView(cv) => {
                    cv.query.visit(&mut names)
                }
                other => other.visit(&mut names),
            };
        }
    }
    Ok(names.relations.difference(&names.ctes).cloned().collect())
}

/// Check that `name` (with `definition`) reaches neither itself nor a depth past [`MAX_VIEW_DEPTH`] through
/// `views` (name → definition; `name`'s own entry, if any, is taken from `definition`).
pub fn check(name: &str, definition: &str, views: &BTreeMap<String, String>) -> Result<()> {
    // Depth-first over view names only (tables end a path), with the path kept for the error.
    let mut path = vec![name.to_string()];
    let mut stack = vec![references(definition)?.into_iter().collect::<Vec<_>>()];
    let mut seen = BTreeSet::new();
    while let Some(frontier) = stack.last_mut() {
        let Some(next) = frontier.pop() else {
            stack.pop();
            path.pop();
            continue;
        };
        if next == name {
            path.push(next);
            return Err(Error::invalid(format!(
                "view '{name}' would refer to itself: {}",
                path.join(" → ")
            )));
        }
        let Some(def) = views.get(&next) else {
            continue;
        };
        if path.len() > MAX_VIEW_DEPTH {
            return Err(Error::invalid(format!(
                "view '{name}' stacks more than {MAX_VIEW_DEPTH} views: {} → …",
                path.join(" → ")
            )));
        }
        // A view reached twice on different paths (a diamond) needs no second visit.
        if !seen.insert(next.clone()) {
            continue;
        }
        let refs = references(def).unwrap_or_default();
        path.push(next);
        stack.push(refs.into_iter().collect());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn views(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(n, d)| (n.to_string(), d.to_string()))
            .collect()
    }

    #[test]
    fn references_skip_ctes_and_normalize_case() {
        let refs =
            references("SELECT * FROM A JOIN \"B\" ON true WHERE x IN (SELECT y FROM c)").unwrap();
        assert_eq!(refs.into_iter().collect::<Vec<_>>(), ["B", "a", "c"]);
        let refs = references("WITH a AS (SELECT * FROM t) SELECT * FROM a").unwrap();
        assert_eq!(refs.into_iter().collect::<Vec<_>>(), ["t"]);
    }

    #[test]
    fn cycles_are_found_with_their_path() {
        let v = views(&[("b", "SELECT * FROM c"), ("c", "SELECT * FROM a")]);
        let err = check("a", "SELECT * FROM b", &v).unwrap_err();
        assert_eq!(
            err.message(),
            "view 'a' would refer to itself: a → b → c → a"
        );
        let err = check("a", "SELECT * FROM a", &v).unwrap_err();
        assert!(err.message().ends_with("a → a"), "{}", err.message());
        // A diamond is not a cycle.
        let v = views(&[
            ("b", "SELECT * FROM d"),
            ("c", "SELECT * FROM d"),
            ("d", "SELECT * FROM t"),
        ]);
        check("a", "SELECT * FROM b UNION ALL SELECT * FROM c", &v).unwrap();
    }

    #[test]
    fn deep_stacks_are_refused() {
        let pairs: Vec<(String, String)> = (0..40)
            .map(|i| (format!("v{i}"), format!("SELECT * FROM v{}", i + 1)))
            .collect();
        let v: BTreeMap<String, String> = pairs.into_iter().collect();
        let err = check("top", "SELECT * FROM v0", &v).unwrap_err();
        assert!(
            err.message().contains("more than 32 views"),
            "{}",
            err.message()
        );
        check("top", "SELECT * FROM v20", &v).unwrap();
    }
}
