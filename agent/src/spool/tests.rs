//! Spool tests against real SQLite files: persistence across reopen, locking, corruption,
//! and a model-based property test of append / ack / crash / send-next.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::config::Synchronous;

const T0: i64 = 1_750_000_000_000;

fn cfg(max_bytes: u64) -> SpoolConfig {
    SpoolConfig {
        max_bytes,
        max_age: Duration::from_secs(14 * 86_400),
        resend_after: Duration::from_secs(60),
        replay_rate_per_sec: 5,
        flush_after: Duration::from_secs(10),
        synchronous: Synchronous::Normal,
    }
}

fn open(dir: &Path, max_bytes: u64) -> Spool {
    Spool::open(dir, &cfg(max_bytes), Instant::now(), T0).expect("open")
}

fn body(seq: u64, size: usize) -> Vec<u8> {
    let mut b = format!("{{\"seq\":{seq},\"pad\":\"").into_bytes();
    b.resize(size.max(b.len() + 2), b'x');
    b.extend_from_slice(b"\"}");
    b
}

#[test]
fn survives_reopen_with_inst_counter_and_payloads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(dir.path(), 1 << 20);
    let inst = s.inst().to_owned();
    assert!(dozor_proto::valid_id(&inst));
    for _ in 0..5 {
        let r = s.append(Kind::Hb, T0, T0, Instant::now(), |seq, _| body(seq, 50));
        assert!(r.error.is_none());
    }
    assert_eq!(s.ack(2, Instant::now()).expect("ack"), 2);
    s.close(Instant::now()).expect("close");
    drop(s);

    let mut s = open(dir.path(), 1 << 20);
    assert_eq!(s.inst(), inst);
    assert_eq!(s.index().last_seq(), 5);
    let seqs: Vec<u64> = s.index().entries().map(|e| e.seq).collect();
    assert_eq!(seqs, [3, 4, 5]);
    assert_eq!(s.body(4).expect("read"), Some(body(4, 50)));
    assert_eq!(
        s.append(Kind::Probe, T0, T0, Instant::now(), |seq, _| body(seq, 10))
            .seq,
        6
    );

    // Everything confirmed: the counter alone keeps numbering monotonic.
    s.ack(6, Instant::now()).expect("ack");
    s.close(Instant::now()).expect("close");
    drop(s);
    let mut s = open(dir.path(), 1 << 20);
    assert_eq!(s.stats().pending, 0);
    assert_eq!(
        s.append(Kind::Hb, T0, T0, Instant::now(), |seq, _| body(seq, 10))
            .seq,
        7
    );
}

/// A crash (no final write): what was written survives, numbers are never reused, the
/// reserved but unwritten ones are counted as skipped once.
#[test]
fn crash_skips_the_reserved_numbers_and_keeps_what_was_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Instant::now();
    let mut s = open(dir.path(), 1 << 20);
    // Not connected: every append is written at once.
    for _ in 0..3 {
        s.append(Kind::Hb, T0, T0, t, |seq, _| body(seq, 50));
    }
    s.index_mut().connected(t);
    // Connected: held in memory (confirmed promptly, never written).
    let s4 = s.append(Kind::Hb, T0, T0, t, |seq, _| body(seq, 50)).seq;
    assert!(!s.index().get(s4).expect("s4").is_durable());
    assert_eq!(s.store_mut().seqs().expect("seqs"), [1, 2, 3]);
    drop(s);
    let s = open(dir.path(), 1 << 20);
    assert_eq!(
        s.index().entries().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let next = s.index().next_seq();
    assert!(next > 4, "{next}");
    assert_eq!(s.index().skipped(), next - 4);
    drop(s);
    // A second crash right after opening counts nothing again.
    let s = open(dir.path(), 1 << 20);
    assert_eq!(s.index().next_seq(), next);
    assert_eq!(s.index().skipped(), next - 4);
}

/// What the publisher's rewrite does, for the test bodies: the JSON's `seq` replaced.
fn reseq(b: &[u8], seq: u64) -> Option<Vec<u8>> {
    let mut v: serde_json::Value = serde_json::from_slice(b).ok()?;
    v["seq"] = seq.into();
    serde_json::to_vec(&v).ok()
}

/// The backup of the skip tests: `n` heartbeats in a new spool at `dir`, the collector reached
/// (an ack of 0 applied), closed cleanly (counter exactly `n + 1`).
fn backup(dir: &Path, n: usize, t: Instant) {
    let mut s = open(dir, 1 << 20);
    for _ in 0..n {
        s.append(Kind::Hb, T0, T0, t, |seq, _| body(seq, 50));
    }
    s.index_mut().connected(t);
    s.ack(0, t).expect("ack");
    s.close(t).expect("close");
}

