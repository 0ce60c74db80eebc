//! Command-line arguments of the stage benches (`sd_stages`, `flux_step`).

/// The value after `name` on the command line, or `default` when absent.
pub fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

/// The whole number after `name`, or `default` when absent.
pub fn number<T: std::str::FromStr>(name: &str, default: &str) -> anyhow::Result<T> {
    let v = arg(name, default);
    v.parse()
        .map_err(|_| anyhow::anyhow!("{name} takes a whole number, got {v:?}"))
}
