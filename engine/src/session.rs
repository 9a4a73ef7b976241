//! One session: parse, route, plan and execute. A statement that a registered [`StatementHandler`] takes (table
//! DDL that must create Lance datasets, DML, indexes, file access, CALL) runs there; everything else goes to
//! DataFusion unchanged. The session names no feature: handlers, table functions and procedures are registered with
//! the database (see `extension.rs` and `builtins.rs`).
//!
//! [`StatementHandler`]: crate::extension::StatementHandler

mod deferred;
mod table_function_params;
mod time_travel;

pub(crate) use deferred::{has_placeholder, resolve as resolve_deferred, BoundParams};
pub(crate) use time_travel::pin_versions;

use std::sync::Arc;

use arrow::array::{RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::dataframe::DataFrame;
use datafusion::execution::context::{SessionContext, SessionState};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::execute_stream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::Statement;
use futures::{StreamExt, TryStreamExt};

use crate::database::Database;
use crate::error::{Error, ErrorKind, Result};
use crate::options::MarrowOptions;
use crate::sql::{parse_in, parse_one_in};
use crate::vector::plan_cache::PlanCache;

/// What a statement produced.
pub enum QueryOutput {
    /// A query's rows, streamed.
    Rows(SendableRecordBatchStream),
    /// The number of rows a write statement affected (its one commit).
    Count(u64),
    /// A statement without a result (SET, CREATE VIEW …).
    Done,
}

impl std::fmt::Debug for QueryOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueryOutput::Rows(s) => write!(f, "Rows({:?})", s.schema()),
            QueryOutput::Count(n) => write!(f, "Count({n})"),
            QueryOutput::Done => write!(f, "Done"),
        }
    }
}

impl QueryOutput {
    /// The schema of a row-count result: one UInt64 column named `count`, as DataFusion's own DML returns.
    pub fn count_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new(
            "count",
            DataType::UInt64,
            false,
        )]))
    }

    /// Every output as a stream of batches (a count becomes a one-row `count` table, `Done` an empty one).
    pub fn into_stream(self) -> SendableRecordBatchStream {
        match self {
            QueryOutput::Rows(s) => s,
            QueryOutput::Count(n) => {
                let schema = Self::count_schema();
                let batch = RecordBatch::try_new(
                    schema.clone(),
                    vec![Arc::new(UInt64Array::from(vec![n]))],
                )
                .map_err(Into::into);
                Box::pin(RecordBatchStreamAdapter::new(
                    schema,
                    futures::stream::iter(vec![batch]),
                ))
            }
            QueryOutput::Done => {
                let schema = Arc::new(Schema::empty());
                Box::pin(RecordBatchStreamAdapter::new(
                    schema,
                    futures::stream::empty(),
                ))
            }
        }
    }

    /// The number in a `count` result (0 when there is none).
    pub fn count_in(batches: &[RecordBatch]) -> u64 {
        batches
            .first()
            .filter(|b| b.num_rows() > 0)
            .and_then(|b| b.column(0).as_any().downcast_ref::<UInt64Array>())
            .map(|a| a.value(0))
            .unwrap_or(0)
    }

    pub async fn collect(self) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let stream = self.into_stream();
        let schema = stream.schema();
        let batches = stream.try_collect().await?;
        Ok((schema, batches))
    }
}

/// SQL `PREPARE`d statements of a session: name → (declared parameter types as SQL, the statement).
type SqlPrepared = std::collections::HashMap<String, (Vec<String>, Statement)>;

/// A session: its own `SET` options, sharing the database's tables with every other session.
#[derive(Clone)]
pub struct Session {
    db: Database,
    ctx: SessionContext,
    plans: Arc<PlanCache>,
    deferred: Arc<deferred::DeferredPlans>,
    prepared: Arc<std::sync::Mutex<SqlPrepared>>,
    /// The table whose write lock the caller already holds (a batch of parameter rows run as one unit): the
    /// statements run through this session do not take it again.
    holds: Option<Arc<str>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("session_id", &self.ctx.session_id())
            .finish()
    }
}

