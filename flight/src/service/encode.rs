//! Arrow data in and out: result streams encoded as Flight data in messages of bounded size, the batches of a
//! DoPut stream decoded, schemas encoded as IPC.

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::sql::server::PeekableFlightDataStream;
use arrow_flight::{FlightData, IpcMessage, SchemaAsIpc};
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::EmptyRecordBatchStream;
use futures::{stream, Stream, StreamExt, TryStreamExt};
use tonic::{Response, Status};

use crate::error::{Error, Result};

/// No `FlightData` message of a result is larger than this (unless one row is).
pub const MAX_MESSAGE_BYTES: usize = 2 * 1024 * 1024;

pub(super) type DoGetStream =
    Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;

/// The in-memory size of a batch's rows (its slice, not the buffers it shares with others).
fn slice_size(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_buffer_memory_size())
        })
        .sum()
}

/// Split a batch into row ranges of at most `max` bytes each (a single larger row stays whole).
pub fn split_batch(batch: RecordBatch, max: usize) -> Vec<RecordBatch> {
    let mut out = vec![];
    let mut todo = vec![batch];
    while let Some(b) = todo.pop() {
        if b.num_rows() <= 1 || slice_size(&b) <= max {
            out.push(b);
        } else {
            let half = b.num_rows() / 2;
            // Pushed in reverse so that rows come out in order.
            todo.push(b.slice(half, b.num_rows() - half));
            todo.push(b.slice(0, half));
        }
    }
    out
}

/// Encode a result stream as Flight data: the schema first (even with no rows), then batches of bounded size.
pub(super) fn encode_stream(
    schema: SchemaRef,
    batches: impl Stream<Item = Result<RecordBatch>> + Send + 'static,
) -> Response<DoGetStream> {
    // A panic while the rows are computed ends this stream with an INTERNAL error instead of tearing down the
    // connection (the client would only see CANCELLED); other requests never shared its state.
    let batches = std::panic::AssertUnwindSafe(batches)
        .catch_unwind()
        .map(|item| match item {
            Ok(item) => item,
            Err(panic) => {
                let what = marrow_engine::error::panic_message(panic.as_ref());
                tracing::error!("a query panicked while streaming its rows: {what}");
                Err(Error::internal("computing the result", what))
            }
        });
    let split = batches
        .map_ok(|b| {
            stream::iter(
                split_batch(b, MAX_MESSAGE_BYTES)
                    .into_iter()
                    .map(Ok::<_, Error>),
            )
        })
        .try_flatten()
        .map_err(|e: Error| FlightError::Tonic(Box::new(Status::from(e))));
    let encoded = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        // Batches are already split by their real (sliced) size above; the encoder's own estimate counts whole
        // shared buffers and would split slices again.
        .with_max_flight_data_size(usize::MAX)
        .build(split)
        .map_err(Status::from);
    Response::new(Box::pin(encoded))
}

/// Encode batches held in memory.
pub(super) fn encode_batches(
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
) -> Response<DoGetStream> {
    encode_stream(schema, stream::iter(batches.into_iter().map(Ok)))
}

/// Encode one batch (a catalog listing), with its own schema.
pub(super) fn encode_batch(batch: RecordBatch) -> Response<DoGetStream> {
    encode_batches(batch.schema(), vec![batch])
}

/// Rows a received batch may declare whatever its size: past this, at most 8 rows per byte it holds (a boolean's).
const ROWS_WITHOUT_DATA: usize = 1 << 20;

/// The decoder's next batch. Arrow's IPC reader meets some malformed messages (a validity buffer shorter than its
/// field's length) with a panic rather than an error; here that is an error like any other malformed data, for the
/// client (INVALID_ARGUMENT) and for the rest of the stream, which ends. So is a batch that declares far more rows
/// than its data holds: columns without buffers (type Null, a struct without fields, zero-width lists or binaries)
/// take any length for free, and the first cast or copy of such a column would allocate memory no client sent (a
/// 500-byte message declaring 2^40 rows).
pub async fn next_batch(
    decoder: &mut FlightRecordBatchStream,
) -> Option<std::result::Result<RecordBatch, FlightError>> {
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(decoder.next())
        .catch_unwind()
        .await
    {
        Ok(Some(Ok(batch))) => Some(within_its_data(batch)),
        Ok(item) => item,
        Err(panic) => Some(Err(FlightError::DecodeError(format!(
            "malformed Arrow IPC data: {}",
            marrow_engine::error::panic_message(panic.as_ref())
        )))),
    }
}

