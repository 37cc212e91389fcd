//! The alert task: the pipeline tells it what it saw over a bounded channel of
//! [`AlertInput`] and never waits for it; the engine, its journal (blocking SQLite) and the
//! notifier's dispatch run on a thread of their own, off the ingest-critical pipeline task and
//! off the async runtime's threads.
//!
//! **The pipeline never blocks on alerts.** [`AlertSender::send`] uses `try_send`. When the
//! channel is full, a [`AlertInput::Tick`] is skipped (the next one carries a newer snapshot)
//! and a transition or replay waits in a bounded backlog on the pipeline side, retried on its
//! 10 ms flush tick, in order; only past that bound is it dropped, and counted
//! (`dozor_alert_inputs_dropped_total`). Dropping was chosen over waiting because a slow disk
//! under `incidents.db` must not stop ingest (and with it every agent's confirmations), and over
//! an unbounded queue because memory must stay bounded under a storm of transitions.

use super::engine::ReplayKind;
use super::model::Change;
use super::service::{AlertService, InputStats};
use crate::record::{Accepted, Transition};
use crate::state::Snapshot;
use dozor_proto::Message;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

/// What the pipeline tells the alert task.
#[derive(Debug, Clone)]
pub enum AlertInput {
    /// A host changed connection state (opens "server lost" at once).
    Transition(Transition),
    /// A replayed (past) message was accepted: relabels the cause of outages it was part of.
    Replay(Arc<Accepted>),
    /// About once a second: evaluate every rule over the latest snapshot.
    Tick {
        now_ms: i64,
        snapshot: Arc<Snapshot>,
    },
}

/// Inputs the channel holds before the pipeline keeps them in its backlog.
pub(crate) const CHANNEL: usize = 4_096;
/// Inputs the alert task applies before it writes the journal and publishes the incident
/// list (both O(incidents); once per input, a storm of transitions made them quadratic).
pub(crate) const BATCH: usize = 1_024;
/// Transitions and replays the pipeline keeps while the channel is full; beyond, dropped.
pub(crate) const BACKLOG: usize = 65_536;

impl AlertService {
    /// Applies one input from the pipeline.
    pub(crate) fn apply(&mut self, input: AlertInput) -> Vec<Change> {
        match input {
            AlertInput::Transition(t) => self.on_transition(&t),
            AlertInput::Replay(a) => {
                let kind = match &a.msg {
                    Message::Hb(_) => ReplayKind::Heartbeat,
                    Message::Probe(_) => ReplayKind::Probe,
                    Message::Birth(_) => ReplayKind::Birth,
                    Message::State(_) => return Vec::new(),
                };
                let h = a.msg.header();
                self.on_replay(h.mo, h.host, a.ts_ms..=a.ts_ms, kind)
            }
            AlertInput::Tick { now_ms, snapshot } => self.evaluate(now_ms, &snapshot),
        }
    }
}

/// The pipeline's end of the alert channel. Never blocks (see the module docs).
#[derive(Debug)]
pub struct AlertSender {
    tx: mpsc::Sender<AlertInput>,
    backlog: VecDeque<AlertInput>,
    stats: Arc<InputStats>,
}

impl AlertSender {
    /// A sender over `tx` counting into `stats`.
    pub fn new(tx: mpsc::Sender<AlertInput>, stats: Arc<InputStats>) -> AlertSender {
        AlertSender {
            tx,
            backlog: VecDeque::new(),
            stats,
        }
    }

    /// Hands `input` to the alert task without waiting.
    pub fn send(&mut self, input: AlertInput) {
        self.flush();
        if self.backlog.is_empty() {
            match self.tx.try_send(input) {
                Ok(()) | Err(TrySendError::Closed(_)) => {}
                Err(TrySendError::Full(input)) => self.keep(input),
            }
        } else {
            self.keep(input);
        }
    }

