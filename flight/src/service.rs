//! Marrow's Flight SQL service: every call the ADBC Flight SQL driver, pyarrow and arrow-flight's client make.
//!
//! - Queries (`CommandStatementQuery`, a prepared query) are planned at `GetFlightInfo` (for the schema) and run at
//!   `DoGet`: the ticket holds the SQL and its parameters, never results.
//! - Anything that is not a query (DDL, DML, `SET` …) sent through `GetFlightInfo` runs right there, once; the
//!   ticket then holds its small result (a one-row `count` table for writes, an empty table otherwise).
//! - Prepared statements belong to the client session that created them. Binding parameters (`DoPut` with a
//!   prepared query) replaces the bound rows and returns the same handle. A query with several bound rows runs once
//!   per row and the results are concatenated; an update runs once per row (each row is its own commit) and the
//!   counts are summed.
//! - Tickets are random 128-bit ids of server-side state, bound to the session that got them, single-use and valid
//!   for ten minutes. Unknown, expired, used or other sessions' tickets answer `NOT_FOUND`; undecodable ones
//!   `INVALID_ARGUMENT`.
//! - `DoGet` splits batches so that no message exceeds 2 MiB (a single row larger than that is sent whole).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::compute::{cast_with_options, CastOptions};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{
    GetCatalogsBuilder, SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData,
    XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::server::{DoPutError, FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetCrossReference,
    CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys, CommandGetPrimaryKeys,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo,
    CommandPreparedStatementQuery, CommandPreparedStatementUpdate, CommandStatementIngest,
    CommandStatementQuery, CommandStatementUpdate, DoPutPreparedStatementResult, Nullable,
    ProstMessageExt, Searchable, SqlInfo, SqlNullOrdering, SqlSupportedCaseSensitivity,
    SqlSupportedTransaction, TableExistsOption, TableNotExistOption, TicketStatementQuery,
    XdbcDataType, XdbcDatetimeSubcode,
};
use arrow_flight::{
    Action, BasicAuth, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest,
    HandshakeResponse, IpcMessage, SchemaAsIpc, Ticket,
};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::sql::TableReference;
use futures::{stream, Stream, StreamExt, TryStreamExt};
use marrow_engine::ingest::IngestMode;
use marrow_engine::{Database, PreparedInfo, QueryOutput};
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{CallContext, ClientSession, Credentials, SessionKind, SessionStore};
use crate::status::{from_client_data, from_datafusion, internal, to_status};

/// No `FlightData` message of a result is larger than this (unless one row is).
pub const MAX_MESSAGE_BYTES: usize = 2 * 1024 * 1024;
/// How long a ticket stays valid.
pub const TICKET_TTL: Duration = Duration::from_secs(600);

type Id = [u8; 16];
type DoGetStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;

fn new_id() -> Id {
    rand::random()
}

fn parse_id(bytes: &[u8]) -> Option<Id> {
    bytes.try_into().ok()
}

/// A prepared statement: its SQL, shapes and currently bound parameter rows.
struct Prepared {
    owner: Arc<ClientSession>,
    sql: String,
    info: PreparedInfo,
    /// `None` until parameters are bound; then one `ParamValues` per bound row.
    params: Mutex<Option<Vec<ParamValues>>>,
}

/// What a ticket stands for.
enum Pending {
    Query {
        sql: String,
        params: Vec<ParamValues>,
        /// The schema GetFlightInfo announced; DoGet sends exactly this one.
        schema: SchemaRef,
    },
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

struct TicketEntry {
    owner: Arc<ClientSession>,
    expires: Instant,
    pending: Pending,
}

struct Shared {
    store: Arc<SessionStore>,
    auth: Option<Credentials>,
    prepared: Mutex<HashMap<Id, Arc<Prepared>>>,
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

fn invalid_ticket() -> Status {
    Status::invalid_argument("malformed ticket: not a ticket issued by this server")
}

fn unknown_ticket() -> Status {
    Status::not_found(
        "ticket not found: it expired, was already used, or belongs to another session",
    )
}

fn unknown_handle() -> Status {
    Status::not_found(
        "prepared statement not found: it was closed, or belongs to another or an expired session",
    )
}

fn no_transactions() -> Status {
    Status::unimplemented("transactions are not supported: every statement commits on its own")
}

fn call_context<T>(request: &Request<T>) -> Result<CallContext, Status> {
    request
        .extensions()
        .get::<CallContext>()
        .cloned()
        .ok_or_else(|| {
            Status::internal("request reached the Flight service without passing the session layer")
        })
}

fn schema_ipc(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let message: Result<IpcMessage, _> =
        SchemaAsIpc::new(schema, &IpcWriteOptions::default()).try_into();
    message
        .map(|IpcMessage(b)| b)
        .map_err(|e| internal("encoding a schema", e))
}

impl MarrowFlightService {
    /// A service over `db`; with `auth`, every call needs a bearer token from a Basic-auth handshake.
    pub fn new(db: Database, auth: Option<Credentials>) -> Self {
        let store = Arc::new(SessionStore::new(db, Default::default()));
        Self::with_store(store, auth)
    }

    /// A service whose sessions live in `store` (share it with the [`crate::auth::SessionLayer`]).
    pub fn with_store(store: Arc<SessionStore>, auth: Option<Credentials>) -> Self {
        Self {
            shared: Arc::new(Shared {
                store,
                auth,
                prepared: Mutex::new(HashMap::new()),
                tickets: Mutex::new(HashMap::new()),
                last_sweep: Mutex::new(Instant::now()),
                sql_info: sql_info(),
                xdbc: xdbc_type_info(),
                ticket_ttl: TICKET_TTL,
            }),
        }
    }

    pub fn store(&self) -> &Arc<SessionStore> {
        &self.shared.store
    }

