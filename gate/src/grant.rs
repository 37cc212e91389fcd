//! What an authenticated client may do (`Grant`), and the `Authorizer` that hands grants out.

use rumqttc::mqttbytes::{matches, valid_topic};

/// What one authenticated identity may do on the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Who the client is (for logs and for `Authorizer::still_valid`).
    pub identity: String,
    /// Topic filters the client may publish to, with MQTT wildcard semantics: a PUBLISH (or the
    /// will) is allowed when its topic matches one of them.
    pub publish: Vec<String>,
    /// Filters the client may subscribe to: every filter of a SUBSCRIBE must be *equal* to one of
    /// these (no wildcard widening: `a/#` here does not allow subscribing to `a/b`).
    pub subscribe: Vec<String>,
}

impl Grant {
    /// Whether a PUBLISH (or will) to `topic` is allowed. Topics with wildcards, empty topics and
    /// `$`-topics (which `matches` never matches) are refused.
    pub fn may_publish(&self, topic: &str) -> bool {
        !topic.is_empty()
            && valid_topic(topic)
            && self.publish.iter().any(|filter| matches(topic, filter))
    }

    /// Whether subscribing to `filter` is allowed: it must equal one of the granted filters, or
    /// be a plain topic (no wildcards) that a granted wildcard filter matches (`a/+/ack` allows
    /// `a/b/ack`, never `a/#`).
    pub fn may_subscribe(&self, filter: &str) -> bool {
        let plain = !filter.is_empty() && valid_topic(filter);
        self.subscribe
            .iter()
            .any(|allowed| allowed == filter || (plain && matches(filter, allowed)))
    }
}

/// Why a CONNECT is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Unknown user or wrong password: CONNACK return code 4.
    BadCredentials,
    /// Credentials are right but this client may not connect (disabled, wrong client id):
    /// CONNACK return code 5.
    NotAuthorized,
}

/// Decides who may connect and what they may do. Called on the connection's task, so it must
/// answer quickly and not block (an in-memory lookup, not a database query).
pub trait Authorizer: Send + Sync + 'static {
    /// Decides on a CONNECT. `client_id`, `username`, `password` as sent by the client.
    ///
    /// The broker keys sessions by client id, so the authorizer must tie the client id to the
    /// identity: a client admitted under someone else's id would take over that session, and
    /// with `clean_session = false` it would inherit the subscriptions the session already holds
    /// (the gate only sees SUBSCRIBE packets, not the broker's stored sessions).
    fn connect(
        &self,
        client_id: &str,
        username: Option<&str>,
        password: Option<&[u8]>,
    ) -> Result<Grant, Refusal>;

    /// Whether an established grant is still valid. Called on every live connection after
    /// `GateHandle::recheck`; connections whose grant is no longer valid are closed.
    fn still_valid(&self, grant: &Grant) -> bool;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> Grant {
        Grant {
            identity: "pc-1".into(),
            publish: vec!["dozor/v1/pc-1/#".into(), "dozor/hello/+".into()],
            subscribe: vec!["dozor/cmd/pc-1".into(), "dozor/cmd/all/#".into()],
        }
    }

    #[track_caller]
    fn check_publish(topic: &str, allowed: bool) {
        assert_eq!(grant().may_publish(topic), allowed, "publish to {topic:?}");
    }

    #[test]
    fn publish_follows_wildcard_filters() {
        check_publish("dozor/v1/pc-1/metrics", true);
        check_publish("dozor/v1/pc-1", true); // `a/#` matches `a` itself (MQTT 4.7.1.2)
        check_publish("dozor/v1/pc-1/a/b/c", true);
        check_publish("dozor/hello/x", true);
        check_publish("dozor/v1/pc-2/metrics", false);
        check_publish("dozor/hello/x/y", false);
        check_publish("dozor/hello", false);
    }

    #[test]
    fn publish_refuses_wildcards_empty_and_dollar_topics() {
        check_publish("dozor/v1/pc-1/+", false);
        check_publish("dozor/v1/pc-1/#", false);
        check_publish("", false);
        let everything = Grant {
            publish: vec!["#".into()],
            ..grant()
        };
        assert!(everything.may_publish("any/topic"));
        assert!(!everything.may_publish("$SYS/broker"));
    }

    #[test]
    fn subscribe_needs_an_equal_filter_or_a_plain_topic_inside_one() {
        let g = grant();
        assert!(g.may_subscribe("dozor/cmd/pc-1"));
        assert!(g.may_subscribe("dozor/cmd/all/#"));
        // A plain topic inside a granted filter is fine; a wildcard never widens the grant.
        assert!(g.may_subscribe("dozor/cmd/all/x"));
        assert!(!g.may_subscribe("dozor/cmd/all/+/#"));
        assert!(!g.may_subscribe("dozor/cmd/+"));
        assert!(!g.may_subscribe("#"));
        assert!(!g.may_subscribe(""));
    }
}
