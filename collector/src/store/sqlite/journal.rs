//! The batch journal: each batch is committed as ONE row of `journal` (this module's compact
//! encoding of its records and delivery marks), so a batch costs one row write however many
//! hosts it holds; the tables are brought up to date from the journal later, many batches in one
//! transaction, where a host's tail, rollup and delivery mark are written once for all of them
//! (see `docs/storage.md`, "The batch journal").
//!
//! I/O-free: [`encode`] / [`decode`] and the [`Due`] policy. Heartbeats, the bulk of every
//! batch, have a binary layout of their own; the rarer births, probes and states are kept as
//! their JSON envelope (what the agent sent, re-serialized; the proto crate parses it back).
//! Decoding never panics: a truncated or foreign row is an error naming what is wrong.

use crate::delivery::DeliveryMark;
use crate::record::{Accepted, Batch, Record, Transition};
use dozor_proto::{ConnState, DiskUsage, Envelope, Heartbeat, Message, Role, SpoolStats};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Layout version of a journal row (its first byte). A collector refuses rows of another
/// version rather than guessing (the schema version keeps older collectors off newer stores).
const FORMAT: u8 = 1;

const R_HB: u8 = 0;
const R_BIRTH: u8 = 1;
const R_STATE: u8 = 2;
const R_PROBE: u8 = 3;
const R_TRANSITION: u8 = 4;
const R_START: u8 = 5;
const R_STOP: u8 = 6;

/// When the batches committed to the journal are applied to the tables: after `batches`
/// batches or `interval` after the first of them, whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Due {
    pub(crate) interval: Duration,
    pub(crate) batches: usize,
}

impl Due {
    /// How long until the pending batches are due (zero: now), `None` when nothing is pending.
    /// `first` is when the oldest pending batch was committed.
    pub(crate) fn wait(
        &self,
        pending: usize,
        first: Option<Instant>,
        now: Instant,
    ) -> Option<Duration> {
        if pending == 0 {
            return None;
        }
        if pending >= self.batches {
            return Some(Duration::ZERO);
        }
        let since = first.map_or(Duration::MAX, |f| now.saturating_duration_since(f));
        Some(self.interval.saturating_sub(since))
    }
}

/// Appends the journal row of `batch` to `out`.
pub(crate) fn encode(batch: &Batch, out: &mut Vec<u8>) {
    out.push(FORMAT);
    uint(out, batch.records.len() as u64);
    for r in &batch.records {
        match r {
            Record::Msg(a) => {
                let (tag, json) = match &a.msg {
                    Message::Hb(_) => (R_HB, None),
                    Message::Birth(e) => (R_BIRTH, Some(e.to_json())),
                    Message::State(e) => (R_STATE, Some(e.to_json())),
                    Message::Probe(e) => (R_PROBE, Some(e.to_json())),
                };
                out.push(tag);
                int(out, a.recv_ms);
                int(out, a.ts_ms);
                match (&a.msg, json) {
                    (Message::Hb(e), _) => hb(out, e),
                    (_, Some(j)) => bytes(out, &j),
                    (_, None) => bytes(out, b""),
                }
            }
            Record::Transition(t) => {
                out.push(R_TRANSITION);
                text(out, &t.mo);
                text(out, &t.host_id);
                out.push(match t.role {
                    None => 0,
                    Some(Role::Workstation) => 1,
                    Some(Role::Server) => 2,
                });
                out.push(conn_code(t.from));
                out.push(conn_code(t.to));
                match &t.reason {
                    None => out.push(0),
                    Some(s) => {
                        out.push(1);
                        text(out, s);
                    }
                }
                int(out, t.at_ms);
            }
            Record::CollectorStart { at_ms } => {
                out.push(R_START);
                int(out, *at_ms);
            }
            Record::CollectorStop { at_ms } => {
                out.push(R_STOP);
                int(out, *at_ms);
            }
        }
    }
    uint(out, batch.delivery.len() as u64);
    for m in &batch.delivery {
        text(out, &m.inst);
        text(out, &m.mo);
        text(out, &m.host);
        uint(out, m.contiguous);
        uint(out, m.above.len() as u64);
        let mut prev = m.contiguous;
        for &s in &m.above {
            // Ascending above the contiguous mark: deltas are small.
            uint(out, s.wrapping_sub(prev));
            prev = s;
        }
        uint(out, m.stored);
        uint(out, m.refused);
    }
}

