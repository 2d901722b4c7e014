//! The harnesses of the integration tests (tests/common/) that unit tests use too,
//! loaded once for the whole crate: a `#[path]` module per test file would compile a
//! second copy of each (clippy's `duplicate_mod`).

#[path = "../tests/common/nats.rs"]
pub mod nats;
#[path = "../tests/common/sink.rs"]
#[allow(dead_code)]
pub mod sink;
