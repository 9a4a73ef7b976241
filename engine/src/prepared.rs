//! Prepared statements: a statement planned once for its result and parameter schemas, then run with parameter rows
//! bound by a client (Flight SQL's prepared statements and executemany).
//!
//! - [`Session::prepare_statement`] plans a statement without running it ([`PreparedInfo`]).
//! - [`PreparedStatement::bind`] casts bound Arrow rows to the types the placeholders expect ([`Parameters`]).
//! - [`PreparedStatement::execute`] streams a query's rows (once per parameter row, concatenated, in the schema
//!   announced at prepare) or runs anything else now; [`PreparedStatement::execute_update`] returns a row count.
//! - [`Session::execute_many`] runs a statement once per parameter row; a one-row `INSERT … VALUES` becomes one
//!   `INSERT … SELECT` over all rows (one plan, one commit).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::compute::{cast_with_options, CastOptions};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::execution::context::SessionState;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::Statement;
use futures::{StreamExt, TryStreamExt};
use lance::Dataset;

use crate::error::{Error, Result};
use crate::session::{QueryOutput, Session};
use crate::sql::parse_one;
use crate::statements::dml;

/// Relations the engine binds for a single statement (parameter rows, ingested rows, DML targets) are named with
/// this prefix; no table may be (see `catalog::validate_table_name`), and catalog listings leave them out.
const INTERNAL_PREFIX: &str = "__marrow";
/// The parameter rows of an executemany INSERT, as a relation of its rewritten source query.
const PARAMS_RELATION: &str = "__marrow_params";

/// Whether a relation name is one of the engine's per-statement relations rather than a user's table or view.
pub fn is_internal_relation(name: &str) -> bool {
    name.starts_with(INTERNAL_PREFIX)
}

/// A prepared statement's shapes, as Flight SQL reports them.
#[derive(Debug, Clone)]
pub struct PreparedInfo {
    /// The result schema of a query; empty for statements that return a row count.
    pub dataset_schema: SchemaRef,
    /// One field per `$n` placeholder, typed where the plan determines it.
    pub parameter_schema: SchemaRef,
    pub is_query: bool,
}

/// Parameter rows bound to a prepared statement, each value cast to the type its placeholder expects.
#[derive(Debug, Clone, Default)]
pub struct Parameters(Vec<ParamValues>);

impl Parameters {
    /// The number of parameter rows (each one run of the statement).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_rows(self) -> Vec<ParamValues> {
        self.0
    }
}

impl From<Vec<ParamValues>> for Parameters {
    fn from(rows: Vec<ParamValues>) -> Self {
        Self(rows)
    }
}

/// A statement planned once: its SQL and its result and parameter schemas.
#[derive(Debug, Clone)]
pub struct PreparedStatement {
    sql: String,
    info: PreparedInfo,
    /// A query without parameters keeps the plan made at prepare, so running it right after (a one-shot
    /// statement's DoGet after its GetFlightInfo) does not plan it a second time.
    ready: Option<Arc<ReadyPlan>>,
    /// The database's generation when it was prepared (see [`PreparedStatement::is_current`]).
    generation: u64,
}

/// A query's optimized plan, the session state it was planned in, and the tables whose versions it reads.
pub(crate) struct ReadyPlan {
    generation: u64,
    state: SessionState,
    plan: LogicalPlan,
    datasets: Vec<Arc<Dataset>>,
}

impl std::fmt::Debug for ReadyPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReadyPlan(generation {})", self.generation)
    }
}