fn hb(out: &mut Vec<u8>, e: &Envelope<Heartbeat>) {
    uint(out, u64::from(e.v));
    text(out, &e.mo);
    text(out, &e.host);
    text(out, &e.inst);
    uint(out, e.seq);
    int(out, e.ts);
    let b = &e.body;
    let flags =
        u8::from(e.replay) | u8::from(b.load.is_some()) << 1 | u8::from(b.spool.is_some()) << 2;
    out.push(flags);
    uint(out, b.uptime_secs);
    out.extend_from_slice(&b.cpu_pct.to_le_bytes());
    uint(out, b.mem_used_bytes);
    uint(out, b.mem_total_bytes);
    if let Some(l) = b.load {
        for x in l {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    uint(out, b.disks.len() as u64);
    for d in &b.disks {
        text(out, &d.mount);
        uint(out, d.total_bytes);
        uint(out, d.used_bytes);
    }
    uint(out, u64::from(b.interval_secs));
    if let Some(s) = &b.spool {
        uint(out, s.pending);
        uint(out, s.bytes);
        uint(out, s.dropped);
        match s.oldest_seq {
            None => out.push(0),
            Some(x) => {
                out.push(1);
                uint(out, x);
            }
        }
    }
}

fn conn_code(s: ConnState) -> u8 {
    match s {
        ConnState::Online => 0,
        ConnState::Offline => 1,
        ConnState::Lost => 2,
    }
}

fn uint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn int(out: &mut Vec<u8>, v: i64) {
    uint(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    uint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn text(out: &mut Vec<u8>, s: &str) {
    bytes(out, s.as_bytes());
}

/// Reads a journal row back into the batch it was encoded from.
pub(crate) fn decode(row: &[u8]) -> Result<Batch, String> {
    let mut r = Rd { b: row, at: 0 };
    let f = r.u8()?;
    if f != FORMAT {
        return Err(format!(
            "journal row format {f}, this collector reads {FORMAT}"
        ));
    }
    let n = r.len()?;
    let mut records = Vec::with_capacity(n.min(row.len()));
    for _ in 0..n {
        records.push(r.record()?);
    }
    let n = r.len()?;
    let mut delivery = Vec::with_capacity(n.min(row.len()));
    for _ in 0..n {
        let inst: Arc<str> = r.text()?.into();
        let mo: Arc<str> = r.text()?.into();
        let host: Arc<str> = r.text()?.into();
        let contiguous = r.uint()?;
        let k = r.len()?;
        let mut above = Vec::with_capacity(k.min(row.len()));
        let mut prev = contiguous;
        for _ in 0..k {
            prev = prev.wrapping_add(r.uint()?);
            above.push(prev);
        }
        delivery.push(DeliveryMark {
            inst,
            mo,
            host,
            contiguous,
            above,
            stored: r.uint()?,
            refused: r.uint()?,
        });
    }
    if r.at != row.len() {
        return Err(format!("{} bytes after the batch", row.len() - r.at));
    }
    Ok(Batch { records, delivery })
}

struct Rd<'a> {
    b: &'a [u8],
    at: usize,
}

impl Rd<'_> {
    fn u8(&mut self) -> Result<u8, String> {
        let v = *self.b.get(self.at).ok_or("truncated")?;
        self.at += 1;
        Ok(v)
    }

    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or("truncated")?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn uint(&mut self) -> Result<u64, String> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let x = self.u8()?;
            v |= u64::from(x & 0x7f) << shift;
            if x & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 64 bits".into())
    }

    fn int(&mut self) -> Result<i64, String> {
        let u = self.uint()?;
        Ok((u >> 1) as i64 ^ -((u & 1) as i64))
    }

    /// A count: each element takes at least one byte, so a count beyond the row is corrupt.
    fn len(&mut self) -> Result<usize, String> {
        let n = self.uint()?;
        if n > (self.b.len() - self.at) as u64 {
            return Err(format!("count {n} beyond the row"));
        }
        Ok(n as usize)
    }

    fn text(&mut self) -> Result<String, String> {
        let n = self.len()?;
        let s = self.take(n)?;
        String::from_utf8(s.to_vec()).map_err(|_| "text is not UTF-8".to_string())
    }

    fn f32(&mut self) -> Result<f32, String> {
        let s = self.take(4)?;
        Ok(f32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }

    fn u32(&mut self) -> Result<u32, String> {
        u32::try_from(self.uint()?).map_err(|_| "value beyond u32".to_string())
    }

    fn json<B: serde::de::DeserializeOwned>(&mut self) -> Result<Envelope<B>, String> {
        let n = self.len()?;
        let s = self.take(n)?;
        serde_json::from_slice(s).map_err(|e| format!("message: {e}"))
    }

    fn conn(&mut self) -> Result<ConnState, String> {
        match self.u8()? {
            0 => Ok(ConnState::Online),
            1 => Ok(ConnState::Offline),
            2 => Ok(ConnState::Lost),
            x => Err(format!("connection state {x}")),
        }
    }

    fn record(&mut self) -> Result<Record, String> {
        let tag = self.u8()?;
        let msg = |r: &mut Self, m: fn(&mut Self) -> Result<Message, String>| {
            let recv_ms = r.int()?;
            let ts_ms = r.int()?;
            Ok::<_, String>(Record::Msg(Arc::new(Accepted {
                msg: m(r)?,
                recv_ms,
                ts_ms,
            })))
        };
        match tag {
            R_HB => msg(self, |r| r.hb().map(Message::Hb)),
            R_BIRTH => msg(self, |r| r.json().map(Message::Birth)),
            R_STATE => msg(self, |r| r.json().map(Message::State)),
            R_PROBE => msg(self, |r| r.json().map(Message::Probe)),
            R_TRANSITION => {
                let mo = self.text()?;
                let host_id = self.text()?;
                let role = match self.u8()? {
                    0 => None,
                    1 => Some(Role::Workstation),
                    2 => Some(Role::Server),
                    x => return Err(format!("role {x}")),
                };
                let from = self.conn()?;
                let to = self.conn()?;
                let reason = match self.u8()? {
                    0 => None,
                    _ => Some(self.text()?),
                };
                Ok(Record::Transition(Transition {
                    mo,
                    host_id,
                    role,
                    from,
                    to,
                    reason,
                    at_ms: self.int()?,
                }))
            }
            R_START => Ok(Record::CollectorStart { at_ms: self.int()? }),
            R_STOP => Ok(Record::CollectorStop { at_ms: self.int()? }),
            x => Err(format!("record tag {x}")),
        }
    }

    fn hb(&mut self) -> Result<Envelope<Heartbeat>, String> {
        let v = self.u32()?;
        let mo = self.text()?;
        let host = self.text()?;
        let inst = self.text()?;
        let seq = self.uint()?;
        let ts = self.int()?;
        let flags = self.u8()?;
        let uptime_secs = self.uint()?;
        let cpu_pct = self.f32()?;
        let mem_used_bytes = self.uint()?;
        let mem_total_bytes = self.uint()?;
        let load = if flags & 2 != 0 {
            Some([self.f32()?, self.f32()?, self.f32()?])
        } else {
            None
        };
        let n = self.len()?;
        let mut disks = Vec::with_capacity(n);
        for _ in 0..n {
            disks.push(DiskUsage {
                mount: self.text()?,
                total_bytes: self.uint()?,
                used_bytes: self.uint()?,
            });
        }
        let interval_secs = self.u32()?;
        let spool = if flags & 4 != 0 {
            Some(SpoolStats {
                pending: self.uint()?,
                bytes: self.uint()?,
                dropped: self.uint()?,
                oldest_seq: match self.u8()? {
                    0 => None,
                    _ => Some(self.uint()?),
                },
            })
        } else {
            None
        };
        Ok(Envelope {
            v,
            mo,
            host,
            inst,
            seq,
            ts,
            replay: flags & 1 != 0,
            body: Heartbeat {
                uptime_secs,
                cpu_pct,
                mem_used_bytes,
                mem_total_bytes,
                load,
                disks,
                interval_secs,
                spool,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sim::Sim;
    use dozor_proto::Category;

    fn every_kind() -> Batch {
        let mut s = Sim::new();
        s.start(1_000);
        s.birth("mo1", "h1", Role::Server, "Корпус 1", 2_000, 0);
        s.hbs("mo1", "h1", 3_000, 90_000, 30_000, 0, false);
        s.hb("mo1", "h2", -5, 0, true);
        s.probe(
            "mo1",
            "h1",
            4_000,
            &[("МИС", Category::Mis, true), ("lis", Category::Lis, false)],
            false,
        );
        s.offline("mo1", "h1", 95_000);
        s.lost("mo1", "h2", 96_000);
        s.stop(97_000);
        let mut records = s.take();
        // A heartbeat with every optional part.
        if let Record::Msg(a) = &records[2] {
            let mut a = (**a).clone();
            if let Message::Hb(e) = &mut a.msg {
                e.body.load = Some([0.5, f32::MIN_POSITIVE, 7.25]);
                e.body.spool = Some(SpoolStats {
                    pending: 3,
                    bytes: 4096,
                    dropped: 1,
                    oldest_seq: Some(u64::MAX),
                });
                e.body.cpu_pct = 99.99;
                e.seq = u64::MAX;
                e.ts = i64::MIN;
            }
            records[2] = Record::Msg(Arc::new(a));
        }
        Batch {
            records,
            delivery: vec![
                DeliveryMark {
                    inst: "i-1".into(),
                    mo: "mo1".into(),
                    host: "h1".into(),
                    contiguous: 41,
                    above: vec![43, 50, 1_000_000],
                    stored: 44,
                    refused: 2,
                },
                DeliveryMark {
                    inst: "i-2".into(),
                    mo: "mo1".into(),
                    host: "h2".into(),
                    contiguous: 0,
                    above: Vec::new(),
                    stored: 0,
                    refused: 0,
                },
            ],
        }
    }

    #[test]
    fn every_record_kind_round_trips() {
        let b = every_kind();
        let mut row = Vec::new();
        encode(&b, &mut row);
        assert_eq!(decode(&row).unwrap(), b);
        let empty = Batch::default();
        row.clear();
        encode(&empty, &mut row);
        assert_eq!(decode(&row).unwrap(), empty);
    }

    #[test]
    fn a_heartbeat_is_compact() {
        let mut s = Sim::new();
        s.hb(
            "1.2.643.5.1.13.13.12.2.77.7777",
            "pc-0001",
            1_700_000_000_000,
            0,
            false,
        );
        let b = Batch {
            records: s.take(),
            delivery: Vec::new(),
        };
        let mut row = Vec::new();
        encode(&b, &mut row);
        let Record::Msg(a) = &b.records[0] else {
            unreachable!()
        };
        let Message::Hb(e) = &a.msg else {
            unreachable!()
        };
        // Well under the JSON the agent sent.
        assert!(
            row.len() * 2 < e.to_json().len(),
            "{} vs {}",
            row.len(),
            e.to_json().len()
        );
    }

    #[test]
    fn damaged_rows_are_errors_not_panics() {
        let mut row = Vec::new();
        encode(&every_kind(), &mut row);
        for n in 0..row.len() {
            assert!(decode(&row[..n]).is_err(), "truncated at {n}");
        }
        let mut extra = row.clone();
        extra.push(0);
        assert!(decode(&extra).unwrap_err().contains("after the batch"));
        let mut foreign = row.clone();
        foreign[0] = 9;
        assert!(decode(&foreign).unwrap_err().contains("format 9"));
        // Flipping any byte never panics (it may still decode to something).
        for i in 0..row.len() {
            let mut x = row.clone();
            x[i] ^= 0xa5;
            let _ = decode(&x);
        }
        // A huge count is refused before allocating.
        assert!(decode(&[FORMAT, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }

    #[test]
    fn due_after_the_interval_or_the_batch_count() {
        let due = Due {
            interval: Duration::from_millis(1000),
            batches: 3,
        };
        let t0 = Instant::now();
        assert_eq!(due.wait(0, None, t0), None);
        assert_eq!(due.wait(1, Some(t0), t0), Some(Duration::from_millis(1000)));
        assert_eq!(
            due.wait(2, Some(t0), t0 + Duration::from_millis(400)),
            Some(Duration::from_millis(600))
        );
        assert_eq!(
            due.wait(2, Some(t0), t0 + Duration::from_millis(1500)),
            Some(Duration::ZERO)
        );
        assert_eq!(due.wait(3, Some(t0), t0), Some(Duration::ZERO));
        // Pending without a start (left by a crash, found at open): due now.
        assert_eq!(due.wait(1, None, t0), Some(Duration::ZERO));
    }
}
