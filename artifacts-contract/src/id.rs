//! Catalog ids: the one string a user types to name a model, whichever source it comes from.
//!
//! Grammar (formatting a parsed id gives the same string back):
//! - `hf:ORG/NAME[@REVISION][:SELECTOR]` where the selector is a file path inside the repo
//!   (`model-q4.gguf`, `unet/x.safetensors`) or a quantization name (`Q4_K_M`).
//! - `civitai:MODEL_ID[@VERSION_ID]`, decimal ids without leading zeros.
//! - `file:PATH`, any non-empty local path.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A parsed catalog id; the key of every entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CatalogId {
    /// A HuggingFace Hub repository, optionally pinned and narrowed to one file or quantization.
    HuggingFace {
        /// `org/name`.
        repo: String,
        /// Branch, tag or commit; `None` means the default branch.
        revision: Option<String>,
        /// A file path or quantization name, as typed.
        selector: Option<String>,
    },
    /// A CivitAI model, optionally one specific version.
    CivitAi {
        /// The model id.
        model: u64,
        /// The version id; `None` means the newest version.
        version: Option<u64>,
    },
    /// A file or folder on the local disk.
    File {
        /// The path as the user gave it.
        path: String,
    },
}

/// What the `:SELECTOR` part of an `hf:` id names, so callers never guess from the raw string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selector<'a> {
    /// A path inside the repository (it has a dot or a slash).
    File(&'a str),
    /// A quantization name such as `Q4_K_M` or `BF16`.
    Quant(&'a str),
}

/// Why a string is not a catalog id; the message names the part that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The prefix before the first `:` is none of the known schemes.
    #[error("unknown catalog id scheme in {0:?}: expected hf:ORG/NAME, civitai:MODEL_ID or file:PATH")]
    UnknownScheme(String),
    /// The `hf:` repository part is not `org/name`.
    #[error("invalid HuggingFace repo {0:?}: expected ORG/NAME using letters, digits, '-', '_' and '.'")]
    BadRepo(String),
    /// The revision after `@` is empty or has characters a git ref cannot have.
    #[error("invalid revision {0:?} in a HuggingFace id")]
    BadRevision(String),
    /// The selector after the second `:` is empty, absolute or climbs out of the repo.
    #[error(
        "invalid file or quantization {0:?}: it must be a relative path inside the repo or a name like Q4_K_M"
    )]
    BadSelector(String),
    /// A CivitAI id part is not a decimal number without leading zeros.
    #[error("invalid CivitAI {what} {value:?}: expected a decimal number such as 4201")]
    BadCivitaiNumber {
        /// `model id` or `version id`.
        what: &'static str,
        /// The offending text.
        value: String,
    },
    /// `file:` with nothing after it.
    #[error("empty path in file: id")]
    EmptyPath,
}

impl CatalogId {
    /// The scheme prefix without the colon, for display and storage filters.
    pub fn scheme(&self) -> &'static str {
        match self {
            CatalogId::HuggingFace { .. } => "hf",
            CatalogId::CivitAi { .. } => "civitai",
            CatalogId::File { .. } => "file",
        }
    }

    /// Classifies the `hf:` selector; `None` for other schemes or when absent.
    pub fn selector(&self) -> Option<Selector<'_>> {
        match self {
            CatalogId::HuggingFace {
                selector: Some(s), ..
            } => Some(classify_selector(s)),
            _ => None,
        }
    }
}

fn classify_selector(s: &str) -> Selector<'_> {
    if s.contains('.') || s.contains('/') {
        Selector::File(s)
    } else {
        Selector::Quant(s)
    }
}

fn is_repo_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 96
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn valid_revision(s: &str) -> bool {
    // Git refs may hold '/', but not spaces, ':', '@{', '..' or control characters.
    !s.is_empty()
        && !s.contains("..")
        && !s.starts_with('/')
        && !s.ends_with('/')
        && s.chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, ':' | '~' | '^' | '?' | '*' | '[' | '\\' | '@'))
}

