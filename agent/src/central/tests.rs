//! Decisions on received `cfg` messages, the merge with local targets, the saved file.

use super::*;
use dozor_proto::auth::Secret;
use dozor_proto::{Category, Cfg, SCHEMA_VERSION};

const TOPIC: &str = "dozor/v1/1.2.3/pc-1/cfg";
const NOW: i64 = 1_763_900_000_000;

fn wire(name: &str, url: &str) -> CfgTarget {
    CfgTarget {
        name: name.into(),
        category: Category::parse(name).unwrap_or(Category::Other),
        url: url.into(),
        timeout_ms: None,
    }
}

fn json(version: u64, targets: Vec<CfgTarget>) -> Vec<u8> {
    serde_json::to_vec(&Cfg {
        v: SCHEMA_VERSION,
        mo: "1.2.3".into(),
        host: "pc-1".into(),
        version,
        ts: NOW,
        targets,
    })
    .unwrap()
}

fn key(b: u8) -> MacKey {
    Secret([b; 32]).mac_key()
}

fn urls(d: &Decision) -> Vec<String> {
    match d {
        Decision::Apply { targets, .. } => targets
            .iter()
            .map(|t| match &t.kind {
                crate::probe::TargetKind::Http(u) => u.to_string(),
                other => format!("{other:?}"),
            })
            .collect(),
        Decision::Stale { .. } => Vec::new(),
    }
}

#[test]
fn an_enrolled_agent_applies_only_newer_signed_messages() {
    let mut c = Central::new(TOPIC.into(), Some(key(1)), 5000, 0);
    let signed = |v, t| auth::sign(&key(1), TOPIC, &json(v, t));
    let d = c
        .decide(&signed(10, vec![wire("mis", "https://mis/a")]), NOW)
        .unwrap();
    assert_eq!(urls(&d), ["https://mis/a"]);
    assert_eq!(c.applied_version(), 10);
    // The retained copy again, and an older one: kept as is.
    assert!(matches!(
        c.decide(&signed(10, vec![]), NOW),
        Ok(Decision::Stale {
            applied: 10,
            got: 10
        })
    ));
    assert!(matches!(
        c.decide(&signed(9, vec![]), NOW),
        Ok(Decision::Stale { .. })
    ));
    let d = c
        .decide(&signed(11, vec![wire("mis", "https://mis/b")]), NOW)
        .unwrap();
    assert_eq!(urls(&d), ["https://mis/b"]);
    assert_eq!(
        c.counts,
        Counts {
            applied: 2,
            stale: 2,
            refused: 0
        }
    );
}

#[test]
fn forged_unsigned_or_misaddressed_messages_are_refused_and_counted() {
    let mut c = Central::new(TOPIC.into(), Some(key(1)), 5000, 5);
    let evil = vec![wire("mis", "https://evil/")];
    // Unsigned.
    assert_eq!(
        c.decide(&json(99, evil.clone()), NOW),
        Err(Refused::Unsigned)
    );
    // Signed with another host's key.
    let forged = auth::sign(&key(2), TOPIC, &json(99, evil.clone()));
    assert_eq!(c.decide(&forged, NOW), Err(Refused::BadMac));
    // Another host's genuine message replayed on this topic.
    let other = "dozor/v1/1.2.3/pc-2/cfg";
    assert_eq!(
        c.decide(&auth::sign(&key(1), other, &json(99, evil)), NOW),
        Err(Refused::BadMac)
    );
    // Signed, but a target the agent cannot probe.
    let bad = auth::sign(&key(1), TOPIC, &json(99, vec![wire("mis", "ftp://mis/")]));
    assert!(matches!(
        c.decide(&bad, NOW),
        Err(Refused::BadTarget { .. })
    ));
    assert_eq!(c.decide(b"garbage", NOW), Err(Refused::Unsigned));
    assert_eq!(c.applied_version(), 5);
    assert_eq!(c.counts.refused, 5);
}

#[test]
fn an_agent_without_identity_takes_unsigned_messages() {
    let mut c = Central::new(TOPIC.into(), None, 5000, 0);
    assert!(matches!(
        c.decide(&json(1, vec![wire("mis", "https://m/")]), NOW),
        Ok(Decision::Apply { .. })
    ));
    // A MAC it cannot check is stripped.
    let signed = auth::sign(&key(1), TOPIC, &json(2, vec![]));
    assert!(matches!(c.decide(&signed, NOW), Ok(Decision::Apply { .. })));
    assert_eq!(c.decide(b"{}", NOW), Err(Refused::Invalid(Reject::BadJson)));
}

#[test]
fn local_targets_pin_and_add() {
    let t = |name: &str, url: &str| to_targets(&[wire(name, url)], 5000).unwrap().remove(0);
    let local = [t("mis", "https://local-mis/"), t("extra", "https://extra/")];
    let central = [t("mis", "https://central-mis/"), t("lis", "https://lis/")];
    let e = effective(&local, &central);
    let names: Vec<_> = e.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["mis", "extra", "lis"]);
    assert_eq!(e[0], local[0]);
}

#[test]
fn the_applied_configuration_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(load(dir.path()).unwrap(), None);
    let s = Stored {
        version: 7,
        applied_at_ms: NOW,
        targets: vec![wire("mis", "https://mis/")],
    };
    save(dir.path(), &s).unwrap();
    assert_eq!(load(dir.path()).unwrap(), Some(s));
    let (v, targets) = load_applied(dir.path(), 5000);
    assert_eq!((v, targets.len()), (7, 1));
    std::fs::write(dir.path().join(FILE_NAME), b"{broken").unwrap();
    assert_eq!(load_applied(dir.path(), 5000), (0, Vec::new()));
}
