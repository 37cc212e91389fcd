//! Wall-clock time in Unix milliseconds: the one definition of "now", and the [`Clock`] type that
//! components take so tests can inject time.

use std::sync::Arc;

/// A clock returning Unix ms (injected in tests).
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Unix time now, ms (0 if the system clock is before 1970).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The system clock as a [`Clock`].
pub fn system_clock() -> Clock {
    Arc::new(now_ms)
}