impl Database {
    /// A new session: its own `SET` options and prepared state, sharing the tables.
    pub fn session(&self) -> Session {
        Session::new(
            self.clone(),
            SessionContext::new_with_state(self.new_state()),
        )
    }
}

impl Session {
    pub(crate) fn new(db: Database, ctx: SessionContext) -> Self {
        Self {
            db,
            ctx,
            plans: Arc::default(),
            deferred: Arc::default(),
            prepared: Arc::default(),
            holds: None,
        }
    }

    /// This session, for statements run while the caller holds `table`'s write lock.
    pub(crate) fn holding(&self, table: &str) -> Self {
        Self {
            holds: Some(table.into()),
            ..self.clone()
        }
    }

    /// Whether this session runs under a caller that holds `table`'s write lock.
    pub(crate) fn holds_lock(&self, table: &str) -> bool {
        self.holds.as_deref() == Some(table)
    }

    /// Take `table`'s write lock for one write, unless this session runs under a caller that holds it.
    pub(crate) async fn lock_for_write(
        &self,
        table: &str,
    ) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        if self.holds.as_deref() == Some(table) {
            return None;
        }
        Some(self.db.write_lock(table).lock_owned().await)
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The DataFusion context (catalog queries, registered functions).
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Evaluate constant SQL expressions (procedure arguments, AS OF timestamps) with the session's functions.
    pub async fn eval_constants(
        &self,
        exprs: &[String],
        params: Option<datafusion::common::ParamValues>,
    ) -> Result<Vec<ScalarValue>> {
        if exprs.is_empty() {
            return Ok(vec![]);
        }
        // Aliased: equal arguments (`CALL f('a', 'a')`) would otherwise be duplicate column names.
        let columns: Vec<String> = exprs
            .iter()
            .enumerate()
            .map(|(i, e)| format!("({e}) AS arg{i}"))
            .collect();
        let sql = format!("SELECT {}", columns.join(", "));
        let df = crate::catalog::views::planning(self.context().sql(&sql)).await?;
        let df = match params {
            Some(p) => df.with_param_values(p)?,
            None => df,
        };
        let batches = df.collect().await?;
        let batch = batches
            .iter()
            .find(|b| b.num_rows() > 0)
            .ok_or_else(|| Error::internal("constant expressions returned no row"))?;
        (0..batch.num_columns())
            .map(|i| Ok(ScalarValue::try_from_array(batch.column(i), 0)?))
            .collect()
    }

    pub(crate) fn state(&self) -> SessionState {
        self.ctx.state()
    }

    /// Run one statement.
    pub async fn execute(&self, sql: &str) -> Result<QueryOutput> {
        self.execute_with_params(sql, None).await
    }

    /// Run one statement with values for its `$1, $2, …` placeholders.
    pub async fn execute_with_params(
        &self,
        sql: &str,
        params: Option<ParamValues>,
    ) -> Result<QueryOutput> {
        // Boxed: both paths hold whole planning futures, too deep for a small stack when inlined (debug builds).
        if let Some(p) = params {
            let functions = self.db.extensions().table_functions();
            if table_function_params::may_have_params(sql, functions) {
                if self.plan_cache_enabled() {
                    if let Some(out) = Box::pin(self.execute_deferred(sql, &p)).await? {
                        return Ok(out);
                    }
                }
                let mut statement = self.parse_one(sql)?;
                // The types of the arguments come from the tables' schemas, cached once they are open.
                self.open_table_function_tables(&statement).await?;
                let bound = table_function_params::bind(
                    &mut statement,
                    functions,
                    self.db.schema_provider(),
                    table_function_params::Binding::Values(&p),
                )?;
                if !bound.is_empty() {
                    // Planned for these values: the plan cache keeps plans whose values are placeholders.
                    return Box::pin(self.execute_statement(statement, Some(p))).await;
                }
            }
            if self.plan_cache_enabled() {
                return Box::pin(self.execute_cached(sql, p)).await;
            }
            return Box::pin(self.execute_statement(self.parse_one(sql)?, Some(p))).await;
        }
        Box::pin(self.execute_statement(self.parse_one(sql)?, None)).await
    }

