//! Vector search benchmarks (issue 4), run by bench/vector.sh which adds numpy, DuckDB, pylance and hnswlib to the
//! same run.
//!
//! exact DIR ROWS DIM REPS   `ORDER BY cosine_distance(emb, q) LIMIT 10` over ROWS × DIM float32 vectors: Marrow's
//!                           function over the Lance table and over a MemTable, and DataFusion's built-in
//!                           cosine_distance over the same Lance table. Writes DIR/vectors.lance and DIR/query.f32.
//! ann DIR                   DIR/glove.lance + DIR/queries.f32 + DIR/truth.i64 (written by bench/vector.py): builds
//!                           IVF_PQ and IVF_HNSW_SQ through SQL and reports recall@10 and queries/s per setting.

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    Array, AsArray, FixedSizeListArray, Float32Array, Int64Array, ListArray, RecordBatch,
    RecordBatchIterator,
};
use arrow::datatypes::{DataType, Field, Float32Type, Schema};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use lance::datafusion::LanceTableProvider;
use marrow_engine::{Config, Database, Session};

fn random_batches(rows: usize, dim: usize, seed: u64) -> (Arc<Schema>, Vec<RecordBatch>) {
    let item = Arc::new(Field::new("item", DataType::Float32, true));
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new(
            "emb",
            DataType::FixedSizeList(item.clone(), dim as i32),
            false,
        ),
    ]));
    let mut state = 0x9E3779B97F4A7C15u64 ^ seed.wrapping_mul(0xD1B54A32D192ED03);
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    let chunk = 65_536;
    let mut batches = vec![];
    let mut start = 0;
    while start < rows {
        let n = chunk.min(rows - start);
        let ids = Int64Array::from_iter_values((start..start + n).map(|i| i as i64));
        let values = Float32Array::from_iter_values((0..n * dim).map(|_| next()));
        let emb =
            FixedSizeListArray::try_new(item.clone(), dim as i32, Arc::new(values), None).unwrap();
        batches.push(
            RecordBatch::try_new(schema.clone(), vec![Arc::new(ids), Arc::new(emb)]).unwrap(),
        );
        start += n;
    }
    (schema, batches)
}

fn vector_literal(q: &[f32]) -> String {
    format!(
        "[{}]",
        q.iter()
            .map(|v| format!("{v:?}"))
            .collect::<Vec<_>>()
            .join(",")
    )
}

async fn best_of(reps: usize, mut run: impl AsyncFnMut() -> Vec<i64>) -> (f64, Vec<i64>) {
    let mut best = f64::MAX;
    let mut ids = vec![];
    for _ in 0..reps {
        let t = Instant::now();
        ids = run().await;
        best = best.min(t.elapsed().as_secs_f64());
    }
    (best, ids)
}

fn ids_of(batches: &[RecordBatch]) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect()
}

