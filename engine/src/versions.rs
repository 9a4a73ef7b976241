//! Table versions: every commit is a Lance version. This module makes them reachable from SQL:
//!
//! - time travel in any query: `FROM t VERSION AS OF 12`, `FROM t TIMESTAMP AS OF '2026-11-26 10:00:00'`
//!   (or `FOR SYSTEM_TIME AS OF …`; any constant timestamp expression, e.g. `now() - INTERVAL '1 hour'`);
//! - `SELECT * FROM marrow_versions('t')`: version, timestamp, operation, rows and tags of every version kept;
//! - procedures run with `CALL`: `restore_table`, `tag_version`, `drop_tag`, `compact_table`, `cleanup_versions`.
//!
//! Lance has no reader leases. Inside this process, every dataset handle a query holds is registered with the
//! catalog (`MarrowSchema::reading_versions`); cleanup never removes the oldest version still being read, nor any
//! version after it. Readers in other processes are protected only by the retention period.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, RecordBatch, StringArray, TimestampMicrosecondArray, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::{
    Session as CatalogSession, TableFunctionArgs, TableFunctionImpl, TableProvider,
};
use datafusion::common::{Result as DFResult, ScalarValue};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{Expr as DFExpr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, ObjectName, Statement,
    TableAlias, TableFactor, TableVersion, Value, VisitMut, VisitorMut,
};
use lance::dataset::cleanup::CleanupPolicyBuilder;
use lance::dataset::optimize::{compact_files, CompactionOptions};
use lance::Dataset;

use crate::catalog::MarrowSchema;
use crate::error::{Error, Result};
use crate::session::{QueryOutput, Session};
use crate::vector::MarrowOptions;

/// Makes the names of pinned (versioned) table references unique across sessions.
static NEXT_PIN: AtomicU64 = AtomicU64::new(1);

enum AsOf {
    Version(u64),
    Timestamp(Box<Expr>),
}

struct VersionedRef {
    table: String,
    as_of: AsOf,
    pinned: String,
}

/// Versioned table references resolved for one statement; dropping it forgets them (the plan keeps its tables).
pub(crate) struct Pins {
    schema: Arc<MarrowSchema>,
    names: Vec<String>,
}

impl Pins {
    pub(crate) fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        for n in &self.names {
            self.schema.unpin(n);
        }
    }
}

/// Rewrite every `t VERSION AS OF …` / `t TIMESTAMP AS OF …` in the statement into a reference to that version of
/// `t`, opened now and registered under a unique name until the returned guard drops. `t`'s name stays usable as
/// its qualifier (it becomes the alias when none is given).
pub(crate) async fn pin_versions(session: &Session, statement: &mut DFStatement) -> Result<Pins> {
    let refs = collect_versioned(statement)?;
    let schema = session.database().schema_provider().clone();
    let mut pins = Pins {
        schema: schema.clone(),
        names: vec![],
    };
    for r in refs {
        if !schema.lance_table_exists(&r.table) {
            return Err(Error::not_found(format!(
                "table '{}' not found (only Marrow tables have versions)",
                r.table
            )));
        }
        let version = match r.as_of {
            AsOf::Version(v) => v,
            AsOf::Timestamp(expr) => {
                let at = eval_timestamp(session, &expr).await?;
                version_at(&schema, &r.table, at).await?
            }
        };
        let table = schema.open_table_version(&r.table, version).await?;
        schema.pin(&r.pinned, table);
        pins.names.push(r.pinned);
    }
    Ok(pins)
}

