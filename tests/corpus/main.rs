//! DataFusion's own sqllogictest corpus — the `.slt` files of the `datafusion-sqllogictest` crate that Cargo.lock
//! pins, read from the crate, not copied — replayed record by record against DataFusion in-process (the reference)
//! and against Marrow: a Flight SQL server on one plain connection (no login, no cookie, as ADBC connects), or an
//! engine session in-process with `CORPUS_VIA=session`. A record counts when DataFusion passes it; Marrow agrees
//! when it passes it too, with results normalized by the crate's own code (`convert_batches`,
//! `df_value_validator`), so formatting is not a difference. Disagreements that are Marrow's on purpose are classed
//! by [`DELIBERATE`], each with its reason, on evidence (the error, or the rows under one documented rendering).
//!
//! The test fails when a file has more unexplained disagreements than `tests/corpus/baseline.tsv` records for it,
//! or when the corpus falls below 98 % agreeing or differing on purpose. `CORPUS_UPDATE=1` rewrites the baseline
//! from the run, `CORPUS_FILTER=<substring>` runs only matching files, and `CORPUS_REPORT=<path>` writes the
//! report (docs/conformance.md).

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_flight::error::FlightError;
use arrow_flight::sql::client::FlightSqlServiceClient;
use datafusion::prelude::SessionContext;
use datafusion_sqllogictest::{
    convert_batches, convert_schema_to_types, df_value_validator, value_normalizer, DFColumnType,
    DataFusion, TestContext,
};
use futures::TryStreamExt;
use marrow_engine::{Config, Database, QueryOutput, Session};
use marrow_flight::auth::sessions::SessionKind;
use marrow_flight::ServeOptions;
use sqllogictest::{
    strict_column_validator, AsyncDB, ColumnType, Control, DBOutput, QueryExpect, Record, Runner,
    SortMode,
};
use tonic::transport::Channel;

/// The labels DataFusion's runner evaluates `skipif` / `onlyif` against (its label and its engine's name).
const LABELS: [&str; 2] = ["Datafusion", "DataFusion"];
/// A record that has not finished after this long is a disagreement (and its file goes on).
const RECORD_TIMEOUT: Duration = Duration::from_secs(60);

/// Directories of the corpus left out, with why.
const EXCLUDED_DIRS: [(&str, &str); 2] = [
    (
        "spark",
        "tests of the datafusion-spark function library (Spark semantics), which Marrow does not register",
    ),
    (
        "tpch",
        "needs generated TPC-H data; DataFusion's own runner skips it unless asked (--include-tpch)",
    ),
];

/// A class of deliberate difference: the records it covers still count as disagreements, and are reported apart.
struct Deliberate {
    name: &'static str,
    reason: &'static str,
}