async fn exact(dir: &str, rows: usize, dim: usize, reps: usize) {
    let (schema, batches) = random_batches(rows, dim, 0);
    // A hot tier large enough for the vectors, as `marrow serve --hot-tier 4GiB` would keep.
    let db = Database::open(Config {
        hot_tier: 4 << 30,
        ..Config::new(dir)
    })
    .await
    .unwrap();
    let path = db.data_dir().join("vectors.lance");
    if !path.join("_versions").exists() {
        let reader = RecordBatchIterator::new(batches.clone().into_iter().map(Ok), schema.clone());
        lance::Dataset::write(reader, path.to_str().unwrap(), None)
            .await
            .unwrap();
    }
    // The query: a vector not in the table.
    let (_, qb) = random_batches(1, dim, 1);
    let q_all = qb[0]
        .column(1)
        .as_any()
        .downcast_ref::<FixedSizeListArray>()
        .unwrap()
        .value(0);
    let q: Vec<f32> = q_all
        .as_any()
        .downcast_ref::<Float32Array>()
        .unwrap()
        .values()
        .to_vec();
    std::fs::write(
        db.data_dir().join("query.f32"),
        q.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>(),
    )
    .unwrap();
    let sql = format!(
        "SELECT id FROM vectors ORDER BY cosine_distance(emb, {}) LIMIT 10",
        vector_literal(&q)
    );
    let bytes = (rows * dim * 4) as f64;
    let report = |label: &str, secs: f64, ids: &[i64]| {
        println!(
            "{label:<44} {:>9.1} ms/query  {:>6.2} GB/s  top-3 {:?}",
            secs * 1000.0,
            bytes / secs / 1e9,
            &ids[..3.min(ids.len())]
        );
    };

    let files = db.session();
    files.execute("SET marrow.hot_tier = false").await.unwrap();
    let (from_files, ids) = best_of(reps, async || {
        let (_, b) = files.execute(&sql).await.unwrap().collect().await.unwrap();
        ids_of(&b)
    })
    .await;
    report(
        "marrow cosine_distance, Lance table files",
        from_files,
        &ids,
    );

    let session = db.session();
    let (marrow, ids) = best_of(reps, async || {
        let (_, b) = session
            .execute(&sql)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        ids_of(&b)
    })
    .await;
    report(
        "marrow cosine_distance, Lance table, hot tier",
        marrow,
        &ids,
    );

    let mem_session = db.session();
    mem_session
        .context()
        .register_table(
            "vectors_mem",
            Arc::new(MemTable::try_new(schema.clone(), vec![batches]).unwrap()),
        )
        .unwrap();
    let mem_sql = sql.replace("FROM vectors", "FROM vectors_mem");
    let (mem, ids) = best_of(reps, async || {
        let (_, b) = mem_session
            .execute(&mem_sql)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        ids_of(&b)
    })
    .await;
    report("marrow cosine_distance, MemTable", mem, &ids);

    // DataFusion's own cosine_distance (List<Float64>) over the same Lance dataset, in a stock context.
    let stock = SessionContext::new();
    let ds = Arc::new(lance::Dataset::open(path.to_str().unwrap()).await.unwrap());
    stock
        .register_table(
            "vectors",
            Arc::new(LanceTableProvider::new(ds, false, false)),
        )
        .unwrap();
    let builtin_reps = reps.clamp(1, 2);
    let (builtin, ids) = best_of(builtin_reps, async || {
        let b = stock.sql(&sql).await.unwrap().collect().await.unwrap();
        ids_of(&b)
    })
    .await;
    report("datafusion built-in cosine_distance, Lance", builtin, &ids);
    println!(
        "ratio datafusion-builtin / marrow (Lance table): {:.1}x",
        builtin / marrow
    );
    println!(
        "ratio marrow Lance (hot tier) / marrow MemTable: {:.2}; Lance files / MemTable: {:.2}",
        marrow / mem,
        from_files / mem
    );
}

