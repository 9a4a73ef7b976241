"""The connection to a Marrow server: SQL in, Arrow tables out, over ADBC's Flight SQL driver.

>>> import marrow
>>> with marrow.connect("grpc://127.0.0.1:50051") as db:                       # doctest: +SKIP
...     table = db.sql("SELECT id, content FROM memories WHERE namespace = $1", ["alice"])
...     db.ingest("events", table, mode="create_append")
...     for batch in db.sql_reader("SELECT id, embedding FROM memories"):  # streamed, not collected
...         ...
"""

from __future__ import annotations

import re
from collections import OrderedDict
from types import TracebackType
from typing import TYPE_CHECKING, Any, Iterator, Literal, Optional, Sequence, Union

import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as flight
from adbc_driver_flightsql import DatabaseOptions

from .errors import InvalidArgumentError, MarrowConnectionError, MarrowError, map_error, map_flight_error

if TYPE_CHECKING:
    import pandas
    import polars

__all__ = ["Client", "connect", "IngestMode", "quote_ident", "quote_literal"]

IngestMode = Literal["append", "create", "replace", "create_append"]
# What `ingest` accepts: Arrow data, or a pandas / Polars DataFrame (converted to Arrow without copying where possible).
IngestData = Union[pa.Table, pa.RecordBatch, pa.RecordBatchReader, "pandas.DataFrame", "polars.DataFrame"]

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Statements kept prepared between runs: queries only (re-running one has no effect beyond its result).
_REUSABLE = re.compile(r"^\s*(SELECT|WITH)\b", re.IGNORECASE)
# The server's answer when a prepared query's result shape no longer matches its tables.
_STALE = re.compile(r"changed between planning and execution|prepared statement not found")
PREPARED_CACHE_SIZE = 64
# The first path element of the descriptor of the single-call statement (DoExchange; flight/src/service/exchange.rs).
_EXCHANGE_SQL = "marrow.sql"
# The server's answer to a bearer token whose session has ended (flight/src/auth/layer.rs).
_SESSION_GONE = re.compile(r"invalid or expired bearer token")


def _close_quietly(cur: flightsql.Cursor) -> None:
    try:
        cur.close()
    except adbc_driver_manager.Error:
        pass


def quote_ident(name: str) -> str:
    """``name`` as a SQL identifier; only plain names (letters, digits, ``_``) are accepted, so no quoting games."""
    if not _IDENT.match(name):
        raise InvalidArgumentError(f"not a plain SQL identifier: {name!r}", grpc_code="INVALID_ARGUMENT")
    return name


def quote_literal(value: str) -> str:
    """``value`` as a SQL string literal (single quotes doubled). Prefer ``$n`` parameters; this is for the few
    places that take no parameters (``CALL`` arguments, SQL text stored for later, ``COPY`` paths)."""
    return "'" + value.replace("'", "''") + "'"


