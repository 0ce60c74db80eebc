//! The runtime over real HTTP on loopback, with a fake backend that counts: errors, queue, cancellation,
//! API key, metrics, readiness, hooks and shutdown.

mod common;

mod auth;
mod cancel;
mod errors;
mod hooks;
mod metrics;
mod queue;
mod shutdown;
