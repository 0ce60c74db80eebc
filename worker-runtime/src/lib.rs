//! The runtime both workers share: HTTP serving, streaming events, errors, health, metrics, the job queue.
