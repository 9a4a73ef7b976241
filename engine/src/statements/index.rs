//! Index DDL: `CREATE INDEX … USING <kind> (column) WITH (…)`, `DROP INDEX`, `OPTIMIZE TABLE`, and the index listing
//! behind `marrow_indexes()`. Indexes are Lance indexes inside each table's dataset; their names are unique across
//! the database so that `DROP INDEX name` needs no table.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use arrow::datatypes::DataType;
use datafusion::common::ParamValues;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, CreateIndex, Expr as SqlExpr, IndexType as SqlIndexType, ObjectName,
    ObjectType, Statement, Value,
};
use lance::dataset::Dataset;
use lance::index::vector::VectorIndexParams;
use lance::index::DatasetIndexExt;
use lance_index::optimize::OptimizeOptions;
use lance_index::progress::IndexBuildProgress;
use lance_index::scalar::{InvertedIndexParams, ScalarIndexParams};
use lance_index::vector::hnsw::builder::HnswBuildParams;
use lance_index::vector::ivf::IvfBuildParams;
use lance_index::vector::pq::PQBuildParams;
use lance_index::vector::sq::builder::SQBuildParams;
use lance_index::{IndexParams, IndexType};
use lance_linalg::distance::DistanceType;

use crate::catalog::MarrowSchema;
use crate::error::{Error, ErrorKind, Result};
use crate::extension::{is_sql, misrouted, sql_statement, StatementHandler};
use crate::session::{QueryOutput, Session};
use crate::sql::table_name;

/// The index kinds `CREATE INDEX … USING` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexKind {
    IvfFlat,
    IvfSq,
    IvfPq,
    IvfHnswFlat,
    IvfHnswSq,
    IvfHnswPq,
    BTree,
    Bitmap,
    /// Lance's full-text (inverted, BM25) index over a text column.
    Inverted,
}

