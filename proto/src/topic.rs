//! MQTT topic names: `dozor/v1/{mo}/{host}/{kind}` and identifier rules.

use crate::Reject;

/// Prefix of every dozor topic; the version segment changes only with an incompatible protocol.
pub const TOPIC_ROOT: &str = "dozor/v1";
/// Longest allowed МО or host identifier, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// What a topic carries. Upstream kinds are published by agents; downstream kinds by the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Inventory, retained, once per connection.
    Birth,
    /// `online` / `offline` / `lost`, retained; the last will uses it.
    State,
    /// Periodic heartbeat with resources.
    Hb,
    /// Results of one probe round.
    Probe,
    /// Downstream (collector → agent): highest sequence stored contiguously.
    Ack,
    /// Downstream (collector → agent): the central probe configuration, retained.
    Cfg,
    /// A `birth` re-sent from the agent's spool after its live moment (`birth-replay`).
    BirthReplay,
    /// A heartbeat re-sent from the spool after its live moment (`hb-replay`).
    HbReplay,
    /// A probe round re-sent from the spool after its live moment (`probe-replay`).
    ProbeReplay,
}

/// Every kind an agent publishes: the live ones and their replay twins. Brokers let an enrolled
/// agent publish exactly these on its own `{mo}/{host}` (docs/protocol.md).
pub const UPSTREAM: [Kind; 7] = [
    Kind::Birth,
    Kind::State,
    Kind::Hb,
    Kind::Probe,
    Kind::BirthReplay,
    Kind::HbReplay,
    Kind::ProbeReplay,
];

/// The upstream kinds published live.
pub const LIVE: [Kind; 4] = [Kind::Birth, Kind::State, Kind::Hb, Kind::Probe];

/// The upstream kinds of replayed messages (old backlog re-sent from an agent's spool).
pub const REPLAY: [Kind; 3] = [Kind::BirthReplay, Kind::HbReplay, Kind::ProbeReplay];

impl Kind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Birth => "birth",
            Kind::State => "state",
            Kind::Hb => "hb",
            Kind::Probe => "probe",
            Kind::Ack => "ack",
            Kind::Cfg => "cfg",
            Kind::BirthReplay => "birth-replay",
            Kind::HbReplay => "hb-replay",
            Kind::ProbeReplay => "probe-replay",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "birth" => Kind::Birth,
            "state" => Kind::State,
            "hb" => Kind::Hb,
            "probe" => Kind::Probe,
            "ack" => Kind::Ack,
            "cfg" => Kind::Cfg,
            "birth-replay" => Kind::BirthReplay,
            "hb-replay" => Kind::HbReplay,
            "probe-replay" => Kind::ProbeReplay,
            _ => return None,
        })
    }

    /// True for the kinds an agent publishes.
    pub const fn is_upstream(self) -> bool {
        !matches!(self, Kind::Ack | Kind::Cfg)
    }

    /// True for the replay kinds.
    pub const fn is_replay(self) -> bool {
        matches!(self, Kind::BirthReplay | Kind::HbReplay | Kind::ProbeReplay)
    }

    /// The kind a replayed message of this kind is published as; `None` for kinds that are
    /// never spooled (`state`) or not upstream.
    pub const fn replay(self) -> Option<Kind> {
        match self {
            Kind::Birth | Kind::BirthReplay => Some(Kind::BirthReplay),
            Kind::Hb | Kind::HbReplay => Some(Kind::HbReplay),
            Kind::Probe | Kind::ProbeReplay => Some(Kind::ProbeReplay),
            _ => None,
        }
    }

    /// The live kind of a replay kind (itself for any other): what the payload decodes as.
    pub const fn live(self) -> Kind {
        match self {
            Kind::BirthReplay => Kind::Birth,
            Kind::HbReplay => Kind::Hb,
            Kind::ProbeReplay => Kind::Probe,
            k => k,
        }
    }
}

/// True if `id` may be used as an МО or host identifier: 1..=64 bytes of `[A-Za-z0-9._-]`,
/// not starting with a dot. This keeps ids safe in topics, file names and URLs.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A parsed topic, borrowing from the topic string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topic<'a> {
    pub mo: &'a str,
    pub host: &'a str,
    pub kind: Kind,
}

