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

pub mod adapters;
mod ann;
pub mod catalog;
pub mod database;
mod ddl;
pub mod dialect;
mod dml;
pub mod error;
mod exec;
pub mod export;
pub mod fence;
pub mod index;
pub mod ingest;
mod plan_cache;
pub mod prepared;
pub mod session;
pub mod table_functions;
pub mod vector;
pub mod versions;
pub mod weights;
pub mod write;

pub use database::{memories_schema, Config, Database, CATALOG, SCHEMA};
pub use error::{Error, ErrorKind, Result};
pub use prepared::{is_internal_relation, Parameters, PreparedInfo, PreparedStatement};
pub use session::{QueryOutput, Session};
