//! The traits through which Marrow's features plug into a database: statements Marrow runs itself instead of
//! DataFusion, `CALL` procedures, table functions and optimizer rules. [`crate::builtins`] registers Marrow's own;
//! the session sees only these traits, so adding a feature never touches it.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::TableFunctionImpl;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::optimizer::OptimizerRule;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::Statement;

use crate::error::{Error, Result};
use crate::session::{QueryOutput, Session};

/// A kind of statement Marrow runs itself (table DDL on Lance, DML, indexes, COPY, CALL …).
#[async_trait]
pub trait StatementHandler: Send + Sync {
    /// Whether this handler runs `statement`. Handlers are asked in registration order; a statement no handler
    /// takes is planned and run by DataFusion.
    fn handles(&self, statement: &DFStatement) -> bool;

    async fn run(
        &self,
        session: &Session,
        statement: DFStatement,
        params: Option<ParamValues>,
    ) -> Result<QueryOutput>;
}

/// Whether a parsed statement is a SQL statement for which `f` holds (most handlers' `handles`).
pub fn is_sql(statement: &DFStatement, f: impl Fn(&Statement) -> bool) -> bool {
    matches!(statement, DFStatement::Statement(s) if f(s))
}

/// The error of a handler run on a statement its `handles` refused: a routing bug, not bad input.
pub fn misrouted(handler: &str) -> Error {
    Error::internal(format!("the {handler} handler was given another statement"))
}

/// The SQL statement inside a parsed one, for handlers that take only SQL statements.
pub fn sql_statement(statement: DFStatement, handler: &str) -> Result<Statement> {
    match statement {
        DFStatement::Statement(s) => Ok(*s),
        _ => Err(misrouted(handler)),
    }
}

/// One argument of a procedure, for arity checks and help.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub name: &'static str,
    /// What the argument is, as an error message names it ("the model name").
    pub what: &'static str,
    pub optional: bool,
}

impl Param {
    pub const fn required(name: &'static str, what: &'static str) -> Self {
        Self {
            name,
            what,
            optional: false,
        }
    }
    pub const fn optional(name: &'static str, what: &'static str) -> Self {
        Self {
            name,
            what,
            optional: true,
        }
    }
}

/// A `CALL name(args…)` procedure. Each returns one row describing what it did.
#[async_trait]
pub trait Procedure: Send + Sync {
    fn name(&self) -> &'static str;
    /// The arguments in order, optional ones last.
    fn params(&self) -> &'static [Param];
    /// One or two sentences: what it does and what its row reports.
    fn doc(&self) -> &'static str;
    async fn call(&self, session: &Session, args: Args) -> Result<RecordBatch>;
}

/// The evaluated arguments of one `CALL`, with accessors that name the procedure and argument in their errors.
#[derive(Debug)]
pub struct Args {
    procedure: &'static str,
    params: &'static [Param],
    values: Vec<ScalarValue>,
}

impl Args {
    /// Arguments checked against the procedure's arity.
    pub fn new(procedure: &dyn Procedure, values: Vec<ScalarValue>) -> Result<Self> {
        let params = procedure.params();
        let min = params.iter().filter(|p| !p.optional).count();
        if values.len() < min || values.len() > params.len() {
            let count = if min == params.len() {
                min.to_string()
            } else {
                format!("{min} to {}", params.len())
            };
            return Err(Error::invalid(format!(
                "CALL {} takes {count} argument(s), got {}: {}",
                procedure.name(),
                values.len(),
                signature(procedure)
            )));
        }
        Ok(Self {
            procedure: procedure.name(),
            params,
            values,
        })
    }

    /// The procedure's name.
    pub fn procedure(&self) -> &'static str {
        self.procedure
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The i-th value as given (None when an optional argument was left out).
    pub fn get(&self, i: usize) -> Option<&ScalarValue> {
        self.values.get(i)
    }

    /// What the i-th argument is, prefixed with the procedure ("CALL drop_model: the model name").
    pub fn what(&self, i: usize) -> String {
        let what = self.params.get(i).map(|p| p.what).unwrap_or("an argument");
        format!("CALL {}: {what}", self.procedure)
    }

    /// The i-th argument as a string.
    pub fn string(&self, i: usize) -> Result<String> {
        match self.values.get(i) {
            Some(v) => string_value(v, &self.what(i)),
            None => Err(Error::invalid(format!("{} is missing", self.what(i)))),
        }
    }

