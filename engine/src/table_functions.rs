//! Marrow's table functions: `marrow_indexes()`, `vector_search(…)` and `vector_search_batch(…)`.
//!
//! Table functions are planned synchronously, so the tables they name are opened by the session just before
//! planning (see `Session::plan`) and their schemas read from the catalog's cache here.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, UInt64Array, UInt64Builder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{
    Session as CatalogSession, TableFunctionArgs, TableFunctionImpl, TableProvider,
};
use datafusion::common::{Result as DFResult, ScalarValue};
use datafusion::datasource::{provider_as_source, MemTable};
use datafusion::error::DataFusionError;
use datafusion::execution::context::SessionState;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{cast, col, lit, Expr, LogicalPlanBuilder, TableType};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{collect, ExecutionPlan};
use futures::{StreamExt, TryStreamExt};
use lance_linalg::distance::DistanceType;

use crate::catalog::MarrowSchema;
use crate::error::Error;
use crate::index::list_indexes;
use crate::vector::{function_for, query_vector, vector_indexes};

/// The largest k a table function accepts.
pub const MAX_K: i64 = 100_000;
/// The name of the distance column vector_search adds.
pub const DISTANCE_COLUMN: &str = "_distance";

pub(crate) fn register(state: &mut SessionState, schema: Arc<MarrowSchema>) {
    state.register_udtf("marrow_indexes", Arc::new(IndexesFunction(schema.clone())));
    state.register_udtf(
        "vector_search",
        Arc::new(VectorSearchFunction(schema.clone())),
    );
    state.register_udtf(
        "vector_search_batch",
        Arc::new(VectorSearchBatchFunction(schema.clone())),
    );
    state.register_udtf(
        "marrow_versions",
        Arc::new(crate::versions::VersionsFunction(schema)),
    );
}

/// Names of table functions whose string arguments name tables to open before planning.
pub(crate) const TABLE_ARGUMENT_FUNCTIONS: [&str; 2] = ["vector_search", "vector_search_batch"];

fn plan_err(msg: impl Into<String>) -> DataFusionError {
    DataFusionError::from(Error::invalid(msg))
}

fn constant_args(args: &TableFunctionArgs, name: &str) -> DFResult<Vec<ScalarValue>> {
    let simplifier = ExprSimplifier::new(
        SimplifyContext::builder()
            .with_config_options(Arc::new(args.session().config_options().clone()))
            .build(),
    );
    args.exprs()
        .iter()
        .map(|e| match simplifier.simplify(e.clone())? {
            Expr::Literal(v, _) => Ok(v),
            other => Err(plan_err(format!(
                "{name}: argument {other} must be a constant (a literal, or a function of literals such as embed('…')); \
                 for a $1 parameter use SELECT … ORDER BY <distance>(column, $1) LIMIT k"
            ))),
        })
        .collect()
}

fn string_arg(v: &ScalarValue, name: &str, what: &str) -> DFResult<String> {
    match v {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Ok(s.clone()),
        other => Err(plan_err(format!(
            "{name}: {what} must be a string, got {other}"
        ))),
    }
}

fn k_arg(v: &ScalarValue, name: &str) -> DFResult<usize> {
    let k = match v {
        ScalarValue::Int64(Some(k)) => *k,
        ScalarValue::Int32(Some(k)) => *k as i64,
        ScalarValue::UInt64(Some(k)) => *k as i64,
        other => {
            return Err(plan_err(format!(
                "{name}: k must be an integer, got {other}"
            )))
        }
    };
    if k <= 0 {
        return Err(plan_err(format!("{name}: k must be positive, got {k}")));
    }
    if k > MAX_K {
        return Err(plan_err(format!(
            "{name}: k = {k} is above the limit of {MAX_K}; use ORDER BY <distance> LIMIT k for larger results"
        )));
    }
    Ok(k as usize)
}

fn metric_arg(v: Option<&ScalarValue>, name: &str) -> DFResult<Option<DistanceType>> {
    match v {
        None => Ok(None),
        Some(v) => {
            let s = string_arg(v, name, "metric")?;
            DistanceType::try_from(s.as_str()).map(Some).map_err(|_| {
                plan_err(format!(
                    "{name}: unknown metric '{s}'; use 'cosine', 'l2', 'dot' or 'hamming'"
                ))
            })
        }
    }
}

fn table_schema(schema: &MarrowSchema, table: &str, name: &str) -> DFResult<SchemaRef> {
    schema.cached_schema(table).ok_or_else(|| {
        DataFusionError::from(Error::not_found(format!(
            "{name}: table '{table}' not found"
        )))
    })
}