fn collect_versioned(statement: &mut DFStatement) -> Result<Vec<VersionedRef>> {
    struct Rewrite {
        refs: Vec<VersionedRef>,
        error: Option<Error>,
    }
    impl VisitorMut for Rewrite {
        type Break = ();
        fn pre_visit_table_factor(&mut self, tf: &mut TableFactor) -> ControlFlow<()> {
            let TableFactor::Table {
                name,
                alias,
                version,
                ..
            } = tf
            else {
                return ControlFlow::Continue(());
            };
            let Some(v) = version.take() else {
                return ControlFlow::Continue(());
            };
            let as_of = match v {
                TableVersion::VersionAsOf(Expr::Value(ref value)) => match &value.value {
                    Value::Number(n, _) => match n.parse::<u64>() {
                        Ok(n) => AsOf::Version(n),
                        Err(_) => {
                            self.error = Some(Error::invalid(format!(
                                "VERSION AS OF needs a version number (1, 2, …), got {n}"
                            )));
                            return ControlFlow::Break(());
                        }
                    },
                    other => {
                        self.error = Some(Error::invalid(format!(
                            "VERSION AS OF needs a version number, got {other}"
                        )));
                        return ControlFlow::Break(());
                    }
                },
                TableVersion::TimestampAsOf(e) | TableVersion::ForSystemTimeAsOf(e) => {
                    AsOf::Timestamp(Box::new(e))
                }
                other => {
                    self.error = Some(Error::unsupported(format!(
                        "'{other}' is not supported; use VERSION AS OF n or TIMESTAMP AS OF '…'"
                    )));
                    return ControlFlow::Break(());
                }
            };
            let Some(ident) = name.0.last().and_then(|p| p.as_ident()).cloned() else {
                return ControlFlow::Continue(());
            };
            let table = match ident.quote_style {
                Some(_) => ident.value.clone(),
                None => ident.value.to_lowercase(),
            };
            let pinned = format!("{table}@{}", NEXT_PIN.fetch_add(1, Ordering::Relaxed));
            if alias.is_none() {
                *alias = Some(TableAlias {
                    explicit: true,
                    name: ident,
                    columns: vec![],
                    at: None,
                });
            }
            *name = ObjectName::from(vec![Ident::with_quote('"', pinned.clone())]);
            self.refs.push(VersionedRef {
                table,
                as_of,
                pinned,
            });
            ControlFlow::Continue(())
        }
    }
    let mut v = Rewrite {
        refs: vec![],
        error: None,
    };
    match statement {
        DFStatement::Statement(s) => {
            if matches!(s.as_ref(), Statement::CreateView(_)) {
                let mut probe = Rewrite {
                    refs: vec![],
                    error: None,
                };
                let _ = s.visit(&mut probe);
                if !probe.refs.is_empty() || probe.error.is_some() {
                    return Err(Error::unsupported(
                        "a view cannot pin a table version; query the version directly or restore it into a table",
                    ));
                }
            }
            let _ = s.visit(&mut v);
        }
        DFStatement::Explain(e) => return collect_versioned(&mut e.statement),
        DFStatement::CopyTo(c) => {
            if let datafusion::sql::parser::CopyToSource::Query(q) = &mut c.source {
                let _ = q.visit(&mut v);
            }
        }
        _ => {}
    }
    match v.error {
        Some(e) => Err(e),
        None => Ok(v.refs),
    }
}

