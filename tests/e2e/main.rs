//! Marrow's end-to-end tests: one test binary (see DESIGN.md) holding the sqllogictest runner over `sql/`, the
//! engine's process-level tests (lock, crash recovery) and the Flight SQL server tests.

mod engine;
mod flight;
mod slt;
