//! `marrow sql`: statements against a local data directory, or a server with `--url`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use marrow_engine::{Config, Database};

use crate::args::{ModelArgs, PasswordArgs};
use crate::print::{print_result, Format};
use crate::repl::read_statements;

#[derive(clap::Args)]
pub struct SqlArgs {
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
    #[command(flatten)]
    pub password: PasswordArgs,
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

/// Run the statements; `false` when any failed.
pub async fn run(args: SqlArgs) -> Result<bool> {
    let mut ok = true;
    if let Some(url) = &args.url {
        let password = args.password.resolve()?;
        let mut client =
            marrow_flight::client::Client::connect(url, args.user.as_deref(), password.as_deref())
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
        import_root: args.import_root.clone(),
        export_root: args.export_root.clone(),
        ..args.models.config(args.data_dir.clone())
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
