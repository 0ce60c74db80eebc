//! The one check every name from the network passes before it touches a path: HuggingFace commit
//! shas, revisions and file names, CivitAI file names and version ids. A source (or a tampered catalog
//! row) that answers `"sha": "../../../../x"` is refused here, with the name and the reason.

/// What a name is, which decides the rules it must meet and how the error calls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// A file path inside a model folder (`unet/model.safetensors`): relative, `/`-separated.
    FilePath,
    /// A single file name (CivitAI's files live flat in one folder).
    FileName,
    /// A revision the user or a source named (`main`, `refs/pr/1`): relative, `/`-separated.
    Revision,
    /// A commit sha, used as one folder name (`snapshots/SHA`).
    CommitSha,
    /// A CivitAI version id, used as one folder name.
    VersionId,
}

impl NameKind {
    fn label(self) -> &'static str {
        match self {
            NameKind::FilePath => "file path",
            NameKind::FileName => "file name",
            NameKind::Revision => "revision",
            NameKind::CommitSha => "commit sha",
            NameKind::VersionId => "version id",
        }
    }

    /// Names that become one path component, never several.
    fn single_component(self) -> bool {
        matches!(
            self,
            NameKind::FileName | NameKind::CommitSha | NameKind::VersionId
        )
    }
}

/// Longest accepted path component, in bytes (common file systems stop at 255).
const MAX_COMPONENT: usize = 255;

/// A name from a source that would not stay inside its folder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refusing the {kind} {value:?} from the source: {reason}", kind = kind.label())]
pub struct UnsafeName {
    /// What the name was.
    pub kind: NameKind,
    /// The name as received.
    pub value: String,
    /// Which rule it broke.
    pub reason: &'static str,
}

/// Checks a name from the network before it is joined into a path; the error names the rule broken.
pub fn check_name(kind: NameKind, value: &str) -> Result<(), UnsafeName> {
    let fail = |reason| {
        Err(UnsafeName {
            kind,
            value: value.to_string(),
            reason,
        })
    };
    if value.is_empty() {
        return fail("it is empty");
    }
    if value.contains('\0') {
        return fail("it contains a NUL byte");
    }
    if value.chars().any(char::is_control) {
        return fail("it contains a control character");
    }
    if value.contains('\\') {
        return fail("it contains a backslash");
    }
    if value.starts_with('/') {
        return fail("it is an absolute path");
    }
    if value.contains(':') {
        return fail("it contains ':' (a drive letter or a stream name)");
    }
    if kind.single_component() && value.contains('/') {
        return fail("it must be one name, not a path");
    }
    for part in value.split('/') {
        match part {
            "" => return fail("it has an empty path component"),
            "." => return fail("it has a '.' path component"),
            ".." => return fail("it climbs out of its folder with '..'"),
            p if p.len() > MAX_COMPONENT => return fail("a path component is longer than 255 bytes"),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_escape_or_confuse_a_path_are_refused_with_the_rule() {
        let cases = [
            (NameKind::CommitSha, "../../../../x", "one name"),
            (NameKind::FilePath, "../../../../x", "'..'"),
            (NameKind::FilePath, "a/../../x", "'..'"),
            (NameKind::FilePath, "/etc/passwd", "absolute"),
            (NameKind::FilePath, "C:\\x", "backslash"),
            (NameKind::FilePath, "C:x", "':'"),
            (NameKind::FilePath, "a//b", "empty path component"),
            (NameKind::FilePath, "a/", "empty path component"),
            (NameKind::FilePath, "./x", "'.'"),
            (NameKind::FilePath, "", "empty"),
            (NameKind::FilePath, "a\0b", "NUL"),
            (NameKind::FileName, "a\nb", "control"),
            (NameKind::FileName, "sub/x.safetensors", "one name"),
            (NameKind::Revision, "..", "'..'"),
            (NameKind::VersionId, "1/2", "one name"),
        ];
        for (kind, value, rule) in cases {
            let err = check_name(kind, value).unwrap_err();
            assert!(err.to_string().contains(rule), "{value:?}: {err}");
            assert!(err.to_string().contains(kind.label()), "{err}");
        }
        let long = "a".repeat(256);
        assert!(check_name(NameKind::FileName, &long).is_err());
    }

    #[test]
    fn ordinary_names_pass() {
        check_name(
            NameKind::FilePath,
            "unet/diffusion_pytorch_model.fp16.safetensors",
        )
        .unwrap();
        check_name(NameKind::Revision, "refs/pr/1").unwrap();
        check_name(NameKind::CommitSha, "0123456789abcdef0123456789abcdef01234567").unwrap();
        check_name(NameKind::VersionId, "130072").unwrap();
        check_name(NameKind::FileName, "..hidden.safetensors").unwrap();
    }
}