impl ReadyPlan {
    /// The plan when every table it reads can be checked for newer versions: Lance tables (and vector searches
    /// over them) are read at the version they were opened with; `fts_search` and `hybrid_search` open their
    /// table when the plan is executed. Any other source (a catalog listing, an external file listing) is planned
    /// afresh each run.
    fn new(generation: u64, state: SessionState, plan: LogicalPlan) -> Option<Self> {
        use datafusion::common::tree_node::TreeNodeRecursion;
        use datafusion::datasource::source_as_provider;
        // `SELECT … INTO t` is a query to the parser and DDL to the planner: it runs as DDL, each time.
        if matches!(
            plan,
            LogicalPlan::Ddl(_)
                | LogicalPlan::Statement(_)
                | LogicalPlan::Dml(_)
                | LogicalPlan::Copy(_)
        ) {
            return None;
        }
        let mut datasets = vec![];
        let mut checkable = true;
        let _ = plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node {
                let Ok(provider) = source_as_provider(&scan.source) else {
                    checkable = false;
                    return Ok(TreeNodeRecursion::Stop);
                };
                match crate::catalog::MarrowTable::of_provider(provider.as_ref()) {
                    Some(table) => datasets.push(table.dataset().clone()),
                    None if crate::table_functions::opens_at_execution(provider.as_ref()) => {}
                    None => {
                        checkable = false;
                        return Ok(TreeNodeRecursion::Stop);
                    }
                }
            }
            Ok(TreeNodeRecursion::Continue)
        });
        checkable.then_some(Self {
            generation,
            state,
            plan,
            datasets,
        })
    }

    /// Whether the plan still reads what a fresh plan would (see [`Session::execute_ready`]).
    pub(crate) async fn is_current(&self, generation: u64) -> bool {
        generation == self.generation
            && crate::vector::plan_cache::at_latest_versions(&self.datasets).await
    }

    pub(crate) fn parts(&self) -> (&SessionState, &LogicalPlan) {
        (&self.state, &self.plan)
    }
}

impl PreparedStatement {
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// Whether nothing that could change this statement's schemas or plan (DDL, a write, `SET`) has run in the
    /// database since it was prepared: a cache of statements by SQL text prepares a statement again otherwise.
    pub fn is_current(&self, session: &Session) -> bool {
        session.database().generation() == self.generation
    }

    pub fn info(&self) -> &PreparedInfo {
        &self.info
    }

    /// The result schema of a query; the one-column `count` schema for statements that return a row count.
    pub fn dataset_schema(&self) -> &SchemaRef {
        &self.info.dataset_schema
    }

    pub fn parameter_schema(&self) -> &SchemaRef {
        &self.info.parameter_schema
    }

    pub fn is_query(&self) -> bool {
        self.info.is_query
    }

    /// Turn bound parameter batches into one parameter row per batch row, cast to the types the statement expects.
    pub fn bind(&self, batches: &[RecordBatch]) -> Result<Parameters> {
        coerce(&self.info.parameter_schema, batches).map(Parameters)
    }

    /// A query with placeholders needs bound values before it runs.
    pub fn check_parameters(&self, params: Option<&Parameters>) -> Result<()> {
        let n = self.info.parameter_schema.fields().len();
        if self.info.is_query && n > 0 && params.is_none() {
            return Err(Error::invalid(format!(
                "the statement has {n} parameter(s): prepare it and bind values for them"
            )));
        }
        Ok(())
    }

    /// Run the statement. A query streams its rows: once per parameter row, the results concatenated, in the
    /// schema announced at prepare. Anything else runs now, once or once per parameter row: the row counts are
    /// summed, or the rows it returned are collected.
    pub async fn execute(
        &self,
        session: &Session,
        params: Option<Parameters>,
    ) -> Result<QueryOutput> {
        self.check_parameters(params.as_ref())?;
        if self.info.is_query {
            return self.query(session, params).await.map(QueryOutput::Rows);
        }
        let runs: Vec<Option<ParamValues>> = match params {
            None => vec![None],
            Some(rows) => rows.0.into_iter().map(Some).collect(),
        };
        let mut count: Option<u64> = None;
        let mut rows: Option<(SchemaRef, Vec<RecordBatch>)> = None;
        for p in runs {
            match session.execute_with_params(&self.sql, p).await? {
                QueryOutput::Count(n) => count = Some(count.unwrap_or(0) + n),
                QueryOutput::Done => {}
                out @ QueryOutput::Rows(_) => {
                    let (schema, batches) = out.collect().await?;
                    rows.get_or_insert_with(|| (schema, vec![]))
                        .1
                        .extend(batches);
                }
            }
        }
        Ok(match (rows, count) {
            (Some((schema, batches)), _) => {
                QueryOutput::Rows(Box::pin(RecordBatchStreamAdapter::new(
                    schema,
                    futures::stream::iter(batches.into_iter().map(Ok)),
                )))
            }
            (None, Some(n)) => QueryOutput::Count(n),
            (None, None) => QueryOutput::Done,
        })
    }