    fn keep(&mut self, input: AlertInput) {
        match input {
            AlertInput::Tick { .. } => {
                self.stats.ticks_skipped.fetch_add(1, Ordering::Relaxed);
            }
            _ if self.backlog.len() >= BACKLOG => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
            _ => self.backlog.push_back(input),
        }
    }

    /// Moves what the backlog holds into the channel, as far as it has room.
    pub fn flush(&mut self) {
        while let Some(input) = self.backlog.pop_front() {
            match self.tx.try_send(input) {
                Ok(()) => {}
                Err(TrySendError::Full(input)) => {
                    self.backlog.push_front(input);
                    return;
                }
                Err(TrySendError::Closed(_)) => {
                    self.backlog.clear();
                    return;
                }
            }
        }
    }

    /// At shutdown (ingest stopped): hands the whole backlog over, waiting for room.
    pub async fn close(mut self) {
        while let Some(input) = self.backlog.pop_front() {
            if self.tx.send(input).await.is_err() {
                return;
            }
        }
    }
}

/// Runs `svc` on a thread of its own until every [`AlertSender`] is gone and the channel is
/// drained. Join the returned handle before stopping the notifiers, so the last changes are
/// dispatched.
pub(crate) fn spawn(
    mut svc: AlertService,
) -> std::io::Result<(AlertSender, std::thread::JoinHandle<()>)> {
    let (tx, mut rx) = mpsc::channel(CHANNEL);
    let sender = AlertSender::new(tx, svc.input_stats());
    let thread = std::thread::Builder::new()
        .name("alerts".into())
        .spawn(move || {
            while let Some(input) = rx.blocking_recv() {
                // What else waits is applied with it, and written and published once.
                svc.begin_batch();
                svc.apply(input);
                for _ in 1..BATCH {
                    match rx.try_recv() {
                        Ok(input) => {
                            svc.apply(input);
                        }
                        Err(_) => break,
                    }
                }
                svc.end_batch();
            }
        })?;
    Ok((sender, thread))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(n: i64) -> AlertInput {
        AlertInput::Tick {
            now_ms: n,
            snapshot: Arc::new(Snapshot::default()),
        }
    }

    fn transition(n: i64) -> AlertInput {
        AlertInput::Transition(Transition {
            mo: "mo".into(),
            host_id: "h".into(),
            role: None,
            from: dozor_proto::ConnState::Online,
            to: dozor_proto::ConnState::Lost,
            reason: None,
            at_ms: n,
        })
    }

    fn at(i: &AlertInput) -> i64 {
        match i {
            AlertInput::Transition(t) => t.at_ms,
            AlertInput::Replay(a) => a.ts_ms,
            AlertInput::Tick { now_ms, .. } => *now_ms,
        }
    }

    #[test]
    fn a_full_channel_never_blocks_skips_ticks_and_keeps_transitions_in_order() {
        let (tx, mut rx) = mpsc::channel(2);
        let stats = Arc::new(InputStats::default());
        let mut s = AlertSender::new(tx, stats.clone());
        s.send(transition(1));
        s.send(tick(2));
        // Full from here: a tick is skipped, transitions wait in the backlog.
        s.send(tick(3));
        s.send(transition(4));
        s.send(tick(5));
        s.send(transition(6));
        assert_eq!(stats.ticks_skipped.load(Ordering::Relaxed), 2);
        assert_eq!(s.backlog.len(), 2);
        let mut seen = vec![at(&rx.try_recv().unwrap()), at(&rx.try_recv().unwrap())];
        s.flush();
        while let Ok(i) = rx.try_recv() {
            seen.push(at(&i));
        }
        assert_eq!(seen, [1, 2, 4, 6]);
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn past_the_backlog_bound_inputs_are_dropped_and_counted() {
        let (tx, _rx) = mpsc::channel(1);
        let stats = Arc::new(InputStats::default());
        let mut s = AlertSender::new(tx, stats.clone());
        for n in 0..(BACKLOG as i64 + 11) {
            s.send(transition(n));
        }
        assert_eq!(s.backlog.len(), BACKLOG);
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 10);
    }
}
