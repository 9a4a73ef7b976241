//! The direct ANN path must answer exactly what Lance's scanner answers on the same index and settings: for every
//! index kind and metric, before and after deletes, over many query vectors.

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use marrow_engine::{Config, Database, Session};

const DIM: usize = 16;
const ROWS: usize = 3000;

/// Deterministic values in [-1, 1).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn vector(&mut self) -> String {
        let v: Vec<String> = (0..DIM).map(|_| format!("{:.6}", self.next())).collect();
        format!("[{}]", v.join(","))
    }
}

async fn run(session: &Session, sql: &str) -> Vec<RecordBatch> {
    session
        .execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect()
        .await
        .unwrap()
        .1
}

async fn ids(session: &Session, sql: &str) -> Vec<i64> {
    run(session, sql)
        .await
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect()
}

async fn plan(session: &Session, sql: &str) -> String {
    run(session, &format!("EXPLAIN {sql}"))
        .await
        .iter()
        .flat_map(|b| {
            b.column(1)
                .as_string::<i32>()
                .iter()
                .flatten()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every query's ids through the direct path equal the scanner's; returns how many queries were compared.
async fn compare(session: &Session, order: &str, queries: &[String], what: &str) -> usize {
    for (i, q) in queries.iter().enumerate() {
        let sql = format!(
            "SELECT id FROM mem ORDER BY {} LIMIT 10",
            order.replace("$q", q)
        );
        if i == 0 {
            let p = plan(session, &sql).await;
            assert!(p.contains("search=direct"), "{what}: not direct:\n{p}");
        }
        let direct = ids(session, &sql).await;
        run(session, "SET marrow.direct_search = false").await;
        if i == 0 {
            let p = plan(session, &sql).await;
            assert!(p.contains("search=lance scanner"), "{what}:\n{p}");
        }
        let scanner = ids(session, &sql).await;
        run(session, "SET marrow.direct_search = true").await;
        assert_eq!(direct.len(), 10, "{what}, query {i}");
        assert_eq!(direct, scanner, "{what}, query {i}: direct vs scanner");
    }
    queries.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_search_matches_lance_scanner() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(Config::new(dir.path())).await.unwrap();
    let session = db.session();
    let mut rng = Lcg(7);
    run(
        &session,
        &format!("CREATE TABLE mem (id BIGINT PRIMARY KEY, emb VECTOR({DIM}))"),
    )
    .await;
    for chunk in 0..3 {
        let rows: Vec<String> = (0..ROWS / 3)
            .map(|i| format!("({}, {})", chunk * ROWS / 3 + i, rng.vector()))
            .collect();
        run(
            &session,
            &format!("INSERT INTO mem VALUES {}", rows.join(",")),
        )
        .await;
    }
    let queries: Vec<String> = (0..25).map(|_| rng.vector()).collect();
    let cases = [
        (
            "IVF_PQ l2",
            "CREATE INDEX mem_emb ON mem USING IVF_PQ (emb) WITH (metric = 'l2', num_partitions = 8, num_sub_vectors = 4)",
            "l2_distance(emb, $q)",
            ["SET marrow.nprobes = 3", "SET marrow.refine_factor = 2", "SET marrow.ef = 0"],
        ),
        (
            "IVF_HNSW_SQ cosine",
            "CREATE INDEX mem_emb ON mem USING IVF_HNSW_SQ (emb) WITH (metric = 'cosine', num_partitions = 4)",
            "cosine_distance(emb, $q)",
            ["SET marrow.nprobes = 2", "SET marrow.refine_factor = 0", "SET marrow.ef = 40"],
        ),
        (
            "IVF_FLAT dot",
            "CREATE INDEX mem_emb ON mem USING IVF_FLAT (emb) WITH (metric = 'dot', num_partitions = 6)",
            "inner_product(emb, $q) DESC",
            ["SET marrow.nprobes = 2", "SET marrow.refine_factor = 0", "SET marrow.ef = 0"],
        ),
    ];
    let mut compared = 0;
    for (what, create, order, settings) in cases {
        run(&session, "DROP INDEX IF EXISTS mem_emb").await;
        run(&session, create).await;
        for s in settings {
            run(&session, s).await;
        }
        compared += compare(&session, order, &queries, what).await;
    }
    // Delete the current nearest rows of every query: neither path may return them, and both still agree.
    let mut gone = vec![];
    for q in &queries {
        let sql = format!("SELECT id FROM mem ORDER BY inner_product(emb, {q}) DESC LIMIT 2");
        gone.extend(ids(&session, &sql).await);
    }
    let list: Vec<String> = gone.iter().map(i64::to_string).collect();
    run(
        &session,
        &format!("DELETE FROM mem WHERE id IN ({})", list.join(",")),
    )
    .await;
    compared += compare(
        &session,
        "inner_product(emb, $q) DESC",
        &queries,
        "IVF_FLAT dot after deletes",
    )
    .await;
    for q in &queries {
        let sql = format!("SELECT id FROM mem ORDER BY inner_product(emb, {q}) DESC LIMIT 10");
        let found = ids(&session, &sql).await;
        assert!(
            found.iter().all(|id| !gone.contains(id)),
            "a deleted row came back: {found:?}"
        );
    }
    assert_eq!(compared, 4 * queries.len());
}
