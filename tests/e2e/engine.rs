//! Process-level guarantees of the data directory: one writer process at a time, and a kill -9 during a write
//! leaves the last committed state readable. Child processes are this test binary re-executed in a child role.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use marrow_engine::{Config, Database, ErrorKind};

const CHILD_ENV: &str = "MARROW_TEST_CHILD";
const BATCH: usize = 2000;
/// Rows per small keyed statement.
const SMALL: usize = 10;

async fn count(db: &Database, table: &str) -> u64 {
    let (_, batches) = db
        .session()
        .execute(&format!("SELECT count(*) FROM {table}"))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap()
        .value(0) as u64
}

/// The child role: `hold DIR` keeps the directory open until killed; `write DIR` commits batches forever from four
/// concurrent writers to `t` and two writers of small keyed statements to `k`, printing the totals acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_role() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (role, dir) = spec.split_once(' ').expect("role and dir");
    let db = Database::open(Config::new(dir)).await.expect("child opens");
    println!("ready");
    if role == "write" {
        let session = db.session();
        session
            .execute("CREATE TABLE IF NOT EXISTS t (id BIGINT, payload VARCHAR)")
            .await
            .unwrap();
        session
            .execute("CREATE TABLE IF NOT EXISTS k (id BIGINT PRIMARY KEY, payload VARCHAR)")
            .await
            .unwrap();
        // Four writers at once, so that kills land inside group commits of several statements, and two writers of
        // small keyed statements, whose rows a group's leader writes several statements to one file. Each prints
        // the rows acknowledged so far.
        let mut writers = spawn_writers(&db, "t", 4, BATCH, "repeat('x', 200)", "committed");
        writers.extend(spawn_writers(&db, "k", 2, SMALL, "'small'", "keyed"));
        for w in writers {
            w.await.unwrap();
        }
    }
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
    }
}

/// `count` sessions inserting `rows` rows per statement into `table` forever (distinct ids), printing
/// `{label} {total}` after each acknowledged statement.
fn spawn_writers(
    db: &Database,
    table: &'static str,
    count: usize,
    rows: usize,
    payload: &'static str,
    label: &'static str,
) -> Vec<tokio::task::JoinHandle<()>> {
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    (0..count)
        .map(|w| {
            let (session, acked) = (db.session(), acked.clone());
            tokio::spawn(async move {
                for round in 0usize.. {
                    let base = (round * count + w) * rows;
                    let sql = format!(
                        "INSERT INTO {table} SELECT value + {base}, {payload} FROM generate_series(1, {rows})"
                    );
                    session.execute(&sql).await.unwrap();
                    let total = acked.fetch_add(rows, std::sync::atomic::Ordering::SeqCst) + rows;
                    println!("{label} {total}");
                }
            })
        })
        .collect()
}

