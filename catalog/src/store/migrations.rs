//! Versioned schema migrations, applied in order; `PRAGMA user_version` records how many have run.
//!
//! Append a migration to add a column or an index; never edit one that has shipped.

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// The migrations; index `i` brings the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[FIRST_SCHEMA, ARCHITECTURE_REQUIRED];

/// 1: one row per entry. `json` is the entry exactly as the contract serializes it (what `list --json`
/// streams without re-parsing); the other columns are copies for filtering and searching.
pub(crate) const FIRST_SCHEMA: &str = "CREATE TABLE entries (
        id TEXT PRIMARY KEY NOT NULL,
        model_type TEXT NOT NULL,
        family TEXT,
        base TEXT,
        source TEXT NOT NULL,
        name TEXT NOT NULL,
        search_text TEXT NOT NULL,
        json TEXT NOT NULL,
        added_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX entries_by_type ON entries (model_type, id);";

/// 2: an LLM entry's `architecture` became required (it was left out when the source named none): older
/// rows get their family's name, as ingestion now writes it.
const ARCHITECTURE_REQUIRED: &str = "UPDATE entries
    SET json = json_set(json, '$.config.architecture',
                        COALESCE(json_extract(json, '$.config.modelFamily'), 'other'))
    WHERE model_type = 'llm' AND json_extract(json, '$.config.architecture') IS NULL;";

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Brings the database to [`SCHEMA_VERSION`], in one immediate transaction so that two processes
/// opening a new catalog at once do not both migrate.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version = |c: &Connection| c.query_row("PRAGMA user_version", [], |r| r.get::<_, u32>(0));
    if version(conn)? == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found = version(&tx)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            found,
            known: SCHEMA_VERSION,
        });
    }
    for sql in &MIGRATIONS[found as usize..] {
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}