#[test]
fn a_skip_past_a_future_ack_is_durable_and_renumbers_this_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Instant::now();
    // The backup: three messages in the file, the collector reached (an ack applied),
    // closed cleanly (counter exactly 4).
    backup(dir.path(), 3, t);
    // Restored and started: this run numbers from 4 on, one written (link down), one in
    // memory (link up).
    let mut s = open(dir.path(), 1 << 20);
    let a = s.append(Kind::Hb, T0, T0, t, |seq, _| body(seq, 50)).seq;
    s.index_mut().connected(t);
    let b = s.append(Kind::Probe, T0, T0, t, |seq, _| body(seq, 60)).seq;
    assert_eq!((a, b), (4, 5));
    assert!(!s.index().get(b).expect("b").is_durable());
    // The collector's ack says 1000 of this inst are taken.
    assert!(matches!(
        s.ack(1000, t),
        Err(SpoolError::Ack(AckError::Future {
            acked: 1000,
            last: 5
        }))
    ));
    let skip = s.skip_past(1000, t, reseq).expect("sane").expect("ahead");
    assert!(skip.error.is_none());
    let first = 1000 + 1 + SKIP_MARGIN;
    assert_eq!(
        (skip.last, skip.next_seq, skip.renumbered, skip.dropped),
        (5, first + 2, 2, 3)
    );
    assert_eq!(s.body(first).expect("read"), reseq(&body(a, 50), first));
    assert_eq!(
        s.body(first + 1).expect("read"),
        reseq(&body(b, 60), first + 1)
    );
    // Written at once: a crash right now (no close) resumes above the skip.
    assert_eq!(s.store_mut().seqs().expect("seqs"), [first, first + 1]);
    assert!(s.next_flush().is_none(), "nothing left unwritten");
    drop(s);
    let mut s = open(dir.path(), 1 << 20);
    assert_eq!(
        s.index().entries().map(|e| e.seq).collect::<Vec<_>>(),
        [first, first + 1]
    );
    assert_eq!(s.body(first).expect("read"), reseq(&body(a, 50), first));
    assert_eq!(s.stats().dropped, 3);
    let next = s.append(Kind::Hb, T0, T0, t, |seq, _| body(seq, 10)).seq;
    assert!(next > first + 1, "the counter never goes back: {next}");
    // The same ack again: nothing to skip, nothing confirmed.
    assert!(s.skip_past(1000, t, reseq).expect("sane").is_none());
    assert_eq!(s.ack(1000, t).expect("ack"), 0);
    // A payload that cannot be rewritten is dropped, not sent under its old number.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let mut s = open(dir2.path(), 1 << 20);
    s.append(Kind::Hb, T0, T0, t, |seq, _| body(seq, 10));
    let skip = s
        .skip_past(10, t, |_, _| None)
        .expect("sane")
        .expect("ahead");
    assert_eq!((skip.renumbered, skip.dropped), (0, 1));
    assert_eq!(s.stats().pending, 0);
    // An absurd ack changes nothing.
    let before = s.index().next_seq();
    assert!(matches!(
        s.skip_past(u64::MAX, t, reseq),
        Err(SpoolError::Ack(AckError::Absurd { .. }))
    ));
    assert_eq!(s.index().next_seq(), before);
}

/// A restored PC whose channel stays down across restarts: every run since the restore (the
/// collector confirmed nothing since) is re-numbered at the skip, not only the current one;
/// once an ack applied, a later restart starts a new boundary.
#[test]
fn the_unconfirmed_boundary_survives_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Instant::now();
    // The backup: two messages (1, 2), the collector reached once (acked 0 = nothing).
    backup(dir.path(), 2, t);
    // Restored: run 1 (link down) makes 3 and is switched off cleanly; run 2 makes 4.
    let mut s = open(dir.path(), 1 << 20);
    assert_eq!(s.index().unconfirmed_from(), 3);
    s.append(Kind::Hb, T0, T0, t, |seq, _| body(seq, 50));
    s.close(t).expect("close");
    drop(s);
    let mut s = open(dir.path(), 1 << 20);
    assert_eq!(
        s.index().unconfirmed_from(),
        3,
        "kept: nothing confirmed since"
    );
    s.append(Kind::Probe, T0, T0, t, |seq, _| body(seq, 60));
    let skip = s.skip_past(500, t, reseq).expect("sane").expect("ahead");
    let first = 500 + 1 + SKIP_MARGIN;
    assert_eq!(
        (skip.renumbered, skip.dropped),
        (2, 2),
        "runs 1 and 2 re-sent"
    );
    assert_eq!(s.body(first).expect("read"), reseq(&body(3, 50), first));
    assert_eq!(
        s.body(first + 1).expect("read"),
        reseq(&body(4, 60), first + 1)
    );
    // Across a crash the re-numbered messages stay unconfirmed.
    drop(s);
    let mut s = open(dir.path(), 1 << 20);
    assert_eq!(s.index().unconfirmed_from(), 3);
    // The collector confirms: the next run starts a boundary of its own.
    s.index_mut().connected(t);
    assert_eq!(s.ack(first, t).expect("ack"), 1);
    s.close(t).expect("close");
    drop(s);
    let s = open(dir.path(), 1 << 20);
    assert_eq!(s.index().unconfirmed_from(), s.index().next_seq());
    assert_eq!(
        s.index().entries().map(|e| e.seq).collect::<Vec<_>>(),
        [first + 1]
    );
}

