//! The per-МО lists, versions and the outbox.

use super::config::RawProbes;
use super::*;
use dozor_proto::Category;

fn t(name: &str, url: &str) -> CfgTarget {
    CfgTarget {
        name: name.into(),
        category: Category::parse(name).unwrap_or(Category::Other),
        url: url.into(),
        timeout_ms: None,
    }
}

fn names(v: &[CfgTarget]) -> Vec<(&str, &str)> {
    v.iter()
        .map(|t| (t.name.as_str(), t.url.as_str()))
        .collect()
}

#[test]
fn an_mo_overrides_adds_and_removes() {
    let set = ProbeSet {
        region: vec![
            t("mis", "https://mis/"),
            t("lis", "tcp://lis:443"),
            t("pacs", "https://pacs/"),
        ],
        mo: BTreeMap::from([(
            "1.2.3".to_string(),
            MoProbes {
                without: vec!["pacs".into()],
                targets: vec![t("mis", "https://mis-north/"), t("tmk", "https://tmk/")],
            },
        )]),
    };
    assert_eq!(
        names(&set.for_mo("1.2.3")),
        [
            ("mis", "https://mis-north/"),
            ("lis", "tcp://lis:443"),
            ("tmk", "https://tmk/")
        ]
    );
    assert_eq!(
        names(&set.for_mo("9.9.9")),
        [
            ("mis", "https://mis/"),
            ("lis", "tcp://lis:443"),
            ("pacs", "https://pacs/")
        ]
    );
}

#[test]
fn versions_move_only_forward_and_only_on_change() {
    let first = Versioned::next(None, "a", 1_000);
    assert_eq!(first.version, 1_000);
    assert_eq!(Versioned::next(Some(&first), "a", 5_000), first);
    assert_eq!(Versioned::next(Some(&first), "b", 5_000).version, 5_000);
    // The clock went back: still newer than what agents hold.
    assert_eq!(Versioned::next(Some(&first), "b", 10).version, 1_001);
}

#[test]
fn the_outbox_sends_each_version_once_per_host_and_again_after_a_reconnect() {
    let hosts = [("m", "a"), ("m", "b"), ("n", "a")];
    let mut o = Outbox::default();
    let due = o.due(hosts.iter().copied(), 7, 2);
    assert_eq!(due.len(), 2);
    for (mo, host) in &due {
        o.mark_sent(mo, host, 7);
    }
    assert_eq!(
        o.due(hosts.iter().copied(), 7, 10),
        [("n".to_string(), "a".to_string())]
    );
    o.mark_sent("n", "a", 7);
    assert!(o.due(hosts.iter().copied(), 7, 10).is_empty());
    assert_eq!(o.due(hosts.iter().copied(), 8, 10).len(), 3);
    o.forget_all();
    assert_eq!(o.due(hosts.iter().copied(), 7, 10).len(), 3);
}

/// The count behind the snapshot walk's shortcut: hosts handed a version, each once, per
/// version, reset by a reconnect.
#[test]
fn the_outbox_counts_hosts_handed_a_version() {
    let mut o = Outbox::default();
    assert_eq!(o.sent_count(7), 0);
    o.mark_sent("m", "a", 7);
    o.mark_sent("m", "a", 7);
    o.mark_sent("n", "a", 7);
    assert_eq!(o.sent_count(7), 2);
    assert_eq!(o.sent_count(8), 0);
    o.mark_sent("m", "a", 8);
    assert_eq!((o.sent_count(8), o.sent_count(7)), (1, 1));
    o.mark_sent("n", "a", 8);
    o.mark_sent("m", "b", 8);
    assert_eq!(o.sent_count(8), 3);
    o.forget_all();
    assert_eq!(o.sent_count(8), 0);
    o.mark_sent("m", "a", 8);
    assert_eq!(o.sent_count(8), 1);
}

