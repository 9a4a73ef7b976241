//! Bulk ingest (Flight SQL's `CommandStatementIngest`, ADBC's `adbc_ingest`): Arrow batches into a table in one
//! commit. Creating or replacing writes a new Lance dataset (or a new version of it); appending goes through the
//! same INSERT machinery as SQL, so column defaults, type coercion, NOT NULL and primary keys behave exactly as for
//! `INSERT INTO t SELECT …`.

use std::collections::HashMap;
use std::sync::Arc;

use std::sync::Mutex;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::Statement;
use futures::StreamExt;

use crate::catalog::write::{self, coerce_batches};
use crate::catalog::{storage_schema, validate_table_name};
use crate::error::{Error, ErrorKind, Result};
use crate::session::{QueryOutput, Session};
use crate::sql::quote;

/// What to do when the target table exists or does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestMode {
    /// Create the table from the batches' schema; fail if it exists.
    Create,
    /// Append to an existing table; fail if it does not exist.
    Append,
    /// Create the table, or replace an existing one (schema and rows) in one new version.
    Replace,
    /// Create the table if it does not exist, append otherwise.
    CreateAppend,
}

/// Schema-level metadata a client may set through ingest: Marrow's own table properties (primary key, defaults).
/// Anything else (pandas metadata …) is dropped so that it does not end up in the table definition.
fn ingest_schema(schema: &Schema) -> SchemaRef {
    let metadata: HashMap<String, String> = schema
        .metadata()
        .iter()
        .filter(|(k, _)| k.starts_with("marrow."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let storage = storage_schema(schema);
    Arc::new(Schema::new_with_metadata(
        storage.fields().clone(),
        metadata,
    ))
}

/// The rows of one ingest, readable once, as the source of the generated `INSERT … SELECT`.
struct Once {
    schema: SchemaRef,
    rows: Mutex<Option<SendableRecordBatchStream>>,
}

impl std::fmt::Debug for Once {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ingested rows")
    }
}

impl PartitionStream for Once {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        match self
            .rows
            .lock()
            .expect("ingest stream lock poisoned")
            .take()
        {
            Some(rows) => rows,
            None => Box::pin(RecordBatchStreamAdapter::new(
                self.schema.clone(),
                futures::stream::once(async {
                    Err(DataFusionError::Internal("ingested rows read twice".into()))
                }),
            )),
        }
    }
}