const EXPLAIN: Deliberate = Deliberate {
    name: "explain",
    reason: "EXPLAIN shows Marrow's plans: its tables are Lance datasets (Lance scans, filters pushed into them) and \
             its own optimizer rules are in the rule list",
};
const FENCE: Deliberate = Deliberate {
    name: "file fence",
    reason: "Marrow reads and writes files only under its import/export root (PERMISSION_DENIED); the corpus's \
             `../` paths leave it (DataFusion accepts those statements and fails later, as the files are missing)",
};
const STORAGE_TYPE: Deliberate = Deliberate {
    name: "storage type",
    reason: "a column type Lance cannot store (fixed-size lists of lists or strings, Interval(MonthDayNano)): \
             CREATE TABLE refuses it with NOT_SUPPORTED naming the column",
};
const VECTORS: Deliberate = Deliberate {
    name: "vector values",
    reason: "FLOAT[n] columns are vectors: whole and finite, so a NULL, NaN or infinite element is refused \
             (INVALID_ARGUMENT)",
};
const ONE_SCHEMA: Deliberate = Deliberate {
    name: "one schema",
    reason: "Marrow has one catalog and schema (marrow.public): CREATE/DROP SCHEMA and other catalogs are refused",
};
const TEXT_TYPE: Deliberate = Deliberate {
    name: "text type",
    reason: "Marrow plans VARCHAR/TEXT as Utf8, not Utf8View, and reads Parquet string and binary columns as \
             stored, not as views (Lance stores Utf8, and a table's schema reads the same before and after a \
             restart); results are equal, `arrow_typeof` names differ",
};
const CATALOG_NAME: Deliberate = Deliberate {
    name: "catalog name",
    reason: "the catalog is named `marrow`, not `datafusion` (information_schema, SHOW, qualified names)",
};
const TIME_ZONE: Deliberate = Deliberate {
    name: "session time zone",
    reason: "the session time zone is +00:00 (TIMESTAMPTZ is an instant, as in PostgreSQL), so now() and zoned \
             timestamps print with `Z`, a `'…Z'::timestamptz` keeps its instant when cast to another zone, and SHOW \
             TIME ZONE reads +00:00",
};
const ERROR_TEXT: Deliberate = Deliberate {
    name: "error text",
    reason: "Marrow refuses the statement as DataFusion does, in its own words: one line without DataFusion's \
             context chain (`Optimizer rule … failed`, `type_coercion caused by`), `SQL syntax: …` for parser \
             errors, names qualified as marrow.public, and a gRPC status chosen by the error's type",
};
const TABLE_NAMES: Deliberate = Deliberate {
    name: "table names",
    reason: "a table is a Lance dataset in `<name>.lance`: names are letters, digits and underscores, and \
             case-insensitive (also when `datafusion.sql_parser.enable_ident_normalization` is off)",
};
const EXPORTS: Deliberate = Deliberate {
    name: "exports",
    reason: "COPY never writes into a directory that already holds files: an export is written aside and renamed \
             into place, so no reader sees half of one",
};
const CONSTRAINTS: Deliberate = Deliberate {
    name: "constraints",
    reason: "Marrow enforces the constraints it accepts: UNIQUE (other than the PRIMARY KEY) is refused rather than \
             accepted unenforced",
};
const INFORMATION_SCHEMA: Deliberate = Deliberate {
    name: "information_schema",
    reason: "information_schema and SHOW are always on (BI tools and ADBC's get_objects start there), and list \
             Marrow's own tables and settings",
};
const FUNCTIONS: Deliberate = Deliberate {
    name: "functions",
    reason: "functions are built in: CREATE FUNCTION and DROP FUNCTION are refused (NOT_SUPPORTED)",
};
const EXTENSIONS: Deliberate = Deliberate {
    name: "extensions",
    reason: "Marrow accepts statements DataFusion refuses: UPDATE … FROM (a join), DROP VIEW a, b",
};
const WIRE_TYPES: Deliberate = Deliberate {
    name: "wire types",
    reason: "through Flight SQL, dictionary-encoded results arrive as their value type (arrow-flight's encoder \
             hydrates dictionaries, which every client can read); the values are equal",
};
const URL_TABLES: Deliberate = Deliberate {
    name: "url tables",
    reason: "files become tables through CREATE EXTERNAL TABLE (under the import root); `SELECT … FROM 'path'` is \
             off, as in DataFusion's default context (the crate's harness turns it on for dynamic_file.slt)",
};
const HARNESS: Deliberate = Deliberate {
    name: "harness",
    reason: "depends on set-up the crate's test harness gives DataFusion's context only (a type planner, a schema \
             provider, tables in other catalogs, files in its own temporary directory, functions registered in the \
             context, which a Flight SQL session does not share)",
};
const CASCADE: Deliberate = Deliberate {
    name: "follows a difference",
    reason: "uses a table, view or function that an earlier deliberate difference left otherwise than in \
             DataFusion (its CREATE refused, its DROP refused or done early)",
};
const DELIBERATE: [&Deliberate; 19] = [
    &EXPLAIN,
    &FENCE,
    &STORAGE_TYPE,
    &VECTORS,
    &ONE_SCHEMA,
    &TEXT_TYPE,
    &CATALOG_NAME,
    &TIME_ZONE,
    &TABLE_NAMES,
    &EXPORTS,
    &CONSTRAINTS,
    &INFORMATION_SCHEMA,
    &FUNCTIONS,
    &EXTENSIONS,
    &WIRE_TYPES,
    &URL_TABLES,
    &HARNESS,
    &ERROR_TEXT,
    &CASCADE,
];

fn starts_with_word(sql: &str, word: &str) -> bool {
    let s = sql.trim_start();
    s.len() >= word.len() && s[..word.len()].eq_ignore_ascii_case(word)
}

/// `table 'marrow.public.<a path>' not found`: a file named as a table.
fn url_table(error: &str) -> bool {
    error.split("table 'marrow.public.").skip(1).any(|rest| {
        rest.split('\'')
            .next()
            .is_some_and(|name| name.contains('/'))
    })
}

/// Column types that differ only where DataFusion has a dictionary (`?`) and Marrow's result its value type.
fn hydrated(expected: &[DFColumnType], actual: &[DFColumnType]) -> bool {
    expected.len() == actual.len()
        && expected.iter().zip(actual).all(|(e, a)| {
            let (e, a) = (e.to_char(), a.to_char());
            e == a || e == '?'
        })
}

