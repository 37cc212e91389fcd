//! The incident journal: open and recently resolved incidents and API silences in a small
//! SQLite database (`{data_dir}/incidents.db`), so that a restart neither re-pages nor
//! forgets. One writer: the task that owns the engine.

use super::engine::Track;
use super::model::Silence;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;

/// Journal errors.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JournalError {
    /// SQLite failed (open, schema, write).
    #[error("incident journal: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored row could not be encoded or decoded.
    #[error("incident journal: bad row: {0}")]
    Json(#[from] serde_json::Error),
    /// The file's permissions could not be made owner-only.
    #[error("incident journal: {0}")]
    Io(#[from] std::io::Error),
}

/// What a previous run left.
#[derive(Debug, Default)]
pub(crate) struct Restored {
    pub tracks: Vec<Track>,
    pub silences: Vec<Silence>,
    pub next_id: u64,
}

/// The journal.
pub(crate) struct Journal {
    db: Connection,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").finish_non_exhaustive()
    }
}

impl Journal {
    /// Opens (creating) `incidents.db` in `data_dir`.
    pub(crate) fn open(data_dir: &Path) -> Result<Journal, JournalError> {
        let path = data_dir.join("incidents.db");
        crate::fsperm::private_db(&path)?;
        let db = Connection::open(path)?;
        Journal::init(db)
    }

