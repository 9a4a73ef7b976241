//! The one schema DataFusion sees: every `<name>.lance` directory in the data directory is a table, opened at its
//! latest commit on each lookup, plus persisted views and session-lifetime external tables.

pub mod builtin;
pub mod hot;
pub mod versions;
pub mod views;
pub mod write;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, Session as CatalogSession, TableProvider};
use datafusion::common::tree_node::TreeNode;
use datafusion::common::{Constraint, Constraints, DFSchema};
use datafusion::datasource::{TableType, ViewTable};
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::Statement;
use lance::datafusion::LanceTableProvider;
use lance::dataset::builder::DatasetBuilder;
use lance::Dataset;

use datafusion::execution::SendableRecordBatchStream;
use lance::dataset::{WriteMode, WriteParams};

use crate::error::{Error, Result};

/// Schema metadata keys under which Marrow keeps table properties inside the Lance schema, so a table carries its
/// own constraints and defaults wherever it is opened.
pub const META_PRIMARY_KEY: &str = "marrow.primary_key";
pub const META_DEFAULTS: &str = "marrow.defaults";
/// `{"<vector column>": "<text column>"}`: rows written without the vector get `embed(<text column>)`, and an UPDATE
/// that changes the text recomputes it. On for `memories`.
pub const META_EMBED: &str = "marrow.embed";
/// `"true"`: the table's vector columns may hold NaN and infinite elements (`CREATE TABLE … WITH
/// (allow_non_finite = true)`). Off by default: such an element makes every distance to its row NaN.
pub const META_ALLOW_NON_FINITE: &str = "marrow.allow_non_finite";

const VIEWS_FILE: &str = "_marrow_views.json";

/// Refuse, before anything is written, a column whose type Lance cannot store (an interval with nanoseconds, a
/// fixed-size list of anything but fixed-width values …): NOT_SUPPORTED naming the column, rather than a storage
/// error from the middle of the write.
pub fn validate_storable(schema: &Schema) -> Result<()> {
    fn fixed_width(t: &DataType) -> bool {
        t.is_primitive() || matches!(t, DataType::Boolean | DataType::FixedSizeBinary(_))
    }
    fn check(name: &str, t: &DataType) -> std::result::Result<(), String> {
        match t {
            DataType::FixedSizeList(child, _) if !fixed_width(child.data_type()) => Err(format!(
                "column '{name}' has type {t}: Marrow's storage (Lance) keeps fixed-size lists of fixed-width values \
                 only; cast it to a list (arrow_cast(…, 'List({})'))",
                child.data_type()
            )),
            DataType::List(child) | DataType::LargeList(child) | DataType::FixedSizeList(child, _) => {
                check(name, child.data_type())
            }
            DataType::Struct(fields) => fields
                .iter()
                .try_for_each(|f| check(&format!("{name}.{}", f.name()), f.data_type())),
            _ => Ok(()),
        }
    }
    for f in schema.fields() {
        check(f.name(), f.data_type()).map_err(Error::unsupported)?;
    }
    lance::datatypes::Schema::try_from(schema).map_err(|e| {
        Error::unsupported(format!(
            "a column type Marrow's storage (Lance) cannot hold: {}",
            crate::error::without_locations(&e.to_string())
        ))
    })?;
    Ok(())
}