/// A disagreement whose error alone shows it is deliberate.
fn by_error(file: &str, sql: &str, error: &str) -> Option<&'static Deliberate> {
    let upper = sql.trim_start().to_ascii_uppercase();
    let has = |s: &str| error.contains(s);
    let other_schema = error
        .match_indices("'marrow.")
        .any(|(i, m)| !error[i + m.len()..].starts_with("public."));
    if starts_with_word(sql, "explain") {
        Some(&EXPLAIN)
    } else if has("is outside the allowed root")
        || has("outside the import root")
        || has("only local paths under the configured root")
    {
        Some(&FENCE)
    } else if has("Marrow's storage (Lance)") {
        Some(&STORAGE_TYPE)
    } else if has("vectors must be whole and finite") {
        Some(&VECTORS)
    } else if has("Marrow has one schema")
        || has("Marrow's tables live in marrow.public")
        || other_schema
    {
        Some(&ONE_SCHEMA)
    } else if has("'datafusion.") {
        Some(&CATALOG_NAME)
    } else if upper.starts_with("SHOW TIME ZONE") || upper.starts_with("SHOW TIMEZONE") {
        Some(&TIME_ZONE)
    } else if has("invalid table name") {
        Some(&TABLE_NAMES)
    } else if has("already exists and is not empty") {
        Some(&EXPORTS)
    } else if has("UNIQUE constraints other than the PRIMARY KEY are not supported") {
        Some(&CONSTRAINTS)
    } else if has("expected to fail, but actually succeed")
        && (upper.contains("INFORMATION_SCHEMA") || upper.starts_with("SHOW"))
    {
        Some(&INFORMATION_SCHEMA)
    } else if has("expected to fail, but actually succeed")
        && ((upper.starts_with("UPDATE") && upper.contains(" FROM "))
            || (upper.starts_with("DROP VIEW") && upper.contains(',')))
    {
        Some(&EXTENSIONS)
    } else if has("user-defined SQL functions are not supported") {
        Some(&FUNCTIONS)
    } else if file == "ident_normalization.slt"
        && (has("not found")
            || has("doesn't exist")
            || has("expected to fail, but actually succeed"))
    {
        Some(&TABLE_NAMES)
    } else if url_table(error) {
        Some(&URL_TABLES)
    } else if (file == "cast_extension_type_metadata.slt" && has("Unsupported SQL type UUID"))
        || (matches!(file, "async_udf.slt" | "joins.slt") && has("Invalid function"))
        || (file.starts_with("information_schema_")
            && (has("doesn't exist") || error.starts_with("query result mismatch")))
    {
        Some(&HARNESS)
    } else if has("is expected to fail with error") && has("but got error") {
        Some(&ERROR_TEXT)
    } else {
        None
    }
}

/// A result that differs from the expected one only by the documented renderings of [`TEXT_TYPE`],
/// [`CATALOG_NAME`] and [`TIME_ZONE`], compared value by value (each class named once it is needed).
fn by_result(expected: &[String], actual: &[String]) -> Option<&'static Deliberate> {
    if expected.len() != actual.len() {
        return None;
    }
    let plain = |t: &str| {
        t.replace("Utf8View", "Utf8")
            .replace("BinaryView", "Binary")
    };
    let mut class: Option<&'static Deliberate> = None;
    for (e, a) in expected.iter().zip(actual) {
        if e == a {
            continue;
        }
        let a2 = a.replace(", \"+00:00\")", ")");
        if a2 != *a {
            class.get_or_insert(&TIME_ZONE);
        }
        let (e, a): (Vec<&str>, Vec<&str>) = (
            e.split_whitespace().collect(),
            a2.split_whitespace().collect(),
        );
        if e.len() != a.len() {
            return None;
        }
        for (e, a) in e.iter().zip(&a) {
            let this = if e == a {
                continue;
            } else if plain(e) == *a
                || (*e == "Utf8View" && matches!(*a, "LargeUtf8"))
                || (*e == "BinaryView" && matches!(*a, "LargeBinary" | "BinaryView"))
            {
                &TEXT_TYPE
            } else if *e == "datafusion" && *a == "marrow" {
                &CATALOG_NAME
            } else if a.strip_suffix('Z') == Some(e) && e.contains('T') && e.contains(':') {
                &TIME_ZONE
            } else {
                return None;
            };
            class.get_or_insert(this);
        }
    }
    class
}

/// Results that differ only in timestamps, from a statement that casts to TIMESTAMPTZ: the session time zone.
fn zoned_cast(sql: &str, expected: &[String], actual: &[String]) -> bool {
    let upper = sql.to_ascii_uppercase();
    let zoned = upper.contains("TIMESTAMPTZ") || upper.contains("TIMESTAMP WITH TIME ZONE");
    let timestamp =
        |t: &str| t.starts_with(|c: char| c.is_ascii_digit()) && t.contains('T') && t.contains(':');
    zoned
        && expected.len() == actual.len()
        && expected.iter().zip(actual).all(|(e, a)| {
            let (e, a): (Vec<&str>, Vec<&str>) = (
                e.split_whitespace().collect(),
                a.split_whitespace().collect(),
            );
            e.len() == a.len()
                && e.iter()
                    .zip(&a)
                    .all(|(e, a)| e == a || (timestamp(e) && timestamp(a)))
        })
}

