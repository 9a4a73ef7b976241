//! Marrow's Flight SQL service: every call the ADBC Flight SQL driver, pyarrow and arrow-flight's client make.
//! Each call is translated into engine calls on the caller's session; the engine owns the SQL.
//!
//! - Queries (`CommandStatementQuery`, a prepared query) are planned at `GetFlightInfo` (for the schema) and run at
//!   `DoGet`: the ticket holds the prepared statement and its parameters, never results.
//! - Anything that is not a query (DDL, DML, `SET` …) sent through `GetFlightInfo` runs right there, once; the
//!   ticket then holds its small result (a one-row `count` table for writes, an empty table otherwise).
//! - Prepared statements belong to the client session that created them. Binding parameters (`DoPut` with a
//!   prepared query) replaces the bound rows and returns the same handle. A query with several bound rows runs once
//!   per row and the results are concatenated; an update with several rows runs as the engine's executemany (an
//!   `INSERT … VALUES` in one commit, other statements row by row) and the counts are summed.
//! - Tickets are random 128-bit ids of server-side state, bound to the session that got them, single-use and valid
//!   for ten minutes. Unknown, expired, used or other sessions' tickets answer `NOT_FOUND`; undecodable ones
//!   `INVALID_ARGUMENT`.
//! - `DoExchange` runs one statement with its parameters in a single call ([`exchange`]), Marrow's own shortcut
//!   for its clients' hot path.
//! - `DoGet` splits batches so that no message exceeds 2 MiB (a single row larger than that is sent whole).
//!
//! By concern: [`statements`] (SQL text), [`prepared`] (handles, binding), [`tickets`] (issue, redeem),
//! [`ingest`] (bulk ingest), [`metadata`] (catalog listings), [`sql_info`] (server and type info), [`encode`]
//! (Arrow data in and out). This file holds the service's state and the `FlightSqlService` impl, which delegates.

mod encode;
mod exchange;
mod ingest;
mod metadata;
mod prepared;
mod sql_info;
mod statements;
mod tickets;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{SqlInfoData, XdbcTypeInfoData};
use arrow_flight::sql::server::{DoPutError, FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetCrossReference,
    CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys, CommandGetPrimaryKeys,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo,
    CommandPreparedStatementQuery, CommandPreparedStatementUpdate, CommandStatementIngest,
    CommandStatementQuery, CommandStatementUpdate, DoPutPreparedStatementResult, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{Action, FlightData, FlightDescriptor, FlightInfo, HandshakeRequest, Ticket};
use marrow_engine::Database;
use tonic::{Request, Response, Status, Streaming};

pub use encode::{next_batch, split_batch, MAX_MESSAGE_BYTES};
pub use exchange::EXCHANGE_SQL;
pub use tickets::TICKET_TTL;

use crate::auth::handshake::{handshake, HandshakeStream};
use crate::auth::{CallContext, Credentials, LoginLimits, LoginThrottle, SessionStore};
use crate::error::{Error, Result};
use tickets::{Id, Pending, TicketEntry};

struct Shared {
    store: Arc<SessionStore>,
    auth: Option<Credentials>,
    logins: LoginThrottle,
    prepared: Mutex<HashMap<Id, Arc<prepared::Prepared>>>,
    tickets: Mutex<HashMap<Id, TicketEntry>>,
    last_sweep: Mutex<Instant>,
    sql_info: SqlInfoData,
    xdbc: XdbcTypeInfoData,
    ticket_ttl: Duration,
}

/// The Flight SQL service. Wrap it in [`crate::auth::SessionLayer`] (as [`crate::server`] does): the layer
/// identifies each call's session.
#[derive(Clone)]
pub struct MarrowFlightService {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MarrowFlightService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MarrowFlightService")
            .field("auth", &self.shared.auth)
            .finish_non_exhaustive()
    }
}

