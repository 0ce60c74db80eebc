//! The catalog: turns what HuggingFace, CivitAI or a file on disk says about a model into a typed
//! [`artifacts_contract::ModelEntry`], stores it, and fetches and verifies its files.
