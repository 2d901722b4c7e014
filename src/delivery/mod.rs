//! The worker: taking messages from the queue and delivering them, to the recipient
//! domain's MX, a smarthost, or local software, with retries and bounces.
//!
//! The result of a delivery attempt is one [`Outcome`] per recipient; the worker maps
//! outcomes onto queue operations (ack, defer, bounce) in one place.

pub mod dsn;
pub mod outcome;
pub mod retry;

pub use outcome::Outcome;