impl MarrowFlightService {
    /// A service over `db`; with `auth`, every call needs a bearer token from a Basic-auth handshake.
    pub fn new(db: Database, auth: Option<Credentials>) -> Self {
        let store = Arc::new(SessionStore::new(db, Default::default()));
        Self::with_store(store, auth)
    }

    /// A service whose sessions live in `store` (share it with the [`crate::auth::SessionLayer`]).
    pub fn with_store(store: Arc<SessionStore>, auth: Option<Credentials>) -> Self {
        Self::with_login_limits(store, auth, LoginLimits::default())
    }

    /// [`Self::with_store`], with failed logins slowed down by `logins`.
    pub fn with_login_limits(
        store: Arc<SessionStore>,
        auth: Option<Credentials>,
        logins: LoginLimits,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                store,
                auth,
                logins: LoginThrottle::new(logins),
                prepared: Mutex::new(HashMap::new()),
                tickets: Mutex::new(HashMap::new()),
                last_sweep: Mutex::new(Instant::now()),
                sql_info: sql_info::sql_info(),
                xdbc: sql_info::xdbc_type_info(),
                ticket_ttl: TICKET_TTL,
            }),
        }
    }

    pub fn store(&self) -> &Arc<SessionStore> {
        &self.shared.store
    }
}

/// What the session layer learned about the call.
fn call_context<T>(request: &Request<T>) -> Result<CallContext> {
    request
        .extensions()
        .get::<CallContext>()
        .cloned()
        .ok_or_else(|| {
            Error::Internal(
                "request reached the Flight service without passing the session layer".into(),
            )
        })
}

type DoGetResponse = Result<Response<<MarrowFlightService as FlightService>::DoGetStream>, Status>;
type BoxedCall<'a, T> = Pin<Box<dyn Future<Output = Result<T, Status>> + Send + 'a>>;

// The two macros below write trait methods that only refuse. They are expanded after `async_trait` has rewritten
// the impl's `async fn`s, so they are written in its desugared form.

/// Every ticket Marrow hands out is a `TicketStatementQuery` naming server-side state; a ticket holding a command
/// was made by the client, and is refused rather than executed.
macro_rules! refuse_client_tickets {
    ($($method:ident($command:ty);)*) => {$(
        fn $method<'life0, 'async_trait>(
            &'life0 self,
            _command: $command,
            _request: Request<Ticket>,
        ) -> BoxedCall<'async_trait, Response<<Self as FlightService>::DoGetStream>>
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            Box::pin(async { Err(Error::invalid_ticket().into()) })
        }
    )*};
}

/// Catalog calls Marrow has nothing to answer with.
macro_rules! unimplemented_info {
    ($($method:ident($command:ty) => $message:literal;)*) => {$(
        fn $method<'life0, 'async_trait>(
            &'life0 self,
            _command: $command,
            _request: Request<FlightDescriptor>,
        ) -> BoxedCall<'async_trait, Response<FlightInfo>>
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            Box::pin(async { Err(Error::unimplemented($message).into()) })
        }
    )*};
}

#[tonic::async_trait]
impl FlightSqlService for MarrowFlightService {
    type FlightService = MarrowFlightService;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<HandshakeStream>, Status> {
        let shared = &self.shared;
        Ok(handshake(&shared.store, shared.auth.as_ref(), &shared.logins, request).await?)
    }

    // ---- statements and prepared statements (statements.rs, prepared.rs) -------------------------------------

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Ok(self.query_info(query, request).await?)
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Ok(self.prepared_info(cmd, request).await?)
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> DoGetResponse {
        Ok(self.redeem(ticket, request).await?)
    }

    async fn do_put_statement_update(
        &self,
        cmd: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Ok(self.update(cmd, request).await?)
    }

    async fn do_action_create_prepared_statement(
        &self,
        cmd: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        Ok(self.create_prepared(cmd, request).await?)
    }

    async fn do_action_close_prepared_statement(
        &self,
        cmd: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        Ok(self.close_prepared(cmd, request)?)
    }

