//! `auth.db`: local users (Argon2id password hashes), browser sessions and API tokens (SHA-256
//! of their secrets), and the audit log. Shared by the running collector and the `user` /
//! `api-token` subcommands (SQLite serializes them; WAL, busy timeout).

use super::{Authenticator, Role, session_valid, token_valid};
use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Errors of `auth.db`.
#[derive(Debug, thiserror::Error)]
pub enum AuthDbError {
    /// SQLite failed.
    #[error("auth.db: {0}")]
    Sql(#[from] rusqlite::Error),
    /// Preparing the file failed.
    #[error("auth.db: {0}")]
    Io(#[from] std::io::Error),
    /// Hashing a password failed (never for a valid input).
    #[error("password hash: {0}")]
    Hash(String),
    /// No such user or token.
    #[error("not found: {0}")]
    NotFound(String),
    /// A user of that name exists already.
    #[error("user {0} exists already")]
    Exists(String),
    /// A name or password that cannot be used.
    #[error("{0}")]
    Invalid(String),
}

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = FULL;
CREATE TABLE IF NOT EXISTS users(
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions(
    id_sha256 TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    last_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS api_tokens(
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    expires_ms INTEGER,
    revoked_ms INTEGER
);
CREATE TABLE IF NOT EXISTS audit(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ms INTEGER NOT NULL,
    who TEXT NOT NULL,
    ip TEXT NOT NULL,
    action TEXT NOT NULL,
    status INTEGER NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
";

/// Path of the auth database in a data dir.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("auth.db")
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::fill(&mut b[..]);
    hex::encode(b)
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Hashes a password with Argon2id (the crate's default parameters) and a random salt.
fn hash_password(password: &str) -> Result<String, AuthDbError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthDbError::Hash(e.to_string()))
}

fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A hash no password matches, verified for unknown users so they take as long as known ones.
fn dummy_hash() -> &'static str {
    static H: OnceLock<String> = OnceLock::new();
    H.get_or_init(|| hash_password(&random_hex(16)).unwrap_or_default())
}

/// User names: 1–64 of letters, digits, `.`, `_`, `-`, `@`.
fn valid_user(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= 64
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
}

/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 10;

/// A user as listed (never the hash).
#[derive(Debug, Clone, Serialize)]
pub struct UserRow {
    pub name: String,
    pub role: Role,
    pub created_ms: i64,
}

/// An API token as listed (never the secret).
#[derive(Debug, Clone, Serialize)]
pub struct ApiTokenRow {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub created_ms: i64,
    pub created_by: String,
    pub expires_ms: Option<i64>,
    pub revoked: bool,
}

/// One audit entry.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRow {
    pub id: i64,
    pub ts_ms: i64,
    pub who: String,
    pub ip: String,
    pub action: String,
    pub status: u16,
    pub detail: String,
}

/// A live session found by its cookie.
#[derive(Debug, Clone)]
pub(crate) struct SessionRow {
    pub user: String,
    pub role: Role,
    pub csrf: String,
}

/// Prefix of API tokens, so they are recognisable in configs and secret scanners.
const TOKEN_PREFIX: &str = "dzt_";

/// The database.
pub struct AuthDb {
    conn: Connection,
}

fn role_of(s: &str) -> rusqlite::Result<Role> {
    Role::parse(s).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("role {s:?}").into(),
        )
    })
}

impl AuthDb {
    /// Opens (creating) the database with owner-only permissions.
    pub fn open(path: &Path) -> Result<AuthDb, AuthDbError> {
        crate::fsperm::private_db(path)?;
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(AuthDb { conn })
    }

    /// Adds a user with a password (checked for length here, hashed with Argon2id).
    pub fn add_user(
        &self,
        name: &str,
        role: Role,
        password: &str,
        now_ms: i64,
    ) -> Result<(), AuthDbError> {
        if !valid_user(name) {
            return Err(AuthDbError::Invalid(format!(
                "user name {name:?}: 1–64 letters, digits, . _ - @"
            )));
        }
        if password.chars().count() < MIN_PASSWORD_CHARS {
            return Err(AuthDbError::Invalid(format!(
                "password: at least {MIN_PASSWORD_CHARS} characters"
            )));
        }
        let hash = hash_password(password)?;
        let n = self.conn.execute(
            "INSERT OR IGNORE INTO users(name, role, password_hash, created_ms) VALUES (?1, ?2, ?3, ?4)",
            params![name, role.as_str(), hash, now_ms],
        )?;
        if n == 0 {
            return Err(AuthDbError::Exists(name.into()));
        }
        Ok(())
    }