    /// The i-th argument as a string, None when left out or NULL.
    pub fn optional_string(&self, i: usize) -> Result<Option<String>> {
        match self.values.get(i) {
            None => Ok(None),
            Some(v) if v.is_null() => Ok(None),
            Some(v) => string_value(v, &self.what(i)).map(Some),
        }
    }
}

fn string_value(v: &ScalarValue, what: &str) -> Result<String> {
    match v {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::Utf8View(Some(s))
        | ScalarValue::LargeUtf8(Some(s)) => Ok(s.clone()),
        other => Err(Error::invalid(format!(
            "{what} must be a string, got {other}"
        ))),
    }
}

/// `name(arg, arg[, optional])`, as help and arity errors show a procedure.
pub fn signature(procedure: &dyn Procedure) -> String {
    let mut out = format!("{}(", procedure.name());
    let mut open = 0;
    for (i, p) in procedure.params().iter().enumerate() {
        if p.optional {
            out.push('[');
            open += 1;
        }
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(p.name);
    }
    out.push_str(&"]".repeat(open));
    out.push(')');
    out
}

/// A table function, whether its first argument names a Marrow table (table functions are planned
/// synchronously, so the session opens that table before planning), and the argument positions that take `$n`
/// parameters.
#[derive(Clone)]
pub struct TableFunction {
    pub name: &'static str,
    pub names_table: bool,
    pub function: Arc<dyn TableFunctionImpl>,
    pub params: &'static [(usize, ParamArg)],
}

/// What a `$n` parameter in one argument position of a table function holds. Table functions are planned with the
/// SQL, before values are bound: a statement is prepared with a probe value of this type in the argument, and each
/// execution writes the bound values into the arguments before planning (session/table_function_params.rs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParamArg {
    Text,
    Integer,
    Number,
    /// A query vector for the vector column named by the string literal at this argument position.
    VectorFor(usize),
}

/// Everything registered with one database.
#[derive(Default, Clone)]
pub struct Extensions {
    statements: Vec<Arc<dyn StatementHandler>>,
    procedures: BTreeMap<&'static str, Arc<dyn Procedure>>,
    table_functions: Vec<TableFunction>,
    optimizer_rules: Vec<Arc<dyn OptimizerRule + Send + Sync>>,
}

impl Extensions {
    pub fn statement(mut self, handler: impl StatementHandler + 'static) -> Self {
        self.statements.push(Arc::new(handler));
        self
    }

    pub fn procedure(mut self, procedure: impl Procedure + 'static) -> Self {
        self.procedures
            .insert(procedure.name(), Arc::new(procedure));
        self
    }

    pub fn table_function(
        mut self,
        name: &'static str,
        names_table: bool,
        function: impl TableFunctionImpl + 'static,
    ) -> Self {
        self.table_functions.push(TableFunction {
            name,
            names_table,
            function: Arc::new(function),
            params: &[],
        });
        self
    }

    /// The argument positions of the table function registered last that take `$n` parameters.
    pub fn with_params(mut self, params: &'static [(usize, ParamArg)]) -> Self {
        if let Some(f) = self.table_functions.last_mut() {
            f.params = params;
        }
        self
    }

    pub fn optimizer_rule(mut self, rule: impl OptimizerRule + Send + Sync + 'static) -> Self {
        self.optimizer_rules.push(Arc::new(rule));
        self
    }

    pub fn statements(&self) -> &[Arc<dyn StatementHandler>] {
        &self.statements
    }

    pub fn procedures(&self) -> impl Iterator<Item = &Arc<dyn Procedure>> {
        self.procedures.values()
    }

    /// A procedure by name, or an error listing every procedure.
    pub fn find_procedure(&self, name: &str) -> Result<&Arc<dyn Procedure>> {
        self.procedures.get(name).ok_or_else(|| {
            Error::not_found(format!(
                "unknown procedure '{name}'; procedures: {} (SELECT * FROM marrow_procedures() describes each)",
                self.procedures
                    .values()
                    .map(|p| signature(p.as_ref()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }

    pub fn table_functions(&self) -> &[TableFunction] {
        &self.table_functions
    }

    pub fn optimizer_rules(&self) -> &[Arc<dyn OptimizerRule + Send + Sync>] {
        &self.optimizer_rules
    }
}