impl IndexKind {
    fn parse(name: &str) -> Result<Self> {
        Ok(match name.to_ascii_uppercase().as_str() {
            "IVF_FLAT" => Self::IvfFlat,
            "IVF_SQ" => Self::IvfSq,
            "IVF_PQ" => Self::IvfPq,
            "IVF_HNSW_FLAT" => Self::IvfHnswFlat,
            "IVF_HNSW_SQ" => Self::IvfHnswSq,
            "IVF_HNSW_PQ" => Self::IvfHnswPq,
            "BTREE" => Self::BTree,
            "BITMAP" => Self::Bitmap,
            "INVERTED" | "FTS" => Self::Inverted,
            other => {
                return Err(Error::invalid(format!(
                    "unknown index kind {other}; use one of IVF_PQ, IVF_HNSW_SQ, IVF_HNSW_PQ, IVF_HNSW_FLAT, IVF_SQ, IVF_FLAT \
                     (vector columns), BTREE, BITMAP (filter columns) or INVERTED (full-text search on a text column)"
                )))
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::IvfFlat => "IVF_FLAT",
            Self::IvfSq => "IVF_SQ",
            Self::IvfPq => "IVF_PQ",
            Self::IvfHnswFlat => "IVF_HNSW_FLAT",
            Self::IvfHnswSq => "IVF_HNSW_SQ",
            Self::IvfHnswPq => "IVF_HNSW_PQ",
            Self::BTree => "BTREE",
            Self::Bitmap => "BITMAP",
            Self::Inverted => "INVERTED",
        }
    }

    fn is_vector(self) -> bool {
        !matches!(self, Self::BTree | Self::Bitmap | Self::Inverted)
    }

    /// The WITH options this kind understands: the IVF stage's, then the sub-index's, then the quantizer's.
    fn options(self) -> Vec<&'static str> {
        const IVF: &[&str] = &["metric", "num_partitions", "sample_rate", "max_iterations"];
        const HNSW: &[&str] = &["m", "ef_construction"];
        const SQ: &[&str] = &["num_bits"];
        const PQ: &[&str] = &["num_sub_vectors", "num_bits"];
        const INVERTED: &[&str] = &[
            "base_tokenizer",
            "language",
            "with_position",
            "stem",
            "remove_stop_words",
            "lower_case",
            "ascii_folding",
            "max_token_length",
        ];
        let stages: &[&[&str]] = match self {
            Self::IvfFlat => &[IVF],
            Self::IvfSq => &[IVF, SQ],
            Self::IvfPq => &[IVF, PQ],
            Self::IvfHnswFlat => &[IVF, HNSW],
            Self::IvfHnswSq => &[IVF, HNSW, SQ],
            Self::IvfHnswPq => &[IVF, HNSW, PQ],
            Self::BTree | Self::Bitmap => &[],
            Self::Inverted => &[INVERTED],
        };
        stages.concat()
    }
}

/// Option values from a `WITH (key = value, …)` list.
struct Options {
    kind: IndexKind,
    values: BTreeMap<String, String>,
}

impl Options {
    fn parse(kind: IndexKind, with: &[SqlExpr]) -> Result<Self> {
        let mut values = BTreeMap::new();
        for e in with {
            let SqlExpr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } = e
            else {
                return Err(Error::invalid(format!(
                    "index option {e}: write options as key = value"
                )));
            };
            let key = match left.as_ref() {
                SqlExpr::Identifier(i) => i.value.to_ascii_lowercase(),
                other => {
                    return Err(Error::invalid(format!(
                        "index option name {other} is not a name"
                    )))
                }
            };
            let value = match right.as_ref() {
                SqlExpr::Value(v) => match &v.value {
                    Value::Number(n, _) => n.clone(),
                    Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
                    Value::Boolean(b) => b.to_string(),
                    other => {
                        return Err(Error::invalid(format!(
                            "index option {key}: unsupported value {other}"
                        )))
                    }
                },
                SqlExpr::Identifier(i) => i.value.clone(),
                other => {
                    return Err(Error::invalid(format!(
                        "index option {key}: unsupported value {other}"
                    )))
                }
            };
            let known = kind.options();
            if !known.contains(&key.as_str()) {
                return Err(Error::invalid(if known.is_empty() {
                    format!("{} indexes take no options (got {key})", kind.name())
                } else {
                    format!(
                        "unknown option {key} for a {} index; it takes {}",
                        kind.name(),
                        known.join(", ")
                    )
                }));
            }
            if values.insert(key.clone(), value).is_some() {
                return Err(Error::invalid(format!("index option {key} given twice")));
            }
        }
        Ok(Self { kind, values })
    }

    fn usize(&self, key: &str) -> Result<Option<usize>> {
        self.values
            .get(key)
            .map(|v| {
                v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    Error::invalid(format!(
                        "index option {key} must be a positive integer, got {v}"
                    ))
                })
            })
            .transpose()
    }

    fn bool(&self, key: &str) -> Result<Option<bool>> {
        self.values
            .get(key)
            .map(|v| match v.to_ascii_lowercase().as_str() {
                "true" | "on" | "1" => Ok(true),
                "false" | "off" | "0" => Ok(false),
                _ => Err(Error::invalid(format!(
                    "index option {key} must be true or false, got {v}"
                ))),
            })
            .transpose()
    }

    fn metric(&self) -> Result<DistanceType> {
        match self.values.get("metric") {
            None => Ok(DistanceType::L2),
            Some(m) => DistanceType::try_from(m.as_str()).map_err(|_| {
                Error::invalid(format!(
                    "unknown metric '{m}' for {} index; use 'l2', 'cosine', 'dot' or 'hamming'",
                    self.kind.name()
                ))
            }),
        }
    }
}

/// PQ splits each vector into sub-vectors of equal length: the default aims at 8 dimensions per sub-vector (16
/// where that divides evenly), taking the nearest divisor of the dimension.
fn default_sub_vectors(dim: usize) -> usize {
    if dim.is_multiple_of(16) && dim >= 128 {
        return dim / 16;
    }
    let target = (dim / 8).max(1);
    (1..=target)
        .rev()
        .find(|d| dim.is_multiple_of(*d))
        .unwrap_or(1)
}

