//! Group commit: concurrent appends to one table become one Lance commit.
//!
//! An INSERT (or ingest) without ON CONFLICT writes its rows as new data files first, outside the table's write lock
//! (coercion, embedding and file writes of many clients run at once), then queues the staged fragments for the
//! table. Whoever next holds the table's write lock commits everything queued by then as one `Append` and tells each
//! writer its outcome; writers whose work a leader already committed just read their answer. A write is acknowledged
//! only once the commit holding it is durable, so an acknowledged write survives a crash, and a statement's rows
//! become visible together, never in part.
//!
//! Small writes (a few rows: one `remember`, an access-log row, an event) are not written as files of their own:
//! they queue their rows, and the leader writes the rows of every small writer in its group as one data file. A
//! file costs more than its rows at that size (creating it, its footer, one more fragment in every manifest until
//! compaction), so many clients writing a row each cost about what one client writing all those rows costs.
//!
//! Primary keys stay exact: under the lock the leader looks up every queued key in the latest version (by index
//! when there is one) and across the group in queue order; a writer whose key exists fails with the same error as
//! before and none of its rows are committed (its staged files are left unreferenced, for version cleanup).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use lance::table::format::Fragment;
use tokio::sync::oneshot;

use crate::catalog::write;
use crate::catalog::MarrowTable;
use crate::error::{Error, ErrorKind, Result};
use crate::session::Session;

/// Rows of at most this many bytes (in memory) are queued as rows and written by the group's leader.
pub(crate) const SMALL_WRITE_BYTES: usize = 1 << 20;

/// What a writer hands to the group: data files it wrote, or (a small write) rows for the leader to write.
pub(crate) enum Staged {
    Files(Vec<Fragment>),
    Rows(Vec<RecordBatch>),
}

impl Staged {
    /// Rows small enough to queue as they are, or else the data files they are written to now.
    pub(crate) async fn rows(
        ds: &std::sync::Arc<lance::Dataset>,
        rows: Vec<RecordBatch>,
    ) -> Result<Self> {
        let bytes: usize = rows.iter().map(|b| b.get_array_memory_size()).sum();
        if bytes <= SMALL_WRITE_BYTES {
            Ok(Self::Rows(rows))
        } else {
            Ok(Self::Files(write::stage(ds, rows).await?))
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Self::Files(f) => f.is_empty(),
            Self::Rows(r) => r.iter().all(|b| b.num_rows() == 0),
        }
    }
}

/// One writer's staged rows, waiting for a commit.
pub(crate) struct Pending {
    staged: Staged,
    /// The table's schema the files were written with: a table replaced meanwhile refuses them.
    schema: lance::datatypes::Schema,
    /// A one-column primary key and this write's keys (already unique among themselves).
    key: Option<(String, Vec<ScalarValue>)>,
    done: oneshot::Sender<Result<()>>,
}

/// Per-table queues of staged writes.
#[derive(Default)]
pub(crate) struct CommitQueues {
    queues: std::sync::Mutex<HashMap<String, Vec<Pending>>>,
}

/// Commit `fragments` staged against `snapshot` (a version of `table`) with other writers' queued at the same time.
/// `key`: the table's one-column primary key and the keys of these rows, checked against the table and the group.
pub(crate) async fn append(
    session: &Session,
    table: &str,
    snapshot: &MarrowTable,
    staged: Staged,
    key: Option<(String, Vec<ScalarValue>)>,
) -> Result<()> {
    if staged.is_empty() {
        return Ok(());
    }
    let db = session.database();
    let (tx, mut rx) = oneshot::channel();
    db.commit_queues()
        .queues
        .lock()
        .expect("commit queues")
        .entry(table.to_string())
        .or_default()
        .push(Pending {
            staged,
            schema: snapshot.dataset().schema().clone(),
            key,
            done: tx,
        });
    let lock = db.write_lock(table);
    let guard = lock.lock().await;
    if let Ok(outcome) = rx.try_recv() {
        return outcome;
    }
    let group = db
        .commit_queues()
        .queues
        .lock()
        .expect("commit queues")
        .remove(table)
        .unwrap_or_default();
    lead(session, table, group).await;
    drop(guard);
    rx.await
        .unwrap_or_else(|_| Err(Error::internal("a group commit ended without an outcome")))
}

