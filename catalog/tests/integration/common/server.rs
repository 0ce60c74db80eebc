//! The loopback fake hub lives in the end-to-end tests' crate, shared with the tests across crates.

pub use e2e_tests::server::{Route, Server};
