use super::*;
use crate::test_entries::{at, image_entry, llm_entry};

fn open() -> (tempfile::TempDir, Catalog) {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::open(dir.path()).unwrap();
    (dir, catalog)
}

#[test]
fn upsert_get_remove_round_trip() {
    let (_dir, c) = open();
    let e = llm_entry("hf:org/a");
    c.upsert(&e).unwrap();
    assert_eq!(c.get(&e.id).unwrap(), Some(e.clone()));
    assert!(c.remove(&e.id).unwrap());
    assert!(!c.remove(&e.id).unwrap());
    assert_eq!(c.get(&e.id).unwrap(), None);
}

#[test]
fn replacing_an_entry_keeps_when_it_was_added() {
    let (_dir, c) = open();
    let mut e = llm_entry("hf:org/a");
    c.upsert(&e).unwrap();
    e.added_at = at(1_800_000_000);
    e.updated_at = at(1_800_000_000);
    e.name = "renamed".into();
    c.upsert(&e).unwrap();
    let stored = c.get(&e.id).unwrap().unwrap();
    assert_eq!(
        (stored.name.as_str(), stored.added_at),
        ("renamed", at(1_700_000_000))
    );
    assert_eq!(stored.updated_at, at(1_800_000_000));
}

#[test]
fn filters_and_search_select_the_right_entries() {
    let (_dir, c) = open();
    c.upsert(&llm_entry("hf:org/llama-chat")).unwrap();
    c.upsert(&image_entry("civitai:257749")).unwrap();
    let ids = |v: Vec<ModelEntry>| v.into_iter().map(|e| e.id.to_string()).collect::<Vec<_>>();
    let llms = Filter {
        model_type: Some(ModelType::Llm),
        ..Filter::default()
    };
    assert_eq!(ids(c.list(&llms).unwrap()), ["hf:org/llama-chat"]);
    let sdxl = Filter {
        base: Some(ImageBase::Sdxl),
        ..Filter::default()
    };
    assert_eq!(ids(c.list(&sdxl).unwrap()), ["civitai:257749"]);
    assert_eq!(ids(c.search("PONY").unwrap()), ["civitai:257749"]);
    assert_eq!(ids(c.search("llama chat").unwrap()), ["hf:org/llama-chat"]);
    assert!(c.search("100%").unwrap().is_empty());
}

#[test]
fn json_listing_is_the_contract_json_array() {
    let (_dir, c) = open();
    let a = llm_entry("hf:org/a");
    let b = image_entry("civitai:1");
    c.upsert(&a).unwrap();
    c.upsert(&b).unwrap();
    let mut out = Vec::new();
    c.write_json(&Filter::default(), None, &mut out).unwrap();
    let parsed: Vec<ModelEntry> = serde_json::from_slice(&out).unwrap();
    assert_eq!(parsed, vec![b, a]);
}

#[test]
fn update_changes_one_entry_in_place() {
    let (_dir, c) = open();
    let e = llm_entry("hf:org/a");
    c.upsert(&e).unwrap();
    let updated = c
        .update(&e.id, |e| {
            e.status = artifacts_contract::ArtifactStatus::Available
        })
        .unwrap()
        .unwrap();
    assert!(updated.status.is_available());
    assert!(c.get(&e.id).unwrap().unwrap().status.is_available());
    let missing: CatalogId = "hf:org/none".parse().unwrap();
    assert!(c.update(&missing, |_| {}).unwrap().is_none());
}

#[test]
fn reopening_keeps_entries_and_refuses_newer_schemas() {
    let dir = tempfile::tempdir().unwrap();
    Catalog::open(dir.path())
        .unwrap()
        .upsert(&llm_entry("hf:org/a"))
        .unwrap();
    assert_eq!(Catalog::open(dir.path()).unwrap().count().unwrap(), 1);
    let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(conn);
    let err = Catalog::open(dir.path()).err().unwrap().to_string();
    assert!(err.contains("newer than this build"), "{err}");
}

#[test]
fn rows_written_before_architecture_was_required_are_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let entry = llm_entry("hf:org/old");
    let mut old = serde_json::to_value(&entry).unwrap();
    old["config"].as_object_mut().unwrap().remove("architecture");
    // A version-1 database holding that row, as the previous release wrote it.
    let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
    conn.execute_batch(super::migrations::FIRST_SCHEMA).unwrap();
    conn.execute(
        "INSERT INTO entries VALUES (?1, 'llm', 'llama', NULL, 'huggingface', 'old', 'old', ?2, ?3, ?3)",
        rusqlite::params!["hf:org/old", old.to_string(), "2026-01-01T00:00:00Z"],
    )
    .unwrap();
    conn.pragma_update(None, "user_version", 1).unwrap();
    drop(conn);
    let read = Catalog::open(dir.path())
        .unwrap()
        .get(&entry.id)
        .unwrap()
        .unwrap();
    let config = read.config.as_llm().unwrap();
    assert_eq!(config.architecture, config.model_family.as_str());
}

#[test]
fn opening_waits_for_another_process_holding_a_new_database() {
    // Another process created the file and is writing to it before switching to WAL. SQLite
    // answers a journal-mode change that meets a pending writer with "busy" at once, without the
    // busy timeout (it could deadlock), so opening must retry by itself.
    let dir = tempfile::tempdir().unwrap();
    let other = Connection::open(dir.path().join(DB_FILE)).unwrap();
    other
        .execute_batch("CREATE TABLE t (x); BEGIN IMMEDIATE; INSERT INTO t VALUES (1);")
        .unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        other.execute_batch("COMMIT").unwrap();
    });
    let c = Catalog::open(dir.path()).unwrap();
    release.join().unwrap();
    c.upsert(&llm_entry("hf:org/a")).unwrap();
    assert_eq!(c.list(&Filter::default()).unwrap().len(), 1);
}