#[test]
fn stats_passed_to_the_message_count_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(dir.path(), 1 << 20);
    let mut seen = None;
    s.append(Kind::Hb, T0, T0, Instant::now(), |seq, st| {
        seen = Some(st);
        body(seq, 10)
    });
    assert_eq!(
        seen,
        Some(SpoolStats {
            pending: 0,
            bytes: 0,
            dropped: 0,
            oldest_seq: Some(1)
        })
    );
}

#[test]
fn drops_are_persisted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(dir.path(), 1000);
    for _ in 0..25 {
        s.append(Kind::Hb, T0, T0, Instant::now(), |seq, _| body(seq, 100));
    }
    assert_eq!(s.stats().dropped, 16);
    assert_eq!(
        s.store_mut().seqs().expect("seqs"),
        (17..=25).collect::<Vec<_>>()
    );
    drop(s);
    let s = open(dir.path(), 1000);
    assert_eq!(s.stats().dropped, 16);
    assert_eq!(s.stats().pending, 9);
}

#[test]
fn age_bound_applies_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(dir.path(), 1 << 20);
    s.append(Kind::Hb, T0, T0, Instant::now(), |seq, _| body(seq, 10));
    s.append(Kind::Hb, T0, T0, Instant::now(), |seq, _| body(seq, 10));
    drop(s);
    let fifteen_days = 15 * 86_400_000;
    let s =
        Spool::open(dir.path(), &cfg(1 << 20), Instant::now(), T0 + fifteen_days).expect("open");
    assert_eq!(s.index().entries().map(|e| e.seq).collect::<Vec<_>>(), [2]);
    assert_eq!(s.stats().dropped, 1);
}

#[test]
fn a_second_agent_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _first = open(dir.path(), 1 << 20);
    let second = Spool::open(dir.path(), &cfg(1 << 20), Instant::now(), T0);
    assert!(
        matches!(second, Err(SpoolError::Db { .. })),
        "{:?}",
        second.err()
    );
}

#[test]
fn a_corrupt_file_is_moved_aside() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(FILE_NAME), vec![0x42; 8192]).expect("write");
    let mut s = open(dir.path(), 1 << 20);
    assert_eq!(
        s.append(Kind::Hb, T0, T0, Instant::now(), |seq, _| body(seq, 10))
            .seq,
        1
    );
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("spool.db.corrupt-")),
        "{names:?}"
    );
}

#[test]
fn missing_payload_is_counted_and_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(dir.path(), 1 << 20);
    s.append(Kind::Hb, T0, T0, Instant::now(), |seq, _| body(seq, 10));
    s.append(Kind::Hb, T0, T0, Instant::now(), |seq, _| body(seq, 10));
    s.discard(1).expect("discard");
    assert_eq!(s.body(1).expect("read"), None);
    assert_eq!(s.stats().dropped, 1);
    assert_eq!(s.stats().pending, 1);
}

#[derive(Debug, Clone)]
enum Op {
    Append(u16),
    /// Ack the n-th pending message (modulo), or beyond the last issued if there is none.
    Ack(u8),
    AckFuture(u8),
    /// The collector confirms this far beyond the last issued (a restored backup).
    Skip(u16),
    Crash,
    Connect,
    Disconnect,
    SendNext,
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u16..600).prop_map(Op::Append),
        3 => any::<u8>().prop_map(Op::Ack),
        1 => any::<u8>().prop_map(Op::AckFuture),
        1 => any::<u16>().prop_map(Op::Skip),
        1 => Just(Op::Crash),
        1 => Just(Op::Connect),
        1 => Just(Op::Disconnect),
        4 => Just(Op::SendNext),
        2 => (1u16..5000).prop_map(Op::Advance),
    ]
}