class Client:
    """A session with a Marrow server (made by :func:`connect`).

    ``sql`` returns a :class:`pyarrow.Table` (``sql_pandas`` / ``sql_polars`` convert it), ``sql_reader`` streams
    the result as a :class:`pyarrow.RecordBatchReader`; errors are raised as :class:`marrow.MarrowError` subclasses
    mapped from the server's gRPC status. The underlying ADBC DB-API connection is ``client.adbc``; ``cursor()``,
    ``commit()``, ``rollback()`` and the ``adbc_get_*`` metadata calls pass through to it, so a ``Client`` is a
    drop-in for code written against the plain ADBC connection. ``SET`` options last for the client's session.
    """

    def __init__(
        self,
        conn: flightsql.Connection,
        uri: str,
        connect_args: Optional[dict[str, Any]] = None,
        flight_client: Optional[flight.FlightClient] = None,
        call_options: Optional[flight.FlightCallOptions] = None,
    ) -> None:
        self.adbc = conn
        self.uri = uri
        self._closed = False
        self._connect_args = dict(connect_args or {})
        # A pyarrow Flight connection in the same server session as `adbc` (both send the session's bearer token):
        # `sql` runs a statement with its parameters in one call on it (DoExchange) instead of Flight SQL's three.
        self._flight = flight_client
        self._call_options = call_options or flight.FlightCallOptions()
        # Prepared queries by SQL text, least recently used first: running the same query again binds its new
        # parameters to the statement prepared before (3 round trips: bind, plan, fetch) instead of preparing and
        # closing one each time (5).
        self._prepared: OrderedDict[str, flightsql.Cursor] = OrderedDict()
        self.prepared_cache_size = PREPARED_CACHE_SIZE

    def clone(self) -> Client:
        """Another connection to the same server with the same credentials and settings (its own session):
        for a thread, since one connection serves one caller at a time."""
        return connect(self.uri, **self._connect_args)

    # -- DB-API passthrough (errors from these are ADBC's, not mapped) -------------------------------------
    def cursor(self) -> flightsql.Cursor:
        """A raw ADBC DB-API cursor."""
        return self.adbc.cursor()

    def commit(self) -> None:
        self.adbc.commit()

    def rollback(self) -> None:
        self.adbc.rollback()

    def adbc_get_info(self) -> dict[Union[str, int], Any]:
        """The server's and driver's metadata (``vendor_name``, ``vendor_version``, …)."""
        return self.adbc.adbc_get_info()

    def adbc_get_objects(
        self,
        *,
        depth: Literal["all", "catalogs", "db_schemas", "tables", "columns"] = "all",
        catalog_filter: Optional[str] = None,
        db_schema_filter: Optional[str] = None,
        table_name_filter: Optional[str] = None,
        table_types_filter: Optional[list[str]] = None,
        column_name_filter: Optional[str] = None,
    ) -> pa.RecordBatchReader:
        """Catalogs, schemas, tables and columns, nested as ADBC's ``GetObjects`` describes."""
        return self.adbc.adbc_get_objects(
            depth=depth,
            catalog_filter=catalog_filter,
            db_schema_filter=db_schema_filter,
            table_name_filter=table_name_filter,
            table_types_filter=table_types_filter,
            column_name_filter=column_name_filter,
        )

    def adbc_get_table_schema(
        self, table_name: str, *, catalog_filter: Optional[str] = None, db_schema_filter: Optional[str] = None
    ) -> pa.Schema:
        return self.adbc.adbc_get_table_schema(
            table_name, catalog_filter=catalog_filter, db_schema_filter=db_schema_filter
        )

    def adbc_get_table_types(self) -> list[str]:
        return self.adbc.adbc_get_table_types()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            for cur in self._prepared.values():
                _close_quietly(cur)
            self._prepared.clear()
            self.adbc.close()
            if self._flight is not None:
                self._flight.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        self.close()

    # -- SQL -------------------------------------------------------------------------------------------------
    def _executed(self, query: str, params: Optional[Sequence[Any]]) -> flightsql.Cursor:
        """A cursor on which ``query`` has run (the caller closes it); errors mapped."""
        if not isinstance(query, str) or not query.strip():
            raise InvalidArgumentError("empty SQL statement", grpc_code="INVALID_ARGUMENT")
        if self._closed:
            raise MarrowError("the client is closed")
        cur = self.adbc.cursor()
        try:
            if not params:
                cur.execute(query)
            else:
                cur.execute(query, parameters=list(params))
        except adbc_driver_manager.Error as e:
            cur.close()
            raise map_error(e) from e
        return cur

    def sql(self, query: str, params: Optional[Sequence[Any]] = None) -> pa.Table:
        """Run one statement and return its result as an Arrow table (DDL/DML return a one-row ``count`` table).

        ``params`` bind ``$1, $2, …``: str, int, float, bool, None, ``datetime``, bytes and lists of floats (vectors)
        work; a list bound to a ``FLOAT[n]`` column must have exactly n values. The statement and its parameters go
        in one call and the server keeps it prepared, per SQL text and session, for the next run of the same text.
        """
        if self._flight is not None:
            return self._exchange(query, params)
        if not _REUSABLE.match(query if isinstance(query, str) else ""):
            cur = self._executed(query, params)
            try:
                return cur.fetch_arrow_table()
            except adbc_driver_manager.Error as e:
                raise map_error(e) from e
            finally:
                cur.close()
        return self._prepared_query(query, params)

    def _exchange(self, query: str, params: Optional[Sequence[Any]]) -> pa.Table:
        """Run one statement in a single call: the SQL in the descriptor, the parameters as one Arrow row."""
        if not isinstance(query, str) or not query.strip():
            raise InvalidArgumentError("empty SQL statement", grpc_code="INVALID_ARGUMENT")
        if self._closed:
            raise MarrowError("the client is closed")
        assert self._flight is not None
        # As ADBC binds a parameter sequence: one column per parameter, named by position.
        row = pa.record_batch([[p] for p in params], names=[str(i) for i in range(len(params))]) if params else None
        descriptor = flight.FlightDescriptor.for_path(_EXCHANGE_SQL, query)
        for attempt in (1, 2):
            try:
                writer, reader = self._flight.do_exchange(descriptor, self._call_options)
                with writer:
                    if row is not None:
                        writer.begin(row.schema)
                        writer.write_batch(row)
                    else:
                        # The descriptor travels with the first message: an empty schema says "no parameters".
                        writer.begin(pa.schema([]))
                    writer.done_writing()
                    return reader.read_all()
            except (flight.FlightError, pa.ArrowException) as e:
                error = map_flight_error(e)
                # The session ended (unused past the server's --session-idle, or the server restarted): log in
                # again, as a cookie client silently gets a new session, and run the statement in the new one.
                if attempt == 1 and error.grpc_code == "UNAUTHENTICATED" and _SESSION_GONE.search(str(error)):
                    self._renew_session()
                    continue
                raise error from e
        raise AssertionError("unreachable")

    def _renew_session(self) -> None:
        """Log in again and put the new session's connections in place of the old ones (SET values and prepared
        statements of the old session are gone with it)."""
        fresh = connect(self.uri, **self._connect_args)
        old_adbc, old_flight, old_prepared = self.adbc, self._flight, list(self._prepared.values())
        self.adbc, self._flight, self._call_options = fresh.adbc, fresh._flight, fresh._call_options
        self._prepared.clear()
        fresh._closed = True  # its connections now belong to this client
        for cur in old_prepared:
            _close_quietly(cur)
        try:
            old_adbc.close()
        except adbc_driver_manager.Error:
            pass
        if old_flight is not None:
            old_flight.close()

    def _prepared_query(self, query: str, params: Optional[Sequence[Any]]) -> pa.Table:
        if self._closed:
            raise MarrowError("the client is closed")
        cur = self._prepared.pop(query, None)
        fresh = cur is None
        if cur is None:
            cur = self.adbc.cursor()
        try:
            cur.execute(query, parameters=list(params) if params else None)
            table = cur.fetch_arrow_table()
        except adbc_driver_manager.Error as e:
            _close_quietly(cur)
            # A statement prepared before the tables it reads changed shape: prepare it again, once.
            if not fresh and _STALE.search(str(e)):
                return self._prepared_query(query, params)
            raise map_error(e) from e
        self._prepared[query] = cur
        while len(self._prepared) > max(0, self.prepared_cache_size):
            _close_quietly(self._prepared.popitem(last=False)[1])
        return table

    def sql_reader(self, query: str, params: Optional[Sequence[Any]] = None) -> pa.RecordBatchReader:
        """Run one query and stream its result: batches arrive as the server sends them, so a result larger than
        memory can be processed batch by batch. Parameters as for :meth:`sql`.

        Errors in planning the query are raised here; an error while streaming is raised by the reader (as a
        :class:`marrow.MarrowError`). Read the stream to its end or close it: until then it holds a cursor.
        """
        cur = self._executed(query, params)
        try:
            source = cur.fetch_record_batch()
        except adbc_driver_manager.Error as e:
            cur.close()
            raise map_error(e) from e

        def batches() -> Iterator[Optional[pa.RecordBatch]]:
            try:
                yield None  # primed below: from here on, closing the generator (or collecting it) closes the cursor
                yield from source
            except (adbc_driver_manager.Error, pa.ArrowException) as e:
                raise map_error(e) from e
            finally:
                cur.close()

        stream = batches()
        next(stream)
        return pa.RecordBatchReader.from_batches(source.schema, stream)

    def execute(self, query: str, params: Optional[Sequence[Any]] = None) -> int:
        """Run a statement for its effect; the number of rows it wrote (0 for statements that report none)."""
        table = self.sql(query, params)
        if table.num_rows == 1 and table.column_names == ["count"]:
            return int(table.column(0)[0].as_py() or 0)
        return 0

    def scalar(self, query: str, params: Optional[Sequence[Any]] = None) -> Any:
        """The first column of the first row (``None`` when there are no rows)."""
        table = self.sql(query, params)
        if table.num_rows == 0 or table.num_columns == 0:
            return None
        return table.column(0)[0].as_py()

    def sql_pandas(self, query: str, params: Optional[Sequence[Any]] = None) -> pandas.DataFrame:
        return self.sql(query, params).to_pandas()

    def sql_polars(self, query: str, params: Optional[Sequence[Any]] = None) -> polars.DataFrame:
        import polars as pl

        frame = pl.from_arrow(self.sql(query, params))
        assert isinstance(frame, pl.DataFrame)
        return frame

    def ingest(self, table_name: str, data: IngestData, mode: IngestMode = "append") -> int:
        """Bulk-write Arrow data (or a pandas / Polars DataFrame) through ADBC ingestion; the number of rows sent.

        ``mode``: ``append`` (the table must exist), ``create`` (it must not), ``replace`` (drop and create),
        ``create_append`` (create if missing, then append). Columns left out get their defaults; ``memories`` rows
        without an ``embedding`` are embedded by the server.
        """
        quote_ident(table_name)
        if mode not in ("append", "create", "replace", "create_append"):
            raise InvalidArgumentError(f"unknown ingest mode {mode!r}", grpc_code="INVALID_ARGUMENT")
        arrow = _to_arrow(data)
        try:
            with self.adbc.cursor() as cur:
                cur.adbc_ingest(table_name, arrow, mode=mode)
        except adbc_driver_manager.Error as e:
            raise map_error(e, f"ingest into {table_name}") from e
        return arrow.num_rows if isinstance(arrow, (pa.Table, pa.RecordBatch)) else -1

    def table_exists(self, name: str) -> bool:
        return bool(
            self.scalar(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public' AND table_name = $1",
                [name],
            )
        )

    def server_version(self) -> str:
        info = self.adbc.adbc_get_info()
        return str(info.get("vendor_version", ""))


