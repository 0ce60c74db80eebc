//! The store: entries in an embedded SQLite database (`catalog.db` in the catalog home).
//!
//! WAL journaling, a busy timeout and immediate transactions let several `catalog` processes and workers
//! use one catalog at once without corrupting or losing entries. Each row keeps the entry's contract JSON
//! verbatim, so listing streams stored text instead of re-serializing.

mod migrations;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use artifacts_contract::{
    CatalogId, ImageBase, ModelEntry, ModelFamily, ModelSource, ModelType, TypedConfig,
};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

pub use migrations::SCHEMA_VERSION;

use crate::home::{HomeError, default_home};

/// The database file's name inside the catalog home.
pub const DB_FILE: &str = "catalog.db";

/// How long a writer waits for another process's transaction before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed (locked past the timeout, disk full, corrupt file).
    #[error("catalog database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The catalog home could not be created.
    #[error("cannot create the catalog home {path}: {source}")]
    Home {
        /// The folder.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// No home could be decided.
    #[error(transparent)]
    NoHome(#[from] HomeError),
    /// A stored row no longer parses as an entry.
    #[error("the stored entry {id} is unreadable: {message}")]
    Corrupt {
        /// The row's id.
        id: String,
        /// The parser's message.
        message: String,
    },
    /// The database was written by a newer version of the catalog.
    #[error(
        "the catalog database has schema version {found}, newer than this build's {known}; upgrade catalog"
    )]
    NewerSchema {
        /// The version found.
        found: u32,
        /// The newest version this build knows.
        known: u32,
    },
    /// Writing the listing failed (a closed pipe).
    #[error("cannot write the listing: {0}")]
    Output(#[from] std::io::Error),
}

/// Which entries to list; every field set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this model type.
    pub model_type: Option<ModelType>,
    /// Only this LLM family.
    pub family: Option<ModelFamily>,
    /// Only this image base.
    pub base: Option<ImageBase>,
    /// Only entries from this source.
    pub source: Option<ModelSource>,
}

/// The catalog: an open database in a catalog home.
pub struct Catalog {
    conn: Connection,
    home: PathBuf,
}

fn source_name(s: ModelSource) -> &'static str {
    match s {
        ModelSource::HuggingFace => "huggingface",
        ModelSource::CivitAi => "civitai",
        ModelSource::Local => "local",
    }
}

/// The lower-cased words `search` looks in: id, name, author, family or base, tags.
fn search_text(e: &ModelEntry) -> String {
    let (kind, tags) = match &e.config {
        TypedConfig::Llm(c) => (c.model_family.as_str().to_string(), c.tags.join(" ")),
        TypedConfig::Image(c) => (
            format!("{} {}", c.base, c.base_model.as_deref().unwrap_or("")),
            format!("{} {}", c.tags.join(" "), c.trigger_words.join(" ")),
        ),
        TypedConfig::Audio(c) => (String::new(), c.tags.join(" ")),
        TypedConfig::Video(c) => (c.base_model.clone().unwrap_or_default(), c.tags.join(" ")),
    };
    format!(
        "{} {} {} {} {} {}",
        e.id,
        e.name,
        e.author.as_deref().unwrap_or(""),
        e.model_type(),
        kind,
        tags
    )
    .to_lowercase()
}

fn parse_row(id: &str, json: &str) -> Result<ModelEntry, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt {
        id: id.to_string(),
        message: e.to_string(),
    })
}

/// Switches the database to WAL, which lets readers run while one process writes.
///
/// Changing the journal mode takes an exclusive lock without consulting the busy handler, so two
/// processes opening a new catalog at once can see SQLITE_BUSY here: retry for as long as any
/// other statement would wait.
fn enable_wal(conn: &Connection) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    loop {
        // journal_mode returns a row (the mode now in force).
        match conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(())) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && started.elapsed() < BUSY_TIMEOUT =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return Ok(other?),
        }
    }
}

impl Catalog {
    /// Opens (creating if needed) the catalog in `home`, migrating its schema.
    pub fn open(home: &Path) -> Result<Catalog, StoreError> {
        std::fs::create_dir_all(home).map_err(|source| StoreError::Home {
            path: home.to_path_buf(),
            source,
        })?;
        let mut conn = Connection::open(home.join(DB_FILE))?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        enable_wal(&conn)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Reads straight from the mapped file instead of copying pages: listings stream faster.
        conn.query_row("PRAGMA mmap_size = 268435456", [], |_| Ok(()))?;
        conn.pragma_update(None, "foreign_keys", true)?;
        migrations::migrate(&mut conn)?;
        Ok(Catalog {
            conn,
            home: home.to_path_buf(),
        })
    }

    /// Opens the catalog in [`default_home`] (`CATALOG_HOME`, else the platform data directory).
    pub fn open_default() -> Result<Catalog, StoreError> {
        Catalog::open(&default_home()?)
    }

    /// The catalog home, for messages and for the files kept there.
    pub fn home(&self) -> &Path {
        &self.home
    }