fn read_f32(path: &std::path::Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn read_i64(path: &std::path::Path) -> Vec<i64> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn query_param(q: &[f32]) -> ParamValues {
    let list = ListArray::from_iter_primitive::<Float32Type, _, _>(vec![Some(
        q.iter().map(|v| Some(*v)).collect::<Vec<_>>(),
    )]);
    ParamValues::List(vec![ScalarValue::List(Arc::new(list)).into()])
}

/// The paths the benchmarks compare, as (direct_search, query_parallelism, plan_cache): Lance's scanner (its default
/// partition search: one compute thread on 2 cores), then the direct path on one thread and on every core, each
/// planned per query and then with the plan cache.
const PATHS: [(bool, i32, bool); 5] = [
    (false, 0, false),
    (true, 1, false),
    (true, 0, false),
    (true, 1, true),
    (true, 0, true),
];

/// The SET statements that choose a path, and its label.
fn path_settings((direct, parallelism, cache): (bool, i32, bool)) -> ([String; 3], &'static str) {
    let label = match (direct, cache) {
        (false, _) => "scanner",
        (true, false) => "direct",
        (true, true) => "direct+cache",
    };
    (
        [
            format!("SET marrow.direct_search = {direct}"),
            format!("SET marrow.query_parallelism = {parallelism}"),
            format!("SET marrow.plan_cache = {cache}"),
        ],
        label,
    )
}

/// Runs every query once, sequentially, through the prepared ORDER BY … LIMIT 10 form; returns (recall@10, q/s).
async fn sweep(session: &Session, queries: &[f32], truth: &[i64], dim: usize) -> (f64, f64) {
    let sql = "SELECT id FROM glove ORDER BY cosine_distance(emb, $1) LIMIT 10";
    let n = queries.len() / dim;
    let t = Instant::now();
    let mut hits = 0usize;
    for i in 0..n {
        let q = &queries[i * dim..(i + 1) * dim];
        let out = session
            .execute_with_params(sql, Some(query_param(q)))
            .await
            .unwrap();
        let batches: Vec<RecordBatch> = out.into_stream().try_collect().await.unwrap();
        let got = ids_of(&batches);
        let expected = &truth[i * 10..(i + 1) * 10];
        hits += got.iter().filter(|id| expected.contains(id)).count();
    }
    let secs = t.elapsed().as_secs_f64();
    (hits as f64 / (n * 10) as f64, n as f64 / secs)
}

/// `kinds`: which index kinds to build and sweep, in order; the last one stays for the Flight and pylance runs.
async fn ann(dir: &str, kinds: &[&str]) {
    let db = Database::open(Config::new(dir)).await.unwrap();
    let queries = read_f32(&db.data_dir().join("queries.f32"));
    let truth = read_i64(&db.data_dir().join("truth.i64"));
    let dim = queries.len() / (truth.len() / 10);
    let session = db.session();
    let run = async |sql: &str| {
        session.execute(sql).await.unwrap().collect().await.unwrap();
    };
    // Both HNSW kinds are swept over the same settings, so their rows compare directly.
    let hnsw_sweep = vec![
        ("SET marrow.nprobes = 4", "SET marrow.ef = 50"),
        ("SET marrow.nprobes = 4", "SET marrow.ef = 100"),
        ("SET marrow.nprobes = 8", "SET marrow.ef = 100"),
        ("SET marrow.nprobes = 8", "SET marrow.ef = 200"),
        ("SET marrow.nprobes = 16", "SET marrow.ef = 300"),
    ];
    let indexes = [
        (
            "IVF_PQ",
            "CREATE INDEX glove_emb ON glove USING IVF_PQ (emb) WITH (metric = 'cosine', num_partitions = 256, num_sub_vectors = 25)",
            vec![
                ("SET marrow.nprobes = 10", "SET marrow.refine_factor = 5"),
                ("SET marrow.nprobes = 20", "SET marrow.refine_factor = 5"),
                ("SET marrow.nprobes = 20", "SET marrow.refine_factor = 10"),
                ("SET marrow.nprobes = 40", "SET marrow.refine_factor = 10"),
                ("SET marrow.nprobes = 80", "SET marrow.refine_factor = 20"),
            ],
        ),
        (
            "IVF_HNSW_SQ",
            "CREATE INDEX glove_emb ON glove USING IVF_HNSW_SQ (emb) WITH (metric = 'cosine', num_partitions = 16, m = 16, ef_construction = 150)",
            hnsw_sweep.clone(),
        ),
        (
            "IVF_HNSW_FLAT",
            "CREATE INDEX glove_emb ON glove USING IVF_HNSW_FLAT (emb) WITH (metric = 'cosine', num_partitions = 16, m = 16, ef_construction = 150)",
            hnsw_sweep.clone(),
        ),
    ];
    let mut settings_shown = std::collections::HashSet::new();
    for kind in kinds {
        let Some((kind, create, settings)) = indexes.iter().find(|i| i.0 == *kind).cloned() else {
            panic!("unknown index kind {kind}: one of IVF_PQ, IVF_HNSW_SQ, IVF_HNSW_FLAT");
        };
        run("DROP INDEX IF EXISTS glove_emb").await;
        let t = Instant::now();
        run(create).await;
        println!("{kind}: built in {:.1} s", t.elapsed().as_secs_f64());
        for (a, b) in settings {
            for p in PATHS {
                let parallelism = p.1;
                let (sets, path) = path_settings(p);
                run("SET marrow.refine_factor = 0").await;
                run("SET marrow.ef = 0").await;
                for set in &sets {
                    run(set).await;
                }
                run(a).await;
                run(b).await;
                let (recall, qps) = sweep(&session, &queries, &truth, dim).await;
                println!(
                    "marrow-sql {kind:<12} {:<26} {:<28} {path:<12} query_parallelism = {parallelism:<3} recall@10 {recall:.4}  {qps:>8.1} q/s",
                    a.trim_start_matches("SET marrow."),
                    b.trim_start_matches("SET marrow.")
                );
            }
            if settings_shown.insert(kind) {
                println!("  {}", explain_search(&session, &queries[..dim]).await);
            }
        }
        run("SET marrow.query_parallelism = 0").await;
    }
    // Leave the HNSW index for the Flight and pylance runs that follow.
}

/// The VectorSearchExec line of the benchmark query's plan: which path ran, with which settings.
async fn explain_search(session: &Session, q: &[f32]) -> String {
    let batches: Vec<RecordBatch> = session
        .execute_with_params(
            "EXPLAIN SELECT id FROM glove ORDER BY cosine_distance(emb, $1) LIMIT 10",
            Some(query_param(q)),
        )
        .await
        .unwrap()
        .into_stream()
        .try_collect()
        .await
        .unwrap();
    let mut lines = vec![];
    for b in &batches {
        let plans = b.column(1).as_string::<i32>();
        for plan in plans.iter().flatten() {
            lines.extend(
                plan.lines()
                    .filter(|l| l.contains("VectorSearchExec") || l.contains("DirectAnnExec"))
                    .map(|l| l.trim().to_string()),
            );
        }
    }
    lines.join(" / ")
}

macro_rules! time_it {
    ($label:expr, $n:expr, $body:expr) => {{
        let t = Instant::now();
        for _ in 0..$n {
            $body;
        }
        println!(
            "{:<48} {:>8.3} ms",
            $label,
            t.elapsed().as_secs_f64() * 1000.0 / $n as f64
        );
    }};
}

/// Where a single ANN query's time goes: planning, opening the table, index lookup, Lance's own search.
async fn overhead(dir: &str) {
    use lance::index::DatasetIndexExt;
    let db = Database::open(Config::new(dir)).await.unwrap();
    let queries = read_f32(&db.data_dir().join("queries.f32"));
    let truth = read_i64(&db.data_dir().join("truth.i64"));
    let dim = queries.len() / (truth.len() / 10);
    let session = db.session();
    let n = 300;
    let q = &queries[..dim];
    time_it!(
        "SELECT 1",
        n,
        session
            .execute("SELECT 1")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap()
    );
    time_it!(
        "SELECT id FROM glove LIMIT 1",
        n,
        session
            .execute("SELECT id FROM glove LIMIT 1")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap()
    );
    let sql = "SELECT id FROM glove ORDER BY cosine_distance(emb, $1) LIMIT 10";
    let ann_query = async || {
        session
            .execute_with_params(sql, Some(query_param(q)))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap()
    };
    time_it!("ANN query through SQL ($1)", n, ann_query().await);
    let path = db.data_dir().join("glove.lance");
    time_it!(
        "open dataset",
        n,
        lance::Dataset::open(path.to_str().unwrap()).await.unwrap()
    );
    let ds = lance::Dataset::open(path.to_str().unwrap()).await.unwrap();
    time_it!(
        "describe_indices",
        n,
        ds.describe_indices(None).await.unwrap()
    );
    // Taking the rows a search returns: Lance's take opens the fragment's reader each time; the direct path keeps
    // it for the life of the plan.
    let columns = ["id", "emb"];
    let rows = ds.count_rows(None).await.unwrap() as u64;
    let frag_rows = ds.get_fragments()[0].physical_rows().await.unwrap() as u64;
    let offsets: Vec<u32> = (0..10)
        .map(|i| ((i * 7919 + 17) % frag_rows.min(rows)) as u32)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let fragment_id = ds.get_fragments()[0].id() as u64;
    let ids: Vec<u64> = offsets
        .iter()
        .map(|o| fragment_id << 32 | *o as u64)
        .collect();
    time_it!(
        "take 10 rows (id, emb): Dataset::take_rows",
        n,
        ds.take_rows(
            &ids,
            lance::dataset::ProjectionRequest::from_columns(columns, ds.schema())
        )
        .await
        .unwrap()
    );
    let reader = ds.get_fragments()[0]
        .open(
            &ds.schema().project(&columns).unwrap(),
            lance::dataset::fragment::FragReadConfig::default(),
        )
        .await
        .unwrap();
    time_it!(
        "take 10 rows (id, emb): a kept FragmentReader",
        n,
        reader.take_as_batch(&offsets, None).await.unwrap()
    );
    let qa = Float32Array::from(q.to_vec());
    // The same settings as the SQL queries below (IVF_HNSW_SQ at recall 0.95).
    for columns in [&["id"][..], &["id", "emb"][..]] {
        time_it!(
            format!("lance scanner nearest {columns:?} (nprobes 8, ef 100)"),
            n,
            {
                let mut s = ds.scan();
                s.project(columns).unwrap();
                s.nearest("emb", &qa, 10).unwrap();
                s.distance_metric(lance_linalg::distance::DistanceType::Cosine);
                s.nprobes(8);
                s.ef(100);
                s.try_into_batch().await.unwrap();
            }
        );
    }
    for setting in ["SET marrow.nprobes = 8", "SET marrow.ef = 100"] {
        session.execute(setting).await.unwrap();
    }
    let state = session.context().state();
    time_it!("plan the ANN query (logical + physical)", n, {
        let plan = state
            .create_logical_plan(sql)
            .await
            .unwrap()
            .with_param_values(query_param(q))
            .unwrap();
        state.create_physical_plan(&plan).await.unwrap()
    });
    for p in PATHS {
        let parallelism = p.1;
        let (sets, path) = path_settings(p);
        for setting in &sets {
            session.execute(setting).await.unwrap();
        }
        time_it!(
            format!("ANN query through SQL ({path}, query_parallelism {parallelism})"),
            n,
            ann_query().await
        );
    }
    println!("{}", explain_search(&session, q).await);
}

/// Run the benchmark query over the held-out queries, round after round, for `secs` seconds (for `perf record`).
async fn repeat(dir: &str, secs: f64, settings: &[String]) {
    let db = Database::open(Config::new(dir)).await.unwrap();
    let queries = read_f32(&db.data_dir().join("queries.f32"));
    let truth = read_i64(&db.data_dir().join("truth.i64"));
    let dim = queries.len() / (truth.len() / 10);
    let session = db.session();
    for s in settings {
        session.execute(s).await.unwrap().collect().await.unwrap();
    }
    println!("{}", explain_search(&session, &queries[..dim]).await);
    let t = Instant::now();
    while t.elapsed().as_secs_f64() < secs {
        let (recall, qps) = sweep(&session, &queries, &truth, dim).await;
        println!("recall@10 {recall:.4}  {qps:>8.1} q/s");
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("exact") => {
            let dir = &args[2];
            let rows = args.get(3).map(|s| s.parse().unwrap()).unwrap_or(500_000);
            let dim = args.get(4).map(|s| s.parse().unwrap()).unwrap_or(384);
            let reps = args.get(5).map(|s| s.parse().unwrap()).unwrap_or(5);
            exact(dir, rows, dim, reps).await;
        }
        Some("ann") => {
            let kinds = args.get(3).map_or("IVF_PQ,IVF_HNSW_SQ", String::as_str);
            ann(&args[2], &kinds.split(',').collect::<Vec<_>>()).await
        }
        Some("overhead") => overhead(&args[2]).await,
        Some("repeat") => repeat(&args[2], args[3].parse().unwrap(), &args[4..]).await,
        _ => {
            eprintln!(
                "usage: vector_bench exact DIR [ROWS] [DIM] [REPS] | ann DIR [KIND,KIND…] | overhead DIR | repeat DIR SECONDS [SQL ...]"
            );
            std::process::exit(2);
        }
    }
}