/// Evaluate constant SQL expressions (procedure arguments, AS OF timestamps) with the session's functions.
async fn eval_constants(
    session: &Session,
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
    let df = session.context().sql(&sql).await?;
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

async fn eval_timestamp(session: &Session, expr: &Expr) -> Result<i64> {
    let v = eval_constants(session, &[format!("CAST(({expr}) AS TIMESTAMP)")], None)
        .await
        .map_err(|e| {
            Error::invalid(format!(
                "TIMESTAMP AS OF {expr}: not a timestamp ({})",
                e.message()
            ))
        })?;
    match &v[0] {
        ScalarValue::TimestampNanosecond(Some(ns), _) => Ok(*ns / 1000),
        ScalarValue::TimestampMicrosecond(Some(us), _) => Ok(*us),
        ScalarValue::TimestampMillisecond(Some(ms), _) => Ok(*ms * 1000),
        ScalarValue::TimestampSecond(Some(s), _) => Ok(*s * 1_000_000),
        other => Err(Error::invalid(format!(
            "TIMESTAMP AS OF {expr}: not a timestamp ({other})"
        ))),
    }
}

fn micros_text(us: i64) -> String {
    arrow::temporal_conversions::timestamp_us_to_datetime(us)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.6f UTC").to_string())
        .unwrap_or_else(|| us.to_string())
}

/// The latest version committed at or before `at` (microseconds since the epoch, UTC).
async fn version_at(schema: &MarrowSchema, table: &str, at: i64) -> Result<u64> {
    let ds = schema.open_dataset(table).await?;
    let versions = ds.versions().await?;
    let found = versions
        .iter()
        .rev()
        .find(|v| v.timestamp.timestamp_micros() <= at);
    match (found, versions.first()) {
        (Some(v), _) => Ok(v.version),
        (None, Some(first)) => Err(Error::not_found(format!(
            "table '{table}' did not exist at {}: its oldest kept version, {}, was committed at {}",
            micros_text(at),
            first.version,
            micros_text(first.timestamp.timestamp_micros())
        ))),
        (None, None) => Err(Error::not_found(format!("table '{table}' has no versions"))),
    }
}

/// Open version `version` of a table, with a clear error when it does not exist (never committed, or cleaned up).
pub(crate) async fn checkout(schema: &MarrowSchema, table: &str, version: u64) -> Result<Dataset> {
    let ds = schema.open_dataset(table).await?;
    if version == ds.version_id() {
        return Ok(ds.as_ref().clone());
    }
    match ds.checkout_version(version).await {
        Ok(d) => Ok(d),
        Err(lance::Error::DatasetNotFound { .. }) | Err(lance::Error::NotFound { .. }) => {
            Err(no_such_version(table, version, ds.version_id()))
        }
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn no_such_version(table: &str, version: u64, latest: u64) -> Error {
    Error::not_found(format!(
        "table '{table}' has no version {version} (the latest is {latest}; \
         SELECT * FROM marrow_versions('{table}') lists the versions kept)"
    ))
}

// ---------------------------------------------------------------------------------------------------------------
// marrow_versions('t')

pub(crate) struct VersionsFunction(pub(crate) Arc<MarrowSchema>);

impl std::fmt::Debug for VersionsFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("marrow_versions")
    }
}

fn versions_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("version", DataType::UInt64, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("operation", DataType::Utf8, false),
        Field::new("rows", DataType::UInt64, true),
        Field::new("tags", DataType::Utf8, true),
        Field::new("is_latest", DataType::Boolean, false),
    ]))
}

impl TableFunctionImpl for VersionsFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DFResult<Arc<dyn TableProvider>> {
        let table = match args.exprs() {
            [DFExpr::Literal(ScalarValue::Utf8(Some(s)), _)] => s.clone(),
            _ => {
                return Err(Error::invalid(
                    "marrow_versions(table) takes one argument, the table name as a string",
                )
                .into())
            }
        };
        if !self.0.lance_table_exists(&table) {
            return Err(Error::not_found(format!("table '{table}' not found")).into());
        }
        Ok(Arc::new(VersionsTable {
            schema: self.0.clone(),
            table,
        }))
    }
}

#[derive(Debug)]
struct VersionsTable {
    schema: Arc<MarrowSchema>,
    table: String,
}

#[async_trait]
impl TableProvider for VersionsTable {
    fn schema(&self) -> SchemaRef {
        versions_schema()
    }
    fn table_type(&self) -> TableType {
        TableType::View
    }
    async fn scan(
        &self,
        state: &dyn CatalogSession,
        projection: Option<&Vec<usize>>,
        filters: &[DFExpr],
        limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let batch = versions_batch(&self.schema, &self.table).await?;
        MemTable::try_new(versions_schema(), vec![vec![batch]])?
            .scan(state, projection, filters, limit)
            .await
    }
}

async fn versions_batch(schema: &MarrowSchema, table: &str) -> Result<RecordBatch> {
    let ds = schema.open_dataset(table).await?;
    let versions = ds.versions().await?;
    let latest = ds.version_id();
    let mut tags: HashMap<u64, Vec<String>> = HashMap::new();
    for (name, t) in ds.tags().list().await? {
        tags.entry(t.version).or_default().push(name);
    }
    let mut operations = Vec::with_capacity(versions.len());
    for v in &versions {
        let op = match ds.read_version_transaction(v.version).await {
            Ok(t) => t
                .transaction
                .map(|t| t.operation.name().to_string())
                .unwrap_or_else(|| "Unknown".into()),
            Err(_) => "Unknown".into(),
        };
        operations.push(op);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from_iter_values(
            versions.iter().map(|v| v.version),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(
                versions.iter().map(|v| v.timestamp.timestamp_micros()),
            )
            .with_timezone("UTC"),
        ),
        Arc::new(StringArray::from(operations)),
        Arc::new(UInt64Array::from_iter(versions.iter().map(|v| {
            v.metadata
                .get("total_rows")
                .and_then(|s| s.parse::<u64>().ok())
        }))),
        Arc::new(StringArray::from_iter(versions.iter().map(|v| {
            tags.get_mut(&v.version).map(|names| {
                names.sort();
                names.join(",")
            })
        }))),
        Arc::new(BooleanArray::from_iter(
            versions.iter().map(|v| Some(v.version == latest)),
        )),
    ];
    Ok(RecordBatch::try_new(versions_schema(), columns)?)
}

