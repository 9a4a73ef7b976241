//! `marrow export`: a table or a query's rows to Parquet, CSV, JSON or Arrow.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::ValueEnum;
use marrow_engine::Database;

use crate::args::ModelArgs;
use crate::progress::with_progress;

pub const EXPORT_EXAMPLES: &str = "\
The file appears only when the export is complete (it is written under a temporary name first). Parquet and Arrow
keep vectors as fixed-size lists; CSV writes them as JSON arrays; JSON is one object per line.

Examples:
  marrow export memories --out memories.parquet
  marrow export \"SELECT id, content, embedding FROM memories WHERE namespace = 'alice'\" --out alice.csv
  marrow export memories --out by_ns --format parquet --partition-by namespace
  marrow export \"SELECT * FROM memories VERSION AS OF 3\" --out memories_v3.arrow";

#[derive(clap::Args)]
pub struct ExportArgs {
    /// A table name, or a query in quotes.
    source: String,
    /// Output file (or directory, with --partition-by).
    #[arg(long, short = 'o')]
    out: PathBuf,
    /// Output format; by default the --out extension decides (.parquet, .csv, .json/.ndjson, .arrow).
    #[arg(long, value_enum)]
    format: Option<ExportFormat>,
    /// Write a directory with one subdirectory per value of this column (repeatable: nested).
    #[arg(long = "partition-by")]
    partition_by: Vec<String>,
    /// Data directory to read.
    #[arg(long, env = "MARROW_DATA_DIR", default_value = "./marrow-data")]
    data_dir: PathBuf,
    #[command(flatten)]
    models: ModelArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum ExportFormat {
    Parquet,
    Csv,
    Json,
    Arrow,
}

pub async fn run(args: ExportArgs) -> Result<()> {
    let db = Database::open(args.models.config(args.data_dir.clone())).await?;
    let session = db.session();
    let format = args.format.map(|f| match f {
        ExportFormat::Parquet => "PARQUET",
        ExportFormat::Csv => "CSV",
        ExportFormat::Json => "JSON",
        ExportFormat::Arrow => "ARROW",
    });
    // A table's row count is known up front (a bar); a query's is not (a counter).
    let bar = match db.table_row_count(&args.source).await {
        Some(n) => {
            indicatif::ProgressBar::new(n).with_style(indicatif::ProgressStyle::with_template(
                "{spinner} {bar:40} {human_pos}/{human_len} rows ({per_sec}, eta {eta})",
            )?)
        }
        None => indicatif::ProgressBar::new_spinner().with_style(
            indicatif::ProgressStyle::with_template("{spinner} {human_pos} rows ({per_sec})")?,
        ),
    };
    let started = std::time::Instant::now();
    let n = with_progress(bar, |counter| {
        marrow_engine::statements::copy::export_query(
            &session,
            &args.source,
            format,
            &args.out,
            &args.partition_by,
            Some(counter),
        )
    })
    .await?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "exported {n} row{} to {} in {:.2}s",
        if n == 1 { "" } else { "s" },
        args.out.display(),
        started.elapsed().as_secs_f64()
    )?;
    Ok(())
}