/// The names a `CREATE … TABLE|VIEW|FUNCTION` or `DROP TABLE|VIEW|FUNCTION` statement is about, lower-cased as
/// SQL folds them (`catalog.schema.t` as `t`, which is how later statements may name it too).
fn object_names(sql: &str) -> Vec<String> {
    let words: Vec<&str> = sql.split_whitespace().collect();
    let first = words.first().map(|w| w.to_ascii_lowercase());
    if !matches!(first.as_deref(), Some("create" | "drop")) {
        return vec![];
    }
    let Some(at) = words.iter().position(|w| {
        ["table", "view", "function"]
            .iter()
            .any(|k| w.eq_ignore_ascii_case(k))
    }) else {
        return vec![];
    };
    let mut rest: Vec<&str> = words[at + 1..].to_vec();
    if rest.first().is_some_and(|w| w.eq_ignore_ascii_case("if")) {
        let skip = if rest.get(1).is_some_and(|w| w.eq_ignore_ascii_case("not")) {
            3
        } else {
            2
        };
        rest.drain(..skip.min(rest.len()));
    }
    // `DROP VIEW a, b` names several.
    let list = rest.join(" ");
    let list = list.split(['(', ';']).next().unwrap_or_default();
    let parts: Vec<&str> = if first.as_deref() == Some("drop") {
        list.split(',').collect()
    } else {
        list.split_whitespace().take(1).collect()
    };
    parts
        .into_iter()
        .filter_map(|n| {
            let n = n.trim();
            let n = match n.strip_prefix('"') {
                Some(quoted) => quoted.trim_end_matches('"'),
                None => n.rsplit('.').next()?,
            };
            (!n.is_empty()).then(|| n.to_lowercase())
        })
        .collect()
}

fn mentions(sql: &str, name: &str) -> bool {
    let sql = sql.to_lowercase();
    if name.chars().all(|c| c.is_alphanumeric() || c == '_') {
        sql.split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .any(|w| w == name)
    } else {
        sql.contains(name)
    }
}

fn sorted(mut rows: Vec<Vec<String>>, mode: Option<SortMode>) -> Vec<String> {
    match mode {
        Some(SortMode::RowSort) => rows.sort_unstable(),
        Some(SortMode::ValueSort) => {
            rows = rows.into_iter().flatten().map(|v| vec![v]).collect();
            rows.sort_unstable();
        }
        _ => {}
    }
    rows.iter()
        .map(|r| r.join(" ").trim_end().to_string())
        .collect()
}

#[derive(Debug)]
struct CorpusError(String);
impl std::fmt::Display for CorpusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for CorpusError {}

/// How the runner reaches Marrow.
enum Backend {
    /// A Flight SQL client on one plain connection (no login, no cookie: the connection is the session), as ADBC's
    /// Flight SQL driver connects.
    Flight(Box<Client>),
    /// An engine session in-process.
    Session(Session),
}

type Client = FlightSqlServiceClient<Channel>;

/// Marrow speaking the DataFusion engine's dialect of results: rows and column types through the crate's
/// normalization, a statement without rows as `StatementComplete`, errors framed as DataFusion's runner frames them.
struct MarrowDb {
    backend: Backend,
    /// The rows of the last statement that returned rows, kept to class a mismatch (see [`by_result`]).
    last_rows: Arc<Mutex<Option<Output>>>,
}

/// Column types and rows of a result, as the runner compares them.
type Output = (Vec<DFColumnType>, Vec<Vec<String>>);

/// A statement as ADBC runs one: `CommandStatementQuery`, then every endpoint's ticket.
async fn flight_query(
    client: &mut Client,
    sql: &str,
) -> Result<(SchemaRef, Vec<RecordBatch>), FlightError> {
    let info = client.execute(sql.to_string(), None).await?;
    let announced = Arc::new(info.clone().try_decode_schema()?);
    let mut batches = vec![];
    for endpoint in info.endpoint {
        let Some(ticket) = endpoint.ticket else {
            continue;
        };
        let mut stream = client.do_get(ticket).await?;
        while let Some(batch) = stream.try_next().await? {
            batches.push(batch);
        }
    }
    let schema = batches.first().map(|b| b.schema()).unwrap_or(announced);
    Ok((schema, batches))
}