// ---------------------------------------------------------------------------------------------------------------
// CALL procedures

const PROCEDURES: &str =
    "restore_table('t', version), tag_version('t', 'name'[, version]), drop_tag('t', 'name'), \
compact_table('t'), cleanup_versions('t'[, retention]), import_safetensors('file', 'model'), \
export_safetensors('model', 'file'), export_gguf('model', 'file'), quantize_model('model', 'new', 'q8_0'), drop_model('model'), \
import_peft('dir', 'id'[, 'description'[, 'base model'[, 'metrics json']]]), export_peft('id', 'dir'), \
merge_adapter('id', 'new model'[, 'base model']), drop_adapter('id')";

/// `CALL name(args…)`: one of Marrow's table maintenance procedures. Each returns one row describing what it did.
pub(crate) async fn call(
    session: &Session,
    function: Function,
    params: Option<datafusion::common::ParamValues>,
) -> Result<QueryOutput> {
    let name = function.name.to_string().to_lowercase();
    let args: Vec<String> = match &function.args {
        FunctionArguments::None => vec![],
        FunctionArguments::List(list) => list
            .args
            .iter()
            .map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e.to_string()),
                other => Err(Error::invalid(format!(
                    "CALL {name}: argument {other} must be a plain value"
                ))),
            })
            .collect::<Result<_>>()?,
        FunctionArguments::Subquery(_) => {
            return Err(Error::invalid(format!(
                "CALL {name}: arguments must be values"
            )))
        }
    };
    let values = eval_constants(session, &args, params).await?;
    let db = session.database();
    let schema = db.schema_provider().clone();
    let table_arg = |what: &str| -> Result<String> {
        match values.first() {
            Some(ScalarValue::Utf8(Some(t)))
            | Some(ScalarValue::Utf8View(Some(t)))
            | Some(ScalarValue::LargeUtf8(Some(t))) => {
                if schema.lance_table_exists(t) {
                    Ok(t.clone())
                } else {
                    Err(Error::not_found(format!("table '{t}' not found")))
                }
            }
            _ => Err(Error::invalid(format!(
                "CALL {what}: the first argument is the table name, as a string"
            ))),
        }
    };
    let arity = |min: usize, max: usize| -> Result<()> {
        if values.len() < min || values.len() > max {
            Err(Error::invalid(format!(
                "CALL {name} takes {} argument(s), got {}; procedures: {PROCEDURES}",
                if min == max {
                    min.to_string()
                } else {
                    format!("{min} to {max}")
                },
                values.len()
            )))
        } else {
            Ok(())
        }
    };
    let batch = match name.as_str() {
        "restore_table" => {
            arity(2, 2)?;
            let table = table_arg(&name)?;
            let lock = db.write_lock(&table);
            let _guard = lock.lock().await;
            let latest = schema.open_dataset(&table).await?;
            let version = match &values[1] {
                v if version_number(v).is_some() => version_number(v).unwrap_or_default(),
                ScalarValue::Utf8(Some(tag)) => {
                    latest.tags().get_version(tag).await.map_err(|_| {
                        Error::not_found(format!("table '{table}' has no tag '{tag}'"))
                    })?
                }
                other => {
                    return Err(Error::invalid(format!(
                    "CALL restore_table: the version must be a number or a tag name, got {other}"
                )))
                }
            };
            let mut old = checkout(&schema, &table, version).await?;
            old.restore().await.map_err(conflict)?;
            one_row(&[
                ("table_name", text(&table)),
                ("restored_version", uint(version)),
                ("new_version", uint(old.version_id())),
            ])
        }
        "tag_version" => {
            arity(2, 3)?;
            let table = table_arg(&name)?;
            let tag = string_value(&values[1], "CALL tag_version: the tag name")?;
            let ds = schema.open_dataset(&table).await?;
            let version = match values.get(2) {
                None => ds.version_id(),
                Some(v) => version_number(v).ok_or_else(|| {
                    Error::invalid(format!(
                        "CALL tag_version: the version must be a positive integer, got {v}"
                    ))
                })?,
            };
            ds.tags()
                .create(&tag, version)
                .await
                .map_err(|e| tag_error(e, &table, &tag, version, ds.version_id()))?;
            one_row(&[
                ("table_name", text(&table)),
                ("tag", text(&tag)),
                ("version", uint(version)),
            ])
        }
        "drop_tag" => {
            arity(2, 2)?;
            let table = table_arg(&name)?;
            let tag = string_value(&values[1], "CALL drop_tag: the tag name")?;
            let ds = schema.open_dataset(&table).await?;
            ds.tags()
                .delete(&tag)
                .await
                .map_err(|_| Error::not_found(format!("table '{table}' has no tag '{tag}'")))?;
            one_row(&[("table_name", text(&table)), ("tag", text(&tag))])
        }
        "compact_table" => {
            arity(1, 1)?;
            let table = table_arg(&name)?;
            let lock = db.write_lock(&table);
            let _guard = lock.lock().await;
            let mut ds = schema.open_dataset(&table).await?.as_ref().clone();
            let m = compact_files(&mut ds, CompactionOptions::default(), None)
                .await
                .map_err(conflict)?;
            one_row(&[
                ("table_name", text(&table)),
                ("fragments_removed", uint(m.fragments_removed as u64)),
                ("fragments_added", uint(m.fragments_added as u64)),
                ("version", uint(ds.version_id())),
            ])
        }
        "cleanup_versions" => {
            arity(1, 2)?;
            let table = table_arg(&name)?;
            let retention = match values.get(1) {
                Some(v) => interval_micros(v)?,
                None => {
                    let text = session
                        .state()
                        .config()
                        .options()
                        .extensions
                        .get::<MarrowOptions>()
                        .map(|o| o.version_retention.clone())
                        .unwrap_or_else(|| "7 days".into());
                    let v = eval_constants(
                        session,
                        &[format!("INTERVAL '{}'", text.replace('\'', "''"))],
                        None,
                    )
                    .await
                    .map_err(|e| {
                        Error::invalid(format!(
                            "marrow.version_retention = '{text}' is not an interval: {}",
                            e.message()
                        ))
                    })?;
                    interval_micros(&v[0])?
                }
            };
            let stats = cleanup(&schema, db, &table, retention).await?;
            one_row(&[
                ("table_name", text(&table)),
                ("versions_removed", uint(stats.old_versions)),
                ("bytes_removed", uint(stats.bytes_removed)),
                ("oldest_kept", uint(stats.oldest_kept)),
            ])
        }
        "import_safetensors" => {
            arity(2, 2)?;
            let file = string_value(&values[0], "CALL import_safetensors: the file")?;
            let model = string_value(&values[1], "CALL import_safetensors: the model name")?;
            let path = crate::fence::check_import(db.config(), &file)?;
            let stats = crate::weights::import(session, &path, &model, None).await?;
            one_row(&[
                ("model", text(&model)),
                ("tensors", uint(stats.tensors)),
                ("bytes", uint(stats.bytes)),
                ("rows", uint(stats.rows)),
            ])
        }
        "export_safetensors" => {
            arity(2, 2)?;
            let model = string_value(&values[0], "CALL export_safetensors: the model name")?;
            let file = string_value(&values[1], "CALL export_safetensors: the file")?;
            let path = crate::fence::check_export(db.config(), &file)?;
            let bytes = crate::weights::export(session, &model, &path, None).await?;
            one_row(&[("model", text(&model)), ("bytes", uint(bytes))])
        }
        "export_gguf" => {
            arity(2, 2)?;
            let model = string_value(&values[0], "CALL export_gguf: the model name")?;
            let file = string_value(&values[1], "CALL export_gguf: the file")?;
            let path = crate::fence::check_export(db.config(), &file)?;
            let bytes = crate::weights::export_gguf(session, &model, &path, None).await?;
            one_row(&[("model", text(&model)), ("bytes", uint(bytes))])
        }
        "quantize_model" => {
            arity(3, 3)?;
            let source = string_value(&values[0], "CALL quantize_model: the source model")?;
            let target = string_value(&values[1], "CALL quantize_model: the new model's name")?;
            let scheme = string_value(&values[2], "CALL quantize_model: the scheme")?;
            let (quantized, copied) =
                crate::weights::quantize_model(session, &source, &target, &scheme).await?;
            one_row(&[
                ("model", text(&target)),
                ("tensors_quantized", uint(quantized)),
                ("tensors_copied", uint(copied)),
            ])
        }
        "import_peft" => {
            arity(2, 5)?;
            let dir = string_value(&values[0], "CALL import_peft: the PEFT directory")?;
            let id = string_value(&values[1], "CALL import_peft: the adapter's id")?;
            let optional = |i: usize, what: &str| -> Result<Option<String>> {
                match values.get(i) {
                    None => Ok(None),
                    Some(v) if v.is_null() => Ok(None),
                    Some(v) => string_value(v, what).map(Some),
                }
            };
            let description = optional(2, "CALL import_peft: the description")?;
            let base = optional(3, "CALL import_peft: the base model")?;
            let metrics = optional(4, "CALL import_peft: the metrics (a JSON object)")?;
            let path = crate::fence::check_import(db.config(), &dir)?;
            let done = crate::adapters::import(
                session,
                &path,
                &id,
                description.as_deref(),
                base.as_deref(),
                metrics.as_deref(),
            )
            .await?;
            one_row(&[
                ("adapter", text(&id)),
                ("base_model", text(&done.base_model)),
                ("modules", uint(done.modules as u64)),
                ("tensors", uint(done.stats.tensors)),
                ("bytes", uint(done.stats.bytes)),
            ])
        }
        "export_peft" => {
            arity(2, 2)?;
            let id = string_value(&values[0], "CALL export_peft: the adapter's id")?;
            let dir = string_value(&values[1], "CALL export_peft: the directory")?;
            let path = crate::fence::check_export(db.config(), &dir)?;
            let bytes = crate::adapters::export(session, &id, &path).await?;
            one_row(&[("adapter", text(&id)), ("bytes", uint(bytes))])
        }
        "merge_adapter" => {
            arity(2, 3)?;
            let id = string_value(&values[0], "CALL merge_adapter: the adapter's id")?;
            let target = string_value(&values[1], "CALL merge_adapter: the new model's name")?;
            let base = match values.get(2) {
                Some(v) => Some(string_value(v, "CALL merge_adapter: the base model")?),
                None => None,
            };
            let merged = crate::adapters::merge(session, &id, &target, base.as_deref()).await?;
            one_row(&[
                ("model", text(&target)),
                ("tensors_merged", uint(merged as u64)),
            ])
        }
        "drop_adapter" => {
            arity(1, 1)?;
            let id = string_value(&values[0], "CALL drop_adapter: the adapter's id")?;
            crate::adapters::require(session, &id).await?;
            let rows = crate::weights::drop_model(session, &id).await?;
            one_row(&[("adapter", text(&id)), ("rows_deleted", uint(rows))])
        }
        "drop_model" => {
            arity(1, 1)?;
            let model = string_value(&values[0], "CALL drop_model: the model name")?;
            let rows = crate::weights::drop_model(session, &model).await?;
            one_row(&[("model", text(&model)), ("rows_deleted", uint(rows))])
        }
        other => {
            return Err(Error::not_found(format!(
                "unknown procedure '{other}'; procedures: {PROCEDURES}"
            )))
        }
    }?;
    let schema = batch.schema();
    Ok(QueryOutput::Rows(Box::pin(
        datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
            schema,
            futures::stream::iter(vec![Ok(batch)]),
        ),
    )))
}

