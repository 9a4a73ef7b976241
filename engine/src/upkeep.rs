//! Table upkeep: compaction of small fragments and folding of new rows into indexes, for every table, in the
//! background, so that a table written by many small writes (an agent's memories, access log, events) reads as fast
//! as one written in bulk.
//!
//! A pass looks at each table's manifest only (no data is read to decide):
//! - **compaction** when at least [`Upkeep::min_fragments`] fragments are small (under half of Lance's target
//!   fragment size) or carry many deleted rows. It rewrites them in one `Rewrite` commit under the table's write
//!   lock, because a rewrite and a concurrent DELETE or UPDATE of the same fragments cannot both commit. Indexes are
//!   remapped by Lance, so nothing is lost.
//! - **a primary-key index** (BTREE, `<table>_pkey`) once a table with a one-column primary key has
//!   [`Upkeep::index_min_rows`] rows: every INSERT's key check is then an index lookup, not a scan.
//! - **index upkeep** when an index leaves at least [`Upkeep::index_min_rows`] rows (and a tenth of what it covers)
//!   unindexed: `optimize_indices` adds them. It runs without the write lock: Lance lets appends, updates and deletes
//!   commit over an index commit, and if the index commit is the one that conflicts it is simply retried next pass.
//!
//! The server runs a pass every [`Upkeep::interval`]; `CALL upkeep()` runs one now and reports what it did.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use lance::dataset::optimize::{compact_files, CompactionOptions};
use lance::index::DatasetIndexExt;
use lance::Dataset;
use lance_index::optimize::OptimizeOptions;
use lance_index::scalar::ScalarIndexParams;
use lance_index::IndexType;

use crate::catalog::META_PRIMARY_KEY;
use crate::database::{Database, DbInner};
use crate::error::Result;

/// When the background upkeep runs and what it acts on.
#[derive(Debug, Clone)]
pub struct Upkeep {
    /// Time between passes.
    pub interval: Duration,
    /// Compact once this many fragments are small or mostly deleted.
    pub min_fragments: usize,
    /// Fold rows into an index once this many (and at least a tenth of the rows it covers) are unindexed.
    pub index_min_rows: u64,
}

impl Default for Upkeep {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            min_fragments: 8,
            index_min_rows: 10_000,
        }
    }
}

/// What one pass did to one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpkeepReport {
    pub table: String,
    pub fragments_before: usize,
    pub fragments_after: usize,
    pub rows_indexed: u64,
    /// Why an action was skipped or failed (a conflict with a concurrent write is retried next pass).
    pub note: Option<String>,
}

fn compaction_options() -> CompactionOptions {
    CompactionOptions::default()
}

/// Fragments a compaction would rewrite: small ones, and ones with many deleted rows.
fn compactable(ds: &Dataset, options: &CompactionOptions) -> usize {
    let small = (options.target_rows_per_fragment / 2).max(1);
    ds.fragments()
        .iter()
        .filter(|f| {
            let physical = f.physical_rows.unwrap_or(0);
            let deleted = f
                .deletion_file
                .as_ref()
                .and_then(|d| d.num_deleted_rows)
                .unwrap_or(0);
            physical < small
                || (physical > 0
                    && deleted as f32 / physical as f32 > options.materialize_deletions_threshold)
        })
        .count()
}

/// Unindexed rows of the index that lags most, if that is enough to fold in.
async fn index_lag(ds: &Dataset, policy: &Upkeep) -> Result<Option<u64>> {
    let lag = crate::statements::index::user_indexes(ds)
        .await?
        .iter()
        .filter(|i| i.rows_unindexed >= policy.index_min_rows.max(i.rows_indexed / 10))
        .map(|i| i.rows_unindexed)
        .max();
    Ok(lag)
}

/// A one-column primary key that no index covers yet. The key check of every INSERT looks new keys up with an
/// `IN` filter, which a BTREE index answers without reading the column.
async fn unindexed_key(ds: &Dataset) -> Result<Option<String>> {
    let Some(pk) = ds.schema().metadata.get(META_PRIMARY_KEY) else {
        return Ok(None);
    };
    let columns: Vec<&str> = pk.split(',').filter(|c| !c.is_empty()).collect();
    let [column] = columns[..] else {
        return Ok(None);
    };
    let indexed = crate::statements::index::user_indexes(ds)
        .await?
        .iter()
        .any(|i| i.column == column);
    Ok((!indexed).then(|| column.to_string()))
}

