//! Message authentication: every message an enrolled agent publishes, and every `ack` the
//! collector sends it, carries an HMAC-SHA256 over its topic and JSON, keyed by the agent's own
//! secret. Neither a clinic PC nor a misconfigured broker can then make the collector accept one
//! host's data as another's, or make an agent drop unsent data with a forged `ack`.
//!
//! Framing (docs/protocol.md, "Authentication"): the MAC is the first member of the JSON object,
//! `{"mac":"<64 lowercase hex>",` followed by the unsigned JSON without its opening brace. The
//! MAC covers `topic || 0x00 || unsigned JSON`, so no canonical re-serialization is needed:
//! stripping the fixed-size prefix gives back the exact bytes that were signed.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// The bytes a signed payload starts with.
pub const MAC_PREFIX: &[u8] = b"{\"mac\":\"";
/// Length of the whole prefix: `{"mac":"` + 64 hex digits + `",`.
pub const SIGNED_PREFIX_LEN: usize = MAC_PREFIX.len() + 64 + 2;

/// An agent's secret, issued by the collector at enrollment. Everything else is derived from
/// it, so the secret itself never travels after enrollment.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub [u8; 32]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl Secret {
    /// Parses the 64-hex-digit form stored in identity files.
    pub fn from_hex(s: &str) -> Option<Secret> {
        let mut b = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut b).ok()?;
        Some(Secret(b))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    fn derive(&self, label: &[u8]) -> [u8; 32] {
        let mut m = HmacSha256::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        m.update(label);
        m.finalize().into_bytes().into()
    }

    /// The MQTT password of this identity (the broker stores only its hash).
    pub fn mqtt_password(&self) -> String {
        hex::encode(self.derive(b"dozor/v1 mqtt password"))
    }

    /// The key of message MACs in both directions.
    pub fn mac_key(&self) -> MacKey {
        MacKey(self.derive(b"dozor/v1 message mac"))
    }
}

/// Key of message MACs, derived from a [`Secret`].
#[derive(Clone, PartialEq, Eq)]
pub struct MacKey(pub [u8; 32]);

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MacKey(…)")
    }
}

fn mac(key: &MacKey, topic: &str, json: &[u8]) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(&key.0).expect("HMAC takes keys of any length");
    m.update(topic.as_bytes());
    m.update(&[0]);
    m.update(json);
    m
}

/// Signs `json` (a JSON object, starting with `{`) for `topic`: returns the signed payload.
/// Anything that is not an object is returned unchanged (it is rejected by the receiver anyway).
pub fn sign(key: &MacKey, topic: &str, json: &[u8]) -> Vec<u8> {
    if json.first() != Some(&b'{') {
        return json.to_vec();
    }
    let tag = mac(key, topic, json).finalize().into_bytes();
    let rest = &json[1..];
    let mut out = Vec::with_capacity(SIGNED_PREFIX_LEN + rest.len() + 1);
    out.extend_from_slice(MAC_PREFIX);
    out.extend_from_slice(hex::encode(tag).as_bytes());
    out.extend_from_slice(b"\"");
    // `{}` signs as `{"mac":"…"}`; anything else continues after a comma.
    if rest.first() == Some(&b'}') {
        out.extend_from_slice(rest);
    } else {
        out.push(b',');
        out.extend_from_slice(rest);
    }
    out
}

/// A payload split into its MAC and the exact unsigned JSON that was signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub tag: [u8; 32],
    pub unsigned: Vec<u8>,
}

/// Splits a signed payload; `None` when it carries no (well-formed) MAC prefix.
pub fn split(payload: &[u8]) -> Option<Split> {
    if !payload.starts_with(MAC_PREFIX) || payload.len() < SIGNED_PREFIX_LEN - 1 {
        return None;
    }
    let hex_end = MAC_PREFIX.len() + 64;
    let mut tag = [0u8; 32];
    hex::decode_to_slice(&payload[MAC_PREFIX.len()..hex_end], &mut tag).ok()?;
    if payload.get(hex_end) != Some(&b'"') {
        return None;
    }
    let mut unsigned = Vec::with_capacity(payload.len() - hex_end);
    unsigned.push(b'{');
    match payload.get(hex_end + 1) {
        Some(b',') => unsigned.extend_from_slice(&payload[hex_end + 2..]),
        Some(b'}') => unsigned.extend_from_slice(&payload[hex_end + 1..]),
        _ => return None,
    }
    Some(Split { tag, unsigned })
}

