//! Issue 5's benchmark: embed() sentences/s at ~16 and ~128 tokens, as a raw call and through SQL, against the
//! FLOP estimate; tokenization MB/s through SQL. bench/embed.sh runs it and the Python `tokenizers` baseline.
//!
//! embed_bench MODEL_DIR CORPUS_OUT [SENTENCES]

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use marrow_engine::{Config, Database};

/// Encoder FLOPs per token of all-MiniLM-L6-v2: 6 layers × (4·384² + 2·384·1536) multiply-adds × 2.
const FLOP_PER_TOKEN: f64 = 6.0 * (4.0 * 384.0 * 384.0 + 2.0 * 384.0 * 1536.0) * 2.0;

const WORDS: [&str; 24] = [
    "memory",
    "agent",
    "retrieves",
    "the",
    "user",
    "prefers",
    "quiet",
    "mornings",
    "and",
    "strong",
    "coffee",
    "before",
    "reviewing",
    "database",
    "indexes",
    "while",
    "planning",
    "tomorrow's",
    "experiments",
    "with",
    "vector",
    "search",
    "latency",
    "budgets",
];

fn sentence(i: usize, words: usize) -> String {
    let mut s = String::new();
    let mut x = i as u64 * 2654435761 + 1;
    for w in 0..words {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if w > 0 {
            s.push(' ');
        }
        s.push_str(WORDS[(x % WORDS.len() as u64) as usize]);
    }
    s.push('.');
    s
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let model_dir = std::path::PathBuf::from(&args[1]);
    let corpus_out = &args[2];
    let n: usize = args.get(3).map(|s| s.parse().unwrap()).unwrap_or(512);
    let dir = tempfile_dir();
    let db = Database::open(Config {
        model_dir: Some(model_dir),
        ..Config::new(&dir)
    })
    .await
    .unwrap();
    let embedder = db.models().embedder().unwrap();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "threads: {threads}; FLOP estimate {:.1} MFLOP/token",
        FLOP_PER_TOKEN / 1e6
    );
    for words in [12usize, 110] {
        let texts: Vec<String> = (0..n).map(|i| sentence(i, words)).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let tokens: usize = embedder.tokenize(&refs).unwrap().iter().map(Vec::len).sum();
        let per = tokens as f64 / n as f64;
        embedder.embed(&refs[..32.min(n)]).unwrap(); // warm-up
        let t = Instant::now();
        embedder.embed(&refs).unwrap();
        let raw = t.elapsed().as_secs_f64();
        let session = db.session();
        let schema = Arc::new(Schema::new(vec![Field::new("t", DataType::Utf8, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(StringArray::from(texts.clone()))],
        )
        .unwrap();
        session
            .context()
            .register_table(
                "texts",
                Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap()),
            )
            .unwrap();
        let t = Instant::now();
        let (_, out) = session
            .execute("SELECT embed(t) FROM texts")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let sql = t.elapsed().as_secs_f64();
        assert_eq!(out.iter().map(|b| b.num_rows()).sum::<usize>(), n);
        for (label, secs) in [("raw call", raw), ("SQL SELECT embed(t)", sql)] {
            println!(
                "embed ~{per:>5.1} tokens  {label:<22} {:>8.1} sentences/s  {:>7.1} GFLOP/s",
                n as f64 / secs,
                tokens as f64 * FLOP_PER_TOKEN / secs / 1e9
            );
        }
    }
    // Tokenization throughput through SQL over a ~16 MB corpus; the same corpus goes to Python's tokenizers.
    let corpus: Vec<String> = (0..200_000).map(|i| sentence(i, 6 + i % 30)).collect();
    std::fs::write(corpus_out, corpus.join("\n")).unwrap();
    let bytes: usize = corpus.iter().map(String::len).sum();
    let session = db.session();
    let schema = Arc::new(Schema::new(vec![Field::new("t", DataType::Utf8, false)]));
    let batches: Vec<RecordBatch> = corpus
        .chunks(8192)
        .map(|c| {
            RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(StringArray::from(c.to_vec()))],
            )
            .unwrap()
        })
        .collect();
    session
        .context()
        .register_table(
            "corpus",
            Arc::new(MemTable::try_new(schema, vec![batches]).unwrap()),
        )
        .unwrap();
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        session
            .execute("SELECT sum(token_count(t)) FROM corpus")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "tokenize via SQL (token_count)  {:>7.1} MB/s  ({} sentences, {:.1} MB, best of 3)",
        bytes as f64 / best / 1e6,
        corpus.len(),
        bytes as f64 / 1e6
    );
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("marrow-embed-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
