//! The bodies of Marrow's fuzz targets, over the input a hostile client or file controls: SQL text (parsed, then
//! planned against a small database), Flight SQL commands and Arrow IPC messages as a DoPut carries them, a
//! safetensors header, a PEFT adapter config and quantized blocks. Each returns normally for every input; an error
//! is a correct answer, a panic, abort or hang is the bug. `fuzz_targets/` runs them under libFuzzer
//! (`scripts/fuzz.sh`); the e2e suite replays the committed corpus through the same functions.

use std::cell::Cell;
use std::path::Path;
use std::sync::OnceLock;

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::sql::{Any, Command};
use arrow_flight::FlightData;
use marrow_engine::{Config, Database, Session};
use prost::Message;

/// A fuzz target: one input in, nothing out.
pub type Target = fn(&[u8]);

/// The targets by name, as `fuzz_targets/` and `fuzz/corpus/<name>/` know them.
pub const TARGETS: &[(&str, Target)] = &[
    ("sql_parse", sql_parse),
    ("sql_plan", sql_plan),
    ("flight_command", flight_command),
    ("flight_ipc", flight_ipc),
    ("safetensors_header", safetensors_header),
    ("peft_config", peft_config),
    ("quant_blocks", quant_blocks),
];

/// SQL text through the parser and its nesting bound, on a thread with the server's stack size (as the server
/// parses). The thread parses and nothing else, so this target's binary holds the parser's code and not the
/// engine's: libFuzzer scans every coverage counter after each input, and the engine's millions of them made an
/// execution cost 0.8 ms.
pub fn sql_parse(data: &[u8]) {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let worker = parser();
    let replies = worker.replies.lock().expect("parser replies");
    worker
        .requests
        .send(sql.to_string())
        .expect("the parser thread stopped");
    // The thread ends (and the reply channel with it) only by a panic in the parser.
    replies.recv().expect("the parser panicked");
}

struct Parser {
    requests: std::sync::mpsc::Sender<String>,
    replies: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

fn parser() -> &'static Parser {
    static PARSER: OnceLock<Parser> = OnceLock::new();
    PARSER.get_or_init(|| {
        let (requests, inputs) = std::sync::mpsc::channel::<String>();
        let (done, replies) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("sql-parse".into())
            .stack_size(marrow_engine::sql::depth::STACK_SIZE)
            .spawn(move || {
                for sql in inputs {
                    let _ = marrow_engine::sql::parse(&sql);
                    if done.send(()).is_err() {
                        break;
                    }
                }
            })
            .expect("parser thread");
        Parser {
            requests,
            replies: std::sync::Mutex::new(replies),
        }
    })
}

struct Planner {
    runtime: tokio::runtime::Runtime,
    session: Session,
    _dir: tempfile::TempDir,
}

/// One database for the life of the process, with a table of each kind of column a statement may reach.
fn planner() -> &'static Planner {
    static PLANNER: OnceLock<Planner> = OnceLock::new();
    PLANNER.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_stack_size(marrow_engine::sql::depth::STACK_SIZE)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("temp dir");
        let session = runtime.block_on(async {
            let db = Database::open(Config::new(dir.path()))
                .await
                .expect("database");
            let session = db.session();
            for sql in [
                "CREATE TABLE t (id BIGINT PRIMARY KEY, x DOUBLE, s VARCHAR, v FLOAT[3], b BYTEA, ts TIMESTAMP)",
                "INSERT INTO t VALUES (1, 0.5, 'a', [1, 0, 0], X'00', TIMESTAMP '2026-01-01 00:00:00')",
                "CREATE VIEW tv AS SELECT id, s FROM t",
            ] {
                session.execute(sql).await.expect("fuzz fixture");
            }
            session
        });
        Planner {
            runtime,
            session,
            _dir: dir,
        }
    })
}

/// SQL text parsed and planned (never run) against a database with tables, a view and Marrow's built-ins.
pub fn sql_plan(data: &[u8]) {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let (p, sql) = (planner(), sql.to_string());
    let session = p.session.clone();
    p.runtime
        .block_on(p.runtime.spawn(async move {
            let _ = session.prepare(&sql).await;
        }))
        .expect("planning panicked");
}

