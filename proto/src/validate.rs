//! Decoding and validation of received messages: never panics, bounded work per byte.

use crate::{
    Ack, Birth, Cfg, Envelope, Heartbeat, Kind, MAX_PAYLOAD_BYTES, Message, Probe, Reject,
    SCHEMA_VERSION, State, Topic, valid_id,
};
use serde::Deserialize;

/// Value limits applied on decode.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_string_len: usize,
    pub max_disks: usize,
    pub max_targets: usize,
    /// Earliest acceptable agent timestamp, Unix ms (clocks reset to 1970 or 2000 are rejected).
    pub min_ts_ms: i64,
    /// Latest acceptable agent timestamp, Unix ms.
    pub max_ts_ms: i64,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        max_string_len: 256,
        max_disks: 64,
        max_targets: 64,
        // 2020-01-01T00:00:00Z
        min_ts_ms: 1_577_836_800_000,
        // 2100-01-01T00:00:00Z
        max_ts_ms: 4_102_444_800_000,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// 1 PiB: larger byte counts are absurd for a clinic host.
const MAX_BYTES: u64 = 1 << 50;
/// 100 years of uptime.
const MAX_UPTIME_SECS: u64 = 100 * 365 * 86_400;

/// Decodes and validates an upstream message received on `topic`.
///
/// Checks, in order: size, topic shape, UTF-8, JSON shape, schema version, identity (topic vs
/// payload), values and absolute timestamp plausibility. Relative timestamp checks (against the
/// receiver's clock) are the receiver's business.
pub fn decode(topic: &str, payload: &[u8], limits: &Limits) -> Result<Message, Reject> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(Reject::Oversized);
    }
    let t = Topic::parse(topic)?;
    let text = std::str::from_utf8(payload).map_err(|_| Reject::BadUtf8)?;
    let msg = match t.kind.live() {
        Kind::Birth => Message::Birth(parse::<Birth>(text)?),
        Kind::State => Message::State(parse::<State>(text)?),
        Kind::Hb => Message::Hb(parse::<Heartbeat>(text)?),
        Kind::Probe => Message::Probe(parse::<Probe>(text)?),
        _ => return Err(Reject::BadTopic),
    };
    let h = msg.header();
    // A replay topic carries only replays (a live message there would skip the live queue's
    // priority the other way round; it is the sender's mistake, refused).
    if t.kind.is_replay() && !h.replay {
        return Err(Reject::BadValue);
    }
    if h.mo != t.mo || h.host != t.host {
        return Err(Reject::IdentityMismatch);
    }
    if !valid_id(h.inst) {
        return Err(Reject::BadValue);
    }
    if h.ts < limits.min_ts_ms || h.ts > limits.max_ts_ms {
        return Err(Reject::BadTimestamp);
    }
    match &msg {
        Message::Birth(e) => {
            check_birth(&e.body, limits)?;
            // The previous run ended before this message was made.
            if let Some(p) = e.body.prev_end
                && (p.at < limits.min_ts_ms || p.at > h.ts)
            {
                return Err(Reject::BadTimestamp);
            }
            // The will was made at CONNECT, before this birth took its number.
            if e.body.will_seq.is_some_and(|w| w >= h.seq) {
                return Err(Reject::BadValue);
            }
        }
        Message::State(e) => check_str(e.body.reason.as_deref().unwrap_or(""), limits)?,
        Message::Hb(e) => check_hb(&e.body, limits)?,
        Message::Probe(e) => check_probe(&e.body, limits)?,
    }
    Ok(msg)
}

/// Decodes a downstream `ack` payload (used by agents).
pub fn decode_ack(payload: &[u8]) -> Result<Ack, Reject> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(Reject::Oversized);
    }
    let ack: Ack = serde_json::from_slice(payload).map_err(|_| Reject::BadJson)?;
    if ack.v != SCHEMA_VERSION {
        return Err(Reject::UnknownVersion);
    }
    Ok(ack)
}

/// Decodes a downstream `cfg` payload (used by agents) received on `topic`, after its MAC was
/// checked: size, topic (`cfg` kind), JSON shape, schema version, identity (the payload's
/// `mo`/`host` equal the topic's) and target values (count, unique valid names, URL text,
/// timeout). Whether a URL is usable is the agent's business (it parses it like a local probe).
pub fn decode_cfg(topic: &str, payload: &[u8], limits: &Limits) -> Result<Cfg, Reject> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(Reject::Oversized);
    }
    let t = Topic::parse(topic)?;
    if t.kind != Kind::Cfg {
        return Err(Reject::BadTopic);
    }
    let text = std::str::from_utf8(payload).map_err(|_| Reject::BadUtf8)?;
    let cfg: Cfg = match serde_json::from_str(text) {
        Ok(c) => c,
        Err(_) => {
            #[derive(Deserialize)]
            struct V {
                v: u32,
            }
            return match serde_json::from_str::<V>(text) {
                Ok(V { v }) if v != SCHEMA_VERSION => Err(Reject::UnknownVersion),
                _ => Err(Reject::BadJson),
            };
        }
    };
    if cfg.v != SCHEMA_VERSION {
        return Err(Reject::UnknownVersion);
    }
    if cfg.mo != t.mo || cfg.host != t.host {
        return Err(Reject::IdentityMismatch);
    }
    if cfg.ts < limits.min_ts_ms || cfg.ts > limits.max_ts_ms {
        return Err(Reject::BadTimestamp);
    }
    if cfg.targets.len() > limits.max_targets {
        return Err(Reject::BadValue);
    }
    for (i, t) in cfg.targets.iter().enumerate() {
        if !valid_id(&t.name) || cfg.targets[..i].iter().any(|o| o.name == t.name) {
            return Err(Reject::BadValue);
        }
        if t.url.is_empty() || !valid_text(&t.url, limits.max_string_len) {
            return Err(Reject::BadValue);
        }
        if t.timeout_ms.is_some_and(|ms| !(1..=60_000).contains(&ms)) {
            return Err(Reject::BadValue);
        }
    }
    Ok(cfg)
}