    fn init(db: Connection) -> Result<Journal, JournalError> {
        db.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS incident (
                 id INTEGER PRIMARY KEY,
                 state TEXT NOT NULL,
                 updated_ms INTEGER NOT NULL,
                 body TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS silence (
                 id TEXT PRIMARY KEY,
                 body TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS meta (
                 k TEXT PRIMARY KEY,
                 v INTEGER NOT NULL
             );",
        )?;
        Ok(Journal { db })
    }

    /// Everything stored. Rows that no longer decode are skipped with a warning.
    pub(crate) fn load(&self) -> Result<Restored, JournalError> {
        let mut out = Restored::default();
        let mut st = self
            .db
            .prepare("SELECT id, body FROM incident ORDER BY id")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (id, body) = row?;
            match serde_json::from_str::<Track>(&body) {
                Ok(t) => out.tracks.push(t),
                Err(e) => tracing::warn!(id, error = %e, "skipping undecodable incident"),
            }
        }
        let mut st = self
            .db
            .prepare("SELECT id, body FROM silence ORDER BY id")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (id, body) = row?;
            match serde_json::from_str::<Silence>(&body) {
                Ok(s) => out.silences.push(s),
                Err(e) => tracing::warn!(id, error = %e, "skipping undecodable silence"),
            }
        }
        out.next_id = self
            .db
            .query_row("SELECT v FROM meta WHERE k = 'next_id'", [], |r| {
                r.get::<_, i64>(0)
            })
            .optional()?
            .map_or(1, |v| u64::try_from(v).unwrap_or(1));
        Ok(out)
    }

    /// Writes changed incidents, deletes removed ones and records the next id, atomically.
    pub(crate) fn save(
        &mut self,
        tracks: &[&Track],
        removed: &[u64],
        next_id: u64,
    ) -> Result<(), JournalError> {
        let tx = self.db.transaction()?;
        {
            let mut up = tx.prepare_cached(
                "INSERT INTO incident (id, state, updated_ms, body) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(id) DO UPDATE SET state = ?2, updated_ms = ?3, body = ?4",
            )?;
            for t in tracks {
                up.execute(params![
                    i64::try_from(t.inc.id).unwrap_or(i64::MAX),
                    t.inc.state.as_str(),
                    t.inc.updated_ms,
                    serde_json::to_string(t)?
                ])?;
            }
            let mut del = tx.prepare_cached("DELETE FROM incident WHERE id = ?1")?;
            for &id in removed {
                del.execute(params![i64::try_from(id).unwrap_or(i64::MAX)])?;
            }
            tx.execute(
                "INSERT INTO meta (k, v) VALUES ('next_id', ?1)
                 ON CONFLICT(k) DO UPDATE SET v = ?1",
                params![i64::try_from(next_id).unwrap_or(i64::MAX)],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Replaces the stored API silences.
    pub(crate) fn save_silences(&mut self, silences: &[Silence]) -> Result<(), JournalError> {
        let tx = self.db.transaction()?;
        tx.execute("DELETE FROM silence", [])?;
        {
            let mut ins = tx.prepare_cached("INSERT INTO silence (id, body) VALUES (?1, ?2)")?;
            for s in silences {
                ins.execute(params![s.id, serde_json::to_string(s)?])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::model::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn track(id: u64, state: IncidentState) -> Track {
        let inc = Incident {
            id,
            key: format!("server_lost/mo1/srv-{id}"),
            rule: Rule::ServerLost,
            severity: Severity::Critical,
            state,
            cause: Cause::HostSilent,
            title: "Сервер srv (МО «Поликлиника») не на связи".into(),
            mos: vec![MoRef {
                oid: "mo1".into(),
                name: "Поликлиника".into(),
            }],
            mo_count: 1,
            hosts: vec![format!("srv-{id}")],
            host_count: 1,
            host_refs: Vec::new(),
            target: None,
            category: None,
            value: None,
            started_ms: 1,
            episode_started_ms: 1,
            fired_ms: Some(2),
            resolved_ms: None,
            updated_ms: 2,
            reopened: 0,
            repeat: 0,
            silenced_by: None,
            planned_over: None,
            merged_into: None,
            merged: Vec::new(),
            evidence: None,
            notify: true,
            ack: None,
        };
        Track {
            inc,
            notified: Some(IncidentState::Firing),
            notified_cause: Cause::HostSilent,
            sends: vec![2],
            clear_since: None,
            affected: BTreeSet::from([format!("srv-{id}")]),
            evidence: BTreeMap::new(),
            alive: BTreeSet::new(),
            guard_ms: 0,
            notified_firings: 0,
            firing_since_ms: None,
        }
    }

    #[test]
    fn round_trips_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut j = Journal::open(dir.path()).unwrap();
            let (a, b) = (
                track(1, IncidentState::Firing),
                track(2, IncidentState::Resolved),
            );
            j.save(&[&a, &b], &[], 3).unwrap();
            let mut a2 = a.clone();
            a2.inc.state = IncidentState::Resolved;
            j.save(&[&a2], &[2], 7).unwrap();
            j.save_silences(&[Silence {
                id: "s-1".into(),
                matcher: SilenceMatch {
                    mo: Some("mo1".into()),
                    ..SilenceMatch::default()
                },
                starts_ms: 0,
                ends_ms: 10,
                comment: "плановые работы".into(),
                created_by: "api".into(),
                created_ms: 1,
            }])
            .unwrap();
        }
        let j = Journal::open(dir.path()).unwrap();
        let r = j.load().unwrap();
        assert_eq!(r.next_id, 7);
        assert_eq!(r.tracks.len(), 1);
        assert_eq!(r.tracks[0].inc.state, IncidentState::Resolved);
        assert_eq!(r.tracks[0].notified, Some(IncidentState::Firing));
        assert_eq!(r.silences.len(), 1);
        assert_eq!(r.silences[0].comment, "плановые работы");
    }

    #[test]
    fn incidents_written_before_acks_and_host_names_still_load() {
        // A row as journals wrote it before `ack`, `host_refs` and `alive` existed.
        let mut old = serde_json::to_value(track(7, IncidentState::Firing)).unwrap();
        let inc = old["inc"].as_object_mut().unwrap();
        assert!(inc.remove("ack").is_some());
        inc.remove("host_refs");
        assert!(old.as_object_mut().unwrap().remove("alive").is_some());
        let t: Track = serde_json::from_value(old).unwrap();
        assert_eq!(t.inc.ack, None);
        assert!(t.inc.host_refs.is_empty() && t.alive.is_empty());
    }
}