fn vector_column(schema: &Schema, table: &str, column: &str, name: &str) -> DFResult<DataType> {
    let field = schema.field_with_name(column).map_err(|_| {
        DataFusionError::from(Error::not_found(format!(
            "{name}: column {column} not found in {table}"
        )))
    })?;
    match field.data_type() {
        dt @ DataType::FixedSizeList(..) => Ok(dt.clone()),
        other => Err(plan_err(format!(
            "{name}: {table}.{column} is {other}, not a vector column (FLOAT[n] / VECTOR(n))"
        ))),
    }
}

/// One vector query, planned through the same rewrite as `ORDER BY <distance> LIMIT k`.
#[derive(Debug, Clone)]
struct SearchSpec {
    table: String,
    column: String,
    k: usize,
    metric: Option<DistanceType>,
}

impl SearchSpec {
    /// The physical plan for one query vector: the table's columns plus `_distance`, nearest first.
    async fn plan(
        &self,
        catalog: &MarrowSchema,
        state: &SessionState,
        query: ScalarValue,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let table = catalog.open_table(&self.table, false).await?;
        let metric = match self.metric {
            Some(m) => m,
            None => vector_indexes(table.dataset(), &self.column)
                .await?
                .first()
                .and_then(|i| i.metric)
                .unwrap_or(DistanceType::Cosine),
        };
        let function = state
            .scalar_functions()
            .get(function_for(metric))
            .cloned()
            .ok_or_else(|| {
                DataFusionError::Internal(format!("{} is not registered", function_for(metric)))
            })?;
        let schema = table.schema();
        let mut exprs: Vec<Expr> = schema
            .fields()
            .iter()
            .map(|f| col(datafusion::common::Column::from_name(f.name())))
            .collect();
        let distance = cast(
            function.call(vec![
                col(datafusion::common::Column::from_name(&self.column)),
                lit(query),
            ]),
            DataType::Float64,
        );
        exprs.push(distance.alias(DISTANCE_COLUMN));
        let plan = LogicalPlanBuilder::scan(self.table.clone(), provider_as_source(table), None)?
            .project(exprs)?
            .sort_with_limit(vec![col(DISTANCE_COLUMN).sort(true, false)], Some(self.k))?
            .build()?;
        state.create_physical_plan(&plan).await
    }
}

fn output_schema(table: &Schema, prefix: Option<(&Schema, &str)>) -> SchemaRef {
    let mut fields: Vec<Field> = vec![];
    if let Some((query, skip)) = prefix {
        for f in query.fields() {
            if f.name() != skip {
                fields.push(
                    f.as_ref()
                        .clone()
                        .with_name(format!("query_{}", f.name()))
                        .with_nullable(true),
                );
            }
        }
    }
    fields.extend(table.fields().iter().map(|f| f.as_ref().clone()));
    fields.push(Field::new(DISTANCE_COLUMN, DataType::Float64, true));
    Arc::new(Schema::new(fields))
}

/// `vector_search(table, column, query_vector, k [, metric])`.
#[derive(Debug)]
struct VectorSearchFunction(Arc<MarrowSchema>);

impl TableFunctionImpl for VectorSearchFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DFResult<Arc<dyn TableProvider>> {
        const NAME: &str = "vector_search";
        let values = constant_args(&args, NAME)?;
        if !(4..=5).contains(&values.len()) {
            return Err(plan_err(
                "vector_search(table, column, query_vector, k [, metric]) takes 4 or 5 arguments",
            ));
        }
        let table = string_arg(&values[0], NAME, "table")?;
        let column = string_arg(&values[1], NAME, "column")?;
        let schema = table_schema(&self.0, &table, NAME)?;
        let column_type = vector_column(&schema, &table, &column, NAME)?;
        if query_vector(&values[2], &table, &column, &column_type)?.is_none() {
            return Err(plan_err(
                "vector_search: the query vector must be a non-NULL list of numbers",
            ));
        }
        let spec = SearchSpec {
            k: k_arg(&values[3], NAME)?,
            metric: metric_arg(values.get(4), NAME)?,
            table,
            column,
        };
        Ok(Arc::new(VectorSearchProvider {
            catalog: self.0.clone(),
            schema: output_schema(&schema, None),
            spec,
            query: values[2].clone(),
        }))
    }
}

#[derive(Debug)]
struct VectorSearchProvider {
    catalog: Arc<MarrowSchema>,
    schema: SchemaRef,
    spec: SearchSpec,
    query: ScalarValue,
}