impl Session {
    /// Load `batches` (with `schema`, which is needed when there are no batches) into `table` as one commit and
    /// return the number of rows written.
    pub async fn ingest(
        &self,
        table: &str,
        mode: IngestMode,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> Result<u64> {
        let rows = write::batch_stream(schema.clone(), batches);
        self.ingest_stream(table, mode, schema, rows).await
    }

    /// Load a stream of batches with `schema` into `table` as one commit, holding about one batch at a time (a
    /// table with a primary key collects them first, within the memory limit, to check the key across all of them).
    /// Returns the number of rows written.
    pub async fn ingest_stream(
        &self,
        table: &str,
        mode: IngestMode,
        schema: SchemaRef,
        rows: SendableRecordBatchStream,
    ) -> Result<u64> {
        // A write that may create or replace the table changes what later queries plan to: cached plans made
        // before it are not reused after it. An append changes the table's version only, which kept plans check.
        let shapes = !matches!(mode, IngestMode::Append);
        if shapes {
            self.database().bump_generation();
        }
        let out = self.ingest_rows(table, mode, schema, rows).await;
        if shapes {
            self.database().bump_generation();
        }
        out
    }

    async fn ingest_rows(
        &self,
        table: &str,
        mode: IngestMode,
        schema: SchemaRef,
        rows: SendableRecordBatchStream,
    ) -> Result<u64> {
        validate_table_name(table)?;
        let fields = schema.fields().clone();
        let rows: SendableRecordBatchStream = Box::pin(RecordBatchStreamAdapter::new(
            schema.clone(),
            rows.map(move |b| {
                let b = b?;
                if b.schema().fields() != &fields {
                    return Err(Error::invalid(
                        "every ingested batch must have the schema of the stream",
                    )
                    .into());
                }
                Ok(b)
            }),
        ));
        let db = self.database().clone();
        let provider = db.schema_provider().clone();
        if !provider.lance_table_exists(table) && provider.table_exist(table) {
            return Err(Error::invalid(format!(
                "'{table}' is a view or external table and cannot be ingested into"
            )));
        }
        if mode == IngestMode::Append {
            return self.ingest_append(table, &schema, rows).await;
        }
        let lock = db.write_lock(table);
        let guard = lock.lock().await;
        match (mode, provider.lance_table_exists(table)) {
            (IngestMode::Create, true) => Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("table '{table}' already exists"),
            )),
            (IngestMode::CreateAppend, true) => {
                // The INSERT path takes the table's write lock itself.
                drop(guard);
                self.ingest_append(table, &schema, rows).await
            }
            _ => {
                let target = ingest_schema(&schema);
                let pk: Vec<String> = target
                    .metadata()
                    .get(crate::catalog::META_PRIMARY_KEY)
                    .map(|s| {
                        s.split(',')
                            .filter(|c| !c.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                for c in &pk {
                    if target.field_with_name(c).is_err() {
                        return Err(Error::invalid(format!(
                            "primary key column '{c}' is not in the data"
                        )));
                    }
                }
                let rows = if pk.is_empty() {
                    rows
                } else {
                    let batches = write::collect_within(rows, db.config().memory_limit).await?;
                    let batches = coerce_batches(&batches, &target)?;
                    crate::statements::dml::check_unique_batches(table, &pk, &batches)?;
                    write::batch_stream(target.clone(), batches)
                };
                let (rows, passed) = write::shaped(rows, target.clone(), Ok);
                db.schema_provider()
                    .create_lance_table(table, target, rows, mode == IngestMode::Replace)
                    .await
                    .map_err(|e| passed.explain(e))?;
                Ok(passed.rows())
            }
        }
    }

    async fn ingest_append(
        &self,
        table: &str,
        schema: &SchemaRef,
        rows: SendableRecordBatchStream,
    ) -> Result<u64> {
        let provider = self.database().schema_provider().clone();
        if !provider.lance_table_exists(table) {
            return Err(Error::not_found(format!("table '{table}' not found")));
        }
        let stored = provider.open_table(table, false).await?.storage_schema();
        let mut missing = vec![];
        for f in schema.fields() {
            if stored.field_with_name(f.name()).is_err() {
                missing.push(f.name().clone());
            }
        }
        if !missing.is_empty() {
            let have: Vec<&str> = stored.fields().iter().map(|f| f.name().as_str()).collect();
            return Err(Error::invalid(format!(
                "ingested data does not match table '{table}': it has no column {} (the table has {})",
                missing.iter().map(|m| format!("'{m}'")).collect::<Vec<_>>().join(", "),
                have.join(", ")
            )));
        }
        if schema.fields().is_empty() {
            return Ok(0);
        }
        let name = "__marrow_ingest";
        let source = Once {
            schema: schema.clone(),
            rows: Mutex::new(Some(rows)),
        };
        let mem: Arc<dyn TableProvider> = Arc::new(StreamingTable::try_new(
            schema.clone(),
            vec![Arc::new(source)],
        )?);
        let columns = schema
            .fields()
            .iter()
            .map(|f| quote(f.name()))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO {} ({columns}) SELECT {columns} FROM {}",
            quote(table),
            quote(name)
        );
        let insert = match crate::sql::parse(&sql)?.pop() {
            Some(DFStatement::Statement(stmt)) => match *stmt {
                Statement::Insert(i) => i,
                _ => {
                    return Err(Error::internal(
                        "generated ingest statement is not an INSERT",
                    ))
                }
            },
            _ => return Err(Error::internal("generated ingest statement did not parse")),
        };
        // The rows are visible to this statement only, not registered in the shared catalog.
        let extra = [(name.to_string(), mem)].into_iter().collect();
        let result = crate::statements::dml::insert_with(self, insert, None, extra).await;
        match result {
            Ok(QueryOutput::Count(n)) => Ok(n),
            Ok(other) => Err(Error::internal(format!(
                "INSERT for ingest returned {other:?}"
            ))),
            // The statement is generated: a missing relation or column here means the data did not fit the table.
            Err(e) if e.kind() == ErrorKind::NotFound && provider.lance_table_exists(table) => {
                Err(Error::invalid(format!(
                    "ingested data does not match table '{table}': {}",
                    e.message()
                )))
            }
            Err(e) => Err(e),
        }
    }
}