#[async_trait::async_trait]
impl AsyncDB for MarrowDb {
    type Error = CorpusError;
    type ColumnType = DFColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DFColumnType>, CorpusError> {
        *self.last_rows.lock().expect("last rows") = None;
        let framed = |message: &str| CorpusError(format!("DataFusion error: {message}"));
        let (schema, batches) = match &mut self.backend {
            Backend::Session(session) => {
                let fail = |e: marrow_engine::Error| framed(e.message());
                let output = session.execute(sql).await.map_err(fail)?;
                if matches!(output, QueryOutput::Done) {
                    return Ok(DBOutput::StatementComplete(0));
                }
                output.collect().await.map_err(fail)?
            }
            Backend::Flight(client) => flight_query(client, sql).await.map_err(|e| match e {
                FlightError::Tonic(status) => framed(status.message()),
                other => framed(&other.to_string()),
            })?,
        };
        let types = convert_schema_to_types(schema.fields());
        let rows =
            convert_batches(&schema, batches, false).map_err(|e| CorpusError(e.to_string()))?;
        if rows.is_empty() && types.is_empty() {
            return Ok(DBOutput::StatementComplete(0));
        }
        *self.last_rows.lock().expect("last rows") = Some((types.clone(), rows.clone()));
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "DataFusion"
    }

    async fn sleep(dur: Duration) {
        tokio::time::sleep(dur).await;
    }
}

/// Through Flight SQL (the default, `CORPUS_VIA=flight`) or in-process (`CORPUS_VIA=session`).
fn via_flight() -> bool {
    std::env::var("CORPUS_VIA").map_or(true, |v| v != "session")
}

/// Where Cargo unpacked the pinned `datafusion-sqllogictest` crate (asked of `cargo metadata`, so any registry
/// location and any pinned version work).
fn crate_dir() -> PathBuf {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(&manifest_dir)
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");
    let manifest = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .find(|p| p["name"] == "datafusion-sqllogictest")
        .and_then(|p| p["manifest_path"].as_str())
        .expect("datafusion-sqllogictest is a dependency of marrow-tests");
    Path::new(manifest)
        .parent()
        .expect("crate dir")
        .to_path_buf()
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

fn slt_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let p = entry.expect("dir entry").path();
        if p.is_dir() {
            slt_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "slt") {
            out.push(p);
        }
    }
}

fn skipped(conditions: &[sqllogictest::Condition]) -> bool {
    conditions.iter().any(|c| match c {
        sqllogictest::Condition::OnlyIf { label } => !LABELS.contains(&label.as_str()),
        sqllogictest::Condition::SkipIf { label } => LABELS.contains(&label.as_str()),
    })
}

/// One record DataFusion passed and Marrow did not.
struct Miss {
    line: u32,
    sql: String,
    error: String,
    deliberate: Option<&'static str>,
}

#[derive(Default)]
struct FileResult {
    /// Records DataFusion passes.
    reference: usize,
    /// Of those, records Marrow passes.
    agree: usize,
    /// Records DataFusion itself fails here (data the crate does not ship); not counted.
    reference_fails: usize,
    misses: Vec<Miss>,
}

impl FileResult {
    fn unexplained(&self) -> usize {
        self.misses
            .iter()
            .filter(|m| m.deliberate.is_none())
            .count()
    }
}

fn first_line(s: &str, max: usize) -> String {
    let one: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > max {
        format!("{}…", one.chars().take(max).collect::<String>())
    } else {
        one
    }
}

/// Copies what the reference context was given for this file (tables, functions) into Marrow's session, so files
/// that rely on the crate's harness set-up (`map.slt`, `joins.slt` …) start from the same state.
async fn mirror_setup(reference: &SessionContext, marrow: &SessionContext, functions: bool) {
    let have: HashSet<String> = marrow.state().scalar_functions().keys().cloned().collect();
    for (name, f) in reference.state().scalar_functions() {
        if functions && !have.contains(name) {
            marrow.register_udf(f.as_ref().clone());
        }
    }
    let Some(schema) = reference
        .catalog("datafusion")
        .and_then(|c| c.schema("public"))
    else {
        return;
    };
    for name in schema.table_names() {
        if let Ok(Some(table)) = schema.table(&name).await {
            let _ = marrow.register_table(name.as_str(), table);
        }
    }
}

