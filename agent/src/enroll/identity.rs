//! `identity.json` in the data directory: the МО, host id and secret the collector issued at
//! enrollment. Written once, atomically, readable by the agent's user only; its presence is
//! what "enrolled" means.

use std::io::Write;
use std::path::{Path, PathBuf};

use dozor_proto::auth::Secret;
use dozor_proto::valid_id;
use serde::{Deserialize, Serialize};

use crate::os;

/// File name of the identity inside the data directory.
pub const FILE_NAME: &str = "identity.json";
const TMP_NAME: &str = "identity.json.tmp";

/// An enrolled identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub mo: String,
    pub host: String,
    pub secret: Secret,
    /// When the collector issued it, Unix milliseconds (agent clock).
    pub enrolled_at_ms: i64,
}

/// The file's JSON.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    mo: String,
    host: String,
    secret: String,
    enrolled_at_ms: i64,
}

/// Why the identity file could not be used. The agent refuses to start on any of these rather
/// than silently enrolling again (the token is usually used up) or running unsigned.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The file exists but cannot be read, or its permissions cannot be fixed.
    #[error("{path}: cannot read the identity file: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not a valid identity.
    #[error("{path}: not a valid identity file ({reason}); remove it and enroll again")]
    Invalid { path: PathBuf, reason: String },
    /// The identity could not be written.
    #[error("{path}: cannot write the identity file: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Loads `dir/identity.json`; `None` when there is none. A file that group or others may read
/// is first restricted to its owner (0600), with a warning.
pub fn load(dir: &Path) -> Result<Option<Credentials>, IdentityError> {
    let path = dir.join(FILE_NAME);
    let read_err = |source| IdentityError::Read {
        path: path.clone(),
        source,
    };
    if !path.exists() {
        return Ok(None);
    }
    if let Some(mode) = os::ensure_private(&path).map_err(read_err)? {
        tracing::warn!(
            path = %path.display(),
            mode = %format!("{mode:o}"),
            "the identity file was readable by other users; restricted to 0600 (if others \
             could log in here, ask the region to revoke this host and enroll again)"
        );
    }
    let bytes = std::fs::read(&path).map_err(read_err)?;
    let invalid = |reason: String| IdentityError::Invalid {
        path: path.clone(),
        reason,
    };
    let s: Stored = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
    if !valid_id(&s.mo) {
        return Err(invalid("mo is not a valid id".into()));
    }
    if !valid_id(&s.host) {
        return Err(invalid("host is not a valid id".into()));
    }
    let secret =
        Secret::from_hex(&s.secret).ok_or_else(|| invalid("secret is not 64 hex digits".into()))?;
    Ok(Some(Credentials {
        mo: s.mo,
        host: s.host,
        secret,
        enrolled_at_ms: s.enrolled_at_ms,
    }))
}

/// Writes `dir/identity.json` atomically: a fresh 0600 temporary file, fsync, rename, fsync of
/// the directory. A power cut leaves either no identity or the whole one.
pub fn save(dir: &Path, c: &Credentials) -> Result<(), IdentityError> {
    let path = dir.join(FILE_NAME);
    let tmp = dir.join(TMP_NAME);
    let write_err = |source| IdentityError::Write {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(write_err)?;
    // A leftover from an interrupted write; it may have other permissions, so never reuse it.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(write_err(e)),
        _ => {}
    }
    let json = serde_json::to_vec_pretty(&Stored {
        mo: c.mo.clone(),
        host: c.host.clone(),
        secret: c.secret.to_hex(),
        enrolled_at_ms: c.enrolled_at_ms,
    })
    // Invariant: a struct of strings and an integer always serializes.
    .expect("identity serializes");
    let mut f = os::create_private(&tmp).map_err(write_err)?;
    f.write_all(&json).map_err(write_err)?;
    f.write_all(b"\n").map_err(write_err)?;
    f.sync_all().map_err(write_err)?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(write_err)?;
    os::sync_dir(dir).map_err(write_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        Credentials {
            mo: "1.2.643.5.1.13.13.12.2.27.1234".into(),
            host: "pc-01".into(),
            secret: Secret([7; 32]),
            enrolled_at_ms: 1_750_000_000_000,
        }
    }

    #[test]
    fn round_trip_and_absence() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(load(dir.path()).expect("no file is fine"), None);
        let sub = dir.path().join("new");
        save(&sub, &creds()).expect("save creates the directory");
        assert_eq!(load(&sub).expect("load"), Some(creds()));
        assert!(!sub.join(TMP_NAME).exists());
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(sub.join(FILE_NAME)).expect("read"))
                .expect("json");
        assert_eq!(json["secret"], "07".repeat(32));
        assert_eq!(json["host"], "pc-01");
    }

    #[cfg(unix)]
    #[test]
    fn written_0600_and_loosened_files_are_restricted() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        // A stale temporary file with loose permissions is not reused.
        std::fs::write(dir.path().join(TMP_NAME), "junk").expect("write");
        std::fs::set_permissions(
            dir.path().join(TMP_NAME),
            std::fs::Permissions::from_mode(0o644),
        )
        .expect("chmod");
        save(dir.path(), &creds()).expect("save");
        let path = dir.path().join(FILE_NAME);
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(load(dir.path()).expect("load"), Some(creds()));
        assert_eq!(mode(&path), 0o600, "fixed on load");
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let check = |text: &str, needle: &str| {
            std::fs::write(dir.path().join(FILE_NAME), text).expect("write");
            let err = load(dir.path()).expect_err(text).to_string();
            assert!(err.contains(needle), "{err}");
            assert!(err.contains("enroll again"), "{err}");
        };
        check("{", "EOF");
        check(
            r#"{"mo":"1 2","host":"h","secret":"00","enrolled_at_ms":0}"#,
            "mo",
        );
        check(
            r#"{"mo":"1.2","host":"h/1","secret":"00","enrolled_at_ms":0}"#,
            "host",
        );
        check(
            r#"{"mo":"1.2","host":"h","secret":"00","enrolled_at_ms":0}"#,
            "secret",
        );
    }
}