fn valid_selector(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('/')
        && !s.contains('\\')
        && s.split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
        && s.chars().all(|c| c.is_ascii_graphic() || c == ' ')
        && !s.starts_with(' ')
        && !s.ends_with(' ')
}

fn parse_civitai_number(what: &'static str, s: &str) -> Result<u64, IdError> {
    let err = || IdError::BadCivitaiNumber {
        what,
        value: s.to_string(),
    };
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
        return Err(err());
    }
    s.parse().map_err(|_| err())
}

impl FromStr for CatalogId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = s.strip_prefix("hf:") {
            let (repo_rev, selector) = match rest.split_once(':') {
                Some((a, b)) => (a, Some(b)),
                None => (rest, None),
            };
            let (repo, revision) = match repo_rev.split_once('@') {
                Some((a, b)) => (a, Some(b)),
                None => (repo_rev, None),
            };
            let ok_repo =
                matches!(repo.split_once('/'), Some((org, name)) if is_repo_part(org) && is_repo_part(name));
            if !ok_repo {
                return Err(IdError::BadRepo(repo.to_string()));
            }
            if let Some(rev) = revision
                && !valid_revision(rev)
            {
                return Err(IdError::BadRevision(rev.to_string()));
            }
            if let Some(sel) = selector
                && !valid_selector(sel)
            {
                return Err(IdError::BadSelector(sel.to_string()));
            }
            Ok(CatalogId::HuggingFace {
                repo: repo.to_string(),
                revision: revision.map(str::to_string),
                selector: selector.map(str::to_string),
            })
        } else if let Some(rest) = s.strip_prefix("civitai:") {
            let (model, version) = match rest.split_once('@') {
                Some((a, b)) => (a, Some(b)),
                None => (rest, None),
            };
            Ok(CatalogId::CivitAi {
                model: parse_civitai_number("model id", model)?,
                version: version
                    .map(|v| parse_civitai_number("version id", v))
                    .transpose()?,
            })
        } else if let Some(rest) = s.strip_prefix("file:") {
            if rest.is_empty() {
                return Err(IdError::EmptyPath);
            }
            Ok(CatalogId::File {
                path: rest.to_string(),
            })
        } else {
            Err(IdError::UnknownScheme(s.to_string()))
        }
    }
}

impl fmt::Display for CatalogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CatalogId::HuggingFace {
                repo,
                revision,
                selector,
            } => {
                write!(f, "hf:{repo}")?;
                if let Some(rev) = revision {
                    write!(f, "@{rev}")?;
                }
                if let Some(sel) = selector {
                    write!(f, ":{sel}")?;
                }
                Ok(())
            }
            CatalogId::CivitAi { model, version } => {
                write!(f, "civitai:{model}")?;
                if let Some(v) = version {
                    write!(f, "@{v}")?;
                }
                Ok(())
            }
            CatalogId::File { path } => write!(f, "file:{path}"),
        }
    }
}

