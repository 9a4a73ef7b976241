//! The database: a locked data directory of Lance datasets, and the sessions that query it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, MemoryCatalogProviderList};
use datafusion::execution::context::{SessionConfig, SessionState};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;

use crate::catalog::MarrowSchema;
use crate::config::{Config, CATALOG, SCHEMA};
use crate::error::{Error, ErrorKind, Result};
use crate::extension::Extensions;
use crate::options::MarrowOptions;

pub(crate) struct DbInner {
    pub(crate) config: Config,
    pub(crate) schema: Arc<MarrowSchema>,
    pub(crate) models: marrow_udfs::text::SharedModels,
    pub(crate) extensions: Extensions,
    /// One writer per table at a time inside this process; other processes are kept out by the directory lock.
    write_locks: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Appends staged and waiting for their table's next group commit.
    commit_queues: crate::statements::group_commit::CommitQueues,
    /// Counts statements that may change what a query plans to (DDL, SET, procedures, writes that create or replace
    /// a table): cached plans made before a change are not reused after it. Row writes change versions, which the
    /// cached plans check on their own.
    generation: AtomicU64,
    /// Statements being planned (and writes being run) at once, each on a blocking thread: past it they wait,
    /// so a flood of expensive statements queues instead of multiplying threads.
    pub(crate) statement_slots: Arc<tokio::sync::Semaphore>,
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
    /// Open (creating if needed) a data directory with the features `extensions` builds for it, take its lock and
    /// create the built-in tables it lacks. [`Database::open`] opens one with Marrow's own features.
    pub async fn open_with(
        config: Config,
        extensions: impl FnOnce(&Arc<MarrowSchema>, &Config) -> Extensions,
    ) -> Result<Self> {
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
            upkeep: config.upkeep.clone(),
            hot_tier: config.hot_tier,
        };
        let models = Arc::new(
            marrow_udfs::text::TextModels::new(config.model_dir.clone(), config.tokenizers.clone())
                .map_err(Error::invalid)?,
        );
        let schema = Arc::new(MarrowSchema::open(&data_dir)?);
        schema.set_hot_tier(config.hot_tier);
        let extensions = extensions(&schema, &config);
        let db = Database {
            inner: Arc::new(DbInner {
                config,
                schema: schema.clone(),
                models,
                extensions,
                write_locks: Mutex::new(BTreeMap::new()),
                commit_queues: Default::default(),
                generation: AtomicU64::new(0),
                statement_slots: Arc::new(tokio::sync::Semaphore::new(statement_slots())),
                _lock: lock,
            }),
        };
        let weak: Weak<DbInner> = Arc::downgrade(&db.inner);
        schema.set_state_factory(Box::new(move || match weak.upgrade() {
            Some(inner) => Database { inner }.new_state(),
            None => SessionStateBuilder::new().with_default_features().build(),
        }));
        for (name, table) in crate::catalog::builtin::builtin_tables() {
            if !schema.lance_table_exists(name) {
                let table = Arc::new(table);
                let rows = crate::catalog::write::batch_stream(table.clone(), vec![]);
                schema.create_lance_table(name, table, rows, false).await?;
            }
        }
        // Boxed, like the view below: Lance's futures inline would make every opener's too deep to lay out.
        Box::pin(crate::catalog::builtin::add_missing_columns(&schema)).await?;
        crate::statements::index::ensure_memory_text_index(&schema).await?;
        Box::pin(db.ensure_live_memories_view()).await?;
        if let Some(policy) = db.config().upkeep.clone() {
            db.spawn_upkeep(policy);
        }
        Ok(db)
    }

    /// `live_memories`: the memories that have not expired, what agents and their tools should read. Created with
    /// every data directory and again on open if it was dropped (a table of that name is left alone).
    async fn ensure_live_memories_view(&self) -> Result<()> {
        use datafusion::catalog::SchemaProvider;
        if self.inner.schema.table_exist(LIVE_MEMORIES_VIEW) {
            return Ok(());
        }
        self.session()
            .execute(&format!(
                "CREATE VIEW {LIVE_MEMORIES_VIEW} AS SELECT * FROM memories \
                 WHERE expires_at IS NULL OR expires_at > now()"
            ))
            .await?;
        Ok(())
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

    /// The statements, procedures and table functions registered with this database.
    pub fn extensions(&self) -> &Extensions {
        &self.inner.extensions
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
        config.with_option_extension(MarrowOptions::default())
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
        // Listing tables and COPY reach local files only through the fence.
        runtime.register_object_store(
            datafusion::execution::object_store::ObjectStoreUrl::local_filesystem().as_ref(),
            crate::fence::FencedFiles::new(&self.inner.config),
        );
        let mut builder = SessionStateBuilder::new()
            .with_config(Self::session_config())
            .with_runtime_env(runtime)
            .with_default_features()
            .with_catalog_list(Arc::new(list));
        for rule in self.inner.extensions.optimizer_rules() {
            builder = builder.with_optimizer_rule(rule.clone());
        }
        let mut state = builder.build();
        marrow_udfs::register_all(&mut state).expect("Marrow functions register");
        marrow_udfs::register_text(&mut state, self.inner.models.clone())
            .expect("text functions register");
        // json_get*, json_contains, json_length, json_object_keys and `->` / `->>` over JSON text (`metadata`).
        datafusion_functions_json::register_all(&mut state).expect("JSON functions register");
        for f in self.inner.extensions.table_functions() {
            state.register_udtf(f.name, f.function.clone());
        }
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

    pub(crate) fn commit_queues(&self) -> &crate::statements::group_commit::CommitQueues {
        &self.inner.commit_queues
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
}

/// The view of the memories that have not expired.
pub const LIVE_MEMORIES_VIEW: &str = "live_memories";

/// Four statements per core (at least eight) may plan or write at once.
fn statement_slots() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get() * 4)
        .unwrap_or(8)
        .max(8)
}