    /// Run the statement for its row count (see [`Session::execute_update`]).
    pub async fn execute_update(
        &self,
        session: &Session,
        params: Option<Parameters>,
    ) -> Result<Option<u64>> {
        update(session, &self.sql, params.map(Parameters::into_rows)).await
    }

    async fn query(
        &self,
        session: &Session,
        params: Option<Parameters>,
    ) -> Result<SendableRecordBatchStream> {
        let announced = self.info.dataset_schema.clone();
        let mut rows = params
            .map(Parameters::into_rows)
            .unwrap_or_default()
            .into_iter();
        let ready = match (&self.ready, rows.len()) {
            (Some(ready), 0) => session.execute_ready(ready).await?,
            _ => None,
        };
        let first = match ready {
            Some(stream) => stream,
            None => session
                .execute_with_params(&self.sql, rows.next())
                .await?
                .into_stream(),
        };
        let conformed = |stream: SendableRecordBatchStream| {
            let target = announced.clone();
            Box::pin(RecordBatchStreamAdapter::new(
                announced.clone(),
                stream.and_then(move |b| {
                    std::future::ready(conform(b, &target).map_err(DataFusionError::from))
                }),
            )) as SendableRecordBatchStream
        };
        if rows.len() == 0 {
            return Ok(conformed(first));
        }
        let schema = first.schema();
        let (session, sql) = (session.clone(), self.sql.clone());
        let rest = futures::stream::iter(rows)
            .then(move |p| {
                let (session, sql) = (session.clone(), sql.clone());
                async move {
                    session
                        .execute_with_params(&sql, Some(p))
                        .await
                        .map(QueryOutput::into_stream)
                        .map_err(DataFusionError::from)
                }
            })
            .try_flatten();
        let target = schema.clone();
        let all = first.chain(rest).map(move |b| {
            let b = b?;
            if b.schema() == target {
                Ok(b)
            } else {
                Ok(RecordBatch::try_new(target.clone(), b.columns().to_vec())?)
            }
        });
        Ok(conformed(Box::pin(RecordBatchStreamAdapter::new(
            schema, all,
        ))))
    }
}

/// Relabel a batch with the schema announced at prepare. Planning at prepare and again at execution can differ in
/// nullability (constant folding makes `f(literal)` non-nullable); clients such as ADBC reject any difference.
fn conform(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema().as_ref() == schema.as_ref() {
        return Ok(batch);
    }
    if batch.num_columns() != schema.fields().len() {
        return Err(Error::internal(format!(
            "the result's schema changed between planning and execution: announced {schema:?}, got {:?}",
            batch.schema()
        )));
    }
    let failed =
        |e: arrow::error::ArrowError| Error::internal(format!("conforming a result batch: {e}"));
    // A parameter bound as NULL plans as type Null where the prepared plan had a type: an all-NULL column (a
    // NullArray counts its rows as logical nulls) is cast back to the announced type. A value of another type than
    // announced cannot be relabelled; the query must cast the parameter.
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (f, c) in schema.fields().iter().zip(batch.columns()) {
        if c.data_type() == f.data_type() {
            columns.push(c.clone());
        } else if c.logical_null_count() == c.len()
            && arrow::compute::can_cast_types(c.data_type(), f.data_type())
        {
            columns.push(arrow::compute::cast(c, f.data_type()).map_err(failed)?);
        } else {
            return Err(Error::invalid(format!(
                "column '{}' was prepared as {} but the bound parameters make it {}; cast the parameter in the \
                 query (e.g. $1::BIGINT) so its type does not depend on the value bound",
                f.name(),
                f.data_type(),
                c.data_type()
            )));
        }
    }
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .zip(&columns)
        .map(|(f, c)| {
            if c.null_count() > 0 && !f.is_nullable() {
                Arc::new(f.as_ref().clone().with_nullable(true))
            } else {
                f.clone()
            }
        })
        .collect();
    let target = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    RecordBatch::try_new(target, columns).map_err(failed)
}

