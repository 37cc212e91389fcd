//! `identity.db`: enrollment tokens and issued identities, in SQLite beside the store. The
//! collector and the `token`/`agent` subcommands open it at once (WAL); the collector notices
//! other writers' changes through `PRAGMA data_version` and reloads.

use super::{Agent, Registry, Token, TokenError, allocate_host, format_token, parse_token};
use dozor_proto::auth::{Secret, sha256_hex};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::{Path, PathBuf};

/// Errors of the identity database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite failed.
    #[error("identity.db: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The token presented cannot enroll (see [`TokenError`]).
    #[error("enrollment token refused: {}", .0.as_str())]
    Token(TokenError),
    /// The named token or identity does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// Preparing the file failed.
    #[error("identity.db: {0}")]
    Io(#[from] std::io::Error),
}

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = FULL;
CREATE TABLE IF NOT EXISTS tokens(
    id TEXT PRIMARY KEY,
    mo TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    max_uses INTEGER,
    used INTEGER NOT NULL DEFAULT 0,
    expires_ms INTEGER,
    revoked_ms INTEGER,
    created_ms INTEGER NOT NULL,
    note TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS agents(
    mo TEXT NOT NULL,
    host TEXT NOT NULL,
    secret TEXT NOT NULL,
    token_id TEXT NOT NULL,
    hostname TEXT NOT NULL DEFAULT '',
    machine_id TEXT NOT NULL DEFAULT '',
    enrolled_ms INTEGER NOT NULL,
    revoked_ms INTEGER,
    PRIMARY KEY(mo, host)
) WITHOUT ROWID;
";

/// Path of the identity database in a data dir.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("identity.db")
}

/// What an agent sends to enroll.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    pub token: String,
    #[serde(default)]
    pub host_hint: String,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub machine_id: Option<String>,
    #[serde(default)]
    pub role: Option<String>,
}

/// An issued identity.
#[derive(Debug, Clone)]
pub struct Issued {
    pub mo: String,
    pub host: String,
    pub secret: Secret,
}

/// A token listed for an admin.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenRow {
    pub id: String,
    pub mo: String,
    pub max_uses: Option<u32>,
    pub used: u32,
    pub expires_ms: Option<i64>,
    pub revoked: bool,
    pub note: String,
}

/// An identity listed for an admin.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AgentRow {
    pub mo: String,
    pub host: String,
    pub token_id: String,
    pub hostname: String,
    pub enrolled_ms: i64,
    pub revoked: bool,
}

/// The open database.
pub struct IdentityDb {
    conn: Connection,
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::fill(&mut b[..]);
    hex::encode(b)
}

impl IdentityDb {
    /// Opens (creating) the database with owner-only permissions.
    pub fn open(path: &Path) -> Result<IdentityDb, DbError> {
        crate::fsperm::private_db(path)?;
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(IdentityDb { conn })
    }

