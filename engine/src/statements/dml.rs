//! INSERT, UPDATE, DELETE and upsert with the full query engine: DataFusion computes which rows change and their
//! new values (any WHERE clause, subqueries, joins, Marrow functions); Marrow commits the result to Lance as one
//! transaction. DataFusion 54's `TableProvider::delete_from/update` hooks are never used: they lose IN/EXISTS
//! subqueries from the filter.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::TableProvider;
use datafusion::catalog::{
    CatalogProvider, MemoryCatalogProvider, MemoryCatalogProviderList, SchemaProvider,
};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::datasource::MemTable;
use datafusion::error::Result as DFResult;
use datafusion::execution::context::SessionState;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{DmlStatement, LogicalPlan, WriteOp};
use datafusion::physical_plan::{collect, execute_stream};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{
    AssignmentTarget, ConflictTarget, Delete, FromTable, Insert, OnConflictAction, OnInsert,
    Statement, TableFactor, TableObject, Update, UpdateTableFromKind,
};

use lance::Dataset;

use crate::catalog::write::{self, coerce_batches};
use crate::catalog::{MarrowSchema, MarrowTable};
use crate::config::{CATALOG, SCHEMA};
use crate::error::{Error, Result};
use crate::extension::{is_sql, misrouted, sql_statement, StatementHandler};
use crate::session::{QueryOutput, Session};
use crate::sql::{qualify_columns, quote, table_name};
use crate::statements::group_commit;

const TARGET: &str = "__marrow_target";
const ROWADDR: &str = "__marrow_rowaddr";

/// The session's catalog with some names bound to fixed providers: the statement's snapshot of its target table
/// (with row addresses), and in-memory relations such as `excluded`.
#[derive(Debug)]
struct Overlay {
    base: Arc<MarrowSchema>,
    tables: HashMap<String, Arc<dyn TableProvider>>,
}

#[async_trait]
impl SchemaProvider for Overlay {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.base.table_names();
        names.extend(self.tables.keys().cloned());
        names
    }
    async fn table(&self, name: &str) -> DFResult<Option<Arc<dyn TableProvider>>> {
        match self.tables.get(name) {
            Some(t) => Ok(Some(t.clone())),
            None => self.base.table(name).await,
        }
    }
    fn table_exist(&self, name: &str) -> bool {
        self.tables.contains_key(name) || self.base.table_exist(name)
    }
}

/// The session state one DML statement plans its queries with: the catalog seen through an [`Overlay`].
struct OverlayPlanner {
    state: SessionState,
}

impl OverlayPlanner {
    fn new(session: &Session, tables: HashMap<String, Arc<dyn TableProvider>>) -> Self {
        let catalog = MemoryCatalogProvider::new();
        catalog
            .register_schema(
                SCHEMA,
                Arc::new(Overlay {
                    base: session.database().schema_provider().clone(),
                    tables,
                }),
            )
            .expect("memory catalog accepts schemas");
        let list = MemoryCatalogProviderList::new();
        datafusion::catalog::CatalogProviderList::register_catalog(
            &list,
            CATALOG.to_string(),
            Arc::new(catalog),
        );
        let mut state = SessionStateBuilder::new_from_existing(session.state())
            .with_catalog_list(Arc::new(list))
            .build();
        // The plans Marrow builds here need the optimizer's rewrites (DISTINCT to an aggregate, projections of
        // row addresses), whatever a session set `datafusion.optimizer.max_passes` to.
        let optimizer = &mut state.config_mut().options_mut().optimizer;
        optimizer.max_passes = optimizer.max_passes.max(1);
        Self { state }
    }

    async fn plan(
        &self,
        statement: DFStatement,
        params: &Option<ParamValues>,
    ) -> Result<LogicalPlan> {
        let plan = crate::catalog::views::planning(self.state.statement_to_plan(statement)).await?;
        Ok(match params {
            Some(p) => plan.with_param_values(p.clone())?,
            None => plan,
        })
    }

    async fn run_stream(&self, plan: &LogicalPlan) -> Result<SendableRecordBatchStream> {
        let physical = self.state.create_physical_plan(plan).await?;
        Ok(execute_stream(physical, self.state.task_ctx())?)
    }

    async fn run_plan(&self, plan: &LogicalPlan) -> Result<Vec<RecordBatch>> {
        let physical = self.state.create_physical_plan(plan).await?;
        Ok(collect(physical, self.state.task_ctx()).await?)
    }

