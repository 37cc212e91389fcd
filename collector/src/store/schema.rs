//! The SQLite schema of the embedded store (`dozor.db`). See `docs/storage.md`.

use super::StoreError;
use rusqlite::Connection;

/// Schema version in `PRAGMA user_version`.
pub(super) const VERSION: i64 = 4;

/// Columns added in version 2 (issue 13): time off in working hours and the days it happened
/// per host, and usage days per МО and category (`docs/indicators.md`).
const V2_COLUMNS: [(&str, &str); 8] = [
    ("host_day", "off_w"),
    ("host_day", "off_d"),
    ("host_month", "off_w"),
    ("host_month", "off_d"),
    ("mo_day", "ws_d"),
    ("mo_day", "any_d"),
    ("mo_month", "ws_d"),
    ("mo_month", "any_d"),
];

const SCHEMA: &str = r#"
-- Version 4: batches committed but not yet applied to the tables below (one row per batch,
-- `store::sqlite::journal`'s encoding); applied and deleted about once a second, and at start.
CREATE TABLE IF NOT EXISTS journal(
    id INTEGER PRIMARY KEY,
    body BLOB NOT NULL
);

CREATE TABLE IF NOT EXISTS meta(
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS mos(
    id INTEGER PRIMARY KEY,
    oid TEXT NOT NULL UNIQUE,
    -- fingerprint of the working-hours calendar the daily aggregates were computed with
    wfp INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS hosts(
    id INTEGER PRIMARY KEY,
    mo_id INTEGER NOT NULL,
    host TEXT NOT NULL,
    role INTEGER,               -- NULL unknown, 0 workstation, 1 server
    site TEXT NOT NULL DEFAULT '',
    hostname TEXT NOT NULL DEFAULT '',
    interval_s INTEGER NOT NULL DEFAULT 30,
    first_ms INTEGER NOT NULL,
    inventory TEXT,             -- the last birth body, JSON
    UNIQUE(mo_id, host)
);

CREATE TABLE IF NOT EXISTS targets(
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    cat INTEGER NOT NULL,
    UNIQUE(name, cat)
);

-- "Up" segments of a host: first..last message, and the gap after it until next_ms.
CREATE TABLE IF NOT EXISTS segs(
    id INTEGER PRIMARY KEY,
    host_id INTEGER NOT NULL,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL,
    boot_id INTEGER,
    boot_ms INTEGER,
    cause INTEGER NOT NULL,     -- GapCause of [end_ms, next_ms)
    next_ms INTEGER             -- NULL: latest segment
);
CREATE INDEX IF NOT EXISTS segs_host ON segs(host_id, start_ms);
CREATE INDEX IF NOT EXISTS segs_start ON segs(start_ms);

-- offline (1) / lost (3) seen for a host.
CREATE TABLE IF NOT EXISTS markers(
    host_id INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    PRIMARY KEY(host_id, at_ms, kind)
) WITHOUT ROWID;

-- Reachability intervals of (host, target); never cross a region midnight.
CREATE TABLE IF NOT EXISTS probes(
    id INTEGER PRIMARY KEY,
    host_id INTEGER NOT NULL,
    target_id INTEGER NOT NULL,
    cat INTEGER NOT NULL,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL,
    ok INTEGER NOT NULL,
    err INTEGER NOT NULL,       -- 0 none, else ErrorClass index + 1
    closed INTEGER NOT NULL,
    n INTEGER NOT NULL,
    lat_sum INTEGER NOT NULL,
    lat_n INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS probes_host ON probes(host_id, start_ms);
CREATE INDEX IF NOT EXISTS probes_start ON probes(start_ms);

-- Collector runs; the time between runs is unknown.
CREATE TABLE IF NOT EXISTS runs(
    id INTEGER PRIMARY KEY,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL,    -- last time the collector was known alive
    stopped INTEGER NOT NULL    -- 1 after a clean stop or once a crash was detected
);

-- 5-minute resource rollups; percent values in hundredths.
CREATE TABLE IF NOT EXISTS rollups(
    host_id INTEGER NOT NULL,
    bucket INTEGER NOT NULL,    -- Unix time / 300 s
    n INTEGER NOT NULL,
    cpu_min INTEGER NOT NULL, cpu_sum INTEGER NOT NULL, cpu_max INTEGER NOT NULL,
    mem_min INTEGER NOT NULL, mem_sum INTEGER NOT NULL, mem_max INTEGER NOT NULL,
    disk_min INTEGER NOT NULL, disk_sum INTEGER NOT NULL, disk_max INTEGER NOT NULL,
    -- Bucket first: the current buckets of all hosts are appended together.
    PRIMARY KEY(bucket, host_id)
) WITHOUT ROWID;
-- One host's history (the host page, /api/v1/hosts/{mo}/{host}/history) without scanning
-- every host's buckets of the window.
CREATE INDEX IF NOT EXISTS rollups_host ON rollups(host_id, bucket);

CREATE TABLE IF NOT EXISTS delivery(
    inst TEXT PRIMARY KEY,
    mo TEXT NOT NULL,
    host TEXT NOT NULL,
    contiguous INTEGER NOT NULL,
    above TEXT NOT NULL,
    stored INTEGER NOT NULL DEFAULT 0,
    refused INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- Daily (region time zone) and monthly aggregates; flags = active | reached << 1 | probed << 13.
CREATE TABLE IF NOT EXISTS host_day(
    day INTEGER NOT NULL, host_id INTEGER NOT NULL,
    up INTEGER NOT NULL, down INTEGER NOT NULL, unk INTEGER NOT NULL,
    up_w INTEGER NOT NULL, down_w INTEGER NOT NULL, unk_w INTEGER NOT NULL,
    off_w INTEGER NOT NULL DEFAULT 0, off_d INTEGER NOT NULL DEFAULT 0,
    flags INTEGER NOT NULL,
    PRIMARY KEY(day, host_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS host_month(
    month INTEGER NOT NULL, host_id INTEGER NOT NULL,
    up INTEGER NOT NULL, down INTEGER NOT NULL, unk INTEGER NOT NULL,
    up_w INTEGER NOT NULL, down_w INTEGER NOT NULL, unk_w INTEGER NOT NULL,
    off_w INTEGER NOT NULL DEFAULT 0, off_d INTEGER NOT NULL DEFAULT 0,
    flags INTEGER NOT NULL,
    PRIMARY KEY(month, host_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS mo_day(
    day INTEGER NOT NULL, mo_id INTEGER NOT NULL, cat INTEGER NOT NULL,
    reach INTEGER NOT NULL, unreach INTEGER NOT NULL,
    ws_d INTEGER NOT NULL DEFAULT 0, any_d INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY(day, mo_id, cat)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS mo_month(
    month INTEGER NOT NULL, mo_id INTEGER NOT NULL, cat INTEGER NOT NULL,
    reach INTEGER NOT NULL, unreach INTEGER NOT NULL,
    ws_d INTEGER NOT NULL DEFAULT 0, any_d INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY(month, mo_id, cat)
) WITHOUT ROWID;

-- Central resources' own figures per finished day (docs/indicators.md, "Resource and
-- channel"): one row per category the МО observed, and each observing МО's channel to it.
-- They need every МО's spans at the same instants, so they are not per host or МО.
CREATE TABLE IF NOT EXISTS res_day(
    day INTEGER NOT NULL, cat INTEGER NOT NULL,
    up INTEGER NOT NULL, down INTEGER NOT NULL, unk INTEGER NOT NULL,
    PRIMARY KEY(day, cat)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS res_chan(
    day INTEGER NOT NULL, cat INTEGER NOT NULL, mo_id INTEGER NOT NULL,
    ok INTEGER NOT NULL, fail INTEGER NOT NULL,
    PRIMARY KEY(day, cat, mo_id)
) WITHOUT ROWID;

-- Materialized days whose history changed since (late data): recomputed by maintenance,
-- computed from the raw intervals by readers meanwhile.
CREATE TABLE IF NOT EXISTS dirty_host(
    host_id INTEGER NOT NULL, day INTEGER NOT NULL, PRIMARY KEY(host_id, day)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dirty_mo(
    mo_id INTEGER NOT NULL, day INTEGER NOT NULL, PRIMARY KEY(mo_id, day)
) WITHOUT ROWID;
-- Days of res_day/res_chan to recompute: marked with every dirty МО-day.
CREATE TABLE IF NOT EXISTS dirty_res(
    day INTEGER PRIMARY KEY
) WITHOUT ROWID;

-- МО whose working calendar changed: their hosts' aggregated days [from_day, to_day) are
-- recomputed by maintenance (from_day advances), read from the raw intervals meanwhile.
CREATE TABLE IF NOT EXISTS stale_mo(
    mo_id INTEGER PRIMARY KEY,
    from_day INTEGER NOT NULL,
    to_day INTEGER NOT NULL
);

-- Planned works made over the API (`[[planned_works]]` of the config are not stored): the
-- body is the work as given (`RawPlannedWork`, JSON), validated again when read.
CREATE TABLE IF NOT EXISTS planned_works(
    id INTEGER PRIMARY KEY,
    body TEXT NOT NULL,
    created_by TEXT NOT NULL DEFAULT '',
    created_ms INTEGER NOT NULL
);

-- Line protocol waiting for the InfluxDB sink.
CREATE TABLE IF NOT EXISTS outbox(
    id INTEGER PRIMARY KEY,
    created_ms INTEGER NOT NULL,
    lines INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    body TEXT NOT NULL
);
"#;

/// Opens the settings every connection needs.
pub(crate) fn configure(conn: &Connection, sync_full: bool) -> Result<(), StoreError> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        if sync_full { "FULL" } else { "NORMAL" },
    )?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    conn.pragma_update(None, "cache_size", -65_536)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(())
}

/// Creates or checks the schema, in one immediate transaction: a crash half-way through an
/// upgrade leaves the store as it was (SQLite's DDL is transactional), and two openers (the
/// store thread, the API's planned-works connection) do not upgrade at once.
pub(crate) fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
    migrate_in(&tx)?;
    tx.commit()?;
    Ok(())
}

fn migrate_in(conn: &Connection) -> Result<(), StoreError> {
    let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if v > VERSION {
        return Err(StoreError::Corrupt(format!(
            "store schema version {v} is newer than this collector's {VERSION}"
        )));
    }
    if v == 1 {
        // Version 1 → 2: add the columns, and mark every МО's calendar as changed so that
        // maintenance recomputes their aggregated days with the new figures.
        for (table, col) in V2_COLUMNS {
            conn.execute_batch(&format!(
                "ALTER TABLE {table} ADD COLUMN {col} INTEGER NOT NULL DEFAULT 0"
            ))?;
        }
        conn.execute_batch("UPDATE mos SET wfp = 0")?;
    }
    conn.execute_batch(SCHEMA)?;
    if (1..3).contains(&v) {
        // Version 2 → 3: resources' days are new; every aggregated day is computed for them
        // by maintenance and read from the raw intervals until then.
        conn.execute_batch(
            "INSERT OR IGNORE INTO dirty_res(day)
             SELECT day FROM host_day UNION SELECT day FROM mo_day",
        )?;
    }
    conn.pragma_update(None, "user_version", VERSION)?;
    Ok(())
}

pub(super) fn meta_get(conn: &Connection, key: &str) -> Result<Option<i64>, StoreError> {
    use rusqlite::OptionalExtension;
    Ok(conn
        .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?)
}

pub(super) fn meta_set(conn: &Connection, key: &str, value: i64) -> Result<(), StoreError> {
    conn.prepare_cached("INSERT OR REPLACE INTO meta(key, value) VALUES (?1, ?2)")?
        .execute(rusqlite::params![key, value])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upgrade that fails half-way leaves the store as it was: no column of the failed
    /// upgrade added, the version unchanged; the next attempt can still succeed.
    #[test]
    fn a_failed_upgrade_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let c = Connection::open(dir.path().join("s.db")).unwrap();
        migrate(&c).unwrap();
        // Make a version-1 store whose last column is still there: the upgrade's last ALTER
        // fails ("duplicate column").
        for (table, col) in &V2_COLUMNS[..7] {
            c.execute_batch(&format!("ALTER TABLE {table} DROP COLUMN {col}"))
                .unwrap();
        }
        c.pragma_update(None, "user_version", 1).unwrap();
        assert!(migrate(&c).is_err());
        let v: i64 = c
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, 1);
        let has = |t: &str, col: &str| -> bool {
            c.prepare(&format!("SELECT {col} FROM {t} LIMIT 0")).is_ok()
        };
        assert!(!has("host_day", "off_w"), "the first ALTER was rolled back");
        // Repaired by hand (the column dropped), the upgrade goes through.
        c.execute_batch("ALTER TABLE mo_month DROP COLUMN any_d")
            .unwrap();
        migrate(&c).unwrap();
        assert!(has("host_day", "off_w") && has("mo_month", "any_d"));
    }
}