fn vector_params(opts: &Options, dim: usize) -> Result<VectorIndexParams> {
    let metric = opts.metric()?;
    let mut ivf = IvfBuildParams::default();
    if let Some(n) = opts.usize("num_partitions")? {
        ivf.num_partitions = Some(n);
    }
    if let Some(n) = opts.usize("sample_rate")? {
        ivf.sample_rate = n;
    }
    if let Some(n) = opts.usize("max_iterations")? {
        ivf.max_iters = n;
    }
    let pq = || -> Result<PQBuildParams> {
        let num_sub_vectors = opts
            .usize("num_sub_vectors")?
            .unwrap_or_else(|| default_sub_vectors(dim));
        if !dim.is_multiple_of(num_sub_vectors) {
            return Err(Error::invalid(format!(
                "num_sub_vectors = {num_sub_vectors} must divide the vector dimension {dim}"
            )));
        }
        let num_bits = opts.usize("num_bits")?.unwrap_or(8);
        if num_bits != 4 && num_bits != 8 {
            return Err(Error::invalid("num_bits for PQ must be 4 or 8"));
        }
        Ok(PQBuildParams {
            num_sub_vectors,
            num_bits,
            ..Default::default()
        })
    };
    let sq = || -> Result<SQBuildParams> {
        let num_bits = opts.usize("num_bits")?.unwrap_or(8);
        if num_bits != 8 {
            return Err(Error::invalid("num_bits for SQ must be 8"));
        }
        Ok(SQBuildParams {
            num_bits: num_bits as u16,
            ..Default::default()
        })
    };
    let hnsw = || -> Result<HnswBuildParams> {
        let mut h = HnswBuildParams::default();
        if let Some(m) = opts.usize("m")? {
            h.m = m;
        }
        if let Some(ef) = opts.usize("ef_construction")? {
            h.ef_construction = ef;
        }
        Ok(h)
    };
    Ok(match opts.kind {
        IndexKind::IvfFlat => VectorIndexParams::with_ivf_flat_params(metric, ivf),
        IndexKind::IvfSq => VectorIndexParams::with_ivf_sq_params(metric, ivf, sq()?),
        IndexKind::IvfPq => VectorIndexParams::with_ivf_pq_params(metric, ivf, pq()?),
        // HNSW over the vectors themselves: no quantization error to re-rank away, four times the index size of SQ.
        IndexKind::IvfHnswFlat => VectorIndexParams::ivf_hnsw(metric, ivf, hnsw()?),
        IndexKind::IvfHnswSq => {
            VectorIndexParams::with_ivf_hnsw_sq_params(metric, ivf, hnsw()?, sq()?)
        }
        IndexKind::IvfHnswPq => {
            VectorIndexParams::with_ivf_hnsw_pq_params(metric, ivf, hnsw()?, pq()?)
        }
        IndexKind::BTree | IndexKind::Bitmap | IndexKind::Inverted => {
            unreachable!("scalar kinds have no vector parameters")
        }
    })
}

/// A full-text index's text analysis from its WITH options; Lance's defaults (simple tokenizer, English, lower case,
/// stemming, stop words removed, ASCII folding, tokens up to 40 characters, no positions) where one is not given.
fn inverted_params(opts: &Options) -> Result<InvertedIndexParams> {
    let mut p = InvertedIndexParams::default();
    if let Some(t) = opts.values.get("base_tokenizer") {
        let t = t.to_ascii_lowercase();
        if !["simple", "whitespace", "raw", "ngram"].contains(&t.as_str()) {
            return Err(Error::invalid(format!(
                "unknown base_tokenizer '{t}'; use 'simple' (split on anything not a letter or digit), \
                 'whitespace', 'raw' (the whole value is one token) or 'ngram'"
            )));
        }
        p = p.base_tokenizer(t);
    }
    if let Some(language) = opts.values.get("language") {
        // Lance names languages capitalized (English, French, …).
        let mut chars = language.chars();
        let name: String = match chars.next() {
            Some(c) => c
                .to_uppercase()
                .chain(chars.flat_map(char::to_lowercase))
                .collect(),
            None => String::new(),
        };
        p = p.language(&name).map_err(|_| {
            Error::invalid(format!(
                "unknown language '{language}'; use one of Arabic, Danish, Dutch, English, Finnish, French, German, \
                 Greek, Hungarian, Italian, Norwegian, Portuguese, Romanian, Russian, Spanish, Swedish, Tamil, Turkish"
            ))
        })?;
    }
    if let Some(b) = opts.bool("with_position")? {
        p = p.with_position(b);
    }
    if let Some(b) = opts.bool("stem")? {
        p = p.stem(b);
    }
    if let Some(b) = opts.bool("remove_stop_words")? {
        p = p.remove_stop_words(b);
    }
    if let Some(b) = opts.bool("lower_case")? {
        p = p.lower_case(b);
    }
    if let Some(b) = opts.bool("ascii_folding")? {
        p = p.ascii_folding(b);
    }
    if let Some(n) = opts.usize("max_token_length")? {
        p = p.max_token_length(Some(n));
    }
    // Building the analyzer now turns a combination Lance cannot serve (stop words of a language without a list)
    // into an error before any data is read.
    p.build()
        .map_err(|e| Error::invalid(format!("full-text index options: {e}")))?;
    Ok(p)
}