    /// A query whose table-function arguments hold `$n`, on a plan kept with its placeholders (session/deferred.rs):
    /// planned at its first execution, and kept when every placeholder went into a function that reads it at
    /// execution. `None`: the statement cannot be run that way; plan it with the values written in.
    async fn execute_deferred(
        &self,
        sql: &str,
        params: &ParamValues,
    ) -> Result<Option<QueryOutput>> {
        let generation = self.db.generation();
        let bound = Arc::new(deferred::BoundParams::new(params.clone()));
        let run = |(plan, task): deferred::Runnable| {
            self.within_timeout(true, async move {
                Ok(QueryOutput::Rows(execute_stream(plan, task)?))
            })
        };
        if let Some(kept) = self.deferred.lookup(sql, generation, bound.clone())? {
            return run(kept).await.map(Some);
        }
        if self.deferred.is_rejected(sql, generation) {
            return Ok(None);
        }
        match self.plan_deferred(sql).await {
            Ok(Some((plan, task))) => {
                self.deferred
                    .keep(sql, generation, plan.clone(), task.clone());
                let plan = datafusion::physical_plan::execution_plan::reset_plan_states(plan)?;
                let task = deferred::with_params(&task, bound);
                run((plan, task)).await.map(Some)
            }
            Ok(None) | Err(_) => {
                self.deferred.reject(sql, generation);
                Ok(None)
            }
        }
    }

    /// The physical plan of `sql` with its placeholders left for execution, when it can be kept that way.
    async fn plan_deferred(&self, sql: &str) -> Result<Option<deferred::Runnable>> {
        let statement = self.parse_one(sql)?;
        if !matches!(&statement, DFStatement::Statement(s) if matches!(s.as_ref(), Statement::Query(_)))
        {
            return Ok(None);
        }
        let mut pinned = statement.clone();
        if !time_travel::pin_versions(self, &mut pinned)
            .await?
            .is_empty()
        {
            return Ok(None);
        }
        self.open_table_function_tables(&statement).await?;
        let state = self.state();
        let plan = crate::catalog::views::planning(state.statement_to_plan(statement)).await?;
        let plan = deferred::defer_now(plan)?;
        let optimized = state.optimize(&plan)?;
        let deferring = |node: &LogicalPlan| match node {
            LogicalPlan::TableScan(scan) => {
                datafusion::datasource::source_as_provider(&scan.source)
                    .is_ok_and(|p| crate::table_functions::hybrid_search::is_provider(p.as_ref()))
            }
            _ => false,
        };
        if !deferred::placeholders_only_in(&optimized, &deferring) {
            return Ok(None);
        }
        let physical = state
            .query_planner()
            .create_physical_plan(&optimized, &state)
            .await?;
        Ok(Some((physical, Arc::new(TaskContext::from(&state)))))
    }

    /// The plan cache of this session (and its clones): how many plans it keeps, and how many executions of a
    /// statement with new vector parameters reused one instead of planning.
    pub fn plan_cache_stats(&self) -> (usize, u64) {
        self.plans.stats()
    }

    /// How many executions ran on a plan kept with its placeholders (session/deferred.rs), not planned again.
    pub fn deferred_plan_hits(&self) -> u64 {
        self.deferred.hits()
    }

    /// How many queries ran on the plan made when they were prepared (without parameters), not planned again.
    pub fn ready_plan_hits(&self) -> u64 {
        self.plans.ready_hits()
    }

    /// The dialect this session parses with (`datafusion.sql_parser.dialect`).
    fn dialect(&self) -> datafusion::config::Dialect {
        let state = self.ctx.state_ref();
        let state = state.read();
        state.config_options().sql_parser.dialect
    }

