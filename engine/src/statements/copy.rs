//! `COPY (query) TO 'path' STORED AS PARQUET | CSV | JSON | ARROW [PARTITIONED BY (cols)]`, and the CLI's export.
//!
//! Marrow runs DataFusion's writers with three changes:
//! - output goes to a hidden temporary name next to the target and is renamed when complete, so a failed export
//!   leaves nothing that looks finished (DataFusion would leave a partial file at the target);
//! - a path is one file unless it ends in `/`, is an existing directory, or the output is partitioned (a directory
//!   of `col=value/` subdirectories);
//! - CSV cannot hold nested values: vector and list columns are written as JSON array text (`to_json`).
//!
//! Parquet and Arrow (IPC file, LZ4-compressed) keep vectors as fixed-size lists; JSON is newline-delimited.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use datafusion::common::ParamValues;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder};
use datafusion::physical_plan::{collect, ExecutionPlan};
use datafusion::sql::parser::{CopyToStatement, Statement as DFStatement};

use crate::error::{Error, ErrorKind, Result};
use crate::extension::{misrouted, StatementHandler};
use crate::fence;
use crate::session::{QueryOutput, Session};

/// The formats COPY writes, by the names `STORED AS` accepts.
const FORMATS: &str = "PARQUET, CSV, JSON (newline-delimited) or ARROW (IPC file)";

/// Run a COPY statement from SQL: the target must lie under the export root.
pub(crate) async fn copy(
    session: &Session,
    copy: CopyToStatement,
    params: Option<ParamValues>,
    progress: Option<Arc<AtomicU64>>,
) -> Result<QueryOutput> {
    let target = fence::check_export(session.database().config(), &copy.target)?;
    let dir_hint = copy.target.ends_with('/');
    // Errors name the path as the client wrote it, not where it lives on the server.
    let shown = copy.target.clone();
    export(session, copy, &target, &shown, dir_hint, params, progress).await
}

/// Write a COPY statement's rows to `target` (any path: the CLI exports where its user asks). `progress` counts
/// the rows written so far.
pub async fn export(
    session: &Session,
    mut copy: CopyToStatement,
    target: &Path,
    shown: &str,
    dir_hint: bool,
    params: Option<ParamValues>,
    progress: Option<Arc<AtomicU64>>,
) -> Result<QueryOutput> {
    let format = format_of(copy.stored_as.as_deref(), target)?;
    copy.stored_as = Some(format.to_string());
    let directory = !copy.partitioned_by.is_empty() || dir_hint || target.is_dir();
    check_target(target, shown, directory)?;
    let name = target
        .file_name()
        .ok_or_else(|| Error::invalid(format!("'{shown}' names no file")))?
        .to_string_lossy()
        .into_owned();
    let parent = target.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent).map_err(|e| not_writable(parent, e))?;
    let temp = parent.join(format!(".{name}.marrow-tmp-{}", unique()));
    copy.target = format!(
        "{}{}",
        temp.to_string_lossy(),
        if directory { "/" } else { "" }
    );

    let result = write(session, copy, format, directory, params, progress).await;
    match result {
        Ok(count) => {
            if directory && !temp.exists() {
                // An empty result writes no files; the export is still an (empty) directory.
                std::fs::create_dir_all(&temp).map_err(|e| not_writable(&temp, e))?;
            }
            if let Err(e) = std::fs::rename(&temp, target) {
                remove(&temp);
                return Err(not_writable(target, e));
            }
            // A row like DataFusion's own COPY: `count`.
            Ok(QueryOutput::Rows(QueryOutput::Count(count).into_stream()))
        }
        Err(e) => {
            remove(&temp);
            Err(e)
        }
    }
}