/// Runs the spool's write timer up to `to`, as the publisher's `sleep_until(next_flush)` does.
fn advance(s: &mut Spool, now: &mut Instant, to: Instant) {
    while let Some(t) = s.next_flush().filter(|t| *t <= to) {
        *now = t.max(*now);
        s.flush_if_due(*now).expect("flush");
    }
    *now = to;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    /// Write-behind model. No unacked message is lost except, at a crash, messages appended
    /// while connected less than `flush_after` ago (the stated power-cut bound); only the
    /// bounds drop (counted); no sequence number is ever reused, even across crashes; a
    /// disconnect writes everything; every entry the index calls durable is in the file; the
    /// replayer only offers pending messages with their payload.
    #[test]
    fn spool_model(ops in proptest::collection::vec(op(), 1..80), max_bytes in 2_000u64..20_000) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut now = Instant::now();
        let mut s = Spool::open(dir.path(), &cfg(max_bytes), now, T0).expect("open");
        let flush_after = cfg(max_bytes).flush_after;
        let inst = s.inst().to_owned();
        // Pending messages: payload, and when it was appended while connected (None: while
        // disconnected or written by a disconnect since, so it must survive a crash).
        let mut model: BTreeMap<u64, (Vec<u8>, Option<Instant>)> = BTreeMap::new();
        let mut issued: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let mut max_issued = 0u64;
        let mut dropped = 0u64;
        let mut connected = false;
        // `unconfirmed_from`: the counter at the first open since an ack last applied (None:
        // one applied in this run; `opened` then), and the last value it had.
        let mut opened = s.index().next_seq();
        let mut unconfirmed = Some(opened);
        let mut last_unconfirmed = opened;

        for op in ops {
            match op {
                Op::Append(size) => {
                    let r = s.append(Kind::Probe, T0, T0, now, |seq, _| body(seq, size.into()));
                    prop_assert!(r.error.is_none());
                    prop_assert!(r.seq > max_issued, "seq {} after {}", r.seq, max_issued);
                    max_issued = r.seq;
                    issued.insert(r.seq, r.bytes.clone());
                    model.insert(r.seq, (r.bytes, connected.then_some(now)));
                    // The bound drops the oldest first, never the newest.
                    while model.values().map(|b| b.0.len() as u64).sum::<u64>() > max_bytes
                        && model.len() > 1
                    {
                        model.pop_first();
                        dropped += 1;
                    }
                    if !connected {
                        // Link down: written before append returns.
                        let e = s.index().get(r.seq).expect("appended");
                        prop_assert!(e.is_durable());
                    }
                }
                Op::Ack(n) => {
                    if let Some(&seq) = model.keys().nth(usize::from(n) % model.len().max(1)) {
                        s.ack(seq, now).expect("ack");
                        model.retain(|k, _| *k > seq);
                        unconfirmed = None;
                    }
                }
                Op::AckFuture(n) => {
                    let r = s.ack(s.index().last_seq() + 1 + u64::from(n), now);
                    prop_assert!(matches!(r, Err(SpoolError::Ack(_))));
                }
                Op::Skip(n) => {
                    let acked = s.index().last_seq() + u64::from(n);
                    let skip = s.skip_past(acked, now, reseq).expect("sane");
                    if n == 0 {
                        prop_assert!(skip.is_none());
                        continue;
                    }
                    let skip = skip.expect("ahead");
                    prop_assert!(skip.error.is_none());
                    // This run's messages under new numbers above the skip, in order; the
                    // earlier ones dropped; all of it in the file at once.
                    let mut next = acked + 1 + SKIP_MARGIN;
                    let from = unconfirmed.unwrap_or(opened);
                    prop_assert_eq!(s.index().unconfirmed_from(), from);
                    unconfirmed = Some(from);
                    last_unconfirmed = from;
                    let mut renumbered = BTreeMap::new();
                    for (seq, (bytes, _)) in std::mem::take(&mut model) {
                        if seq >= from {
                            let b = reseq(&bytes, next).expect("JSON");
                            issued.insert(next, b.clone());
                            renumbered.insert(next, (b, None));
                            next += 1;
                        } else {
                            dropped += 1;
                        }
                    }
                    model = renumbered;
                    prop_assert_eq!(s.index().next_seq(), next);
                    prop_assert!(s.index().entries().all(Entry::is_durable));
                    max_issued = next - 1;
                }
                Op::Crash => {
                    // A power cut: the process and its memory are gone, the file stays.
                    drop(s);
                    s = Spool::open(dir.path(), &cfg(max_bytes), now, T0).expect("reopen");
                    prop_assert_eq!(s.inst(), inst.as_str());
                    let survivors: Vec<u64> = s.index().entries().map(|e| e.seq).collect();
                    for seq in &survivors {
                        // Only issued numbers come back, with their payload (a confirmed row
                        // whose delete had not been written yet may come back: a duplicate).
                        let stored = s.body(*seq).expect("read");
                        prop_assert_eq!(stored.as_ref(), issued.get(seq));
                    }
                    for (seq, (_, since)) in &model {
                        if !survivors.contains(seq) {
                            let young = since.is_some_and(|t| now < t + flush_after);
                            prop_assert!(young, "seq {} lost but not within the bound", seq);
                        }
                    }
                    model = survivors
                        .iter()
                        .map(|seq| (*seq, (issued[seq].clone(), None)))
                        .collect();
                    dropped = s.stats().dropped;
                    prop_assert!(s.index().next_seq() > max_issued, "a number would be reused");
                    opened = s.index().next_seq();
                    // Kept across the restart; a clear not yet written leaves the last value.
                    let reopened = s.index().unconfirmed_from();
                    match unconfirmed {
                        Some(v) => prop_assert_eq!(reopened, v),
                        None => prop_assert!(
                            reopened == opened || reopened == last_unconfirmed,
                            "unconfirmed_from {} after a clear", reopened
                        ),
                    }
                    unconfirmed = Some(reopened);
                    last_unconfirmed = reopened;
                    connected = false;
                }
                Op::Connect => {
                    s.index_mut().connected(now);
                    connected = true;
                }
                Op::Disconnect => {
                    s.index_mut().disconnected();
                    s.flush_if_due(now).expect("flush");
                    prop_assert!(s.index().entries().all(Entry::is_durable));
                    for v in model.values_mut() {
                        v.1 = None;
                    }
                    connected = false;
                }
                Op::SendNext => match s.index_mut().poll_replay(now) {
                    Replay::Send(seq) => {
                        prop_assert!(connected);
                        let stored = s.body(seq).expect("read");
                        prop_assert_eq!(stored.as_ref(), model.get(&seq).map(|m| &m.0));
                        s.index_mut().mark_sent(seq, now);
                    }
                    Replay::WaitUntil(t) => prop_assert!(connected && t > now),
                    Replay::Idle => {}
                },
                Op::Advance(ms) => {
                    let to = now + Duration::from_millis(ms.into());
                    advance(&mut s, &mut now, to);
                }
            }
            let in_file = s.store_mut().seqs().expect("seqs");
            let in_index: Vec<u64> = s.index().entries().map(|e| e.seq).collect();
            let expected: Vec<u64> = model.keys().copied().collect();
            prop_assert_eq!(&in_index, &expected);
            for e in s.index().entries().filter(|e| e.is_durable()) {
                prop_assert!(in_file.contains(&e.seq), "durable {} not in the file", e.seq);
            }
            prop_assert!(in_file.iter().all(|seq| issued.contains_key(seq)));
            prop_assert!(s.index().last_seq() >= max_issued);
            let st = s.stats();
            prop_assert_eq!(st.dropped, dropped);
            prop_assert_eq!(st.pending, model.len() as u64);
            prop_assert_eq!(st.bytes, model.values().map(|b| b.0.len() as u64).sum::<u64>());
            prop_assert_eq!(st.oldest_seq, model.keys().next().copied());
        }
    }

    /// Connected and polled long enough, the replayer offers every pending message, oldest
    /// first, exactly once per pass.
    #[test]
    fn replay_offers_every_pending_message(appends in 1usize..40, acked in 0usize..40) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = open(dir.path(), 1 << 20);
        for _ in 0..appends {
            s.append(Kind::Hb, T0, T0, Instant::now(), |seq, _| body(seq, 20));
        }
        let acked = (acked.min(appends)) as u64;
        if acked > 0 {
            s.ack(acked, Instant::now()).expect("ack");
        }
        let mut now = Instant::now();
        s.index_mut().connected(now);
        let mut offered = Vec::new();
        for _ in 0..1000 {
            match s.index_mut().poll_replay(now) {
                Replay::Send(seq) => {
                    s.index_mut().mark_sent(seq, now);
                    offered.push(seq);
                }
                Replay::WaitUntil(t) if t - now < Duration::from_secs(1) => now = t,
                _ => break,
            }
        }
        let expected: Vec<u64> = (acked + 1..=appends as u64).collect();
        prop_assert_eq!(offered, expected);
    }
}