def _to_arrow(data: Any) -> Union[pa.Table, pa.RecordBatch, pa.RecordBatchReader]:
    if isinstance(data, (pa.Table, pa.RecordBatch, pa.RecordBatchReader)):
        return data
    module = type(data).__module__.split(".")[0]
    if module == "polars":
        table = data.to_arrow()
        assert isinstance(table, pa.Table)
        return table
    if module == "pandas":
        return pa.Table.from_pandas(data, preserve_index=False)
    raise InvalidArgumentError(
        f"ingest takes a pyarrow Table/RecordBatch/RecordBatchReader or a pandas/Polars DataFrame, not {type(data)}",
        grpc_code="INVALID_ARGUMENT",
    )


def connect(
    uri: str = "grpc://127.0.0.1:50051",
    user: Optional[str] = None,
    password: Optional[str] = None,
    *,
    tls_root_certs: Optional[str] = None,
    autocommit: bool = True,
    connect_timeout: float = 10.0,
    query_timeout: Optional[float] = None,
    one_call: bool = True,
) -> Client:
    """Open a session with a Marrow server and check it answers.

    ``user``/``password`` log in with the Flight handshake; the server's bearer token is then sent on every call.
    ``tls_root_certs`` is a PEM string to trust for ``grpc+tls://`` URIs with a private CA. Settings made with ``SET``
    last for the session (its login, or without one its session cookie).

    The connection is checked with ``SELECT 1`` bounded by ``connect_timeout`` seconds, so a server that is down
    raises :class:`marrow.MarrowConnectionError` and wrong credentials :class:`marrow.AuthenticationError` here, at
    once, rather than on first use or never. ``query_timeout`` (seconds, default none) bounds every later call.

    ``sql`` (and ``execute``, ``scalar``) send a statement with its parameters in one call (DoExchange) instead of
    Flight SQL's three (bind, plan, fetch): the client logs in with the Flight handshake and its ADBC and
    pyarrow.flight connections share the session's bearer token. ``one_call=False`` uses Flight SQL's prepared
    statements instead (kept per SQL text), for servers that do not answer DoExchange.
    """
    connect_args: dict[str, Any] = {
        "user": user,
        "password": password,
        "tls_root_certs": tls_root_certs,
        "autocommit": autocommit,
        "connect_timeout": connect_timeout,
        "query_timeout": query_timeout,
        "one_call": one_call,
    }
    fc: Optional[flight.FlightClient] = None
    token = b""
    if one_call:
        # One login (the Flight handshake, which also opens a session when the server runs without auth) gives a
        # bearer token; the ADBC connection and the pyarrow Flight connection both send it: one session.
        fc, token = _login(uri, user, password, tls_root_certs, connect_timeout)
        kwargs: dict[str, str] = {DatabaseOptions.AUTHORIZATION_HEADER.value: token.decode()}
    else:
        # Without a login the server keys the session (SET options, prepared statements) by a cookie: send it back.
        kwargs = {DatabaseOptions.WITH_COOKIE_MIDDLEWARE.value: "true"}
        if user is not None:
            kwargs["username"] = user
        if password is not None:
            kwargs["password"] = password
    if tls_root_certs is not None:
        kwargs[DatabaseOptions.TLS_ROOT_CERTS.value] = tls_root_certs
    for option in (DatabaseOptions.TIMEOUT_QUERY, DatabaseOptions.TIMEOUT_FETCH, DatabaseOptions.TIMEOUT_UPDATE):
        kwargs[option.value] = f"{connect_timeout:g}"
    try:
        conn = flightsql.connect(uri, db_kwargs=kwargs, autocommit=autocommit)
    except adbc_driver_manager.Error as e:
        if fc is not None:
            fc.close()
        raise map_error(e, f"cannot connect to Marrow at {uri}") from e
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchall()
        after = f"{query_timeout:g}" if query_timeout is not None else "0"
        conn.adbc_connection.set_options(
            **{
                DatabaseOptions.TIMEOUT_QUERY.value: after,
                DatabaseOptions.TIMEOUT_FETCH.value: after,
                DatabaseOptions.TIMEOUT_UPDATE.value: after,
            }
        )
    except adbc_driver_manager.Error as e:
        conn.close()
        if fc is not None:
            fc.close()
        raise map_error(e, f"cannot connect to Marrow at {uri}") from e
    if fc is None:
        return Client(conn, uri, connect_args)
    options = flight.FlightCallOptions(headers=[(b"authorization", token)], timeout=query_timeout)
    return Client(conn, uri, connect_args, fc, options)