/// Commit a group as the leader (holding the table's write lock) and answer every writer in it.
async fn lead(session: &Session, table: &str, group: Vec<Pending>) {
    let outcome = async {
        let latest = session
            .database()
            .schema_provider()
            .open_table(table, true)
            .await?;
        let refused = check(session, table, &latest, &group).await?;
        Ok::<_, Error>((latest, refused))
    }
    .await;
    let (latest, refused) = match outcome {
        Ok(v) => v,
        Err(e) => {
            for p in group {
                let _ = p.done.send(Err(copy(&e)));
            }
            return;
        }
    };
    let mut fragments = vec![];
    let mut accepted = vec![];
    let mut written_keys = vec![];
    // Small writes: their rows, and their keys (noted against the one file they are written to).
    let mut rows = vec![];
    let mut row_keys: Option<(String, Vec<ScalarValue>)> = None;
    for (i, p) in group.into_iter().enumerate() {
        if let Some(e) = refused.get(&i) {
            let _ = p.done.send(Err(copy(e)));
            continue;
        }
        match p.staged {
            Staged::Files(files) => {
                if let ([fragment], Some(key)) = (files.as_slice(), p.key) {
                    written_keys.push((fragment.clone(), key));
                }
                fragments.extend(files);
            }
            Staged::Rows(batches) => {
                rows.extend(batches);
                if let Some((column, keys)) = p.key {
                    row_keys
                        .get_or_insert_with(|| (column, vec![]))
                        .1
                        .extend(keys);
                }
            }
        }
        accepted.push(p.done);
    }
    if !rows.is_empty() {
        match write::stage(latest.dataset(), rows).await {
            Ok(files) => {
                if let ([fragment], Some(key)) = (files.as_slice(), row_keys) {
                    written_keys.push((fragment.clone(), key));
                }
                fragments.extend(files);
            }
            Err(e) => {
                for done in accepted {
                    let _ = done.send(Err(copy(&e)));
                }
                return;
            }
        }
    }
    let committed = write::commit_fragments(latest.dataset(), fragments)
        .await
        .map(|new| {
            session.database().schema_provider().adopt(table, &new);
            note_keys(session, &latest, written_keys);
        });
    if committed.is_ok() && accepted.len() > 1 {
        tracing::debug!(target: "marrow::write", "group commit of {} writes to {table}", accepted.len());
    }
    for done in accepted {
        let _ = done.send(committed.as_ref().map(|_| ()).map_err(copy));
    }
}

/// Tell the hot tier the keys of the fragments just committed, so the next writer's key check reads no file.
fn note_keys(
    session: &Session,
    table: &MarrowTable,
    written: Vec<(Fragment, (String, Vec<ScalarValue>))>,
) {
    let Some(hot) = session.database().schema_provider().hot_tier() else {
        return;
    };
    let schema = table.storage_schema();
    for (fragment, (column, keys)) in written {
        let noted = schema
            .field_with_name(&column)
            .map_err(Error::from)
            .and_then(|f| {
                let keys = ScalarValue::iter_to_array(keys)?;
                hot.note_keys(
                    table.dataset().uri(),
                    &fragment,
                    &column,
                    f.data_type(),
                    &keys,
                )
            });
        // Only a cache: a key not noted is read from the fragment when next needed.
        if let Err(e) = noted {
            tracing::debug!(target: "marrow::write", "key hashes not kept: {e}");
        }
    }
}

/// Writers of the group that cannot commit, with their errors: a schema that changed since they staged, or a key
/// that exists in the table or in an earlier writer of the group.
async fn check(
    session: &Session,
    table: &str,
    latest: &Arc<MarrowTable>,
    group: &[Pending],
) -> Result<HashMap<usize, Error>> {
    let mut refused = HashMap::new();
    for (i, p) in group.iter().enumerate() {
        if &p.schema != latest.dataset().schema() {
            refused.insert(
                i,
                Error::new(
                    ErrorKind::Locked,
                    format!(
                    "table {table} was changed (its columns) while rows were being written to it; nothing was \
                     written: run the statement again"
                )),
            );
        }
    }
    let keyed: Vec<(usize, &String, &Vec<ScalarValue>)> = group
        .iter()
        .enumerate()
        .filter(|(i, _)| !refused.contains_key(i))
        .filter_map(|(i, p)| p.key.as_ref().map(|(c, k)| (i, c, k)))
        .collect();
    let Some((_, column, _)) = keyed.first() else {
        return Ok(refused);
    };
    let all: Vec<ScalarValue> = keyed
        .iter()
        .flat_map(|(_, _, k)| k.iter().cloned())
        .collect();
    let existing: HashSet<ScalarValue> =
        crate::statements::dml::existing_keys(session, latest, column, &all)
            .await?
            .into_iter()
            .collect();
    let mut seen: HashSet<&ScalarValue> = HashSet::new();
    for (i, column, keys) in keyed {
        let clash = keys
            .iter()
            .find(|k| existing.contains(*k) || seen.contains(k));
        match clash {
            Some(k) => {
                refused.insert(
                    i,
                    Error::constraint(format!(
                        "duplicate key: {column} = {} already exists in table {table}",
                        crate::statements::dml::render_scalar(k)
                    )),
                );
            }
            None => seen.extend(keys.iter()),
        }
    }
    Ok(refused)
}

/// The same error for each writer of a group.
fn copy(e: &Error) -> Error {
    Error::new(e.kind(), e.message())
}
