//! Scan benchmark (issue 2): `SELECT *` and a filtered scan over a 10M-row numeric table, Marrow in-process vs
//! DataFusion over the same batches in memory (MemTable). Run by bench/scan.sh, which adds pylance to the same run.
//!
//! cargo run --release -p marrow-engine --example scan_bench -- DIR [ROWS] [REPS]

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    Float32Array, Float64Array, Int32Array, Int64Array, RecordBatch, RecordBatchIterator,
};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use marrow_engine::{Config, Database};

fn make_batches(rows: usize) -> (Arc<Schema>, Vec<RecordBatch>) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("a", DataType::Float64, false),
        Field::new("b", DataType::Int32, false),
        Field::new("c", DataType::Float32, false),
    ]));
    let mut batches = vec![];
    let mut state = 0x2545F4914F6CDD1Du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let chunk = 1 << 20;
    let mut start = 0;
    while start < rows {
        let n = chunk.min(rows - start);
        let id = Int64Array::from_iter_values((start..start + n).map(|i| i as i64));
        let a =
            Float64Array::from_iter_values((0..n).map(|_| (next() % 1_000_000) as f64 / 1000.0));
        let b = Int32Array::from_iter_values((0..n).map(|_| (next() % 10_000) as i32));
        let c = Float32Array::from_iter_values((0..n).map(|_| (next() % 1000) as f32 * 0.5));
        batches.push(
            RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(id), Arc::new(a), Arc::new(b), Arc::new(c)],
            )
            .unwrap(),
        );
        start += n;
    }
    (schema, batches)
}

async fn time_stream(label: &str, reps: usize, mut run: impl AsyncFnMut() -> usize) -> f64 {
    let mut best = f64::MAX;
    let mut rows = 0;
    for _ in 0..reps {
        let t = Instant::now();
        rows = run().await;
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "{label:<40} {:>9.1} ms  ({rows} rows, best of {reps})",
        best * 1000.0
    );
    best
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).expect("usage: scan_bench DIR [ROWS] [REPS]");
    let rows: usize = args
        .get(2)
        .map(|s| s.parse().unwrap())
        .unwrap_or(10_000_000);
    let reps: usize = args.get(3).map(|s| s.parse().unwrap()).unwrap_or(5);
    let (schema, batches) = make_batches(rows);
    let db = Database::open(Config::new(dir)).await.unwrap();
    let path = db.data_dir().join("numbers.lance");
    if !path.join("_versions").exists() {
        let reader = RecordBatchIterator::new(batches.clone().into_iter().map(Ok), schema.clone());
        lance::Dataset::write(reader, path.to_str().unwrap(), None)
            .await
            .unwrap();
    }
    let session = db.session();
    let mem = SessionContext::new();
    mem.register_table(
        "numbers",
        Arc::new(MemTable::try_new(schema.clone(), vec![batches]).unwrap()),
    )
    .unwrap();

    let queries = [
        ("SELECT *", "SELECT * FROM numbers"),
        (
            "filtered (b < 100, ~1%)",
            "SELECT * FROM numbers WHERE b < 100",
        ),
    ];
    for (name, sql) in queries {
        let marrow = time_stream(&format!("marrow   {name}"), reps, async || {
            let mut s = session.execute(sql).await.unwrap().into_stream();
            let mut n = 0;
            while let Some(b) = s.next().await {
                n += b.unwrap().num_rows();
            }
            n
        })
        .await;
        let df = time_stream(&format!("memtable {name}"), reps, async || {
            let mut s = mem.sql(sql).await.unwrap().execute_stream().await.unwrap();
            let mut n = 0;
            while let Some(b) = s.next().await {
                n += b.unwrap().num_rows();
            }
            n
        })
        .await;
        println!("ratio marrow/memtable {name}: {:.2}", marrow / df);
    }
}
