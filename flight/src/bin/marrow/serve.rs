//! `marrow serve`: the Flight SQL server.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use marrow_engine::{Config, Upkeep};
use marrow_flight::server::ServeOptions;

use crate::args::{ModelArgs, PasswordArgs};

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Data directory: one `<table>.lance` dataset per table.
    #[arg(long, env = "MARROW_DATA_DIR", default_value = "./marrow-data")]
    data_dir: PathBuf,
    /// Address to bind.
    #[arg(long, env = "MARROW_HOST", default_value = "127.0.0.1")]
    host: String,
    /// Port to bind (0 picks a free port; the `listening on grpc://…` line says which).
    #[arg(long, env = "MARROW_PORT", default_value_t = 50051)]
    port: u16,
    /// User name clients log in with (Basic auth in the Flight handshake); needs a password.
    #[arg(long, env = "MARROW_USER", requires = "secret")]
    user: Option<String>,
    #[command(flatten)]
    pub password: PasswordArgs,
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
    /// Memory for decoded vector and binary columns that scans (exact search, distance functions, quantization)
    /// read from instead of files, e.g. 512MiB or 4GiB; 0 turns it off.
    #[arg(long, env = "MARROW_HOT_TIER", default_value = "1GiB", value_parser = parse_size)]
    hot_tier: usize,
    /// Seconds between background upkeep passes, which compact tables fragmented by small writes and fold new rows
    /// into their indexes (0 turns it off; `CALL upkeep()` runs a pass on demand).
    #[arg(
        long,
        env = "MARROW_UPKEEP_INTERVAL",
        default_value_t = 10,
        value_name = "SECONDS"
    )]
    upkeep_interval: u64,
    /// Compact a table once this many of its fragments are small or mostly deleted.
    #[arg(long, default_value_t = 8, value_name = "N", value_parser = clap::value_parser!(u64).range(2..))]
    compact_min_fragments: u64,
    /// Fold new rows into an index once this many (and a tenth of the rows it covers) are not in it.
    #[arg(long, default_value_t = 10_000, value_name = "ROWS")]
    index_min_rows: u64,
    /// Allow binding a non-loopback address without authentication.
    #[arg(long)]
    allow_insecure_remote: bool,
    #[command(flatten)]
    models: ModelArgs,
}

impl ServeArgs {
    /// The server's options; reads the password file, if any.
    fn options(self) -> Result<ServeOptions> {
        let password = self.password.resolve()?;
        Ok(ServeOptions {
            engine: Config {
                import_root: self.import_root,
                export_root: self.export_root,
                memory_limit: self.memory_limit,
                hot_tier: self.hot_tier,
                upkeep: (self.upkeep_interval > 0).then(|| Upkeep {
                    interval: Duration::from_secs(self.upkeep_interval),
                    min_fragments: self.compact_min_fragments as usize,
                    index_min_rows: self.index_min_rows,
                }),
                ..self.models.config(self.data_dir)
            },
            host: self.host,
            port: self.port,
            user: self.user,
            password,
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            allow_insecure_remote: self.allow_insecure_remote,
            ..Default::default()
        })
    }
}

/// Serve until Ctrl-C.
pub async fn run(args: ServeArgs) -> Result<()> {
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    marrow_flight::server::serve(args.options()?, shutdown).await?;
    Ok(())
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