    async fn query(&self, sql: &str, params: &Option<ParamValues>) -> Result<Vec<RecordBatch>> {
        let mut statements = crate::sql::parse(sql)?;
        let statement = statements
            .pop()
            .ok_or_else(|| Error::internal("empty internal query"))?;
        let plan = self.plan(statement, params).await?;
        self.run_plan(&plan).await
    }
}

/// Split `__marrow_rowaddr, <columns…>` results into unique row addresses and the new rows.
fn split_rowaddr(
    batches: &[RecordBatch],
    schema: &SchemaRef,
) -> Result<(Vec<u64>, Vec<RecordBatch>)> {
    let mut seen = HashSet::new();
    let mut addrs = vec![];
    let mut rows = vec![];
    for batch in batches {
        let col = batch
            .column(0)
            .as_any()
            .downcast_ref::<UInt64Array>()
            .ok_or_else(|| Error::internal("row address column has an unexpected type"))?;
        // A joined UPDATE can match a row more than once; the first match wins.
        let keep: Vec<bool> = (0..batch.num_rows())
            .map(|i| seen.insert(col.value(i)))
            .collect();
        let mask = arrow::array::BooleanArray::from(keep);
        let filtered = arrow::compute::filter_record_batch(batch, &mask)?;
        let c = filtered
            .column(0)
            .as_any()
            .downcast_ref::<UInt64Array>()
            .expect("checked above");
        addrs.extend(c.values().iter().copied());
        let projected = filtered.project(&(1..filtered.num_columns()).collect::<Vec<_>>())?;
        rows.push(projected);
    }
    Ok((addrs, coerce_batches(&rows, schema)?))
}

