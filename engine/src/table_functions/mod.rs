//! Marrow's table functions, one file each, registered in `builtins.rs`: `vector_search`, `vector_search_batch`,
//! `fts_search`, `hybrid_search`, `marrow_indexes`, `marrow_versions`, `marrow_procedures` and `read_safetensors`.
//!
//! Table functions are planned synchronously, so the tables they name are opened by the session just before
//! planning (see `Session::plan`) and their schemas read from the catalog's cache here.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session as CatalogSession, TableFunctionArgs, TableProvider};
use datafusion::common::{Result as DFResult, ScalarValue};
use datafusion::datasource::{provider_as_source, MemTable};
use datafusion::error::DataFusionError;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{cast, col, lit, Expr, LogicalPlanBuilder, TableType};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_plan::ExecutionPlan;
use futures::future::BoxFuture;
use lance_linalg::distance::DistanceType;

use crate::catalog::MarrowSchema;
use crate::error::Error;
use crate::vector::{function_for, vector_indexes};

pub mod fts_query;
pub mod fts_rank;
pub mod fts_search;
pub mod hybrid_search;
pub mod marrow_indexes;
pub mod marrow_procedures;
pub mod marrow_versions;
pub mod read_safetensors;
pub mod vector_search;
pub mod vector_search_batch;

/// The largest k a table function accepts.
pub const MAX_K: i64 = 100_000;
/// The name of the distance column vector_search adds.
pub const DISTANCE_COLUMN: &str = "_distance";

fn plan_err(msg: impl Into<String>) -> DataFusionError {
    DataFusionError::from(Error::invalid(msg))
}

/// Whether a table function's provider opens its table when its plan is executed (`fts_search`, `hybrid_search`),
/// so a plan kept from earlier still reads the latest version.
pub(crate) fn opens_at_execution(provider: &dyn TableProvider) -> bool {
    fts_search::is_provider(provider) || hybrid_search::is_provider(provider)
}

/// Filter pushdown of a search table function: a condition on the table's columns is applied exactly, as the
/// search's prefilter; one that reads a column the search computes (`computed`) stays above it.
pub(crate) fn prefilter_pushdown(
    filters: &[&Expr],
    computed: &[&str],
) -> Vec<datafusion::logical_expr::TableProviderFilterPushDown> {
    use datafusion::logical_expr::TableProviderFilterPushDown;
    filters
        .iter()
        .map(|f| {
            if f.column_refs()
                .iter()
                .any(|c| computed.contains(&c.name.as_str()))
            {
                TableProviderFilterPushDown::Unsupported
            } else {
                TableProviderFilterPushDown::Exact
            }
        })
        .collect()
}

pub(crate) fn constant_args(args: &TableFunctionArgs, name: &str) -> DFResult<Vec<ScalarValue>> {
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
                "{name}: argument {other} must be a constant (a literal, a function of literals such as embed('…'), \
                 or a $n parameter of a position that takes one, with a value bound)"
            ))),
        })
        .collect()
}

/// As [`constant_args`], except that an argument at one of the `deferrable` positions that holds a `$n` is `None`:
/// the function resolves it when its plan executes (session/deferred.rs).
pub(crate) fn constant_or_deferred_args(
    args: &TableFunctionArgs,
    name: &str,
    deferrable: &[usize],
) -> DFResult<Vec<Option<ScalarValue>>> {
    let deferred: Vec<bool> = args
        .exprs()
        .iter()
        .enumerate()
        .map(|(i, e)| deferrable.contains(&i) && crate::session::has_placeholder(e))
        .collect();
    if !deferred.contains(&true) {
        return Ok(constant_args(args, name)?.into_iter().map(Some).collect());
    }
    let exprs: Vec<Expr> = args
        .exprs()
        .iter()
        .zip(&deferred)
        .map(|(e, d)| {
            if *d {
                lit(ScalarValue::Null)
            } else {
                e.clone()
            }
        })
        .collect();
    let values = constant_args(&TableFunctionArgs::new(&exprs, args.session()), name)?;
    Ok(values
        .into_iter()
        .zip(deferred)
        .map(|(v, d)| (!d).then_some(v))
        .collect())
}

pub(crate) fn string_arg(v: &ScalarValue, name: &str, what: &str) -> DFResult<String> {
    match v {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Ok(s.clone()),
        other => Err(plan_err(format!(
            "{name}: {what} must be a string, got {other}"
        ))),
    }
}

pub(crate) fn k_arg(v: &ScalarValue, name: &str) -> DFResult<usize> {
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

pub(crate) fn metric_arg(v: Option<&ScalarValue>, name: &str) -> DFResult<Option<DistanceType>> {
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

pub(crate) fn table_schema(schema: &MarrowSchema, table: &str, name: &str) -> DFResult<SchemaRef> {
    schema.cached_schema(table).ok_or_else(|| {
        DataFusionError::from(Error::not_found(format!(
            "{name}: table '{table}' not found"
        )))
    })
}

pub(crate) fn vector_column(
    schema: &Schema,
    table: &str,
    column: &str,
    name: &str,
) -> DFResult<DataType> {
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
pub(crate) struct SearchSpec {
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

pub(crate) fn output_schema(table: &Schema, prefix: Option<(&Schema, &str)>) -> SchemaRef {
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

/// A catalog listing computed when it is scanned, so a plan reads the state at execution: the one provider behind
/// `marrow_indexes()`, `marrow_versions(t)` and `marrow_procedures()`.
pub(crate) struct Listing {
    schema: SchemaRef,
    compute: Box<dyn Fn() -> BoxFuture<'static, crate::error::Result<RecordBatch>> + Send + Sync>,
}

impl std::fmt::Debug for Listing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listing")
            .field("schema", &self.schema)
            .finish()
    }
}

impl Listing {
    pub(crate) fn new(
        schema: SchemaRef,
        compute: impl Fn() -> BoxFuture<'static, crate::error::Result<RecordBatch>>
            + Send
            + Sync
            + 'static,
    ) -> Arc<Self> {
        Arc::new(Self {
            schema,
            compute: Box::new(compute),
        })
    }
}

#[async_trait]
impl TableProvider for Listing {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
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
        let batch = (self.compute)().await?;
        MemTable::try_new(self.schema.clone(), vec![vec![batch]])?
            .scan(state, projection, filters, limit)
            .await
    }
}