    /// Drop expired tickets and the prepared statements of closed sessions (at most every few seconds).
    fn sweep(&self) {
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
    ) -> Result<(Arc<ClientSession>, Pending), Status> {
        let id = parse_id(handle).ok_or_else(invalid_ticket)?;
        let mut tickets = self.shared.tickets.lock().expect("tickets");
        let entry = tickets.get(&id).ok_or_else(unknown_ticket)?;
        if entry.expires <= Instant::now() || entry.owner.is_closed() {
            tickets.remove(&id);
            return Err(unknown_ticket());
        }
        let session = ctx.session_for(&entry.owner).ok_or_else(|| {
            tracing::warn!("a session presented another session's ticket");
            unknown_ticket()
        })?;
        let entry = tickets.remove(&id).expect("present above");
        Ok((session, entry.pending))
    }

    fn lookup_prepared(
        &self,
        ctx: &CallContext,
        handle: &[u8],
    ) -> Result<(Arc<ClientSession>, Arc<Prepared>), Status> {
        let id = parse_id(handle).ok_or_else(unknown_handle)?;
        let prepared = self
            .shared
            .prepared
            .lock()
            .expect("prepared")
            .get(&id)
            .cloned()
            .ok_or_else(unknown_handle)?;
        let session = ctx
            .session_for(&prepared.owner)
            .ok_or_else(unknown_handle)?;
        Ok((session, prepared))
    }

    fn flight_info(
        &self,
        owner: &Arc<ClientSession>,
        schema: &Schema,
        pending: Pending,
        total_records: i64,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let ticket = self.issue_ticket(owner, pending);
        let info = FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| internal("encoding a schema", e))?
            .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
            .with_descriptor(descriptor)
            .with_total_records(total_records)
            .with_ordered(true);
        Ok(Response::new(info))
    }

    /// FlightInfo for a statement: a query gets a ticket to run it; anything else runs now.
    async fn statement_info(
        &self,
        session: &Arc<ClientSession>,
        sql: String,
        info: Option<PreparedInfo>,
        params: Option<Vec<ParamValues>>,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let engine = session.engine();
        let info = match info {
            Some(i) => i,
            None => engine.prepare(&sql).await.map_err(to_status)?,
        };
        if info.is_query {
            let n = info.parameter_schema.fields().len();
            if n > 0 && params.is_none() {
                return Err(Status::invalid_argument(format!(
                    "the statement has {n} parameter(s): prepare it and bind values for them"
                )));
            }
            let pending = Pending::Query {
                sql,
                params: params.unwrap_or_default(),
                schema: info.dataset_schema.clone(),
            };
            return self.flight_info(session, &info.dataset_schema, pending, -1, descriptor);
        }
        let (schema, batches) = execute_collect(engine, &sql, params).await?;
        let rows = batches.iter().map(|b| b.num_rows() as i64).sum();
        self.flight_info(
            session,
            &schema,
            Pending::Rows {
                schema: schema.clone(),
                batches,
            },
            rows,
            descriptor,
        )
    }