async fn write(
    session: &Session,
    copy: CopyToStatement,
    format: &str,
    directory: bool,
    params: Option<ParamValues>,
    progress: Option<Arc<AtomicU64>>,
) -> Result<u64> {
    let plan = session.plan(DFStatement::CopyTo(copy), params).await?;
    let LogicalPlan::Copy(mut c) = plan else {
        return Err(Error::internal("COPY did not plan to a copy"));
    };
    // Sizes the Parquet writer asserts to be positive: refused here instead of panicking in the writer.
    for key in [
        "format.max_row_group_size",
        "format.write_batch_size",
        "format.data_page_row_count_limit",
        "format.data_pagesize_limit",
    ] {
        if let Some(v) = c.options.get(key) {
            if v.trim().parse::<u64>().is_ok_and(|n| n == 0) {
                return Err(Error::invalid(format!(
                    "COPY option '{}' must be at least 1, got {v}",
                    key.trim_start_matches("format.")
                )));
            }
        }
    }
    c.options
        .insert("single_file_output".into(), (!directory).to_string());
    if format == "CSV" {
        c.input = Arc::new(nested_as_json(c.input.as_ref().clone())?);
    }
    if format == "PARQUET" && !c.options.contains_key("format.max_row_group_size") {
        // A row group is buffered whole before it is written; DataFusion's default of 1M rows is 1.6 GB for
        // 384-d embeddings. Size groups by bytes instead, so a large export streams in bounded memory.
        let rows = row_group_rows(c.input.schema().as_arrow());
        c.options
            .insert("format.max_row_group_size".into(), rows.to_string());
    }
    let state = session.state();
    let physical = state.create_physical_plan(&LogicalPlan::Copy(c)).await?;
    let physical = match progress {
        Some(counter) => count_rows_into(physical, counter)?,
        None => physical,
    };
    let batches = collect(physical, state.task_ctx()).await.map_err(|e| {
        let e = Error::from(e);
        if e.message().contains("Permission denied") || e.message().contains("Read-only") {
            Error::new(ErrorKind::PermissionDenied, e.message().to_string())
        } else {
            e
        }
    })?;
    let count = QueryOutput::count_in(&batches);
    Ok(count)
}

fn format_of(stored_as: Option<&str>, target: &Path) -> Result<&'static str> {
    let named = match stored_as {
        Some(s) => s.to_ascii_uppercase(),
        None => target
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_uppercase())
            .ok_or_else(|| {
                Error::invalid(format!(
                    "COPY needs a format: add STORED AS {FORMATS}, or give the file an extension"
                ))
            })?,
    };
    match named.as_str() {
        "PARQUET" => Ok("PARQUET"),
        "CSV" => Ok("CSV"),
        "JSON" | "NDJSON" | "JSONL" => Ok("JSON"),
        "ARROW" | "IPC" | "FEATHER" => Ok("ARROW"),
        other => Err(Error::invalid(format!(
            "unknown format {other}: COPY writes {FORMATS}"
        ))),
    }
}

fn check_target(target: &Path, shown: &str, directory: bool) -> Result<()> {
    match std::fs::metadata(target) {
        Err(_) => Ok(()),
        Ok(m) if directory && m.is_dir() => {
            let empty = std::fs::read_dir(target)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
            if empty {
                Ok(())
            } else {
                Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!(
                        "'{shown}' already exists and is not empty: remove it or export to a new directory"
                    ),
                ))
            }
        }
        Ok(m) if directory && !m.is_dir() => Err(Error::new(
            ErrorKind::AlreadyExists,
            format!("'{shown}' is a file; partitioned output needs a directory"),
        )),
        Ok(m) if m.is_dir() => Err(Error::new(
            ErrorKind::AlreadyExists,
            format!("'{shown}' is a directory"),
        )),
        // An existing file is replaced atomically when the export completes.
        Ok(_) => Ok(()),
    }
}

fn not_writable(path: &Path, e: std::io::Error) -> Error {
    Error::new(
        ErrorKind::PermissionDenied,
        format!("cannot write '{}': {e}", path.display()),
    )
}

fn remove(path: &PathBuf) {
    let _ = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
}

fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}", nanos, std::process::id())
}