#[test]
fn messages_are_signed_for_their_host_and_decode() {
    let key = dozor_proto::auth::Secret([3; 32]).mac_key();
    let now = 1_763_900_000_000;
    let (topic, body) = message(
        "1.2.3",
        "pc-1",
        42,
        now,
        vec![t("mis", "https://mis/")],
        Some(&key),
    );
    assert_eq!(topic, "dozor/v1/1.2.3/pc-1/cfg");
    let unsigned = auth::verify(&key, &topic, &body).unwrap();
    let cfg = dozor_proto::decode_cfg(&topic, &unsigned, &dozor_proto::Limits::DEFAULT).unwrap();
    assert_eq!((cfg.version, cfg.targets.len()), (42, 1));
    // Open mode: unsigned.
    let (_, plain) = message("1.2.3", "pc-1", 42, now, Vec::new(), None);
    assert!(dozor_proto::decode_cfg(&topic, &plain, &dozor_proto::Limits::DEFAULT).is_ok());
}

fn check_err(text: &str, field: &str) {
    let raw: crate::config::RawConfig = toml::from_str(text).unwrap();
    let e = raw.probes.validate().unwrap_err().to_string();
    assert!(e.contains(field), "{e:?} should name {field}");
}

#[test]
fn errors_name_the_field() {
    let mis = "[[probes.target]]\nname = \"mis\"\nurl = \"https://mis/\"\n";
    check_err(
        "[[probes.target]]\nname = \"m i s\"\nurl = \"https://mis/\"",
        "probes.target[0].name",
    );
    check_err(
        "[[probes.target]]\nname = \"mis\"\nurl = \"ftp://mis/\"",
        "probes.target[0].url",
    );
    check_err(
        "[[probes.target]]\nname = \"lis\"\nurl = \"tcp://lis\"",
        "probes.target[0].url",
    );
    check_err(
        "[[probes.target]]\nname = \"mis\"\nurl = \"https://mis/\"\ncategory = \"misc\"",
        "probes.target[0].category",
    );
    check_err(
        "[[probes.target]]\nname = \"mis\"\nurl = \"https://mis/\"\ntimeout_ms = 0",
        "probes.target[0].timeout_ms",
    );
    check_err(&format!("{mis}{mis}"), "probes.target[1].name");
    check_err(
        &format!("{mis}[[probes.mo]]\nmo = \"a b\""),
        "probes.mo[0].mo",
    );
    check_err(
        &format!("{mis}[[probes.mo]]\nmo = \"1.2\"\nwithout = [\"pacs\"]"),
        "probes.mo[0].without[0]",
    );
    check_err(
        &format!(
            "{mis}[[probes.mo]]\nmo = \"1.2\"\n[[probes.mo.target]]\nname = \"x\"\nurl = \"dns://\""
        ),
        "probes.mo[0].target[0].url",
    );
    check_err(
        &format!("{mis}[[probes.mo]]\nmo = \"1.2\"\n[[probes.mo]]\nmo = \"1.2\""),
        "probes.mo[1].mo",
    );
    let many: String = (0..65)
        .map(|i| format!("[[probes.target]]\nname = \"t{i}\"\nurl = \"https://t{i}/\"\n"))
        .collect();
    check_err(&many, "probes.target");
    check_err("[probes]\nwatch_secs = 0", "probes.watch_secs");
    let unknown = toml::from_str::<crate::config::RawConfig>("[probes]\nwatch_sec = 1");
    assert!(unknown.unwrap_err().to_string().contains("watch_sec"));
}

/// The commented `[[probes.*]]` example of deploy/collector.toml, uncommented.
fn shipped_example() -> String {
    let mut out = String::new();
    let mut in_table = false;
    for line in crate::config::DEFAULT_CONFIG.lines() {
        if let Some(rest) = line.strip_prefix("# [[probes.") {
            in_table = true;
            out.push_str("[[probes.");
            out.push_str(rest);
            out.push('\n');
            continue;
        }
        let kv = line.strip_prefix("# ").filter(|r| {
            r.split_once(" = ").is_some_and(|(k, _)| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            })
        });
        match kv {
            Some(kv) if in_table => {
                out.push_str(kv);
                out.push('\n');
            }
            _ => in_table = false,
        }
    }
    out
}

#[test]
fn the_shipped_example_validates() {
    let text = shipped_example();
    let raw: crate::config::RawConfig = toml::from_str(&text).unwrap();
    let p = RawProbes { ..raw.probes }.validate().unwrap();
    let region: Vec<_> = p.set.region.iter().map(|t| t.category).collect();
    assert!(
        region.contains(&Category::Mis) && region.contains(&Category::Iemk),
        "{text}"
    );
    assert!(
        !p.set.mo.is_empty(),
        "the example shows a per-МО override:\n{text}"
    );
}