    pub fn users(&self) -> Result<Vec<UserRow>, AuthDbError> {
        let mut st = self
            .conn
            .prepare("SELECT name, role, created_ms FROM users ORDER BY name")?;
        let rows = st.query_map([], |r| {
            Ok(UserRow {
                name: r.get(0)?,
                role: role_of(&r.get::<_, String>(1)?)?,
                created_ms: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Removes a user and ends their sessions.
    pub fn remove_user(&self, name: &str) -> Result<(), AuthDbError> {
        let n = self
            .conn
            .execute("DELETE FROM users WHERE name = ?1", params![name])?;
        if n == 0 {
            return Err(AuthDbError::NotFound(format!("user {name}")));
        }
        self.conn
            .execute("DELETE FROM sessions WHERE user = ?1", params![name])?;
        Ok(())
    }

    /// Changes a user's role (their sessions see it at the next request).
    pub fn set_role(&self, name: &str, role: Role) -> Result<(), AuthDbError> {
        let n = self.conn.execute(
            "UPDATE users SET role = ?2 WHERE name = ?1",
            params![name, role.as_str()],
        )?;
        if n == 0 {
            return Err(AuthDbError::NotFound(format!("user {name}")));
        }
        Ok(())
    }

    /// The (role, password hash) of a user.
    fn password_row(&self, name: &str) -> Result<Option<(String, String)>, AuthDbError> {
        Ok(self
            .conn
            .query_row(
                "SELECT role, password_hash FROM users WHERE name = ?1",
                params![name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// Starts a session; returns (cookie value, CSRF token). Only their hash and the CSRF token
    /// are stored.
    pub(crate) fn create_session(
        &self,
        user: &str,
        now_ms: i64,
    ) -> Result<(String, String), AuthDbError> {
        let id = random_hex(32);
        let csrf = random_hex(32);
        // Expired sessions go as new ones come.
        self.conn.execute(
            "DELETE FROM sessions WHERE last_ms < ?1 OR created_ms < ?2",
            params![
                now_ms - super::SESSION_IDLE_MS,
                now_ms - super::SESSION_ABSOLUTE_MS
            ],
        )?;
        self.conn.execute(
            "INSERT INTO sessions(id_sha256, user, csrf, created_ms, last_ms) VALUES (?1, ?2, ?3, ?4, ?4)",
            params![sha256_hex(&id), user, csrf, now_ms],
        )?;
        Ok((id, csrf))
    }

    /// The session of a cookie value, if valid now (and marks it used).
    pub(crate) fn session(
        &self,
        cookie: &str,
        now_ms: i64,
    ) -> Result<Option<SessionRow>, AuthDbError> {
        let key = sha256_hex(cookie);
        let row: Option<(String, String, String, i64, i64)> = self
            .conn
            .query_row(
                "SELECT s.user, u.role, s.csrf, s.created_ms, s.last_ms
                 FROM sessions s JOIN users u ON u.name = s.user WHERE s.id_sha256 = ?1",
                params![key],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        let Some((user, role, csrf, created, last)) = row else {
            return Ok(None);
        };
        if !session_valid(created, last, now_ms) {
            self.conn
                .execute("DELETE FROM sessions WHERE id_sha256 = ?1", params![key])?;
            return Ok(None);
        }
        // A write per minute at most, not per request.
        if now_ms - last > 60_000 {
            self.conn.execute(
                "UPDATE sessions SET last_ms = ?2 WHERE id_sha256 = ?1",
                params![key, now_ms],
            )?;
        }
        Ok(Role::parse(&role).map(|role| SessionRow { user, role, csrf }))
    }

    pub(crate) fn end_session(&self, cookie: &str) -> Result<(), AuthDbError> {
        self.conn.execute(
            "DELETE FROM sessions WHERE id_sha256 = ?1",
            params![sha256_hex(cookie)],
        )?;
        Ok(())
    }

    /// Creates an API token; returns its id and its text `dzt_ID_SECRET` (shown once).
    pub fn create_api_token(
        &self,
        name: &str,
        role: Role,
        expires_ms: Option<i64>,
        created_by: &str,
        now_ms: i64,
    ) -> Result<(String, String), AuthDbError> {
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(AuthDbError::Invalid(
                "token name: 1–100 characters, no control characters".into(),
            ));
        }
        let id = random_hex(4);
        let secret = random_hex(32);
        self.conn.execute(
            "INSERT INTO api_tokens(id, name, role, secret_sha256, created_ms, created_by, expires_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                id,
                name,
                role.as_str(),
                sha256_hex(&secret),
                now_ms,
                created_by,
                expires_ms
            ],
        )?;
        Ok((id.clone(), format!("{TOKEN_PREFIX}{id}_{secret}")))
    }

    pub fn api_tokens(&self) -> Result<Vec<ApiTokenRow>, AuthDbError> {
        let mut st = self.conn.prepare(
            "SELECT id, name, role, created_ms, created_by, expires_ms, revoked_ms IS NOT NULL
             FROM api_tokens ORDER BY created_ms",
        )?;
        let rows = st.query_map([], |r| {
            Ok(ApiTokenRow {
                id: r.get(0)?,
                name: r.get(1)?,
                role: role_of(&r.get::<_, String>(2)?)?,
                created_ms: r.get(3)?,
                created_by: r.get(4)?,
                expires_ms: r.get(5)?,
                revoked: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn revoke_api_token(&self, id: &str, now_ms: i64) -> Result<(), AuthDbError> {
        let n = self.conn.execute(
            "UPDATE api_tokens SET revoked_ms = ?2 WHERE id = ?1 AND revoked_ms IS NULL",
            params![id, now_ms],
        )?;
        if n == 0 {
            return Err(AuthDbError::NotFound(format!("api token {id}")));
        }
        Ok(())
    }

    /// The (name, role) of a bearer token, if valid now.
    pub(crate) fn check_api_token(
        &self,
        token: &str,
        now_ms: i64,
    ) -> Result<Option<(String, Role)>, AuthDbError> {
        let Some((id, secret)) = token
            .strip_prefix(TOKEN_PREFIX)
            .and_then(|t| t.split_once('_'))
        else {
            return Ok(None);
        };
        let row: Option<(String, String, String, Option<i64>, bool)> = self
            .conn
            .query_row(
                "SELECT name, role, secret_sha256, expires_ms, revoked_ms IS NOT NULL
                 FROM api_tokens WHERE id = ?1",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        Ok(row.and_then(|(name, role, hash, expires, revoked)| {
            // Comparing hashes of a 256-bit secret: timing reveals nothing usable.
            (hash == sha256_hex(secret) && token_valid(expires, revoked, now_ms))
                .then(|| Role::parse(&role).map(|r| (name, r)))
                .flatten()
        }))
    }

    /// Appends an audit entry.
    pub(crate) fn audit(
        &self,
        ts_ms: i64,
        who: &str,
        ip: &str,
        action: &str,
        status: u16,
        detail: &str,
    ) -> Result<(), AuthDbError> {
        self.conn.execute(
            "INSERT INTO audit(ts_ms, who, ip, action, status, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![ts_ms, who, ip, action, status, detail],
        )?;
        Ok(())
    }

    /// The newest `limit` audit entries, newest first.
    pub fn audit_log(&self, limit: u32) -> Result<Vec<AuditRow>, AuthDbError> {
        let mut st = self.conn.prepare(
            "SELECT id, ts_ms, who, ip, action, status, detail FROM audit ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = st.query_map(params![limit], |r| {
            Ok(AuditRow {
                id: r.get(0)?,
                ts_ms: r.get(1)?,
                who: r.get(2)?,
                ip: r.get(3)?,
                action: r.get(4)?,
                status: r.get(5)?,
                detail: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Local users of `auth.db`.
pub(crate) struct LocalAuthenticator(pub std::sync::Arc<Mutex<AuthDb>>);

impl Authenticator for LocalAuthenticator {
    fn authenticate(&self, user: &str, password: &str) -> Result<Option<Role>, AuthDbError> {
        // Only the lookup holds the lock; the Argon2 work does not.
        let row = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .password_row(user)?;
        Ok(match row {
            Some((role, hash)) => verify_password(password, &hash)
                .then(|| Role::parse(&role))
                .flatten(),
            None => {
                verify_password(password, dummy_hash());
                None
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, AuthDb) {
        let dir = tempfile::tempdir().unwrap();
        let db = AuthDb::open(&path(dir.path())).unwrap();
        (dir, db)
    }

    #[test]
    fn passwords_are_argon2id_and_checked() {
        let (_d, db) = db();
        let db = std::sync::Arc::new(Mutex::new(db));
        let auth = LocalAuthenticator(db.clone());
        db.lock()
            .unwrap()
            .add_user("ivanov", Role::Operator, "correct horse", 1)
            .unwrap();
        let hash: String = db
            .lock()
            .unwrap()
            .conn
            .query_row("SELECT password_hash FROM users", [], |r| r.get(0))
            .unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert_eq!(
            auth.authenticate("ivanov", "correct horse").unwrap(),
            Some(Role::Operator)
        );
        assert_eq!(auth.authenticate("ivanov", "wrong horse").unwrap(), None);
        assert_eq!(auth.authenticate("nobody", "correct horse").unwrap(), None);
        assert!(matches!(
            db.lock()
                .unwrap()
                .add_user("ivanov", Role::Admin, "another one!", 2),
            Err(AuthDbError::Exists(_))
        ));
        assert!(matches!(
            db.lock()
                .unwrap()
                .add_user("petrov", Role::Admin, "short", 2),
            Err(AuthDbError::Invalid(_))
        ));
        assert!(matches!(
            db.lock()
                .unwrap()
                .add_user("a b", Role::Admin, "long enough pw", 2),
            Err(AuthDbError::Invalid(_))
        ));
    }

    #[test]
    fn sessions_expire_with_the_injected_clock_and_follow_the_role() {
        let (_d, db) = db();
        db.add_user("ivanov", Role::Viewer, "correct horse", 0)
            .unwrap();
        let t0 = 1_000_000;
        let (cookie, csrf) = db.create_session("ivanov", t0).unwrap();
        let s = db.session(&cookie, t0 + 1000).unwrap().unwrap();
        assert_eq!(
            (s.user.as_str(), s.role, s.csrf.as_str()),
            ("ivanov", Role::Viewer, csrf.as_str())
        );
        db.set_role("ivanov", Role::Admin).unwrap();
        assert_eq!(
            db.session(&cookie, t0 + 2000).unwrap().unwrap().role,
            Role::Admin
        );
        assert!(db.session("forged", t0).unwrap().is_none());
        // Idle too long.
        assert!(
            db.session(&cookie, t0 + super::super::SESSION_IDLE_MS + 2000)
                .unwrap()
                .is_none()
        );
        // Logout and removal end sessions.
        let (c2, _) = db.create_session("ivanov", t0).unwrap();
        db.end_session(&c2).unwrap();
        assert!(db.session(&c2, t0).unwrap().is_none());
        let (c3, _) = db.create_session("ivanov", t0).unwrap();
        db.remove_user("ivanov").unwrap();
        assert!(db.session(&c3, t0).unwrap().is_none());
    }

    #[test]
    fn api_tokens_check_secret_expiry_and_revocation() {
        let (_d, db) = db();
        let (id, tok) = db
            .create_api_token("grafana", Role::Viewer, Some(10_000), "admin", 0)
            .unwrap();
        assert!(tok.starts_with("dzt_"));
        assert_eq!(
            db.check_api_token(&tok, 5).unwrap(),
            Some(("grafana".into(), Role::Viewer))
        );
        assert_eq!(db.check_api_token(&tok, 10_000).unwrap(), None);
        let forged = format!("dzt_{id}_{}", "0".repeat(64));
        assert_eq!(db.check_api_token(&forged, 5).unwrap(), None);
        assert_eq!(db.check_api_token("garbage", 5).unwrap(), None);
        db.revoke_api_token(&id, 6).unwrap();
        assert_eq!(db.check_api_token(&tok, 7).unwrap(), None);
        assert!(db.api_tokens().unwrap()[0].revoked);
    }

    #[cfg(unix)]
    #[test]
    fn the_file_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let (d, _db) = db();
        let mode = std::fs::metadata(path(d.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