/// Rows per Parquet row group: about 128 MB of estimated row width, between 4,096 and 1,048,576 rows.
fn row_group_rows(schema: &arrow::datatypes::Schema) -> usize {
    fn width(t: &arrow::datatypes::DataType) -> usize {
        use arrow::datatypes::DataType::*;
        match t {
            FixedSizeList(f, n) => width(f.data_type()) * (*n as usize),
            List(f) | LargeList(f) | ListView(f) | LargeListView(f) => 16 * width(f.data_type()),
            Struct(fields) => fields.iter().map(|f| width(f.data_type())).sum(),
            Utf8 | LargeUtf8 | Utf8View | Binary | LargeBinary | BinaryView => 64,
            other => other.primitive_width().unwrap_or(8),
        }
    }
    let row: usize = schema.fields().iter().map(|f| width(f.data_type())).sum();
    ((128 << 20) / row.max(1)).clamp(4096, 1 << 20)
}

/// Project nested columns (vectors, lists, structs) through `to_json`, keeping their names.
fn nested_as_json(input: LogicalPlan) -> Result<LogicalPlan> {
    let schema = input.schema().clone();
    if !schema.fields().iter().any(|f| f.data_type().is_nested()) {
        return Ok(input);
    }
    let to_json = Arc::new(marrow_udfs::json::to_json());
    let exprs: Vec<Expr> = schema
        .iter()
        .map(|(q, f)| {
            let c = Expr::Column(datafusion::common::Column::new(q.cloned(), f.name()));
            if f.data_type().is_nested() {
                to_json.call(vec![c]).alias(f.name())
            } else {
                c
            }
        })
        .collect();
    Ok(LogicalPlanBuilder::from(input).project(exprs)?.build()?)
}

/// Wrap the writer's input so each row passing into the sink is counted.
fn count_rows_into(
    plan: Arc<dyn ExecutionPlan>,
    counter: Arc<AtomicU64>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let children: Vec<Arc<dyn ExecutionPlan>> = plan.children().into_iter().cloned().collect();
    if children.len() != 1 {
        return Ok(plan);
    }
    let counted: Arc<dyn ExecutionPlan> = Arc::new(crate::exec::PassExec::counting(
        "CountRowsExec",
        children[0].clone(),
        counter,
    ));
    Ok(plan.with_new_children(vec![counted])?)
}

/// Export a table (by name) or a query's rows to a file or directory: the `marrow export` command.
pub async fn export_query(
    session: &Session,
    table_or_query: &str,
    format: Option<&str>,
    out: &Path,
    partition_by: &[String],
    progress: Option<Arc<AtomicU64>>,
) -> Result<u64> {
    let query = if crate::catalog::validate_table_name(table_or_query).is_ok()
        && session
            .database()
            .schema_provider()
            .lance_table_exists(table_or_query)
    {
        format!("SELECT * FROM {}", crate::sql::quote(table_or_query))
    } else {
        table_or_query.to_string()
    };
    let mut sql = format!("COPY ({query}) TO 'export'");
    if let Some(f) = format {
        sql.push_str(&format!(" STORED AS {f}"));
    }
    if !partition_by.is_empty() {
        let cols: Vec<String> = partition_by.iter().map(|c| crate::sql::quote(c)).collect();
        sql.push_str(&format!(" PARTITIONED BY ({})", cols.join(", ")));
    }
    let mut statements = crate::sql::parse(&sql)?;
    let mut statement = match statements.len() {
        1 => statements.remove(0),
        _ => return Err(Error::invalid("export takes one table name or one query")),
    };
    let _pins = crate::session::pin_versions(session, &mut statement).await?;
    let DFStatement::CopyTo(copy) = statement else {
        return Err(Error::internal("export did not parse as COPY"));
    };
    let out = std::path::absolute(out)?;
    let shown = out.display().to_string();
    let (_, batches) = export(session, copy, &out, &shown, false, None, progress)
        .await?
        .collect()
        .await?;
    Ok(QueryOutput::count_in(&batches))
}

/// `COPY … TO`: written through a temporary name, under the export root only.
pub struct CopyStatement;

#[async_trait::async_trait]
impl StatementHandler for CopyStatement {
    fn handles(&self, statement: &DFStatement) -> bool {
        matches!(statement, DFStatement::CopyTo(_))
    }

    async fn run(
        &self,
        session: &Session,
        statement: DFStatement,
        params: Option<ParamValues>,
    ) -> Result<QueryOutput> {
        match statement {
            DFStatement::CopyTo(c) => copy(session, c, params, None).await,
            _ => Err(misrouted("COPY")),
        }
    }
}
