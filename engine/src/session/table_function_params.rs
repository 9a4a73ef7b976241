//! `$n` parameters in table-function arguments (`hybrid_search('memories', 'content', 'embedding', $1, embed($1),
//! $2)`). DataFusion calls a table function while it turns SQL into a plan, before parameter values are bound, and
//! the functions need constants (a query text to parse, a vector to search with, a k). So:
//!
//! - to prepare, each such parameter is replaced by a probe value of the type its position takes
//!   ([`ParamArg`]) and reported with that type, so the parameter schema lists it;
//! - to execute, the bound values are written into the arguments as literals before planning.
//!
//! Only arguments of registered positions are rewritten; `$n` anywhere else stays a placeholder for DataFusion.
//! A placeholder nested in an argument's expression (`embed($1)`) is text unless a position says otherwise.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{
    self, Expr as SqlExpr, FunctionArg, FunctionArgExpr, TableFactor, Value, VisitMut, VisitorMut,
};

use crate::catalog::MarrowSchema;
use crate::error::{Error, Result};
use crate::extension::{ParamArg, TableFunction};

/// What to put where a table-function argument has a `$n`.
pub(crate) enum Binding<'a> {
    /// The bound values of one execution.
    Values(&'a ParamValues),
    /// Probe values, to prepare.
    Probe,
}

/// Whether `sql` may have parameters in the arguments of one of `functions` (a cheap test before parsing).
pub(crate) fn may_have_params(sql: &str, functions: &[TableFunction]) -> bool {
    sql.contains('$') && {
        let lower = sql.to_ascii_lowercase();
        functions
            .iter()
            .any(|f| !f.params.is_empty() && lower.contains(f.name))
    }
}

/// Rewrite the `$n` in table-function arguments of `statement` per `binding`; the parameters found, with the type
/// each argument takes.
pub(crate) fn bind(
    statement: &mut DFStatement,
    functions: &[TableFunction],
    catalog: &MarrowSchema,
    binding: Binding<'_>,
) -> Result<BTreeMap<String, DataType>> {
    let mut visitor = Rewrite {
        functions,
        catalog,
        binding,
        found: BTreeMap::new(),
        error: None,
    };
    match statement {
        DFStatement::Statement(s) => {
            let _ = s.visit(&mut visitor);
        }
        DFStatement::Explain(e) => {
            if let DFStatement::Statement(s) = e.statement.as_mut() {
                let _ = s.visit(&mut visitor);
            }
        }
        _ => {}
    }
    match visitor.error {
        Some(e) => Err(e),
        None => Ok(visitor.found),
    }
}

struct Rewrite<'a> {
    functions: &'a [TableFunction],
    catalog: &'a MarrowSchema,
    binding: Binding<'a>,
    found: BTreeMap<String, DataType>,
    error: Option<Error>,
}

impl VisitorMut for Rewrite<'_> {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        let TableFactor::Table {
            name,
            args: Some(args),
            ..
        } = factor
        else {
            return ControlFlow::Continue(());
        };
        let fname = name.to_string().to_lowercase();
        let Some(function) = self.functions.iter().find(|f| f.name == fname) else {
            return ControlFlow::Continue(());
        };
        let literal = |i: usize, args: &[FunctionArg]| match args.get(i) {
            Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(SqlExpr::Value(v)))) => {
                match &v.value {
                    Value::SingleQuotedString(s) => Some(s.clone()),
                    _ => None,
                }
            }
            _ => None,
        };
        let table = literal(0, &args.args);
        for (i, kind) in function.params {
            let column = match kind {
                ParamArg::VectorFor(c) => literal(*c, &args.args),
                _ => None,
            };
            let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(expr))) = args.args.get_mut(*i)
            else {
                continue;
            };
            let result = match placeholder(expr) {
                Some(id) => {
                    let typ =
                        self.type_of(function.name, *kind, table.as_deref(), column.as_deref());
                    typ.and_then(|typ| {
                        let value = self.value(&id, &typ)?;
                        self.found.insert(id, typ);
                        *expr = value;
                        Ok(())
                    })
                }
                None => self.nested(expr),
            };
            if let Err(e) = result {
                self.error = Some(e);
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }
}

