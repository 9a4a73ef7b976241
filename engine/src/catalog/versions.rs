//! Table versions: every commit is a Lance version. Opening old versions, the versions a query reads, cleanup.
//! Time travel in SQL is `session/time_travel.rs`; `marrow_versions(t)` lists versions; the procedures
//! `restore_table`, `tag_version`, `drop_tag`, `compact_table`, `cleanup_versions` change them.
//!
//! Lance has no reader leases. Inside this process, every dataset handle a query holds is registered with the
//! catalog (`MarrowSchema::reading_versions`); cleanup never removes the oldest version still being read, nor any
//! version after it. Readers in other processes are protected only by the retention period.

use lance::dataset::cleanup::CleanupPolicyBuilder;
use lance::Dataset;

use crate::catalog::MarrowSchema;
use crate::error::{Error, Result};

fn micros_text(us: i64) -> String {
    arrow::temporal_conversions::timestamp_us_to_datetime(us)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.6f UTC").to_string())
        .unwrap_or_else(|| us.to_string())
}

/// The latest version committed at or before `at` (microseconds since the epoch, UTC).
pub(crate) async fn version_at(schema: &MarrowSchema, table: &str, at: i64) -> Result<u64> {
    let ds = schema.open_dataset(table).await?;
    let versions = ds.versions().await?;
    let found = versions
        .iter()
        .rev()
        .find(|v| v.timestamp.timestamp_micros() <= at);
    match (found, versions.first()) {
        (Some(v), _) => Ok(v.version),
        (None, Some(first)) => Err(Error::not_found(format!(
            "table '{table}' did not exist at {}: its oldest kept version, {}, was committed at {}",
            micros_text(at),
            first.version,
            micros_text(first.timestamp.timestamp_micros())
        ))),
        (None, None) => Err(Error::not_found(format!("table '{table}' has no versions"))),
    }
}

/// Open version `version` of a table, with a clear error when it does not exist (never committed, or cleaned up).
pub(crate) async fn checkout(schema: &MarrowSchema, table: &str, version: u64) -> Result<Dataset> {
    let ds = schema.open_dataset(table).await?;
    if version == ds.version_id() {
        return Ok(ds.as_ref().clone());
    }
    match ds.checkout_version(version).await {
        Ok(d) => Ok(d),
        Err(lance::Error::DatasetNotFound { .. }) | Err(lance::Error::NotFound { .. }) => {
            Err(no_such_version(table, version, ds.version_id()))
        }
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn no_such_version(table: &str, version: u64, latest: u64) -> Error {
    Error::not_found(format!(
        "table '{table}' has no version {version} (the latest is {latest}; \
         SELECT * FROM marrow_versions('{table}') lists the versions kept)"
    ))
}

pub(crate) struct CleanupStats {
    pub old_versions: u64,
    pub bytes_removed: u64,
    pub oldest_kept: u64,
}

/// Remove versions committed more than `retention_us` ago (the caller holds the table's write lock), except tagged ones, the latest, and every version from
/// the oldest one a query in this process still reads onwards.
pub(crate) async fn cleanup(
    schema: &MarrowSchema,
    table: &str,
    retention_us: i64,
) -> Result<CleanupStats> {
    let latest = schema.open_dataset(table).await?;
    let reading = schema.reading_versions(table);
    // Only versions older than the oldest one still being read (and than the latest) are candidates.
    let floor = reading
        .iter()
        .copied()
        .chain([latest.version_id()])
        .min()
        .unwrap_or(latest.version_id());
    let candidates: Vec<u64> = latest
        .versions()
        .await?
        .iter()
        .map(|v| v.version)
        .filter(|v| *v < floor)
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default();
    let before = arrow::temporal_conversions::timestamp_us_to_datetime(now - retention_us)
        .ok_or_else(|| Error::invalid("retention period out of range"))?
        .and_utc();
    let (old_versions, bytes_removed) = if candidates.is_empty() {
        (0, 0)
    } else {
        let policy = CleanupPolicyBuilder::default()
            .before_timestamp(before)
            .versions(candidates)?
            .error_if_tagged_old_versions(false)
            .build();
        let stats = latest.cleanup_with_policy(policy).await?;
        (stats.old_versions, stats.bytes_removed)
    };
    let oldest_kept = latest
        .versions()
        .await?
        .first()
        .map(|v| v.version)
        .unwrap_or(latest.version_id());
    Ok(CleanupStats {
        old_versions,
        bytes_removed,
        oldest_kept,
    })
}

pub(crate) fn tag_error(
    e: lance::Error,
    table: &str,
    tag: &str,
    version: u64,
    latest: u64,
) -> Error {
    match e {
        lance::Error::RefConflict { .. } => Error::new(
            crate::ErrorKind::AlreadyExists,
            format!("table '{table}' already has a tag '{tag}'; CALL drop_tag first"),
        ),
        lance::Error::VersionNotFound { .. } => no_such_version(table, version, latest),
        lance::Error::InvalidRef { .. } => Error::invalid(format!(
            "'{tag}' is not a valid tag name: use letters, digits, '.', '-' and '_'"
        )),
        other => other.into(),
    }
}
