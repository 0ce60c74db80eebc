//! End-to-end tests of the `catalog` command against a loopback server serving recorded responses.

mod common;

mod civitai;
mod downloads;
mod hf;
mod hostile;
mod ingest;
mod local;
