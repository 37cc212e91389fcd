//! The central probe configuration on the agent: the targets the collector's `[probes]` gives
//! this host arrive as a retained `cfg` message on its own downstream topic. An enrolled agent
//! applies one only if it carries this host's MAC (like an `ack`) and a version higher than
//! the one applied; the last one applied is kept in `central.json` beside `identity.json`,
//! loaded at start and handed to the probe task without a restart. Local `[[probe]]`s are
//! probed too and win over a central target of the same name (a local pin).
//!
//! [`Central`] decides without I/O; [`run`] is the task that receives, persists and publishes
//! the effective target list.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dozor_proto::auth::{self, AuthError, MacKey};
use dozor_proto::{CfgTarget, Limits, Reject, decode_cfg};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{MAX_PROBES, RawProbe, validate_probe};
use crate::probe::Target;

/// File name of the applied central configuration inside the data directory.
pub const FILE_NAME: &str = "central.json";
const TMP_NAME: &str = "central.json.tmp";
/// Refused messages are logged at most this often per reason.
const REFUSE_LOG_EVERY: Duration = Duration::from_secs(60);

/// What `central.json` holds: the last configuration applied, as received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stored {
    pub version: u64,
    /// When it was applied, Unix milliseconds (agent clock).
    pub applied_at_ms: i64,
    pub targets: Vec<CfgTarget>,
}

/// Why a `cfg` message was refused. `as_str` is the label in logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Enrolled, and the message carries no MAC.
    #[error("not signed")]
    Unsigned,
    /// Enrolled, and the MAC is not this host's (forged, or for another host).
    #[error("signature does not match this host's key")]
    BadMac,
    /// Not a valid `cfg` for this host (shape, version, identity, values).
    #[error("invalid: {}", .0.as_str())]
    Invalid(Reject),
    /// A target this agent cannot probe (the message names which and why).
    #[error("target {name}: {reason}")]
    BadTarget { name: String, reason: String },
}

impl Refused {
    pub fn as_str(&self) -> &'static str {
        match self {
            Refused::Unsigned => "unsigned",
            Refused::BadMac => "bad_mac",
            Refused::Invalid(r) => r.as_str(),
            Refused::BadTarget { .. } => "bad_target",
        }
    }
}

/// What to do with an authentic, valid message.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Newer than what is applied: apply and keep it.
    Apply {
        stored: Stored,
        targets: Vec<Target>,
    },
    /// Not newer (the retained copy, delivered again on every reconnect): nothing to do.
    Stale { applied: u64, got: u64 },
}

/// Counts since start, logged with every refusal and application.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub applied: u64,
    pub stale: u64,
    pub refused: u64,
}

/// The I/O-free decision on each received `cfg`.
#[derive(Debug, Clone)]
pub struct Central {
    topic: String,
    key: Option<MacKey>,
    default_timeout_ms: u32,
    applied: u64,
    pub counts: Counts,
}

impl Central {
    /// `topic`: this host's `cfg` topic; `key`: its message key when enrolled (then only
    /// signed messages count); `applied`: the version loaded from `central.json` (0: none).
    pub fn new(
        topic: String,
        key: Option<MacKey>,
        default_timeout_ms: u32,
        applied: u64,
    ) -> Central {
        Central {
            topic,
            key,
            default_timeout_ms,
            applied,
            counts: Counts::default(),
        }
    }

    pub fn applied_version(&self) -> u64 {
        self.applied
    }

    /// Authenticates, decodes and checks one payload received on this host's `cfg` topic.
    pub fn decide(&mut self, payload: &[u8], now_ms: i64) -> Result<Decision, Refused> {
        let r = self.check(payload, now_ms);
        match &r {
            Ok(Decision::Apply { stored, .. }) => {
                self.applied = stored.version;
                self.counts.applied += 1;
            }
            Ok(Decision::Stale { .. }) => self.counts.stale += 1,
            Err(_) => self.counts.refused += 1,
        }
        r
    }

    fn check(&self, payload: &[u8], now_ms: i64) -> Result<Decision, Refused> {
        let unsigned = match &self.key {
            // Enrolled: only the collector, which holds this host's key, configures it; a
            // forgery from another PC on a misconfigured broker must not redirect the probes.
            Some(key) => auth::verify(key, &self.topic, payload).map_err(|e| match e {
                AuthError::Unsigned => Refused::Unsigned,
                AuthError::BadMac => Refused::BadMac,
            })?,
            // Not enrolled (an open-mode collector): nothing to verify with; a MAC is stripped.
            None => match auth::split(payload) {
                Some(s) => s.unsigned,
                None => payload.to_vec(),
            },
        };
        let cfg = decode_cfg(&self.topic, &unsigned, &Limits::DEFAULT).map_err(Refused::Invalid)?;
        if cfg.version <= self.applied {
            return Ok(Decision::Stale {
                applied: self.applied,
                got: cfg.version,
            });
        }
        let targets = to_targets(&cfg.targets, self.default_timeout_ms)?;
        Ok(Decision::Apply {
            stored: Stored {
                version: cfg.version,
                applied_at_ms: now_ms,
                targets: cfg.targets,
            },
            targets,
        })
    }
}