/// The dimension of a vector column, or a clear error for anything else.
pub(crate) fn vector_dim(table: &str, column: &str, dt: &DataType) -> Result<usize> {
    match dt {
        DataType::FixedSizeList(f, n)
            if matches!(
                f.data_type(),
                DataType::Float16 | DataType::Float32 | DataType::Float64 | DataType::UInt8 | DataType::Int8
            ) =>
        {
            Ok(*n as usize)
        }
        other => Err(Error::invalid(format!(
            "column {table}.{column} is {other}, not a vector: vector indexes need a FLOAT[n] / VECTOR(n) column"
        ))),
    }
}

/// Logs each stage of an index build (shown by `marrow sql` at the default log level).
#[derive(Debug)]
struct LogProgress {
    index: String,
    started: Instant,
}

#[async_trait::async_trait]
impl IndexBuildProgress for LogProgress {
    async fn stage_start(&self, stage: &str, total: Option<u64>, unit: &str) -> lance::Result<()> {
        match total {
            Some(t) => {
                tracing::info!(target: "marrow::index", "{}: {stage} ({t} {unit}) …", self.index)
            }
            None => tracing::info!(target: "marrow::index", "{}: {stage} …", self.index),
        }
        Ok(())
    }
    async fn stage_progress(&self, _stage: &str, _completed: u64) -> lance::Result<()> {
        Ok(())
    }
    async fn stage_complete(&self, stage: &str) -> lance::Result<()> {
        tracing::info!(
            target: "marrow::index",
            "{}: {stage} done ({:.1}s)",
            self.index,
            self.started.elapsed().as_secs_f64()
        );
        Ok(())
    }
}

/// Every table that has an index of this name.
async fn tables_with_index(session: &Session, name: &str) -> Result<Vec<String>> {
    let provider = session.database().schema_provider();
    let mut found = vec![];
    for table in provider.lance_tables() {
        let ds = provider.open_dataset(&table).await?;
        if ds.load_indices().await?.iter().any(|i| i.name == name) {
            found.push(table);
        }
    }
    Ok(found)
}

fn index_name(name: &ObjectName) -> Result<String> {
    match name.0.as_slice() {
        [part] => {
            let ident = part
                .as_ident()
                .ok_or_else(|| Error::invalid(format!("unsupported index name {name}")))?;
            Ok(match ident.quote_style {
                Some(_) => ident.value.clone(),
                None => ident.value.to_lowercase(),
            })
        }
        _ => Err(Error::invalid(format!(
            "index name {name} must be a plain name; indexes live with their table"
        ))),
    }
}

