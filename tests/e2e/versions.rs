//! Versions and exports under concurrency and failure: a reader keeps its version through compaction and cleanup,
//! and a failed export leaves no file behind.

use arrow::array::{Array, Int64Array, UInt64Array};
use futures::StreamExt;
use marrow_engine::{Config, Database, Session};

async fn rows(s: &Session, sql: &str) -> Vec<arrow::array::RecordBatch> {
    s.execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect()
        .await
        .unwrap()
        .1
}

/// The first column of a one-row Int64 result (a `count(*)`).
fn first_i64(batches: &[arrow::array::RecordBatch]) -> i64 {
    batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0)
}

fn u64_at(batches: &[arrow::array::RecordBatch], column: &str) -> u64 {
    let b = &batches[0];
    b.column(b.schema().index_of(column).unwrap())
        .as_any()
        .downcast_ref::<UInt64Array>()
        .unwrap()
        .value(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_keeps_its_version_through_compaction_and_cleanup() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(Config::new(dir.path())).await.unwrap();
    let s = db.session();
    s.execute("CREATE TABLE t (id BIGINT, body VARCHAR)")
        .await
        .unwrap();
    // Ten fragments of 5,000 rows: compaction has work to do, and the scan yields several batches.
    for i in 0..10 {
        s.execute(&format!(
            "INSERT INTO t SELECT value + {}, repeat('x', 100) FROM generate_series(1, 5000)",
            i * 5000
        ))
        .await
        .unwrap();
    }
    let expected_sum: i64 = (1..=50_000).sum();

    // A reader at the current version, and one at an older version, each part-way through its rows.
    let mut current = s.execute("SELECT id FROM t").await.unwrap().into_stream();
    let mut old = s
        .execute("SELECT id FROM t VERSION AS OF 6")
        .await
        .unwrap()
        .into_stream();
    let first = current.next().await.unwrap().unwrap();
    let mut seen = vec![first];
    let old_first = old.next().await.unwrap().unwrap();

    // Meanwhile: delete, compact and clean up everything the retention allows (nothing is retained by age).
    let w = db.session();
    w.execute("DELETE FROM t WHERE id % 2 = 0").await.unwrap();
    let compacted = rows(&w, "CALL compact_table('t')").await;
    assert!(u64_at(&compacted, "fragments_removed") >= 10);
    w.execute("SET marrow.version_retention = '0 seconds'")
        .await
        .unwrap();
    let cleaned = rows(&w, "CALL cleanup_versions('t')").await;
    // Version 6 (the old reader's) and everything after it stay; versions 1-5 go.
    assert_eq!(u64_at(&cleaned, "oldest_kept"), 6);
    assert_eq!(u64_at(&cleaned, "versions_removed"), 5);

    while let Some(b) = current.next().await {
        seen.push(b.unwrap());
    }
    let ids = |batches: &[arrow::array::RecordBatch]| -> (usize, i64) {
        batches.iter().fold((0, 0), |(n, s), b| {
            let a = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            (n + a.len(), s + a.iter().flatten().sum::<i64>())
        })
    };
    assert_eq!(ids(&seen), (50_000, expected_sum));
    let mut old_seen = vec![old_first];
    while let Some(b) = old.next().await {
        old_seen.push(b.unwrap());
    }
    assert_eq!(ids(&old_seen).0, 25_000);

    // Once the readers are gone, cleanup removes their versions too.
    drop((current, old, seen, old_seen));
    let cleaned = rows(&w, "CALL cleanup_versions('t')").await;
    let latest = rows(&w, "SELECT max(version) AS v FROM marrow_versions('t')").await;
    assert_eq!(u64_at(&cleaned, "oldest_kept"), u64_at(&latest, "v"));
    let count = rows(&w, "SELECT count(*) FROM t").await;
    let n = first_i64(&count);
    assert_eq!(n, 25_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_export_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("export");
    std::fs::create_dir_all(&export).unwrap();
    let mut config = Config::new(dir.path().join("data"));
    config.export_root = Some(export.clone());
    let db = Database::open(config).await.unwrap();
    let s = db.session();
    s.execute("CREATE TABLE t (id BIGINT, n VARCHAR)")
        .await
        .unwrap();
    // 20,000 good rows, then one that fails to cast: the writer has started when the error comes.
    s.execute("INSERT INTO t SELECT value AS id, CAST(value AS VARCHAR) AS n FROM generate_series(1, 20000)")
        .await
        .unwrap();
    s.execute("INSERT INTO t VALUES (20001, 'not a number')")
        .await
        .unwrap();
    for format in ["CSV", "PARQUET", "JSON", "ARROW"] {
        let err = s
            .execute(&format!(
                "COPY (SELECT id, CAST(n AS BIGINT) AS n FROM t ORDER BY id) TO 'out.{}' STORED AS {format}",
                format.to_lowercase()
            ))
            .await
            .map(|_| ())
            .unwrap_err();
        assert!(
            err.message().contains("not a number") || err.message().contains("Cast"),
            "{err}"
        );
        let left: Vec<_> = std::fs::read_dir(&export).unwrap().collect();
        assert!(left.is_empty(), "{format}: files left behind: {left:?}");
    }
    // A good export replaces nothing until it is complete, and reports its row count.
    let out = rows(
        &s,
        "COPY (SELECT id, n FROM t WHERE id <= 20000) TO 'out.csv'",
    )
    .await;
    assert_eq!(u64_at(&out, "count"), 20_000);
    let names: Vec<String> = std::fs::read_dir(&export)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["out.csv".to_string()]);
    let text = std::fs::read_to_string(export.join("out.csv")).unwrap();
    assert_eq!(text.lines().count(), 20_001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_racing_writers_leaves_a_consistent_table() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(Config::new(dir.path())).await.unwrap();
    let s = db.session();
    s.execute("CREATE TABLE t (id BIGINT)").await.unwrap();
    s.execute("INSERT INTO t SELECT value FROM generate_series(1, 100)")
        .await
        .unwrap();
    let writer = {
        let db = db.clone();
        tokio::spawn(async move {
            let w = db.session();
            for i in 0..20 {
                w.execute(&format!(
                    "INSERT INTO t SELECT value + {} FROM generate_series(1, 10)",
                    1000 + i * 10
                ))
                .await
                .unwrap();
            }
        })
    };
    let mut restores = vec![];
    for _ in 0..5 {
        let out = rows(&s, "CALL restore_table('t', 2)").await;
        restores.push(u64_at(&out, "new_version"));
        tokio::task::yield_now().await;
    }
    writer.await.unwrap();
    // Every statement succeeded; the table is version 2 plus exactly the appends committed after the last restore.
    let last = *restores.iter().max().unwrap();
    let appends_after = rows(
        &s,
        &format!(
            "SELECT count(*) AS n FROM marrow_versions('t') WHERE operation = 'Append' AND version > {last}"
        ),
    )
    .await;
    let appends_after = first_i64(&appends_after);
    let count = rows(&s, "SELECT count(*) FROM t").await;
    let n = first_i64(&count);
    assert_eq!(n, 100 + 10 * appends_after);
}