async fn run_file(marrow_root: &Path, path: &Path, relative: &Path) -> Option<FileResult> {
    let test_ctx = TestContext::try_new_for_test_file(relative).await?;
    datafusion_sqllogictest::setup_scratch_dir(relative).expect("scratch dir");
    let stem = relative.file_stem().expect("file stem");
    let scratch = marrow_root.join("test_files/scratch").join(stem);
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).expect("marrow scratch dir");

    let ctx = test_ctx.session_ctx().clone();
    let rel = relative.to_path_buf();
    let mut reference = Runner::new(move || {
        let (ctx, rel) = (ctx.clone(), rel.clone());
        async move { Ok(DataFusion::new(ctx, rel, indicatif::ProgressBar::hidden())) }
    });

    let data = tempfile::tempdir().expect("tempdir");
    let config = Config {
        data_dir: data.path().join("data"),
        import_root: Some(marrow_root.to_path_buf()),
        export_root: Some(marrow_root.to_path_buf()),
        ..Config::default()
    };
    let last_rows = Arc::new(Mutex::new(None));
    let rows_seen = last_rows.clone();
    // Kept until the file is done: the server (and its database) or the database of the in-process session.
    let mut _server = None;
    let mut _db = None;
    let backend = if via_flight() {
        let server = marrow_flight::start(ServeOptions {
            engine: config,
            host: "127.0.0.1".into(),
            port: 0,
            ..Default::default()
        })
        .await
        .expect("Marrow serves");
        // Tables go to the database every session shares; functions would stay in this session, so they are not
        // mirrored here (the files that need them differ through Flight only).
        let setup = server.sessions().create(SessionKind::Cookie);
        mirror_setup(test_ctx.session_ctx(), setup.engine().context(), false).await;
        server.sessions().close(&setup);
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{}", server.local_addr()))
                .expect("endpoint")
                .connect()
                .await
                .expect("connects");
        _server = Some(server);
        Backend::Flight(Box::new(FlightSqlServiceClient::new(channel)))
    } else {
        let db = Database::open(config).await.expect("open Marrow");
        let session = db.session();
        mirror_setup(test_ctx.session_ctx(), session.context(), true).await;
        _db = Some(db);
        Backend::Session(session)
    };
    let mut db = MarrowDb {
        backend,
        last_rows: rows_seen,
    };
    // DataFusion's harness plans with four partitions so that plans are deterministic (through Flight, this is
    // also the first sign that the connection keeps its session).
    db.run("SET datafusion.execution.target_partitions = 4")
        .await
        .expect("SET target_partitions");
    let db = Mutex::new(Some(db));
    let mut marrow = Runner::new(move || {
        let db = db.lock().expect("connection").take();
        async move { db.ok_or_else(|| CorpusError("one connection per file".into())) }
    });
    configure(&mut reference);
    configure(&mut marrow);

    let records = sqllogictest::parse_file::<DFColumnType>(path).expect("the corpus parses");
    let mut result = FileResult::default();
    let mut sort_mode = None;
    // Tables whose creation Marrow refused on purpose: later records that use them class as [`CASCADE`].
    let mut refused: Vec<String> = vec![];
    for record in records {
        if let Record::Halt { .. } = record {
            break;
        }
        if let Record::Control(Control::SortMode(mode)) = &record {
            sort_mode = Some(*mode);
        }
        let (counted, line, sql) = match &record {
            Record::Statement {
                conditions,
                loc,
                sql,
                ..
            }
            | Record::Query {
                conditions,
                loc,
                sql,
                ..
            } => (!skipped(conditions), loc.line(), sql.clone()),
            _ => (false, 0, String::new()),
        };
        let expected = match &record {
            Record::Query {
                expected:
                    QueryExpect::Results {
                        results,
                        sort_mode: own,
                        types,
                        ..
                    },
                ..
            } => Some((
                types.clone(),
                results.iter().map(value_normalizer).collect::<Vec<_>>(),
                own.or(sort_mode),
            )),
            _ => None,
        };
        let reference_ok = run_one(&mut reference, record.clone()).await.is_ok();
        let marrow_outcome = run_one(&mut marrow, record).await;
        if !counted {
            continue;
        }
        if !reference_ok {
            result.reference_fails += 1;
            continue;
        }
        result.reference += 1;
        let Err(error) = marrow_outcome else {
            result.agree += 1;
            continue;
        };
        let mut class = by_error(&relative.to_string_lossy(), &sql, &error);
        if class.is_none() {
            if let (Some((types, expected, mode)), Some((actual_types, rows))) =
                (expected, last_rows.lock().expect("last rows").clone())
            {
                let actual = sorted(rows, mode);
                class = if error.starts_with("query columns mismatch") {
                    // Types that differ only by hydration, and values that agree.
                    let same = actual == expected || by_result(&expected, &actual).is_some();
                    (hydrated(&types, &actual_types) && same).then_some(&WIRE_TYPES)
                } else if zoned_cast(&sql, &expected, &actual) {
                    Some(&TIME_ZONE)
                } else {
                    by_result(&expected, &actual)
                };
            }
        }
        let listing = [
            "INFORMATION_SCHEMA.TABLES",
            "SHOW TABLES",
            "SHOW ALL",
            "DF_SETTINGS",
        ];
        if class.is_none() && error.starts_with("query result mismatch") {
            let upper = sql.to_ascii_uppercase();
            if listing.iter().any(|l| upper.contains(l)) {
                class = Some(&INFORMATION_SCHEMA);
            }
        }
        if class.is_none() && refused.iter().any(|t| mentions(&sql, t)) {
            class = Some(&CASCADE);
        }
        if class.is_some_and(|c| !std::ptr::eq(c, &EXPLAIN)) {
            refused.extend(object_names(&sql));
        }
        result.misses.push(Miss {
            line,
            deliberate: class.map(|d| d.name),
            sql,
            error,
        });
    }
    drop(marrow);
    Some(result)
}