pub(crate) async fn create_index(session: &Session, ci: CreateIndex) -> Result<QueryOutput> {
    let table = table_name(&ci.table_name)?;
    let kind = match &ci.using {
        None => {
            return Err(Error::invalid(
                "CREATE INDEX needs USING <kind>: IVF_PQ, IVF_HNSW_SQ, IVF_FLAT … for vectors, BTREE or BITMAP for filters",
            ))
        }
        Some(SqlIndexType::BTree) => IndexKind::BTree,
        Some(SqlIndexType::Custom(i)) => IndexKind::parse(&i.value)?,
        Some(other) => IndexKind::parse(&other.to_string())?,
    };
    if ci.unique {
        return Err(Error::unsupported(
            "UNIQUE indexes are not supported; declare a PRIMARY KEY on the table instead",
        ));
    }
    if ci.predicate.is_some() || !ci.include.is_empty() {
        return Err(Error::unsupported(
            "partial and covering indexes are not supported",
        ));
    }
    let column = match ci.columns.as_slice() {
        [c] => match &c.column.expr {
            SqlExpr::Identifier(i) => match i.quote_style {
                Some(_) => i.value.clone(),
                None => i.value.to_lowercase(),
            },
            other => {
                return Err(Error::unsupported(format!(
                    "indexes on expressions are not supported ({other}); index a column"
                )))
            }
        },
        _ => return Err(Error::unsupported("an index covers exactly one column")),
    };
    let opts = Options::parse(kind, &ci.with)?;
    let name = match &ci.name {
        Some(n) => index_name(n)?,
        None => format!("{table}_{column}_idx"),
    };
    if name.starts_with("__") {
        return Err(Error::invalid("index names starting with __ are reserved"));
    }

    let db = session.database();
    let lock = db.write_lock(&table);
    let _guard = lock.lock().await;
    let existing = tables_with_index(session, &name).await?;
    if !existing.is_empty() {
        if ci.if_not_exists && existing == [table.clone()] {
            return Ok(QueryOutput::Done);
        }
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            format!(
                "index {name} already exists (on table {})",
                existing.join(", ")
            ),
        ));
    }
    let ds = db.schema_provider().open_dataset(&table).await?;
    let field = ds
        .schema()
        .field(&column)
        .ok_or_else(|| Error::not_found(format!("column {column} not found in table {table}")))?;
    let dt = field.data_type();
    let vector_holder;
    let scalar_holder;
    let inverted_holder;
    let (index_type, params): (IndexType, &dyn IndexParams) = if kind == IndexKind::Inverted {
        if !matches!(
            dt,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ) {
            return Err(Error::invalid(format!(
                "INVERTED (full-text) indexes are for text columns; {table}.{column} is {dt}"
            )));
        }
        inverted_holder = inverted_params(&opts)?;
        (IndexType::Inverted, &inverted_holder)
    } else if kind.is_vector() {
        let dim = vector_dim(&table, &column, &dt)?;
        let rows = ds.count_rows(None).await?;
        if rows == 0 {
            return Err(Error::invalid(format!(
                "table {table} is empty: a {} index is trained on the table's vectors; insert rows first",
                kind.name()
            )));
        }
        // Lance searches a column through one vector index; a second would be ignored or shadow the first.
        if let Some(other) = crate::vector::vector_indexes(&ds, &column).await?.first() {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!(
                    "column {table}.{column} already has vector index {} ({}); DROP INDEX {} first",
                    other.name,
                    other
                        .metric
                        .map(crate::vector::metric_name)
                        .unwrap_or("unknown metric"),
                    other.name
                ),
            ));
        }
        vector_holder = vector_params(&opts, dim)?;
        let it = match kind {
            IndexKind::IvfFlat => IndexType::IvfFlat,
            IndexKind::IvfSq => IndexType::IvfSq,
            IndexKind::IvfPq => IndexType::IvfPq,
            IndexKind::IvfHnswFlat => IndexType::IvfHnswFlat,
            IndexKind::IvfHnswSq => IndexType::IvfHnswSq,
            _ => IndexType::IvfHnswPq,
        };
        (it, &vector_holder)
    } else {
        if matches!(
            dt,
            DataType::FixedSizeList(..) | DataType::List(_) | DataType::Struct(_)
        ) {
            return Err(Error::invalid(format!(
                "{} indexes are for filter columns (numbers, strings, dates); {table}.{column} is {dt}",
                kind.name()
            )));
        }
        let (it, name) = match kind {
            IndexKind::Bitmap => (IndexType::Bitmap, "bitmap"),
            _ => (IndexType::BTree, "btree"),
        };
        scalar_holder = ScalarIndexParams::new(name.to_string());
        (it, &scalar_holder)
    };

    let started = Instant::now();
    tracing::info!(target: "marrow::index", "building {} index {name} on {table}({column})", kind.name());
    let mut ds = Arc::unwrap_or_clone(ds);
    let progress: Arc<dyn IndexBuildProgress> = Arc::new(LogProgress {
        index: name.clone(),
        started,
    });
    ds.create_index_builder(&[column.as_str()], index_type, params)
        .name(name.clone())
        .replace(false)
        .progress(progress)
        .await
        .map_err(|e| build_error(&name, e))?;
    tracing::info!(
        target: "marrow::index",
        "index {name} built in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(QueryOutput::Done)
}

