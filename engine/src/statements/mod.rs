//! The statements Marrow runs itself instead of DataFusion, one file each, each registered as a
//! [`StatementHandler`](crate::extension::StatementHandler) in `builtins.rs`.

pub mod call;
pub mod copy;
pub mod create_table;
pub mod dml;
pub mod external_table;
pub(crate) mod group_commit;
pub mod index;
pub mod ingest;
pub mod refused;
pub mod views;
