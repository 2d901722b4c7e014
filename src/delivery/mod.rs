//! The worker: taking messages from the queue and delivering them, to the recipient
//! domain's MX, a smarthost, or local software, with retries and bounces.
//!
//! The result of a delivery attempt is one [`Outcome`] per recipient; the worker maps
//! outcomes onto queue operations (ack, defer, bounce) in one place.

pub mod client;
pub mod dispatch;
pub mod dns;
pub mod dsn;
pub mod guard;
pub mod local;
pub mod mx;
pub mod outcome;
pub mod pool;
pub mod queue_ops;
pub mod retry;
pub mod route;
pub mod worker;

pub use outcome::Outcome;
