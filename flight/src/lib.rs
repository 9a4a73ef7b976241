//! Marrow's Arrow Flight SQL server: any Flight SQL client (ADBC, pyarrow, JDBC, arrow-flight's Rust client) can
//! query and change a Marrow database.
//!
//! - [`server`]: options (the engine's [`marrow_engine::Config`] plus address, auth and TLS), start/stop
//!   ([`server::serve`], [`server::start`] for tests on port 0).
//! - [`service`]: the `FlightSqlService`, one file per concern (statements, prepared statements, tickets, bulk
//!   ingest, catalog listings, SQL info, encoding); it translates protocol into engine calls.
//! - [`auth`]: credentials, the handshake, bearer tokens, session cookies; each client session has its own engine
//!   session, so `SET` and prepared statements are per client.
//! - [`error`]: the crate's one error type and its one mapping to gRPC codes.
//! - [`client`]: a small client for `marrow sql --url`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use arrow_flight::sql::client::FlightSqlServiceClient;
//! use marrow_engine::Config;
//! use marrow_flight::server::{start, ServeOptions};
//!
//! let server = start(ServeOptions { engine: Config::new("./marrow-data"), port: 0, ..Default::default() }).await?;
//! let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.local_addr()))?
//!     .connect()
//!     .await?;
//! let mut client = FlightSqlServiceClient::new(channel);
//! let info = client.execute("SELECT count(*) FROM memories".to_string(), None).await?;
//! let ticket = info.endpoint[0].ticket.clone().expect("a ticket");
//! let _batches: Vec<_> = futures::TryStreamExt::try_collect::<Vec<_>>(client.do_get(ticket).await?).await?;
//! server.shutdown().await?;
//! # Ok(()) }
//! ```

pub mod auth;
pub mod client;
pub mod error;
pub mod server;
pub mod service;

pub use error::Error;
pub use server::{serve, start, start_on, RunningServer, ServeError, ServeOptions};
pub use service::MarrowFlightService;