impl Rewrite<'_> {
    fn type_of(
        &self,
        function: &str,
        kind: ParamArg,
        table: Option<&str>,
        column: Option<&str>,
    ) -> Result<DataType> {
        Ok(match kind {
            ParamArg::Text => DataType::Utf8,
            ParamArg::Integer => DataType::Int64,
            ParamArg::Number => DataType::Float64,
            ParamArg::VectorFor(_) => {
                let (Some(table), Some(column)) = (table, column) else {
                    return Err(Error::invalid(format!(
                        "{function}: with a $n query vector, the table and the vector column must be literals"
                    )));
                };
                self.catalog
                    .cached_schema(table)
                    .and_then(|s| {
                        s.field_with_name(column)
                            .ok()
                            .map(|f| f.data_type().clone())
                    })
                    .ok_or_else(|| {
                        Error::not_found(format!(
                            "{function}: column {column} not found in {table}"
                        ))
                    })?
            }
        })
    }

    /// `$n` nested in an argument's expression (`embed($1)`): text, unless a position gave it a type.
    fn nested(&mut self, expr: &mut SqlExpr) -> Result<()> {
        let mut error = None;
        let _ = ast::visit_expressions_mut(expr, |e| {
            if let Some(id) = placeholder(e) {
                let typ = self.found.get(&id).cloned().unwrap_or(DataType::Utf8);
                match self.value(&id, &typ) {
                    Ok(v) => {
                        self.found.entry(id).or_insert(typ);
                        *e = v;
                    }
                    Err(err) => {
                        error = Some(err);
                        return ControlFlow::Break(());
                    }
                }
            }
            ControlFlow::Continue(())
        });
        error.map_or(Ok(()), Err)
    }

    /// The literal that stands for parameter `id` of type `typ`.
    fn value(&self, id: &str, typ: &DataType) -> Result<SqlExpr> {
        match self.binding {
            Binding::Probe => Ok(probe(typ)),
            Binding::Values(values) => {
                let value = values
                    .get_placeholders_with_values(id)
                    .map_err(|_| Error::invalid(format!("no value is bound for parameter {id}")))?;
                to_sql(value.value(), id)
            }
        }
    }
}

fn placeholder(expr: &SqlExpr) -> Option<String> {
    match expr {
        SqlExpr::Value(v) => match &v.value {
            Value::Placeholder(p) => Some(p.clone()),
            _ => None,
        },
        _ => None,
    }
}

fn number(n: String) -> SqlExpr {
    SqlExpr::value(Value::Number(n, false))
}

fn probe(typ: &DataType) -> SqlExpr {
    match typ {
        DataType::Utf8 => SqlExpr::value(Value::SingleQuotedString("probe".into())),
        DataType::Int64 => number("1".into()),
        DataType::Float64 => number("1.0".into()),
        DataType::FixedSizeList(_, n) => SqlExpr::Array(ast::Array {
            elem: (0..*n).map(|_| number("1.0".into())).collect(),
            named: false,
        }),
        _ => SqlExpr::value(Value::Null),
    }
}

/// A bound value as a SQL literal. Floats print in Rust's shortest round-trip form, so the literal parses back to
/// the same value (an f32 element widened to f64 and narrowed again is unchanged).
fn to_sql(value: &ScalarValue, id: &str) -> Result<SqlExpr> {
    let float = |f: f64| {
        if f.is_finite() {
            Ok(number(format!("{f:?}")))
        } else {
            Err(Error::invalid(format!(
                "parameter {id} holds {f}; a table-function argument must be finite"
            )))
        }
    };
    Ok(match value {
        v if v.is_null() => SqlExpr::value(Value::Null),
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => SqlExpr::value(Value::SingleQuotedString(s.clone())),
        ScalarValue::Boolean(Some(b)) => SqlExpr::value(Value::Boolean(*b)),
        ScalarValue::Float32(Some(f)) => float(f64::from(*f))?,
        ScalarValue::Float64(Some(f)) => float(*f)?,
        v if v.data_type().is_integer() => number(v.to_string()),
        ScalarValue::List(_) | ScalarValue::LargeList(_) | ScalarValue::FixedSizeList(_) => {
            let array = value.to_array()?;
            let items = match array.data_type() {
                DataType::List(_) => array.as_list::<i32>().value(0),
                DataType::LargeList(_) => array.as_list::<i64>().value(0),
                _ => array.as_fixed_size_list().value(0),
            };
            let items = arrow::compute::cast(&items, &DataType::Float64).map_err(|_| {
                Error::invalid(format!("parameter {id}: a query vector must hold numbers"))
            })?;
            let items = items.as_primitive::<Float64Type>();
            if items.null_count() > 0 {
                return Err(Error::invalid(format!(
                    "parameter {id}: a query vector must not hold NULL"
                )));
            }
            SqlExpr::Array(ast::Array {
                elem: items
                    .values()
                    .iter()
                    .map(|f| float(*f))
                    .collect::<Result<_>>()?,
                named: false,
            })
        }
        other => {
            return Err(Error::invalid(format!(
                "parameter {id} is {}, which a table-function argument cannot take",
                other.data_type()
            )))
        }
    })
}
