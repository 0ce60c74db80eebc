//! worker-sd's integration tests, in one binary so candle links once.

mod common;
mod schedulers;
mod server;
mod tiny_sd15;
