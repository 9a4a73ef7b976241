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
//! The modules layer one way, top to bottom:
//!
//! - [`builtins`] opens a database with Marrow's statements, table functions and procedures registered.
//! - Features, each registered through [`extension`]'s traits: [`statements`] (the SQL Marrow runs itself: table
//!   DDL, DML, indexes, COPY, ingest, CALL), [`table_functions`], [`procedures`] and [`models`] (weights and
//!   adapters as tables). Only procedures and models send SQL back through a session: they are SQL clients.
//! - The core: [`database`] and [`session`] (parse, route, plan, execute; they name no feature), [`extension`].
//! - Below them: [`vector`] (ANN planning and the plan cache), [`catalog`] (Lance datasets as tables, built-in
//!   schemas, versions, commits), [`sql`] (dialect, parsing, quoting), [`options`], [`config`], [`fence`],
//!   [`error`].

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
pub mod vector;

pub use catalog::builtin::memories_schema;
pub use config::{Config, CATALOG, SCHEMA};
pub use database::Database;
pub use error::{Error, ErrorKind, Result};
pub use prepared::{is_internal_relation, Parameters, PreparedInfo, PreparedStatement};
pub use session::{QueryOutput, Session};
pub use statements::ingest;
