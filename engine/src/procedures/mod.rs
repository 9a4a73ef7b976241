//! `CALL` procedures, one file each, registered in `builtins.rs` through the
//! [`Procedure`](crate::extension::Procedure) trait; `SELECT * FROM marrow_procedures()` lists them with their
//! arguments and docs. Procedures are SQL clients: they may send statements back through the session.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{Field, Schema};
use datafusion::common::ScalarValue;

use crate::error::{Error, Result};
use crate::extension::Args;
use crate::session::Session;

pub mod cleanup_versions;
pub mod compact_table;
pub mod drop_adapter;
pub mod drop_model;
pub mod drop_tag;
pub mod export_gguf;
pub mod export_peft;
pub mod export_safetensors;
pub mod import_peft;
pub mod import_safetensors;
pub mod merge_adapter;
pub mod quantize_model;
pub mod restore_table;
pub mod tag_version;
pub mod upkeep;

/// The first argument as the name of an existing Marrow table.
pub(crate) fn table_arg(session: &Session, args: &Args) -> Result<String> {
    match args.get(0) {
        Some(ScalarValue::Utf8(Some(t)))
        | Some(ScalarValue::Utf8View(Some(t)))
        | Some(ScalarValue::LargeUtf8(Some(t))) => {
            if session.database().schema_provider().lance_table_exists(t) {
                Ok(t.clone())
            } else {
                Err(Error::not_found(format!("table '{t}' not found")))
            }
        }
        _ => Err(Error::invalid(format!(
            "CALL {}: the first argument is the table name, as a string",
            args.procedure()
        ))),
    }
}

/// A version number: a positive integer.
pub(crate) fn version_number(v: &ScalarValue) -> Option<u64> {
    let n = match v {
        ScalarValue::Int64(Some(n)) => *n,
        ScalarValue::Int32(Some(n)) => *n as i64,
        ScalarValue::UInt64(Some(n)) => *n as i64,
        _ => return None,
    };
    (n > 0).then_some(n as u64)
}

/// A retention period in microseconds: an INTERVAL, or a string such as '7 days'.
pub(crate) fn interval_micros(v: &ScalarValue) -> Result<i64> {
    let us = match v {
        ScalarValue::IntervalMonthDayNano(Some(i)) => {
            i.months as i64 * 30 * 86_400_000_000
                + i.days as i64 * 86_400_000_000
                + i.nanoseconds / 1000
        }
        ScalarValue::IntervalDayTime(Some(i)) => {
            i.days as i64 * 86_400_000_000 + i.milliseconds as i64 * 1000
        }
        ScalarValue::IntervalYearMonth(Some(m)) => *m as i64 * 30 * 86_400_000_000,
        other => {
            return Err(Error::invalid(format!(
                "the retention must be an interval such as INTERVAL '7 days', got {other}"
            )))
        }
    };
    if us < 0 {
        return Err(Error::invalid("the retention period cannot be negative"));
    }
    Ok(us)
}

/// A one-value text column.
pub(crate) fn text(s: &str) -> ArrayRef {
    Arc::new(StringArray::from(vec![s.to_string()]))
}

/// A one-value UInt64 column.
pub(crate) fn uint(n: u64) -> ArrayRef {
    Arc::new(UInt64Array::from(vec![n]))
}

/// The one row a procedure returns.
pub(crate) fn one_row(columns: &[(&str, ArrayRef)]) -> Result<RecordBatch> {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(n, a)| Field::new(*n, a.data_type().clone(), false))
        .collect();
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns.iter().map(|(_, a)| a.clone()).collect(),
    )?)
}
