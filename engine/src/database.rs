//! The database: a locked data directory of Lance datasets, and the sessions that query it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, MemoryCatalogProviderList};
use datafusion::execution::context::{SessionConfig, SessionContext, SessionState};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;

use crate::catalog::{MarrowSchema, META_DEFAULTS, META_EMBED, META_PRIMARY_KEY};
use crate::error::{Error, ErrorKind, Result};
use crate::session::Session;

pub const CATALOG: &str = "marrow";
pub const SCHEMA: &str = "public";
/// Dimension of the bundled embedding model (all-MiniLM-L6-v2).
pub const MEMORY_EMBEDDING_DIM: i32 = 384;

/// How a database is opened.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Directory holding one `<table>.lance` dataset per table.
    pub data_dir: PathBuf,
    /// Files under this directory may be read by `CREATE EXTERNAL TABLE`; `None` forbids reading server files.
    pub import_root: Option<PathBuf>,
    /// `COPY … TO` may write under this directory; `None` forbids writing server files.
    pub export_root: Option<PathBuf>,
    /// Memory limit in bytes for each session's queries (sorts and joins spill or fail beyond it).
    pub memory_limit: Option<usize>,
    /// The embedding model (`config.json`, `model.safetensors`, `tokenizer.json`) behind `embed()` and the
    /// `minilm` tokenizer; `None` leaves them unavailable.
    pub model_dir: Option<PathBuf>,
    /// More tokenizers for `tokenize(text, name)`, by name.
    pub tokenizers: BTreeMap<String, PathBuf>,
}

impl Config {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            ..Default::default()
        }
    }
}

pub(crate) struct DbInner {
    pub(crate) config: Config,
    pub(crate) schema: Arc<MarrowSchema>,
    pub(crate) models: marrow_udfs::text::SharedModels,
    /// One writer per table at a time inside this process; other processes are kept out by the directory lock.
    write_locks: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Counts statements that may change what a query plans to (DDL, writes, SET): cached plans made before
    /// a change are not reused after it.
    generation: AtomicU64,
    _lock: File,
}

/// An open data directory. Cheap to clone; the directory lock is released when the last clone is dropped.
#[derive(Clone)]
pub struct Database {
    pub(crate) inner: Arc<DbInner>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("data_dir", &self.inner.config.data_dir)
            .finish()
    }
}

const LOCK_FILE: &str = ".marrow.lock";

fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let mut file = File::options()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            let holder = holder.trim();
            return Err(Error::new(
                ErrorKind::Locked,
                format!(
                    "data directory {} is in use by another Marrow process{}; stop it, or connect to it with --url",
                    dir.display(),
                    if holder.is_empty() { String::new() } else { format!(" ({holder})") }
                ),
            ));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
    }
    file.set_len(0)?;
    writeln!(file, "pid {}", std::process::id())?;
    file.sync_all()?;
    Ok(file)
}

fn canonical_root(root: &Option<PathBuf>, what: &str) -> Result<Option<PathBuf>> {
    match root {
        None => Ok(None),
        Some(p) => {
            std::fs::create_dir_all(p)?;
            p.canonicalize()
                .map(Some)
                .map_err(|e| Error::invalid(format!("{what} {}: {e}", p.display())))
        }
    }
}