    fn metadata_info(
        &self,
        ctx: &CallContext,
        schema: SchemaRef,
        pending: Pending,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let session = ctx.session();
        self.flight_info(&session, &schema, pending, -1, descriptor)
    }
}

/// Run a non-query statement now, once or once per parameter row, and collect what it produced.
async fn execute_collect(
    engine: &marrow_engine::Session,
    sql: &str,
    params: Option<Vec<ParamValues>>,
) -> Result<(SchemaRef, Vec<RecordBatch>), Status> {
    let runs: Vec<Option<ParamValues>> = match params {
        None => vec![None],
        Some(rows) => rows.into_iter().map(Some).collect(),
    };
    let mut count: Option<u64> = None;
    let mut rows: Option<(SchemaRef, Vec<RecordBatch>)> = None;
    for p in runs {
        match engine
            .execute_with_params(sql, p)
            .await
            .map_err(to_status)?
        {
            QueryOutput::Count(n) => count = Some(count.unwrap_or(0) + n),
            QueryOutput::Done => {}
            out @ QueryOutput::Rows(_) => {
                let (schema, batches) = out.collect().await.map_err(to_status)?;
                rows.get_or_insert_with(|| (schema, vec![]))
                    .1
                    .extend(batches);
            }
        }
    }
    if let Some(r) = rows {
        return Ok(r);
    }
    let out = match count {
        Some(n) => QueryOutput::Count(n),
        None => QueryOutput::Done,
    };
    out.collect().await.map_err(to_status)
}

/// Run an update once or once per parameter row; the summed row count, or -1 when no statement reported one.
async fn execute_update(
    engine: &marrow_engine::Session,
    sql: &str,
    params: Option<Vec<ParamValues>>,
) -> Result<i64, Status> {
    match params {
        // Several parameter rows: the engine turns an INSERT into one statement and one commit.
        Some(rows) if rows.is_empty() => Ok(0),
        Some(rows) if rows.len() > 1 => {
            let n = engine.execute_many(sql, rows).await.map_err(to_status)?;
            Ok(n as i64)
        }
        params => {
            let p = params.and_then(|mut rows| rows.pop());
            match engine
                .execute_with_params(sql, p)
                .await
                .map_err(to_status)?
            {
                QueryOutput::Count(n) => Ok(n as i64),
                QueryOutput::Done => Ok(-1),
                QueryOutput::Rows(mut s) => {
                    // Drain so that errors surface; the rows themselves have nowhere to go.
                    while let Some(b) = s.next().await {
                        b.map_err(from_datafusion)?;
                    }
                    Ok(-1)
                }
            }
        }
    }
}

/// Run a query with no, one or several parameter rows; several rows concatenate their results.
async fn run_query(
    engine: marrow_engine::Session,
    sql: String,
    params: Vec<ParamValues>,
) -> Result<SendableRecordBatchStream, Status> {
    let mut rows = params.into_iter();
    let first = engine
        .execute_with_params(&sql, rows.next())
        .await
        .map_err(to_status)?
        .into_stream();
    if rows.len() == 0 {
        return Ok(first);
    }
    let schema = first.schema();
    let rest = stream::iter(rows)
        .then(move |p| {
            let engine = engine.clone();
            let sql = sql.clone();
            async move {
                engine
                    .execute_with_params(&sql, Some(p))
                    .await
                    .map(QueryOutput::into_stream)
                    .map_err(DataFusionError::from)
            }
        })
        .try_flatten();
    let target = schema.clone();
    let all = first.chain(rest).map(move |b| {
        let b = b?;
        if b.schema() == target {
            Ok(b)
        } else {
            Ok(RecordBatch::try_new(target.clone(), b.columns().to_vec())?)
        }
    });
    Ok(Box::pin(RecordBatchStreamAdapter::new(schema, all)))
}

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

/// Relabel a batch with the schema a client was promised. Planning at GetFlightInfo and again at DoGet can differ
/// in nullability (constant folding makes `f(literal)` non-nullable); clients such as ADBC reject any difference.
fn conform(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, Status> {
    if batch.schema().as_ref() == schema.as_ref() {
        return Ok(batch);
    }
    if batch.num_columns() != schema.fields().len() {
        return Err(Status::internal(format!(
            "the result's schema changed between planning and execution: announced {schema:?}, got {:?}",
            batch.schema()
        )));
    }
    // A parameter bound as NULL plans as type Null where the prepared plan had a type: an all-NULL column (a
    // NullArray counts its rows as logical nulls) is cast back to the announced type. A value of another type than announced cannot be relabelled; the query must cast the parameter.
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (f, c) in schema.fields().iter().zip(batch.columns()) {
        if c.data_type() == f.data_type() {
            columns.push(c.clone());
        } else if c.logical_null_count() == c.len()
            && arrow::compute::can_cast_types(c.data_type(), f.data_type())
        {
            columns.push(
                arrow::compute::cast(c, f.data_type())
                    .map_err(|e| internal("conforming a result batch", e))?,
            );
        } else {
            return Err(Status::invalid_argument(format!(
                "column '{}' was prepared as {} but the bound parameters make it {}; cast the parameter in the \
                 query (e.g. $1::BIGINT) so its type does not depend on the value bound",
                f.name(),
                f.data_type(),
                c.data_type()
            )));
        }
    }
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .zip(&columns)
        .map(|(f, c)| {
            if c.null_count() > 0 && !f.is_nullable() {
                Arc::new(f.as_ref().clone().with_nullable(true))
            } else {
                f.clone()
            }
        })
        .collect();
    let target = Arc::new(arrow::datatypes::Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    ));
    RecordBatch::try_new(target, columns).map_err(|e| internal("conforming a result batch", e))
}

/// Encode a result stream as Flight data: the schema first (even with no rows), then batches of bounded size.
fn encode_stream(
    schema: SchemaRef,
    batches: impl Stream<Item = Result<RecordBatch, Status>> + Send + 'static,
) -> DoGetStream {
    let split = batches
        .map_ok(|b| stream::iter(split_batch(b, MAX_MESSAGE_BYTES).into_iter().map(Ok)))
        .try_flatten()
        .map_err(|s| FlightError::Tonic(Box::new(s)));
    let encoded = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        // Batches are already split by their real (sliced) size above; the encoder's own estimate counts whole
        // shared buffers and would split slices again.
        .with_max_flight_data_size(usize::MAX)
        .build(split)
        .map_err(Status::from);
    Box::pin(encoded)
}

fn encode_batch(batch: RecordBatch) -> Response<DoGetStream> {
    let schema = batch.schema();
    Response::new(encode_stream(schema, stream::iter(vec![Ok(batch)])))
}

/// Read the record batches of a DoPut stream: its schema (if any message carried one) and its batches.
async fn read_batches(
    stream: PeekableFlightDataStream,
) -> Result<(Option<SchemaRef>, Vec<RecordBatch>), Status> {
    // The first message may carry only the descriptor (no Arrow data): skip messages without an IPC header.
    let data = stream
        .try_filter(|fd| futures::future::ready(!fd.data_header.is_empty()))
        .map_err(FlightError::from);
    let mut decoder = FlightRecordBatchStream::new_from_flight_data(data);
    let mut batches = vec![];
    while let Some(batch) = decoder.next().await {
        batches.push(batch.map_err(from_client_data)?);
    }
    Ok((decoder.schema().cloned(), batches))
}

/// Which scalar types a bound parameter may be cast from to reach the type the statement expects.
fn family(t: &DataType) -> u8 {
    use DataType::*;
    match t {
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 => 1,
        Float16 | Float32 | Float64 | Decimal32(..) | Decimal64(..) | Decimal128(..)
        | Decimal256(..) => 2,
        Utf8 | LargeUtf8 | Utf8View => 3,
        Binary | LargeBinary | BinaryView | FixedSizeBinary(_) => 4,
        List(_) | LargeList(_) | FixedSizeList(..) | ListView(_) | LargeListView(_) => 5,
        Date32 | Date64 | Timestamp(..) => 6,
        Boolean => 7,
        _ => 0,
    }
}

fn castable(from: &DataType, to: &DataType) -> bool {
    if matches!(to, DataType::Null) || from == to {
        return false;
    }
    if matches!(from, DataType::Null) {
        return true;
    }
    let (f, t) = (family(from), family(to));
    f != 0 && (f == t || (f == 1 && t == 2))
}

/// Turn bound parameter batches into one `ParamValues` per row, cast to the types the statement expects.
fn to_params(expected: &Schema, batches: &[RecordBatch]) -> Result<Vec<ParamValues>, Status> {
    let want = expected.fields().len();
    let mut out = vec![];
    for batch in batches {
        if want > 0 && batch.num_columns() != want {
            return Err(Status::invalid_argument(format!(
                "the statement has {want} parameter(s), but {} value(s) per row were bound",
                batch.num_columns()
            )));
        }
        let columns: Vec<ArrayRef> = batch
            .columns()
            .iter()
            .enumerate()
            .map(|(i, col)| match expected.fields().get(i) {
                Some(f) if castable(col.data_type(), f.data_type()) => {
                    let options = CastOptions {
                        safe: false,
                        ..Default::default()
                    };
                    cast_with_options(col, f.data_type(), &options).map_err(|e| {
                        Status::invalid_argument(format!(
                            "parameter ${} expects {}, and the value bound ({}) does not convert: {e}",
                            i + 1,
                            f.data_type(),
                            col.data_type()
                        ))
                    })
                }
                _ => Ok(col.clone()),
            })
            .collect::<Result<_, _>>()?;
        for row in 0..batch.num_rows() {
            let values = columns
                .iter()
                .map(|c| ScalarValue::try_from_array(c, row))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    Status::invalid_argument(format!("unsupported parameter value: {e}"))
                })?;
            out.push(ParamValues::from(values));
        }
    }
    Ok(out)
}