/// Why a payload failed authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The payload carries no MAC.
    #[error("payload is not signed")]
    Unsigned,
    /// The MAC does not match the payload, topic and key.
    #[error("payload signature does not match")]
    BadMac,
}

/// Checks a split payload's MAC in constant time.
pub fn verify_split(key: &MacKey, topic: &str, s: &Split) -> Result<(), AuthError> {
    mac(key, topic, &s.unsigned)
        .verify_slice(&s.tag)
        .map_err(|_| AuthError::BadMac)
}

/// Verifies a signed payload; returns the unsigned JSON to decode.
pub fn verify(key: &MacKey, topic: &str, payload: &[u8]) -> Result<Vec<u8>, AuthError> {
    let s = split(payload).ok_or(AuthError::Unsigned)?;
    verify_split(key, topic, &s)?;
    Ok(s.unsigned)
}

/// SHA-256 as lowercase hex: how enrollment tokens and MQTT passwords are kept at rest. Both are
/// 256-bit random values, so a fast hash is enough (no dictionary to guess from).
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> MacKey {
        Secret([b; 32]).mac_key()
    }

    #[test]
    fn signed_payload_round_trips_to_the_exact_bytes() {
        let json = br#"{"v":1,"mo":"m","host":"h"}"#;
        let signed = sign(&key(1), "dozor/v1/m/h/hb", json);
        assert!(signed.starts_with(MAC_PREFIX));
        // Still JSON: a receiver that ignores the MAC can read it.
        let v: serde_json::Value = serde_json::from_slice(&signed).unwrap();
        assert_eq!(v["host"], "h");
        assert_eq!(
            verify(&key(1), "dozor/v1/m/h/hb", &signed).unwrap(),
            json.to_vec()
        );
    }

    #[test]
    fn empty_object_signs() {
        let signed = sign(&key(1), "t", b"{}");
        let _: serde_json::Value = serde_json::from_slice(&signed).unwrap();
        assert_eq!(verify(&key(1), "t", &signed).unwrap(), b"{}".to_vec());
    }

    #[test]
    fn another_key_topic_or_body_fails() {
        let json = br#"{"v":1,"seq":5}"#;
        let signed = sign(&key(1), "dozor/v1/m/h/hb", json);
        assert_eq!(
            verify(&key(2), "dozor/v1/m/h/hb", &signed),
            Err(AuthError::BadMac)
        );
        // Replaying another host's signed message on one's own topic fails too.
        assert_eq!(
            verify(&key(1), "dozor/v1/m/x/hb", &signed),
            Err(AuthError::BadMac)
        );
        let mut tampered = signed.clone();
        let n = tampered.len();
        tampered[n - 2] = b'6';
        assert_eq!(
            verify(&key(1), "dozor/v1/m/h/hb", &tampered),
            Err(AuthError::BadMac)
        );
        assert_eq!(
            verify(&key(1), "dozor/v1/m/h/hb", json),
            Err(AuthError::Unsigned)
        );
    }

    #[test]
    fn malformed_prefixes_never_panic() {
        for p in [
            &b"{\"mac\":\""[..],
            b"{\"mac\":\"zz",
            b"{\"mac\":\"00000000000000000000000000000000000000000000000000000000000000000",
            b"{\"mac\":\"0000000000000000000000000000000000000000000000000000000000000000\"x",
            b"{\"mac\":\"0000000000000000000000000000000000000000000000000000000000000000\"",
        ] {
            assert!(split(p).is_none(), "{:?}", String::from_utf8_lossy(p));
        }
    }

    #[test]
    fn derived_values_differ_and_are_stable() {
        let s = Secret([7; 32]);
        assert_ne!(s.mqtt_password(), hex::encode(s.mac_key().0));
        assert_eq!(Secret::from_hex(&s.to_hex()), Some(s.clone()));
        assert_eq!(s.mqtt_password().len(), 64);
        assert_eq!(format!("{s:?}"), "Secret(…)");
    }
}