pub(crate) struct CleanupStats {
    pub old_versions: u64,
    pub bytes_removed: u64,
    pub oldest_kept: u64,
}

/// Remove versions committed more than `retention_us` ago, except tagged ones, the latest, and every version from
/// the oldest one a query in this process still reads onwards.
pub(crate) async fn cleanup(
    schema: &MarrowSchema,
    db: &crate::Database,
    table: &str,
    retention_us: i64,
) -> Result<CleanupStats> {
    let lock = db.write_lock(table);
    let _guard = lock.lock().await;
    let latest = schema.open_dataset(table).await?;
    let reading = schema.reading_versions(table);
    // Only versions older than the oldest one still being read (and than the latest) are candidates.
    let floor = reading
        .iter()
        .copied()
        .chain([latest.version_id()])
        .min()
        .unwrap_or(latest.version_id());
    let candidates: Vec<u64> = latest
        .versions()
        .await?
        .iter()
        .map(|v| v.version)
        .filter(|v| *v < floor)
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default();
    let before = arrow::temporal_conversions::timestamp_us_to_datetime(now - retention_us)
        .ok_or_else(|| Error::invalid("retention period out of range"))?
        .and_utc();
    let (old_versions, bytes_removed) = if candidates.is_empty() {
        (0, 0)
    } else {
        let policy = CleanupPolicyBuilder::default()
            .before_timestamp(before)
            .versions(candidates)?
            .error_if_tagged_old_versions(false)
            .build();
        let stats = latest.cleanup_with_policy(policy).await?;
        (stats.old_versions, stats.bytes_removed)
    };
    let oldest_kept = latest
        .versions()
        .await?
        .first()
        .map(|v| v.version)
        .unwrap_or(latest.version_id());
    Ok(CleanupStats {
        old_versions,
        bytes_removed,
        oldest_kept,
    })
}