/// Check Marrow's table properties in a new table's schema metadata (a client may send any through ingest): every
/// `marrow.*` key known and readable, and naming columns the table has. A table is never created with a property
/// that would make its later writes fail.
pub fn validate_metadata(schema: &Schema) -> Result<()> {
    let bad = |key: &str, why: String| Error::invalid(format!("table property {key}: {why}"));
    let column = |key: &str, c: &str| -> Result<&Field> {
        schema.field_with_name(c).map_err(|_| {
            bad(
                key,
                format!("names column '{c}', which the table does not have"),
            )
        })
    };
    for (key, value) in schema.metadata() {
        match key.as_str() {
            META_PRIMARY_KEY => {
                for c in value.split(',').filter(|c| !c.is_empty()) {
                    column(key, c)?;
                }
            }
            META_DEFAULTS => {
                let defaults: BTreeMap<String, String> =
                    serde_json::from_str(value).map_err(|e| {
                        bad(
                            key,
                            format!("not a JSON object of column → SQL expression: {e}"),
                        )
                    })?;
                for (c, sql) in &defaults {
                    column(key, c)?;
                    crate::sql::parse(&format!("SELECT {sql}")).map_err(|e| {
                        bad(
                            key,
                            format!("the default of '{c}' is not an expression: {}", e.message()),
                        )
                    })?;
                }
            }
            META_EMBED => {
                let pairs: BTreeMap<String, String> = serde_json::from_str(value).map_err(|e| {
                    bad(
                        key,
                        format!("not a JSON object of vector column → text column: {e}"),
                    )
                })?;
                for (vector, text) in &pairs {
                    let v = column(key, vector)?;
                    let t = column(key, text)?;
                    let is_vector = matches!(v.data_type(), DataType::FixedSizeList(f, _) if f.data_type().is_floating());
                    if !is_vector
                        || !matches!(
                            t.data_type(),
                            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                        )
                    {
                        return Err(bad(
                            key,
                            format!(
                                "'{vector}' must be a FLOAT[n] column and '{text}' a text column"
                            ),
                        ));
                    }
                }
            }
            META_ALLOW_NON_FINITE if value != "true" && value != "false" => {
                return Err(bad(key, format!("must be true or false, got '{value}'")));
            }
            META_ALLOW_NON_FINITE => {}
            other if other.starts_with("marrow.") => {
                return Err(bad(
                    other,
                    format!(
                    "unknown; Marrow reads {META_PRIMARY_KEY}, {META_DEFAULTS}, {META_EMBED} and \
                     {META_ALLOW_NON_FINITE}"
                ),
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Check a table name before it becomes a directory name.
pub fn validate_table_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && !name.starts_with("__marrow");
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid table name '{name}': use letters, digits and underscores, not starting with a digit"
        )))
    }
}

/// Types as Lance stores them: view types become their plain equivalents, so a schema reads back unchanged.
pub fn storage_type(dt: &DataType) -> DataType {
    match dt {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::List(f) => DataType::List(Arc::new(storage_field(f))),
        DataType::LargeList(f) => DataType::LargeList(Arc::new(storage_field(f))),
        DataType::ListView(f) => DataType::List(Arc::new(storage_field(f))),
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(Arc::new(storage_field(f)), *n),
        DataType::Struct(fields) => {
            DataType::Struct(fields.iter().map(|f| Arc::new(storage_field(f))).collect())
        }
        other => other.clone(),
    }
}

pub fn storage_field(f: &Field) -> Field {
    f.clone().with_data_type(storage_type(f.data_type()))
}

pub fn storage_schema(schema: &Schema) -> Schema {
    Schema::new_with_metadata(
        schema
            .fields()
            .iter()
            .map(|f| storage_field(f))
            .collect::<Vec<_>>(),
        schema.metadata().clone(),
    )
}

/// Builds a SessionState configured like every Marrow session (functions, options), used to plan views and parse
/// column defaults.
pub type StateFactory = Box<dyn Fn() -> SessionState + Send + Sync>;

pub struct MarrowSchema {
    data_dir: PathBuf,
    lance_session: Arc<lance::session::Session>,
    views: RwLock<BTreeMap<String, String>>,
    external: RwLock<HashMap<String, Arc<dyn TableProvider>>>,
    schemas: RwLock<HashMap<String, SchemaRef>>,
    state_factory: OnceLock<StateFactory>,
    /// Table versions a statement pinned (`t VERSION AS OF n`), under names no table can have.
    pinned: RwLock<HashMap<String, Arc<dyn TableProvider>>>,
    /// Every dataset handle given out, per table: the versions queries in this process may still be reading.
    readers: Mutex<HashMap<String, Vec<Weak<Dataset>>>>,
    hot: OnceLock<Arc<hot::HotTier>>,
    /// The latest handle of each table, reused while no later version exists.
    handles: Mutex<HashMap<String, Arc<Dataset>>>,
    /// Column defaults planned once per definition (the schema metadata's JSON): planning them needs a session state.
    defaults: Mutex<HashMap<String, Defaults>>,
}

impl std::fmt::Debug for MarrowSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MarrowSchema")
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

impl MarrowSchema {
    /// Write a new dataset (or a new version replacing an existing one) in one commit.
    pub async fn create_lance_table(
        &self,
        name: &str,
        schema: SchemaRef,
        rows: SendableRecordBatchStream,
        replace: bool,
    ) -> Result<()> {
        validate_metadata(&schema)?;
        validate_storable(&schema)?;
        self.forget_handle(name);
        let path = self.table_path(name);
        let exists = self.lance_table_exists(name);
        if !exists && path.exists() {
            // Leftovers of a create that crashed before its first commit: nothing readable is lost.
            std::fs::remove_dir_all(&path)?;
        }
        let params = WriteParams {
            mode: if exists && replace {
                WriteMode::Overwrite
            } else {
                WriteMode::Create
            },
            session: Some(self.lance_session()),
            auto_cleanup: None,
            ..Default::default()
        };
        let rows: SendableRecordBatchStream = Box::pin(
            datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, rows),
        );
        let uri = path.to_string_lossy();
        Box::pin(
            lance::dataset::InsertBuilder::new(uri.as_ref())
                .with_params(&params)
                .execute_stream(rows),
        )
        .await?;
        Ok(())
    }

    pub fn open(data_dir: &Path) -> Result<Self> {
        let views_path = data_dir.join(VIEWS_FILE);
        let views = match std::fs::read(&views_path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::internal(format!("corrupt {}: {e}", views_path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e.into()),
        };
        Ok(Self {
            data_dir: data_dir.to_path_buf(),
            lance_session: Arc::new(lance::session::Session::default()),
            views: RwLock::new(views),
            external: RwLock::new(HashMap::new()),
            schemas: RwLock::new(HashMap::new()),
            state_factory: OnceLock::new(),
            pinned: RwLock::new(HashMap::new()),
            readers: Mutex::new(HashMap::new()),
            hot: OnceLock::new(),
            handles: Mutex::new(HashMap::new()),
            defaults: Mutex::new(HashMap::new()),
        })
    }

    /// Serve scans of heavy columns from a hot tier of `budget` bytes (0: none).
    pub fn set_hot_tier(&self, budget: usize) {
        if budget > 0 {
            let _ = self.hot.set(Arc::new(hot::HotTier::new(budget)));
        }
    }

    pub fn hot_tier(&self) -> Option<&Arc<hot::HotTier>> {
        self.hot.get()
    }

    pub fn set_state_factory(&self, f: StateFactory) {
        let _ = self.state_factory.set(f);
    }

    fn new_state(&self) -> DFResult<SessionState> {
        self.state_factory.get().map(|f| f()).ok_or_else(|| {
            DataFusionError::Internal("Marrow schema used before its database was set up".into())
        })
    }

    pub fn table_path(&self, name: &str) -> PathBuf {
        self.data_dir.join(format!("{name}.lance"))
    }

    pub fn lance_session(&self) -> Arc<lance::session::Session> {
        self.lance_session.clone()
    }

    /// Whether `name` is an external table (files DataFusion reads, registered by CREATE EXTERNAL TABLE).
    pub fn is_external(&self, name: &str) -> bool {
        self.external
            .read()
            .expect("external lock")
            .contains_key(name)
    }

    /// A table exists once its first commit is written (a crash during CREATE leaves no manifest and no table).
    pub fn lance_table_exists(&self, name: &str) -> bool {
        self.table_path(name).join("_versions").is_dir()
    }

    /// The tables stored as Lance datasets, sorted by name.
    pub fn lance_tables(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.data_dir) else {
            return vec![];
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let file_name = e.file_name().into_string().ok()?;
                let name = file_name.strip_suffix(".lance")?.to_string();
                self.lance_table_exists(&name).then_some(name)
            })
            .collect();
        names.sort();
        names
    }

    /// Open the latest committed version of a table.
    ///
    /// The handle of the last open is reused while it is still the latest: versions are numbered one after another
    /// and a commit creates the next one's manifest atomically, so one `stat` of that file tells (a fresh open
    /// lists every manifest of the table, which for a table of many small commits costs milliseconds).
    pub async fn open_dataset(&self, name: &str) -> Result<Arc<Dataset>> {
        if !self.lance_table_exists(name) {
            return Err(Error::not_found(format!("table '{name}' not found")));
        }
        let cached = self.cached_handle(name);
        if let Some(ds) = cached {
            if !self.has_next_version(name, &ds) {
                return Ok(ds);
            }
        }
        let uri = self.table_path(name);
        let ds = DatasetBuilder::from_uri(uri.to_string_lossy())
            .with_session(self.lance_session.clone())
            .load()
            .await?;
        let ds = self.track(name, ds);
        self.handles
            .lock()
            .expect("handles lock")
            .insert(name.to_string(), ds.clone());
        Ok(ds)
    }

    /// The reusable handle of a table, if one was opened.
    fn cached_handle(&self, name: &str) -> Option<Arc<Dataset>> {
        self.handles
            .lock()
            .expect("handles lock")
            .get(name)
            .cloned()
    }

    /// Whether a version after `ds`'s has been committed (or the table's files are not where they were).
    fn has_next_version(&self, name: &str, ds: &Dataset) -> bool {
        let location = ds.manifest_location();
        let version = location.version;
        let current = location.path.filename().unwrap_or_default();
        let next = if current == format!("{:020}.manifest", u64::MAX - version) {
            format!("{:020}.manifest", u64::MAX - (version + 1))
        } else if current == format!("{version}.manifest") {
            format!("{}.manifest", version + 1)
        } else {
            return true;
        };
        let versions = self.table_path(name).join("_versions");
        !versions.join(current).is_file() || versions.join(next).exists()
    }

    /// Forget the reusable handle of a table whose files are replaced or removed.
    fn forget_handle(&self, name: &str) {
        self.handles.lock().expect("handles lock").remove(name);
    }

    /// Register a handle as a reader of its version until every clone of it (plans, streams) is dropped.
    fn track(&self, name: &str, ds: Dataset) -> Arc<Dataset> {
        let ds = Arc::new(ds);
        self.note_reader(name, &ds);
        ds
    }

    fn note_reader(&self, name: &str, ds: &Arc<Dataset>) {
        let mut readers = self.readers.lock().expect("readers lock");
        let list = readers.entry(name.to_string()).or_default();
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(ds));
    }

    /// Keep the dataset a commit of this process returned as the table's reusable handle, so the next statement
    /// reads the version it already holds instead of loading that version's manifest again.
    pub(crate) fn adopt(&self, name: &str, ds: &Arc<Dataset>) {
        self.note_reader(name, ds);
        let mut handles = self.handles.lock().expect("handles lock");
        if handles
            .get(name)
            .is_some_and(|c| c.version_id() >= ds.version_id())
        {
            return;
        }
        handles.insert(name.to_string(), ds.clone());
    }

    /// A table's column defaults as expressions, planned once per definition.
    fn defaults_of(&self, ds: &Dataset) -> Defaults {
        let Some(json) = ds.schema().metadata.get(META_DEFAULTS) else {
            return Defaults::default();
        };
        if let Some(d) = self.defaults.lock().expect("defaults lock").get(json) {
            return d.clone();
        }
        let Ok(state) = self.new_state() else {
            return Defaults::default();
        };
        let planned = plan_defaults(&ds.schema().metadata, &state);
        self.defaults
            .lock()
            .expect("defaults lock")
            .insert(json.clone(), planned.clone());
        planned
    }

    /// Versions of a table that handles alive in this process are at (cleanup keeps them).
    pub fn reading_versions(&self, name: &str) -> Vec<u64> {
        let cached = self.cached_handle(name);
        let readers = self.readers.lock().expect("readers lock");
        readers
            .get(name)
            .map(|l| {
                l.iter()
                    .filter_map(|w| w.upgrade())
                    // The reusable handle alone (held by the cache, `cached` and this upgrade) reads nothing.
                    .filter(|d| {
                        !(cached.as_ref().is_some_and(|c| Arc::ptr_eq(c, d))
                            && Arc::strong_count(d) <= 3)
                    })
                    .map(|d| d.version_id())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A table as of one of its versions, read-only.
    pub async fn open_table_version(&self, name: &str, version: u64) -> Result<Arc<MarrowTable>> {
        let ds = crate::catalog::versions::checkout(self, name, version).await?;
        let ds = self.track(name, ds);
        let mut table = MarrowTable::new(ds, false, Defaults::default())?;
        table.hot = self.hot.get().cloned();
        Ok(Arc::new(table))
    }

    pub(crate) fn pin(&self, pinned_name: &str, table: Arc<dyn TableProvider>) {
        self.pinned
            .write()
            .expect("pinned lock")
            .insert(pinned_name.to_string(), table);
    }

    pub(crate) fn unpin(&self, pinned_name: &str) {
        self.pinned
            .write()
            .expect("pinned lock")
            .remove(pinned_name);
    }

    pub async fn open_table(&self, name: &str, with_row_addr: bool) -> Result<Arc<MarrowTable>> {
        let ds = self.open_dataset(name).await?;
        let defaults = self.defaults_of(&ds);
        let mut table = MarrowTable::new(ds, with_row_addr, defaults)?;
        table.hot = self.hot.get().cloned();
        if !with_row_addr {
            self.schemas
                .write()
                .expect("schema cache lock")
                .insert(name.to_string(), table.schema());
        }
        Ok(Arc::new(table))
    }

    /// The schema a table had when it was last opened. Table functions are planned synchronously and read it from
    /// here; the session opens the tables they name just before planning.
    pub fn cached_schema(&self, name: &str) -> Option<SchemaRef> {
        self.schemas
            .read()
            .expect("schema cache lock")
            .get(name)
            .cloned()
    }

    fn persist_views(&self, views: &BTreeMap<String, String>) -> DFResult<()> {
        let path = self.data_dir.join(VIEWS_FILE);
        let tmp = self.data_dir.join(format!("{VIEWS_FILE}.tmp"));
        let bytes =
            serde_json::to_vec_pretty(views).map_err(|e| DataFusionError::External(Box::new(e)))?;
        std::fs::write(&tmp, bytes)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    /// Every persisted view: name → definition.
    pub fn view_definitions(&self) -> BTreeMap<String, String> {
        self.views.read().expect("views lock").clone()
    }

    async fn plan_view(&self, name: &str, definition: &str) -> DFResult<Arc<dyn TableProvider>> {
        {
            let views = self.views.read().expect("views lock");
            views::check(name, definition, &views).map_err(|e| {
                Error::invalid(format!("{}; drop or replace the view", e.message()))
            })?;
        }
        let mut statements: std::collections::VecDeque<DFStatement> =
            crate::sql::parse(definition)?.into();
        let query = match statements.pop_front() {
            Some(DFStatement::Statement(stmt)) => match *stmt {
                Statement::CreateView(cv) => cv.query,
                Statement::Query(q) => q,
                _ => {
                    return Err(DataFusionError::Plan(format!(
                        "view '{name}' has an unreadable definition"
                    )))
                }
            },
            _ => {
                return Err(DataFusionError::Plan(format!(
                    "view '{name}' has an unreadable definition"
                )))
            }
        };
        let state = self.new_state()?;
        let plan = state
            .statement_to_plan(DFStatement::Statement(Box::new(Statement::Query(query))))
            .await
            .map_err(|e| DataFusionError::Plan(format!("view '{name}' no longer plans: {e}")))?;
        Ok(Arc::new(ViewTable::new(plan, Some(definition.to_string()))))
    }
}

#[async_trait]
impl SchemaProvider for MarrowSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.lance_tables();
        names.extend(self.views.read().expect("views lock").keys().cloned());
        names.extend(self.external.read().expect("external lock").keys().cloned());
        names
    }

    async fn table(&self, name: &str) -> DFResult<Option<Arc<dyn TableProvider>>> {
        if let Some(t) = self.pinned.read().expect("pinned lock").get(name) {
            return Ok(Some(t.clone()));
        }
        let view = self.views.read().expect("views lock").get(name).cloned();
        if let Some(definition) = view {
            return match self.plan_view(name, &definition).await {
                Ok(view) => Ok(Some(view)),
                Err(e) if !views::strict() => Ok(Some(Arc::new(views::BrokenView::new(&e)))),
                Err(e) => Err(e),
            };
        }
        if let Some(t) = self.external.read().expect("external lock").get(name) {
            return Ok(Some(t.clone()));
        }
        if !self.lance_table_exists(name) {
            return Ok(None);
        }
        Ok(Some(
            self.open_table(name, false).await? as Arc<dyn TableProvider>,
        ))
    }

    /// Without planning: a view that no longer plans is still listed (SHOW TABLES, information_schema.tables,
    /// GetTables), so it can be found and dropped.
    async fn table_type(&self, name: &str) -> DFResult<Option<TableType>> {
        if let Some(t) = self.pinned.read().expect("pinned lock").get(name) {
            return Ok(Some(t.table_type()));
        }
        if self.views.read().expect("views lock").contains_key(name) {
            return Ok(Some(TableType::View));
        }
        if let Some(t) = self.external.read().expect("external lock").get(name) {
            return Ok(Some(t.table_type()));
        }
        Ok(self.lance_table_exists(name).then_some(TableType::Base))
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> DFResult<Option<Arc<dyn TableProvider>>> {
        if self.lance_table_exists(&name) {
            return Err(DataFusionError::Plan(format!(
                "table '{name}' already exists"
            )));
        }
        if let Some(view) = table.downcast_ref::<ViewTable>() {
            let definition = view
                .definition()
                .cloned()
                .ok_or_else(|| DataFusionError::Plan("a view needs its SQL definition".into()))?;
            let mut views = self.views.write().expect("views lock");
            views::check(&name, &definition, &views)?;
            let mut next = views.clone();
            next.insert(name.clone(), definition);
            self.persist_views(&next)?;
            *views = next;
            return Ok(None);
        }
        Ok(self
            .external
            .write()
            .expect("external lock")
            .insert(name, table))
    }

    fn deregister_table(&self, name: &str) -> DFResult<Option<Arc<dyn TableProvider>>> {
        {
            let mut views = self.views.write().expect("views lock");
            if views.contains_key(name) {
                let mut next = views.clone();
                let definition = next.remove(name);
                self.persist_views(&next)?;
                *views = next;
                let plan = datafusion::logical_expr::LogicalPlanBuilder::empty(false).build()?;
                return Ok(Some(Arc::new(ViewTable::new(plan, definition))));
            }
        }
        if let Some(t) = self.external.write().expect("external lock").remove(name) {
            return Ok(Some(t));
        }
        if self.lance_table_exists(name) {
            // Rename first so the table disappears atomically, then delete the files.
            self.forget_handle(name);
            let path = self.table_path(name);
            let trash = self
                .data_dir
                .join(format!(".dropped-{name}-{}.lance", uuid_like()));
            std::fs::rename(&path, &trash)?;
            if let Err(e) = std::fs::remove_dir_all(&trash) {
                tracing::warn!(
                    "could not remove dropped table files {}: {e}",
                    trash.display()
                );
            }
            let plan = datafusion::logical_expr::LogicalPlanBuilder::empty(false).build()?;
            return Ok(Some(Arc::new(ViewTable::new(plan, None))));
        }
        Ok(None)
    }

    fn table_exist(&self, name: &str) -> bool {
        self.pinned.read().expect("pinned lock").contains_key(name)
            || self.views.read().expect("views lock").contains_key(name)
            || self
                .external
                .read()
                .expect("external lock")
                .contains_key(name)
            || self.lance_table_exists(name)
    }
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{nanos:x}")
}

/// A Lance table as DataFusion sees it: Lance's scan with filter/projection pushdown, plus Marrow's constraints
/// and column defaults read from the schema metadata.
#[derive(Debug)]
pub struct MarrowTable {
    inner: LanceTableProvider,
    with_row_addr: bool,
    /// Where scans of heavy columns are answered from memory (tables opened for reading).
    hot: Option<Arc<hot::HotTier>>,
    dataset: Arc<Dataset>,
    primary_key: Vec<String>,
    constraints: Constraints,
    defaults: Defaults,
    default_sql: BTreeMap<String, String>,
}

/// Column defaults as planned expressions, by column.
pub type Defaults = Arc<HashMap<String, Expr>>;

fn default_sql(meta: &HashMap<String, String>) -> BTreeMap<String, String> {
    meta.get(META_DEFAULTS)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default()
}

/// Plan the column defaults a schema's metadata declares (none for a table without them).
fn plan_defaults(meta: &HashMap<String, String>, state: &SessionState) -> Defaults {
    let empty = DFSchema::empty();
    let mut defaults = HashMap::new();
    for (col, sql) in default_sql(meta) {
        match state.create_logical_expr(&sql, &empty) {
            Ok(expr) => {
                defaults.insert(col, expr);
            }
            Err(e) => tracing::warn!("ignoring unreadable default for column {col}: {e}"),
        }
    }
    Arc::new(defaults)
}

impl MarrowTable {
    pub fn new(dataset: Arc<Dataset>, with_row_addr: bool, defaults: Defaults) -> Result<Self> {
        let inner = LanceTableProvider::new(dataset.clone(), false, with_row_addr);
        let meta = &dataset.schema().metadata;
        let primary_key: Vec<String> = meta
            .get(META_PRIMARY_KEY)
            .map(|s| {
                s.split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let schema = inner.schema();
        let pk_indices: Vec<usize> = primary_key
            .iter()
            .filter_map(|c| schema.index_of(c).ok())
            .collect();
        let constraints = if pk_indices.is_empty() {
            Constraints::default()
        } else {
            Constraints::new_unverified(vec![Constraint::PrimaryKey(pk_indices)])
        };
        let default_sql = default_sql(meta);
        Ok(Self {
            inner,
            with_row_addr,
            hot: None,
            dataset,
            primary_key,
            constraints,
            defaults,
            default_sql,
        })
    }

    /// The column defaults, planned.
    pub(crate) fn defaults(&self) -> &Defaults {
        &self.defaults
    }

    /// The Lance table a scan reads: the provider itself, or the table a vector search reads.
    pub(crate) fn of_provider(provider: &dyn TableProvider) -> Option<&MarrowTable> {
        provider
            .downcast_ref::<MarrowTable>()
            .or_else(|| {
                provider
                    .downcast_ref::<crate::vector::VectorSearchTable>()
                    .and_then(|v| v.marrow_table().ok())
            })
            .or_else(|| crate::table_functions::fts_search::ranked_table(provider))
    }

    pub fn dataset(&self) -> &Arc<Dataset> {
        &self.dataset
    }

    pub fn primary_key(&self) -> &[String] {
        &self.primary_key
    }

    pub fn default_sql(&self) -> &BTreeMap<String, String> {
        &self.default_sql
    }

    /// The table's columns as stored (without Lance's system columns).
    pub fn storage_schema(&self) -> SchemaRef {
        Arc::new(Schema::from(self.dataset.schema()))
    }
}

#[async_trait]
impl TableProvider for MarrowTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }
    fn constraints(&self) -> Option<&Constraints> {
        Some(&self.constraints)
    }
    fn table_type(&self) -> TableType {
        TableType::Base
    }
    fn get_column_default(&self, column: &str) -> Option<&Expr> {
        self.defaults.get(column)
    }
    async fn scan(
        &self,
        state: &dyn CatalogSession,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let wanted = || crate::options::MarrowOptions::of(state.config_options()).hot_tier;
        if let (Some(hot), false, true) = (&self.hot, self.with_row_addr, wanted()) {
            let schema = self.inner.schema();
            if let Some(plan) = hot
                .scan(&self.dataset, &schema, state, projection, filters, limit)
                .await
                .map_err(DataFusionError::from)?
            {
                return Ok(plan);
            }
        }
        // Lance leaves `_rowaddr` out of an unprojected scan although its schema lists it (a plan that was not
        // optimized, `datafusion.optimizer.max_passes = 0`, would then index past the batch): ask for every column.
        let all: Vec<usize>;
        let projection = match projection {
            None if self.with_row_addr => {
                all = (0..self.inner.schema().fields().len()).collect();
                Some(&all)
            }
            p => p,
        };
        self.inner.scan(state, projection, filters, limit).await
    }
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DFResult<Vec<TableProviderFilterPushDown>> {
        // A correlated filter (`t3.t2_id = outer.id` inside a LATERAL subquery) must stay a Filter node, where
        // decorrelation finds it; taken into the scan it would reach the physical planner still correlated.
        let correlated = |e: &Expr| {
            e.exists(|e| Ok(matches!(e, Expr::OuterReferenceColumn(..))))
                .unwrap_or(true)
        };
        let mut answers = self.inner.supports_filters_pushdown(filters)?;
        for (answer, filter) in answers.iter_mut().zip(filters) {
            if correlated(filter) {
                *answer = TableProviderFilterPushDown::Unsupported;
            }
        }
        Ok(answers)
    }
}
