//! The `marrow` command: run the Flight SQL server, or run SQL against a data directory or a server. One file per
//! subcommand; this one parses the command line and dispatches.

mod args;
mod export;
mod models;
mod print;
mod progress;
mod repl;
mod serve;
mod sql;

use anyhow::Result;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use export::{ExportArgs, EXPORT_EXAMPLES};
use models::{ExportAdapterArgs, ExportWeightsArgs, ImportAdapterArgs, ImportWeightsArgs};
use serve::ServeArgs;
use sql::SqlArgs;

// Planning a statement, decoding a DoPut and writing Lance files make many short-lived allocations across threads;
// glibc's allocator spent a tenth of the server's time on them (and on faulting in pages it had just returned).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EXAMPLES: &str = "\
Examples:
  marrow serve                                   # Flight SQL on grpc://127.0.0.1:50051, data in ./marrow-data
  MARROW_PASSWORD=s3cret marrow serve --port 0 --user admin   # or --password-file PATH
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
    /// warnings, the address the server listens on and the progress of index builds.
    #[arg(
        long,
        global = true,
        env = "MARROW_LOG",
        default_value = "warn,marrow_flight::server=info,marrow::index=info"
    )]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a data directory over Arrow Flight SQL (ADBC, pyarrow, JDBC, any Flight SQL client).
    #[command(
        after_help = "Binding a non-loopback address requires --user and a password (or --allow-insecure-remote). \
Give the password in MARROW_PASSWORD or --password-file: a --password on the command line is visible to other \
users of the machine.\n\
Sessions: each client login (or cookie, without auth) has its own SET options and prepared statements; at most \
4096 are kept, and a server whose sessions were all used in the last 10 minutes refuses new ones \
(RESOURCE_EXHAUSTED). Failed logins make the client's address (and the user) wait, up to a minute."
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

fn main() -> Result<()> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // Every thread that parses, plans or executes SQL gets a stack sized for the deepest statement the engine
    // accepts (`marrow_engine::sql::depth`): the runtime's workers and blocking threads by its builder, threads
    // other libraries start (Lance's decoders) through the standard library's default, and the work `main` itself
    // awaits on a thread of the same size.
    let stack = marrow_engine::sql::depth::STACK_SIZE;
    if std::env::var_os("RUST_MIN_STACK").is_none() {
        // Before any thread exists, so nothing reads the environment concurrently.
        std::env::set_var("RUST_MIN_STACK", stack.to_string());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(stack)
        .build()?;
    std::thread::Builder::new()
        .name("marrow-main".into())
        .stack_size(stack)
        .spawn(move || runtime.block_on(run(cli, matches)))?
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

async fn run(cli: Cli, matches: clap::ArgMatches) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let mut command = cli.command;
    if let Some((_, sub)) = matches.subcommand() {
        match &mut command {
            Command::Serve(a) => a.password.choose_source(sub)?,
            Command::Sql(a) => a.password.choose_source(sub)?,
            _ => {}
        }
    }
    match command {
        Command::Serve(a) => serve::run(a).await,
        Command::Export(a) => export::run(a).await,
        Command::ImportWeights(a) => models::run_import_weights(a).await,
        Command::ExportWeights(a) => models::run_export_weights(a).await,
        Command::ImportAdapter(a) => models::run_import_adapter(a).await,
        Command::ExportAdapter(a) => models::run_export_adapter(a).await,
        Command::Sql(a) => {
            if !sql::run(a).await? {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