    /// SQLite's counter of changes made by other connections.
    pub fn data_version(&self) -> Result<i64, DbError> {
        Ok(self
            .conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))?)
    }

    /// Every identity, for the ingest task and the broker gateway.
    pub fn load(&self) -> Result<Registry, DbError> {
        let mut st = self
            .conn
            .prepare("SELECT mo, host, secret, revoked_ms IS NOT NULL FROM agents")?;
        let mut r = Registry::default();
        let rows = st.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, bool>(3)?,
            ))
        })?;
        for row in rows {
            let (mo, host, secret, revoked) = row?;
            let Some(secret) = Secret::from_hex(&secret) else {
                tracing::warn!(%mo, %host, "identity.db: unreadable secret; identity skipped");
                continue;
            };
            let mut a = Agent::new(&mo, &host, &secret);
            a.revoked = revoked;
            r.insert(a);
        }
        Ok(r)
    }

    /// Creates a token for `mo`; returns its id and its text form (shown once, never stored).
    pub fn create_token(
        &self,
        mo: &str,
        max_uses: Option<u32>,
        expires_ms: Option<i64>,
        note: &str,
        now_ms: i64,
    ) -> Result<(String, String), DbError> {
        let id = random_hex(4);
        let secret = random_hex(32);
        self.conn.execute(
            "INSERT INTO tokens(id, mo, secret_sha256, max_uses, expires_ms, created_ms, note)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                id,
                mo,
                sha256_hex(secret.as_bytes()),
                max_uses,
                expires_ms,
                now_ms,
                note
            ],
        )?;
        Ok((id.clone(), format_token(&id, &secret)))
    }

    pub fn revoke_token(&self, id: &str, now_ms: i64) -> Result<(), DbError> {
        let n = self.conn.execute(
            "UPDATE tokens SET revoked_ms = ?2 WHERE id = ?1 AND revoked_ms IS NULL",
            params![id, now_ms],
        )?;
        if n == 0 {
            return Err(DbError::NotFound(format!("token {id}")));
        }
        Ok(())
    }

    /// Revokes an identity; its sessions are closed and its messages refused from then on.
    pub fn revoke_agent(&self, mo: &str, host: &str, now_ms: i64) -> Result<(), DbError> {
        let n = self.conn.execute(
            "UPDATE agents SET revoked_ms = ?3 WHERE mo = ?1 AND host = ?2 AND revoked_ms IS NULL",
            params![mo, host, now_ms],
        )?;
        if n == 0 {
            return Err(DbError::NotFound(format!("agent {mo}/{host}")));
        }
        Ok(())
    }

    pub fn tokens(&self) -> Result<Vec<TokenRow>, DbError> {
        let mut st = self.conn.prepare(
            "SELECT id, mo, max_uses, used, expires_ms, revoked_ms IS NOT NULL, note
             FROM tokens ORDER BY created_ms",
        )?;
        let rows = st.query_map([], |r| {
            Ok(TokenRow {
                id: r.get(0)?,
                mo: r.get(1)?,
                max_uses: r.get(2)?,
                used: r.get(3)?,
                expires_ms: r.get(4)?,
                revoked: r.get(5)?,
                note: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn agents(&self) -> Result<Vec<AgentRow>, DbError> {
        let mut st = self.conn.prepare(
            "SELECT mo, host, token_id, hostname, enrolled_ms, revoked_ms IS NOT NULL
             FROM agents ORDER BY mo, host",
        )?;
        let rows = st.query_map([], |r| {
            Ok(AgentRow {
                mo: r.get(0)?,
                host: r.get(1)?,
                token_id: r.get(2)?,
                hostname: r.get(3)?,
                enrolled_ms: r.get(4)?,
                revoked: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Enrolls an agent with a token: checks the token, issues a new identity in the token's
    /// МО, counts the use, all in one transaction.
    pub fn enroll(&mut self, req: &EnrollRequest, now_ms: i64) -> Result<Issued, DbError> {
        let (id, secret) = parse_token(&req.token).ok_or(DbError::Token(TokenError::Unknown))?;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let token = tx
            .query_row(
                "SELECT id, mo, secret_sha256, max_uses, used, expires_ms, revoked_ms IS NOT NULL
                 FROM tokens WHERE id = ?1",
                [id],
                |r| {
                    Ok(Token {
                        id: r.get(0)?,
                        mo: r.get(1)?,
                        secret_sha256: r.get(2)?,
                        max_uses: r.get(3)?,
                        used: r.get(4)?,
                        expires_ms: r.get(5)?,
                        revoked: r.get(6)?,
                    })
                },
            )
            .optional()?
            .ok_or(DbError::Token(TokenError::Unknown))?;
        token.check(secret, now_ms).map_err(DbError::Token)?;
        let host = {
            let mut taken = tx.prepare("SELECT 1 FROM agents WHERE mo = ?1 AND host = ?2")?;
            let random = random_hex(8);
            let mut is_taken = |h: &str| taken.exists(params![token.mo, h]).unwrap_or(true);
            let mut host = allocate_host(&req.host_hint, &mut is_taken, &random);
            // A collision of the random suffix too: draw again (vanishingly rare).
            while is_taken(&host) {
                host = allocate_host(&req.host_hint, |_| true, &random_hex(8));
            }
            host
        };
        let secret = Secret({
            let mut b = [0u8; 32];
            rand::fill(&mut b);
            b
        });
        tx.execute(
            "INSERT INTO agents(mo, host, secret, token_id, hostname, machine_id, enrolled_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                token.mo,
                host,
                secret.to_hex(),
                token.id,
                req.hostname.chars().take(256).collect::<String>(),
                req.machine_id
                    .as_deref()
                    .unwrap_or("")
                    .chars()
                    .take(128)
                    .collect::<String>(),
                now_ms
            ],
        )?;
        tx.execute(
            "UPDATE tokens SET used = used + 1 WHERE id = ?1",
            [&token.id],
        )?;
        tx.commit()?;
        Ok(Issued {
            mo: token.mo,
            host,
            secret,
        })
    }

    /// Issues an identity directly, without a token (the demo's simulated hosts).
    pub fn issue(&self, mo: &str, host: &str, now_ms: i64) -> Result<Issued, DbError> {
        let existing: Option<String> = self
            .conn
            .query_row(
                "SELECT secret FROM agents WHERE mo = ?1 AND host = ?2 AND revoked_ms IS NULL",
                params![mo, host],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(secret) = existing.as_deref().and_then(Secret::from_hex) {
            return Ok(Issued {
                mo: mo.into(),
                host: host.into(),
                secret,
            });
        }
        let secret = Secret({
            let mut b = [0u8; 32];
            rand::fill(&mut b);
            b
        });
        self.conn.execute(
            "INSERT OR REPLACE INTO agents(mo, host, secret, token_id, enrolled_ms)
             VALUES (?1, ?2, ?3, '-', ?4)",
            params![mo, host, secret.to_hex(), now_ms],
        )?;
        Ok(Issued {
            mo: mo.into(),
            host: host.into(),
            secret,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(token: &str, hint: &str) -> EnrollRequest {
        EnrollRequest {
            token: token.into(),
            host_hint: hint.into(),
            ..EnrollRequest::default()
        }
    }

    #[test]
    fn enroll_issues_distinct_identities_and_counts_uses() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = IdentityDb::open(&path(dir.path())).unwrap();
        let (_, token) = db.create_token("1.2.3", Some(2), None, "", 0).unwrap();
        let a = db.enroll(&req(&token, "pc-1"), 1).unwrap();
        let b = db.enroll(&req(&token, "pc-1"), 2).unwrap();
        assert_eq!((a.mo.as_str(), a.host.as_str()), ("1.2.3", "pc-1"));
        assert!(b.host.starts_with("pc-1-"), "{}", b.host);
        assert_ne!(a.secret, b.secret);
        assert!(matches!(
            db.enroll(&req(&token, "pc-3"), 3),
            Err(DbError::Token(TokenError::UsedUp))
        ));
        let r = db.load().unwrap();
        assert_eq!(r.len(), 2);
        assert!(r.key_for("1.2.3", &b.host).is_ok());
        db.revoke_agent("1.2.3", "pc-1", 4).unwrap();
        assert!(db.load().unwrap().key_for("1.2.3", "pc-1").is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path(dir.path()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "identity.db must be owner-only: {mode:o}");
        }
    }

    #[test]
    fn expired_revoked_and_forged_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = IdentityDb::open(&path(dir.path())).unwrap();
        let (_, t1) = db.create_token("m", None, Some(100), "", 0).unwrap();
        assert!(matches!(
            db.enroll(&req(&t1, "h"), 100),
            Err(DbError::Token(TokenError::Expired))
        ));
        let (id2, t2) = db.create_token("m", None, None, "", 0).unwrap();
        db.revoke_token(&id2, 1).unwrap();
        assert!(matches!(
            db.enroll(&req(&t2, "h"), 2),
            Err(DbError::Token(TokenError::Revoked))
        ));
        let forged = format!("dz1.{id2}.{}", "0".repeat(64));
        assert!(matches!(
            db.enroll(&req(&forged, "h"), 2),
            Err(DbError::Token(TokenError::Unknown))
        ));
        assert!(db.agents().unwrap().is_empty());
    }
}
