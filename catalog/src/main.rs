//! `catalog`: the command line over the catalog library. It parses arguments, reads the environment
//! (endpoints, tokens, homes) once, calls [`catalog::ops`], and prints. Exit status: 0 on success, 1 on
//! failure (one sentence on stderr), 2 on a usage error.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use artifacts_contract::{
    CatalogId, ImageBase, ModelEntry, ModelFamily, ModelType, TypedConfig, WorkerCapabilities, WorkerKind,
    compat,
};
use catalog::ops::{self, AddOptions, OpsError, Settings, Sources};
use catalog::{Catalog, Filter};
use clap::{Parser, Subcommand};

/// Brings AI models into a local catalog and answers which worker can run them.
#[derive(Parser)]
#[command(name = "catalog", version, about)]
struct Cli {
    /// Catalog home (default: $CATALOG_HOME, else the platform data directory); the workers take the
    /// same flag.
    #[arg(
        long = "catalog-home",
        visible_alias = "home",
        global = true,
        value_name = "DIR"
    )]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Describe a model (hf:ORG/NAME[@REV][:QUANT], civitai:ID[@VERSION], or a path) and store it.
    Add {
        /// What to add.
        source: String,
        /// Store the metadata only; `catalog pull` fetches the files later.
        #[arg(long)]
        no_download: bool,
        /// Accept pickle weights (.ckpt, .pt, .bin), which can run code when loaded.
        #[arg(long)]
        allow_pickle: bool,
        /// Print the entry as contract JSON.
        #[arg(long)]
        json: bool,
    },
    /// Download and verify an entry's files.
    Pull {
        /// The entry.
        id: String,
        /// Print the entry as contract JSON.
        #[arg(long)]
        json: bool,
    },
    /// List entries.
    List {
        /// Only this model type.
        #[arg(long = "type", value_name = "llm|image|audio|video")]
        model_type: Option<ModelType>,
        /// Only this LLM family (llama, qwen2...).
        #[arg(long, value_parser = parse_family)]
        family: Option<ModelFamily>,
        /// Only this image base (sd1, sdxl, flux...).
        #[arg(long, value_parser = parse_base)]
        base: Option<ImageBase>,
        /// Print a JSON array of contract entries.
        #[arg(long)]
        json: bool,
    },
    /// Show one entry.
    Show {
        /// The entry.
        id: String,
        /// Print the entry as contract JSON.
        #[arg(long)]
        json: bool,
    },
    /// Search entries by id, name, author, family, base and tags.
    Search {
        /// Words that must all appear (`catalog search tiny chat`).
        #[arg(required = true, num_args = 1..)]
        words: Vec<String>,
        /// Print a JSON array of contract entries.
        #[arg(long)]
        json: bool,
    },
    /// Which workers can run an entry, and why not.
    Compat {
        /// The entry.
        id: String,
        /// Print the contract's compatibility answers as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Hash a file and look it up on CivitAI.
    Identify {
        /// The file.
        file: PathBuf,
        /// Print the entry found as contract JSON.
        #[arg(long)]
        json: bool,
    },
    /// Re-check an entry's files against their published sizes and hashes.
    Verify {
        /// The entry.
        id: String,
        /// Print the entry, with its new status, as contract JSON (exit status 1 still means a failure).
        #[arg(long)]
        json: bool,
    },
    /// Serve the catalog's HTTP API and web UI (http://127.0.0.1:8765/ by default).
    Serve(catalog::serve::ServeArgs),
    /// Remove an entry, and its downloaded files unless --keep-files.
    Rm {
        /// The entry.
        id: String,
        /// Keep the downloaded files.
        #[arg(long)]
        keep_files: bool,
        /// Print the removed entry as contract JSON.
        #[arg(long)]
        json: bool,
    },
}

fn parse_family(s: &str) -> Result<ModelFamily, String> {
    ModelFamily::ALL
        .into_iter()
        .find(|f| f.as_str() == s)
        .ok_or_else(|| format!("unknown family {s:?}"))
}