fn session_state(state: &dyn CatalogSession) -> DFResult<&SessionState> {
    state
        .as_any()
        .downcast_ref::<SessionState>()
        .ok_or_else(|| {
            DataFusionError::Internal("table function planned outside a DataFusion session".into())
        })
}

/// Keep the columns at `projection` of a plan's output, by name and in that order.
pub(crate) fn project(
    plan: Arc<dyn ExecutionPlan>,
    projection: Option<&Vec<usize>>,
) -> DFResult<Arc<dyn ExecutionPlan>> {
    use datafusion::physical_expr::expressions::Column;
    let Some(p) = projection else {
        return Ok(plan);
    };
    let schema = plan.schema();
    let exprs = p
        .iter()
        .map(|i| {
            let name = schema.field(*i).name().clone();
            (
                Arc::new(Column::new(&name, *i))
                    as Arc<dyn datafusion::physical_expr::PhysicalExpr>,
                name,
            )
        })
        .collect::<Vec<_>>();
    Ok(Arc::new(
        datafusion::physical_plan::projection::ProjectionExec::try_new(exprs, plan)?,
    ))
}

#[async_trait]
impl TableProvider for VectorSearchProvider {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn table_type(&self) -> TableType {
        TableType::Temporary
    }
    async fn scan(
        &self,
        state: &dyn CatalogSession,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let plan = self
            .spec
            .plan(&self.catalog, session_state(state)?, self.query.clone())
            .await?;
        project(plan, projection)
    }
}

/// `vector_search_batch(table, column, query_table, query_column, k [, metric])`: the k nearest rows of `table` for
/// every row of `query_table`, with the query row's other columns prefixed `query_`.
#[derive(Debug)]
struct VectorSearchBatchFunction(Arc<MarrowSchema>);

impl TableFunctionImpl for VectorSearchBatchFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DFResult<Arc<dyn TableProvider>> {
        const NAME: &str = "vector_search_batch";
        let values = constant_args(&args, NAME)?;
        if !(5..=6).contains(&values.len()) {
            return Err(plan_err(
                "vector_search_batch(table, column, query_table, query_column, k [, metric]) takes 5 or 6 arguments",
            ));
        }
        let table = string_arg(&values[0], NAME, "table")?;
        let column = string_arg(&values[1], NAME, "column")?;
        let query_table = string_arg(&values[2], NAME, "query_table")?;
        let query_column = string_arg(&values[3], NAME, "query_column")?;
        let schema = table_schema(&self.0, &table, NAME)?;
        let column_type = vector_column(&schema, &table, &column, NAME)?;
        let query_schema = table_schema(&self.0, &query_table, NAME)?;
        let query_type = vector_column(&query_schema, &query_table, &query_column, NAME)?;
        if let (DataType::FixedSizeList(_, a), DataType::FixedSizeList(_, b)) =
            (&column_type, &query_type)
        {
            if a != b {
                return Err(plan_err(format!(
                    "{NAME}: {query_table}.{query_column} has {b} dimensions; {table}.{column} has {a}"
                )));
            }
        }
        let spec = SearchSpec {
            k: k_arg(&values[4], NAME)?,
            metric: metric_arg(values.get(5), NAME)?,
            table,
            column,
        };
        Ok(Arc::new(BatchProvider {
            catalog: self.0.clone(),
            schema: output_schema(&schema, Some((&query_schema, &query_column))),
            spec,
            query_table,
            query_column,
        }))
    }
}

#[derive(Debug)]
struct BatchProvider {
    catalog: Arc<MarrowSchema>,
    schema: SchemaRef,
    spec: SearchSpec,
    query_table: String,
    query_column: String,
}

#[async_trait]
impl TableProvider for BatchProvider {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn table_type(&self) -> TableType {
        TableType::Temporary
    }
    async fn scan(
        &self,
        state: &dyn CatalogSession,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let stream = Arc::new(BatchStream {
            catalog: self.catalog.clone(),
            schema: self.schema.clone(),
            spec: self.spec.clone(),
            query_table: self.query_table.clone(),
            query_column: self.query_column.clone(),
            state: session_state(state)?.clone(),
        });
        Ok(Arc::new(StreamingTableExec::try_new(
            self.schema.clone(),
            vec![stream],
            projection,
            vec![],
            false,
            limit,
        )?))
    }
}

#[derive(Debug)]
struct BatchStream {
    catalog: Arc<MarrowSchema>,
    schema: SchemaRef,
    spec: SearchSpec,
    query_table: String,
    query_column: String,
    state: SessionState,
}

/// Queries run this many at a time: each is an index probe (or a scan) that is mostly waiting on I/O or one core.
const BATCH_CONCURRENCY: usize = 4;

