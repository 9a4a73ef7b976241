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
            "IVF_HNSW_FLAT l2",
            "CREATE INDEX mem_emb ON mem USING IVF_HNSW_FLAT (emb) WITH (metric = 'l2', num_partitions = 4)",
            "l2_distance(emb, $q)",
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
    assert_eq!(compared, 5 * queries.len());
}

fn vector_param(v: &[f32]) -> datafusion::common::ParamValues {
    let list =
        arrow::array::ListArray::from_iter_primitive::<arrow::datatypes::Float32Type, _, _>(vec![
            Some(v.iter().map(|x| Some(*x)).collect::<Vec<_>>()),
        ]);
    datafusion::common::ParamValues::List(vec![datafusion::common::ScalarValue::List(
        std::sync::Arc::new(list),
    )
    .into()])
}

/// (id, distance) rows of a query with `$1` bound to `v`, or the error's text.
async fn bound(session: &Session, sql: &str, v: &[f32]) -> Result<Vec<(i64, f64)>, String> {
    pairs(session, sql, vector_param(v)).await
}

/// The (BIGINT, DOUBLE) rows of a query with `params` bound, or the error's text.
async fn pairs(
    session: &Session,
    sql: &str,
    params: datafusion::common::ParamValues,
) -> Result<Vec<(i64, f64)>, String> {
    let out = session
        .execute_with_params(sql, Some(params))
        .await
        .map_err(|e| e.to_string())?;
    let (_, batches) = out.collect().await.map_err(|e| e.to_string())?;
    Ok(batches
        .iter()
        .flat_map(|b| {
            let ids = b.column(0).as_primitive::<Int64Type>().values().to_vec();
            let d = b
                .column(1)
                .as_primitive::<arrow::datatypes::Float64Type>()
                .values()
                .to_vec();
            ids.into_iter().zip(d)
        })
        .collect())
}

/// A statement run again with new vector parameters reuses its plan, and answers exactly what planning it afresh
/// answers: for new vectors, after writes, deletes, index and setting changes, and for bad values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_cache_answers_as_planning_does() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(Config::new(dir.path())).await.unwrap();
    let session = db.session();
    let mut rng = Lcg(11);
    run(
        &session,
        &format!("CREATE TABLE mem (id BIGINT PRIMARY KEY, emb VECTOR({DIM}))"),
    )
    .await;
    let rows: Vec<String> = (0..ROWS)
        .map(|i| format!("({i}, {})", rng.vector()))
        .collect();
    run(
        &session,
        &format!("INSERT INTO mem VALUES {}", rows.join(",")),
    )
    .await;
    run(
        &session,
        "CREATE INDEX mem_emb ON mem USING IVF_FLAT (emb) WITH (metric = 'cosine', num_partitions = 4)",
    )
    .await;
    run(&session, "SET marrow.nprobes = 2").await;
    let queries: Vec<Vec<f32>> = (0..20)
        .map(|_| (0..DIM).map(|_| rng.next()).collect())
        .collect();
    let sql = "SELECT id, cosine_distance(emb, $1) AS d FROM mem ORDER BY d LIMIT 10";
    let folded = "SELECT id, cosine_distance(emb, normalize($1)) AS d FROM mem ORDER BY d LIMIT 10";

    // Every query planned afresh, then through the cache: the same rows and distances.
    let answers = async |session: &Session, sql: &str| {
        let mut out = vec![];
        for q in &queries {
            out.push(bound(session, sql, q).await.unwrap());
        }
        out
    };
    run(&session, "SET marrow.plan_cache = false").await;
    let fresh = answers(&session, sql).await;
    let fresh_folded = answers(&session, folded).await;
    assert_eq!(session.plan_cache_stats(), (0, 0));
    run(&session, "SET marrow.plan_cache = true").await;
    let cached = answers(&session, sql).await;
    assert_eq!(cached, fresh);
    let (plans, hits) = session.plan_cache_stats();
    assert_eq!(
        (plans, hits),
        (1, queries.len() as u64 - 1),
        "the plan is kept and reused"
    );
    assert!(
        fresh.windows(2).all(|w| w[0] != w[1]),
        "queries give different rows"
    );
    // normalize($1) is folded into a new constant by the optimizer: not substitutable, so never reused.
    assert_eq!(answers(&session, folded).await, fresh_folded);
    assert_eq!(session.plan_cache_stats().1, hits);

    // Bad values through a kept plan fail as planning fails, and the plan keeps working afterwards.
    let wrong_dim = bound(&session, sql, &[0.5; 3]).await.unwrap_err();
    assert!(
        wrong_dim.contains("query vector has 3 dimensions"),
        "{wrong_dim}"
    );
    let mut nan = queries[0].clone();
    nan[1] = f32::NAN;
    let nan = bound(&session, sql, &nan).await.unwrap_err();
    assert!(nan.contains("NaN"), "{nan}");
    assert_eq!(bound(&session, sql, &queries[3]).await.unwrap(), fresh[3]);

    // A write the plan does not see invalidates it: the inserted copy of a query is its nearest row.
    let q = &queries[5];
    let copy: Vec<String> = q.iter().map(|x| x.to_string()).collect();
    run(
        &session,
        &format!("INSERT INTO mem VALUES (100000, [{}])", copy.join(",")),
    )
    .await;
    assert_eq!(bound(&session, sql, q).await.unwrap()[0].0, 100000);
    run(&session, "OPTIMIZE TABLE mem").await;
    for _ in 0..2 {
        let got = bound(&session, sql, q).await.unwrap();
        assert_eq!(got[0].0, 100000, "after OPTIMIZE, through the direct path");
        assert!(got[0].1.abs() < 1e-6);
    }
    run(&session, "DELETE FROM mem WHERE id = 100000").await;
    assert_ne!(bound(&session, sql, q).await.unwrap()[0].0, 100000);

    // A setting changes the plan: IVF_FLAT probing every partition finds the exact neighbours.
    run(&session, "SET marrow.nprobes = 4").await;
    let exact = {
        let s = db.session();
        run(&s, "SET marrow.exact_search = true").await;
        bound(&s, sql, &queries[7]).await.unwrap()
    };
    let before = session.plan_cache_stats().1;
    for _ in 0..2 {
        let got = bound(&session, sql, &queries[7]).await.unwrap();
        assert_eq!(got, exact, "nprobes = 4 of 4 partitions");
    }
    assert_eq!(session.plan_cache_stats().1, before + 1);
}

