//! Marrow's database engine: a data directory of Lance datasets, queried and changed with SQL through DataFusion.
//!
//! ```no_run
//! # async fn demo() -> marrow_engine::Result<()> {
//! use marrow_engine::{Config, Database};
//! let db = Database::open(Config::new("./marrow-data")).await?;
//! let session = db.session();
//! session.execute("INSERT INTO memories (id, content) VALUES ('m1', 'the user prefers Rust')").await?;
//! let (_schema, batches) = session.execute("SELECT id, content FROM memories").await?.collect().await?;
//! assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
//! # Ok(()) }
//! ```
//!
//! The modules layer one way, top to bottom (a module uses only those below it):
//!
//! - [`builtins`] opens a database with Marrow's statements, table functions, procedures and optimizer rule
//!   registered: adding a feature is one file and one line there.
//! - Features, each registered through [`extension`]'s traits: [`statements`] (the SQL Marrow runs itself: table
//!   DDL, DML, indexes, COPY, external tables, CALL, refusals), [`table_functions`], [`procedures`] and [`models`]
//!   (weights and adapters as tables; formats in their own files). Only procedures and models send SQL back
//!   through a session: they are SQL clients, like the Python layer.
//! - The core: [`database`], [`session`] (parse, route, plan, execute; time travel), [`prepared`] (prepared
//!   statements, parameter binding) and [`extension`] (the traits features implement). Database, session and the
//!   extension traits refer to each other — a session holds its database, the database holds the registered
//!   features, a feature runs on a session — and they name no feature, with one exception: [`prepared`] hands an
//!   executemany of a one-row INSERT to the DML statement as a single multi-row INSERT (one commit).
//! - Below them: [`vector`] (ANN planning and the plan cache), [`catalog`] (Lance datasets as tables, built-in
//!   schemas, versions, commits), [`sql`] (dialect, parsing, quoting), [`options`] (`SET marrow.*`), [`config`],
//!   [`fence`] (which server paths SQL may read or write), [`exec`], [`error`].

pub mod builtins;
pub mod catalog;
pub mod config;
pub mod database;
pub mod error;
pub mod exec;
pub mod extension;
pub mod fence;
pub mod models;
pub mod options;
pub mod prepared;
pub mod procedures;
pub mod session;
pub mod sql;
pub mod statements;
pub mod table_functions;
pub mod upkeep;
pub mod vector;

pub use catalog::builtin::memories_schema;
pub use config::{Config, CATALOG, SCHEMA};
pub use database::Database;
pub use error::{Error, ErrorKind, Result};
pub use prepared::{is_internal_relation, Parameters, PreparedInfo, PreparedStatement};
pub use session::{QueryOutput, Session};
pub use statements::ingest;
pub use upkeep::{Upkeep, UpkeepReport};
