//! The shared identity registry: loaded from `identity.db`, published to readers (ingest,
//! broker gateway, pipeline) through a `watch` channel, reloaded when another process (the
//! `token`/`agent` subcommands) changes the database, so revocations take effect without a
//! restart.

use super::db::{DbError, EnrollRequest, IdentityDb, Issued};
use super::{Registry, SecurityMode};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Enrollment outcomes counted on `/metrics`.
#[derive(Debug, Default)]
pub struct EnrollStats {
    pub ok: AtomicU64,
    pub token_invalid: AtomicU64,
    pub rate_limited: AtomicU64,
    pub bad_request: AtomicU64,
}

/// The registry and its database.
pub struct Identities {
    pub mode: SecurityMode,
    db: Mutex<IdentityDb>,
    tx: watch::Sender<Arc<Registry>>,
    pub stats: EnrollStats,
}

impl Identities {
    /// Opens `identity.db` in `data_dir` and loads every identity.
    pub fn open(data_dir: &Path, mode: SecurityMode) -> Result<Arc<Identities>, DbError> {
        let db = IdentityDb::open(&super::db::path(data_dir))?;
        let reg = db.load()?;
        let (tx, _) = watch::channel(Arc::new(reg));
        Ok(Arc::new(Identities {
            mode,
            db: Mutex::new(db),
            tx,
            stats: EnrollStats::default(),
        }))
    }

    /// Readers of the registry; `None` in open mode (nothing is checked).
    pub fn subscribe(&self) -> Option<watch::Receiver<Arc<Registry>>> {
        (self.mode == SecurityMode::Enrolled).then(|| self.tx.subscribe())
    }

    /// A receiver regardless of mode (the gateway needs the registry to tell open from closed).
    pub fn receiver(&self) -> watch::Receiver<Arc<Registry>> {
        self.tx.subscribe()
    }

    pub fn current(&self) -> Arc<Registry> {
        self.tx.borrow().clone()
    }

    fn db(&self) -> std::sync::MutexGuard<'_, IdentityDb> {
        // A panic while holding the lock cannot leave the connection half-written (SQLite
        // transactions roll back), so a poisoned lock is still usable.
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reload(&self) -> Result<(), DbError> {
        let reg = self.db().load()?;
        self.tx.send_replace(Arc::new(reg));
        Ok(())
    }

    /// Enrolls an agent (blocking SQLite off the async threads), then publishes the new
    /// registry so that its first login already succeeds.
    pub async fn enroll(
        self: &Arc<Self>,
        req: EnrollRequest,
        now_ms: i64,
    ) -> Result<Issued, DbError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let issued = me.db().enroll(&req, now_ms)?;
            me.reload()?;
            Ok(issued)
        })
        .await
        .map_err(|e| DbError::Io(std::io::Error::other(e.to_string())))?
    }

    /// Issues identities directly (the demo's simulated hosts).
    pub fn issue_many(
        &self,
        hosts: &[(String, String)],
        now_ms: i64,
    ) -> Result<Vec<Issued>, DbError> {
        let out = {
            let db = self.db();
            hosts
                .iter()
                .map(|(mo, host)| db.issue(mo, host, now_ms))
                .collect::<Result<Vec<_>, _>>()?
        };
        self.reload()?;
        Ok(out)
    }

    /// Creates a token (the demo enrolls its own agent process with one).
    pub fn create_token(
        &self,
        mo: &str,
        max_uses: Option<u32>,
        now_ms: i64,
    ) -> Result<String, DbError> {
        Ok(self
            .db()
            .create_token(mo, max_uses, None, "demo", now_ms)?
            .1)
    }

    /// Reloads whenever another process changed `identity.db` (checked every `every`).
    pub async fn watch(self: Arc<Self>, every: Duration, cancel: CancellationToken) {
        let mut last = self.db().data_version().unwrap_or(0);
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            let me = self.clone();
            let changed = tokio::task::spawn_blocking(move || -> Result<Option<i64>, DbError> {
                let v = me.db().data_version()?;
                if v != last {
                    me.reload()?;
                    return Ok(Some(v));
                }
                Ok(None)
            })
            .await;
            match changed {
                Ok(Ok(Some(v))) => {
                    last = v;
                    tracing::info!("identity.db changed; identities reloaded");
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "identity.db reload failed"),
                Err(e) => tracing::warn!(error = %e, "identity.db reload task failed"),
            }
        }
    }

    /// Writes enrollment counters and the number of identities.
    pub fn write_metrics(&self, out: &mut String) {
        let mut f = crate::metrics::Families::default();
        let enrollments = f.counter(
            "dozor_enrollments_total",
            "Enrollment requests, by outcome.",
        );
        for (k, v) in [
            ("ok", &self.stats.ok),
            ("token_invalid", &self.stats.token_invalid),
            ("rate_limited", &self.stats.rate_limited),
            ("bad_request", &self.stats.bad_request),
        ] {
            enrollments.sample(&[("outcome", k)], v.load(Relaxed));
        }
        let reg = self.current();
        let revoked = reg.agents().filter(|a| a.revoked).count() as u64;
        f.gauge("dozor_identities", "Issued agent identities, by status.")
            .sample(&[("status", "active")], reg.len() as u64 - revoked)
            .sample(&[("status", "revoked")], revoked);
        f.write(out);
    }
}