/// The runner settings both engines share (DataFusion's runner's own).
fn configure<D, M>(runner: &mut Runner<D, M>)
where
    D: AsyncDB<ColumnType = DFColumnType>,
    M: sqllogictest::MakeConnection<Conn = D>,
{
    runner.add_label(LABELS[0]);
    runner.with_column_validator(strict_column_validator);
    runner.with_normalizer(value_normalizer);
    runner.with_validator(df_value_validator);
}

async fn run_one<D, M>(
    runner: &mut Runner<D, M>,
    record: Record<DFColumnType>,
) -> Result<(), String>
where
    D: AsyncDB<ColumnType = DFColumnType>,
    M: sqllogictest::MakeConnection<Conn = D>,
{
    match tokio::time::timeout(RECORD_TIMEOUT, runner.run_async(record)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no result within {RECORD_TIMEOUT:?}")),
    }
}

/// Per file: the disagreements no deliberate class explains, as last recorded.
fn read_baseline(path: &Path) -> BTreeMap<String, usize> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return BTreeMap::new();
    };
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let mut parts = l.split('\t');
            let file = parts.next()?.to_string();
            let unexplained = parts.next()?.parse().ok()?;
            Some((file, unexplained))
        })
        .collect()
}

fn percent(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        100.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datafusion_corpus() {
    let crate_dir = crate_dir();
    let manifest_dir = PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
    );
    // One baseline, written by the Flight run (what CI runs); in-process runs are compared with it too.
    let baseline_path = manifest_dir.join("corpus/baseline.tsv");
    let filter = std::env::var("CORPUS_FILTER").ok();

    // Each engine gets its own copy of the files the corpus reads and writes (`data/`, `test_files/`): DataFusion
    // resolves them against the working directory, Marrow against its import/export root.
    let work = tempfile::tempdir().expect("tempdir");
    let (df_root, marrow_root) = (work.path().join("datafusion"), work.path().join("marrow"));
    for root in [&df_root, &marrow_root] {
        copy_tree(&crate_dir.join("data"), &root.join("data"));
        copy_tree(&crate_dir.join("test_files"), &root.join("test_files"));
    }
    std::env::set_current_dir(&df_root).expect("chdir");

    let mut files = vec![];
    slt_files(&df_root.join("test_files"), &mut files);
    files.sort();
    let mut results: BTreeMap<String, FileResult> = BTreeMap::new();
    let mut stderr = std::io::stderr();
    for path in files {
        let relative = path
            .strip_prefix(df_root.join("test_files"))
            .expect("under test_files")
            .to_path_buf();
        let name = relative.to_string_lossy().to_string();
        if EXCLUDED_DIRS.iter().any(|(d, _)| relative.starts_with(d)) {
            continue;
        }
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        if let Some(r) = run_file(&marrow_root, &path, &relative).await {
            let _ = writeln!(
                stderr,
                "corpus: {name}: {}/{} ({:.1} %)",
                r.agree,
                r.reference,
                percent(r.agree, r.reference)
            );
            results.insert(name, r);
        }
    }

    let summary = Summary::of(&results);
    let _ = writeln!(stderr, "{}", summary.line());

    if let Ok(report) = std::env::var("CORPUS_REPORT") {
        std::fs::write(&report, report_markdown(&summary, &results)).expect("write report");
    }
    if std::env::var_os("CORPUS_UPDATE").is_some() {
        let mut text = String::from(
            "# file, then its disagreements with DataFusion that no deliberate class explains. A run fails when a \
             file has more.\n# Written by: CORPUS_UPDATE=1 cargo test -p marrow-tests --test corpus\n",
        );
        for (name, r) in &results {
            text.push_str(&format!("{name}\t{}\n", r.unexplained()));
        }
        std::fs::write(&baseline_path, text).expect("write baseline");
        return;
    }
    // Unexplained disagreements, not agreements, are compared: a record DataFusion itself fails on some machine
    // leaves both counts alike.
    let baseline = read_baseline(&baseline_path);
    let regressions: Vec<String> = results
        .iter()
        .filter_map(|(name, r)| {
            let before = baseline.get(name).copied().unwrap_or(0);
            (r.unexplained() > before).then(|| {
                let misses: Vec<String> = r
                    .misses
                    .iter()
                    .filter(|m| m.deliberate.is_none())
                    .map(|m| {
                        format!(
                            "  line {}: {}\n    {}",
                            m.line,
                            first_line(&m.sql, 120),
                            first_line(&m.error, 300)
                        )
                    })
                    .collect();
                format!(
                    "{name}: {} unexplained disagreements, {before} before\n{}",
                    r.unexplained(),
                    misses.join("\n")
                )
            })
        })
        .collect();
    assert!(
        regressions.is_empty(),
        "new disagreements with DataFusion in {} file(s) (a deliberate one gets a class in tests/corpus/main.rs; an \
         improvement is recorded with CORPUS_UPDATE=1):\n{}",
        regressions.len(),
        regressions.join("\n")
    );
    if filter.is_none() {
        assert!(
            summary.explained_percent() >= 98.0,
            "{}: below the 98 % target",
            summary.line()
        );
    }
}