/// SQL LIKE with `%` and `_` (and `\` escaping), for narrowing catalog listings before opening tables.
fn like(pattern: &str, s: &str) -> bool {
    fn go(p: &[char], s: &[char]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some('%') => (0..=s.len()).any(|i| go(&p[1..], &s[i..])),
            Some('_') => !s.is_empty() && go(&p[1..], &s[1..]),
            Some('\\') if p.len() > 1 => s.first() == Some(&p[1]) && go(&p[2..], &s[1..]),
            Some(c) => s.first() == Some(c) && go(&p[1..], &s[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = s.chars().collect();
    go(&p, &s)
}

fn table_type_name(t: datafusion::datasource::TableType) -> &'static str {
    match t {
        datafusion::datasource::TableType::Base => "TABLE",
        datafusion::datasource::TableType::View => "VIEW",
        datafusion::datasource::TableType::Temporary => "LOCAL TEMPORARY",
    }
}

const TABLE_TYPES: [&str; 2] = ["TABLE", "VIEW"];
const INFORMATION_SCHEMA: &str = datafusion::catalog::information_schema::INFORMATION_SCHEMA;

/// Every (catalog, schema) pair a session sees, including each catalog's `information_schema`.
fn list_schemas(engine: &marrow_engine::Session) -> Vec<(String, String)> {
    let ctx = engine.context();
    let mut out = vec![];
    for catalog in ctx.catalog_names() {
        let Some(provider) = ctx.catalog(&catalog) else {
            continue;
        };
        for schema in provider.schema_names() {
            out.push((catalog.clone(), schema));
        }
        if !out
            .iter()
            .any(|(c, s)| *c == catalog && s == INFORMATION_SCHEMA)
        {
            out.push((catalog.clone(), INFORMATION_SCHEMA.to_string()));
        }
    }
    out
}

fn table_names(engine: &marrow_engine::Session, catalog: &str, schema: &str) -> Vec<String> {
    if schema == INFORMATION_SCHEMA {
        return datafusion::catalog::information_schema::INFORMATION_SCHEMA_TABLES
            .iter()
            .map(|s| s.to_string())
            .collect();
    }
    let ctx = engine.context();
    ctx.catalog(catalog)
        .and_then(|c| c.schema(schema))
        .map(|s| s.table_names())
        .unwrap_or_default()
        .into_iter()
        // Temporary relations of an ingest in progress.
        .filter(|t| !t.starts_with("__marrow"))
        .collect()
}

async fn tables_batch(
    engine: &marrow_engine::Session,
    cmd: CommandGetTables,
) -> Result<RecordBatch, Status> {
    let catalog_filter = cmd.catalog.clone();
    let schema_pattern = cmd.db_schema_filter_pattern.clone();
    let table_pattern = cmd.table_name_filter_pattern.clone();
    let types = cmd.table_types.clone();
    let include_schema = cmd.include_schema;
    let mut builder = cmd.into_builder();
    let ctx = engine.context();
    let empty = Schema::empty();
    for (catalog, schema) in list_schemas(engine) {
        if catalog_filter.as_ref().is_some_and(|c| *c != catalog) {
            continue;
        }
        if schema_pattern.as_ref().is_some_and(|p| !like(p, &schema)) {
            continue;
        }
        let mut names = table_names(engine, &catalog, &schema);
        names.sort();
        names.dedup();
        for table in names {
            if table_pattern.as_ref().is_some_and(|p| !like(p, &table)) {
                continue;
            }
            let reference = TableReference::full(catalog.as_str(), schema.as_str(), table.as_str());
            let provider = match ctx.table_provider(reference).await {
                Ok(p) => p,
                Err(e) => {
                    // Dropped meanwhile, or a view that no longer plans: list what can be listed.
                    tracing::warn!("GetTables skips {catalog}.{schema}.{table}: {e}");
                    continue;
                }
            };
            let kind = table_type_name(provider.table_type());
            if !types.is_empty() && !types.iter().any(|t| t.eq_ignore_ascii_case(kind)) {
                continue;
            }
            let table_schema = if include_schema {
                provider.schema()
            } else {
                Arc::new(empty.clone())
            };
            builder
                .append(&catalog, &schema, &table, kind, &table_schema)
                .map_err(|e| internal("listing tables", e))?;
        }
    }
    builder.build().map_err(|e| internal("listing tables", e))
}

fn schemas_batch(
    engine: &marrow_engine::Session,
    cmd: CommandGetDbSchemas,
) -> Result<RecordBatch, Status> {
    let mut builder = cmd.into_builder();
    for (catalog, schema) in list_schemas(engine) {
        builder.append(catalog, schema);
    }
    builder.build().map_err(|e| internal("listing schemas", e))
}

fn catalogs_batch(
    engine: &marrow_engine::Session,
    cmd: CommandGetCatalogs,
) -> Result<RecordBatch, Status> {
    let mut builder: GetCatalogsBuilder = cmd.into_builder();
    for catalog in engine.context().catalog_names() {
        builder.append(catalog);
    }
    builder.build().map_err(|e| internal("listing catalogs", e))
}

fn table_types_batch(cmd: CommandGetTableTypes) -> Result<RecordBatch, Status> {
    let mut builder = cmd.into_builder();
    for t in TABLE_TYPES {
        builder.append(t);
    }
    builder
        .build()
        .map_err(|e| internal("listing table types", e))
}

fn sql_info() -> SqlInfoData {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "marrow");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "58");
    b.append(SqlInfo::FlightSqlServerReadOnly, false);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    b.append(SqlInfo::FlightSqlServerCancel, false);
    b.append(SqlInfo::FlightSqlServerBulkIngestion, true);
    b.append(SqlInfo::FlightSqlServerIngestTransactionsSupported, false);
    b.append(SqlInfo::FlightSqlServerStatementTimeout, 0i32);
    b.append(SqlInfo::FlightSqlServerTransactionTimeout, 0i32);
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, true);
    b.append(
        SqlInfo::SqlIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
    );
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(SqlInfo::SqlAllTablesAreSelectable, true);
    b.append(
        SqlInfo::SqlNullOrdering,
        SqlNullOrdering::SqlNullsSortedHigh as i32,
    );
    b.append(SqlInfo::SqlSearchStringEscape, "\\");
    b.append(SqlInfo::SqlSupportsColumnAliasing, true);
    b.append(SqlInfo::SqlNullPlusNullIsNull, true);
    b.append(SqlInfo::SqlSupportsTableCorrelationNames, true);
    b.append(SqlInfo::SqlSupportsExpressionsInOrderBy, true);
    b.append(SqlInfo::SqlSupportsLikeEscapeClause, true);
    b.append(SqlInfo::SqlSupportsNonNullableColumns, true);
    b.append(SqlInfo::SqlSchemaTerm, "schema");
    b.append(SqlInfo::SqlCatalogTerm, "catalog");
    b.append(SqlInfo::SqlCatalogAtStart, true);
    b.append(SqlInfo::SqlSelectForUpdateSupported, false);
    b.append(SqlInfo::SqlStoredProceduresSupported, false);
    b.append(SqlInfo::SqlCorrelatedSubqueriesSupported, true);
    b.append(SqlInfo::SqlTransactionsSupported, false);
    b.append(SqlInfo::SqlBatchUpdatesSupported, true);
    b.append(SqlInfo::SqlSavepointsSupported, false);
    b.append(SqlInfo::SqlNamedParametersSupported, false);
    b.build().expect("static SQL info builds")
}