fn conflict(e: lance::Error) -> Error {
    match e {
        lance::Error::CommitConflict { .. }
        | lance::Error::RetryableCommitConflict { .. }
        | lance::Error::IncompatibleTransaction { .. }
        | lance::Error::TooMuchWriteContention { .. } => Error::new(
            crate::ErrorKind::Locked,
            format!("another writer changed the table at the same time; nothing was changed, retry: {e}"),
        ),
        other => other.into(),
    }
}

fn tag_error(e: lance::Error, table: &str, tag: &str, version: u64, latest: u64) -> Error {
    match e {
        lance::Error::RefConflict { .. } => Error::new(
            crate::ErrorKind::AlreadyExists,
            format!("table '{table}' already has a tag '{tag}'; CALL drop_tag first"),
        ),
        lance::Error::VersionNotFound { .. } => no_such_version(table, version, latest),
        lance::Error::InvalidRef { .. } => Error::invalid(format!(
            "'{tag}' is not a valid tag name: use letters, digits, '.', '-' and '_'"
        )),
        other => other.into(),
    }
}

fn version_number(v: &ScalarValue) -> Option<u64> {
    let n = match v {
        ScalarValue::Int64(Some(n)) => *n,
        ScalarValue::Int32(Some(n)) => *n as i64,
        ScalarValue::UInt64(Some(n)) => *n as i64,
        _ => return None,
    };
    (n > 0).then_some(n as u64)
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

/// A retention period in microseconds: an INTERVAL, or a string such as '7 days'.
fn interval_micros(v: &ScalarValue) -> Result<i64> {
    let us = match v {
        ScalarValue::IntervalMonthDayNano(Some(i)) => {
            i.months as i64 * 30 * 86_400_000_000
                + i.days as i64 * 86_400_000_000
                + i.nanoseconds / 1000
        }
        ScalarValue::IntervalDayTime(Some(i)) => {
            i.days as i64 * 86_400_000_000 + i.milliseconds as i64 * 1000
        }
        ScalarValue::IntervalYearMonth(Some(m)) => *m as i64 * 30 * 86_400_000_000,
        other => {
            return Err(Error::invalid(format!(
                "the retention must be an interval such as INTERVAL '7 days', got {other}"
            )))
        }
    };
    if us < 0 {
        return Err(Error::invalid("the retention period cannot be negative"));
    }
    Ok(us)
}

fn text(s: &str) -> ArrayRef {
    Arc::new(StringArray::from(vec![s.to_string()]))
}

fn uint(n: u64) -> ArrayRef {
    Arc::new(UInt64Array::from(vec![n]))
}

fn one_row(columns: &[(&str, ArrayRef)]) -> Result<RecordBatch> {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(n, a)| Field::new(*n, a.data_type().clone(), false))
        .collect();
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns.iter().map(|(_, a)| a.clone()).collect(),
    )?)
}
