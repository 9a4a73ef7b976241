//! Marrow's end-to-end tests: one test binary (see DESIGN.md) holding the sqllogictest runner over `sql/`, the
//! engine's process-level tests (lock, crash recovery) and the Flight SQL server tests.

#![allow(clippy::print_stdout)]
// child processes report progress to the parent test on stdout

mod ann;
mod docs;
mod engine;
mod fence;
mod flight;
mod fuzz_corpus;
mod slt;
mod versions;