fn xdbc_type_info() -> XdbcTypeInfoData {
    fn ty(
        name: &str,
        data_type: XdbcDataType,
        column_size: Option<i32>,
        quoted: bool,
        radix: Option<i32>,
    ) -> XdbcTypeInfo {
        XdbcTypeInfo {
            type_name: name.to_string(),
            data_type,
            column_size,
            literal_prefix: quoted.then(|| "'".to_string()),
            literal_suffix: quoted.then(|| "'".to_string()),
            create_params: None,
            nullable: Nullable::NullabilityNullable,
            case_sensitive: quoted,
            searchable: Searchable::Full,
            unsigned_attribute: radix.map(|_| false),
            fixed_prec_scale: false,
            auto_increment: Some(false),
            local_type_name: Some(name.to_string()),
            minimum_scale: None,
            maximum_scale: None,
            sql_data_type: data_type,
            datetime_subcode: None,
            num_prec_radix: radix,
            interval_precision: None,
        }
    }
    let mut b = XdbcTypeInfoDataBuilder::new();
    b.append(ty("BOOLEAN", XdbcDataType::XdbcBit, Some(1), false, None));
    b.append(ty(
        "TINYINT",
        XdbcDataType::XdbcTinyint,
        Some(3),
        false,
        Some(10),
    ));
    b.append(ty(
        "SMALLINT",
        XdbcDataType::XdbcSmallint,
        Some(5),
        false,
        Some(10),
    ));
    b.append(ty(
        "INTEGER",
        XdbcDataType::XdbcInteger,
        Some(10),
        false,
        Some(10),
    ));
    b.append(ty(
        "BIGINT",
        XdbcDataType::XdbcBigint,
        Some(19),
        false,
        Some(10),
    ));
    b.append(ty("REAL", XdbcDataType::XdbcReal, Some(24), false, Some(2)));
    b.append(ty(
        "DOUBLE",
        XdbcDataType::XdbcDouble,
        Some(53),
        false,
        Some(2),
    ));
    let mut decimal = ty(
        "DECIMAL",
        XdbcDataType::XdbcDecimal,
        Some(38),
        false,
        Some(10),
    );
    decimal.create_params = Some(vec!["precision".into(), "scale".into()]);
    decimal.minimum_scale = Some(0);
    decimal.maximum_scale = Some(38);
    decimal.fixed_prec_scale = true;
    b.append(decimal);
    b.append(ty("VARCHAR", XdbcDataType::XdbcVarchar, None, true, None));
    b.append(ty("BYTEA", XdbcDataType::XdbcVarbinary, None, true, None));
    let mut date = ty("DATE", XdbcDataType::XdbcDate, Some(10), true, None);
    date.sql_data_type = XdbcDataType::XdbcDatetime;
    // SQL_CODE_DATE is 1, which Flight SQL names XDBC_SUBCODE_YEAR.
    date.datetime_subcode = Some(XdbcDatetimeSubcode::XdbcSubcodeYear);
    b.append(date);
    let mut ts = ty(
        "TIMESTAMP",
        XdbcDataType::XdbcTimestamp,
        Some(26),
        true,
        None,
    );
    ts.sql_data_type = XdbcDataType::XdbcDatetime;
    ts.datetime_subcode = Some(XdbcDatetimeSubcode::XdbcSubcodeTimestamp);
    b.append(ts);
    b.build().expect("static type info builds")
}