fn parse_base(s: &str) -> Result<ImageBase, String> {
    [
        ImageBase::Sd1,
        ImageBase::Sd2,
        ImageBase::Sdxl,
        ImageBase::Sd3,
        ImageBase::Flux,
        ImageBase::Other,
    ]
    .into_iter()
    .find(|b| b.as_str() == s)
    .ok_or_else(|| format!("unknown base {s:?}: expected sd1, sd2, sdxl, sd3, flux or other"))
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// `CATALOG_STALL_TIMEOUT`, in seconds: how long a download may receive nothing (a minute if unset).
fn stall_timeout() -> Option<std::time::Duration> {
    let text = env("CATALOG_STALL_TIMEOUT")?;
    match text.parse::<f64>() {
        Ok(s) if s > 0.0 && s.is_finite() => Some(std::time::Duration::from_secs_f64(s)),
        _ => {
            eprintln!("warning: ignoring CATALOG_STALL_TIMEOUT={text:?}: expected a number of seconds");
            None
        }
    }
}

/// The only place the environment is read for the sources: each registered source declares the
/// variables it takes (`HF_ENDPOINT`, `HF_TOKEN`, `HF_HOME`, `CIVITAI_ENDPOINT`, `CIVITAI_TOKEN`...).
fn sources_from_env() -> Sources {
    Sources::new(&Settings::read(env).with_stall_timeout(stall_timeout()))
}

/// A failure: exit 1 with a message, or exit 2 for malformed input.
enum Failure {
    Usage(String),
    Error(String),
}

impl<E: Into<OpsError>> From<E> for Failure {
    fn from(e: E) -> Self {
        match e.into() {
            OpsError::Id(id) => Failure::Usage(id.to_string()),
            other => Failure::Error(other.to_string()),
        }
    }
}

/// Reads an id argument; a path to a local file stands for its `file:` id, relative or absolute.
fn id_arg(s: &str) -> Result<CatalogId, Failure> {
    Ok(catalog::ids::normalize(ops::parse_source(s)?))
}

/// The stored entry an id argument names.
fn stored(catalog: &Catalog, id: &str) -> Result<ModelEntry, Failure> {
    let id = id_arg(id)?;
    Ok(catalog.get(&id)?.ok_or_else(|| OpsError::Unknown {
        id: id.clone(),
        home: catalog.home().to_path_buf(),
    })?)
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<(), Failure> {
    let text = serde_json::to_string(value).map_err(|e| Failure::Error(e.to_string()))?;
    println!("{text}");
    Ok(())
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

fn summary(e: &ModelEntry) -> String {
    match &e.config {
        TypedConfig::Llm(c) => format!(
            "{} {}{}",
            c.model_family,
            c.format,
            c.quantization
                .as_deref()
                .map(|q| format!(" {q}"))
                .unwrap_or_default()
        ),
        TypedConfig::Image(c) => format!("{} {} {}", c.base, c.checkpoint_type, c.variant),
        TypedConfig::Audio(c) => c.task.clone().unwrap_or_default(),
        TypedConfig::Video(c) => c.base_model.clone().unwrap_or_default(),
    }
}

fn status_word(e: &ModelEntry) -> String {
    serde_json::to_value(&e.status)
        .ok()
        .and_then(|v| v.get("state").and_then(|s| s.as_str()).map(str::to_string))
        .unwrap_or_default()
}

fn print_entry(e: &ModelEntry) {
    println!("{}", e.id);
    println!("  name:    {}", e.name);
    if let Some(a) = &e.author {
        println!("  author:  {a}");
    }
    println!("  type:    {} ({})", e.model_type(), summary(e));
    if let TypedConfig::Llm(c) = &e.config {
        if let Some(n) = c.context_length {
            println!("  context: {n} tokens");
        }
        println!(
            "  chat template: {}",
            if c.tokenizer.chat_template.is_some() {
                "yes"
            } else {
                "no"
            }
        );
    }
    println!("  status:  {}", status_word(e));
    if let artifacts_contract::ArtifactStatus::Failed { error } = &e.status {
        println!("  error:   {error}");
    }
    if let Some(p) = &e.path {
        println!("  path:    {p}");
    }
    println!("  files:   {} ({})", e.files.len(), gib(e.size));
}

fn print_list(entries: &[ModelEntry], empty: &str) {
    if entries.is_empty() {
        eprintln!("{empty}");
    }
    for e in entries {
        println!(
            "{:<50} {:<6} {:<28} {}",
            e.id.to_string(),
            e.model_type(),
            summary(e),
            status_word(e)
        );
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    let catalog = match &cli.home {
        Some(home) => Catalog::open(home)?,
        None => Catalog::open_default()?,
    };
    match cli.command {
        Command::Add {
            source,
            no_download,
            allow_pickle,
            json,
        } => {
            let opts = AddOptions {
                download: !no_download,
                allow_pickle,
            };
            let entry = ops::add(&catalog, &sources_from_env(), &source, opts)?;
            if json {
                print_json(&entry)?
            } else {
                print_entry(&entry)
            }
        }
        Command::Pull { id, json } => {
            let entry = ops::pull(&catalog, &sources_from_env(), &id_arg(&id)?)?;
            if json {
                print_json(&entry)?
            } else {
                print_entry(&entry)
            }
        }
        Command::List {
            model_type,
            family,
            base,
            json,
        } => {
            let filter = Filter {
                model_type,
                family,
                base,
                source: None,
            };
            if json {
                let stdout = std::io::stdout();
                let mut out = std::io::BufWriter::new(stdout.lock());
                catalog.write_json(&filter, None, &mut out)?;
                out.flush()
                    .map_err(|e| Failure::Error(format!("cannot write the listing: {e}")))?;
            } else {
                let all = filter.model_type.is_none() && filter.family.is_none() && filter.base.is_none();
                let empty = if all {
                    format!(
                        "the catalog at {} is empty; add a model with `catalog add ID_OR_PATH`",
                        catalog.home().display()
                    )
                } else {
                    "no entry matches these filters".to_string()
                };
                print_list(&catalog.list(&filter)?, &empty);
            }
        }
        Command::Show { id, json } => {
            let entry = stored(&catalog, &id)?;
            if json {
                print_json(&entry)?
            } else {
                print_entry(&entry)
            }
        }
        Command::Search { words, json } => {
            let text = words.join(" ");
            if json {
                let mut out = std::io::stdout().lock();
                catalog.write_json(&Filter::default(), Some(&text), &mut out)?;
            } else {
                let empty = format!("no entry in the catalog matches \"{text}\"");
                print_list(&catalog.search(&text)?, &empty);
            }
        }
        Command::Compat { id, json } => {
            let entry = stored(&catalog, &id)?;
            let answers: Vec<_> = WorkerKind::ALL
                .iter()
                .map(|k| compat::check(&entry, &WorkerCapabilities::builtin(*k), None))
                .collect();
            if json {
                print_json(&answers)?;
            } else {
                for a in &answers {
                    if a.compatible {
                        println!(
                            "{}: yes (needs about {} of memory)",
                            a.worker,
                            gib(a.memory_bytes)
                        );
                    } else {
                        println!("{}: no: {}", a.worker, a.reasons.join("; "));
                    }
                }
            }
        }
        Command::Identify { file, json } => {
            let (sha, found) = ops::identify(&sources_from_env(), &file)?;
            match (found, json) {
                (Some(entry), true) => print_json(&entry)?,
                (Some(entry), false) => {
                    println!("sha256 {sha}");
                    print_entry(&entry);
                }
                (None, _) => {
                    return Err(Failure::Error(format!(
                        "CivitAI does not know {} (sha256 {sha})",
                        file.display()
                    )));
                }
            }
        }
        Command::Verify { id, json } => {
            let entry = ops::verify(&catalog, &id_arg(&id)?)?;
            if json {
                print_json(&entry)?;
            }
            match &entry.status {
                artifacts_contract::ArtifactStatus::Available if json => {}
                artifacts_contract::ArtifactStatus::Available => {
                    println!("{}: every file verified", entry.id)
                }
                artifacts_contract::ArtifactStatus::Failed { error } => {
                    return Err(Failure::Error(error.clone()));
                }
                _ => {
                    return Err(Failure::Error(format!(
                        "{} has not been downloaded; run `catalog pull {}`",
                        entry.id, entry.id
                    )));
                }
            }
        }
        Command::Serve(args) => {
            catalog::serve::run(catalog.home(), sources_from_env(), args).map_err(Failure::Error)?
        }
        Command::Rm { id, keep_files, json } => {
            let entry = ops::remove(&catalog, &sources_from_env(), &id_arg(&id)?, keep_files)?;
            if json {
                print_json(&entry)?;
            } else {
                println!("removed {}", entry.id);
            }
        }
    }
    Ok(())
}

/// Restores the default SIGPIPE action, so output to a closed pipe (`catalog list | head`) ends the
/// process quietly instead of panicking in `println!` (Rust ignores SIGPIPE by default).
#[cfg(unix)]
fn exit_quietly_on_a_closed_pipe() {
    // SAFETY: called first thing in `main`, before any other thread exists; it only changes how the
    // process answers SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    #[cfg(unix)]
    exit_quietly_on_a_closed_pipe();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("catalog: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Error(msg)) => {
            eprintln!("catalog: {msg}");
            ExitCode::FAILURE
        }
    }
}
