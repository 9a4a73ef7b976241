//! The Flight SQL server, in process on port 0, driven by arrow-flight's `FlightSqlServiceClient`: whole result
//! tables compared as text, and every error case checked for its gRPC code.

use std::sync::Arc;

use arrow::array::{Array, BinaryArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::util::pretty::pretty_format_batches;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Any,
    CommandGetDbSchemas, CommandGetTables, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, CommandStatementIngest, CommandStatementQuery,
    DoPutUpdateResult, ProstMessageExt, SqlInfo, TableDefinitionOptions, TableExistsOption,
    TableNotExistOption, TicketStatementQuery,
};
use arrow_flight::{FlightDescriptor, FlightInfo, HandshakeRequest, IpcMessage, Ticket};
use futures::{StreamExt, TryStreamExt};
use marrow_flight::server::{start, RunningServer, ServeError, ServeOptions};
use prost::Message;
use tonic::transport::Channel;
use tonic::Code;

type Client = FlightSqlServiceClient<Channel>;

struct TestServer {
    server: RunningServer,
    _dir: tempfile::TempDir,
}

async fn server_with(user: Option<(&str, &str)>) -> TestServer {
    server_with_options(user, |_| {}).await
}

/// A server with `user` (if any) and options changed by `change`.
async fn server_with_options(
    user: Option<(&str, &str)>,
    change: impl FnOnce(&mut ServeOptions),
) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = ServeOptions {
        engine: marrow_engine::Config::new(dir.path().join("data")),
        host: "127.0.0.1".into(),
        port: 0,
        user: user.map(|u| u.0.to_string()),
        password: user.map(|u| u.1.to_string()),
        ..Default::default()
    };
    change(&mut opts);
    let server = start(opts).await.expect("server starts");
    TestServer { server, _dir: dir }
}

async fn channel(s: &TestServer) -> Channel {
    channel_from(s, None).await
}

/// A channel whose connection comes from `local` (any address of 127.0.0.0/8 on Linux), so a test can be several
/// client addresses.
async fn channel_from(s: &TestServer, local: Option<&str>) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{}", s.server.local_addr()))
        .unwrap()
        .local_address(local.map(|a| a.parse().unwrap()))
        .connect()
        .await
        .expect("connects")
}

async fn client(s: &TestServer) -> Client {
    FlightSqlServiceClient::new(channel(s).await)
}