fn within_its_data(batch: RecordBatch) -> std::result::Result<RecordBatch, FlightError> {
    let bytes = batch.get_array_memory_size();
    if batch.num_rows() > ROWS_WITHOUT_DATA.max(bytes.saturating_mul(8)) {
        return Err(FlightError::DecodeError(format!(
            "malformed Arrow IPC data: a record batch declares {} rows but holds {bytes} bytes; columns without \
             data (type Null, a struct without fields) may have at most {ROWS_WITHOUT_DATA} rows per batch",
            batch.num_rows()
        )));
    }
    Ok(batch)
}

/// Read the record batches of a DoPut stream: its schema (if any message carried one) and its batches.
/// The Arrow data of a DoPut, decoded as it arrives. With a `limit` (the server's memory limit), a stream whose
/// batches take more memory than that is refused as soon as it passes it, before the rest is read.
pub(super) async fn read_batches(
    stream: impl Stream<Item = std::result::Result<FlightData, Status>> + Send + 'static,
    limit: Option<usize>,
) -> Result<(Option<SchemaRef>, Vec<RecordBatch>)> {
    // The first message may carry only the descriptor (no Arrow data): skip messages without an IPC header.
    let data = stream
        .try_filter(|fd| futures::future::ready(!fd.data_header.is_empty()))
        .map_err(FlightError::from);
    let mut decoder = FlightRecordBatchStream::new_from_flight_data(data);
    let mut batches = vec![];
    let mut held = 0usize;
    while let Some(batch) = next_batch(&mut decoder).await {
        let batch = batch.map_err(Error::client_data)?;
        held += batch.get_array_memory_size();
        if let Some(limit) = limit.filter(|l| held > *l) {
            return Err(Error::Engine(marrow_engine::Error::new(
                marrow_engine::ErrorKind::ResourcesExhausted,
                format!(
                    "the data sent takes more than the server's memory limit ({limit} bytes) and was refused \
                     unread past that point; nothing was written. Send it in several calls (each one commit)"
                ),
            )));
        }
        batches.push(batch);
    }
    Ok((decoder.schema().cloned(), batches))
}

/// The first error met while decoding a DoPut stream, kept for the caller: the engine sees only that its input
/// ended in an error, and the client should get the decoder's own message and status.
#[derive(Clone, Default)]
pub(super) struct DecodeFailure(Arc<Mutex<Option<Error>>>);

impl DecodeFailure {
    /// The error to report for a write that failed with `e`: the decoder's, if the stream broke.
    pub(super) fn explain(&self, e: Error) -> Error {
        self.0
            .lock()
            .expect("decode slot poisoned")
            .take()
            .unwrap_or(e)
    }
}

/// The Arrow data of a DoPut as a stream decoded as the reader pulls it, so that a write holds only the batches in
/// hand: the stream's schema (known once its first message is read; `None` if it sent none) and its batches.
pub(super) async fn read_stream(
    stream: PeekableFlightDataStream,
) -> Result<(Option<SchemaRef>, SendableRecordBatchStream, DecodeFailure)> {
    // The first message may carry only the descriptor (no Arrow data): skip messages without an IPC header.
    let data = stream
        .try_filter(|fd| futures::future::ready(!fd.data_header.is_empty()))
        .map_err(FlightError::from);
    let mut decoder = FlightRecordBatchStream::new_from_flight_data(data);
    let first = next_batch(&mut decoder)
        .await
        .transpose()
        .map_err(Error::client_data)?;
    let Some(schema) = decoder.schema().cloned() else {
        return Ok((
            None,
            Box::pin(EmptyRecordBatchStream::new(Arc::new(Schema::empty()))),
            DecodeFailure::default(),
        ));
    };
    let failure = DecodeFailure::default();
    let slot = failure.clone();
    // After an error (a panic among them) the decoder is not polled again.
    let rest = stream::unfold(Some(decoder), |decoder| async move {
        let mut decoder = decoder?;
        let item = next_batch(&mut decoder).await?;
        let keep = item.is_ok().then_some(decoder);
        Some((item, keep))
    });
    let rows = stream::iter(first.map(Ok)).chain(rest).map(move |b| {
        b.map_err(|e| {
            let e = Error::client_data(e);
            let message = e.to_string();
            slot.0
                .lock()
                .expect("decode slot poisoned")
                .get_or_insert(e);
            DataFusionError::Execution(message)
        })
    });
    Ok((
        Some(schema.clone()),
        Box::pin(RecordBatchStreamAdapter::new(schema, rows)),
        failure,
    ))
}

