//! The tables Marrow itself defines, in one place: `memories` and `adapters` (created with every data directory)
//! and the weight tables `tensors` and `models` (created by the first import).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

use lance::dataset::NewColumnTransform;

use crate::catalog::{MarrowSchema, META_DEFAULTS, META_EMBED, META_PRIMARY_KEY};
use crate::config::MEMORY_EMBEDDING_DIM;
use crate::error::{Error, Result};

/// The tables every data directory has, created when it is opened.
pub fn builtin_tables() -> [(&'static str, Schema); 2] {
    [
        ("memories", memories_schema()),
        ("adapters", adapters_schema()),
    ]
}

/// Bring the built-in tables of a data directory written by an older Marrow up to this version's schemas: columns
/// added since (nullable, at the end) are added as all-NULL columns, a metadata-only Lance commit. The caller holds
/// the data directory's lock, so no writer races the commit.
pub async fn add_missing_columns(schema: &MarrowSchema) -> Result<()> {
    for (name, wanted) in builtin_tables() {
        if !schema.lance_table_exists(name) {
            continue;
        }
        let ds = schema.open_dataset(name).await?;
        let missing: Vec<Field> = wanted
            .fields()
            .iter()
            .filter(|f| ds.schema().field(f.name()).is_none())
            .map(|f| f.as_ref().clone())
            .collect();
        if missing.is_empty() {
            continue;
        }
        if let Some(f) = missing.iter().find(|f| !f.is_nullable()) {
            return Err(Error::internal(format!(
                "built-in table {name} lacks the NOT NULL column {}, which cannot be added to existing rows",
                f.name()
            )));
        }
        let names: Vec<&str> = missing.iter().map(|f| f.name().as_str()).collect();
        tracing::info!(target: "marrow::catalog", "adding columns {names:?} to {name}");
        let mut ds = Arc::unwrap_or_clone(ds);
        ds.add_columns(
            NewColumnTransform::AllNulls(Arc::new(Schema::new(missing))),
            None,
            None,
        )
        .await?;
    }
    Ok(())
}

/// Schema metadata of a built-in table: primary key `id`, column defaults, and the vector column Marrow embeds from
/// a text column on write.
fn table_metadata(
    defaults: &[(&str, &str)],
    embed: (&str, &str),
) -> std::collections::HashMap<String, String> {
    let defaults: BTreeMap<&str, &str> = defaults.iter().copied().collect();
    [
        (META_PRIMARY_KEY.to_string(), "id".to_string()),
        (
            META_DEFAULTS.to_string(),
            serde_json::to_string(&defaults).expect("defaults serialize"),
        ),
        (
            META_EMBED.to_string(),
            serde_json::to_string(&BTreeMap::from([embed])).expect("embed setting serializes"),
        ),
    ]
    .into_iter()
    .collect()
}

/// The `memories` table every data directory starts with (see DESIGN.md's data model).
pub fn memories_schema() -> Schema {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let metadata = table_metadata(
        &[
            ("id", "uuid()"),
            ("namespace", "'default'"),
            ("kind", "'note'"),
            ("importance", "0.5"),
            ("created_at", "now()"),
            ("updated_at", "now()"),
            ("access_count", "0"),
            ("metadata", "'{}'"),
        ],
        ("embedding", "content"),
    );
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
            Field::new("last_accessed_at", ts.clone(), true),
            Field::new("access_count", DataType::Int64, false),
            Field::new("metadata", DataType::Utf8, false),
            // Added after the first release: columns a newer Marrow adds go last and are nullable (see
            // `add_missing_columns`). NULL: the memory never expires.
            Field::new("expires_at", ts, true),
        ],
        metadata,
    )
}

/// The `adapters` table every data directory has (created with `memories`).
pub fn adapters_schema() -> Schema {
    let metadata = table_metadata(
        &[
            ("kind", "'lora'"),
            ("metrics", "'{}'"),
            ("created_at", "now()"),
        ],
        ("description_embedding", "description"),
    );
    Schema::new_with_metadata(
        vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("kind", DataType::Utf8, false),
            Field::new("base_model", DataType::Utf8, false),
            Field::new("rank", DataType::Int32, false),
            Field::new("alpha", DataType::Float64, false),
            Field::new("use_rslora", DataType::Boolean, false),
            Field::new(
                "target_modules",
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                false,
            ),
            Field::new("description", DataType::Utf8, true),
            Field::new(
                "description_embedding",
                DataType::FixedSizeList(
                    Arc::new(Field::new("item", DataType::Float32, true)),
                    MEMORY_EMBEDDING_DIM,
                ),
                true,
            ),
            Field::new("metrics", DataType::Utf8, false),
            Field::new("config", DataType::Utf8, false),
            Field::new(
                "created_at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
        ],
        metadata,
    )
}

pub const TENSORS_DDL: &str = "CREATE TABLE IF NOT EXISTS tensors (model TEXT NOT NULL, name TEXT NOT NULL, \
dtype TEXT NOT NULL, shape BIGINT[] NOT NULL, quantization TEXT, chunk INT NOT NULL, n_chunks INT NOT NULL, \
data BYTEA NOT NULL, PRIMARY KEY (model, name, chunk))";
pub const MODELS_DDL: &str =
    "CREATE TABLE IF NOT EXISTS models (model TEXT PRIMARY KEY, format TEXT NOT NULL, \
metadata TEXT, tensors BIGINT NOT NULL, bytes BIGINT NOT NULL, imported_at TIMESTAMP NOT NULL)";
