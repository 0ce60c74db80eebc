//! Catalog ids as every binary reads them from a command line: `file:models/x.gguf` typed in one
//! folder and `file:/home/me/models/x.gguf` name the same entry, in `catalog` and in the workers alike,
//! because both go through [`normalize`] before the store is asked.

use std::path::Path;

use artifacts_contract::CatalogId;

/// The id the store keys an entry by: a `file:` path made absolute with links resolved (as `catalog
/// add` records it); other ids unchanged.
pub fn normalize(id: CatalogId) -> CatalogId {
    match id {
        CatalogId::File { path } => CatalogId::File {
            path: absolute(&path),
        },
        other => other,
    }
}

/// The canonical path of an existing file, else the path made absolute against the working folder (a
/// moved file keeps a name that says where it was looked for).
fn absolute(path: &str) -> String {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(Path::new(path)))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| path.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_and_absolute_file_ids_are_one_id() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.gguf");
        std::fs::write(&file, b"x").unwrap();
        let canonical = std::fs::canonicalize(&file).unwrap().display().to_string();
        let absolute: CatalogId = format!("file:{}", file.display()).parse().unwrap();
        let cwd = std::env::current_dir().unwrap();
        let relative_path = e2e_tests::relative_to(&file, &cwd);
        let relative: CatalogId = format!("file:{relative_path}").parse().unwrap();
        let want = CatalogId::File { path: canonical };
        assert_eq!(normalize(absolute), want);
        assert_eq!(normalize(relative), want, "{relative_path}");
        let hf: CatalogId = "hf:org/name".parse().unwrap();
        assert_eq!(normalize(hf.clone()), hf);
    }

    #[test]
    fn a_missing_file_is_made_absolute_all_the_same() {
        let id: CatalogId = "file:no/such/model.gguf".parse().unwrap();
        let CatalogId::File { path } = normalize(id) else {
            panic!("still a file id")
        };
        assert!(Path::new(&path).is_absolute(), "{path}");
        assert!(path.ends_with("no/such/model.gguf"), "{path}");
    }
}
