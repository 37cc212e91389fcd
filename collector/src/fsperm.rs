//! Leaf: owner-only files. The collector's databases hold the region's history and incidents;
//! like the data dir (0700) they are not for other local users: 0600 on Unix.

use std::path::Path;

/// Makes the SQLite database at `path` owner-only before it is opened: creates it empty with
/// mode 0600 when missing, else takes group and other bits off it and its `-wal`/`-shm` (SQLite
/// gives new `-wal`/`-shm` files the database's mode, so a private database keeps them private).
pub(crate) fn private_db(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        if !path.exists() {
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)?;
        }
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            let p = Path::new(&p);
            if let Ok(m) = std::fs::metadata(p)
                && m.permissions().mode() & 0o077 != 0
            {
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600))?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn new_and_existing_databases_become_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("fresh.db");
        private_db(&fresh).unwrap();
        let c = rusqlite::Connection::open(&fresh).unwrap();
        c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1);")
            .unwrap();
        for s in ["fresh.db", "fresh.db-wal", "fresh.db-shm"] {
            assert_eq!(mode(&dir.path().join(s)), 0o600, "{s}");
        }
        drop(c);
        let old = dir.path().join("old.db");
        for s in ["old.db", "old.db-wal", "old.db-shm"] {
            let p = dir.path().join(s);
            std::fs::write(&p, b"").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        private_db(&old).unwrap();
        for s in ["old.db", "old.db-wal", "old.db-shm"] {
            assert_eq!(mode(&dir.path().join(s)), 0o600, "{s}");
        }
    }
}
