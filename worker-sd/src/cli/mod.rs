//! The command line: `schedulers`, `generate` and `serve`.

pub mod generate;
pub mod model;
pub mod serve;
