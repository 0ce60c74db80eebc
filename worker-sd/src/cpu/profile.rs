//! Per-layer timers for finding where a step's time goes: off unless `WORKER_SD_PROFILE` is set, when each
//! timed layer adds its wall time under a label naming its kind and shape; [`take_report`] lists the totals.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Instant;

static ENABLED: LazyLock<bool> = LazyLock::new(|| std::env::var_os("WORKER_SD_PROFILE").is_some());
static TOTALS: LazyLock<Mutex<HashMap<String, (f64, usize)>>> = LazyLock::new(Default::default);

/// Whether the timers run (`WORKER_SD_PROFILE` set).
pub fn enabled() -> bool {
    *ENABLED
}

/// Runs `f`, adding its wall time under `label()` when profiling (the label is only built then).
pub fn time<R>(label: impl FnOnce() -> String, f: impl FnOnce() -> R) -> R {
    if !enabled() {
        return f();
    }
    let start = Instant::now();
    let result = f();
    let secs = start.elapsed().as_secs_f64();
    if let Ok(mut totals) = TOTALS.lock() {
        let entry = totals.entry(label()).or_default();
        entry.0 += secs;
        entry.1 += 1;
    }
    result
}

/// The totals since the last report, longest first, one `seconds calls label` line each; clears them.
pub fn take_report() -> String {
    let Ok(mut totals) = TOTALS.lock() else {
        return String::new();
    };
    let mut rows: Vec<_> = totals.drain().collect();
    rows.sort_by(|a, b| b.1.0.total_cmp(&a.1.0));
    rows.iter()
        .map(|(label, (secs, calls))| format!("{secs:9.3} s {calls:5} {label}\n"))
        .collect()
}