/// Central targets as probe targets, by the rules of a local `[[probe]]`.
pub fn to_targets(wire: &[CfgTarget], default_timeout_ms: u32) -> Result<Vec<Target>, Refused> {
    wire.iter()
        .map(|t| {
            validate_probe(
                RawProbe {
                    name: t.name.clone(),
                    category: Some(t.category.as_str().to_owned()),
                    url: t.url.clone(),
                    timeout_ms: t.timeout_ms,
                },
                default_timeout_ms,
            )
            .map_err(|(field, reason)| Refused::BadTarget {
                name: t.name.clone(),
                reason: format!(
                    "{}{reason}",
                    field.map(|f| format!("{f}: ")).unwrap_or_default()
                ),
            })
        })
        .collect()
}

/// What the probe task probes: every local target, then the central ones no local target
/// names (local pins win), at most [`MAX_PROBES`].
pub fn effective(local: &[Target], central: &[Target]) -> Vec<Target> {
    let mut out = local.to_vec();
    for t in central {
        if out.len() >= MAX_PROBES {
            tracing::warn!(
                max = MAX_PROBES,
                "more probe targets than an agent takes; the last central ones are left out"
            );
            break;
        }
        if !out.iter().any(|o| o.name == t.name) {
            out.push(t.clone());
        }
    }
    out
}

/// Why `central.json` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a central configuration ({reason})")]
    Invalid { path: PathBuf, reason: String },
}

/// Loads `dir/central.json`; `None` when there is none.
pub fn load(dir: &Path) -> Result<Option<Stored>, StoreError> {
    let path = dir.join(FILE_NAME);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StoreError::Io { path, source }),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StoreError::Invalid {
            path,
            reason: e.to_string(),
        })
}

/// Writes `dir/central.json` atomically (temporary file, fsync, rename).
pub fn save(dir: &Path, s: &Stored) -> Result<(), StoreError> {
    let path = dir.join(FILE_NAME);
    let tmp = dir.join(TMP_NAME);
    let io = |source| StoreError::Io {
        path: path.clone(),
        source,
    };
    let json = serde_json::to_vec_pretty(s).unwrap_or_default();
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(&json).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(io)
}

/// Loads what was applied before (a broken file is logged and ignored: the collector's
/// retained message brings the configuration again). Returns the version and the targets.
pub fn load_applied(dir: &Path, default_timeout_ms: u32) -> (u64, Vec<Target>) {
    match load(dir) {
        Ok(Some(s)) => match to_targets(&s.targets, default_timeout_ms) {
            Ok(t) => (s.version, t),
            Err(e) => {
                tracing::warn!(error = %e, "central.json holds a target this agent cannot probe; ignored");
                (0, Vec::new())
            }
        },
        Ok(None) => (0, Vec::new()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot use the saved central configuration; waiting for the collector's");
            (0, Vec::new())
        }
    }
}

/// Receives `cfg` payloads from the publisher, applies newer ones: saves them, then hands the
/// effective target list to the probe task. Runs until `stop`.
pub async fn run(
    mut central: Central,
    local: Vec<Target>,
    mut rx: mpsc::Receiver<Vec<u8>>,
    targets: watch::Sender<Vec<Target>>,
    dir: PathBuf,
    stop: CancellationToken,
) {
    // Per reason (a handful), so a flood of one kind does not hide another.
    let mut refuse_logged: std::collections::HashMap<&'static str, Instant> =
        std::collections::HashMap::new();
    loop {
        let payload = tokio::select! {
            _ = stop.cancelled() => return,
            p = rx.recv() => match p {
                Some(p) => p,
                None => return,
            },
        };
        match central.decide(&payload, crate::wall_ms()) {
            Ok(Decision::Apply { stored, targets: t }) => {
                let version = stored.version;
                let d = dir.clone();
                match tokio::task::spawn_blocking(move || save(&d, &stored)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "cannot save the central configuration; applied until restart")
                    }
                    Err(e) => tracing::error!(error = %e, "central configuration save task failed"),
                }
                let list = effective(&local, &t);
                tracing::info!(
                    version,
                    central_targets = t.len(),
                    probed = list.len(),
                    applied_total = central.counts.applied,
                    "applied the central probe configuration"
                );
                targets.send_replace(list);
            }
            Ok(Decision::Stale { applied, got }) => {
                tracing::debug!(applied, got, "central probe configuration not newer; kept");
            }
            Err(e) => {
                let now = Instant::now();
                let last = refuse_logged.get(e.as_str());
                if last.is_none_or(|t| now.duration_since(*t) >= REFUSE_LOG_EVERY) {
                    refuse_logged.insert(e.as_str(), now);
                    tracing::warn!(
                        reason = e.as_str(),
                        error = %e,
                        refused_total = central.counts.refused,
                        "refused a central probe configuration"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