/// A schema as the IPC message Flight SQL puts in its results.
pub(super) fn schema_ipc(schema: &Schema) -> Result<bytes::Bytes> {
    let message: std::result::Result<IpcMessage, _> =
        SchemaAsIpc::new(schema, &IpcWriteOptions::default()).try_into();
    message
        .map(|IpcMessage(b)| b)
        .map_err(|e| Error::internal("encoding a schema", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::BinaryArray;
    use arrow::datatypes::{DataType, Field};
    use std::sync::Arc;

    #[test]
    fn split_respects_the_limit_and_the_order() {
        let values: Vec<Vec<u8>> = (0..40).map(|i| vec![i as u8; 100_000]).collect();
        let array = BinaryArray::from_iter_values(values.iter());
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("b", DataType::Binary, false)])),
            vec![Arc::new(array)],
        )
        .unwrap();
        let parts = split_batch(batch.clone(), 1_000_000);
        assert!(parts.len() >= 4, "{} parts", parts.len());
        for p in &parts {
            assert!(slice_size(p) <= 1_000_000 || p.num_rows() == 1);
        }
        let joined = arrow::compute::concat_batches(&batch.schema(), &parts).unwrap();
        assert_eq!(joined, batch);
        // A small batch stays whole; a single huge row is not split.
        assert_eq!(split_batch(batch.slice(0, 2), 1_000_000).len(), 1);
        assert_eq!(split_batch(batch.slice(0, 1), 10).len(), 1);
    }

    /// Flight data of `batch` as a DoPut carries it, decoded by the server's decoding step.
    async fn received(batch: RecordBatch) -> Vec<std::result::Result<RecordBatch, FlightError>> {
        let data: Vec<_> = FlightDataEncoderBuilder::new()
            .build(stream::iter([Ok(batch)]))
            .collect()
            .await;
        let mut decoder = FlightRecordBatchStream::new_from_flight_data(stream::iter(data));
        let mut out = vec![];
        while let Some(b) = next_batch(&mut decoder).await {
            out.push(b);
        }
        out
    }

    #[tokio::test]
    async fn batches_declaring_rows_without_data_are_refused() {
        use arrow::array::{Int64Array, NullArray};
        let nulls = |rows: usize| {
            RecordBatch::try_new(
                Arc::new(Schema::new(vec![Field::new("n", DataType::Null, true)])),
                vec![Arc::new(NullArray::new(rows))],
            )
            .unwrap()
        };
        // A few bytes on the wire for 2^33 rows: refused before anything copies or casts them.
        let got = received(nulls(1 << 33)).await;
        let err = got[0].as_ref().unwrap_err().to_string();
        assert!(err.contains("declares 8589934592 rows"), "{err}");
        // Within the bound, and data that holds its rows, pass.
        assert_eq!(
            received(nulls(1000)).await[0].as_ref().unwrap().num_rows(),
            1000
        );
        let ints = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("i", DataType::Int64, false)])),
            vec![Arc::new(Int64Array::from_iter_values(0..3_000_000))],
        )
        .unwrap();
        let rows: usize = received(ints)
            .await
            .iter()
            .map(|b| b.as_ref().unwrap().num_rows())
            .sum();
        assert_eq!(rows, 3_000_000);
    }
}