impl Serialize for CatalogId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CatalogId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_every_documented_form() {
        let id: CatalogId = "hf:meta-llama/Llama-3.2-3B@main:Q4_K_M".parse().unwrap();
        assert_eq!(
            id,
            CatalogId::HuggingFace {
                repo: "meta-llama/Llama-3.2-3B".into(),
                revision: Some("main".into()),
                selector: Some("Q4_K_M".into())
            }
        );
        assert_eq!(id.selector(), Some(Selector::Quant("Q4_K_M")));
        let id: CatalogId = "hf:org/x:sub/model.gguf".parse().unwrap();
        assert_eq!(id.selector(), Some(Selector::File("sub/model.gguf")));
        assert_eq!(
            "civitai:4201@130072".parse::<CatalogId>().unwrap(),
            CatalogId::CivitAi {
                model: 4201,
                version: Some(130072)
            }
        );
        assert_eq!(
            "file:./models/x y.gguf".parse::<CatalogId>().unwrap(),
            CatalogId::File {
                path: "./models/x y.gguf".into()
            }
        );
        let pr: CatalogId = "hf:org/name@refs/pr/1".parse().unwrap();
        assert_eq!(pr.to_string(), "hf:org/name@refs/pr/1");
    }

    #[test]
    fn malformed_ids_name_the_bad_part() {
        let cases = [
            ("ollama:llama3", "unknown catalog id scheme"),
            ("llama3", "unknown catalog id scheme"),
            ("hf:noslash", "invalid HuggingFace repo"),
            ("hf:a/b/c", "invalid HuggingFace repo"),
            ("hf:a b/c", "invalid HuggingFace repo"),
            ("hf:/name", "invalid HuggingFace repo"),
            ("hf:../x", "invalid HuggingFace repo"),
            ("hf:org/name@", "invalid revision"),
            ("hf:org/name@a..b", "invalid revision"),
            ("hf:org/name:", "invalid file or quantization"),
            ("hf:org/name:../../etc/passwd", "invalid file or quantization"),
            ("hf:org/name:/abs.gguf", "invalid file or quantization"),
            ("civitai:", "invalid CivitAI model id"),
            ("civitai:12a", "invalid CivitAI model id"),
            ("civitai:0123", "invalid CivitAI model id"),
            ("civitai:-1", "invalid CivitAI model id"),
            ("civitai:1@", "invalid CivitAI version id"),
            ("civitai:99999999999999999999999", "invalid CivitAI model id"),
            ("file:", "empty path"),
        ];
        for (input, expected) in cases {
            let err = input.parse::<CatalogId>().expect_err(input).to_string();
            assert!(err.contains(expected), "{input}: {err}");
        }
    }

    #[test]
    fn serde_uses_the_string_form() {
        let id: CatalogId = "civitai:1@2".parse().unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"civitai:1@2\"");
        let back: CatalogId = serde_json::from_str("\"civitai:1@2\"").unwrap();
        assert_eq!(back, id);
        assert!(serde_json::from_str::<CatalogId>("\"nope:1\"").is_err());
    }

    fn repo_part() -> impl Strategy<Value = String> {
        "[A-Za-z0-9][A-Za-z0-9._-]{0,20}".prop_filter("not dots", |s| s != "." && s != "..")
    }

    fn any_id() -> impl Strategy<Value = CatalogId> {
        prop_oneof![
            (
                repo_part(),
                repo_part(),
                proptest::option::of("[A-Za-z0-9_-]{1,8}(/[A-Za-z0-9_-]{1,8}){0,2}"),
                proptest::option::of(prop_oneof![
                    "[A-Z0-9_]{1,8}",
                    "([a-z0-9_-]{1,8}/){0,2}[a-z0-9_-]{1,8}\\.(gguf|safetensors)"
                ])
            )
                .prop_map(|(o, n, revision, selector)| CatalogId::HuggingFace {
                    repo: format!("{o}/{n}"),
                    revision,
                    selector
                }),
            (any::<u64>(), proptest::option::of(any::<u64>()))
                .prop_map(|(model, version)| CatalogId::CivitAi { model, version }),
            ".{1,40}".prop_map(|path| CatalogId::File { path }),
        ]
    }

    proptest! {
        #[test]
        fn format_then_parse_is_identity(id in any_id()) {
            let text = id.to_string();
            let back: CatalogId = text.parse().unwrap();
            prop_assert_eq!(&back, &id);
            prop_assert_eq!(back.to_string(), text);
        }

        #[test]
        fn parse_never_panics_and_round_trips_what_it_accepts(s in "\\PC{0,60}") {
            if let Ok(id) = s.parse::<CatalogId>() {
                prop_assert_eq!(id.to_string(), s);
            }
        }

        #[test]
        fn hf_like_strings_round_trip_when_accepted(s in "hf:[a-z./:@_-]{0,24}") {
            if let Ok(id) = s.parse::<CatalogId>() {
                prop_assert_eq!(id.to_string(), s);
            }
        }
    }
}