/// Totals over the files run.
struct Summary {
    files: usize,
    reference: usize,
    agree: usize,
    deliberate: usize,
}

impl Summary {
    fn of(results: &BTreeMap<String, FileResult>) -> Self {
        Self {
            files: results.len(),
            reference: results.values().map(|r| r.reference).sum(),
            agree: results.values().map(|r| r.agree).sum(),
            deliberate: results
                .values()
                .map(|r| r.misses.len() - r.unexplained())
                .sum(),
        }
    }

    fn explained_percent(&self) -> f64 {
        percent(self.agree + self.deliberate, self.reference)
    }

    fn line(&self) -> String {
        format!(
            "corpus: {} files, {} records DataFusion passes: Marrow agrees on {} ({:.2} %), {} more are deliberate \
             differences ({:.2} % agree or differ on purpose), {} unexplained",
            self.files,
            self.reference,
            self.agree,
            percent(self.agree, self.reference),
            self.deliberate,
            self.explained_percent(),
            self.reference - self.agree - self.deliberate
        )
    }
}

fn report_markdown(summary: &Summary, results: &BTreeMap<String, FileResult>) -> String {
    let mut out = format!(
        "# SQL conformance: DataFusion's sqllogictest corpus\n\n\
         Written by `CORPUS_REPORT=$PWD/docs/conformance.md cargo test -p marrow-tests --test corpus` \
         (tests/corpus/main.rs): every `.slt` file of the `datafusion-sqllogictest` crate that Cargo.lock pins, \
         replayed record by record against DataFusion in-process and against Marrow {}. A record counts when \
         DataFusion passes it; Marrow agrees when it passes it too.\n\n**{}**\n\n## Deliberate differences\n\n\
         | class | records | why |\n|---|---|---|\n",
        if via_flight() {
            "through Flight SQL (a server on a fresh data directory per file, one plain connection: no login, no \
             cookie, so the connection is the session, as with ADBC's Flight SQL driver)"
        } else {
            "in-process (an engine session, `CORPUS_VIA=session`)"
        },
        summary.line()
    );
    for d in DELIBERATE {
        let n = results
            .values()
            .flat_map(|r| &r.misses)
            .filter(|m| m.deliberate == Some(d.name))
            .count();
        out.push_str(&format!("| {} | {n} | {} |\n", d.name, d.reason));
    }
    out.push_str("\nNot run:\n\n");
    for (dir, why) in EXCLUDED_DIRS {
        out.push_str(&format!("- `{dir}/`: {why}\n"));
    }
    out.push_str(
        "\n## Per file\n\n| file | DataFusion passes | Marrow agrees | % | deliberate | unexplained |\n\
         |---|---|---|---|---|---|\n",
    );
    for (name, r) in results {
        out.push_str(&format!(
            "| {name} | {} | {} | {:.1} | {} | {} |\n",
            r.reference,
            r.agree,
            percent(r.agree, r.reference),
            r.misses.len() - r.unexplained(),
            r.unexplained()
        ));
    }
    out.push_str("\n## Unexplained disagreements\n");
    for (name, r) in results {
        for m in r.misses.iter().filter(|m| m.deliberate.is_none()) {
            out.push_str(&format!(
                "\n- `{name}:{}` `{}`\n  {}\n",
                m.line,
                first_line(&m.sql, 160),
                first_line(&m.error, 400)
            ));
        }
    }
    out.push_str("\n## Deliberate differences, record by record\n");
    for d in DELIBERATE {
        out.push_str(&format!("\n### {}\n\n", d.name));
        for (name, r) in results {
            for m in r.misses.iter().filter(|m| m.deliberate == Some(d.name)) {
                out.push_str(&format!(
                    "- `{name}:{}` `{}`\n",
                    m.line,
                    first_line(&m.sql, 100)
                ));
            }
        }
    }
    out
}
