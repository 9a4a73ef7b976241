//! `fts_search(table, column, query, k)`: the k rows of `table` whose text `column` matches `query` best by BM25,
//! with the table's columns and `_score`, best first. A WHERE clause on the result filters the rows before they are
//! ranked (a prefilter), so k rows come back whenever k rows pass it.
//!
//! With an INVERTED index on the column the search is Lance's full-text search over the index (rows written since
//! it was built are searched too, by Lance's exact scan with the index's text analysis); without one it is Lance's
//! exhaustive BM25 over every row. EXPLAIN says which.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{
    Session as CatalogSession, TableFunctionArgs, TableFunctionImpl, TableProvider,
};
use datafusion::common::Result as DFResult;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use lance::index::DatasetIndexExt;

use super::*;
use crate::catalog::{MarrowSchema, MarrowTable};
use crate::vector::{lance_err, project};

/// The name of the BM25 score column full-text search adds.
pub const SCORE_COLUMN: &str = "_score";
/// The longest query text accepted (a query is a few words; this bounds the work one statement can ask for).
pub const MAX_QUERY_BYTES: usize = 64 * 1024;

/// `fts_search(table, column, query, k)`.
#[derive(Debug)]
pub struct FtsSearchFunction(pub Arc<MarrowSchema>);

impl TableFunctionImpl for FtsSearchFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DFResult<Arc<dyn TableProvider>> {
        const NAME: &str = "fts_search";
        let values = constant_args(&args, NAME)?;
        if values.len() != 4 {
            return Err(plan_err(
                "fts_search(table, column, query, k) takes 4 arguments",
            ));
        }
        let table = string_arg(&values[0], NAME, "table")?;
        let column = string_arg(&values[1], NAME, "column")?;
        let query = string_arg(&values[2], NAME, "query")?;
        let k = k_arg(&values[3], NAME)?;
        let schema = table_schema(&self.0, &table, NAME)?;
        text_column(&schema, &table, &column, NAME)?;
        // Parsed now so that a malformed query fails when the statement is planned.
        super::fts_query::parse(&query, &column, NAME)?;
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(SCORE_COLUMN, DataType::Float32, true));
        Ok(Arc::new(FtsSearchProvider {
            source: Source::Latest(self.0.clone()),
            schema: Arc::new(Schema::new(fields)),
            table,
            column,
            query,
            k,
        }))
    }
}

/// The search that `ORDER BY bm25(column, query) DESC LIMIT k` over `table` becomes: `table`'s columns and `_score`,
/// the k best rows of the version `table` reads. The query is checked here, as `fts_search` checks it.
pub(crate) fn ranking(
    table: Arc<dyn TableProvider>,
    name: &str,
    column: &str,
    query: &str,
    k: usize,
) -> DFResult<Arc<dyn TableProvider>> {
    const NAME: &str = "bm25";
    let schema = table.schema();
    text_column(&schema, name, column, NAME)?;
    super::fts_query::parse(query, column, NAME)?;
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(SCORE_COLUMN, DataType::Float32, true));
    Ok(Arc::new(FtsSearchProvider {
        source: Source::Table(table),
        schema: Arc::new(Schema::new(fields)),
        table: name.to_string(),
        column: column.to_string(),
        query: query.to_string(),
        k,
    }))
}

/// A text column (the only kind full-text search reads), or a clear error.
pub(crate) fn text_column(schema: &Schema, table: &str, column: &str, name: &str) -> DFResult<()> {
    let field = schema.field_with_name(column).map_err(|_| {
        DataFusionError::from(Error::not_found(format!(
            "{name}: column {column} not found in {table}"
        )))
    })?;
    match field.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Ok(()),
        other => Err(plan_err(format!(
            "{name}: {table}.{column} is {other}, not a text column: full-text search reads VARCHAR/TEXT columns"
        ))),
    }
}

/// A query has words and a bounded size.
pub(crate) fn check_query(query: &str, name: &str) -> DFResult<()> {
    if query.trim().is_empty() {
        return Err(plan_err(format!(
            "{name}: the query is empty; full-text search needs at least one word"
        )));
    }
    if query.len() > MAX_QUERY_BYTES {
        return Err(plan_err(format!(
            "{name}: the query is {} bytes, above the limit of {MAX_QUERY_BYTES}",
            query.len()
        )));
    }
    Ok(())
}