    fn immediate(&self) -> Result<Transaction<'_>, StoreError> {
        Ok(Transaction::new_unchecked(
            &self.conn,
            TransactionBehavior::Immediate,
        )?)
    }

    /// The entry with this id, if stored.
    pub fn get(&self, id: &CatalogId) -> Result<Option<ModelEntry>, StoreError> {
        let key = id.to_string();
        let json: Option<String> = self
            .conn
            .query_row("SELECT json FROM entries WHERE id = ?1", [&key], |r| r.get(0))
            .optional()?;
        json.map(|j| parse_row(&key, &j)).transpose()
    }

    fn select(&self, filter: &Filter, text: Option<&str>) -> (String, Vec<String>) {
        let mut clauses: Vec<&str> = Vec::new();
        let mut args: Vec<String> = Vec::new();
        if let Some(t) = filter.model_type {
            clauses.push("model_type = ?");
            args.push(t.as_str().into());
        }
        if let Some(f) = filter.family {
            clauses.push("family = ?");
            args.push(f.as_str().into());
        }
        if let Some(b) = filter.base {
            clauses.push("base = ?");
            args.push(b.as_str().into());
        }
        if let Some(s) = filter.source {
            clauses.push("source = ?");
            args.push(source_name(s).into());
        }
        for word in text.unwrap_or("").split_whitespace() {
            let escaped = word
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            clauses.push("search_text LIKE ? ESCAPE '\\'");
            args.push(format!("%{escaped}%"));
        }
        let mut sql = String::from("SELECT id, json FROM entries");
        if !clauses.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&clauses.join(" AND "));
        }
        sql.push_str(" ORDER BY id");
        (sql, args)
    }

    fn query(&self, filter: &Filter, text: Option<&str>) -> Result<Vec<ModelEntry>, StoreError> {
        let (sql, args) = self.select(filter, text);
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        rows.map(|row| {
            let (id, json) = row?;
            parse_row(&id, &json)
        })
        .collect()
    }

    /// Entries matching a filter, ordered by id.
    pub fn list(&self, filter: &Filter) -> Result<Vec<ModelEntry>, StoreError> {
        self.query(filter, None)
    }

    /// Entries whose id, name, author, family, base or tags contain every word of `text`.
    pub fn search(&self, text: &str) -> Result<Vec<ModelEntry>, StoreError> {
        self.query(&Filter::default(), Some(text))
    }

    /// Writes a JSON array of the matching entries, streaming the stored contract JSON as is.
    pub fn write_json(
        &self,
        filter: &Filter,
        text: Option<&str>,
        out: &mut impl Write,
    ) -> Result<(), StoreError> {
        let (sql, args) = self.select(filter, text);
        let mut stmt = self.conn.prepare(&sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(args.iter()))?;
        out.write_all(b"[")?;
        let mut first = true;
        while let Some(row) = rows.next()? {
            if !first {
                out.write_all(b",")?;
            }
            first = false;
            // Borrow the text in SQLite's buffer: no copy, no parse.
            let json = row.get_ref(1)?.as_bytes().map_err(rusqlite::Error::from)?;
            out.write_all(json)?;
        }
        out.write_all(b"]\n")?;
        Ok(())
    }

    /// Inserts or replaces an entry; a replaced entry keeps its original `added_at`.
    pub fn upsert(&self, entry: &ModelEntry) -> Result<(), StoreError> {
        let tx = self.immediate()?;
        let key = entry.id.to_string();
        let existing: Option<String> = tx
            .query_row("SELECT added_at FROM entries WHERE id = ?1", [&key], |r| r.get(0))
            .optional()?;
        let mut entry = entry.clone();
        if let Some(added) = existing.and_then(|a| a.parse().ok()) {
            entry.added_at = added;
        }
        write_row(&tx, &entry)?;
        tx.commit()?;
        Ok(())
    }

    /// Changes a stored entry in one transaction (read, change, write), so concurrent updates of the
    /// same entry do not overwrite each other; `None` when the entry is not stored.
    pub fn update(
        &self,
        id: &CatalogId,
        change: impl FnOnce(&mut ModelEntry),
    ) -> Result<Option<ModelEntry>, StoreError> {
        let tx = self.immediate()?;
        let key = id.to_string();
        let json: Option<String> = tx
            .query_row("SELECT json FROM entries WHERE id = ?1", [&key], |r| r.get(0))
            .optional()?;
        let Some(json) = json else {
            return Ok(None);
        };
        let mut entry = parse_row(&key, &json)?;
        change(&mut entry);
        write_row(&tx, &entry)?;
        tx.commit()?;
        Ok(Some(entry))
    }

    /// Removes an entry; false when it was not stored.
    pub fn remove(&self, id: &CatalogId) -> Result<bool, StoreError> {
        let tx = self.immediate()?;
        let n = tx.execute("DELETE FROM entries WHERE id = ?1", [id.to_string()])?;
        tx.commit()?;
        Ok(n > 0)
    }

    /// Number of entries.
    pub fn count(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM entries", [], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    /// Inserts many entries in one transaction (imports, benchmarks).
    pub fn upsert_many(&self, entries: &[ModelEntry]) -> Result<(), StoreError> {
        let tx = self.immediate()?;
        for e in entries {
            write_row(&tx, e)?;
        }
        tx.commit()?;
        Ok(())
    }
}

fn write_row(tx: &Transaction<'_>, e: &ModelEntry) -> Result<(), StoreError> {
    let json = serde_json::to_string(e).map_err(|err| StoreError::Corrupt {
        id: e.id.to_string(),
        message: err.to_string(),
    })?;
    let family = e.config.as_llm().map(|c| c.model_family.as_str());
    let base = e.config.as_image().map(|c| c.base.as_str());
    tx.execute(
        "INSERT INTO entries (id, model_type, family, base, source, name, search_text, json, added_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (id) DO UPDATE SET model_type = excluded.model_type, family = excluded.family,
           base = excluded.base, source = excluded.source, name = excluded.name,
           search_text = excluded.search_text, json = excluded.json, added_at = excluded.added_at,
           updated_at = excluded.updated_at",
        params![
            e.id.to_string(),
            e.model_type().as_str(),
            family,
            base,
            source_name(e.source),
            e.name,
            search_text(e),
            json,
            e.added_at.to_rfc3339(),
            e.updated_at.to_rfc3339(),
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests;
