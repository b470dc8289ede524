//! romdelta's integration tests: one binary, one module per area.

mod bench;
mod cli;
mod common;
mod hostile;
mod roundtrip;
mod rules;