/// Which scalar types a bound parameter may be cast from to reach the type the statement expects.
fn family(t: &DataType) -> u8 {
    use DataType::*;
    match t {
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 => 1,
        Float16 | Float32 | Float64 | Decimal32(..) | Decimal64(..) | Decimal128(..)
        | Decimal256(..) => 2,
        Utf8 | LargeUtf8 | Utf8View => 3,
        Binary | LargeBinary | BinaryView | FixedSizeBinary(_) => 4,
        List(_) | LargeList(_) | FixedSizeList(..) | ListView(_) | LargeListView(_) => 5,
        Date32 | Date64 | Timestamp(..) => 6,
        Boolean => 7,
        _ => 0,
    }
}

fn castable(from: &DataType, to: &DataType) -> bool {
    if matches!(to, DataType::Null) || from == to {
        return false;
    }
    if matches!(from, DataType::Null) {
        return true;
    }
    let (f, t) = (family(from), family(to));
    f != 0 && (f == t || (f == 1 && t == 2))
}

/// One `ParamValues` per row of the bound batches, cast to the types in `expected` (types of another family are
/// passed through for the statement to reject).
fn coerce(expected: &Schema, batches: &[RecordBatch]) -> Result<Vec<ParamValues>> {
    let want = expected.fields().len();
    let mut out = vec![];
    for batch in batches {
        if want > 0 && batch.num_columns() != want {
            return Err(Error::invalid(format!(
                "the statement has {want} parameter(s), but {} value(s) per row were bound",
                batch.num_columns()
            )));
        }
        let columns: Vec<ArrayRef> = batch
            .columns()
            .iter()
            .enumerate()
            .map(|(i, col)| match expected.fields().get(i) {
                Some(f) if castable(col.data_type(), f.data_type()) => {
                    let options = CastOptions {
                        safe: false,
                        ..Default::default()
                    };
                    cast_with_options(col, f.data_type(), &options).map_err(|e| {
                        Error::invalid(format!(
                            "parameter ${} expects {}, and the value bound ({}) does not convert: {e}",
                            i + 1,
                            f.data_type(),
                            col.data_type()
                        ))
                    })
                }
                _ => Ok(col.clone()),
            })
            .collect::<Result<_>>()?;
        for row in 0..batch.num_rows() {
            let values = columns
                .iter()
                .map(|c| ScalarValue::try_from_array(c, row))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Error::invalid(format!("unsupported parameter value: {e}")))?;
            out.push(ParamValues::from(values));
        }
    }
    Ok(out)
}

/// A statement's row count, its rows (if any) read to the end so that errors surface.
async fn drain(output: QueryOutput) -> Result<u64> {
    match output {
        QueryOutput::Count(n) => Ok(n),
        QueryOutput::Done => Ok(0),
        QueryOutput::Rows(s) => {
            s.try_for_each(|_| std::future::ready(Ok(()))).await?;
            Ok(0)
        }
    }
}

/// Run a statement for its row count: once, or once per parameter row through [`Session::execute_many`]. `None`
/// when the statement reports no count (DDL, SET, a query).
async fn update(
    session: &Session,
    sql: &str,
    params: Option<Vec<ParamValues>>,
) -> Result<Option<u64>> {
    match params {
        Some(rows) if rows.is_empty() => Ok(Some(0)),
        // Several parameter rows: an INSERT becomes one statement and one commit.
        Some(rows) if rows.len() > 1 => session.execute_many(sql, rows).await.map(Some),
        params => {
            let p = params.and_then(|mut rows| rows.pop());
            let out = session.execute_with_params(sql, p).await?;
            let counted = matches!(out, QueryOutput::Count(_));
            // Rows are drained so that errors surface; they have nowhere to go.
            let n = drain(out).await?;
            Ok(counted.then_some(n))
        }
    }
}

impl Session {
    /// Plan a statement without running it: its result and parameter schemas.
    pub async fn prepare(&self, sql: &str) -> Result<PreparedInfo> {
        Ok(self.prepare_off_workers(sql.to_string()).await?.0)
    }