fn render_key(batch: &RecordBatch, columns: &[String], row: usize) -> String {
    columns
        .iter()
        .map(|c| {
            let value = batch
                .column_by_name(c)
                .and_then(|a| ScalarValue::try_from_array(a, row).ok())
                .map(|v| render_scalar(&v))
                .unwrap_or_else(|| "?".into());
            format!("{c} = {value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A key value as error messages show it: strings quoted.
pub(crate) fn render_scalar(v: &ScalarValue) -> String {
    match v.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => format!("'{v}'"),
        _ => v.to_string(),
    }
}

fn key_join(pk: &[String], left: &str, right: &str) -> String {
    pk.iter()
        .map(|c| {
            format!(
                "{}.{} = {}.{}",
                quote(left),
                quote(c),
                quote(right),
                quote(c)
            )
        })
        .collect::<Vec<_>>()
        .join(" AND ")
}

fn key_list(pk: &[String], alias: &str) -> String {
    pk.iter()
        .map(|c| format!("{}.{}", quote(alias), quote(c)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `SELECT alias._rowaddr, keys FROM excluded JOIN target AS alias ON (key columns equal)`: the target's rows whose
/// key is among the new rows' (`excluded`).
fn join_keys(pk: &[String], alias: &str) -> String {
    format!(
        "SELECT {a}.\"_rowaddr\", {keys} FROM \"excluded\" JOIN {target} AS {a} ON {on}",
        a = quote(alias),
        keys = key_list(pk, "excluded"),
        target = quote(TARGET),
        on = key_join(pk, "excluded", alias)
    )
}

/// Reject rows whose primary key repeats inside the new rows themselves (keys compared in Arrow's row format, so
/// this costs one pass over the key columns, not a query).
pub(crate) fn check_unique_batches(table: &str, pk: &[String], rows: &[RecordBatch]) -> Result<()> {
    use arrow::row::{RowConverter, SortField};
    let count: usize = rows.iter().map(|b| b.num_rows()).sum();
    if count < 2 || pk.is_empty() {
        return Ok(());
    }
    let schema = rows[0].schema();
    let indices = pk
        .iter()
        .map(|c| schema.index_of(c))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let converter = RowConverter::new(
        indices
            .iter()
            .map(|&i| SortField::new(schema.field(i).data_type().clone()))
            .collect(),
    )?;
    let mut seen = HashSet::with_capacity(count);
    for b in rows {
        let columns: Vec<_> = indices.iter().map(|&i| b.column(i).clone()).collect();
        let keys = converter.convert_columns(&columns)?;
        for (row, key) in keys.iter().enumerate() {
            if !seen.insert(key.owned()) {
                return Err(Error::constraint(format!(
                    "duplicate key in table {table}: {} appears more than once in the new rows",
                    render_key(b, pk, row)
                )));
            }
        }
    }
    Ok(())
}

/// Rows of the target whose key matches a new row: (target row address, rendered key).
///
/// A one-column key is looked up with `key IN (…new keys…)` on the target's scan, which Lance answers from the key's
/// BTREE index when there is one (upkeep builds `<table>_pkey`) and otherwise by reading only the key column; a
/// composite key joins the new rows with the target.
async fn find_conflicts(
    session: &Session,
    stmt: &OverlayPlanner,
    target: &Arc<MarrowTable>,
    pk: &[String],
    alias: &str,
    rows: &[RecordBatch],
) -> Result<Vec<(u64, String)>> {
    // Keys the hot tier's key hashes rule out need no lookup; when none is left there is nothing to read.
    let possible = match pk {
        [column] => Some(possible_keys(session, target, column, key_values(rows, column)?).await?),
        _ => None,
    };
    let batches = match (pk, &possible) {
        (_, Some(keys)) if keys.is_empty() => vec![],
        ([column], Some(keys)) if keys.len() <= KEY_LOOKUP_LIST => {
            lookup_keys(stmt, target, column, keys).await?
        }
        _ => stmt.query(&join_keys(pk, alias), &None).await?,
    };
    let mut out = vec![];
    for b in &batches {
        let addrs = b
            .column(0)
            .as_any()
            .downcast_ref::<UInt64Array>()
            .expect("row address is UInt64");
        for i in 0..b.num_rows() {
            out.push((addrs.value(i), render_key(b, pk, i)));
        }
    }
    Ok(out)
}

/// Up to this many keys are looked up with an `IN` list (by index when there is one); more are joined with the key
/// column, since planning a list of thousands of literals costs more than one pass over the column.
const KEY_LOOKUP_LIST: usize = 512;

/// The non-NULL values of one column.
pub(crate) fn key_values(rows: &[RecordBatch], column: &str) -> Result<Vec<ScalarValue>> {
    let mut keys = vec![];
    for b in rows {
        let values = b.column(b.schema().index_of(column)?);
        for i in 0..b.num_rows() {
            if values.is_valid(i) {
                keys.push(ScalarValue::try_from_array(values, i)?);
            }
        }
    }
    Ok(keys)
}

/// The keys among `keys` that `table` (a snapshot with row addresses) holds in `column`.
pub(crate) async fn existing_keys(
    session: &Session,
    table: &Arc<MarrowTable>,
    column: &str,
    keys: &[ScalarValue],
) -> Result<Vec<ScalarValue>> {
    let keys = &possible_keys(session, table, column, keys.to_vec()).await?;
    if keys.is_empty() {
        return Ok(vec![]);
    }
    let mut tables: HashMap<String, Arc<dyn TableProvider>> =
        [(TARGET.to_string(), table.clone() as Arc<dyn TableProvider>)].into();
    let batches = if keys.len() <= KEY_LOOKUP_LIST {
        let stmt = OverlayPlanner::new(session, tables);
        lookup_keys(&stmt, table, column, keys).await?
    } else {
        // Many keys: one hash join with the key column instead of a literal list that long.
        let values = ScalarValue::iter_to_array(keys.iter().cloned())?;
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new(column, values.data_type().clone(), true),
        ]));
        let batch = RecordBatch::try_new(schema.clone(), vec![values])?;
        tables.insert(
            "excluded".into(),
            Arc::new(MemTable::try_new(schema, vec![vec![batch]])?),
        );
        let stmt = OverlayPlanner::new(session, tables);
        stmt.query(&join_keys(&[column.to_string()], "t"), &None)
            .await?
    };
    let mut out = vec![];
    for b in &batches {
        for i in 0..b.num_rows() {
            out.push(ScalarValue::try_from_array(b.column(1), i)?);
        }
    }
    Ok(out)
}

/// The keys that `table` may hold in `column`: those its key hashes in the hot tier cannot rule out (all of them
/// without a hot tier). Only these need a lookup.
async fn possible_keys(
    session: &Session,
    table: &Arc<MarrowTable>,
    column: &str,
    keys: Vec<ScalarValue>,
) -> Result<Vec<ScalarValue>> {
    let Some(hot) = session.database().schema_provider().hot_tier() else {
        return Ok(keys);
    };
    if keys.is_empty() {
        return Ok(keys);
    }
    let schema = table.storage_schema();
    let dtype = schema.field_with_name(column)?.data_type();
    let array = ScalarValue::iter_to_array(keys.iter().cloned())?;
    let hit = hot
        .may_contain(table.dataset(), column, dtype, &array)
        .await?;
    Ok(keys
        .into_iter()
        .zip(hit)
        .filter_map(|(k, h)| h.then_some(k))
        .collect())
}

/// `SELECT _rowaddr, column FROM target WHERE column IN (keys)` (at most [`KEY_LOOKUP_LIST`] keys).
async fn lookup_keys(
    stmt: &OverlayPlanner,
    target: &Arc<MarrowTable>,
    column: &str,
    keys: &[ScalarValue],
) -> Result<Vec<RecordBatch>> {
    use datafusion::common::Column;
    use datafusion::datasource::provider_as_source;
    use datafusion::logical_expr::{Expr, LogicalPlanBuilder};
    let source = provider_as_source(target.clone() as Arc<dyn TableProvider>);
    let key = Expr::Column(Column::new(Some(TARGET), column));
    let list = keys
        .iter()
        .map(|v| Expr::Literal(v.clone(), None))
        .collect();
    let plan = LogicalPlanBuilder::scan(TARGET, source, None)?
        .filter(key.clone().in_list(list, false))?
        .project(vec![
            Expr::Column(Column::new(Some(TARGET), "_rowaddr")),
            key,
        ])?
        .build()?;
    stmt.run_plan(&plan).await
}

struct Target {
    name: String,
    table: Arc<MarrowTable>,
    schema: SchemaRef,
}

async fn open_target(session: &Session, name: &str) -> Result<Target> {
    let provider = session.database().schema_provider();
    if !provider.lance_table_exists(name) {
        if provider.table_exist(name) {
            return Err(Error::invalid(format!(
                "'{name}' is a view or external table and cannot be written"
            )));
        }
        return Err(Error::not_found(format!("table '{name}' not found")));
    }
    let table = provider.open_table(name, true).await?;
    let schema = table.storage_schema();
    Ok(Target {
        name: name.to_string(),
        table,
        schema,
    })
}

/// Replace the rows at `deleted` with `inserted` in one commit on `ds` (see [`write::commit`]), and keep the new
/// version as the table's handle: the next statement reads it without loading its manifest again.
async fn commit(
    session: &Session,
    name: &str,
    ds: &Arc<Dataset>,
    deleted: Vec<u64>,
    inserted: Vec<RecordBatch>,
) -> Result<()> {
    let new = write::commit(ds, session.database().models(), deleted, inserted).await?;
    session.database().schema_provider().adopt(name, &new);
    Ok(())
}

impl Target {
    /// Providers for one statement: the snapshot with row addresses under the internal name, and the same snapshot
    /// under the table's own name so that subqueries read what the statement changes.
    fn providers(&self) -> Result<HashMap<String, Arc<dyn TableProvider>>> {
        let plain = MarrowTable::new(
            self.table.dataset().clone(),
            false,
            self.table.defaults().clone(),
        )?;
        Ok([
            (
                TARGET.to_string(),
                self.table.clone() as Arc<dyn TableProvider>,
            ),
            (self.name.clone(), Arc::new(plain) as Arc<dyn TableProvider>),
        ]
        .into())
    }
}

pub(crate) async fn insert(
    session: &Session,
    insert: Insert,
    params: Option<ParamValues>,
) -> Result<QueryOutput> {
    insert_with(session, insert, params, HashMap::new()).await
}

/// INSERT with extra relations visible to its source query only (bulk ingest's in-memory rows).
pub(crate) async fn insert_with(
    session: &Session,
    mut insert: Insert,
    params: Option<ParamValues>,
    extra: HashMap<String, Arc<dyn TableProvider>>,
) -> Result<QueryOutput> {
    if insert.returning.is_some() {
        return Err(Error::unsupported("INSERT … RETURNING is not supported"));
    }
    if insert.overwrite || insert.replace_into || insert.or.is_some() || insert.ignore {
        return Err(Error::unsupported(
            "only INSERT INTO … [ON CONFLICT …] is supported",
        ));
    }
    let TableObject::TableName(name) = &insert.table else {
        return Err(Error::unsupported(
            "INSERT INTO a table function is not supported",
        ));
    };
    let name = table_name(name)?;
    let provider = session.database().schema_provider();
    if !provider.lance_table_exists(&name) && provider.is_external(&name) {
        // Files of an external table: DataFusion appends new files, through the fence (under the export root).
        let output = session
            .run_datafusion(
                DFStatement::Statement(Box::new(Statement::Insert(insert))),
                params,
            )
            .await?;
        let (_, batches) = output.collect().await?;
        return Ok(QueryOutput::Count(QueryOutput::count_in(&batches)));
    }
    let alias = insert
        .table_alias
        .take()
        .map(|a| a.alias.value)
        .unwrap_or_else(|| name.clone());
    let on = insert.on.take();
    let insert_columns: Vec<String> = insert
        .columns
        .iter()
        .map(|c| c.to_string().to_lowercase())
        .collect();
    // Plain appends (no ON CONFLICT, at most a one-column key) stage their rows without the table's write lock
    // and commit with other writers' (group_commit); the rest hold the lock throughout.
    let snapshot = open_target(session, &name).await?;
    let grouped =
        on.is_none() && snapshot.table.primary_key().len() <= 1 && !session.holds_lock(&name);
    let _guard = match grouped {
        true => None,
        false => session.lock_for_write(&name).await,
    };
    let target = match grouped {
        true => snapshot,
        false => open_target(session, &name).await?,
    };
    let mut tables = target.providers()?;
    tables.extend(extra);
    let stmt = OverlayPlanner::new(session, tables);
    let plan = stmt
        .plan(
            DFStatement::Statement(Box::new(Statement::Insert(insert))),
            &params,
        )
        .await?;
    let input = match plan {
        LogicalPlan::Dml(DmlStatement {
            op: WriteOp::Insert(InsertOp::Append),
            input,
            ..
        }) => input,
        _ => return Err(Error::unsupported("this form of INSERT is not supported")),
    };
    let pk = target.table.primary_key().to_vec();
    let ds = target.table.dataset().clone();
    let not_null = |e| not_null_error(e, &insert_columns, &target.schema);
    if pk.is_empty() {
        if on.is_some() {
            return Err(Error::invalid(format!(
                "ON CONFLICT needs a primary key, and table {name} has none"
            )));
        }
        // Rows stream from the query into the table, one batch at a time.
        let embed = write::embed_step(
            target.table.dataset().schema().metadata.clone(),
            session.database().models().clone(),
        );
        // VALUES rows are built (and their NULLs checked) when the plan is, so planning errors are mapped too.
        let input = stmt.run_stream(&input).await.map_err(not_null)?;
        let (rows, passed) = write::shaped(input, target.schema.clone(), embed);
        let fragments = write::stage_stream(&ds, rows, &passed)
            .await
            .map_err(not_null)?;
        if grouped {
            let staged = group_commit::Staged::Files(fragments);
            group_commit::append(session, &name, &target.table, staged, None).await?;
        } else {
            let new = write::commit_fragments(&ds, fragments).await?;
            session.database().schema_provider().adopt(&name, &new);
        }
        return Ok(QueryOutput::Count(passed.rows()));
    }
    // A primary key is checked across all the rows of the statement: they are collected, within the memory limit.
    let limit = session.database().config().memory_limit;
    let input = stmt.run_stream(&input).await.map_err(not_null)?;
    let batches = write::collect_within(input, limit)
        .await
        .map_err(not_null)?;
    let rows = coerce_batches(&batches, &target.schema)?;
    check_unique_batches(&name, &pk, &rows)?;
    if rows.is_empty() {
        return Ok(QueryOutput::Count(0));
    }
    if grouped {
        let n = rows.iter().map(|b| b.num_rows()).sum::<usize>();
        let key = Some((pk[0].clone(), key_values(&rows, &pk[0])?));
        let rows = write::embed_missing(&ds.schema().metadata, session.database().models(), rows)?;
        let staged = group_commit::Staged::rows(&ds, rows).await?;
        group_commit::append(session, &name, &target.table, staged, key).await?;
        return Ok(QueryOutput::Count(n as u64));
    }
    let mem = Arc::new(MemTable::try_new(
        target.schema.clone(),
        vec![rows.clone()],
    )?);
    let mut tables = target.providers()?;
    tables.insert("excluded".into(), mem);
    let stmt = OverlayPlanner::new(session, tables);

    let action = match on {
        None => None,
        Some(OnInsert::OnConflict(c)) => {
            if let Some(ConflictTarget::Columns(cols)) = &c.conflict_target {
                let cols: Vec<String> = cols.iter().map(|i| i.value.to_lowercase()).collect();
                if cols != pk {
                    return Err(Error::invalid(format!(
                        "ON CONFLICT ({}) must name the primary key of {name}: ({})",
                        cols.join(", "),
                        pk.join(", ")
                    )));
                }
            }
            Some(c.action)
        }
        Some(OnInsert::DuplicateKeyUpdate(_)) => {
            return Err(Error::unsupported(
                "ON DUPLICATE KEY UPDATE is not supported; use ON CONFLICT",
            ))
        }
        Some(_) => return Err(Error::unsupported("this ON clause is not supported")),
    };
    match action {
        None => {
            if let Some((_, key)) =
                find_conflicts(session, &stmt, &target.table, &pk, &alias, &rows)
                    .await?
                    .first()
            {
                return Err(Error::constraint(format!(
                    "duplicate key: {key} already exists in table {name}"
                )));
            }
            let n = rows.iter().map(|b| b.num_rows()).sum::<usize>();
            commit(session, &name, &ds, vec![], rows).await?;
            Ok(QueryOutput::Count(n as u64))
        }
        Some(action) => {
            let fresh_sql = format!(
                "SELECT \"excluded\".* FROM \"excluded\" LEFT ANTI JOIN {target} AS {a} ON {on}",
                target = quote(TARGET),
                a = quote(&alias),
                on = key_join(&pk, "excluded", &alias)
            );
            let fresh = coerce_batches(&stmt.query(&fresh_sql, &None).await?, &target.schema)?;
            let (addrs, updated) = match action {
                OnConflictAction::DoNothing => (vec![], vec![]),
                OnConflictAction::DoUpdate(du) => {
                    let mut assigned: HashMap<String, String> = HashMap::new();
                    for a in du.assignments {
                        let col = assignment_column(&a.target, &target.schema)?;
                        if pk.contains(&col) {
                            return Err(Error::invalid(format!(
                                "ON CONFLICT DO UPDATE cannot change the primary key column '{col}'"
                            )));
                        }
                        let mut value = a.value;
                        qualify_columns(&mut value, &alias);
                        assigned.insert(col, value.to_string());
                    }
                    clear_stale_embeddings(
                        &target.table,
                        session.database().models(),
                        &mut assigned,
                    )?;
                    let selection = du.selection.map(|mut e| {
                        qualify_columns(&mut e, &alias);
                        format!(" WHERE {e}")
                    });
                    let sql = format!(
                        "SELECT {a}.\"_rowaddr\" AS {rowaddr}, {proj} FROM \"excluded\" JOIN {target} AS {a} ON {on}{sel}",
                        a = quote(&alias),
                        rowaddr = quote(ROWADDR),
                        proj = projection(&target.schema, &assigned, &alias),
                        target = quote(TARGET),
                        on = key_join(&pk, "excluded", &alias),
                        sel = selection.unwrap_or_default()
                    );
                    split_rowaddr(&stmt.query(&sql, &None).await?, &target.schema)?
                }
            };
            let n = addrs.len() + fresh.iter().map(|b| b.num_rows()).sum::<usize>();
            let mut inserted = updated;
            inserted.extend(fresh);
            commit(session, &target.name, &ds, addrs, inserted).await?;
            Ok(QueryOutput::Count(n as u64))
        }
    }
}

/// An assignment that changes the text a vector column is embedded from also clears the vector, so that the write
/// recomputes it (unless the statement sets the vector itself). Without a model nothing could recompute it: the
/// statement is refused rather than leaving the row without its vector.
fn clear_stale_embeddings(
    table: &MarrowTable,
    models: &marrow_udfs::text::TextModels,
    assigned: &mut HashMap<String, String>,
) -> Result<()> {
    let Some(setting) = table
        .dataset()
        .schema()
        .metadata
        .get(crate::catalog::META_EMBED)
    else {
        return Ok(());
    };
    let pairs: std::collections::BTreeMap<String, String> =
        serde_json::from_str(setting).unwrap_or_default();
    for (target, source) in pairs {
        if assigned.contains_key(&source) && !assigned.contains_key(&target) {
            if !models.has_model() {
                return Err(Error::invalid(format!(
                    "changing '{source}' recomputes '{target}' with embed(), but this server has no embedding model \
                     (start it with --model-dir): set '{target}' in the same statement (NULL to clear it)"
                )));
            }
            assigned.insert(target, "NULL".to_string());
        }
    }
    Ok(())
}

/// DataFusion checks NOT NULL inside VALUES and names the column `columnN`; name the table's column instead.
fn not_null_error(e: Error, insert_columns: &[String], schema: &SchemaRef) -> Error {
    let msg = e.message();
    let Some(rest) = msg.split("Column 'column").nth(1) else {
        return e;
    };
    if !msg.contains("non-nullable but contains null") {
        return e;
    }
    let n: usize = rest
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .unwrap_or(0);
    let column = match insert_columns.get(n.wrapping_sub(1)) {
        Some(c) => c.clone(),
        None => schema
            .fields()
            .get(n.wrapping_sub(1))
            .map(|f| f.name().clone())
            .unwrap_or_else(|| "?".into()),
    };
    Error::constraint(format!("column '{column}' is NOT NULL and got a NULL"))
}

fn assignment_column(target: &AssignmentTarget, schema: &SchemaRef) -> Result<String> {
    let AssignmentTarget::ColumnName(name) = target else {
        return Err(Error::unsupported(
            "tuple assignments are not supported; assign columns one by one",
        ));
    };
    let ident = name
        .0
        .last()
        .and_then(|p| p.as_ident())
        .ok_or_else(|| Error::invalid(format!("bad assignment target {name}")))?;
    let col = match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    };
    if schema.field_with_name(&col).is_err() {
        return Err(Error::not_found(format!("column '{col}' not found")));
    }
    Ok(col)
}

/// The new value of every column: the assigned expression, or the row's current value.
fn projection(schema: &SchemaRef, assigned: &HashMap<String, String>, alias: &str) -> String {
    schema
        .fields()
        .iter()
        .map(|f| match assigned.get(f.name()) {
            Some(expr) => format!("({expr}) AS {}", quote(f.name())),
            None => format!(
                "{}.{} AS {}",
                quote(alias),
                quote(f.name()),
                quote(f.name())
            ),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The table an INSERT, UPDATE or DELETE writes (`None` for any other statement, or a target that is no table).
pub(crate) fn written_table(stmt: &Statement) -> Option<String> {
    match stmt {
        Statement::Insert(i) => match &i.table {
            TableObject::TableName(n) => table_name(n).ok(),
            _ => None,
        },
        Statement::Update(u) => relation(&u.table.relation).ok().map(|(t, _)| t),
        Statement::Delete(d) => match &d.from {
            FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t
                .first()
                .and_then(|t| relation(&t.relation).ok())
                .map(|(t, _)| t),
        },
        _ => None,
    }
}

fn relation(factor: &TableFactor) -> Result<(String, String)> {
    match factor {
        TableFactor::Table {
            name,
            alias,
            args: None,
            ..
        } => {
            let table = table_name(name)?;
            let alias = alias
                .as_ref()
                .map(|a| a.name.value.clone())
                .unwrap_or_else(|| table.clone());
            Ok((table, alias))
        }
        _ => Err(Error::unsupported(
            "the target of UPDATE/DELETE must be a table",
        )),
    }
}

pub(crate) async fn update(
    session: &Session,
    update: Update,
    params: Option<ParamValues>,
) -> Result<QueryOutput> {
    if update.returning.is_some() || update.limit.is_some() || !update.order_by.is_empty() {
        return Err(Error::unsupported(
            "UPDATE with RETURNING, ORDER BY or LIMIT is not supported",
        ));
    }
    if !update.table.joins.is_empty() {
        return Err(Error::unsupported(
            "UPDATE … JOIN is not supported; use UPDATE t SET … FROM other WHERE …",
        ));
    }
    let (name, alias) = relation(&update.table.relation)?;
    let _guard = session.lock_for_write(&name).await;
    let target = open_target(session, &name).await?;
    let mut assigned = HashMap::new();
    for a in &update.assignments {
        let col = assignment_column(&a.target, &target.schema)?;
        if assigned.insert(col.clone(), a.value.to_string()).is_some() {
            return Err(Error::invalid(format!(
                "column '{col}' is assigned more than once"
            )));
        }
    }
    clear_stale_embeddings(&target.table, session.database().models(), &mut assigned)?;
    let from = match &update.from {
        None => String::new(),
        Some(UpdateTableFromKind::AfterSet(t)) | Some(UpdateTableFromKind::BeforeSet(t)) => {
            more_tables(t)
        }
    };
    let selection = where_clause(update.selection.as_ref());
    let sql = format!(
        "SELECT {a}.\"_rowaddr\" AS {rowaddr}, {proj} FROM {target} AS {a}{from}{selection}",
        a = quote(&alias),
        rowaddr = quote(ROWADDR),
        proj = projection(&target.schema, &assigned, &alias),
        target = quote(TARGET),
    );
    let stmt = OverlayPlanner::new(session, target.providers()?);
    let (addrs, rows) = split_rowaddr(&stmt.query(&sql, &params).await?, &target.schema)?;
    let pk = target.table.primary_key().to_vec();
    if pk.iter().any(|c| assigned.contains_key(c)) && !rows.is_empty() {
        check_unique_batches(&name, &pk, &rows)?;
        let mem = Arc::new(MemTable::try_new(
            target.schema.clone(),
            vec![rows.clone()],
        )?);
        let mut tables = target.providers()?;
        tables.insert("excluded".into(), mem);
        let check = OverlayPlanner::new(session, tables);
        let changing: HashSet<u64> = addrs.iter().copied().collect();
        if let Some((_, key)) = find_conflicts(session, &check, &target.table, &pk, &alias, &rows)
            .await?
            .into_iter()
            .find(|(a, _)| !changing.contains(a))
        {
            return Err(Error::constraint(format!(
                "duplicate key: {key} already exists in table {name}"
            )));
        }
    }
    let n = addrs.len();
    commit(session, &target.name, target.table.dataset(), addrs, rows).await?;
    Ok(QueryOutput::Count(n as u64))
}

pub(crate) async fn delete(
    session: &Session,
    delete: Delete,
    params: Option<ParamValues>,
) -> Result<QueryOutput> {
    if delete.returning.is_some()
        || delete.limit.is_some()
        || !delete.order_by.is_empty()
        || !delete.tables.is_empty()
    {
        return Err(Error::unsupported(
            "DELETE with RETURNING, ORDER BY, LIMIT or several tables is not supported",
        ));
    }
    let from = match &delete.from {
        FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
    };
    let [twj] = from.as_slice() else {
        return Err(Error::unsupported(
            "DELETE from several tables is not supported",
        ));
    };
    if !twj.joins.is_empty() {
        return Err(Error::unsupported(
            "DELETE … JOIN is not supported; use DELETE FROM t USING other WHERE …",
        ));
    }
    let (name, alias) = relation(&twj.relation)?;
    let _guard = session.lock_for_write(&name).await;
    let target = open_target(session, &name).await?;
    let using = match &delete.using {
        None => String::new(),
        Some(t) => more_tables(t),
    };
    let selection = where_clause(delete.selection.as_ref());
    let sql = format!(
        "SELECT DISTINCT {a}.\"_rowaddr\" FROM {target} AS {a}{using}{selection}",
        a = quote(&alias),
        target = quote(TARGET),
    );
    let stmt = OverlayPlanner::new(session, target.providers()?);
    let mut addrs = vec![];
    for b in stmt.query(&sql, &params).await? {
        let col = b
            .column(0)
            .as_any()
            .downcast_ref::<UInt64Array>()
            .expect("row address is UInt64");
        addrs.extend(col.values().iter().copied());
    }
    let n = addrs.len();
    commit(session, &target.name, target.table.dataset(), addrs, vec![]).await?;
    Ok(QueryOutput::Count(n as u64))
}

/// `, t1, t2 …`: the FROM / USING tables of an UPDATE or DELETE, joined after the target.
fn more_tables(tables: &[impl std::fmt::Display]) -> String {
    tables.iter().map(|t| format!(", {t}")).collect()
}

/// ` WHERE <expr>`, or nothing.
fn where_clause(selection: Option<&impl std::fmt::Display>) -> String {
    selection.map(|e| format!(" WHERE {e}")).unwrap_or_default()
}

/// `INSERT`, `UPDATE` and `DELETE` on Marrow tables: planned as queries, committed as one Lance transaction.
pub struct DmlStatements;

#[async_trait::async_trait]
impl StatementHandler for DmlStatements {
    fn handles(&self, statement: &DFStatement) -> bool {
        is_sql(statement, |s| {
            matches!(
                s,
                Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_)
            )
        })
    }

    async fn run(
        &self,
        session: &Session,
        statement: DFStatement,
        params: Option<ParamValues>,
    ) -> Result<QueryOutput> {
        match sql_statement(statement, "DML")? {
            Statement::Insert(i) => insert(session, i, params).await,
            Statement::Update(u) => update(session, u, params).await,
            Statement::Delete(d) => delete(session, d, params).await,
            _ => Err(misrouted("DML")),
        }
    }
}