    /// Parse one statement in this session's dialect.
    pub(crate) fn parse_one(&self, sql: &str) -> Result<DFStatement> {
        parse_one_in(sql, self.dialect())
    }

    pub(crate) fn plan_cache_enabled(&self) -> bool {
        let state = self.ctx.state_ref();
        let state = state.read();
        state
            .config_options()
            .extensions
            .get::<MarrowOptions>()
            .is_none_or(|o| o.plan_cache)
    }

    /// A query with bound values through the plan cache (plan_cache.rs): the kept plan rebuilt for these values
    /// when it is still valid, otherwise planned here and offered to the cache.
    async fn execute_cached(&self, sql: &str, params: ParamValues) -> Result<QueryOutput> {
        let generation = self.db.generation();
        if let Some((plan, task)) = self.plans.lookup(sql, &params, generation).await {
            return Ok(QueryOutput::Rows(execute_stream(plan, task)?));
        }
        let mut statement = self.parse_one(sql)?;
        let is_query = matches!(&statement, DFStatement::Statement(s) if matches!(s.as_ref(), Statement::Query(_)));
        if !is_query {
            return self.execute_statement(statement, Some(params)).await;
        }
        let original = statement.clone();
        let pins = time_travel::pin_versions(self, &mut statement).await?;
        if !pins.is_empty() {
            drop(pins);
            return self.execute_statement(original, Some(params)).await;
        }
        let (state, plan) = self
            .plan_with_state(statement.clone(), Some(params.clone()))
            .await?;
        let optimized = state.optimize(&plan)?;
        let physical = state
            .query_planner()
            .create_physical_plan(&optimized, &state)
            .await?;
        let task = Arc::new(TaskContext::from(&state));
        Box::pin(self.plans.offer(
            sql,
            &params,
            generation,
            &optimized,
            &physical,
            task.clone(),
            move |probe| async move {
                let (state, plan) = self.plan_with_state(statement, Some(probe)).await?;
                Ok(state.optimize(&plan)?)
            },
        ))
        .await;
        // As in run_datafusion: the plan's tables keep the versions being read alive while the rows stream.
        let stream = execute_stream(physical, task)?;
        let schema = stream.schema();
        Ok(QueryOutput::Rows(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            stream.inspect(move |_| {
                let _ = &optimized;
            }),
        ))))
    }

    /// Run every statement of a script in order, collecting each result (the CLI's `-c` and REPL).
    pub async fn execute_script(
        &self,
        sql: &str,
    ) -> Result<Vec<(SchemaRef, Vec<RecordBatch>, bool)>> {
        let mut out = vec![];
        for statement in parse_in(sql, self.dialect())? {
            let output = self.execute_statement(statement, None).await?;
            let is_count = matches!(output, QueryOutput::Count(_));
            let (schema, batches) = output.collect().await?;
            out.push((schema, batches, is_count));
        }
        Ok(out)
    }

    pub(crate) async fn execute_statement(
        &self,
        statement: DFStatement,
        params: Option<ParamValues>,
    ) -> Result<QueryOutput> {
        // Anything but a query or a row write may change what later queries plan to (DDL, SET, procedures):
        // counted before and after, so a plan made while it ran is not kept past it either. A row write changes a
        // table's version, not its shape; kept plans check the versions they read (`ReadyPlan::is_current`), and
        // statements kept by SQL text replan at each run with parameters.
        let changes = !matches!(&statement, DFStatement::Statement(s) if matches!(
            s.as_ref(),
            Statement::Query(_) | Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_)
        ));
        if changes {
            self.db.bump_generation();
        }
        let is_read = matches!(&statement, DFStatement::Statement(s) if matches!(s.as_ref(), Statement::Query(_) | Statement::Explain { .. }));
        let out = self
            .within_timeout(
                is_read,
                self.run_off_workers(move |session| async move {
                    Box::pin(session.run_statement(statement, params)).await
                }),
            )
            .await;
        if changes {
            self.db.bump_generation();
        }
        out
    }

    /// `run` under `marrow.statement_timeout` when it is a read (the limit covers planning and the whole stream).
    async fn within_timeout(
        &self,
        is_read: bool,
        run: impl std::future::Future<Output = Result<QueryOutput>>,
    ) -> Result<QueryOutput> {
        let timeout = if is_read {
            // Read in place: cloning the session state for one setting would cost every query.
            let state = self.ctx.state_ref();
            let state = state.read();
            MarrowOptions::of(state.config_options())
                .statement_timeout
                .limit()
        } else {
            None
        };
        match timeout {
            None => run.await,
            Some(limit) => {
                let deadline = tokio::time::Instant::now() + limit;
                match tokio::time::timeout_at(deadline, run).await {
                    Ok(Ok(QueryOutput::Rows(rows))) => {
                        Ok(QueryOutput::Rows(with_deadline(rows, deadline, limit)))
                    }
                    Ok(other) => other,
                    Err(_) => Err(timed_out(limit)),
                }
            }
        }
    }

    /// Run a query planned by [`Session::prepare`] (a one-shot statement's GetFlightInfo) now, without planning it
    /// again, when nothing it depends on has changed since: no statement that changes what queries plan to ran in
    /// this database (DDL, `SET`, procedures) and every table it reads is still at the version it was planned with
    /// (row writes change it). `None`: plan afresh.
    pub(crate) async fn execute_ready(
        &self,
        ready: &Arc<crate::prepared::ReadyPlan>,
    ) -> Result<Option<SendableRecordBatchStream>> {
        if !ready.is_current(self.db.generation()).await {
            return Ok(None);
        }
        self.plans.note_ready_hit();
        let ready = ready.clone();
        let out = self
            .within_timeout(
                true,
                self.run_off_workers(move |_| async move {
                    let (state, plan) = ready.parts();
                    let physical = state
                        .query_planner()
                        .create_physical_plan(plan, state)
                        .await?;
                    let stream = execute_stream(physical, Arc::new(TaskContext::from(state)))?;
                    // As in run_datafusion: the plan's tables keep the versions being read alive while the rows
                    // stream.
                    let schema = stream.schema();
                    Ok(QueryOutput::Rows(Box::pin(RecordBatchStreamAdapter::new(
                        schema,
                        stream.inspect(move |_| {
                            let _ = &ready;
                        }),
                    ))))
                }),
            )
            .await?;
        Ok(Some(out.into_stream()))
    }

    /// Run a statement on a blocking thread, so planning (which does not yield: a 200,000-element IN list plans for
    /// seconds) and writes never hold a runtime worker that other clients' requests need. Nested statements (a
    /// CALL's own statements) run where they are; so does everything on a single-threaded runtime.
    pub(crate) async fn run_off_workers<T, F, Fut>(&self, job: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Session) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T>> + 'static,
    {
        use tokio::runtime::{Handle, RuntimeFlavor};
        let handle = match Handle::try_current() {
            Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread && !OFF_WORKERS.get() => h,
            _ => return Box::pin(job(self.clone())).await,
        };
        let slot = self
            .db
            .inner
            .statement_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::internal("the database is closing"))?;
        let session = self.clone();
        let job = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            OFF_WORKERS.set(true);
            struct Reset;
            impl Drop for Reset {
                fn drop(&mut self) {
                    OFF_WORKERS.set(false);
                }
            }
            let _reset = Reset;
            handle.block_on(Box::pin(job(session)))
        });
        match job.await {
            Ok(out) => out,
            Err(e) if e.is_panic() => {
                let panic = e.into_panic();
                let what = crate::error::panic_message(panic.as_ref());
                tracing::error!("a statement panicked: {what}");
                Err(Error::internal(format!(
                    "the statement failed on an internal error ({what}); nothing was changed by the part that failed"
                )))
            }
            Err(e) => Err(Error::internal(format!("the statement was stopped: {e}"))),
        }
    }

    async fn run_statement(
        &self,
        mut statement: DFStatement,
        params: Option<ParamValues>,
    ) -> Result<QueryOutput> {
        if let DFStatement::Statement(s) = &statement {
            if matches!(
                s.as_ref(),
                Statement::Prepare { .. }
                    | Statement::Execute { .. }
                    | Statement::Deallocate { .. }
            ) {
                return Box::pin(self.sql_prepared(s.as_ref().clone())).await;
            }
        }
        let _pins = time_travel::pin_versions(self, &mut statement).await?;
        let handler = self
            .db
            .extensions()
            .statements()
            .iter()
            .find(|h| h.handles(&statement))
            .cloned();
        match handler {
            // Boxed: handlers such as CALL run statements of their own.
            Some(h) => Box::pin(h.run(self, statement, params)).await,
            None => self.run_datafusion(statement, params).await,
        }
    }

    /// SQL `PREPARE name [(types)] AS statement`, `EXECUTE name[(values)]`, `DEALLOCATE [PREPARE] name`. The
    /// statement is kept as written and planned at each EXECUTE with its values bound to `$1, $2, …`, so it reads
    /// the tables as they are then (a plan kept from PREPARE would read the versions of that moment) and may be a
    /// write as well as a query.
    async fn sql_prepared(&self, statement: Statement) -> Result<QueryOutput> {
        use datafusion::sql::sqlparser::ast::Ident;
        let key = |i: &Ident| match i.quote_style {
            Some(_) => i.value.clone(),
            None => i.value.to_lowercase(),
        };
        let kept = || self.prepared.lock().expect("prepared statements");
        match statement {
            Statement::Prepare {
                name,
                data_types,
                statement,
            } => {
                if matches!(
                    *statement,
                    Statement::Prepare { .. }
                        | Statement::Execute { .. }
                        | Statement::Deallocate { .. }
                ) {
                    return Err(Error::invalid(
                        "PREPARE cannot prepare PREPARE, EXECUTE or DEALLOCATE",
                    ));
                }
                if kept().contains_key(&key(&name)) {
                    return Err(Error::new(
                        ErrorKind::AlreadyExists,
                        format!("prepared statement '{}' already exists", key(&name)),
                    ));
                }
                if matches!(*statement, Statement::Query(_)) {
                    // Checked now, as DataFusion checks a PREPARE (its placeholders against the declared types),
                    // so a bad query fails at PREPARE.
                    let prepare = Statement::Prepare {
                        name: name.clone(),
                        data_types: data_types.clone(),
                        statement: statement.clone(),
                    };
                    let plan = self
                        .plan(DFStatement::Statement(Box::new(prepare)), None)
                        .await?;
                    if let LogicalPlan::Statement(datafusion::logical_expr::Statement::Prepare(p)) =
                        &plan
                    {
                        let used = p.input.get_parameter_names()?.len();
                        if !p.fields.is_empty() && used != p.fields.len() {
                            return Err(Error::invalid(format!(
                                "PREPARE declares {} parameter types but the statement uses {used} parameters",
                                p.fields.len()
                            )));
                        }
                    }
                }
                let types = data_types.iter().map(|t| t.to_string()).collect();
                kept().insert(key(&name), (types, *statement));
                Ok(QueryOutput::Done)
            }
            Statement::Execute {
                name: Some(name),
                parameters,
                immediate: false,
                into,
                using,
                ..
            } if into.is_empty() && using.is_empty() => {
                let id = match name.0.as_slice() {
                    [part] => part.as_ident().map(&key),
                    _ => None,
                }
                .ok_or_else(|| Error::invalid(format!("not a prepared statement name: {name}")))?;
                let (types, inner) = kept().get(&id).cloned().ok_or_else(|| {
                    Error::not_found(format!("prepared statement '{id}' does not exist"))
                })?;
                if !types.is_empty() && types.len() != parameters.len() {
                    return Err(Error::invalid(format!(
                        "prepared statement '{id}' takes {} parameters, EXECUTE gave {}",
                        types.len(),
                        parameters.len()
                    )));
                }
                // The values are evaluated (and cast to the declared types) by one SELECT of them.
                let mut values = vec![];
                if !parameters.is_empty() {
                    let select = parameters
                        .iter()
                        .enumerate()
                        .map(|(i, p)| match types.get(i) {
                            Some(t) => format!("CAST(({p}) AS {t})"),
                            None => format!("({p})"),
                        })
                        .collect::<Vec<_>>()
                        .join(", ");
                    let (_, batches) = Box::pin(
                        self.execute_statement(self.parse_one(&format!("SELECT {select}"))?, None),
                    )
                    .await?
                    .collect()
                    .await?;
                    let row = batches
                        .iter()
                        .find(|b| b.num_rows() > 0)
                        .ok_or_else(|| Error::internal("EXECUTE's values gave no row"))?;
                    for c in row.columns() {
                        values.push(ScalarValue::try_from_array(c, 0)?);
                    }
                }
                let params = ParamValues::List(values.into_iter().map(Into::into).collect());
                Box::pin(
                    self.execute_statement(DFStatement::Statement(Box::new(inner)), Some(params)),
                )
                .await
            }
            Statement::Execute { .. } => Err(Error::unsupported(
                "only EXECUTE name[(values)] of a statement PREPAREd in this session is supported",
            )),
            Statement::Deallocate { name, .. } => {
                let mut kept = kept();
                if name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all") {
                    kept.clear();
                } else if kept.remove(&key(&name)).is_none() {
                    return Err(Error::not_found(format!(
                        "prepared statement '{}' does not exist",
                        key(&name)
                    )));
                }
                Ok(QueryOutput::Done)
            }
            _ => Err(Error::internal(
                "not a PREPARE, EXECUTE or DEALLOCATE statement",
            )),
        }
    }

    pub(crate) async fn plan(
        &self,
        statement: DFStatement,
        params: Option<ParamValues>,
    ) -> Result<LogicalPlan> {
        Ok(self.plan_with_state(statement, params).await?.1)
    }

    /// The plan and the session state it was planned with (a snapshot of the settings and functions).
    pub(crate) async fn plan_with_state(
        &self,
        statement: DFStatement,
        params: Option<ParamValues>,
    ) -> Result<(SessionState, LogicalPlan)> {
        self.open_table_function_tables(&statement).await?;
        let state = self.state();
        let plan = crate::catalog::views::planning(state.statement_to_plan(statement)).await?;
        let plan = match params {
            Some(p) => plan.with_param_values(p)?,
            None => plan,
        };
        Ok((state, plan))
    }

    pub(crate) async fn run_datafusion(
        &self,
        statement: DFStatement,
        params: Option<ParamValues>,
    ) -> Result<QueryOutput> {
        let (state, plan) = self.plan_with_state(statement, params).await?;
        if matches!(plan, LogicalPlan::Ddl(_) | LogicalPlan::Statement(_)) {
            // DDL and SET go through the context, which they change.
            self.ctx.execute_logical_plan(plan).await?.collect().await?;
            return Ok(QueryOutput::Done);
        }
        // The plan's tables hold the dataset versions being read: keep them alive while the rows stream, so
        // cleanup sees those versions as in use (see versions.rs).
        let tables = plan.clone();
        // A query runs on the state it was planned with (what SessionContext::execute_logical_plan does for it,
        // without cloning the state a second time).
        let stream = DataFrame::new(state, plan).execute_stream().await?;
        let schema = stream.schema();
        Ok(QueryOutput::Rows(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            stream.inspect(move |_| {
                let _ = &tables;
            }),
        ))))
    }
}