fn parse<'a, B: Deserialize<'a>>(text: &'a str) -> Result<Envelope<B>, Reject> {
    match serde_json::from_str::<Envelope<B>>(text) {
        Ok(e) if e.v == SCHEMA_VERSION => Ok(e),
        Ok(_) => Err(Reject::UnknownVersion),
        Err(_) => {
            // Tell "a version we do not speak" from "garbage": only on the error path.
            #[derive(Deserialize)]
            struct V {
                v: u32,
            }
            match serde_json::from_str::<V>(text) {
                Ok(V { v }) if v != SCHEMA_VERSION => Err(Reject::UnknownVersion),
                _ => Err(Reject::BadJson),
            }
        }
    }
}

/// Bidirectional-text controls (U+200E/U+200F marks, U+202A–U+202E embeddings and overrides,
/// U+2066–U+2069 isolates) and the line/paragraph separators U+2028/U+2029. Not `Cc`, so
/// `char::is_control` lets them through, yet they reorder or break the text a person reads:
/// a site named with U+202E made an alert read «ВОССТАНОВЛЕНО: ложная тревога…» (issue 10).
/// Rejected here so no alert text, status page or export ever sees them.
fn is_deceptive(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}')
}

/// Text a person will read: at most `max_len` bytes, no control characters, no bidi controls
/// or line/paragraph separators. The rule of every agent string, for other inputs to reuse
/// (silence matchers and comments in the collector).
pub fn valid_text(s: &str, max_len: usize) -> bool {
    s.len() <= max_len && !s.chars().any(|c| c.is_control() || is_deceptive(c))
}

fn check_str(s: &str, l: &Limits) -> Result<(), Reject> {
    if !valid_text(s, l.max_string_len) {
        return Err(Reject::BadValue);
    }
    Ok(())
}

fn check_bytes(b: u64) -> Result<(), Reject> {
    if b > MAX_BYTES {
        return Err(Reject::BadValue);
    }
    Ok(())
}

fn check_birth(b: &Birth, l: &Limits) -> Result<(), Reject> {
    for s in [
        &b.agent_version,
        &b.site,
        &b.hostname,
        &b.os_name,
        &b.os_version,
        &b.cpu_model,
        &b.boot_id,
    ] {
        check_str(s, l)?;
    }
    if b.disks.len() > l.max_disks || b.targets.len() > l.max_targets {
        return Err(Reject::BadValue);
    }
    for d in &b.disks {
        check_str(&d.mount, l)?;
        check_str(&d.fs, l)?;
        check_bytes(d.total_bytes)?;
    }
    for t in &b.targets {
        check_str(&t.name, l)?;
        if t.name.is_empty() {
            return Err(Reject::BadValue);
        }
    }
    check_bytes(b.mem_total_bytes)?;
    if b.cpu_count == 0 || b.cpu_count > 4096 || b.interval_secs == 0 || b.interval_secs > 86_400 {
        return Err(Reject::BadValue);
    }
    // Saturating: a boot time of ±9.2e15 s or more would overflow in milliseconds.
    let boot_ms = b.boot_time.saturating_mul(1000);
    if boot_ms < l.min_ts_ms.saturating_sub(86_400_000 * 365 * 10) || boot_ms > l.max_ts_ms {
        return Err(Reject::BadTimestamp);
    }
    Ok(())
}

fn check_hb(h: &Heartbeat, l: &Limits) -> Result<(), Reject> {
    // `!(x >= 0)` is also true for NaN.
    if !(h.cpu_pct >= 0.0 && h.cpu_pct <= 100.5) {
        return Err(Reject::BadValue);
    }
    check_bytes(h.mem_total_bytes)?;
    if h.mem_used_bytes > h.mem_total_bytes || h.uptime_secs > MAX_UPTIME_SECS {
        return Err(Reject::BadValue);
    }
    if let Some(load) = h.load
        && load
            .iter()
            .any(|x| !(x.is_finite() && *x >= 0.0 && *x < 1e6))
    {
        return Err(Reject::BadValue);
    }
    if h.disks.len() > l.max_disks || h.interval_secs == 0 || h.interval_secs > 86_400 {
        return Err(Reject::BadValue);
    }
    for d in &h.disks {
        check_str(&d.mount, l)?;
        check_bytes(d.total_bytes)?;
        if d.used_bytes > d.total_bytes {
            return Err(Reject::BadValue);
        }
    }
    Ok(())
}

fn check_probe(p: &Probe, l: &Limits) -> Result<(), Reject> {
    if p.results.len() > l.max_targets {
        return Err(Reject::BadValue);
    }
    for r in &p.results {
        check_str(&r.target, l)?;
        if r.target.is_empty() || r.latency_ms.is_some_and(|ms| ms > 3_600_000) {
            return Err(Reject::BadValue);
        }
        if r.ok && r.error.is_some() {
            return Err(Reject::BadValue);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