impl<'a> Topic<'a> {
    /// Parses `dozor/v1/{mo}/{host}/{kind}`; any other shape is [`Reject::BadTopic`].
    pub fn parse(topic: &'a str) -> Result<Topic<'a>, Reject> {
        let rest = topic
            .strip_prefix(TOPIC_ROOT)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or(Reject::BadTopic)?;
        let mut parts = rest.split('/');
        let (Some(mo), Some(host), Some(kind), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Reject::BadTopic);
        };
        if !valid_id(mo) || !valid_id(host) {
            return Err(Reject::BadTopic);
        }
        let kind = Kind::parse(kind).ok_or(Reject::BadTopic)?;
        Ok(Topic { mo, host, kind })
    }
}

/// Formats the topic of one host and kind. Callers validate ids first (see [`valid_id`]).
pub fn topic(mo: &str, host: &str, kind: Kind) -> String {
    format!("{TOPIC_ROOT}/{mo}/{host}/{}", kind.as_str())
}

/// The MQTT client id an agent of this identity MUST use (brokers bind it to the username, so
/// nobody can take over another host's session).
pub fn client_id(mo: &str, host: &str) -> String {
    format!("dozor-{mo}-{host}")
}

/// The MQTT username of an enrolled agent: `{mo}/{host}`.
pub fn username(mo: &str, host: &str) -> String {
    format!("{mo}/{host}")
}

/// Parses an MQTT username back into `(mo, host)`; `None` unless both are valid ids.
pub fn parse_username(u: &str) -> Option<(&str, &str)> {
    let (mo, host) = u.split_once('/')?;
    (valid_id(mo) && valid_id(host)).then_some((mo, host))
}

/// Subscription filter for every upstream message of every agent.
pub fn upstream_filter(kind: Kind) -> String {
    format!("{TOPIC_ROOT}/+/+/{}", kind.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(t: &str, expected: Option<(&str, &str, Kind)>) {
        let got = Topic::parse(t).ok().map(|t| (t.mo, t.host, t.kind));
        assert_eq!(got, expected, "topic {t:?}");
    }

    #[test]
    fn parses_topics() {
        let oid = "1.2.643.5.1.13.13.12.2.27.1234";
        check(
            &format!("dozor/v1/{oid}/pc-01/hb"),
            Some((oid, "pc-01", Kind::Hb)),
        );
        check("dozor/v1/mo/h/birth", Some(("mo", "h", Kind::Birth)));
        check("dozor/v1/mo/h/ack", Some(("mo", "h", Kind::Ack)));
        check("dozor/v1/mo/h/unknown", None);
        check("dozor/v1/mo/h/hb-replay", Some(("mo", "h", Kind::HbReplay)));
        check("dozor/v1/mo/h/state-replay", None);
        check("dozor/v1/mo/h/ack-replay", None);
        check("dozor/v1/mo/h", None);
        check("dozor/v1/mo/h/hb/extra", None);
        check("dozor/v2/mo/h/hb", None);
        check("dozor/v1//h/hb", None);
        check("dozor/v1/mo/h h/hb", None);
        check("dozor/v1/mo/.hidden/hb", None);
        check("dozor/v1/mo/+/hb", None);
        check(&format!("dozor/v1/mo/{}/hb", "x".repeat(65)), None);
        check(
            &format!("dozor/v1/mo/{}/hb", "x".repeat(64)),
            Some(("mo", &"x".repeat(64), Kind::Hb)),
        );
        check("dozor/v1/мо/h/hb", None);
    }

    #[test]
    fn formats_round_trip() {
        let t = topic("1.2.3", "pc-1", Kind::Probe);
        assert_eq!(t, "dozor/v1/1.2.3/pc-1/probe");
        assert_eq!(Topic::parse(&t).map(|t| t.kind), Ok(Kind::Probe));
        assert_eq!(upstream_filter(Kind::Hb), "dozor/v1/+/+/hb");
        for k in UPSTREAM {
            assert!(k.is_upstream());
            assert_eq!(Kind::parse(k.as_str()), Some(k));
            assert_eq!(k.is_replay(), REPLAY.contains(&k));
            assert_eq!(k.is_replay(), !LIVE.contains(&k));
            if let Some(r) = k.replay() {
                assert!(r.is_replay());
                assert_eq!(r.live(), k.live());
            }
        }
        assert_eq!(Kind::State.replay(), None, "state is never spooled");
        assert!(!Kind::Ack.is_upstream() && !Kind::Cfg.is_upstream());
    }
}