    /// Preparing plans, which does not yield (a 200,000-element IN list plans for seconds): off the runtime's
    /// workers, as statements run, so one client's GetFlightInfo never stalls another's `SELECT 1`.
    async fn prepare_off_workers(&self, sql: String) -> Result<(PreparedInfo, Option<ReadyPlan>)> {
        self.run_off_workers(move |session| async move { session.prepare_planned(&sql).await })
            .await
    }

    /// [`Session::prepare`], and the plan of a query that takes no parameters, kept to run it.
    async fn prepare_planned(&self, sql: &str) -> Result<(PreparedInfo, Option<ReadyPlan>)> {
        // Read before planning: a change that lands while the statement plans makes the plan stale.
        let generation = self.database().generation();
        let mut statement = self.parse_one(sql)?;
        let pins = crate::session::pin_versions(self, &mut statement).await?;
        let plain_query = pins.is_empty()
            && matches!(&statement, DFStatement::Statement(s) if matches!(s.as_ref(), Statement::Query(_)));
        let empty: SchemaRef = Arc::new(Schema::empty());
        let (planned, is_query) = match &statement {
            DFStatement::Statement(stmt) => match stmt.as_ref() {
                Statement::Query(_) | Statement::Explain { .. } | Statement::ShowTables { .. } => {
                    (true, true)
                }
                Statement::ShowColumns { .. } | Statement::ShowVariable { .. } => (true, true),
                Statement::Insert(i) => {
                    let mut i = i.clone();
                    i.on = None;
                    let plan = self
                        .plan(DFStatement::Statement(Box::new(Statement::Insert(i))), None)
                        .await?;
                    return Ok((
                        PreparedInfo {
                            dataset_schema: QueryOutput::count_schema(),
                            parameter_schema: parameter_schema(&plan)?,
                            is_query: false,
                        },
                        None,
                    ));
                }
                // DataFusion plans neither UPDATE … FROM nor DELETE … USING; Marrow runs them (dml.rs). Their
                // parameters are named from the statement, untyped: the bound values decide at execution.
                Statement::Update(u) if u.from.is_some() => {
                    return Ok((unplanned_dml(stmt), None));
                }
                Statement::Delete(d) if d.using.is_some() => {
                    return Ok((unplanned_dml(stmt), None));
                }
                Statement::Update(_) | Statement::Delete(_) => (true, false),
                _ => (false, false),
            },
            DFStatement::Explain(_) => (true, true),
            _ => (false, false),
        };
        if !planned {
            return Ok((
                PreparedInfo {
                    dataset_schema: empty.clone(),
                    parameter_schema: empty,
                    is_query: false,
                },
                None,
            ));
        }
        let in_functions = Box::pin(self.probe_table_function_params(&mut statement)).await?;
        let (state, plan) = self.plan_with_state(statement, None).await?;
        let mut parameters = parameter_schema(&plan)?;
        let binds_functions = !in_functions.is_empty();
        if binds_functions {
            parameters = with_fields(&parameters, in_functions);
        }
        // The schema execution produces is the optimized plan's: type coercion gives a CASE, UNION or COALESCE of
        // mixed types its common type, decorrelation makes a scalar subquery nullable, and simplification may
        // narrow a type (`c * 0` of a decimal), all after SqlToRel's first guess. A plan the optimizer cannot take
        // yet (placeholders without a type) announces the analyzed schema, or else SqlToRel's.
        if !is_query {
            return Ok((
                PreparedInfo {
                    dataset_schema: QueryOutput::count_schema(),
                    parameter_schema: parameters,
                    is_query,
                },
                None,
            ));
        }
        let (schema, optimized) = match state.optimize(&plan) {
            Ok(p) => (p.schema().clone(), Some(p)),
            Err(_) => match state.analyzer().execute_and_check(
                plan.clone(),
                state.config_options(),
                |_, _| {},
            ) {
                Ok(p) => (p.schema().clone(), None),
                Err(_) => (plan.schema().clone(), None),
            },
        };
        let ready = match optimized {
            Some(p)
                if plain_query
                    && self.plan_cache_enabled()
                    && parameters.fields().is_empty()
                    && !binds_functions
                    && !reads_the_clock(&plan) =>
            {
                ReadyPlan::new(generation, state, p)
            }
            _ => None,
        };
        Ok((
            PreparedInfo {
                dataset_schema: Arc::new(schema.as_arrow().clone()),
                parameter_schema: parameters,
                is_query,
            },
            ready,
        ))
    }

