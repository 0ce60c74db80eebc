//! The binary's subcommands, one module each, and what they share (loading a model from the flags).

pub mod generate;
pub mod model;
pub mod serve;
