//! Statements sent as SQL text (`CommandStatementQuery`, `CommandStatementUpdate`), and the FlightInfo of any
//! statement, prepared or not: a query gets a ticket to run it; anything else runs right there, once.

use std::sync::Arc;

use arrow_flight::sql::{CommandStatementQuery, CommandStatementUpdate};
use arrow_flight::{FlightDescriptor, FlightInfo};
use marrow_engine::{Parameters, PreparedStatement};
use tonic::{Request, Response};

use super::tickets::Pending;
use super::{call_context, MarrowFlightService};
use crate::auth::ClientSession;
use crate::error::{Error, Result};

impl MarrowFlightService {
    /// FlightInfo for a statement: a query gets a ticket to run it; anything else runs now and the ticket holds
    /// its small result (a one-row `count` table for writes, an empty table otherwise).
    pub(super) async fn statement_info(
        &self,
        session: &Arc<ClientSession>,
        statement: PreparedStatement,
        params: Option<Parameters>,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>> {
        statement.check_parameters(params.as_ref())?;
        if statement.is_query() {
            let schema = statement.dataset_schema().clone();
            let pending = Pending::Query { statement, params };
            return self.flight_info(session, &schema, pending, -1, descriptor);
        }
        let output = statement.execute(session.engine(), params).await?;
        let (schema, batches) = output.collect().await?;
        let rows = batches.iter().map(|b| b.num_rows() as i64).sum();
        self.flight_info(
            session,
            &schema.clone(),
            Pending::Rows { schema, batches },
            rows,
            descriptor,
        )
    }

    pub(super) async fn query_info(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>> {
        if query.transaction_id.is_some() {
            return Err(Error::no_transactions());
        }
        let ctx = call_context(&request)?;
        let session = ctx.session();
        let statement = session.engine().prepare_statement(query.query).await?;
        self.statement_info(&session, statement, None, request.into_inner())
            .await
    }

    /// Run an update; its row count, or -1 when it reports none.
    pub(super) async fn update(
        &self,
        cmd: CommandStatementUpdate,
        request: Request<arrow_flight::sql::server::PeekableFlightDataStream>,
    ) -> Result<i64> {
        if cmd.transaction_id.is_some() {
            return Err(Error::no_transactions());
        }
        let ctx = call_context(&request)?;
        let session = ctx.session();
        let count = session.engine().execute_update(&cmd.query).await?;
        Ok(row_count(count))
    }
}

/// Flight SQL's row count: -1 when the statement reports none.
pub(super) fn row_count(count: Option<u64>) -> i64 {
    count.map_or(-1, |n| n as i64)
}
