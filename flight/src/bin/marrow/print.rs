//! Printing results: a table, CSV or JSON lines on standard output.

use std::io::Write;

use anyhow::Result;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use clap::ValueEnum;

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

pub fn print_result(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    is_count: bool,
    format: Format,
) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if is_count {
        let n = marrow_engine::QueryOutput::count_in(batches);
        if let Format::Table = format {
            writeln!(out, "{n} row(s) affected")?;
            return Ok(());
        }
    }
    if schema.fields().is_empty() {
        return Ok(());
    }
    match format {
        Format::Table => {
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            if batches.is_empty() {
                let empty = RecordBatch::new_empty(schema.clone());
                writeln!(
                    out,
                    "{}",
                    arrow::util::pretty::pretty_format_batches(&[empty])?
                )?;
            } else {
                writeln!(
                    out,
                    "{}",
                    arrow::util::pretty::pretty_format_batches(batches)?
                )?;
            }
            writeln!(out, "({rows} row{})", if rows == 1 { "" } else { "s" })?;
        }
        Format::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut out);
            for b in batches {
                w.write(b)?;
            }
        }
        Format::Json => {
            let mut w = arrow::json::LineDelimitedWriter::new(&mut out);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
    }
    Ok(())
}
