//! `marrow serve`: the Flight SQL server.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use marrow_engine::{Config, Upkeep};
use marrow_flight::auth::{Limits, LoginLimits};
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
    /// At most this many established sessions (clients that came back with their token, cookie or connection).
    /// When all were used within --session-evict-after, a newcomer is refused with RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = 4096, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_sessions: u64,
    /// At most this many pending sessions (made by a login or a first call, not yet used again); a new one pushes
    /// out the least recently used pending one, never an established one.
    #[arg(long, default_value_t = 1024, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_pending_sessions: u64,
    /// Drop an established session unused this long, e.g. 12h, 30m, 90s.
    #[arg(long, default_value = "12h", value_name = "DURATION", value_parser = parse_duration)]
    session_idle: Duration,
    /// With --max-sessions established, a newcomer replaces the least recently used session only if that one has
    /// been unused this long.
    #[arg(long, default_value = "10m", value_name = "DURATION", value_parser = parse_duration)]
    session_evict_after: Duration,
    /// Failed logins from one client address before it has to wait (the wait doubles per failure, up to a minute).
    #[arg(long, default_value_t = 5, value_name = "N")]
    login_failures_per_address: u32,
    /// Failed logins for one user name (from any address not trusted for it) before it has to wait.
    #[arg(long, default_value_t = 10, value_name = "N")]
    login_failures_per_user: u32,
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
            sessions: Limits {
                max_sessions: self.max_sessions as usize,
                max_pending: self.max_pending_sessions as usize,
                idle: self.session_idle,
                evict_after: self.session_evict_after,
                ..Limits::default()
            },
            logins: LoginLimits {
                free_failures_per_peer: self.login_failures_per_address,
                free_failures_per_user: self.login_failures_per_user,
                ..LoginLimits::default()
            },
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

/// A value such as `512MiB` or `30m`, trimmed, split into its leading digits and the unit after them.
fn number_and_unit(s: &str) -> (&str, &str, &str) {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    (s, num, unit)
}

/// `90s`, `30m`, `12h`, `2d` (a bare number is seconds).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (s, num, unit) = number_and_unit(s);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration: use e.g. 90s, 30m, 12h or 2d"))?;
    let unit = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => return Err(format!("unknown duration unit '{other}': use s, m, h or d")),
    };
    if n == 0 {
        return Err("a duration must be more than 0".into());
    }
    Ok(Duration::from_secs(n.saturating_mul(unit)))
}

fn parse_size(s: &str) -> Result<usize, String> {
    let (s, num, unit) = number_and_unit(s);
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("5x")
            .unwrap_err()
            .contains("unknown duration unit"));
        assert!(parse_duration("h").is_err());
    }

    #[test]
    fn session_and_login_limits_reach_the_server_options() {
        let cli = Cli::parse_from([
            "marrow",
            "--max-sessions",
            "7",
            "--max-pending-sessions",
            "3",
            "--session-idle",
            "2h",
            "--session-evict-after",
            "90s",
            "--login-failures-per-address",
            "2",
            "--login-failures-per-user",
            "4",
        ]);
        let o = cli.serve.options().unwrap();
        assert_eq!(o.sessions.max_sessions, 7);
        assert_eq!(o.sessions.max_pending, 3);
        assert_eq!(o.sessions.idle, Duration::from_secs(7200));
        assert_eq!(o.sessions.evict_after, Duration::from_secs(90));
        assert_eq!(o.logins.free_failures_per_peer, 2);
        assert_eq!(o.logins.free_failures_per_user, 4);
        let defaults = Cli::parse_from(["marrow"]).serve.options().unwrap();
        assert_eq!(
            defaults.sessions.max_sessions,
            Limits::default().max_sessions
        );
        assert_eq!(defaults.sessions.idle, Limits::default().idle);
    }
}