    async fn do_put_prepared_statement_query(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        Ok(self.bind_prepared(cmd, request).await?)
    }

    async fn do_put_prepared_statement_update(
        &self,
        cmd: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Ok(self.update_prepared(cmd, request).await?)
    }

    async fn do_put_statement_ingest(
        &self,
        cmd: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Ok(self.ingest(cmd, request).await?)
    }

    // ---- catalog (metadata.rs, sql_info.rs) -------------------------------------------------------------------

    async fn get_flight_info_catalogs(
        &self,
        cmd: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = cmd.into_builder().schema();
        Ok(self.metadata_info(request, schema, Pending::Catalogs(cmd))?)
    }

    async fn get_flight_info_schemas(
        &self,
        cmd: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = cmd.clone().into_builder().schema();
        Ok(self.metadata_info(request, schema, Pending::Schemas(cmd))?)
    }

    async fn get_flight_info_tables(
        &self,
        cmd: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = cmd.clone().into_builder().schema();
        Ok(self.metadata_info(request, schema, Pending::Tables(cmd))?)
    }

    async fn get_flight_info_table_types(
        &self,
        cmd: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = cmd.into_builder().schema();
        Ok(self.metadata_info(request, schema, Pending::TableTypes(cmd))?)
    }

    async fn get_flight_info_sql_info(
        &self,
        cmd: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = self.shared.sql_info.schema();
        Ok(self.metadata_info(request, schema, Pending::SqlInfo(cmd))?)
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        cmd: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = self.shared.xdbc.schema();
        Ok(self.metadata_info(request, schema, Pending::XdbcTypeInfo(cmd))?)
    }

    unimplemented_info! {
        get_flight_info_primary_keys(CommandGetPrimaryKeys) => "GetPrimaryKeys is not supported";
        get_flight_info_exported_keys(CommandGetExportedKeys) => "foreign keys are not supported";
        get_flight_info_imported_keys(CommandGetImportedKeys) => "foreign keys are not supported";
        get_flight_info_cross_reference(CommandGetCrossReference) => "foreign keys are not supported";
    }

    // ---- tickets this server never issues ---------------------------------------------------------------------

    refuse_client_tickets! {
        do_get_prepared_statement(CommandPreparedStatementQuery);
        do_get_catalogs(CommandGetCatalogs);
        do_get_schemas(CommandGetDbSchemas);
        do_get_tables(CommandGetTables);
        do_get_table_types(CommandGetTableTypes);
        do_get_sql_info(CommandGetSqlInfo);
        do_get_primary_keys(CommandGetPrimaryKeys);
        do_get_exported_keys(CommandGetExportedKeys);
        do_get_imported_keys(CommandGetImportedKeys);
        do_get_cross_reference(CommandGetCrossReference);
        do_get_xdbc_type_info(CommandGetXdbcTypeInfo);
    }

    async fn do_get_fallback(&self, _request: Request<Ticket>, _message: Any) -> DoGetResponse {
        Err(Error::invalid_ticket().into())
    }

    // ---- everything else ---------------------------------------------------------------------------------------

    async fn do_put_error_callback(
        &self,
        _request: Request<PeekableFlightDataStream>,
        error: DoPutError,
    ) -> Result<Response<<Self as FlightService>::DoPutStream>, Status> {
        Err(Error::invalid(format!("DoPut: {error}")).into())
    }

    async fn do_put_fallback(
        &self,
        _request: Request<PeekableFlightDataStream>,
        message: Any,
    ) -> Result<Response<<Self as FlightService>::DoPutStream>, Status> {
        Err(
            Error::unimplemented(format!("DoPut with {} is not supported", message.type_url))
                .into(),
        )
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        Err(Error::unimplemented(format!(
            "action '{}' is not supported",
            request.get_ref().r#type
        ))
        .into())
    }

    async fn do_exchange_fallback(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<<Self as FlightService>::DoExchangeStream>, Status> {
        Ok(self.exchange(request).await?)
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
