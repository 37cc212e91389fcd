//! The overview's sparklines: workstations online per МО, sampled from the live snapshot once a
//! minute and kept for a day (in memory; a restart starts the lines afresh).

use crate::state::Snapshot;
use dozor_proto::{ConnState, Role};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often a point is taken.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(60);
/// Points kept per МО (a day at one a minute).
const KEEP: usize = 1440;
/// Points drawn: the kept ones averaged down to this many.
const DRAWN: usize = 48;

/// Samples per МО.
#[derive(Debug, Default)]
pub(crate) struct Trends {
    by_mo: Mutex<HashMap<String, VecDeque<u32>>>,
}

impl Trends {
    /// Takes one point per МО from `snap`.
    pub(crate) fn sample(&self, snap: &Snapshot) {
        let mut counts: HashMap<&str, u32> = HashMap::new();
        for h in &snap.hosts {
            let c = counts.entry(h.mo.as_str()).or_default();
            if h.role == Some(Role::Workstation) && h.state == ConnState::Online {
                *c += 1;
            }
        }
        let mut by = self.by_mo.lock().unwrap_or_else(|p| p.into_inner());
        for (mo, n) in counts {
            let q = by.entry(mo.to_string()).or_default();
            if q.len() >= KEEP {
                q.pop_front();
            }
            q.push_back(n);
        }
    }

    /// The drawn values of an МО (averaged down to at most `DRAWN`) and their maximum.
    pub(crate) fn series(&self, mo: &str) -> (Vec<f64>, f64) {
        let by = self.by_mo.lock().unwrap_or_else(|p| p.into_inner());
        let Some(q) = by.get(mo) else {
            return (Vec::new(), 0.0);
        };
        let per = q.len().div_ceil(DRAWN).max(1);
        let v: Vec<u32> = q.iter().copied().collect();
        let out: Vec<f64> = v
            .chunks(per)
            .map(|c| c.iter().map(|x| f64::from(*x)).sum::<f64>() / c.len() as f64)
            .collect();
        let max = out.iter().copied().fold(0.0, f64::max);
        (out, max)
    }
}

/// Samples `snap` into `trends` every [`SAMPLE_EVERY`] until cancelled.
pub(crate) async fn run(
    trends: Arc<Trends>,
    snap: watch::Receiver<Arc<Snapshot>>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {
                let s = snap.borrow().clone();
                trends.sample(&s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_kept_and_averaged_down() {
        let t = Trends::default();
        let mut h = crate::ui::test_host("m", "a", Role::Workstation, 0);
        let snap = |h: &crate::state::Host| Snapshot {
            built_ms: 0,
            hosts: vec![Arc::new(h.clone())],
            delivery: Vec::new(),
        };
        t.sample(&snap(&h));
        h.state = ConnState::Lost;
        t.sample(&snap(&h));
        assert_eq!(t.series("m"), (vec![1.0, 0.0], 1.0));
        for _ in 0..KEEP + 10 {
            t.sample(&snap(&h));
        }
        let (v, _) = t.series("m");
        assert_eq!(v.len(), DRAWN.min(KEEP));
        assert_eq!(t.series("other").0.len(), 0);
    }
}