thread_local! {
    /// Set on a blocking thread while it runs a statement: statements it runs in turn stay on it.
    static OFF_WORKERS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn timed_out(limit: std::time::Duration) -> Error {
    Error::new(
        crate::error::ErrorKind::Timeout,
        format!(
            "the query ran past marrow.statement_timeout ({} ms) and was stopped",
            limit.as_millis()
        ),
    )
}

/// A query's rows, ending with a timeout error once `deadline` passes while the client still reads.
fn with_deadline(
    rows: SendableRecordBatchStream,
    deadline: tokio::time::Instant,
    limit: std::time::Duration,
) -> SendableRecordBatchStream {
    struct Deadline {
        rows: SendableRecordBatchStream,
        sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
        limit: std::time::Duration,
        done: bool,
    }
    impl futures::Stream for Deadline {
        type Item = datafusion::error::Result<RecordBatch>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            use std::future::Future;
            use std::task::Poll;
            if self.done {
                return Poll::Ready(None);
            }
            if !self.sleep.is_elapsed() {
                if let Poll::Ready(item) = self.rows.poll_next_unpin(cx) {
                    self.done = item.is_none();
                    return Poll::Ready(item);
                }
                if self.sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
            self.done = true;
            Poll::Ready(Some(Err(timed_out(self.limit).into())))
        }
    }
    let schema = rows.schema();
    Box::pin(RecordBatchStreamAdapter::new(
        schema,
        Deadline {
            rows,
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
            limit,
            done: false,
        },
    ))
}

/// String arguments of Marrow's table functions (`vector_search('t', …)`) that may name tables.
fn table_function_strings(statement: &DFStatement, functions: &[&str]) -> Vec<String> {
    use datafusion::sql::sqlparser::ast::{
        FunctionArg, FunctionArgExpr, TableFactor, Visit, Visitor,
    };
    struct Collect<'a>(Vec<String>, &'a [&'a str]);
    impl Visitor for Collect<'_> {
        type Break = ();
        fn pre_visit_table_factor(&mut self, tf: &TableFactor) -> std::ops::ControlFlow<()> {
            if let TableFactor::Table {
                name,
                args: Some(args),
                ..
            } = tf
            {
                let fname = name.to_string().to_lowercase();
                if self.1.contains(&fname.as_str()) {
                    for a in &args.args {
                        if let FunctionArg::Unnamed(FunctionArgExpr::Expr(
                            datafusion::sql::sqlparser::ast::Expr::Value(v),
                        )) = a
                        {
                            if let datafusion::sql::sqlparser::ast::Value::SingleQuotedString(s) =
                                &v.value
                            {
                                self.0.push(s.clone());
                            }
                        }
                    }
                }
            }
            std::ops::ControlFlow::Continue(())
        }
    }
    let mut c = Collect(vec![], functions);
    match statement {
        DFStatement::Statement(s) => {
            let _ = s.visit(&mut c);
        }
        DFStatement::Explain(e) => return table_function_strings(&e.statement, functions),
        _ => {}
    }
    c.0
}

impl Session {
    /// Replace `$n` in table-function arguments by probe values of their types, to prepare the statement; the
    /// parameters replaced, with their types (see table_function_params.rs).
    pub(crate) async fn probe_table_function_params(
        &self,
        statement: &mut DFStatement,
    ) -> Result<std::collections::BTreeMap<String, DataType>> {
        self.open_table_function_tables(statement).await?;
        table_function_params::bind(
            statement,
            self.db.extensions().table_functions(),
            self.db.schema_provider(),
            table_function_params::Binding::Probe,
        )
    }

    /// Table functions are planned synchronously: open the tables they name first, so their schemas are known.
    async fn open_table_function_tables(&self, statement: &DFStatement) -> Result<()> {
        let provider = self.db.schema_provider();
        let functions: Vec<&str> = self
            .db
            .extensions()
            .table_functions()
            .iter()
            .filter(|f| f.names_table)
            .map(|f| f.name)
            .collect();
        for name in table_function_strings(statement, &functions) {
            if provider.lance_table_exists(&name) {
                provider.open_table(&name, false).await?;
            }
        }
        Ok(())
    }
}