    /// Plan a statement once for repeated runs with bound parameters.
    pub async fn prepare_statement(&self, sql: impl Into<String>) -> Result<PreparedStatement> {
        let sql = sql.into();
        // Read before planning, as the plan's own generation is.
        let generation = self.database().generation();
        let (info, ready) = self.prepare_off_workers(sql.clone()).await?;
        Ok(PreparedStatement {
            sql,
            info,
            ready: ready.map(Arc::new),
            generation,
        })
    }

    /// Run a statement for its row count; `None` when it reports none (DDL, SET, a query, whose rows are drained
    /// so that their errors surface).
    pub async fn execute_update(&self, sql: &str) -> Result<Option<u64>> {
        update(self, sql, None).await
    }

    /// Run one statement once per parameter row (Flight SQL's executemany) and return the total row count.
    ///
    /// `INSERT … VALUES (<one row over $1, $2, …>)` — the common case — becomes a single
    /// `INSERT … SELECT … FROM <the parameter rows>`: one plan and one atomic commit for all rows, with the same
    /// constraint checks as a multi-row INSERT. Other statements run row by row, each row its own commit.
    pub async fn execute_many(&self, sql: &str, rows: Vec<ParamValues>) -> Result<u64> {
        let written = match self.parse_one(sql)? {
            DFStatement::Statement(stmt) => {
                if let (Statement::Insert(insert), true) = (stmt.as_ref(), rows.len() > 1) {
                    if let Some(n) = self.insert_many(insert.clone(), &rows).await? {
                        return Ok(n);
                    }
                }
                crate::statements::dml::written_table(&stmt)
            }
            _ => None,
        };
        let Some(table) = written else {
            let mut total = 0;
            for p in rows {
                total += drain(self.execute_with_params(sql, Some(p)).await?).await?;
            }
            return Ok(total);
        };
        // One write statement per row, as one unit: the table's write lock is held across the rows, and a row
        // that fails restores the version from before the first, so the batch applies whole or not at all.
        let _guard = self.lock_for_write(&table).await;
        let schema = self.database().schema_provider();
        let before = schema.open_dataset(&table).await?.version_id();
        let batch = self.holding(&table);
        let mut total = 0;
        let count = rows.len();
        for (i, p) in rows.into_iter().enumerate() {
            let row = async { drain(batch.execute_with_params(sql, Some(p)).await?).await };
            match row.await {
                Ok(n) => total += n,
                Err(e) => {
                    let undone = match schema.open_dataset(&table).await {
                        Ok(latest) if latest.version_id() == before => Ok(()),
                        _ => {
                            async {
                                let mut old =
                                    crate::catalog::versions::checkout(schema, &table, before)
                                        .await?;
                                old.restore().await?;
                                Ok::<_, Error>(())
                            }
                            .await
                        }
                    };
                    return Err(match undone {
                        Ok(()) => Error::new(
                            e.kind(),
                            format!(
                                "parameter row {} of {count}: {}; no row of the batch was applied",
                                i + 1,
                                e.message()
                            ),
                        ),
                        Err(undo) => Error::internal(format!(
                            "parameter row {} failed ({}), and restoring table '{table}' to version {before} \
                             failed too ({}): the rows before it stay applied",
                            i + 1,
                            e.message(),
                            undo.message()
                        )),
                    });
                }
            }
        }
        Ok(total)
    }