/// The name of the INVERTED index on `column`, if it has one.
pub(crate) async fn inverted_index(ds: &lance::Dataset, column: &str) -> DFResult<Option<String>> {
    let Some(field) = ds.schema().field(column) else {
        return Ok(None);
    };
    let indices = ds.load_indices().await.map_err(lance_err)?;
    Ok(indices
        .iter()
        .find(|i| {
            i.fields == [field.id]
                && i.index_details
                    .as_ref()
                    .is_some_and(|d| d.type_url.ends_with("InvertedIndexDetails"))
        })
        .map(|i| i.name.clone()))
}

/// Whether `provider` is an `fts_search` that opens its table's latest version when it runs.
pub(crate) fn is_provider(provider: &dyn TableProvider) -> bool {
    provider
        .downcast_ref::<FtsSearchProvider>()
        .is_some_and(|p| matches!(p.source, Source::Latest(_)))
}

/// The table a `bm25` ranking replaced, for the checks a kept plan makes of the versions it reads.
pub(crate) fn ranked_table(provider: &dyn TableProvider) -> Option<&MarrowTable> {
    match &provider.downcast_ref::<FtsSearchProvider>()?.source {
        Source::Table(t) => t.downcast_ref::<MarrowTable>(),
        Source::Latest(_) => None,
    }
}

/// Where a search reads its rows.
#[derive(Debug)]
enum Source {
    /// `fts_search`: the table's latest version, opened when the search runs.
    Latest(Arc<MarrowSchema>),
    /// `ORDER BY bm25(…) DESC LIMIT k`: the table (at the version) the query planned to read.
    Table(Arc<dyn TableProvider>),
}

#[derive(Debug)]
struct FtsSearchProvider {
    source: Source,
    schema: SchemaRef,
    table: String,
    column: String,
    query: String,
    k: usize,
}

#[async_trait]
impl TableProvider for FtsSearchProvider {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    /// Conditions on the table's columns are applied before ranking, exactly (Lance's prefilter evaluates them on
    /// every candidate row). A condition on `_score` stays above the search.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DFResult<Vec<TableProviderFilterPushDown>> {
        Ok(prefilter_pushdown(filters, &[SCORE_COLUMN]))
    }

    async fn scan(
        &self,
        _state: &dyn CatalogSession,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let opened;
        let ds = match &self.source {
            Source::Latest(catalog) => {
                opened = catalog.open_dataset(&self.table).await?;
                &opened
            }
            Source::Table(t) => t
                .downcast_ref::<MarrowTable>()
                .ok_or_else(|| {
                    DataFusionError::Internal("bm25 ranking over a non-Marrow table".into())
                })?
                .dataset(),
        };
        let index = inverted_index(ds, &self.column).await?;
        let columns: Vec<String> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let query = super::fts_query::parse(&self.query, &self.column, "fts_search")?;
        let mut scan = ds.scan();
        scan.disable_scoring_autoprojection();
        scan.project(&columns).map_err(lance_err)?;
        scan.full_text_search(query).map_err(lance_err)?;
        scan.prefilter(true);
        let filter = conjunction(filters.iter().cloned());
        if let Some(f) = &filter {
            scan.filter_expr(f.clone());
        }
        scan.limit(Some(self.k as i64), None).map_err(lance_err)?;
        let plan = scan.create_plan().await.map_err(lance_err)?;
        let plan_schema = plan.schema();
        let indices = columns
            .iter()
            .map(|name| plan_schema.index_of(name))
            .collect::<Result<Vec<_>, _>>()?;
        let plan = project(plan, Some(&indices))?;
        let describe = format!(
            "table={} column={} k={} {} filter={}",
            self.table,
            self.column,
            self.k,
            match &index {
                Some(name) => format!("index={name}"),
                None => "index=none (exhaustive BM25 over every row)".to_string(),
            },
            filter.map_or("none".to_string(), |f| f.to_string())
        );
        let plan =
            Arc::new(crate::exec::PassExec::new("FullTextSearchExec", plan, describe).serial());
        project(plan, projection)
    }
}