/// (id, score) rows of a `hybrid_search` statement with `$1` text, `$2` vector and `$3` namespace.
async fn hybrid(
    session: &Session,
    sql: &str,
    text: &str,
    v: &[f32],
    ns: &str,
) -> Result<Vec<(i64, f64)>, String> {
    use datafusion::common::ScalarValue;
    let vector = match vector_param(v) {
        datafusion::common::ParamValues::List(mut l) => l.remove(0),
        _ => unreachable!(),
    };
    let params = datafusion::common::ParamValues::List(vec![
        ScalarValue::Utf8(Some(text.into())).into(),
        vector,
        ScalarValue::Utf8(Some(ns.into())).into(),
    ]);
    pairs(session, sql, params).await
}

/// A hybrid search whose text, vector and WHERE values are `$n` is planned once and run with each execution's
/// values: the same rows as planning it afresh, rows written since are found, `now()` is each execution's own, and
/// a bad value fails its own execution without spoiling the kept plan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_hybrid_plans_answer_as_planning_does() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(Config::new(dir.path())).await.unwrap();
    let session = db.session();
    let mut rng = Lcg(23);
    run(
        &session,
        &format!(
            "CREATE TABLE docs (id BIGINT PRIMARY KEY, ns VARCHAR, body VARCHAR, expires TIMESTAMP, emb VECTOR({DIM}))"
        ),
    )
    .await;
    let rows: Vec<String> = (0..600)
        .map(|i| {
            format!(
                "({i}, 'ns{}', 'word{} word{} topic{}', NULL, {})",
                i % 3,
                i % 7,
                i % 11,
                i % 13,
                rng.vector()
            )
        })
        .collect();
    run(
        &session,
        &format!("INSERT INTO docs VALUES {}", rows.join(",")),
    )
    .await;
    run(
        &session,
        "CREATE INDEX docs_body ON docs USING INVERTED (body)",
    )
    .await;
    let sql = "SELECT id, _score FROM hybrid_search('docs', 'body', 'emb', $1, $2, 5) \
               WHERE ns = $3 AND (expires IS NULL OR expires > now()) ORDER BY _score DESC, id LIMIT 5";
    let cases: Vec<(String, Vec<f32>, String)> = (0..12)
        .map(|i| {
            (
                format!("word{} topic{}", i % 7, i % 13),
                (0..DIM).map(|_| rng.next()).collect(),
                format!("ns{}", i % 3),
            )
        })
        .collect();
    let fresh_session = db.session();
    run(&fresh_session, "SET marrow.plan_cache = false").await;
    for (text, v, ns) in &cases {
        let fresh = hybrid(&fresh_session, sql, text, v, ns).await.unwrap();
        let kept = hybrid(&session, sql, text, v, ns).await.unwrap();
        assert_eq!(kept, fresh, "{text} {ns}");
        assert_eq!(kept.len(), 5);
    }
    assert_eq!(fresh_session.deferred_plan_hits(), 0);
    assert_eq!(session.deferred_plan_hits(), cases.len() as u64 - 1);
    let (text, v, ns) = &cases[0];
    let before = hybrid(&session, sql, text, v, ns).await.unwrap();
    assert!(before.windows(2).all(|w| w[0].1 >= w[1].1), "{before:?}");

    // A row written after the plan was kept is found; one that expires is found until it does.
    let copy: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    run(
        &session,
        &format!(
            "INSERT INTO docs VALUES (9001, '{ns}', '{text}', now() + INTERVAL '3 seconds', [{}])",
            copy.join(",")
        ),
    )
    .await;
    assert_eq!(hybrid(&session, sql, text, v, ns).await.unwrap()[0].0, 9001);
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    let after = hybrid(&session, sql, text, v, ns).await.unwrap();
    assert_eq!(
        after, before,
        "the expired row is gone, by each execution's now()"
    );

    // Bad values fail their own execution, and the kept plan answers the next one.
    let hits = session.deferred_plan_hits();
    let wrong_dim = hybrid(&session, sql, text, &[0.5; 3], ns)
        .await
        .unwrap_err();
    assert!(wrong_dim.contains("3 dimensions"), "{wrong_dim}");
    let empty = hybrid(&session, sql, "  ", v, ns).await.unwrap_err();
    assert!(empty.contains("empty"), "{empty}");
    assert_eq!(hybrid(&session, sql, text, v, ns).await.unwrap(), before);
    assert_eq!(session.deferred_plan_hits(), hits + 3);

    // A statement with `$n` outside the search (a projection) is planned per execution, never kept.
    let projected =
        "SELECT id, _score, $3 AS ns FROM hybrid_search('docs', 'body', 'emb', $1, $2, 5) \
                     ORDER BY _score DESC, id LIMIT 5";
    let _ = hybrid(&session, projected, text, v, ns).await;
    let _ = hybrid(&session, projected, text, v, ns).await;
    assert_eq!(session.deferred_plan_hits(), hits + 3);
}