    async fn insert_many(
        &self,
        mut insert: datafusion::sql::sqlparser::ast::Insert,
        rows: &[ParamValues],
    ) -> Result<Option<u64>> {
        use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, Ident, SetExpr, Value};
        let Some(source) = insert.source.as_ref() else {
            return Ok(None);
        };
        let SetExpr::Values(values) = source.body.as_ref() else {
            return Ok(None);
        };
        let [row] = values.rows.as_slice() else {
            return Ok(None);
        };
        // One column per placeholder, one row per parameter set.
        let mut columns: Vec<Vec<ScalarValue>> = vec![];
        for (r, p) in rows.iter().enumerate() {
            let ParamValues::List(list) = p else {
                return Ok(None);
            };
            if r == 0 {
                columns = vec![vec![]; list.len()];
            } else if list.len() != columns.len() {
                return Err(Error::invalid(
                    "every parameter row must have the same number of values",
                ));
            }
            for (c, v) in list.iter().enumerate() {
                columns[c].push(v.value.clone());
            }
        }
        let mut fields = vec![];
        let mut arrays = vec![];
        for (i, values) in columns.into_iter().enumerate() {
            let array = ScalarValue::iter_to_array(values)?;
            fields.push(Field::new(
                format!("p{}", i + 1),
                array.data_type().clone(),
                true,
            ));
            arrays.push(array);
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?;
        let n_params = batch.num_columns();
        let mut exprs = row.content.clone();
        let mut bad = None;
        for e in &mut exprs {
            let _ = datafusion::sql::sqlparser::ast::visit_expressions_mut(e, |e| {
                if let SqlExpr::Value(v) = e {
                    if let Value::Placeholder(p) = &v.value {
                        match p.trim_start_matches('$').parse::<usize>() {
                            Ok(k) if k >= 1 && k <= n_params => {
                                *e = SqlExpr::CompoundIdentifier(vec![
                                    Ident::with_quote('"', PARAMS_RELATION),
                                    Ident::with_quote('"', format!("p{k}")),
                                ]);
                            }
                            _ => bad = Some(p.clone()),
                        }
                    }
                }
                std::ops::ControlFlow::<()>::Continue(())
            });
        }
        if let Some(p) = bad {
            return Err(Error::invalid(format!("no value bound for parameter {p}")));
        }
        let select = format!(
            "SELECT {} FROM \"{PARAMS_RELATION}\"",
            exprs
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let query = match parse_one(&select)? {
            DFStatement::Statement(s) => match *s {
                Statement::Query(q) => q,
                _ => {
                    return Err(Error::internal(
                        "rewritten executemany source is not a query",
                    ))
                }
            },
            _ => {
                return Err(Error::internal(
                    "rewritten executemany source is not a query",
                ))
            }
        };
        insert.source = Some(query);
        let mem: Arc<dyn datafusion::catalog::TableProvider> = Arc::new(
            datafusion::datasource::MemTable::try_new(batch.schema(), vec![vec![batch]])?,
        );
        let extra = [(PARAMS_RELATION.to_string(), mem)].into_iter().collect();
        match dml::insert_with(self, insert, None, extra).await? {
            QueryOutput::Count(n) => Ok(Some(n)),
            _ => Ok(Some(0)),
        }
    }
}

/// Whether a plan calls a function whose value depends on when the statement runs (`now()`, `current_date`): the
/// optimizer folds those into constants, so such a plan is made at each run.
fn reads_the_clock(plan: &LogicalPlan) -> bool {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::{Expr, Volatility};
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        // A view is still a table scan here (inlined by the analyzer later): look into its plan.
        if let LogicalPlan::TableScan(scan) = node {
            if let Ok(provider) = datafusion::datasource::source_as_provider(&scan.source) {
                if let Some(view) = provider.downcast_ref::<datafusion::datasource::ViewTable>() {
                    if reads_the_clock(view.logical_plan()) {
                        found = true;
                        return Ok(TreeNodeRecursion::Stop);
                    }
                }
            }
        }
        node.apply_expressions(|e| {
            e.apply(|e| {
                if let Expr::ScalarFunction(f) = e {
                    if f.func.signature().volatility == Volatility::Stable {
                        found = true;
                        return Ok(TreeNodeRecursion::Stop);
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    found
}

/// `schema` with the parameters of table-function arguments added (a type from the plan wins), in `$n` order.
fn with_fields(schema: &Schema, extra: std::collections::BTreeMap<String, DataType>) -> SchemaRef {
    let mut fields: std::collections::BTreeMap<(usize, String), Field> = extra
        .into_iter()
        .map(|(name, typ)| (param_order(&name), Field::new(name, typ, true)))
        .collect();
    for f in schema.fields() {
        if f.data_type() != &DataType::Null || !fields.contains_key(&param_order(f.name())) {
            fields.insert(param_order(f.name()), f.as_ref().clone());
        }
    }
    Arc::new(Schema::new(fields.into_values().collect::<Vec<_>>()))
}

fn param_order(name: &str) -> (usize, String) {
    (
        name.trim_start_matches('$')
            .parse::<usize>()
            .unwrap_or(usize::MAX),
        name.to_string(),
    )
}

fn parameter_schema(plan: &LogicalPlan) -> Result<SchemaRef> {
    let fields = plan.get_parameter_fields()?;
    let mut ids: Vec<(usize, String)> = fields
        .keys()
        .map(|k| {
            (
                k.trim_start_matches('$')
                    .parse::<usize>()
                    .unwrap_or(usize::MAX),
                k.clone(),
            )
        })
        .collect();
    ids.sort();
    let fields: Vec<Field> = ids
        .into_iter()
        .map(|(_, name)| match fields.get(&name).cloned().flatten() {
            Some(f) => f.as_ref().clone().with_name(name),
            None => Field::new(name, DataType::Null, true),
        })
        .collect();
    Ok(Arc::new(Schema::new(fields)))
}

/// A data-changing statement prepared without a plan: a row count out, one untyped field per `$n` in.
fn unplanned_dml(statement: &Statement) -> PreparedInfo {
    use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, Value};
    let mut numbers = std::collections::BTreeSet::new();
    let _ = datafusion::sql::sqlparser::ast::visit_expressions(statement, |e| {
        if let SqlExpr::Value(v) = e {
            if let Value::Placeholder(p) = &v.value {
                if let Ok(n) = p.trim_start_matches('$').parse::<usize>() {
                    numbers.insert(n);
                }
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    let fields: Vec<Field> = numbers
        .into_iter()
        .map(|n| Field::new(format!("${n}"), DataType::Null, true))
        .collect();
    PreparedInfo {
        dataset_schema: QueryOutput::count_schema(),
        parameter_schema: Arc::new(Schema::new(fields)),
        is_query: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use arrow::array::{Int64Array, StringArray};

    #[test]
    fn parameters_are_cast_to_the_expected_types() {
        let expected = Schema::new(vec![
            Field::new("$1", DataType::Int32, true),
            Field::new("$2", DataType::Null, true),
        ]);
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("0", DataType::Int64, true),
                Field::new("1", DataType::Utf8, true),
            ])),
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec!["a", "b"])),
            ],
        )
        .unwrap();
        let params = coerce(&expected, std::slice::from_ref(&batch)).unwrap();
        assert_eq!(params.len(), 2);
        match &params[1] {
            ParamValues::List(v) => {
                assert_eq!(v[0].value, ScalarValue::Int32(Some(2)));
                assert_eq!(v[1].value, ScalarValue::Utf8(Some("b".into())));
            }
            other => panic!("{other:?}"),
        }
        // Wrong arity.
        let one = Schema::new(vec![Field::new("$1", DataType::Int32, true)]);
        assert_eq!(
            coerce(&one, &[batch]).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        // A value out of range for the expected type.
        let big = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("0", DataType::Int64, true)])),
            vec![Arc::new(Int64Array::from(vec![i64::MAX]))],
        )
        .unwrap();
        assert_eq!(
            coerce(&one, &[big]).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        // Unrelated types are passed through for the engine to reject.
        let s = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("0", DataType::Utf8, true)])),
            vec![Arc::new(StringArray::from(vec!["x"]))],
        )
        .unwrap();
        assert_eq!(coerce(&one, &[s]).unwrap().len(), 1);
    }

    #[test]
    fn internal_relations() {
        assert!(is_internal_relation(PARAMS_RELATION));
        assert!(!is_internal_relation("memories"));
    }
}
