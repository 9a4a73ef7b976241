//! `marrow import-weights`, `export-weights`, `import-adapter`, `export-adapter`: safetensors models and PEFT
//! adapters in and out of the `tensors` and `adapters` tables.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use marrow_engine::{Config, Database};

use crate::progress::{byte_bar, with_progress};

#[derive(clap::Args)]
pub struct ImportAdapterArgs {
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
pub struct ExportAdapterArgs {
    /// The adapter's id.
    id: String,
    /// The directory to write.
    #[arg(long, short = 'o')]
    out: PathBuf,
    /// Data directory.
    #[arg(long, env = "MARROW_DATA_DIR", default_value = "./marrow-data")]
    data_dir: PathBuf,
}

pub async fn run_import_adapter(args: ImportAdapterArgs) -> Result<()> {
    let db = Database::open(Config::new(&args.data_dir)).await?;
    let session = db.session();
    let started = std::time::Instant::now();
    let done = marrow_engine::models::adapters::import(
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

pub async fn run_export_adapter(args: ExportAdapterArgs) -> Result<()> {
    let db = Database::open(Config::new(&args.data_dir)).await?;
    let session = db.session();
    let bytes = marrow_engine::models::adapters::export(&session, &args.id, &args.out).await?;
    writeln!(
        std::io::stdout().lock(),
        "exported adapter {} ({bytes} bytes of tensors) to {}",
        args.id,
        args.out.display()
    )?;
    Ok(())
}

#[derive(clap::Args)]
pub struct ImportWeightsArgs {
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
pub struct ExportWeightsArgs {
    /// The model's name in Marrow.
    model: String,
    /// The safetensors file to write.
    #[arg(long, short = 'o')]
    out: PathBuf,
    /// Data directory.
    #[arg(long, env = "MARROW_DATA_DIR", default_value = "./marrow-data")]
    data_dir: PathBuf,
}

pub async fn run_import_weights(args: ImportWeightsArgs) -> Result<()> {
    let db = Database::open(Config::new(&args.data_dir)).await?;
    let session = db.session();
    let files = marrow_engine::models::model_files(None, &args.path)?;
    let total: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let bar = byte_bar(total)?;
    let (session, args) = (&session, &args);
    let started = std::time::Instant::now();
    let s = with_progress(bar, |counter| async move {
        marrow_engine::models::weights::import(session, &args.path, &args.model, Some(&counter))
            .await
    })
    .await?;
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

pub async fn run_export_weights(args: ExportWeightsArgs) -> Result<()> {
    let db = Database::open(Config::new(&args.data_dir)).await?;
    let session = db.session();
    let bar =
        indicatif::ProgressBar::new_spinner().with_style(indicatif::ProgressStyle::with_template(
            "{spinner} {binary_bytes} ({binary_bytes_per_sec})",
        )?);
    let (session, args) = (&session, &args);
    let started = std::time::Instant::now();
    let bytes = with_progress(bar, |counter| async move {
        marrow_engine::models::weights::export(session, &args.model, &args.out, Some(&counter))
            .await
    })
    .await?;
    writeln!(
        std::io::stdout().lock(),
        "exported model {} ({bytes} bytes of tensors) to {} in {:.2}s",
        args.model,
        args.out.display(),
        started.elapsed().as_secs_f64()
    )?;
    Ok(())
}
