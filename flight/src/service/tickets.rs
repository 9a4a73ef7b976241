//! Tickets: random 128-bit ids of server-side state (a query to run, rows already produced, a catalog listing),
//! bound to the session that got them, single-use and valid for [`TICKET_TTL`]. `DoGet` redeems them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, CommandGetXdbcTypeInfo, ProstMessageExt, TicketStatementQuery,
};
use arrow_flight::{FlightDescriptor, FlightEndpoint, FlightInfo, Ticket};
use futures::TryStreamExt;
use marrow_engine::{Parameters, PreparedStatement};
use prost::Message;
use tonic::{Request, Response};

use super::encode::{encode_batch, encode_batches, encode_stream, DoGetStream};
use super::{call_context, metadata, MarrowFlightService};
use crate::auth::{CallContext, ClientSession};
use crate::error::{Error, Result};

/// How long a ticket stays valid.
pub const TICKET_TTL: Duration = Duration::from_secs(600);

/// The id of a ticket or a prepared statement handle.
pub(super) type Id = [u8; 16];

pub(super) fn new_id() -> Id {
    rand::random()
}

pub(super) fn parse_id(bytes: &[u8]) -> Option<Id> {
    bytes.try_into().ok()
}

/// What a ticket stands for.
pub(super) enum Pending {
    /// A query, run when the ticket is redeemed, in the schema GetFlightInfo announced.
    Query {
        statement: PreparedStatement,
        params: Option<Parameters>,
    },
    /// What a statement that is not a query produced when it ran at GetFlightInfo.
    Rows {
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    },
    Catalogs(CommandGetCatalogs),
    Schemas(CommandGetDbSchemas),
    Tables(CommandGetTables),
    TableTypes(CommandGetTableTypes),
    SqlInfo(CommandGetSqlInfo),
    XdbcTypeInfo(CommandGetXdbcTypeInfo),
}

pub(super) struct TicketEntry {
    owner: Arc<ClientSession>,
    expires: Instant,
    pending: Pending,
}

impl MarrowFlightService {
    /// Drop expired tickets and the prepared statements of closed sessions (at most every few seconds).
    pub(super) fn sweep(&self) {
        let now = Instant::now();
        {
            let mut last = self.shared.last_sweep.lock().expect("sweep clock");
            if now.duration_since(*last) < Duration::from_secs(5) {
                return;
            }
            *last = now;
        }
        self.shared
            .tickets
            .lock()
            .expect("tickets")
            .retain(|_, t| t.expires > now && !t.owner.is_closed());
        self.shared
            .prepared
            .lock()
            .expect("prepared")
            .retain(|_, p| !p.owner.is_closed());
    }

    fn issue_ticket(&self, owner: &Arc<ClientSession>, pending: Pending) -> Ticket {
        self.sweep();
        let id = new_id();
        self.shared.tickets.lock().expect("tickets").insert(
            id,
            TicketEntry {
                owner: owner.clone(),
                expires: Instant::now() + self.shared.ticket_ttl,
                pending,
            },
        );
        let ticket = TicketStatementQuery {
            statement_handle: id.to_vec().into(),
        };
        Ticket {
            ticket: ticket.as_any().encode_to_vec().into(),
        }
    }

    /// Take a ticket for the calling session (single use).
    fn take_ticket(
        &self,
        ctx: &CallContext,
        handle: &[u8],
    ) -> Result<(Arc<ClientSession>, Pending)> {
        let id = parse_id(handle).ok_or_else(Error::invalid_ticket)?;
        let mut tickets = self.shared.tickets.lock().expect("tickets");
        let entry = tickets.get(&id).ok_or_else(Error::unknown_ticket)?;
        if entry.expires <= Instant::now() || entry.owner.is_closed() {
            tickets.remove(&id);
            return Err(Error::unknown_ticket());
        }
        let session = ctx.session_for(&entry.owner).ok_or_else(|| {
            tracing::warn!("a session presented another session's ticket");
            Error::unknown_ticket()
        })?;
        let entry = tickets.remove(&id).expect("present above");
        Ok((session, entry.pending))
    }

    /// A FlightInfo whose one endpoint holds a new ticket for `pending`.
    pub(super) fn flight_info(
        &self,
        owner: &Arc<ClientSession>,
        schema: &Schema,
        pending: Pending,
        total_records: i64,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>> {
        let ticket = self.issue_ticket(owner, pending);
        let info = FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| Error::internal("encoding a schema", e))?
            .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
            .with_descriptor(descriptor)
            .with_total_records(total_records)
            .with_ordered(true);
        Ok(Response::new(info))
    }

    /// Redeem a ticket: run its query, or send what it holds.
    pub(super) async fn redeem(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>> {
        let ctx = call_context(&request)?;
        let (session, pending) = self.take_ticket(&ctx, &ticket.statement_handle)?;
        let engine = session.engine();
        Ok(match pending {
            Pending::Query { statement, params } => {
                let rows = statement.execute(engine, params).await?.into_stream();
                encode_stream(rows.schema(), rows.map_err(Error::from))
            }
            Pending::Rows { schema, batches } => encode_batches(schema, batches),
            Pending::Catalogs(cmd) => encode_batch(metadata::catalogs(engine, cmd)?),
            Pending::Schemas(cmd) => encode_batch(metadata::schemas(engine, cmd)?),
            Pending::Tables(cmd) => encode_batch(metadata::tables(engine, cmd).await?),
            Pending::TableTypes(cmd) => encode_batch(metadata::table_types(cmd)?),
            Pending::SqlInfo(cmd) => encode_batch(
                cmd.into_builder(&self.shared.sql_info)
                    .build()
                    .map_err(|e| Error::internal("building SQL info", e))?,
            ),
            Pending::XdbcTypeInfo(cmd) => encode_batch(
                cmd.into_builder(&self.shared.xdbc)
                    .build()
                    .map_err(|e| Error::internal("building type info", e))?,
            ),
        })
    }
}