fn code(e: FlightError) -> Code {
    match e {
        FlightError::Tonic(status) => status.code(),
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

async fn fetch(client: &mut Client, info: FlightInfo) -> Result<Vec<RecordBatch>, FlightError> {
    let mut out = vec![];
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.expect("endpoint has a ticket");
        let stream = client.do_get(ticket).await?;
        out.extend(stream.try_collect::<Vec<_>>().await?);
    }
    Ok(out)
}

async fn query(client: &mut Client, sql: &str) -> Result<Vec<RecordBatch>, FlightError> {
    let info = client.execute(sql.to_string(), None).await?;
    fetch(client, info).await
}

fn table(batches: &[RecordBatch]) -> String {
    pretty_format_batches(batches).unwrap().to_string()
}

fn assert_table(batches: &[RecordBatch], expected: &[&str]) {
    let got = table(batches);
    let got: Vec<&str> = got.lines().collect();
    assert_eq!(got, expected, "\ngot:\n{}\n", got.join("\n"));
}

async fn assert_query(client: &mut Client, sql: &str, expected: &[&str]) {
    let batches = query(client, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    assert_table(&batches, expected);
}

/// Create a prepared statement and return its raw handle (arrow-flight's `PreparedStatement` keeps it private).
async fn create_prepared(
    client: &mut Client,
    sql: &str,
) -> Result<prost::bytes::Bytes, FlightError> {
    let request = ActionCreatePreparedStatementRequest {
        query: sql.into(),
        transaction_id: None,
    };
    let mut results = client
        .do_action(arrow_flight::Action {
            r#type: "CreatePreparedStatement".into(),
            body: request.as_any().encode_to_vec().into(),
        })
        .await?;
    let result = results.message().await?.expect("a result");
    let any = Any::decode(&*result.body)?;
    let r: ActionCreatePreparedStatementResult = any.unpack()?.expect("the right message");
    Ok(r.prepared_statement_handle)
}

/// A raw request carrying the client's bearer token.
fn authorized<T>(client: &Client, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = client.token() {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

/// Base64 without padding, as ADBC's Go driver encodes Basic credentials.
fn base64_unpadded(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

async fn setup_people(client: &mut Client) {
    client
        .execute_update(
            "CREATE TABLE people (id BIGINT PRIMARY KEY, name VARCHAR)".into(),
            None,
        )
        .await
        .unwrap();
    let n = client
        .execute_update(
            "INSERT INTO people VALUES (1, 'ann'), (2, 'bob'), (3, 'cyd')".into(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(n, 3);
}

fn ingest_cmd(
    table: &str,
    if_not_exist: TableNotExistOption,
    if_exists: TableExistsOption,
) -> CommandStatementIngest {
    CommandStatementIngest {
        table_definition_options: Some(TableDefinitionOptions {
            if_not_exist: if_not_exist.into(),
            if_exists: if_exists.into(),
        }),
        table: table.to_string(),
        ..Default::default()
    }
}

fn rows(ids: &[i64], scores: &[f64]) -> RecordBatch {
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("score", DataType::Float64, true),
        ])),
        vec![
            Arc::new(Int64Array::from(ids.to_vec())),
            Arc::new(Float64Array::from(scores.to_vec())),
        ],
    )
    .unwrap()
}

async fn ingest(
    client: &mut Client,
    cmd: CommandStatementIngest,
    batch: RecordBatch,
) -> Result<i64, FlightError> {
    client
        .execute_ingest(cmd, futures::stream::iter(vec![Ok(batch)]))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_updates_and_ddl() {
    let s = server_with(None).await;
    let mut c = client(&s).await;
    assert_query(
        &mut c,
        "SELECT 1 AS one, 'x' AS s",
        &[
            "+-----+---+",
            "| one | s |",
            "+-----+---+",
            "| 1   | x |",
            "+-----+---+",
        ],
    )
    .await;
    setup_people(&mut c).await;
    assert_query(
        &mut c,
        "SELECT id, name FROM people ORDER BY id",
        &[
            "+----+------+",
            "| id | name |",
            "+----+------+",
            "| 1  | ann  |",
            "| 2  | bob  |",
            "| 3  | cyd  |",
            "+----+------+",
        ],
    )
    .await;
    assert_eq!(
        c.execute_update("UPDATE people SET name = 'BOB' WHERE id = 2".into(), None)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        c.execute_update("DELETE FROM people WHERE id >= 3".into(), None)
            .await
            .unwrap(),
        1
    );

    // DML through GetFlightInfo (as ADBC sends it) runs once, at GetFlightInfo, and returns its count as a table.
    let info = c
        .execute("INSERT INTO people VALUES (4, 'dan')".into(), None)
        .await
        .unwrap();
    assert_eq!(info.total_records, 1);
    let batches = fetch(&mut c, info).await.unwrap();
    assert_table(
        &batches,
        &[
            "+-------+",
            "| count |",
            "+-------+",
            "| 1     |",
            "+-------+",
        ],
    );
    // DDL through GetFlightInfo: an empty result.
    let batches = query(
        &mut c,
        "CREATE VIEW named AS SELECT name FROM people WHERE name IS NOT NULL",
    )
    .await
    .unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
    assert_query(
        &mut c,
        "SELECT * FROM named ORDER BY name",
        &[
            "+------+", "| name |", "+------+", "| BOB  |", "| ann  |", "| dan  |", "+------+",
        ],
    )
    .await;
    // An empty result still carries its schema.
    let info = c
        .execute("SELECT id FROM people WHERE id > 100".into(), None)
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut stream = c.do_get(ticket).await.unwrap();
    assert!(stream.next().await.is_none());
    assert_eq!(stream.schema().unwrap().field(0).name(), "id");
}

/// GetFlightInfo announces the schema the rows will have: the optimized plan's, not SqlToRel's first guess (a
/// CASE of mixed types, a UNION of an integer and a string, a scalar subquery that may be NULL all failed at DoGet
/// with "was prepared as …" or "declared as non-nullable").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announced_schema_is_the_executed_one() {
    let s = server_with(None).await;
    let mut c = client(&s).await;
    for (sql, column_type) in [
        (
            "SELECT CASE WHEN a > 1 THEN a ELSE 0.5 END AS v FROM (VALUES (1), (2)) AS t(a) ORDER BY v",
            DataType::Float64,
        ),
        (
            "SELECT * FROM (SELECT 1 AS v UNION ALL SELECT 'x' AS v) ORDER BY v",
            DataType::Utf8,
        ),
        (
            "SELECT (SELECT b FROM (VALUES (1, 10)) AS u(a, b) WHERE u.a = t.a) AS v \
             FROM (VALUES (1), (2)) AS t(a) ORDER BY v",
            DataType::Int64,
        ),
    ] {
        let info = c.execute(sql.to_string(), None).await.expect(sql);
        let announced = info.clone().try_decode_schema().expect("schema");
        assert_eq!(announced.field(0).data_type(), &column_type, "{sql}");
        let batches = fetch(&mut c, info).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 2, "{sql}");
        for b in &batches {
            assert_eq!(b.schema().fields(), announced.fields(), "{sql}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_bind_parameters() {
    let s = server_with(None).await;
    let mut c = client(&s).await;
    setup_people(&mut c).await;

    let mut stmt = c
        .prepare(
            "SELECT id, name FROM people WHERE id > $1 ORDER BY id".into(),
            None,
        )
        .await
        .unwrap();
    let params = stmt.parameter_schema().unwrap().clone();
    assert_eq!(params.fields().len(), 1);
    assert_eq!(params.field(0).data_type(), &DataType::Int64);
    assert_eq!(stmt.dataset_schema().unwrap().fields().len(), 2);
    // Bind an Int32: it is cast to the Int64 the statement expects.
    let p = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("0", DataType::Int32, true)])),
        vec![Arc::new(arrow::array::Int32Array::from(vec![1]))],
    )
    .unwrap();
    stmt.set_parameters(p).unwrap();
    let info = stmt.execute().await.unwrap();
    assert_table(
        &fetch(&mut c, info).await.unwrap(),
        &[
            "+----+------+",
            "| id | name |",
            "+----+------+",
            "| 2  | bob  |",
            "| 3  | cyd  |",
            "+----+------+",
        ],
    );
    // Several parameter rows: the query runs for each and the results are concatenated.
    let p = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("0", DataType::Int64, true)])),
        vec![Arc::new(Int64Array::from(vec![2, 0]))],
    )
    .unwrap();
    stmt.set_parameters(p).unwrap();
    let info = stmt.execute().await.unwrap();
    assert_table(
        &fetch(&mut c, info).await.unwrap(),
        &[
            "+----+------+",
            "| id | name |",
            "+----+------+",
            "| 3  | cyd  |",
            "| 1  | ann  |",
            "| 2  | bob  |",
            "| 3  | cyd  |",
            "+----+------+",
        ],
    );
    // Wrong parameter count and wrong type.
    let two = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("0", DataType::Int64, true),
            Field::new("1", DataType::Int64, true),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![1])),
            Arc::new(Int64Array::from(vec![1])),
        ],
    )
    .unwrap();
    stmt.set_parameters(two).unwrap();
    assert_eq!(
        code(stmt.execute().await.unwrap_err()),
        Code::InvalidArgument
    );
    let text = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("0", DataType::Utf8, true)])),
        vec![Arc::new(StringArray::from(vec!["one"]))],
    )
    .unwrap();
    stmt.set_parameters(text).unwrap();
    let err = match stmt.execute().await {
        Ok(info) => fetch(&mut c, info).await.unwrap_err(),
        Err(e) => e,
    };
    assert_eq!(code(err), Code::InvalidArgument);
    stmt.close().await.unwrap();

    // A prepared insert: parameters bound first, then executed as an update (arrow-flight's client).
    let mut insert = c
        .prepare("INSERT INTO people VALUES ($1, $2)".into(), None)
        .await
        .unwrap();
    assert_eq!(insert.parameter_schema().unwrap().fields().len(), 2);
    let p = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("0", DataType::Int64, true),
            Field::new("1", DataType::Utf8, true),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![10, 11])),
            Arc::new(StringArray::from(vec!["jo", "ki"])),
        ],
    )
    .unwrap();
    insert.set_parameters(p).unwrap();
    assert_eq!(insert.execute_update().await.unwrap(), 2);

    // executemany as ADBC sends it: the parameter rows stream with the update command.
    let handle = create_prepared(&mut c, "INSERT INTO people VALUES ($1, $2)")
        .await
        .unwrap();
    let cmd = CommandPreparedStatementUpdate {
        prepared_statement_handle: handle,
    };
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("0", DataType::Int64, true),
            Field::new("1", DataType::Utf8, true),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![20, 21, 22])),
            Arc::new(StringArray::from(vec!["a", "b", "c"])),
        ],
    )
    .unwrap();
    let data = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(
            cmd.as_any().encode_to_vec(),
        )))
        .build(futures::stream::iter(vec![Ok(batch)]))
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    let mut results = c.do_put(futures::stream::iter(data)).await.unwrap();
    let result = results.message().await.unwrap().unwrap();
    let update = DoPutUpdateResult::decode(&*result.app_metadata).unwrap();
    assert_eq!(update.record_count, 3);
    assert_query(
        &mut c,
        "SELECT count(*) AS n FROM people",
        &["+---+", "| n |", "+---+", "| 8 |", "+---+"],
    )
    .await;

    // ADBC prepares DDL too, then runs it through GetFlightInfo.
    let mut ddl = c
        .prepare("CREATE TABLE made (x INT)".into(), None)
        .await
        .unwrap();
    let info = ddl.execute().await.unwrap();
    fetch(&mut c, info).await.unwrap();
    assert_query(
        &mut c,
        "SELECT count(*) AS n FROM made",
        &["+---+", "| n |", "+---+", "| 0 |", "+---+"],
    )
    .await;

    // A duplicate key is a clear INVALID_ARGUMENT.
    let mut dup = c
        .prepare("INSERT INTO people VALUES ($1, $2)".into(), None)
        .await
        .unwrap();
    let p = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("0", DataType::Int64, true),
            Field::new("1", DataType::Utf8, true),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![1])),
            Arc::new(StringArray::from(vec!["again"])),
        ],
    )
    .unwrap();
    dup.set_parameters(p).unwrap();
    assert_eq!(
        code(dup.execute_update().await.unwrap_err()),
        Code::InvalidArgument
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_in_four_modes() {
    let s = server_with(None).await;
    let mut c = client(&s).await;
    use TableExistsOption as E;
    use TableNotExistOption as N;

    // create
    let n = ingest(
        &mut c,
        ingest_cmd("scores", N::Create, E::Fail),
        rows(&[1, 2], &[0.5, 1.5]),
    )
    .await
    .unwrap();
    assert_eq!(n, 2);
    let err = ingest(
        &mut c,
        ingest_cmd("scores", N::Create, E::Fail),
        rows(&[3], &[0.0]),
    )
    .await
    .unwrap_err();
    assert_eq!(code(err), Code::AlreadyExists);
    // append
    assert_eq!(
        ingest(
            &mut c,
            ingest_cmd("scores", N::Fail, E::Append),
            rows(&[3], &[2.5])
        )
        .await
        .unwrap(),
        1
    );
    let err = ingest(
        &mut c,
        ingest_cmd("missing", N::Fail, E::Append),
        rows(&[3], &[2.5]),
    )
    .await
    .unwrap_err();
    assert_eq!(code(err), Code::NotFound);
    assert_query(
        &mut c,
        "SELECT id, score FROM scores ORDER BY id",
        &[
            "+----+-------+",
            "| id | score |",
            "+----+-------+",
            "| 1  | 0.5   |",
            "| 2  | 1.5   |",
            "| 3  | 2.5   |",
            "+----+-------+",
        ],
    )
    .await;
    // A schema that does not match the table: an unknown column, then a type that does not convert.
    let extra = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("zzz", DataType::Utf8, true),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![9])),
            Arc::new(StringArray::from(vec!["?"])),
        ],
    )
    .unwrap();
    let err = ingest(&mut c, ingest_cmd("scores", N::Fail, E::Append), extra)
        .await
        .unwrap_err();
    assert_eq!(code(err), Code::InvalidArgument);
    let wrong = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, true)])),
        vec![Arc::new(StringArray::from(vec!["not a number"]))],
    )
    .unwrap();
    let err = ingest(&mut c, ingest_cmd("scores", N::Fail, E::Append), wrong)
        .await
        .unwrap_err();
    assert_eq!(code(err), Code::InvalidArgument);
    // replace: new rows and a new schema, one version
    let replacement = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("label", DataType::Utf8, true)])),
        vec![Arc::new(StringArray::from(vec!["only"]))],
    )
    .unwrap();
    assert_eq!(
        ingest(
            &mut c,
            ingest_cmd("scores", N::Create, E::Replace),
            replacement
        )
        .await
        .unwrap(),
        1
    );
    assert_query(
        &mut c,
        "SELECT * FROM scores",
        &[
            "+-------+",
            "| label |",
            "+-------+",
            "| only  |",
            "+-------+",
        ],
    )
    .await;
    // create_append: creates, then appends
    assert_eq!(
        ingest(
            &mut c,
            ingest_cmd("ca", N::Create, E::Append),
            rows(&[1], &[1.0])
        )
        .await
        .unwrap(),
        1
    );
    assert_eq!(
        ingest(
            &mut c,
            ingest_cmd("ca", N::Create, E::Append),
            rows(&[2], &[2.0])
        )
        .await
        .unwrap(),
        1
    );
    assert_query(
        &mut c,
        "SELECT id, score FROM ca ORDER BY id",
        &[
            "+----+-------+",
            "| id | score |",
            "+----+-------+",
            "| 1  | 1.0   |",
            "| 2  | 2.0   |",
            "+----+-------+",
        ],
    )
    .await;
    // Appending to a table with a primary key goes through INSERT's checks.
    setup_people(&mut c).await;
    let people = |ids: Vec<i64>, names: Vec<&str>| {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, true),
                Field::new("name", DataType::Utf8, true),
            ])),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(names)),
            ],
        )
        .unwrap()
    };
    let err = ingest(
        &mut c,
        ingest_cmd("people", N::Fail, E::Append),
        people(vec![1], vec!["dup"]),
    )
    .await
    .unwrap_err();
    assert_eq!(code(err), Code::InvalidArgument);
    assert_eq!(
        ingest(
            &mut c,
            ingest_cmd("people", N::Fail, E::Append),
            people(vec![7], vec!["new"])
        )
        .await
        .unwrap(),
        1
    );
    assert_query(
        &mut c,
        "SELECT count(*) AS n FROM people",
        &["+---+", "| n |", "+---+", "| 4 |", "+---+"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_calls() {
    let s = server_with(None).await;
    let mut c = client(&s).await;
    setup_people(&mut c).await;
    c.execute_update(
        "CREATE VIEW people_names AS SELECT name FROM people".into(),
        None,
    )
    .await
    .unwrap();

    let info = c.get_catalogs().await.unwrap();
    assert_table(
        &fetch(&mut c, info).await.unwrap(),
        &[
            "+--------------+",
            "| catalog_name |",
            "+--------------+",
            "| marrow       |",
            "+--------------+",
        ],
    );
    let info = c
        .get_db_schemas(CommandGetDbSchemas::default())
        .await
        .unwrap();
    assert_table(
        &fetch(&mut c, info).await.unwrap(),
        &[
            "+--------------+--------------------+",
            "| catalog_name | db_schema_name     |",
            "+--------------+--------------------+",
            "| marrow       | information_schema |",
            "| marrow       | public             |",
            "+--------------+--------------------+",
        ],
    );
    let info = c
        .get_tables(CommandGetTables {
            catalog: Some("marrow".into()),
            db_schema_filter_pattern: Some("pub%".into()),
            table_name_filter_pattern: None,
            table_types: vec![],
            include_schema: false,
        })
        .await
        .unwrap();
    assert_table(
        &fetch(&mut c, info).await.unwrap(),
        &[
            "+--------------+----------------+---------------+------------+",
            "| catalog_name | db_schema_name | table_name    | table_type |",
            "+--------------+----------------+---------------+------------+",
            "| marrow       | public         | adapters      | TABLE      |",
            "| marrow       | public         | live_memories | VIEW       |",
            "| marrow       | public         | memories      | TABLE      |",
            "| marrow       | public         | people        | TABLE      |",
            "| marrow       | public         | people_names  | VIEW       |",
            "+--------------+----------------+---------------+------------+",
        ],
    );
    // Table types filter, name pattern and the table's schema.
    let info = c
        .get_tables(CommandGetTables {
            catalog: None,
            db_schema_filter_pattern: Some("public".into()),
            table_name_filter_pattern: Some("peo%".into()),
            table_types: vec!["TABLE".into()],
            include_schema: true,
        })
        .await
        .unwrap();
    let batches = fetch(&mut c, info).await.unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
    let names = batches[0]
        .column(2)
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    assert_eq!(names.value(0), "people");
    let schemas = batches[0]
        .column(4)
        .as_any()
        .downcast_ref::<BinaryArray>()
        .unwrap();
    let schema = Schema::try_from(IpcMessage(schemas.value(0).to_vec().into())).unwrap();
    let fields: Vec<(&str, &DataType)> = schema
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.data_type()))
        .collect();
    assert_eq!(
        fields,
        vec![("id", &DataType::Int64), ("name", &DataType::Utf8)]
    );

    // Patterns that a backtracking LIKE matcher takes years over against long names; an overlong pattern is the
    // client's error.
    let long_name = format!("{}b", "a".repeat(120));
    c.execute_update(format!("CREATE TABLE {long_name} (x BIGINT)"), None)
        .await
        .unwrap();
    let list = |schema: Option<&str>, table: &str| CommandGetTables {
        catalog: None,
        db_schema_filter_pattern: schema.map(str::to_string),
        table_name_filter_pattern: Some(table.to_string()),
        table_types: vec![],
        include_schema: false,
    };
    let tables_named = |batches: &[RecordBatch]| -> Vec<String> {
        batches
            .iter()
            .flat_map(|b| {
                let a = b.column(2).as_any().downcast_ref::<StringArray>().unwrap();
                a.iter().map(|v| v.unwrap().to_string()).collect::<Vec<_>>()
            })
            .collect()
    };
    let star_a = "%a".repeat(15);
    for (schema, table, expected) in [
        (None, format!("{star_a}%b"), vec![long_name.clone()]),
        (None, format!("{star_a}%c"), vec![]),
        (Some(format!("{star_a}%")), format!("{star_a}%"), vec![]),
        (
            Some("%_%_%_%c".to_string()),
            "%_%_%_%_%_%_%_%_%_%_%b".to_string(),
            vec![long_name.clone()],
        ),
        (None, "%_%_%_%_%_%_%_%_%_%_%c".to_string(), vec![]),
    ] {
        let info = c.get_tables(list(schema.as_deref(), &table)).await.unwrap();
        let got = tables_named(&fetch(&mut c, info).await.unwrap());
        assert_eq!(got, expected, "{schema:?} {table}");
    }
    let schemas = c
        .get_db_schemas(CommandGetDbSchemas {
            catalog: None,
            db_schema_filter_pattern: Some(format!("{}%a", "%_".repeat(12))),
        })
        .await
        .unwrap();
    assert_eq!(
        fetch(&mut c, schemas).await.unwrap()[0].num_rows(),
        1,
        "information_schema ends in 'a'"
    );
    let e = c
        .get_tables(list(None, &"%".repeat(100_000)))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("too long"), "{e}");
    assert_eq!(code(e), Code::InvalidArgument);
    let e = c
        .get_db_schemas(CommandGetDbSchemas {
            catalog: None,
            db_schema_filter_pattern: Some("_".repeat(2000)),
        })
        .await
        .unwrap_err();
    assert_eq!(code(e), Code::InvalidArgument);

    let info = c.get_table_types().await.unwrap();
    assert_table(
        &fetch(&mut c, info).await.unwrap(),
        &[
            "+------------+",
            "| table_type |",
            "+------------+",
            "| TABLE      |",
            "| VIEW       |",
            "+------------+",
        ],
    );
    let info = c
        .get_sql_info(vec![
            SqlInfo::FlightSqlServerName,
            SqlInfo::FlightSqlServerReadOnly,
        ])
        .await
        .unwrap();
    assert_table(
        &fetch(&mut c, info).await.unwrap(),
        &[
            "+-----------+-----------------------+",
            "| info_name | value                 |",
            "+-----------+-----------------------+",
            "| 0         | {string_value=marrow} |",
            "| 3         | {bool_value=false}    |",
            "+-----------+-----------------------+",
        ],
    );
    let info = c.get_xdbc_type_info(Default::default()).await.unwrap();
    let types = fetch(&mut c, info).await.unwrap();
    let names: Vec<String> = types
        .iter()
        .flat_map(|b| {
            let a = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
            (0..a.len())
                .map(|i| a.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        names.contains(&"BIGINT".to_string()) && names.contains(&"VARCHAR".to_string()),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_handshake_and_tokens() {
    let s = server_with(Some(("alice", "s3cret!"))).await;

    // No token: every call but the handshake is refused.
    let mut anonymous = client(&s).await;
    assert_eq!(
        code(query(&mut anonymous, "SELECT 1").await.unwrap_err()),
        Code::Unauthenticated
    );
    assert_eq!(
        code(anonymous.get_catalogs().await.unwrap_err()),
        Code::Unauthenticated
    );
    // Wrong password.
    let mut wrong = client(&s).await;
    assert!(wrong.handshake("alice", "nope").await.is_err());
    assert_eq!(
        code(query(&mut wrong, "SELECT 1").await.unwrap_err()),
        Code::Unauthenticated
    );
    // A made-up token.
    let mut forged = client(&s).await;
    forged.set_token("0".repeat(64));
    assert_eq!(
        code(query(&mut forged, "SELECT 1").await.unwrap_err()),
        Code::Unauthenticated
    );

    // arrow-flight's client sends padded base64 and reads the token from the response headers.
    let mut c = client(&s).await;
    let payload = c.handshake("alice", "s3cret!").await.unwrap();
    assert_eq!(c.token().map(|t| t.as_bytes()), Some(payload.as_ref()));
    assert_query(
        &mut c,
        "SELECT 2 AS two",
        &["+-----+", "| two |", "+-----+", "| 2   |", "+-----+"],
    )
    .await;

    // ADBC's Go driver sends unpadded base64 and no handshake message at all.
    let credentials = base64_unpadded(b"alice:s3cret!");
    assert!(!credentials.ends_with('='));
    let mut raw = FlightServiceClient::new(channel(&s).await);
    let mut request = tonic::Request::new(futures::stream::iter(Vec::<HandshakeRequest>::new()));
    request.metadata_mut().insert(
        "authorization",
        format!("Basic {credentials}").parse().unwrap(),
    );
    let response = raw.handshake(request).await.unwrap();
    let header = response
        .metadata()
        .get("authorization")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let token = header
        .strip_prefix("Bearer ")
        .expect("a bearer token")
        .to_string();
    let mut c2 = client(&s).await;
    c2.set_token(token);
    assert_query(
        &mut c2,
        "SELECT 3 AS three",
        &[
            "+-------+",
            "| three |",
            "+-------+",
            "| 3     |",
            "+-------+",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_keep_their_own_settings() {
    let s = server_with(None).await;
    // With auth off, a handshake still gives a session of its own.
    let mut a = client(&s).await;
    a.handshake("", "").await.unwrap();
    let mut b = client(&s).await;
    b.handshake("", "").await.unwrap();
    a.execute_update("SET datafusion.execution.batch_size = 1234".into(), None)
        .await
        .unwrap();
    let show = "SELECT value FROM information_schema.df_settings WHERE name = 'datafusion.execution.batch_size'";
    assert_eq!(first_string(&query(&mut a, show).await.unwrap()), "1234");
    assert_eq!(first_string(&query(&mut b, show).await.unwrap()), "8192");

    // Without a token, the server issues a session cookie; a client that sends it back keeps its session.
    let mut raw = FlightServiceClient::new(channel(&s).await);
    let set = CommandStatementQuery {
        query: "SET datafusion.execution.batch_size = 77".into(),
        transaction_id: None,
    };
    let response = raw
        .get_flight_info(FlightDescriptor::new_cmd(set.as_any().encode_to_vec()))
        .await
        .unwrap();
    let cookie = response
        .metadata()
        .get("set-cookie")
        .expect("a session cookie")
        .to_str()
        .unwrap();
    let cookie = cookie.split(';').next().unwrap().to_string();
    assert!(cookie.starts_with("marrow_session="), "{cookie}");
    let mut with_cookie = client(&s).await;
    with_cookie.set_header("cookie", cookie);
    assert_eq!(
        first_string(&query(&mut with_cookie, show).await.unwrap()),
        "77"
    );
    let mut without = client(&s).await;
    assert_eq!(
        first_string(&query(&mut without, show).await.unwrap()),
        "8192"
    );
}

/// A raw handshake with Basic credentials: the bearer token, or the status.
async fn login(channel: Channel, user: &str, password: &str) -> Result<String, tonic::Status> {
    let mut raw = FlightServiceClient::new(channel);
    let mut request = tonic::Request::new(futures::stream::iter(Vec::<HandshakeRequest>::new()));
    let credentials = base64_unpadded(format!("{user}:{password}").as_bytes());
    request.metadata_mut().insert(
        "authorization",
        format!("Basic {credentials}").parse().unwrap(),
    );
    let response = raw.handshake(request).await?;
    let header = response.metadata().get("authorization").unwrap();
    let token = header.to_str().unwrap().strip_prefix("Bearer ").unwrap();
    Ok(token.to_string())
}

/// The code and message of a refused login.
async fn refused_login(channel: Channel, user: &str, password: &str) -> (Code, String) {
    let status = login(channel, user, password).await.unwrap_err();
    (status.code(), status.message().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_new_sessions_does_not_end_sessions_in_use() {
    // Small budgets so that a flood is a few hundred calls: 4 established sessions, 8 pending.
    let s = server_with_options(None, |o| {
        o.sessions.max_sessions = 4;
        o.sessions.max_pending = 8;
    })
    .await;
    let show = "SELECT value FROM information_schema.df_settings WHERE name = 'datafusion.execution.batch_size'";
    // A client in the middle of its work: a setting and a prepared statement in its session.
    let mut a = client(&s).await;
    a.handshake("", "").await.unwrap();
    a.execute_update("SET datafusion.execution.batch_size = 1234".into(), None)
        .await
        .unwrap();
    let mut prepared = a.prepare("SELECT 41 + 1 AS x".into(), None).await.unwrap();

    // Anyone (auth is off) logs in a hundred times and makes a hundred calls without a token or cookie.
    let ch = channel(&s).await;
    for _ in 0..100 {
        login(ch.clone(), "", "").await.unwrap();
    }
    let mut anonymous = FlightSqlServiceClient::new(ch.clone());
    for _ in 0..100 {
        anonymous.execute("SELECT 1".into(), None).await.unwrap();
    }
    assert!(s.server.sessions().len() <= 4 + 8);

    // The client's session is intact.
    assert_eq!(first_string(&query(&mut a, show).await.unwrap()), "1234");
    let info = prepared.execute().await.unwrap();
    let batches = fetch(&mut a, info).await.unwrap();
    assert_table(
        &batches,
        &["+----+", "| x  |", "+----+", "| 42 |", "+----+"],
    );

    // The anonymous calls shared their connection's session, which is in use like any other. Two more clients
    // establish sessions; the server then holds 4 sessions in use and refuses a fifth rather than dropping one of
    // them, at login and at the first call of a session opened before it filled up.
    assert_eq!(s.server.sessions().established(), 2);
    let early = login(ch.clone(), "", "").await.unwrap();
    for _ in 0..2 {
        let mut other = client(&s).await;
        other.handshake("", "").await.unwrap();
        query(&mut other, "SELECT 1").await.unwrap();
    }
    assert_eq!(s.server.sessions().established(), 4);
    let (code_, message) = refused_login(ch.clone(), "", "").await;
    assert_eq!(code_, Code::ResourceExhausted, "{message}");
    assert!(message.contains("too many sessions"), "{message}");
    let mut late = client(&s).await;
    late.set_token(early);
    let e = query(&mut late, "SELECT 1").await.unwrap_err();
    assert!(e.to_string().contains("too many sessions"), "{e}");
    assert_eq!(code(e), Code::ResourceExhausted);
    // The sessions in use go on; calls without a session still work, on a new connection too (its session stays
    // pending while the server is full).
    assert_eq!(first_string(&query(&mut a, show).await.unwrap()), "1234");
    query(&mut anonymous, "SELECT 1").await.unwrap();
    let mut newcomer = FlightSqlServiceClient::new(channel(&s).await);
    for _ in 0..3 {
        newcomer.execute("SELECT 1".into(), None).await.unwrap();
    }
    assert_eq!(s.server.sessions().established(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_back_off_per_address_and_per_user() {
    // Waits of a minute or more, so that they outlast the test however slow the machine.
    let s = server_with_options(Some(("ada", "lovelace")), |o| {
        o.logins.free_failures_per_peer = 3;
        o.logins.free_failures_per_user = 5;
        o.logins.first_delay = std::time::Duration::from_secs(60);
        o.logins.max_delay = std::time::Duration::from_secs(120);
    })
    .await;
    let from = |ip: &'static str| channel_from(&s, Some(ip));
    // ada logs in from 127.0.0.2: that address is trusted for ada from now on.
    login(from("127.0.0.2").await, "ada", "lovelace")
        .await
        .unwrap();

    // 127.0.0.1 guesses: the third failure starts a wait, during which even the right password is refused.
    let attacker = from("127.0.0.1").await;
    for _ in 0..2 {
        let (c, m) = refused_login(attacker.clone(), "ada", "guess").await;
        assert_eq!(
            (c, m.as_str()),
            (Code::Unauthenticated, "invalid user name or password")
        );
    }
    let (c, m) = refused_login(attacker.clone(), "ada", "guess").await;
    assert_eq!(c, Code::Unauthenticated);
    assert!(m.contains("next attempt is accepted in 60 s"), "{m}");
    let (c, m) = refused_login(attacker.clone(), "ada", "lovelace").await;
    assert_eq!(c, Code::ResourceExhausted);
    assert!(
        m.contains("too many failed logins from 127.0.0.1: try again in"),
        "{m}"
    );
    // Other user names are counted per address only: refused here, not counted for ada.
    let (c, _) = refused_login(attacker.clone(), "root", "x").await;
    assert_eq!(c, Code::ResourceExhausted);

    // Another address is not affected by 127.0.0.1's wait; its two failures make five for ada.
    for _ in 0..2 {
        let (c, _) = refused_login(from("127.0.0.3").await, "ada", "guess").await;
        assert_eq!(c, Code::Unauthenticated);
    }
    // ada must now wait at every address it has not logged in from...
    let (c, m) = refused_login(from("127.0.0.4").await, "ada", "lovelace").await;
    assert_eq!(c, Code::ResourceExhausted);
    assert!(m.contains("too many failed logins for user 'ada'"), "{m}");
    // ...but not at 127.0.0.2, and the session works.
    let token = login(from("127.0.0.2").await, "ada", "lovelace")
        .await
        .unwrap();
    let mut c = client(&s).await;
    c.set_token(token);
    query(&mut c, "SELECT 1").await.unwrap();
}

/// The batch size a `marrow sql --url` client's session sees, after it ran `set` (if any) as an earlier statement.
async fn cli_batch_size(url: &str, login: Option<(&str, &str)>, set: Option<&str>) -> String {
    let mut cli =
        marrow_flight::client::Client::connect(url, login.map(|l| l.0), login.map(|l| l.1))
            .await
            .unwrap();
    if let Some(value) = set {
        cli.execute(&format!("SET datafusion.execution.batch_size = {value}"))
            .await
            .unwrap();
    }
    let (_, batches) = cli
        .execute("SELECT value FROM information_schema.df_settings WHERE name = 'datafusion.execution.batch_size'")
        .await
        .unwrap();
    first_string(&batches)
}

/// The first row's first column of a result, a string.
fn first_string(batches: &[RecordBatch]) -> String {
    batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap()
        .value(0)
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marrow_sql_url_keeps_one_session() {
    // `marrow sql --url` runs each statement as its own call: a SET must still reach the statements after it, and
    // only that client's.
    let s = server_with(None).await;
    let url = s.server.url();
    assert_eq!(cli_batch_size(&url, None, Some("7")).await, "7");
    assert_eq!(cli_batch_size(&url, None, None).await, "8192");
    // With auth on, the same handshake carries the credentials; wrong ones fail at connect.
    let s = server_with(Some(("admin", "pw"))).await;
    let url = s.server.url();
    assert!(
        marrow_flight::client::Client::connect(&url, Some("admin"), Some("nope"))
            .await
            .is_err()
    );
    assert_eq!(
        cli_batch_size(&url, Some(("admin", "pw")), Some("9")).await,
        "9"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_map_to_grpc_codes() {
    let s = server_with(None).await;
    let mut c = client(&s).await;
    c.handshake("", "").await.unwrap();
    setup_people(&mut c).await;

    assert_eq!(
        code(c.execute("SELEC oops".into(), None).await.unwrap_err()),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            c.execute("SELECT * FROM nowhere".into(), None)
                .await
                .unwrap_err()
        ),
        Code::NotFound
    );
    assert_eq!(
        code(
            c.execute_update("INSERT INTO nowhere VALUES (1)".into(), None)
                .await
                .unwrap_err()
        ),
        Code::NotFound
    );
    assert_eq!(
        code(
            c.prepare("SELECT * FROM nowhere".into(), None)
                .await
                .unwrap_err()
        ),
        Code::NotFound
    );
    assert_eq!(
        code(
            c.execute_update("INSERT INTO people VALUES (1, 'dup')".into(), None)
                .await
                .unwrap_err()
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            c.execute_update("CREATE TABLE people (x INT)".into(), None)
                .await
                .unwrap_err()
        ),
        Code::AlreadyExists
    );
    // Transactions are not supported.
    assert_eq!(
        code(c.begin_transaction().await.unwrap_err()),
        Code::Unimplemented
    );

    // Garbage tickets: not protobuf, a well-formed ticket with a malformed id, a hand-made command, an unknown id.
    let garbage = Ticket::new(vec![0xff, 0x00, 0x13, 0x37, 0x42]);
    assert_eq!(
        code(c.do_get(garbage).await.unwrap_err()),
        Code::InvalidArgument
    );
    let short = TicketStatementQuery {
        statement_handle: vec![1, 2, 3].into(),
    };
    let short = Ticket::new(short.as_any().encode_to_vec());
    assert_eq!(
        code(c.do_get(short).await.unwrap_err()),
        Code::InvalidArgument
    );
    let handmade = Ticket::new(
        CommandStatementQuery {
            query: "SELECT * FROM people".into(),
            transaction_id: None,
        }
        .as_any()
        .encode_to_vec(),
    );
    assert_eq!(
        code(c.do_get(handmade).await.unwrap_err()),
        Code::InvalidArgument
    );
    // A well-formed Any naming a Flight SQL message, with bytes that do not decode as it.
    let undecodable = arrow_flight::sql::Any {
        type_url: TicketStatementQuery::type_url().to_string(),
        value: vec![0xff, 0xff, 0xff].into(),
    };
    let undecodable = Ticket::new(undecodable.encode_to_vec());
    assert_eq!(
        code(c.do_get(undecodable).await.unwrap_err()),
        Code::InvalidArgument
    );
    let unknown = TicketStatementQuery {
        statement_handle: vec![7u8; 16].into(),
    };
    let unknown = Ticket::new(unknown.as_any().encode_to_vec());
    assert_eq!(code(c.do_get(unknown).await.unwrap_err()), Code::NotFound);

    // Another session's ticket is refused, and stays usable by its owner; then it is used up.
    let info = c
        .execute("SELECT id FROM people ORDER BY id".into(), None)
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut other = client(&s).await;
    other.handshake("", "").await.unwrap();
    assert_eq!(
        code(other.do_get(ticket.clone()).await.unwrap_err()),
        Code::NotFound
    );
    let batches: Vec<RecordBatch> = c
        .do_get(ticket.clone())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 3);
    assert_eq!(code(c.do_get(ticket).await.unwrap_err()), Code::NotFound);

    // Another session's prepared statement handle is not found either.
    let handle = create_prepared(&mut c, "SELECT 1").await.unwrap();
    let cmd = CommandPreparedStatementQuery {
        prepared_statement_handle: handle.clone(),
    };
    let descriptor = FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec());
    let request = authorized(&other, descriptor.clone());
    let err = other
        .inner_mut()
        .get_flight_info(request)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let request = authorized(&c, descriptor);
    assert!(c.inner_mut().get_flight_info(request).await.is_ok());

    // The server is still up and the data unchanged.
    assert_query(
        &mut c,
        "SELECT count(*) AS n FROM people",
        &["+---+", "| n |", "+---+", "| 3 |", "+---+"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_stream_in_small_messages() {
    let s = server_with(None).await;
    // arrow-flight's client keeps tonic's default 4 MiB decoding limit: a 24 MB batch must arrive split.
    let mut c = client(&s).await;
    let batches = query(
        &mut c,
        "SELECT value, repeat('x', 2000000) AS v FROM generate_series(1, 12)",
    )
    .await
    .unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 12);
    assert!(batches.len() >= 12 / 2, "{} batches", batches.len());
    let total: usize = batches
        .iter()
        .map(|b| {
            let v = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
            (0..v.len()).map(|i| v.value(i).len()).sum::<usize>()
        })
        .sum();
    assert_eq!(total, 24_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnecting_mid_stream_does_not_hurt() {
    let s = server_with(None).await;
    let mut c = client(&s).await;
    let info = c
        .execute(
            "SELECT value, repeat('y', 100000) AS v FROM generate_series(1, 2000)".into(),
            None,
        )
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut stream = c.do_get(ticket).await.unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert!(first.num_rows() > 0);
    drop(stream);
    drop(c);
    // A new connection works as before.
    let mut c = client(&s).await;
    assert_query(
        &mut c,
        "SELECT 1 AS one",
        &["+-----+", "| one |", "+-----+", "| 1   |", "+-----+"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let base = ServeOptions {
        engine: marrow_engine::Config::new(dir.path().join("data")),
        port: 0,
        ..Default::default()
    };
    let remote = ServeOptions {
        host: "0.0.0.0".into(),
        ..base.clone()
    };
    assert!(matches!(
        start(remote).await.unwrap_err(),
        ServeError::Config(_)
    ));
    let half_tls = ServeOptions {
        tls_cert: Some(dir.path().join("cert.pem")),
        ..base.clone()
    };
    assert!(matches!(
        start(half_tls).await.unwrap_err(),
        ServeError::Config(_)
    ));
    let password_only = ServeOptions {
        password: Some("x".into()),
        ..base.clone()
    };
    assert!(matches!(
        start(password_only).await.unwrap_err(),
        ServeError::Config(_)
    ));
    // Forced, or with auth, a remote bind is allowed.
    let forced = ServeOptions {
        host: "0.0.0.0".into(),
        allow_insecure_remote: true,
        ..base.clone()
    };
    let server = start(forced).await.unwrap();
    server.shutdown().await.unwrap();
}