impl Database {
    /// Open (creating if needed) a data directory, take its lock and make sure the `memories` table exists.
    pub async fn open(config: Config) -> Result<Self> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            Error::invalid(format!(
                "cannot create data directory {}: {e}",
                config.data_dir.display()
            ))
        })?;
        let data_dir = config.data_dir.canonicalize()?;
        let lock = lock_dir(&data_dir)?;
        let config = Config {
            data_dir: data_dir.clone(),
            import_root: canonical_root(&config.import_root, "import root")?,
            export_root: canonical_root(&config.export_root, "export root")?,
            memory_limit: config.memory_limit,
            model_dir: config.model_dir.clone(),
            tokenizers: config.tokenizers.clone(),
        };
        let models = Arc::new(
            marrow_udfs::text::TextModels::new(config.model_dir.clone(), config.tokenizers.clone())
                .map_err(Error::invalid)?,
        );
        let schema = Arc::new(MarrowSchema::open(&data_dir)?);
        let db = Database {
            inner: Arc::new(DbInner {
                config,
                schema: schema.clone(),
                models,
                write_locks: Mutex::new(BTreeMap::new()),
                generation: AtomicU64::new(0),
                _lock: lock,
            }),
        };
        let weak: Weak<DbInner> = Arc::downgrade(&db.inner);
        schema.set_state_factory(Box::new(move || match weak.upgrade() {
            Some(inner) => Database { inner }.new_state(),
            None => SessionStateBuilder::new().with_default_features().build(),
        }));
        db.ensure_memories().await?;
        Ok(db)
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn data_dir(&self) -> &Path {
        &self.inner.config.data_dir
    }

    pub(crate) fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    pub(crate) fn bump_generation(&self) {
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn schema_provider(&self) -> &Arc<MarrowSchema> {
        &self.inner.schema
    }

    /// A new session: its own `SET` options and prepared state, sharing the tables.
    pub fn session(&self) -> Session {
        Session::new(
            self.clone(),
            SessionContext::new_with_state(self.new_state()),
        )
    }

    pub(crate) fn session_config() -> SessionConfig {
        let mut config = SessionConfig::new()
            .with_default_catalog_and_schema(CATALOG, SCHEMA)
            .with_create_default_catalog_and_schema(false)
            .with_information_schema(true);
        let options = config.options_mut();
        // Lance stores Utf8; planning VARCHAR as Utf8 keeps schemas identical before and after a restart.
        options.sql_parser.map_string_types_to_utf8view = false;
        options.execution.parquet.schema_force_view_types = false;
        // TIMESTAMPTZ is an instant, as in PostgreSQL: without a session zone DataFusion would plan it as a naive
        // timestamp and drop the offset of every value written to it.
        options.execution.time_zone = Some("+00:00".to_string());
        config.with_option_extension(crate::vector::MarrowOptions::default())
    }

    pub(crate) fn new_state(&self) -> SessionState {
        let catalog = MemoryCatalogProvider::new();
        catalog
            .register_schema(SCHEMA, self.inner.schema.clone())
            .expect("memory catalog accepts schemas");
        let list = MemoryCatalogProviderList::new();
        datafusion::catalog::CatalogProviderList::register_catalog(
            &list,
            CATALOG.to_string(),
            Arc::new(catalog),
        );
        let mut runtime = RuntimeEnvBuilder::new();
        if let Some(limit) = self.inner.config.memory_limit {
            runtime = runtime.with_memory_limit(limit, 1.0);
        }
        let runtime = runtime.build_arc().expect("runtime environment");
        let mut state = SessionStateBuilder::new()
            .with_config(Self::session_config())
            .with_runtime_env(runtime)
            .with_default_features()
            .with_catalog_list(Arc::new(list))
            .with_optimizer_rule(Arc::new(crate::vector::VectorTopKRule))
            .build();
        marrow_udfs::register_all(&mut state).expect("Marrow functions register");
        marrow_udfs::register_text(&mut state, self.inner.models.clone())
            .expect("text functions register");
        crate::table_functions::register(&mut state, self.inner.schema.clone());
        state.register_udtf(
            "read_safetensors",
            Arc::new(crate::weights::ReadSafetensors(self.inner.config.clone())),
        );
        state
    }

    /// Tokenizers and the embedding model, shared by every session.
    pub fn models(&self) -> &marrow_udfs::text::SharedModels {
        &self.inner.models
    }

    /// The number of rows in a Marrow table, or None when `name` is not one (a view, a query, a typo).
    pub async fn table_row_count(&self, name: &str) -> Option<u64> {
        let schema = &self.inner.schema;
        if crate::catalog::validate_table_name(name).is_err() || !schema.lance_table_exists(name) {
            return None;
        }
        let ds = schema.open_dataset(name).await.ok()?;
        ds.count_rows(None).await.ok().map(|n| n as u64)
    }

    pub(crate) fn write_lock(&self, table: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.inner
            .write_locks
            .lock()
            .expect("write locks")
            .entry(table.to_string())
            .or_default()
            .clone()
    }

    /// The tables every data directory has: `memories` and `adapters`.
    async fn ensure_memories(&self) -> Result<()> {
        for (name, schema) in [
            ("memories", memories_schema()),
            ("adapters", crate::adapters::adapters_schema()),
        ] {
            if !self.inner.schema.lance_table_exists(name) {
                crate::ddl::create_lance_table(self, name, Arc::new(schema), vec![], false).await?;
            }
        }
        Ok(())
    }
}

/// The `memories` table every data directory starts with (see DESIGN.md's data model).
pub fn memories_schema() -> Schema {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let defaults: BTreeMap<&str, &str> = [
        ("id", "uuid()"),
        ("namespace", "'default'"),
        ("kind", "'note'"),
        ("importance", "0.5"),
        ("created_at", "now()"),
        ("updated_at", "now()"),
        ("access_count", "0"),
        ("metadata", "'{}'"),
    ]
    .into_iter()
    .collect();
    let metadata = [
        (META_PRIMARY_KEY.to_string(), "id".to_string()),
        (
            META_DEFAULTS.to_string(),
            serde_json::to_string(&defaults).expect("defaults serialize"),
        ),
        (
            META_EMBED.to_string(),
            serde_json::to_string(&BTreeMap::from([("embedding", "content")]))
                .expect("embed setting serializes"),
        ),
    ]
    .into_iter()
    .collect();
    Schema::new_with_metadata(
        vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("namespace", DataType::Utf8, false),
            Field::new("kind", DataType::Utf8, false),
            Field::new("content", DataType::Utf8, false),
            Field::new(
                "embedding",
                DataType::FixedSizeList(
                    Arc::new(Field::new("item", DataType::Float32, true)),
                    MEMORY_EMBEDDING_DIM,
                ),
                true,
            ),
            Field::new("importance", DataType::Float32, false),
            Field::new("created_at", ts.clone(), false),
            Field::new("updated_at", ts.clone(), false),
            Field::new("last_accessed_at", ts, true),
            Field::new("access_count", DataType::Int64, false),
            Field::new("metadata", DataType::Utf8, false),
        ],
        metadata,
    )
}
