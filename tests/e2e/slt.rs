//! Runs every `sql/**/*.slt` file against a fresh data directory. Besides SQL, a record may contain the one
//! pseudo-statement `RESTART`, which closes the database and opens it again (persistence tests).

use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use marrow_engine::{Config, Database, Session};
use sqllogictest::{DBOutput, DefaultColumnType};

struct MarrowDb {
    config: Config,
    db: Option<Database>,
    session: Option<Session>,
}

#[derive(Debug)]
struct SltError(String);
impl std::fmt::Display for SltError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for SltError {}

impl MarrowDb {
    async fn open(config: Config) -> Result<Self, SltError> {
        let db = Database::open(config.clone())
            .await
            .map_err(|e| SltError(e.to_string()))?;
        let session = db.session();
        Ok(Self {
            config,
            db: Some(db),
            session: Some(session),
        })
    }
}

fn column_type(dt: &DataType) -> DefaultColumnType {
    match dt {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => DefaultColumnType::Integer,
        DataType::Float16 | DataType::Float32 | DataType::Float64 | DataType::Decimal128(..) => {
            DefaultColumnType::FloatingPoint
        }
        _ => DefaultColumnType::Text,
    }
}

/// Plans name each run's temporary paths and index UUIDs; EXPLAIN tests compare everything else.
fn normalize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some((at, key)) = ["uri=", "uuid="]
        .iter()
        .filter_map(|k| rest.find(k).map(|i| (i, *k)))
        .min()
    {
        out.push_str(&rest[..at + key.len()]);
        rest = &rest[at + key.len()..];
        let end = rest
            .find(|c: char| c == ',' || c.is_whitespace())
            .unwrap_or(rest.len());
        out.push_str(if key == "uri=" { "<path>" } else { "<uuid>" });
        rest = &rest[end..];
    }
    out.push_str(rest);
    out.truncate(out.trim_end().len());
    out
}

/// Multi-line cells (EXPLAIN plans) are compared line by line as one snapshot; everything else as sqllogictest does.
fn validator(
    normalizer: sqllogictest::Normalizer,
    actual: &[Vec<String>],
    expected: &[String],
) -> bool {
    if !actual.iter().flatten().any(|c| c.contains('\n')) {
        return sqllogictest::default_validator(normalizer, actual, expected);
    }
    let snapshot = actual
        .iter()
        .map(|row| row.join(" "))
        .collect::<Vec<_>>()
        .join("\n");
    let actual_lines: Vec<&str> = snapshot.lines().map(str::trim_end).collect();
    let expected_lines: Vec<&str> = expected.iter().map(|l| l.trim_end()).collect();
    actual_lines == expected_lines
}

fn render(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>, SltError> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = vec![];
    for b in batches {
        let formatters: Vec<ArrayFormatter> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<_, _>>()
            .map_err(|e| SltError(e.to_string()))?;
        for r in 0..b.num_rows() {
            rows.push(
                formatters
                    .iter()
                    .map(|f| {
                        let s = normalize(&f.value(r).to_string());
                        if s.is_empty() {
                            "(empty)".to_string()
                        } else {
                            s
                        }
                    })
                    .collect(),
            );
        }
    }
    Ok(rows)
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for MarrowDb {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        if sql.trim() == "RESTART" {
            self.session = None;
            self.db = None;
            *self = MarrowDb::open(self.config.clone()).await?;
            return Ok(DBOutput::StatementComplete(0));
        }
        let session = self.session.as_ref().expect("open session");
        let output = session
            .execute(sql)
            .await
            .map_err(|e| SltError(e.to_string()))?;
        let is_count = matches!(output, marrow_engine::QueryOutput::Count(_));
        let is_done = matches!(output, marrow_engine::QueryOutput::Done);
        let (schema, batches) = output
            .collect()
            .await
            .map_err(|e| SltError(e.to_string()))?;
        if is_done {
            return Ok(DBOutput::StatementComplete(0));
        }
        if is_count {
            let n = marrow_engine::QueryOutput::count_in(&batches);
            return Ok(DBOutput::StatementComplete(n));
        }
        let types = schema
            .fields()
            .iter()
            .map(|f| column_type(f.data_type()))
            .collect();
        Ok(DBOutput::Rows {
            types,
            rows: render(&batches)?,
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "marrow"
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await;
    }
}

fn slt_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("sql/ exists")
        .filter_map(|e| e.ok())
        .collect();
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let p = e.path();
        if p.is_dir() {
            slt_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "slt") {
            out.push(p);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqllogictest_files() {
    // Read at run time: clones share one target directory, so a path baked in at compile time can name another
    // clone's files when cargo reuses the binary.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
    let root = Path::new(&manifest_dir).join("../sql");
    let mut files = vec![];
    slt_files(&root, &mut files);
    assert!(!files.is_empty(), "no .slt files under {}", root.display());
    let filter = std::env::var("SLT_FILTER").ok();
    let complete = std::env::var_os("SLT_COMPLETE").is_some();
    let mut failures = vec![];
    for file in files {
        if let Some(f) = &filter {
            if !file.to_string_lossy().contains(f.as_str()) {
                continue;
            }
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Config {
            data_dir: dir.path().join("data"),
            // One directory for both, so files a test exports can be read back with CREATE EXTERNAL TABLE.
            import_root: Some(dir.path().join("files")),
            export_root: Some(dir.path().join("files")),
            memory_limit: None,
            model_dir: std::env::var_os("MARROW_MODEL_DIR").map(PathBuf::from),
            tokenizers: Default::default(),
            upkeep: None,
            // Small, so that the slt files run exact scans both from memory and past its budget.
            hot_tier: 64 << 20,
        };
        std::fs::create_dir_all(dir.path().join("files")).unwrap();
        std::fs::write(
            dir.path().join("files/people.csv"),
            "name,age\nada,36\nalan,41\n",
        )
        .unwrap();
        let mut runner = sqllogictest::Runner::new(move || {
            let config = config.clone();
            async move { MarrowDb::open(config).await }
        });
        runner.with_column_validator(sqllogictest::default_column_validator);
        runner.with_validator(validator);
        if complete {
            // Rewrites the file's expected results with what the engine returns: review the diff before committing.
            if let Err(e) = runner
                .update_test_file(
                    &file,
                    " ",
                    validator,
                    sqllogictest::default_normalizer,
                    sqllogictest::default_column_validator,
                )
                .await
            {
                failures.push(format!("{}:\n{e}", file.display()));
            }
        } else if let Err(e) = runner.run_file_async(&file).await {
            failures.push(format!("{}:\n{e}", file.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} slt file(s) failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
