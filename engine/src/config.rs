//! How a database is opened: its directory, the file-access fences, limits and models.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// The one catalog and schema every table lives in.
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
    /// Background compaction and index upkeep for every table (see [`crate::upkeep`]); `None` runs none (`CALL
    /// upkeep()` still does a pass on demand, with the default policy).
    pub upkeep: Option<crate::upkeep::Upkeep>,
    /// Bytes of decoded vector and binary columns kept in memory for scans (see [`crate::catalog::hot`]); 0: none.
    pub hot_tier: usize,
}

impl Config {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            ..Default::default()
        }
    }
}
