//! `DoExchange`: a statement and its parameters in one call, its result streamed back in the same call. Flight SQL
//! runs a parameterized query in three calls (bind with `DoPut`, `GetFlightInfo`, `DoGet`); an agent's recall pays
//! each round trip, so Marrow's clients send it here instead.
//!
//! The call's descriptor is a path, `["marrow.sql", <statement>]`. The client then streams its parameters as Arrow
//! data (a schema and batches, one statement run per row, as a bound prepared statement runs), or a schema without
//! fields (or nothing) for a statement without parameters, and ends its side. The server prepares the statement in the caller's session
//! (kept by SQL text, see [`ClientSession::statement`]), runs it, and answers with its rows: a query's result, a
//! write's one-row `count`, an empty result for anything else.

use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::{FlightData, FlightDescriptor};
use futures::{stream, StreamExt, TryStreamExt};
use tonic::{Request, Response, Streaming};

use super::encode::{encode_stream, read_batches, DoGetStream};
use super::{call_context, MarrowFlightService};
use crate::error::{Error, Result};

/// The first element of an exchange descriptor's path.
pub const EXCHANGE_SQL: &str = "marrow.sql";

/// What a malformed exchange is told.
fn usage() -> Error {
    Error::invalid(format!(
        "DoExchange runs one SQL statement: its first message's descriptor must be the path \
         [\"{EXCHANGE_SQL}\", <statement>], followed by the parameters as Arrow data (or nothing)"
    ))
}

/// The statement an exchange descriptor names.
fn statement_of(descriptor: Option<&FlightDescriptor>) -> Result<String> {
    let descriptor = descriptor.ok_or_else(usage)?;
    match (descriptor.r#type(), descriptor.path.as_slice()) {
        (DescriptorType::Path, [kind, sql]) if kind == EXCHANGE_SQL => Ok(sql.clone()),
        _ => Err(usage()),
    }
}

impl MarrowFlightService {
    pub(super) async fn exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<DoGetStream>> {
        let ctx = call_context(&request)?;
        let session = ctx.session();
        let mut input = request.into_inner();
        let first = input
            .message()
            .await
            .map_err(|e| Error::invalid(format!("DoExchange: reading the first message: {e}")))?
            .ok_or_else(usage)?;
        let sql = statement_of(first.flight_descriptor.as_ref())?;
        let statement = session.statement(&sql).await?;
        let (schema, batches) = read_batches(
            stream::iter([Ok(first)]).chain(input),
            session.engine().database().config().memory_limit,
        )
        .await?;
        // A schema without fields (the client had to send a message to carry the descriptor) is no parameters.
        let params = match schema {
            Some(s) if !s.fields().is_empty() => Some(statement.bind(&batches)?),
            _ => None,
        };
        let rows = statement
            .execute(session.engine(), params)
            .await?
            .into_stream();
        Ok(encode_stream(rows.schema(), rows.map_err(Error::from)))
    }
}
