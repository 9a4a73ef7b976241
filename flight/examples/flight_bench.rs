//! Round trips against a running Marrow server through arrow-flight's Rust Flight SQL client: the protocol's own
//! cost, without the ADBC driver and Python (bench/vector.py runs it beside the ADBC client).
//!
//! `flight_bench URL DATA_DIR [NPROBES,EF ...]` — DATA_DIR holds `queries.f32` and `truth.i64` (bench/vector.py
//! prepare) and the server serves it; each query binds the vector as `$1` of one prepared statement.

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, AsArray, Float32Builder, Int64Array, ListBuilder, RecordBatch};
use arrow::datatypes::{Field, Schema};
use arrow_flight::sql::client::{FlightSqlServiceClient, PreparedStatement};
use arrow_flight::FlightInfo;
use futures::TryStreamExt;
use tonic::transport::{Channel, Endpoint};

type Client = FlightSqlServiceClient<Channel>;

async fn fetch(client: &mut Client, info: FlightInfo) -> Vec<RecordBatch> {
    let mut out = vec![];
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.expect("a ticket");
        let stream = client.do_get(ticket).await.unwrap();
        out.extend(stream.try_collect::<Vec<_>>().await.unwrap());
    }
    out
}

async fn run(
    client: &mut Client,
    statement: &mut PreparedStatement<Channel>,
    params: RecordBatch,
) -> Vec<RecordBatch> {
    statement.set_parameters(params).unwrap();
    let info = statement.execute().await.unwrap();
    fetch(client, info).await
}

fn read<T: Copy>(path: &std::path::Path, from: fn([u8; 8]) -> T, width: usize) -> Vec<T> {
    std::fs::read(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .chunks_exact(width)
        .map(|c| {
            let mut b = [0u8; 8];
            b[..width].copy_from_slice(c);
            from(b)
        })
        .collect()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: flight_bench URL DATA_DIR [NPROBES,EF ...]");
        std::process::exit(2);
    }
    let dir = std::path::Path::new(&args[2]);
    let queries = read(
        &dir.join("queries.f32"),
        |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        4,
    );
    let truth = read(&dir.join("truth.i64"), i64::from_le_bytes, 8);
    let n = truth.len() / 10;
    let dim = queries.len() / n;

    let url = args[1].replace("grpc://", "http://");
    let channel = Endpoint::from_shared(url).unwrap().connect().await.unwrap();
    let mut client = FlightSqlServiceClient::new(channel);
    // One session for the SETs and the queries.
    client.handshake("", "").await.unwrap();

    // The kind of the index searched, for the report.
    let info = client
        .execute(
            "SELECT kind FROM marrow_indexes() WHERE index_name = 'glove_emb'".into(),
            None,
        )
        .await
        .unwrap();
    let kind = fetch(&mut client, info)
        .await
        .iter()
        .find(|b| b.num_rows() > 0)
        .map_or("no index".to_string(), |b| {
            b.column(0).as_string::<i32>().value(0).to_string()
        });

    let mut trivial = client
        .prepare("SELECT $1::BIGINT AS x".into(), None)
        .await
        .unwrap();
    let schema = Arc::new(Schema::new(vec![Field::new(
        "$1",
        arrow::datatypes::DataType::Int64,
        true,
    )]));
    let t = Instant::now();
    for i in 0..n {
        let p = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from(vec![i as i64]))],
        )
        .unwrap();
        let got = run(&mut client, &mut trivial, p).await;
        assert_eq!(got[0].num_rows(), 1);
    }
    println!(
        "marrow-flight rust SELECT $1 (prepared, bound)  {:>8.1} q/s",
        n as f64 / t.elapsed().as_secs_f64()
    );

    let mut ann = client
        .prepare(
            "SELECT id FROM glove ORDER BY cosine_distance(emb, $1) LIMIT 10".into(),
            None,
        )
        .await
        .unwrap();
    for (setting, cache) in args[3..].iter().flat_map(|s| [(s, false), (s, true)]) {
        let (nprobes, ef) = setting.split_once(',').expect("NPROBES,EF");
        for sql in [
            format!("SET marrow.nprobes = {nprobes}"),
            format!("SET marrow.ef = {ef}"),
            "SET marrow.direct_search = true".to_string(),
            "SET marrow.query_parallelism = 0".to_string(),
            format!("SET marrow.plan_cache = {cache}"),
        ] {
            client.execute_update(sql, None).await.unwrap();
        }
        let t = Instant::now();
        let mut hits = 0;
        for i in 0..n {
            let mut list = ListBuilder::new(Float32Builder::new());
            list.values().append_slice(&queries[i * dim..(i + 1) * dim]);
            list.append(true);
            let list = list.finish();
            let p = RecordBatch::try_new(
                Arc::new(Schema::new(vec![Field::new(
                    "$1",
                    list.data_type().clone(),
                    true,
                )])),
                vec![Arc::new(list)],
            )
            .unwrap();
            let expected = &truth[i * 10..(i + 1) * 10];
            for b in run(&mut client, &mut ann, p).await {
                let ids = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                hits += ids
                    .values()
                    .iter()
                    .filter(|id| expected.contains(id))
                    .count();
            }
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "marrow-flight rust {kind} nprobes = {nprobes:<3} ef = {ef:<4} {:<12} query_parallelism = 0   recall@10 {:.4}  {:>8.1} q/s",
            if cache { "direct+cache" } else { "direct" },
            hits as f64 / (n * 10) as f64,
            n as f64 / secs
        );
    }
}
