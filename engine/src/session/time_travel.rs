//! Time travel in any query: `FROM t VERSION AS OF 12`, `FROM t TIMESTAMP AS OF '2026-11-26 10:00:00'` (or
//! `FOR SYSTEM_TIME AS OF …`; any constant timestamp expression, e.g. `now() - INTERVAL '1 hour'`). DataFusion does
//! not plan these: each versioned reference is opened here and bound to a unique name for one statement.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use datafusion::common::ScalarValue;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{
    Expr, Ident, ObjectName, Statement, TableAlias, TableFactor, TableVersion, Value, VisitMut,
    VisitorMut,
};

use crate::catalog::versions::version_at;
use crate::catalog::MarrowSchema;
use crate::error::{Error, Result};
use crate::session::Session;

/// Makes the names of pinned (versioned) table references unique across sessions.
static NEXT_PIN: AtomicU64 = AtomicU64::new(1);

enum AsOf {
    Version(u64),
    Timestamp(Box<Expr>),
}

struct VersionedRef {
    table: String,
    as_of: AsOf,
    pinned: String,
}

/// Versioned table references resolved for one statement; dropping it forgets them (the plan keeps its tables).
pub(crate) struct Pins {
    schema: Arc<MarrowSchema>,
    names: Vec<String>,
}

impl Pins {
    pub(crate) fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        for n in &self.names {
            self.schema.unpin(n);
        }
    }
}

/// Rewrite every `t VERSION AS OF …` / `t TIMESTAMP AS OF …` in the statement into a reference to that version of
/// `t`, opened now and registered under a unique name until the returned guard drops. `t`'s name stays usable as
/// its qualifier (it becomes the alias when none is given).
pub(crate) async fn pin_versions(session: &Session, statement: &mut DFStatement) -> Result<Pins> {
    let refs = collect_versioned(statement)?;
    let schema = session.database().schema_provider().clone();
    let mut pins = Pins {
        schema: schema.clone(),
        names: vec![],
    };
    for r in refs {
        if !schema.lance_table_exists(&r.table) {
            return Err(Error::not_found(format!(
                "table '{}' not found (only Marrow tables have versions)",
                r.table
            )));
        }
        let version = match r.as_of {
            AsOf::Version(v) => v,
            AsOf::Timestamp(expr) => {
                let at = eval_timestamp(session, &expr).await?;
                version_at(&schema, &r.table, at).await?
            }
        };
        let table = schema.open_table_version(&r.table, version).await?;
        schema.pin(&r.pinned, table);
        pins.names.push(r.pinned);
    }
    Ok(pins)
}

fn collect_versioned(statement: &mut DFStatement) -> Result<Vec<VersionedRef>> {
    struct Rewrite {
        refs: Vec<VersionedRef>,
        error: Option<Error>,
    }
    impl VisitorMut for Rewrite {
        type Break = ();
        fn pre_visit_table_factor(&mut self, tf: &mut TableFactor) -> ControlFlow<()> {
            let TableFactor::Table {
                name,
                alias,
                version,
                ..
            } = tf
            else {
                return ControlFlow::Continue(());
            };
            let Some(v) = version.take() else {
                return ControlFlow::Continue(());
            };
            let as_of = match v {
                TableVersion::VersionAsOf(Expr::Value(ref value)) => match &value.value {
                    Value::Number(n, _) => match n.parse::<u64>() {
                        Ok(n) => AsOf::Version(n),
                        Err(_) => {
                            self.error = Some(Error::invalid(format!(
                                "VERSION AS OF needs a version number (1, 2, …), got {n}"
                            )));
                            return ControlFlow::Break(());
                        }
                    },
                    other => {
                        self.error = Some(Error::invalid(format!(
                            "VERSION AS OF needs a version number, got {other}"
                        )));
                        return ControlFlow::Break(());
                    }
                },
                TableVersion::TimestampAsOf(e) | TableVersion::ForSystemTimeAsOf(e) => {
                    AsOf::Timestamp(Box::new(e))
                }
                other => {
                    self.error = Some(Error::unsupported(format!(
                        "'{other}' is not supported; use VERSION AS OF n or TIMESTAMP AS OF '…'"
                    )));
                    return ControlFlow::Break(());
                }
            };
            let Some(ident) = name.0.last().and_then(|p| p.as_ident()).cloned() else {
                return ControlFlow::Continue(());
            };
            let table = match ident.quote_style {
                Some(_) => ident.value.clone(),
                None => ident.value.to_lowercase(),
            };
            let pinned = format!("{table}@{}", NEXT_PIN.fetch_add(1, Ordering::Relaxed));
            if alias.is_none() {
                *alias = Some(TableAlias {
                    explicit: true,
                    name: ident,
                    columns: vec![],
                    at: None,
                });
            }
            *name = ObjectName::from(vec![Ident::with_quote('"', pinned.clone())]);
            self.refs.push(VersionedRef {
                table,
                as_of,
                pinned,
            });
            ControlFlow::Continue(())
        }
    }
    let mut v = Rewrite {
        refs: vec![],
        error: None,
    };
    match statement {
        DFStatement::Statement(s) => {
            if matches!(s.as_ref(), Statement::CreateView(_)) {
                let mut probe = Rewrite {
                    refs: vec![],
                    error: None,
                };
                let _ = s.visit(&mut probe);
                if !probe.refs.is_empty() || probe.error.is_some() {
                    return Err(Error::unsupported(
                        "a view cannot pin a table version; query the version directly or restore it into a table",
                    ));
                }
            }
            let _ = s.visit(&mut v);
        }
        DFStatement::Explain(e) => return collect_versioned(&mut e.statement),
        DFStatement::CopyTo(c) => {
            if let datafusion::sql::parser::CopyToSource::Query(q) = &mut c.source {
                let _ = q.visit(&mut v);
            }
        }
        _ => {}
    }
    match v.error {
        Some(e) => Err(e),
        None => Ok(v.refs),
    }
}

async fn eval_timestamp(session: &Session, expr: &Expr) -> Result<i64> {
    let v = session
        .eval_constants(&[format!("CAST(({expr}) AS TIMESTAMP)")], None)
        .await
        .map_err(|e| {
            Error::invalid(format!(
                "TIMESTAMP AS OF {expr}: not a timestamp ({})",
                e.message()
            ))
        })?;
    match &v[0] {
        ScalarValue::TimestampNanosecond(Some(ns), _) => Ok(*ns / 1000),
        ScalarValue::TimestampMicrosecond(Some(us), _) => Ok(*us),
        ScalarValue::TimestampMillisecond(Some(ms), _) => Ok(*ms * 1000),
        ScalarValue::TimestampSecond(Some(s), _) => Ok(*s * 1_000_000),
        other => Err(Error::invalid(format!(
            "TIMESTAMP AS OF {expr}: not a timestamp ({other})"
        ))),
    }
}
