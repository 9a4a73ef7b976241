//! Prepared statement handles. A handle belongs to the client session that created it and names an engine
//! [`PreparedStatement`] with the parameter rows bound to it. Binding (`DoPut` with a prepared query) replaces the
//! bound rows and returns the same handle; a query with several bound rows runs once per row, the results
//! concatenated; an update with several rows runs through the engine's executemany.

use std::sync::{Arc, Mutex};

use arrow_flight::sql::server::PeekableFlightDataStream;
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, DoPutPreparedStatementResult,
};
use arrow_flight::{Action, FlightDescriptor, FlightInfo};
use marrow_engine::{Parameters, PreparedStatement};
use tonic::{Request, Response};

use super::encode::{read_batches, schema_ipc};
use super::statements::row_count;
use super::tickets::{new_id, parse_id};
use super::{call_context, MarrowFlightService};
use crate::auth::{CallContext, ClientSession};
use crate::error::{Error, Result};

/// A prepared statement handle's state.
pub(super) struct Prepared {
    pub(super) owner: Arc<ClientSession>,
    statement: PreparedStatement,
    /// `None` until parameters are bound.
    params: Mutex<Option<Parameters>>,
}

impl Prepared {
    fn bound(&self) -> Option<Parameters> {
        self.params.lock().expect("bound parameters").clone()
    }
}

impl MarrowFlightService {
    fn lookup_prepared(
        &self,
        ctx: &CallContext,
        handle: &[u8],
    ) -> Result<(Arc<ClientSession>, Arc<Prepared>)> {
        let id = parse_id(handle).ok_or_else(Error::unknown_handle)?;
        let prepared = self
            .shared
            .prepared
            .lock()
            .expect("prepared")
            .get(&id)
            .cloned()
            .ok_or_else(Error::unknown_handle)?;
        let session = ctx
            .session_for(&prepared.owner)
            .ok_or_else(Error::unknown_handle)?;
        Ok((session, prepared))
    }

    pub(super) async fn create_prepared(
        &self,
        cmd: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult> {
        if cmd.transaction_id.is_some() {
            return Err(Error::no_transactions());
        }
        let ctx = call_context(&request)?;
        let session = ctx.session();
        let statement = session.engine().prepare_statement(cmd.query).await?;
        let dataset_schema = schema_ipc(statement.dataset_schema())?;
        let parameter_schema = schema_ipc(statement.parameter_schema())?;
        self.sweep();
        let id = new_id();
        self.shared.prepared.lock().expect("prepared").insert(
            id,
            Arc::new(Prepared {
                owner: session,
                statement,
                params: Mutex::new(None),
            }),
        );
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: id.to_vec().into(),
            dataset_schema,
            parameter_schema,
        })
    }

    /// Closing is idempotent: an unknown handle (closed, or its session expired) is not an error.
    pub(super) fn close_prepared(
        &self,
        cmd: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<()> {
        let ctx = call_context(&request)?;
        if let Ok((_, prepared)) = self.lookup_prepared(&ctx, &cmd.prepared_statement_handle) {
            if let Some(id) = parse_id(&cmd.prepared_statement_handle) {
                let mut all = self.shared.prepared.lock().expect("prepared");
                if all.get(&id).is_some_and(|p| Arc::ptr_eq(p, &prepared)) {
                    all.remove(&id);
                }
            }
        }
        Ok(())
    }

    pub(super) async fn prepared_info(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>> {
        let ctx = call_context(&request)?;
        let (session, prepared) = self.lookup_prepared(&ctx, &cmd.prepared_statement_handle)?;
        self.statement_info(
            &session,
            prepared.statement.clone(),
            prepared.bound(),
            request.into_inner(),
        )
        .await
    }

    /// Bind parameter rows to a prepared query (replacing any bound before).
    pub(super) async fn bind_prepared(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult> {
        let ctx = call_context(&request)?;
        let (_session, prepared) = self.lookup_prepared(&ctx, &cmd.prepared_statement_handle)?;
        let (_schema, batches) = read_batches(
            request.into_inner(),
            ctx.session().engine().database().config().memory_limit,
        )
        .await?;
        let params = prepared.statement.bind(&batches)?;
        *prepared.params.lock().expect("bound parameters") = Some(params);
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(cmd.prepared_statement_handle),
        })
    }

    /// Run a prepared update with the parameter rows streamed with the call (executemany), or else those bound.
    pub(super) async fn update_prepared(
        &self,
        cmd: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64> {
        let ctx = call_context(&request)?;
        let (session, prepared) = self.lookup_prepared(&ctx, &cmd.prepared_statement_handle)?;
        let (schema, batches) = read_batches(
            request.into_inner(),
            ctx.session().engine().database().config().memory_limit,
        )
        .await?;
        let params = match schema {
            // All rows are converted before the first runs.
            Some(_) => Some(prepared.statement.bind(&batches)?),
            None => prepared.bound(),
        };
        let count = prepared
            .statement
            .execute_update(session.engine(), params)
            .await?;
        Ok(row_count(count))
    }
}
