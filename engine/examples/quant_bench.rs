//! Quantization throughput on a safetensors model's F32 tensors, in GB/s of f32, one line of JSON per scheme:
//!
//! - `raw_*`: the kernels (`Scheme::quantize` / `Scheme::dequantize`) on one thread, over the same 4 MiB pieces
//!   the `tensors` table stores;
//! - `sql_*`: `quantize(data, s)` / `dequantize(data, s)` over the `tensors` rows of the imported model, in-process,
//!   with `scan` the same query without the function (reading the chunks from Lance);
//! - `memcpy`: copying the same bytes, the ceiling.
//!
//! `cargo run --release -p marrow-engine --example quant_bench -- model.safetensors [reps]`
//! (bench/quant.py runs it next to gguf-py's numpy reference.)

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

use std::time::Instant;

use marrow_engine::models::safetensors::{read_header, CHUNK_BYTES};
use marrow_engine::{Config, Database};
use marrow_udfs::quant::Scheme;

fn best(reps: usize, mut f: impl FnMut()) -> f64 {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> marrow_engine::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let path = std::path::PathBuf::from(
        args.get(1)
            .expect("usage: quant_bench model.safetensors [reps]"),
    );
    let reps: usize = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(3);
    let header = read_header(None, &path)?;
    let file = std::fs::read(&path)?;
    // (name, last dimension, values)
    let tensors: Vec<(String, usize, Vec<f32>)> = header
        .tensors
        .iter()
        .filter(|t| t.dtype == "F32")
        .map(|t| {
            let bytes =
                &file[(header.data_start + t.begin) as usize..(header.data_start + t.end) as usize];
            let values = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (
                t.name.clone(),
                *t.shape.last().unwrap_or(&1) as usize,
                values,
            )
        })
        .collect();

    let dir = tempfile::tempdir()?;
    let db = Database::open(Config::new(dir.path())).await?;
    let session = db.session();
    marrow_engine::models::weights::import(&session, &path, "m", None).await?;
    let sql_time = |sql: String| {
        let session = session.clone();
        async move {
            let mut times = vec![];
            for _ in 0..reps {
                let t = Instant::now();
                session.execute(&sql).await?.collect().await?;
                times.push(t.elapsed().as_secs_f64());
            }
            Ok::<f64, marrow_engine::Error>(times.into_iter().fold(f64::INFINITY, f64::min))
        }
    };

    for scheme in Scheme::ALL {
        let block = scheme.block().map_or(1, |(v, _)| v);
        let pieces: Vec<&[f32]> = tensors
            .iter()
            .filter(|(_, last, _)| last % block == 0)
            .flat_map(|(_, _, v)| v.chunks(CHUNK_BYTES / 4))
            .collect();
        let gb = pieces.iter().map(|p| p.len() * 4).sum::<usize>() as f64 / 1e9;
        let mut blobs: Vec<Vec<u8>> = pieces
            .iter()
            .map(|p| vec![0u8; scheme.quantized_len(p.len()).expect("whole blocks")])
            .collect();
        let quant = best(reps, || {
            for (p, b) in pieces.iter().zip(blobs.iter_mut()) {
                scheme.quantize(p, b).expect("finite weights");
            }
        });
        let mut outs: Vec<Vec<f32>> = pieces.iter().map(|p| vec![0f32; p.len()]).collect();
        let dequant = best(reps, || {
            for (b, o) in blobs.iter().zip(outs.iter_mut()) {
                scheme.dequantize(b, o).expect("whole blocks");
            }
        });
        let mut copies: Vec<Vec<f32>> = pieces.iter().map(|p| vec![0f32; p.len()]).collect();
        let memcpy = best(reps, || {
            for (p, c) in pieces.iter().zip(copies.iter_mut()) {
                c.copy_from_slice(p);
            }
        });

        let fits = format!(
            "model = 'm' AND dtype = 'F32' AND array_element(shape, CAST(array_length(shape) AS BIGINT)) % {block} = 0"
        );
        let s = scheme.name();
        let scan = sql_time(format!("SELECT count(data) FROM tensors WHERE {fits}")).await?;
        let sql_quant = sql_time(format!(
            "SELECT count(quantize(data, '{s}')) FROM tensors WHERE {fits}"
        ))
        .await?;
        session
            .execute(&format!(
                "CREATE TABLE q AS SELECT quantize(data, '{s}') AS blob FROM tensors WHERE {fits}"
            ))
            .await?;
        let q_scan = sql_time("SELECT count(blob) FROM q".into()).await?;
        let sql_dequant = sql_time(format!(
            "SELECT sum(array_length(dequantize(blob, '{s}'))) FROM q"
        ))
        .await?;
        session.execute("DROP TABLE q").await?;
        println!(
            "{{\"scheme\": \"{s}\", \"gb\": {gb:.4}, \"raw_quantize\": {:.3}, \"raw_dequantize\": {:.3}, \
             \"memcpy\": {:.3}, \"sql_quantize\": {:.3}, \"sql_dequantize\": {:.3}, \"scan\": {:.3}, \
             \"scan_quantized\": {:.3}}}",
            gb / quant,
            gb / dequant,
            gb / memcpy,
            gb / sql_quant,
            gb / sql_dequant,
            gb / scan,
            gb / q_scan,
        );
    }
    Ok(())
}
