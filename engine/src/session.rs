//! One session: the single place where Marrow's SQL is handled. Statements Marrow owns (table DDL that must create
//! Lance datasets, DML, file access) are taken from the syntax tree; everything else goes to DataFusion unchanged.

use std::sync::Arc;

use arrow::array::{RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ParamValues;
use datafusion::dataframe::DataFrame;
use datafusion::execution::context::{SessionContext, SessionState};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::execute_stream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::sql::parser::{DFParserBuilder, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{ObjectType, Statement};
use futures::{StreamExt, TryStreamExt};

use crate::database::Database;
use crate::error::{Error, Result};
use crate::plan_cache::PlanCache;
use crate::{ddl, dml, fence, index};

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

/// A session: its own `SET` options, sharing the database's tables with every other session.
#[derive(Clone)]
pub struct Session {
    db: Database,
    ctx: SessionContext,
    plans: Arc<PlanCache>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("session_id", &self.ctx.session_id())
            .finish()
    }
}

pub(crate) fn parse(sql: &str) -> Result<Vec<DFStatement>> {
    let dialect = crate::dialect::MarrowDialect;
    let statements = DFParserBuilder::new(sql)
        .with_dialect(&dialect)
        .build()?
        .parse_statements()?;
    Ok(statements.into_iter().collect())
}

pub(crate) fn parse_one(sql: &str) -> Result<DFStatement> {
    let mut statements = parse(sql)?;
    match statements.len() {
        0 => Err(Error::invalid("empty statement")),
        1 => Ok(statements.remove(0)),
        n => Err(Error::invalid(format!(
            "expected one statement, got {n}; send them one at a time"
        ))),
    }
}

impl Session {
    pub(crate) fn new(db: Database, ctx: SessionContext) -> Self {
        Self {
            db,
            ctx,
            plans: Arc::default(),
        }
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The DataFusion context (catalog queries, registered functions).
    pub fn context(&self) -> &SessionContext {
        &self.ctx
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
            if self.plan_cache_enabled() {
                return Box::pin(self.execute_cached(sql, p)).await;
            }
            return Box::pin(self.execute_statement(parse_one(sql)?, Some(p))).await;
        }
        Box::pin(self.execute_statement(parse_one(sql)?, None)).await
    }

    /// The plan cache of this session (and its clones): how many plans it keeps, and how many executions of a
    /// statement with new vector parameters reused one instead of planning.
    pub fn plan_cache_stats(&self) -> (usize, u64) {
        self.plans.stats()
    }

    fn plan_cache_enabled(&self) -> bool {
        let state = self.ctx.state_ref();
        let state = state.read();
        state
            .config_options()
            .extensions
            .get::<crate::vector::MarrowOptions>()
            .is_none_or(|o| o.plan_cache)
    }

    /// A query with bound values through the plan cache (plan_cache.rs): the kept plan rebuilt for these values
    /// when it is still valid, otherwise planned here and offered to the cache.
    async fn execute_cached(&self, sql: &str, params: ParamValues) -> Result<QueryOutput> {
        let generation = self.db.generation();
        if let Some((plan, task)) = self.plans.lookup(sql, &params, generation).await {
            return Ok(QueryOutput::Rows(execute_stream(plan, task)?));
        }
        let mut statement = parse_one(sql)?;
        let is_query = matches!(&statement, DFStatement::Statement(s) if matches!(s.as_ref(), Statement::Query(_)));
        if !is_query {
            return self.execute_statement(statement, Some(params)).await;
        }
        let original = statement.clone();
        let pins = crate::versions::pin_versions(self, &mut statement).await?;
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
        for statement in parse(sql)? {
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
        // Anything but a query may change what later queries plan to (DDL, writes, SET): counted before and after,
        // so a plan made while it ran is not kept past it either.
        let changes = !matches!(&statement, DFStatement::Statement(s) if matches!(s.as_ref(), Statement::Query(_)));
        if changes {
            self.db.bump_generation();
        }
        let out = self.run_statement(statement, params).await;
        if changes {
            self.db.bump_generation();
        }
        out
    }

    async fn run_statement(
        &self,
        mut statement: DFStatement,
        params: Option<ParamValues>,
    ) -> Result<QueryOutput> {
        let _pins = crate::versions::pin_versions(self, &mut statement).await?;
        match statement {
            DFStatement::Statement(stmt) => match *stmt {
                Statement::CreateTable(ct) => ddl::create_table(self, ct, params).await,
                Statement::Insert(insert) => dml::insert(self, insert, params).await,
                Statement::Update(update) => dml::update(self, update, params).await,
                Statement::Delete(delete) => dml::delete(self, delete, params).await,
                Statement::CreateIndex(ci) => index::create_index(self, ci).await,
                Statement::Drop {
                    object_type: ObjectType::Index,
                    names,
                    if_exists,
                    table,
                    ..
                } => index::drop_index(self, &names, if_exists, table.as_ref()).await,
                Statement::OptimizeTable { name, .. } => index::optimize_table(self, &name).await,
                Statement::Call(function) => {
                    // Procedures run statements of their own.
                    Box::pin(crate::versions::call(self, function, params)).await
                }
                Statement::Merge(_) => Err(Error::unsupported(
                    "MERGE is not supported; use INSERT … ON CONFLICT (key) DO UPDATE SET …",
                )),
                Statement::AlterTable(_) => Err(Error::unsupported("ALTER TABLE is not supported yet")),
                Statement::CreateSchema { .. } | Statement::CreateDatabase { .. } => Err(Error::unsupported(
                    "Marrow has one schema (marrow.public); CREATE SCHEMA/DATABASE is not supported",
                )),
                Statement::Drop {
                    object_type: ObjectType::Schema | ObjectType::Database,
                    ..
                } => Err(Error::unsupported("Marrow has one schema (marrow.public); it cannot be dropped")),
                other => self.run_datafusion(DFStatement::Statement(Box::new(other)), params).await,
            },
            DFStatement::CreateExternalTable(mut cet) => {
                cet.location = fence::check_import(self.db.config(), &cet.location)?.to_string_lossy().into_owned();
                self.run_datafusion(DFStatement::CreateExternalTable(cet), params).await
            }
            DFStatement::CopyTo(copy) => crate::export::copy(self, copy, params, None).await,
            other => self.run_datafusion(other, params).await,
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
    async fn plan_with_state(
        &self,
        statement: DFStatement,
        params: Option<ParamValues>,
    ) -> Result<(SessionState, LogicalPlan)> {
        self.open_table_function_tables(&statement).await?;
        let state = self.state();
        let plan = state.statement_to_plan(statement).await?;
        let plan = match params {
            Some(p) => plan.with_param_values(p)?,
            None => plan,
        };
        Ok((state, plan))
    }

    async fn run_datafusion(
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

/// String arguments of Marrow's table functions (`vector_search('t', …)`) that may name tables.
fn table_function_strings(statement: &DFStatement) -> Vec<String> {
    use datafusion::sql::sqlparser::ast::{
        FunctionArg, FunctionArgExpr, TableFactor, Visit, Visitor,
    };
    struct Collect(Vec<String>);
    impl Visitor for Collect {
        type Break = ();
        fn pre_visit_table_factor(&mut self, tf: &TableFactor) -> std::ops::ControlFlow<()> {
            if let TableFactor::Table {
                name,
                args: Some(args),
                ..
            } = tf
            {
                let fname = name.to_string().to_lowercase();
                if crate::table_functions::TABLE_ARGUMENT_FUNCTIONS.contains(&fname.as_str()) {
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
    let mut c = Collect(vec![]);
    match statement {
        DFStatement::Statement(s) => {
            let _ = s.visit(&mut c);
        }
        DFStatement::Explain(e) => return table_function_strings(&e.statement),
        _ => {}
    }
    c.0
}

impl Session {
    /// Table functions are planned synchronously: open the tables they name first, so their schemas are known.
    async fn open_table_function_tables(&self, statement: &DFStatement) -> Result<()> {
        let provider = self.db.schema_provider();
        for name in table_function_strings(statement) {
            if provider.lance_table_exists(&name) {
                provider.open_table(&name, false).await?;
            }
        }
        Ok(())
    }
}