fn ingest_mode(cmd: &CommandStatementIngest) -> Result<(IngestMode, bool), Status> {
    let options = cmd.table_definition_options.ok_or_else(|| {
        Status::invalid_argument("ingest needs table_definition_options (if_not_exist, if_exists)")
    })?;
    let not_exist = TableNotExistOption::try_from(options.if_not_exist)
        .unwrap_or(TableNotExistOption::Unspecified);
    let exists =
        TableExistsOption::try_from(options.if_exists).unwrap_or(TableExistsOption::Unspecified);
    // The bool: the table must exist (if_not_exist = FAIL with REPLACE).
    Ok(match (not_exist, exists) {
        (TableNotExistOption::Create, TableExistsOption::Fail) => (IngestMode::Create, false),
        (TableNotExistOption::Fail, TableExistsOption::Append) => (IngestMode::Append, false),
        (TableNotExistOption::Create, TableExistsOption::Replace) => (IngestMode::Replace, false),
        (TableNotExistOption::Create, TableExistsOption::Append) => {
            (IngestMode::CreateAppend, false)
        }
        (TableNotExistOption::Fail, TableExistsOption::Replace) => (IngestMode::Replace, true),
        (n, e) => {
            return Err(Status::invalid_argument(format!(
                "unsupported ingest options: if_not_exist = {}, if_exists = {}",
                n.as_str_name(),
                e.as_str_name()
            )))
        }
    })
}