impl Database {
    /// Run one upkeep pass over every table; reports the tables it acted on.
    pub async fn upkeep(&self, policy: &Upkeep) -> Result<Vec<UpkeepReport>> {
        let mut out = vec![];
        for table in self.schema_provider().lance_tables() {
            match Box::pin(self.upkeep_table(&table, policy)).await {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(target: "marrow::upkeep", "upkeep of {table} failed: {e}");
                    out.push(UpkeepReport {
                        table,
                        note: Some(e.to_string()),
                        ..Default::default()
                    });
                }
            }
        }
        Ok(out)
    }

    async fn upkeep_table(&self, table: &str, policy: &Upkeep) -> Result<Option<UpkeepReport>> {
        let provider = self.schema_provider();
        let options = compaction_options();
        let ds = provider.open_dataset(table).await?;
        let before = ds.fragments().len();
        let mut report = UpkeepReport {
            table: table.to_string(),
            fragments_before: before,
            fragments_after: before,
            ..Default::default()
        };
        let mut acted = false;
        if compactable(&ds, &options) >= policy.min_fragments.max(2) {
            let lock = self.write_lock(table);
            let _guard = lock.lock().await;
            // Decided again on the latest version, under the lock.
            let mut latest = Arc::unwrap_or_clone(provider.open_dataset(table).await?);
            if compactable(&latest, &options) >= policy.min_fragments.max(2) {
                let started = Instant::now();
                let m = compact_files(&mut latest, options, None).await?;
                report.fragments_after = latest.fragments().len();
                acted = true;
                self.bump_generation();
                tracing::info!(
                    target: "marrow::upkeep",
                    "compacted {table}: {} fragments into {} in {:.2}s",
                    m.fragments_removed,
                    m.fragments_added,
                    started.elapsed().as_secs_f64()
                );
            }
        }
        let mut latest = Arc::unwrap_or_clone(provider.open_dataset(table).await?);
        if let Some(column) = unindexed_key(&latest).await? {
            let rows = latest.count_rows(None).await? as u64;
            if rows >= policy.index_min_rows {
                let name = format!("{table}_pkey");
                let started = Instant::now();
                let params = ScalarIndexParams::new("btree".to_string());
                match latest
                    .create_index_builder(&[column.as_str()], IndexType::BTree, &params)
                    .name(name.clone())
                    .replace(false)
                    .await
                {
                    Ok(_) => {
                        acted = true;
                        report.rows_indexed = rows;
                        self.bump_generation();
                        tracing::info!(
                            target: "marrow::upkeep",
                            "built primary-key index {name} on {table}({column}), {rows} rows, in {:.2}s",
                            started.elapsed().as_secs_f64()
                        );
                    }
                    Err(e) => report.note = Some(format!("primary-key index deferred: {e}")),
                }
                latest = Arc::unwrap_or_clone(provider.open_dataset(table).await?);
            }
        }
        if let Some(lag) = index_lag(&latest, policy).await? {
            let started = Instant::now();
            match latest.optimize_indices(&OptimizeOptions::default()).await {
                Ok(()) => {
                    report.rows_indexed = lag;
                    report.fragments_after = latest.fragments().len();
                    acted = true;
                    self.bump_generation();
                    tracing::info!(
                        target: "marrow::upkeep",
                        "indexed {lag} new rows of {table} in {:.2}s",
                        started.elapsed().as_secs_f64()
                    );
                }
                // Most likely a concurrent rewrite of the same fragments: the next pass tries again.
                Err(e) => report.note = Some(format!("index upkeep deferred: {e}")),
            }
        }
        Ok((acted || report.note.is_some()).then_some(report))
    }

    /// Run upkeep passes every `policy.interval` until the database is dropped.
    pub(crate) fn spawn_upkeep(&self, policy: Upkeep) {
        let weak: Weak<DbInner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(policy.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let db = Database { inner };
                if let Err(e) = db.upkeep(&policy).await {
                    tracing::warn!(target: "marrow::upkeep", "upkeep pass failed: {e}");
                }
            }
        });
    }
}
