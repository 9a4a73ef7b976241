//! `vector_search_batch(table, column, query_table, query_column, k [, metric])`.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{
    Session as CatalogSession, TableFunctionArgs, TableFunctionImpl, TableProvider,
};
use datafusion::common::{Result as DFResult, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::execution::context::SessionState;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{collect, ExecutionPlan};
use futures::{StreamExt, TryStreamExt};

use crate::catalog::MarrowSchema;

use super::vector_search::session_state;
use super::*;

/// `vector_search_batch(table, column, query_table, query_column, k [, metric])`: the k nearest rows of `table` for
/// every row of `query_table`, with the query row's other columns prefixed `query_`.
#[derive(Debug)]
pub struct VectorSearchBatchFunction(pub Arc<MarrowSchema>);

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
        if let Some(found) = exact_in_one_scan(&catalog, &state, &spec, &schema, &jobs).await? {
            return Ok(futures::stream::iter(found.into_iter().map(Ok)).boxed());
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

/// Without a vector index, every query is an exact scan of the table: tables up to this many rows are read once and
/// searched for all queries together instead.
const ONE_SCAN_MAX_ROWS: usize = 1_000_000;

/// Every query's k nearest rows from one scan of the table, for the exact path over a FLOAT vector column (cosine, L2
/// or dot): the per-query path plans and scans the whole table once per query row, which made a self-search of 10,000
/// memories take 70 s. None when the column has an index (each query probes it), the table is larger than
/// [`ONE_SCAN_MAX_ROWS`] or the vectors are not FLOAT without NULL elements; the per-query path answers then. Ties go
/// to the earlier row; rows without a vector come last, as NULLS LAST puts them.
async fn exact_in_one_scan(
    catalog: &MarrowSchema,
    state: &SessionState,
    spec: &SearchSpec,
    schema: &SchemaRef,
    jobs: &[(ScalarValue, Vec<ArrayRef>)],
) -> DFResult<Option<Vec<RecordBatch>>> {
    use arrow::array::{Array, AsArray, Float64Array};
    use arrow::datatypes::Float32Type;
    use lance_linalg::distance::DistanceType;
    use marrow_udfs::distance::kernels;

    let table = catalog.open_table(&spec.table, false).await?;
    let metric = spec.metric.unwrap_or(DistanceType::Cosine);
    if matches!(metric, DistanceType::Hamming)
        || !crate::vector::vector_indexes(table.dataset(), &spec.column)
            .await?
            .is_empty()
        || table
            .dataset()
            .count_rows(None)
            .await
            .map_err(crate::vector::lance_err)?
            > ONE_SCAN_MAX_ROWS
    {
        return Ok(None);
    }
    let target_schema = table.schema();
    let physical = table.scan(state, None, &[], None).await?;
    let batches = collect(physical, state.task_ctx()).await?;
    let target = arrow::compute::concat_batches(&target_schema, &batches)?;
    let column = target.column(target_schema.index_of(&spec.column)?);
    let DataType::FixedSizeList(item, d) = column.data_type() else {
        return Ok(None);
    };
    if item.data_type() != &DataType::Float32 {
        return Ok(None);
    }
    let (d, list) = (*d as usize, column.as_fixed_size_list());
    let values = list.values().as_primitive::<Float32Type>();
    if values.null_count() > 0 {
        return Ok(None);
    }
    let rows = values.values();
    let query_type = DataType::new_fixed_size_list(DataType::Float32, d as i32, true);
    let mut out = Vec::with_capacity(jobs.len());
    for (query, prefix) in jobs {
        let q = arrow::compute::cast(&query.to_array()?, &query_type)?;
        let q = q.as_fixed_size_list();
        let q_values = q.values().as_primitive::<Float32Type>();
        if q.is_null(0) || q_values.null_count() > 0 {
            return Ok(None);
        }
        let prepared = kernels::Query::new(q_values.values()[..d].to_vec());
        let mut scored: Vec<(f64, u32)> = Vec::with_capacity(list.len());
        for r in 0..list.len() {
            let distance = if list.is_null(r) {
                None
            } else {
                let v = &rows[r * d..(r + 1) * d];
                match metric {
                    DistanceType::L2 => Some(kernels::l2(v, &prepared)),
                    DistanceType::Dot => Some(0.0 - kernels::dot(v, &prepared)),
                    _ => kernels::cosine_distance(v, &prepared),
                }
            };
            // NULL (no vector, or a zero vector under cosine) sorts after every number.
            scored.push((distance.unwrap_or(f64::NAN), r as u32));
        }
        let key = |a: &(f64, u32), b: &(f64, u32)| {
            a.0.is_nan()
                .cmp(&b.0.is_nan())
                .then(a.0.total_cmp(&b.0))
                .then(a.1.cmp(&b.1))
        };
        let k = spec.k.min(scored.len());
        if k < scored.len() {
            scored.select_nth_unstable_by(k, key);
            scored.truncate(k);
        }
        scored.sort_unstable_by(key);
        let take = UInt64Array::from_iter_values(scored.iter().map(|(_, r)| *r as u64));
        let repeat = UInt64Array::from(vec![0u64; k]);
        let mut columns: Vec<ArrayRef> = prefix
            .iter()
            .map(|a| arrow::compute::take(a.as_ref(), &repeat, None))
            .collect::<Result<_, _>>()?;
        for c in target.columns() {
            columns.push(arrow::compute::take(c.as_ref(), &take, None)?);
        }
        columns.push(Arc::new(Float64Array::from_iter(
            scored.iter().map(|(x, _)| (!x.is_nan()).then_some(*x)),
        )));
        out.push(RecordBatch::try_new(schema.clone(), columns)?);
    }
    Ok(Some(out))
}