#[tonic::async_trait]
impl FlightSqlService for MarrowFlightService {
    type FlightService = MarrowFlightService;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut credentials = header.as_deref().and_then(crate::auth::parse_basic);
        if credentials.is_none() && self.shared.auth.is_some() {
            // Older clients send a BasicAuth message as the handshake payload instead of a header.
            let mut requests = request.into_inner();
            if let Ok(Ok(Some(first))) =
                tokio::time::timeout(Duration::from_secs(5), requests.message()).await
            {
                credentials = BasicAuth::decode(first.payload)
                    .ok()
                    .map(|b| (b.username, b.password));
            }
        }
        if let Some(expected) = &self.shared.auth {
            match &credentials {
                Some((user, password)) if expected.matches(user, password) => {}
                Some((user, _)) => {
                    tracing::warn!(user = %user, "failed login");
                    return Err(Status::unauthenticated("invalid user name or password"));
                }
                None => {
                    return Err(Status::unauthenticated(
                        "authentication required: send 'authorization: Basic <base64 user:password>' in the handshake",
                    ))
                }
            }
        }
        let session = self.shared.store.create(SessionKind::Token);
        tracing::info!(
            session = session.id(),
            user = credentials.as_ref().map(|c| c.0.as_str()),
            "login"
        );
        let token = session.secret().to_string();
        let value: MetadataValue<_> = format!("Bearer {token}")
            .parse()
            .map_err(|e| internal("encoding the bearer token", e))?;
        let output = stream::iter(vec![Ok(HandshakeResponse {
            protocol_version: 0,
            payload: token.into_bytes().into(),
        })]);
        let mut response: Response<
            Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>,
        > = Response::new(Box::pin(output));
        response.metadata_mut().insert("authorization", value);
        Ok(response)
    }

    // ---- queries and statements -----------------------------------------------------------------------------

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        if query.transaction_id.is_some() {
            return Err(no_transactions());
        }
        let ctx = call_context(&request)?;
        let session = ctx.session();
        self.statement_info(&session, query.query, None, None, request.into_inner())
            .await
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ctx = call_context(&request)?;
        let (session, prepared) = self.lookup_prepared(&ctx, &cmd.prepared_statement_handle)?;
        let params = prepared.params.lock().expect("bound parameters").clone();
        self.statement_info(
            &session,
            prepared.sql.clone(),
            Some(prepared.info.clone()),
            params,
            request.into_inner(),
        )
        .await
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let ctx = call_context(&request)?;
        let (session, pending) = self.take_ticket(&ctx, &ticket.statement_handle)?;
        let engine = session.engine();
        let response = match pending {
            Pending::Query {
                sql,
                params,
                schema,
            } => {
                let results = run_query(engine.clone(), sql, params).await?;
                let announced = schema.clone();
                let results = results
                    .map_err(from_datafusion)
                    .and_then(move |b| std::future::ready(conform(b, &announced)));
                Response::new(encode_stream(schema, results))
            }
            Pending::Rows { schema, batches } => Response::new(encode_stream(
                schema,
                stream::iter(batches.into_iter().map(Ok)),
            )),
            Pending::Catalogs(cmd) => encode_batch(catalogs_batch(engine, cmd)?),
            Pending::Schemas(cmd) => encode_batch(schemas_batch(engine, cmd)?),
            Pending::Tables(cmd) => encode_batch(tables_batch(engine, cmd).await?),
            Pending::TableTypes(cmd) => encode_batch(table_types_batch(cmd)?),
            Pending::SqlInfo(cmd) => encode_batch(
                cmd.into_builder(&self.shared.sql_info)
                    .build()
                    .map_err(|e| internal("building SQL info", e))?,
            ),
            Pending::XdbcTypeInfo(cmd) => encode_batch(
                cmd.into_builder(&self.shared.xdbc)
                    .build()
                    .map_err(|e| internal("building type info", e))?,
            ),
        };
        Ok(response)
    }

    async fn do_put_statement_update(
        &self,
        cmd: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        if cmd.transaction_id.is_some() {
            return Err(no_transactions());
        }
        let ctx = call_context(&request)?;
        let session = ctx.session();
        execute_update(session.engine(), &cmd.query, None).await
    }

    // ---- prepared statements ---------------------------------------------------------------------------------

    async fn do_action_create_prepared_statement(
        &self,
        cmd: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        if cmd.transaction_id.is_some() {
            return Err(no_transactions());
        }
        let ctx = call_context(&request)?;
        let session = ctx.session();
        let info = session
            .engine()
            .prepare(&cmd.query)
            .await
            .map_err(to_status)?;
        let result = ActionCreatePreparedStatementResult {
            prepared_statement_handle: bytes::Bytes::new(),
            dataset_schema: schema_ipc(&info.dataset_schema)?,
            parameter_schema: schema_ipc(&info.parameter_schema)?,
        };
        self.sweep();
        let id = new_id();
        self.shared.prepared.lock().expect("prepared").insert(
            id,
            Arc::new(Prepared {
                owner: session,
                sql: cmd.query,
                info,
                params: Mutex::new(None),
            }),
        );
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: id.to_vec().into(),
            ..result
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        cmd: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let ctx = call_context(&request)?;
        // Closing is idempotent: an unknown handle (closed, or its session expired) is not an error.
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

    async fn do_put_prepared_statement_query(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let ctx = call_context(&request)?;
        let (_session, prepared) = self.lookup_prepared(&ctx, &cmd.prepared_statement_handle)?;
        let (_schema, batches) = read_batches(request.into_inner()).await?;
        let params = to_params(&prepared.info.parameter_schema, &batches)?;
        *prepared.params.lock().expect("bound parameters") = Some(params);
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(cmd.prepared_statement_handle),
        })
    }

    async fn do_put_prepared_statement_update(
        &self,
        cmd: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let ctx = call_context(&request)?;
        let (session, prepared) = self.lookup_prepared(&ctx, &cmd.prepared_statement_handle)?;
        let (schema, batches) = read_batches(request.into_inner()).await?;
        let params = if schema.is_some() {
            // Parameter rows streamed with the call (executemany): all are converted before the first runs.
            let rows = to_params(&prepared.info.parameter_schema, &batches)?;
            if rows.is_empty() {
                return Ok(0);
            }
            Some(rows)
        } else {
            prepared.params.lock().expect("bound parameters").clone()
        };
        execute_update(session.engine(), &prepared.sql, params).await
    }

    // ---- bulk ingest -----------------------------------------------------------------------------------------

    async fn do_put_statement_ingest(
        &self,
        cmd: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let ctx = call_context(&request)?;
        if cmd.transaction_id.is_some() {
            return Err(no_transactions());
        }
        if cmd.temporary {
            return Err(Status::unimplemented("temporary tables are not supported"));
        }
        let catalog = cmd.catalog.as_deref().filter(|c| !c.is_empty());
        let schema_name = cmd.schema.as_deref().filter(|s| !s.is_empty());
        if catalog.is_some_and(|c| c != marrow_engine::CATALOG)
            || schema_name.is_some_and(|s| s != marrow_engine::SCHEMA)
        {
            return Err(Status::not_found(format!(
                "Marrow's tables live in {}.{}",
                marrow_engine::CATALOG,
                marrow_engine::SCHEMA
            )));
        }
        let (mode, must_exist) = ingest_mode(&cmd)?;
        let session = ctx.session();
        let (schema, batches) = read_batches(request.into_inner()).await?;
        let schema = schema
            .ok_or_else(|| Status::invalid_argument("ingest needs an Arrow schema message"))?;
        if must_exist
            && !session
                .engine()
                .context()
                .table_exist(cmd.table.as_str())
                .unwrap_or(false)
        {
            return Err(Status::not_found(format!(
                "table '{}' not found",
                cmd.table
            )));
        }
        let n = session
            .engine()
            .ingest(&cmd.table, mode, schema, batches)
            .await
            .map_err(to_status)?;
        Ok(n as i64)
    }

    // ---- catalog -----------------------------------------------------------------------------------------------

    async fn get_flight_info_catalogs(
        &self,
        cmd: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ctx = call_context(&request)?;
        let schema = cmd.into_builder().schema();
        self.metadata_info(&ctx, schema, Pending::Catalogs(cmd), request.into_inner())
    }

    async fn get_flight_info_schemas(
        &self,
        cmd: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ctx = call_context(&request)?;
        let schema = cmd.clone().into_builder().schema();
        self.metadata_info(&ctx, schema, Pending::Schemas(cmd), request.into_inner())
    }

    async fn get_flight_info_tables(
        &self,
        cmd: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ctx = call_context(&request)?;
        let schema = cmd.clone().into_builder().schema();
        self.metadata_info(&ctx, schema, Pending::Tables(cmd), request.into_inner())
    }

    async fn get_flight_info_table_types(
        &self,
        cmd: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ctx = call_context(&request)?;
        let schema = cmd.into_builder().schema();
        self.metadata_info(&ctx, schema, Pending::TableTypes(cmd), request.into_inner())
    }

    async fn get_flight_info_sql_info(
        &self,
        cmd: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ctx = call_context(&request)?;
        let schema = self.shared.sql_info.schema();
        self.metadata_info(&ctx, schema, Pending::SqlInfo(cmd), request.into_inner())
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        cmd: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ctx = call_context(&request)?;
        let schema = self.shared.xdbc.schema();
        self.metadata_info(
            &ctx,
            schema,
            Pending::XdbcTypeInfo(cmd),
            request.into_inner(),
        )
    }

    async fn get_flight_info_primary_keys(
        &self,
        _cmd: CommandGetPrimaryKeys,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(Status::unimplemented("GetPrimaryKeys is not supported"))
    }

    async fn get_flight_info_exported_keys(
        &self,
        _cmd: CommandGetExportedKeys,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(Status::unimplemented("foreign keys are not supported"))
    }

    async fn get_flight_info_imported_keys(
        &self,
        _cmd: CommandGetImportedKeys,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(Status::unimplemented("foreign keys are not supported"))
    }

    async fn get_flight_info_cross_reference(
        &self,
        _cmd: CommandGetCrossReference,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(Status::unimplemented("foreign keys are not supported"))
    }

    // ---- tickets this server never issues ---------------------------------------------------------------------
    // Every ticket Marrow hands out is a TicketStatementQuery naming server-side state; a ticket holding a command
    // was made by the client, and is refused rather than executed.

    async fn do_get_prepared_statement(
        &self,
        _query: CommandPreparedStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Err(invalid_ticket())
    }

    async fn do_get_catalogs(
        &self,
        _query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Err(invalid_ticket())
    }

    async fn do_get_schemas(
        &self,
        _query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Err(invalid_ticket())
    }

    async fn do_get_tables(
        &self,
        _query: CommandGetTables,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Err(invalid_ticket())
    }

    async fn do_get_table_types(
        &self,
        _query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Err(invalid_ticket())
    }

    async fn do_get_sql_info(
        &self,
        _query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Err(invalid_ticket())
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Err(invalid_ticket())
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Err(invalid_ticket())
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Err(invalid_ticket())
    }

    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Err(invalid_ticket())
    }

    async fn do_get_xdbc_type_info(
        &self,
        _query: CommandGetXdbcTypeInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Err(invalid_ticket())
    }

    async fn do_get_fallback(
        &self,
        _request: Request<Ticket>,
        _message: Any,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Err(invalid_ticket())
    }

    // ---- everything else ---------------------------------------------------------------------------------------

    async fn do_put_error_callback(
        &self,
        _request: Request<PeekableFlightDataStream>,
        error: DoPutError,
    ) -> Result<Response<<Self as FlightService>::DoPutStream>, Status> {
        Err(Status::invalid_argument(format!("DoPut: {error}")))
    }

    async fn do_put_fallback(
        &self,
        _request: Request<PeekableFlightDataStream>,
        message: Any,
    ) -> Result<Response<<Self as FlightService>::DoPutStream>, Status> {
        Err(Status::unimplemented(format!(
            "DoPut with {} is not supported",
            message.type_url
        )))
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        Err(Status::unimplemented(format!(
            "action '{}' is not supported",
            request.get_ref().r#type
        )))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{BinaryArray, Int32Array, Int64Array, StringArray};
    use arrow::datatypes::Field;

    #[test]
    fn like_patterns() {
        assert!(like("%", ""));
        assert!(like("mem%", "memories"));
        assert!(like("m_m%", "memories"));
        assert!(!like("m_m", "memories"));
        assert!(like("memories", "memories"));
        assert!(!like("Memories", "memories"));
        assert!(like("a\\_b", "a_b"));
        assert!(!like("a\\_b", "axb"));
        assert!(like("%ies", "memories"));
    }

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

    #[test]
    fn parameters_are_cast_to_the_expected_types() {
        let expected = Schema::new(vec![
            Field::new("$1", DataType::Int32, true),
            Field::new("$2", DataType::Null, true),
        ]);
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("0", DataType::Int64, true),
                Field::new("1", DataType::Utf8, true),
            ])),
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec!["a", "b"])),
            ],
        )
        .unwrap();
        let params = to_params(&expected, std::slice::from_ref(&batch)).unwrap();
        assert_eq!(params.len(), 2);
        match &params[1] {
            ParamValues::List(v) => {
                assert_eq!(v[0].value, ScalarValue::Int32(Some(2)));
                assert_eq!(v[1].value, ScalarValue::Utf8(Some("b".into())));
            }
            other => panic!("{other:?}"),
        }
        // Wrong arity.
        let one = Schema::new(vec![Field::new("$1", DataType::Int32, true)]);
        assert_eq!(
            to_params(&one, &[batch]).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        // A value out of range for the expected type.
        let big = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("0", DataType::Int64, true)])),
            vec![Arc::new(Int64Array::from(vec![i64::MAX]))],
        )
        .unwrap();
        assert_eq!(
            to_params(&one, &[big]).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        // Unrelated types are passed through for the engine to reject.
        let s = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("0", DataType::Utf8, true)])),
            vec![Arc::new(StringArray::from(vec!["x"]))],
        )
        .unwrap();
        assert_eq!(to_params(&one, &[s]).unwrap().len(), 1);
        let _ = Int32Array::from(vec![1]);
    }

    #[test]
    fn ingest_modes() {
        use arrow_flight::sql::TableDefinitionOptions;
        let cmd = |n: TableNotExistOption, e: TableExistsOption| CommandStatementIngest {
            table_definition_options: Some(TableDefinitionOptions {
                if_not_exist: n as i32,
                if_exists: e as i32,
            }),
            table: "t".into(),
            ..Default::default()
        };
        use TableExistsOption as E;
        use TableNotExistOption as N;
        assert_eq!(
            ingest_mode(&cmd(N::Create, E::Fail)).unwrap(),
            (IngestMode::Create, false)
        );
        assert_eq!(
            ingest_mode(&cmd(N::Fail, E::Append)).unwrap(),
            (IngestMode::Append, false)
        );
        assert_eq!(
            ingest_mode(&cmd(N::Create, E::Replace)).unwrap(),
            (IngestMode::Replace, false)
        );
        assert_eq!(
            ingest_mode(&cmd(N::Create, E::Append)).unwrap(),
            (IngestMode::CreateAppend, false)
        );
        assert_eq!(
            ingest_mode(&cmd(N::Fail, E::Replace)).unwrap(),
            (IngestMode::Replace, true)
        );
        assert!(ingest_mode(&cmd(N::Fail, E::Fail)).is_err());
        assert!(ingest_mode(&cmd(N::Unspecified, E::Append)).is_err());
        assert!(ingest_mode(&CommandStatementIngest::default()).is_err());
    }

    #[test]
    fn static_metadata_builds() {
        let info = sql_info();
        let batch = info
            .record_batch([SqlInfo::FlightSqlServerName as u32])
            .unwrap();
        assert_eq!(batch.num_rows(), 1);
        let types = xdbc_type_info();
        assert!(types.record_batch(None).unwrap().num_rows() >= 10);
    }
}
