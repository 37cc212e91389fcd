//! Planned works made over the API, kept in the store's database (`planned_works`): the API
//! writes them through its own short-lived connection (WAL, busy timeout), readers list them
//! with the period's other data. Works from the config's `[[planned_works]]` are not stored.

use super::{StoreError, schema};
use crate::availability::planned::{PlannedWork, RawPlannedWork};
use rusqlite::{Connection, OpenFlags, params};
use std::path::Path;

/// Where a planned work comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Source {
    /// `[[planned_works]]` of the configuration (changed only there).
    Config,
    /// Made over the API or the web UI.
    Api,
}

/// A planned work with its id: `config-N` (the config's N-th entry, from 1) or `p-N`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub id: String,
    pub source: Source,
    pub raw: RawPlannedWork,
    pub work: PlannedWork,
    pub created_by: String,
    pub created_ms: i64,
}

/// The config's works as entries (validated already).
pub(crate) fn config_entries(raw: &[RawPlannedWork], works: &[PlannedWork]) -> Vec<Entry> {
    raw.iter()
        .zip(works)
        .enumerate()
        .map(|(i, (r, w))| Entry {
            id: format!("config-{}", i + 1),
            source: Source::Config,
            raw: r.clone(),
            work: w.clone(),
            created_by: String::new(),
            created_ms: 0,
        })
        .collect()
}

/// Most planned works kept over the API: each is checked against every host on every
/// report, so the list stays one a person can read.
pub(crate) const MAX_STORED: i64 = 1_000;

/// The works stored over the API, by id. A row that no longer validates (edited by hand) is
/// skipped with a warning. A store without the table (older than planned works) has none.
pub(crate) fn list(conn: &Connection) -> Result<Vec<Entry>, StoreError> {
    let has: i64 = conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'planned_works'",
        [],
        |r| r.get(0),
    )?;
    if has == 0 {
        return Ok(Vec::new());
    }
    let mut st = conn
        .prepare_cached("SELECT id, body, created_by, created_ms FROM planned_works ORDER BY id")?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, body, created_by, created_ms) = row?;
        let parsed = serde_json::from_str::<RawPlannedWork>(&body)
            .map_err(|e| e.to_string())
            .and_then(|raw| {
                raw.validate(0)
                    .map(|mut work| {
                        // Nothing before it was announced.
                        work.not_before = Some(created_ms);
                        (raw, work)
                    })
                    .map_err(|e| e.to_string())
            });
        match parsed {
            Ok((raw, work)) => out.push(Entry {
                id: format!("p-{id}"),
                source: Source::Api,
                raw,
                work,
                created_by,
                created_ms,
            }),
            Err(e) => tracing::warn!(id, error = %e, "a stored planned work is invalid; skipped"),
        }
    }
    Ok(out)
}

/// A writable connection to the store for the API (creates the table on an older store).
pub(crate) fn open_rw(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    schema::configure(&conn, true)?;
    schema::migrate(&conn)?;
    Ok(conn)
}

/// Stores a validated work; `None` when [`MAX_STORED`] are kept already.
pub(crate) fn insert(
    conn: &Connection,
    raw: &RawPlannedWork,
    created_by: &str,
    created_ms: i64,
) -> Result<Option<i64>, StoreError> {
    // Immediate: two admins inserting at once wait for each other (busy timeout) instead of
    // one failing on a stale snapshot after counting.
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
    let n: i64 = tx.query_row("SELECT COUNT(*) FROM planned_works", [], |r| r.get(0))?;
    if n >= MAX_STORED {
        return Ok(None);
    }
    let body = serde_json::to_string(raw).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    tx.execute(
        "INSERT INTO planned_works(body, created_by, created_ms) VALUES (?1, ?2, ?3)",
        params![body, created_by, created_ms],
    )?;
    let id = tx.last_insert_rowid();
    tx.commit()?;
    Ok(Some(id))
}

/// Deletes a stored work; false if there was none.
pub(crate) fn delete(conn: &Connection, id: i64) -> Result<bool, StoreError> {
    Ok(conn.execute("DELETE FROM planned_works WHERE id = ?1", [id])? > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawPlannedWork {
        RawPlannedWork {
            title: "Обновление МИС".into(),
            mo: Some("1.2.643.5.1.13.13.12.2.27.1".into()),
            days: vec!["sun".into()],
            start: Some("02:00".into()),
            end: Some("04:00".into()),
            tz: Some("Asia/Vladivostok".into()),
            ..RawPlannedWork::default()
        }
    }

    #[test]
    fn insert_list_delete_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dozor.db");
        let conn = open_rw(&path).unwrap();
        assert!(list(&conn).unwrap().is_empty());
        let id = insert(&conn, &raw(), "admin", 5).unwrap().unwrap();
        let l = list(&conn).unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].id, format!("p-{id}"));
        assert_eq!(l[0].raw, raw());
        assert_eq!(l[0].created_by, "admin");
        // A row edited by hand into nonsense is skipped, not an error.
        conn.execute(
            "INSERT INTO planned_works(body, created_ms) VALUES ('{\"title\":\"\"}', 0)",
            [],
        )
        .unwrap();
        assert_eq!(list(&conn).unwrap().len(), 1);
        assert!(delete(&conn, id).unwrap());
        assert!(!delete(&conn, id).unwrap());
        assert!(list(&conn).unwrap().is_empty());
    }

    #[test]
    fn the_list_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_rw(&dir.path().join("dozor.db")).unwrap();
        for _ in 0..MAX_STORED {
            assert!(insert(&conn, &raw(), "", 0).unwrap().is_some());
        }
        assert_eq!(insert(&conn, &raw(), "", 0).unwrap(), None);
    }
}