def _login(
    uri: str, user: Optional[str], password: Optional[str], tls_root_certs: Optional[str], timeout: float
) -> tuple[flight.FlightClient, bytes]:
    """A pyarrow Flight connection logged in with the Flight handshake, and the ``Bearer …`` value it got."""
    kwargs: dict[str, Any] = {}
    if tls_root_certs is not None:
        kwargs["tls_root_certs"] = tls_root_certs.encode()
    try:
        fc = flight.FlightClient(uri, **kwargs)
    except (flight.FlightError, pa.ArrowException) as e:
        raise map_flight_error(e, f"cannot connect to Marrow at {uri}") from e
    try:
        _, token = fc.authenticate_basic_token(user or "", password or "", flight.FlightCallOptions(timeout=timeout))
    except (flight.FlightError, pa.ArrowException) as e:
        fc.close()
        error = map_flight_error(e, f"cannot connect to Marrow at {uri}")
        # A refused login or a full server says so; anything else (nothing listening, a broken stream) is the
        # connection's failure.
        if error.grpc_code not in ("UNAUTHENTICATED", "RESOURCE_EXHAUSTED", "PERMISSION_DENIED"):
            error = MarrowConnectionError(str(error), grpc_code="UNAVAILABLE")
        raise error from e
    return fc, token
