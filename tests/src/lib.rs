//! Helpers for the end-to-end tests in `tests/tests/`: fixtures and loopback servers.