/// A GetFlightInfo descriptor or DoAction body as the Flight SQL server decodes it.
pub fn flight_command(data: &[u8]) {
    if let Ok(any) = Any::decode(data) {
        let _ = Command::try_from(any);
    }
}

thread_local! {
    /// Set while this thread is inside the server's `next_batch`, whose catch_unwind turns a panic of arrow's IPC
    /// reader into an INVALID_ARGUMENT for the client.
    static DECODING: Cell<bool> = const { Cell::new(false) };
}

/// For the flight_ipc fuzz binary only: libFuzzer's panic hook aborts on every panic, caught or not, so a panic
/// that the server's `next_batch` catches (and answers as malformed data) would be reported as a crash. This hook
/// stays silent for those and defers to the previous hook (which aborts) for any other panic. Not installed by the
/// corpus replay in the e2e suite, where other tests' panics must stay visible (and which does not compile it:
/// cargo fuzz builds with `--cfg fuzzing`).
#[cfg(fuzzing)]
pub fn tolerate_caught_decoder_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !DECODING.with(Cell::get) {
            previous(info)
        }
    }));
}

/// Arrow IPC as a DoPut carries it: the input is a sequence of messages, each `[u32 header length][u32 body
/// length][header][body]` (little-endian lengths), decoded by the decoder the server reads DoPut streams with.
pub fn flight_ipc(data: &[u8]) {
    let mut messages = vec![];
    let mut rest = data;
    while rest.len() >= 8 {
        let h = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        let b = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes")) as usize;
        rest = &rest[8..];
        let h = h.min(rest.len());
        let (header, tail) = rest.split_at(h);
        let b = b.min(tail.len());
        let (body, tail) = tail.split_at(b);
        rest = tail;
        messages.push(Ok(FlightData {
            data_header: header.to_vec().into(),
            data_body: body.to_vec().into(),
            ..Default::default()
        }));
    }
    let stream = FlightRecordBatchStream::new_from_flight_data(futures::stream::iter(messages));
    futures::executor::block_on(async {
        let mut stream = stream;
        // The server's own decoding step (a panic inside arrow's reader becomes an error there).
        loop {
            // The stream is an in-memory iterator: the decoder runs on this thread, inside this poll.
            DECODING.with(|d| d.set(true));
            let next = marrow_flight::service::next_batch(&mut stream).await;
            DECODING.with(|d| d.set(false));
            let Some(batch) = next else { break };
            match batch {
                // What the ingest does first with a batch it received.
                Ok(b) => {
                    let _ = b.get_array_memory_size();
                    let _ = arrow::util::pretty::pretty_format_batches(&[b]);
                }
                Err(_) => break,
            }
        }
    });
}

/// A safetensors file (its header checked against the file's length).
pub fn safetensors_header(data: &[u8]) {
    let _ = marrow_engine::models::safetensors::parse_header(
        &mut std::io::Cursor::new(data),
        data.len() as u64,
        Path::new("fuzz.safetensors"),
    );
}

/// A PEFT `adapter_config.json`.
pub fn peft_config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(config) = marrow_engine::models::peft::LoraConfig::parse(text) {
            for module in config.target_modules() {
                let _ = config.scale(&module);
            }
        }
    }
}

/// Quantized blobs as `dequantize(blob, scheme)` reads them: the first byte picks the scheme.
pub fn quant_blocks(data: &[u8]) {
    use marrow_udfs::quant::Scheme;
    let Some((&pick, blob)) = data.split_first() else {
        return;
    };
    let schemes = [
        Scheme::Q8_0,
        Scheme::Q4_0,
        Scheme::Q4K,
        Scheme::Q2K,
        Scheme::Nf4,
        Scheme::Int8,
    ];
    let scheme = schemes[pick as usize % schemes.len()];
    if let Ok(n) = scheme.dequantized_len(blob.len()) {
        let mut out = vec![0f32; n];
        let _ = scheme.dequantize(blob, &mut out);
    }
}