fn spawn_child(
    role: &str,
    dir: &std::path::Path,
) -> (std::process::Child, impl Iterator<Item = String>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "engine::child_role",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{role} {}", dir.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let lines = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok);
    (child, lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_opener_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = Database::open(Config::new(dir.path())).await.unwrap();
    let err = Database::open(Config::new(dir.path())).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Locked, "{err}");
    assert!(
        err.message().contains("in use by another Marrow process"),
        "{err}"
    );
    drop(first);
    Database::open(Config::new(dir.path()))
        .await
        .expect("lock released on drop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_process_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, mut lines) = spawn_child("hold", dir.path());
    assert!(
        lines.any(|l| l.ends_with("ready")),
        "child did not open the directory"
    );
    let err = Database::open(Config::new(dir.path())).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Locked, "{err}");
    assert!(
        err.message().contains(&format!("pid {}", child.id())),
        "{err}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    Database::open(Config::new(dir.path()))
        .await
        .expect("lock released when the holder dies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_writes_keeps_last_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, lines) = spawn_child("write", dir.path());
    let (mut last, mut last_keyed) = (0usize, 0usize);
    for line in lines {
        if let Some(n) = line.strip_prefix("committed ") {
            last = last.max(n.parse().unwrap());
        }
        if let Some(n) = line.strip_prefix("keyed ") {
            last_keyed = last_keyed.max(n.parse().unwrap());
        }
        if last >= 5 * BATCH && last_keyed >= 20 * SMALL {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL, most likely in the middle of the next commit
    child.wait().unwrap();
    assert!(
        last >= 5 * BATCH && last_keyed >= 20 * SMALL,
        "child stopped early"
    );
    let db = Database::open(Config::new(dir.path()))
        .await
        .expect("reopens after kill -9");
    let n = count(&db, "t").await as usize;
    assert!(n >= last, "lost committed rows: {n} < {last}");
    assert_eq!(n % BATCH, 0, "a partial statement became visible: {n} rows");
    let k = count(&db, "k").await as usize;
    assert!(
        k >= last_keyed,
        "lost committed small writes: {k} < {last_keyed}"
    );
    assert_eq!(
        k % SMALL,
        0,
        "part of a small statement became visible: {k} rows"
    );
    let (_, b) = db
        .session()
        .execute("SELECT count(DISTINCT id) FROM k")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let distinct = b[0]
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap()
        .value(0);
    assert_eq!(distinct as usize, k, "a key was written twice");
    let session = db.session();
    session
        .execute("INSERT INTO t VALUES (-1, 'after')")
        .await
        .expect("writable after recovery");
    assert_eq!(count(&db, "t").await as usize, n + 1);
}

/// Writers and readers at once, in one process: every acknowledged write is there at the end, and a reader never
/// sees half a statement (each INSERT adds 100 rows, each UPDATE sets all of a writer's rows to one round's flag).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_and_readers_see_whole_statements() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(Config::new(dir.path())).await.unwrap();
    db.session()
        .execute("CREATE TABLE t (id BIGINT, writer BIGINT, flag BIGINT)")
        .await
        .unwrap();
    const WRITERS: i64 = 4;
    const ROUNDS: i64 = 6;
    let mut tasks = vec![];
    for w in 0..WRITERS {
        let s = db.session();
        tasks.push(tokio::spawn(async move {
            for r in 0..ROUNDS {
                let base = (w * ROUNDS + r) * 100;
                s.execute(&format!(
                    "INSERT INTO t SELECT value + {base} AS id, {w} AS writer, -1 AS flag FROM generate_series(0, 99)"
                ))
                .await
                .unwrap();
                // Every row of this writer to this round's flag, as one statement.
                s.execute(&format!("UPDATE t SET flag = {r} WHERE writer = {w}"))
                .await
                .unwrap();
            }
        }));
    }
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = vec![];
    for _ in 0..4 {
        let s = db.session();
        let done = done.clone();
        readers.push(tokio::spawn(async move {
            let mut last = 0;
            let mut reads = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let (_, b) = s
                    .execute("SELECT writer, count(*), count(DISTINCT CASE WHEN flag >= 0 THEN flag END) FROM t GROUP BY writer")
                    .await
                    .unwrap()
                    .collect()
                    .await
                    .unwrap();
                let mut total = 0;
                for batch in &b {
                    let n = batch.column(1).as_any().downcast_ref::<arrow::array::Int64Array>().unwrap();
                    let flags = batch.column(2).as_any().downcast_ref::<arrow::array::Int64Array>().unwrap();
                    for i in 0..batch.num_rows() {
                        assert_eq!(n.value(i) % 100, 0, "a reader saw part of an INSERT");
                        assert!(flags.value(i) <= 1, "a reader saw part of an UPDATE");
                        total += n.value(i);
                    }
                }
                assert!(total >= last, "rows disappeared: {last} then {total}");
                last = total;
                reads += 1;
            }
            reads
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        assert!(r.await.unwrap() > 0);
    }
    assert_eq!(count(&db, "t").await, (WRITERS * ROUNDS * 100) as u64);
}

/// Many small keyed writes at once (each written by a group's leader together with others'): every acknowledged
/// row is there once, and of the writers that all try one shared key exactly one succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_small_keyed_writes_keep_keys_exact() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(Config::new(dir.path())).await.unwrap();
    db.session()
        .execute(
            "CREATE TABLE e (id VARCHAR PRIMARY KEY, writer BIGINT, at TIMESTAMP DEFAULT now())",
        )
        .await
        .unwrap();
    const WRITERS: i64 = 8;
    const ROWS: i64 = 25;
    let mut tasks = vec![];
    for w in 0..WRITERS {
        let s = db.session();
        tasks.push(tokio::spawn(async move {
            let mut shared = 0;
            for r in 0..ROWS {
                s.execute(&format!(
                    "INSERT INTO e (id, writer) VALUES ('{w}-{r}', {w})"
                ))
                .await
                .unwrap();
                if r == ROWS / 2 {
                    match s
                        .execute(&format!(
                            "INSERT INTO e (id, writer) VALUES ('shared', {w})"
                        ))
                        .await
                    {
                        Ok(_) => shared += 1,
                        Err(e) => assert_eq!(e.kind(), ErrorKind::Constraint, "{e}"),
                    }
                }
            }
            shared
        }));
    }
    let mut shared = 0;
    for t in tasks {
        shared += t.await.unwrap();
    }
    assert_eq!(shared, 1, "one writer of the shared key succeeds");
    assert_eq!(count(&db, "e").await, (WRITERS * ROWS + 1) as u64);
    let (_, b) = db
        .session()
        .execute("SELECT count(DISTINCT id), count(at) FROM e")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let col = |i: usize| {
        b[0].column(i)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap()
            .value(0)
    };
    assert_eq!(col(0), WRITERS * ROWS + 1, "every key once");
    assert_eq!(col(1), WRITERS * ROWS + 1, "defaults filled");
    // A key written by the group is refused afterwards, whoever wrote it.
    let err = db
        .session()
        .execute("INSERT INTO e (id, writer) VALUES ('3-7', 99)")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Constraint, "{err}");
}

/// A data directory written before `memories.expires_at` existed gains the column when it is opened (all NULL:
/// nothing expires), its rows and the full-text index intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_memories_table_gains_the_new_columns() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Database::open(Config::new(dir.path())).await.unwrap();
        let vector = format!("[{}]", vec!["0.5"; 384].join(", "));
        db.session()
            .execute(&format!(
                "INSERT INTO memories (id, content, embedding) VALUES ('old', 'written by an older Marrow', {vector})"
            ))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
    }
    let path = dir.path().join("memories.lance");
    let mut ds = lance::Dataset::open(path.to_str().unwrap()).await.unwrap();
    ds.drop_columns(&["expires_at"]).await.unwrap();
    assert!(ds.schema().field("expires_at").is_none());

    let db = Database::open(Config::new(dir.path())).await.unwrap();
    let (_, batches) = db
        .session()
        .execute(
            "SELECT id, expires_at IS NULL AS never, _score > 0 AS found \
             FROM fts_search('memories', 'content', 'older', 5)",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let text = arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    assert!(text.contains("| old | true  | true  |"), "{text}");
    assert_eq!(count(&db, "memories").await, 1);
}