/// The full-text index every data directory keeps on `memories.content`.
pub const MEMORY_TEXT_INDEX: &str = "memories_content_fts";

/// Build [`MEMORY_TEXT_INDEX`] (default text analysis, with positions for phrase queries) when `memories` has no
/// full-text index on `content`: when a data directory is created, and on the first open of one made before.
pub(crate) async fn ensure_memory_text_index(schema: &MarrowSchema) -> Result<()> {
    let ds = schema.open_dataset("memories").await?;
    let is_text = ds.schema().field("content").is_some_and(|f| {
        matches!(
            f.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        )
    });
    if !is_text
        || crate::table_functions::fts_search::inverted_index(&ds, "content")
            .await?
            .is_some()
    {
        return Ok(());
    }
    let started = Instant::now();
    let rows = ds.count_rows(None).await?;
    tracing::info!(target: "marrow::index", "building full-text index {MEMORY_TEXT_INDEX} on memories(content), {rows} rows");
    let params = InvertedIndexParams::default().with_position(true);
    let mut ds = Arc::unwrap_or_clone(ds);
    ds.create_index_builder(&["content"], IndexType::Inverted, &params)
        .name(MEMORY_TEXT_INDEX.to_string())
        .replace(false)
        .await
        .map_err(|e| build_error(MEMORY_TEXT_INDEX, e))?;
    tracing::info!(
        target: "marrow::index",
        "index {MEMORY_TEXT_INDEX} built in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn build_error(name: &str, e: lance::Error) -> Error {
    let err = Error::from(e);
    let kind = match err.kind() {
        ErrorKind::Internal => ErrorKind::InvalidInput,
        k => k,
    };
    Error::new(
        kind,
        format!("building index {name} failed: {}", err.message()),
    )
}

pub(crate) async fn drop_index(
    session: &Session,
    names: &[ObjectName],
    if_exists: bool,
    table: Option<&ObjectName>,
) -> Result<QueryOutput> {
    let db = session.database();
    for n in names {
        let name = index_name(n)?;
        let tables = match table {
            Some(t) => vec![table_name(t)?],
            None => tables_with_index(session, &name).await?,
        };
        let mut dropped = false;
        for t in tables {
            let lock = db.write_lock(&t);
            let _guard = lock.lock().await;
            let mut ds = Arc::unwrap_or_clone(db.schema_provider().open_dataset(&t).await?);
            if ds.load_indices().await?.iter().any(|i| i.name == name) {
                ds.drop_index(&name).await?;
                dropped = true;
            }
        }
        if !dropped && !if_exists {
            return Err(Error::not_found(format!("index {name} not found")));
        }
    }
    Ok(QueryOutput::Done)
}

/// `OPTIMIZE TABLE t`: fold rows written since each index was built into the table's indexes. The count is the
/// number of rows that were not yet covered by every index.
pub(crate) async fn optimize_table(session: &Session, name: &ObjectName) -> Result<QueryOutput> {
    let table = table_name(name)?;
    let db = session.database();
    let lock = db.write_lock(&table);
    let _guard = lock.lock().await;
    let mut ds = Arc::unwrap_or_clone(db.schema_provider().open_dataset(&table).await?);
    let before: u64 = user_indexes(&ds)
        .await?
        .iter()
        .map(|i| i.rows_unindexed)
        .max()
        .unwrap_or(0);
    let started = Instant::now();
    tracing::info!(target: "marrow::index", "optimizing the indexes of {table} ({before} rows not yet indexed)");
    ds.optimize_indices(&OptimizeOptions::default()).await?;
    tracing::info!(
        target: "marrow::index",
        "indexes of {table} optimized in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(QueryOutput::Count(before))
}

/// One index, as `marrow_indexes()` lists it.
#[derive(Debug, Clone)]
pub struct IndexInfo {
    pub table: String,
    pub name: String,
    /// IVF_PQ, IVF_HNSW_SQ, BTREE, … as Lance reports it.
    pub kind: String,
    pub column: String,
    /// For vector indexes: l2, cosine, dot or hamming.
    pub metric: Option<String>,
    pub rows_indexed: u64,
    pub rows_unindexed: u64,
}

/// The user-visible indexes of one dataset (Lance's internal `__…` indexes are left out). Coverage comes from the
/// fragments each index's segments were built over, so listing reads only the manifest.
pub(crate) async fn user_indexes(ds: &Dataset) -> Result<Vec<IndexInfo>> {
    let fragments = ds.fragments();
    let total: u64 = fragments
        .iter()
        .map(|f| f.num_rows().unwrap_or(0) as u64)
        .sum();
    let mut out = vec![];
    for desc in ds.describe_indices(None).await? {
        let name = desc.name().to_string();
        if name.starts_with("__") {
            continue;
        }
        let column = desc
            .field_ids()
            .first()
            .and_then(|id| ds.schema().field_by_id(*id as i32))
            .map(|f| f.name.clone())
            .unwrap_or_default();
        let covered = |f: &&lance::table::format::Fragment| {
            desc.segments().iter().any(|seg| {
                seg.fragment_bitmap
                    .as_ref()
                    .is_some_and(|b| b.contains(f.id as u32))
            })
        };
        let rows_indexed: u64 = fragments
            .iter()
            .filter(covered)
            .map(|f| f.num_rows().unwrap_or(0) as u64)
            .sum();
        out.push(IndexInfo {
            table: String::new(),
            kind: desc.index_type().to_uppercase(),
            metric: crate::vector::details_metric(desc.as_ref())
                .map(|m| crate::vector::metric_name(m).to_string()),
            name,
            column,
            rows_indexed,
            rows_unindexed: total.saturating_sub(rows_indexed),
        });
    }
    Ok(out)
}

/// Every index in the database.
pub async fn list_indexes(provider: &MarrowSchema) -> Result<Vec<IndexInfo>> {
    let mut out = vec![];
    for table in provider.lance_tables() {
        let ds = provider.open_dataset(&table).await?;
        for mut info in user_indexes(&ds).await? {
            info.table = table.clone();
            out.push(info);
        }
    }
    Ok(out)
}

/// `CREATE INDEX … USING kind (column) WITH (…)`, `DROP INDEX` and `OPTIMIZE TABLE`, which DataFusion cannot run.
pub struct IndexStatement;

#[async_trait::async_trait]
impl StatementHandler for IndexStatement {
    fn handles(&self, statement: &DFStatement) -> bool {
        is_sql(statement, |s| {
            matches!(
                s,
                Statement::CreateIndex(_)
                    | Statement::Drop {
                        object_type: ObjectType::Index,
                        ..
                    }
                    | Statement::OptimizeTable { .. }
            )
        })
    }

    async fn run(
        &self,
        session: &Session,
        statement: DFStatement,
        _params: Option<ParamValues>,
    ) -> Result<QueryOutput> {
        match sql_statement(statement, "index")? {
            Statement::CreateIndex(ci) => create_index(session, ci).await,
            Statement::Drop {
                object_type: ObjectType::Index,
                names,
                if_exists,
                table,
                ..
            } => drop_index(session, &names, if_exists, table.as_ref()).await,
            Statement::OptimizeTable { name, .. } => optimize_table(session, &name).await,
            _ => Err(misrouted("index")),
        }
    }
}
