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

/// A query prepared without parameters (a one-shot Flight SQL statement: GetFlightInfo, then DoGet) runs on the plan
/// its prepare made only while that plan reads what a fresh one would: a write, DDL or `SET` in between, or a commit
/// to a table it reads, makes it plan again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_plan_is_reused_only_while_current() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(Config::new(dir.path())).await.unwrap();
    let s = db.session();
    rows(&s, "CREATE TABLE t (id BIGINT)").await;
    rows(&s, "INSERT INTO t VALUES (1), (2)").await;
    let counted = async |p: &marrow_engine::PreparedStatement| {
        let (_, batches) = p.execute(&s, None).await.unwrap().collect().await.unwrap();
        first_i64(&batches)
    };

    let p = s.prepare_statement("SELECT count(*) FROM t").await.unwrap();
    assert_eq!(counted(&p).await, 2);
    assert_eq!(s.ready_plan_hits(), 1, "run on the plan made at prepare");
    assert_eq!(counted(&p).await, 2);
    assert_eq!(s.ready_plan_hits(), 2);

    // A write from another session between prepare and run: planned again, and the new row is seen.
    let p = s.prepare_statement("SELECT count(*) FROM t").await.unwrap();
    rows(&db.session(), "INSERT INTO t VALUES (3)").await;
    assert_eq!(counted(&p).await, 3);
    assert_eq!(s.ready_plan_hits(), 2);
    // Kept plans of that statement are current again after the next prepare.
    let p = s.prepare_statement("SELECT count(*) FROM t").await.unwrap();
    assert_eq!(counted(&p).await, 3);
    assert_eq!(s.ready_plan_hits(), 3);

    // DDL in between: the table the plan read is replaced.
    let p = s.prepare_statement("SELECT count(*) FROM t").await.unwrap();
    rows(&s, "CREATE OR REPLACE TABLE t (id BIGINT)").await;
    assert_eq!(counted(&p).await, 0);
    assert_eq!(s.ready_plan_hits(), 3);

    // Sources whose versions a kept plan cannot check are planned at every run.
    let p = s
        .prepare_statement("SELECT count(*) FROM information_schema.tables WHERE table_name = 'u'")
        .await
        .unwrap();
    rows(&s, "CREATE TABLE u (id BIGINT)").await;
    assert_eq!(counted(&p).await, 1);
    let p = s
        .prepare_statement("SELECT count(*) FROM information_schema.tables WHERE table_name = 'u'")
        .await
        .unwrap();
    assert_eq!(counted(&p).await, 1);
    assert_eq!(s.ready_plan_hits(), 3);

    // Parameters: planned with the values at each run.
    let p = s
        .prepare_statement("SELECT count(*) FROM t WHERE id > $1")
        .await
        .unwrap();
    rows(&s, "INSERT INTO t VALUES (1), (5)").await;
    let params = p
        .bind(&[arrow::array::RecordBatch::try_from_iter([(
            "$1",
            std::sync::Arc::new(Int64Array::from(vec![2])) as arrow::array::ArrayRef,
        )])
        .unwrap()])
        .unwrap();
    let (_, batches) = p
        .execute(&s, Some(params))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(first_i64(&batches), 1);
    assert_eq!(s.ready_plan_hits(), 3);

    // Off with the plan cache.
    rows(&s, "SET marrow.plan_cache = false").await;
    let p = s.prepare_statement("SELECT count(*) FROM t").await.unwrap();
    assert_eq!(counted(&p).await, 2);
    assert_eq!(s.ready_plan_hits(), 3);
}

/// A plan that folds the clock (`now()`, directly or through a view) is made at each run, so a statement prepared
/// once reads the time it runs at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_plan_that_reads_the_clock_is_made_at_each_run() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(Config::new(dir.path())).await.unwrap();
    let s = db.session();
    rows(&s, "CREATE VIEW clock AS SELECT now() AS t").await;
    for sql in [
        "SELECT CAST(now() AS BIGINT)",
        "SELECT CAST(t AS BIGINT) FROM clock",
    ] {
        let p = s.prepare_statement(sql).await.unwrap();
        let at = async || {
            let (_, batches) = p.execute(&s, None).await.unwrap().collect().await.unwrap();
            first_i64(&batches)
        };
        let first = at().await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        assert!(
            at().await > first,
            "{sql}: the second run reads a later clock"
        );
    }
    assert_eq!(s.ready_plan_hits(), 0);
}