impl BatchStream {
    async fn run(
        catalog: Arc<MarrowSchema>,
        schema: SchemaRef,
        spec: SearchSpec,
        query_table: String,
        query_column: String,
        state: SessionState,
    ) -> DFResult<futures::stream::BoxStream<'static, DFResult<RecordBatch>>> {
        let provider = catalog.open_table(&query_table, false).await?;
        let physical = provider.scan(&state, None, &[], None).await?;
        let queries = collect(physical, state.task_ctx()).await?;
        let query_schema = provider.schema();
        let vector_index = query_schema.index_of(&query_column)?;
        let mut jobs = vec![];
        for batch in queries {
            for row in 0..batch.num_rows() {
                let query = ScalarValue::try_from_array(batch.column(vector_index), row)?;
                if query.is_null() {
                    continue;
                }
                let prefix: Vec<ArrayRef> = (0..batch.num_columns())
                    .filter(|c| *c != vector_index)
                    .map(|c| batch.column(c).slice(row, 1))
                    .collect();
                jobs.push((query, prefix));
            }
        }
        let stream = futures::stream::iter(jobs)
            .map(move |(query, prefix)| {
                let (catalog, state, spec, schema) =
                    (catalog.clone(), state.clone(), spec.clone(), schema.clone());
                async move {
                    let plan = spec.plan(&catalog, &state, query).await?;
                    let found = collect(plan, state.task_ctx()).await?;
                    let mut out = vec![];
                    for b in found {
                        let n = b.num_rows();
                        let take = UInt64Array::from(vec![0u64; n]);
                        let mut columns: Vec<ArrayRef> = prefix
                            .iter()
                            .map(|a| arrow::compute::take(a.as_ref(), &take, None))
                            .collect::<Result<_, _>>()?;
                        columns.extend(b.columns().iter().cloned());
                        out.push(RecordBatch::try_new(schema.clone(), columns)?);
                    }
                    Ok::<_, DataFusionError>(futures::stream::iter(out.into_iter().map(Ok)))
                }
            })
            .buffered(BATCH_CONCURRENCY)
            .try_flatten();
        Ok(stream.boxed())
    }
}

impl PartitionStream for BatchStream {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let fut = Self::run(
            self.catalog.clone(),
            self.schema.clone(),
            self.spec.clone(),
            self.query_table.clone(),
            self.query_column.clone(),
            self.state.clone(),
        );
        let stream = futures::stream::once(fut).try_flatten();
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream))
    }
}

/// `marrow_indexes()`: every index with its kind, column, metric and coverage.
#[derive(Debug)]
struct IndexesFunction(Arc<MarrowSchema>);

fn indexes_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("table_name", DataType::Utf8, false),
        Field::new("index_name", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("metric", DataType::Utf8, true),
        Field::new("rows_indexed", DataType::UInt64, false),
        Field::new("rows_unindexed", DataType::UInt64, false),
    ]))
}

impl TableFunctionImpl for IndexesFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DFResult<Arc<dyn TableProvider>> {
        if !args.exprs().is_empty() {
            return Err(plan_err("marrow_indexes() takes no arguments"));
        }
        Ok(Arc::new(IndexesTable(self.0.clone())))
    }
}

#[derive(Debug)]
struct IndexesTable(Arc<MarrowSchema>);

#[async_trait]
impl TableProvider for IndexesTable {
    fn schema(&self) -> SchemaRef {
        indexes_schema()
    }
    fn table_type(&self) -> TableType {
        TableType::View
    }
    async fn scan(
        &self,
        state: &dyn CatalogSession,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let list = list_indexes(&self.0).await?;
        let text = |f: fn(&crate::index::IndexInfo) -> Option<&str>| -> ArrayRef {
            Arc::new(list.iter().map(f).collect::<StringArray>())
        };
        let mut indexed = UInt64Builder::new();
        let mut unindexed = UInt64Builder::new();
        for i in &list {
            indexed.append_value(i.rows_indexed);
            unindexed.append_value(i.rows_unindexed);
        }
        let batch = RecordBatch::try_new(
            indexes_schema(),
            vec![
                text(|i| Some(&i.table)),
                text(|i| Some(&i.name)),
                text(|i| Some(&i.kind)),
                text(|i| Some(&i.column)),
                text(|i| i.metric.as_deref()),
                Arc::new(indexed.finish()),
                Arc::new(unindexed.finish()),
            ],
        )?;
        MemTable::try_new(indexes_schema(), vec![vec![batch]])?
            .scan(state, projection, filters, limit)
            .await
    }
}
