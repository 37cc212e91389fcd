//! Configuration tests: flags, file, environment-free defaults and field-naming errors.

use super::*;
use clap::Parser;

fn cli(args: &[&str]) -> Cli {
    let mut full = vec!["dozor-agent"];
    full.extend_from_slice(args);
    Cli::try_parse_from(full).expect("flags parse")
}

fn load(args: &[&str]) -> Result<Config, ConfigError> {
    cli(args).load()
}

fn field_of(r: Result<Config, ConfigError>) -> String {
    match r {
        Err(ConfigError::Invalid { field, .. }) => field,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

const BASE: [&str; 6] = [
    "--mqtt-url",
    "mqtt://127.0.0.1:1883",
    "--mo",
    "1.2.643.5.1.13.13.12.2.27.1234",
    "--host-id",
    "pc-01",
];

fn with_base(extra: &[&str]) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = BASE.to_vec();
    for e in extra {
        v.push(Box::leak(e.to_string().into_boxed_str()));
    }
    v
}

#[test]
fn example_config_parses_and_validates() {
    let raw = RawConfig::from_toml(EXAMPLE_CONFIG).expect("deploy/agent.toml parses");
    let cfg = raw.validate().expect("deploy/agent.toml validates");
    assert_eq!(cfg.interval_secs, 30);
    assert!(!cfg.probes.is_empty());
    assert_eq!(cfg.spool.max_bytes, 64 * 1024 * 1024);
}

#[test]
fn one_line_install() {
    let cfg = load(&with_base(&[
        "--role",
        "server",
        "--site",
        "Поликлиника №1",
        "--probe",
        "mis=https://mis.example/health",
        "--probe",
        "lis=tcp://10.0.0.5:443",
        "--probe",
        "dns=dns://mis.example",
        "--probe",
        "remd:iemk=https://remd.example/",
        "--interval-secs",
        "1",
        "--keepalive-secs",
        "2",
        "--probe-interval-secs",
        "3",
    ]))
    .expect("valid");
    assert_eq!(cfg.mo.as_deref(), Some("1.2.643.5.1.13.13.12.2.27.1234"));
    assert_eq!(cfg.host_id, "pc-01");
    assert_eq!(cfg.role, Role::Server);
    assert_eq!(cfg.mqtt.host, "127.0.0.1");
    assert_eq!(cfg.mqtt.port, 1883);
    assert_eq!(cfg.mqtt.keepalive_secs, 2);
    assert_eq!(cfg.interval_secs, 1);
    assert_eq!(cfg.probe_interval, Duration::from_secs(3));
    let cats: Vec<_> = cfg
        .probes
        .iter()
        .map(|t| (t.name.as_str(), t.category))
        .collect();
    assert_eq!(
        cats,
        [
            ("mis", Category::Mis),
            ("lis", Category::Lis),
            ("dns", Category::Other),
            ("remd", Category::Iemk)
        ]
    );
    assert_eq!(
        cfg.probes[1].kind,
        TargetKind::Tcp {
            host: "10.0.0.5".into(),
            port: 443
        }
    );
    assert_eq!(
        cfg.probes[2].kind,
        TargetKind::Dns {
            name: "mis.example".into()
        }
    );
    assert_eq!(cfg.probes[0].timeout, Duration::from_millis(5000));
}

/// The commented `[enroll]` and `[tls]` examples stay valid keys: uncommented, they parse.
#[test]
fn example_enroll_and_tls_sections_parse_when_uncommented() {
    let start = EXAMPLE_CONFIG
        .find("# [enroll]")
        .expect("an [enroll] example");
    let end = EXAMPLE_CONFIG.find("[spool]").expect("[spool]");
    let block: String = EXAMPLE_CONFIG[start..end]
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if rest.starts_with('[') || rest.contains(" = ") => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let raw = RawConfig::from_toml(&block).unwrap_or_else(|e| panic!("{e}\n{block}"));
    assert!(raw.enroll.token_file.is_some());
    assert!(raw.enroll.url.is_some());
    assert!(raw.tls.ca_file.is_some());
    assert!(raw.tls.pin_sha256.is_some());
}

#[test]
fn defaults() {
    let cfg = load(&BASE).expect("valid");
    assert_eq!(cfg.interval_secs, 30);
    assert_eq!(cfg.probe_interval, Duration::from_secs(30));
    assert_eq!(cfg.mqtt.keepalive_secs, 30);
    assert_eq!(cfg.role, Role::Workstation);
    assert_eq!(cfg.spool.max_age, Duration::from_secs(14 * 86_400));
    assert_eq!(cfg.spool.replay_rate_per_sec, 5);
    assert_eq!(cfg.spool.resend_after, Duration::from_secs(60));
    assert_eq!(cfg.spool.synchronous, Synchronous::Full);
}

#[test]
fn errors_name_the_field() {
    let cases: &[(&[&str], &str)] = &[
        (&["--interval-secs", "0"], "interval_secs"),
        (&["--role", "desk"], "role"),
        (&["--keepalive-secs", "0"], "mqtt.keepalive_secs"),
        (&["--probe", "mis"], "--probe[0]"),
        (&["--probe", "mis=ftp://x"], "probe[0].url"),
        (&["--probe", "mis=tcp://x"], "probe[0].url"),
        (&["--probe", "a:bogus=http://x"], "probe[0].category"),
        (&["--probe", "a b=http://x"], "probe[0].name"),
        (
            &["--probe", "a=http://x", "--probe", "a=http://y"],
            "probe[1].name",
        ),
        (&["--spool-max-bytes", "10"], "spool.max_bytes"),
        (&["--spool-synchronous", "off"], "spool.synchronous"),
        (&["--tls-ca-file", "/nonexistent/ca.pem"], "tls.ca_file"),
        (&["--tls-pin-sha256", "abcd"], "tls.pin_sha256"),
        (&["--enroll-token", "a b"], "enroll.token"),
        (
            &["--enroll-token-file", "/nonexistent/token"],
            "enroll.token_file",
        ),
        (
            &[
                "--enroll-token",
                "t",
                "--enroll-token-file",
                "/etc/hostname",
            ],
            "enroll.token_file",
        ),
        (&["--enroll-url", "ftp://c"], "enroll.url"),
        (
            &["--enroll-token", "t", "--enroll-url", "http://c:8080"],
            "enroll.url",
        ),
    ];
    for (args, field) in cases {
        assert_eq!(field_of(load(&with_base(args))), *field, "args {args:?}");
    }
    assert_eq!(
        field_of(load(&["--mqtt-url", "mqtt://b", "--host-id", "h"])),
        "mo"
    );
    assert_eq!(
        field_of(load(&["--mo", "1.2", "--host-id", "h"])),
        "mqtt.url"
    );
    assert_eq!(
        field_of(load(&[
            "--mo",
            "1.2",
            "--host-id",
            "h",
            "--mqtt-url",
            "ws://b:8883"
        ])),
        "mqtt.url"
    );
    assert_eq!(
        field_of(load(&[
            "--mo",
            "1 2",
            "--host-id",
            "h",
            "--mqtt-url",
            "mqtt://b"
        ])),
        "mo"
    );
    assert_eq!(
        field_of(load(&[
            "--mo",
            "1.2",
            "--host-id",
            "h/1",
            "--mqtt-url",
            "mqtt://b"
        ])),
        "host_id"
    );
}

#[test]
fn unknown_keys_are_rejected_with_their_name() {
    let err = RawConfig::from_toml("mo = \"1.2\"\n[mqtt]\nurl = \"mqtt://b\"\nkeepalive = 3\n")
        .expect_err("unknown key");
    assert!(err.contains("keepalive"), "{err}");
    let err = RawConfig::from_toml("interval_secs = \"fast\"\n").expect_err("wrong type");
    assert!(err.contains("interval_secs"), "{err}");
}

#[test]
fn toml_probes_and_flags_combine() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.toml");
    std::fs::write(
        &path,
        r#"
mo = "1.2.3"
host_id = "from-file"
interval_secs = 10
[mqtt]
url = "mqtt://user:secret@broker.local"
[[probe]]
name = "mis"
url = "https://mis.local/"
timeout_ms = 2000
[[probe]]
name = "pacs-main"
category = "pacs"
url = "tcp://[::1]:104"
"#,
    )
    .expect("write");
    let cfg = load(&[
        "--config",
        path.to_str().expect("utf-8 path"),
        "--host-id",
        "from-flag",
        "--probe",
        "tmk=dns://tmk.local",
    ])
    .expect("valid");
    assert_eq!(cfg.host_id, "from-flag");
    assert_eq!(cfg.interval_secs, 10);
    assert_eq!(cfg.mqtt.username.as_deref(), Some("user"));
    assert_eq!(cfg.mqtt.password.as_deref(), Some("secret"));
    assert_eq!(cfg.probes.len(), 3);
    assert_eq!(cfg.probes[0].timeout, Duration::from_millis(2000));
    assert_eq!(cfg.probes[1].category, Category::Pacs);
    assert_eq!(
        cfg.probes[1].kind,
        TargetKind::Tcp {
            host: "::1".into(),
            port: 104
        }
    );
    assert_eq!(cfg.probes[2].category, Category::Tmk);
}

#[test]
fn host_id_is_derived_when_missing() {
    let cfg = load(&["--mo", "1.2", "--mqtt-url", "mqtt://b"]).expect("valid");
    assert!(valid_id(&cfg.host_id), "{}", cfg.host_id);
}

#[test]
fn sanitizes_ids() {
    let check = |raw: &str, expected: Option<&str>| {
        assert_eq!(sanitize_id(raw).as_deref(), expected, "{raw:?}");
    };
    check("0123abcdEF", Some("0123abcdef"));
    check("{1A2B-3C}", Some("-1a2b-3c-"));
    check("..host", Some("host"));
    check("ПК-12", Some("pk-12"));
    check("Регистратура_3", Some("registratura_3"));
    check("Ёж", Some("ezh"));
    check("ь", None);
    check("", None);
    check(&"x".repeat(100), Some(&"x".repeat(64)));
}

#[test]
fn a_token_makes_mo_optional_and_defaults_the_url_to_the_broker() {
    let cfg = load(&[
        "--mqtt-url",
        "mqtt://broker.miac.local",
        "--enroll-token",
        "tok",
    ])
    .expect("valid");
    assert_eq!(cfg.mo, None);
    assert_eq!(cfg.enroll.token.as_ref().map(Token::expose), Some("tok"));
    assert_eq!(cfg.enroll.url.as_str(), "https://broker.miac.local:8443/");
    assert!(cfg.tls.is_some(), "HTTPS enrollment builds the TLS client");
    let cfg = load(&["--mqtt-url", "mqtt://[::1]:1883", "--enroll-token", "tok"]).expect("v6");
    assert_eq!(cfg.enroll.url.as_str(), "https://[::1]:8443/");
}

#[test]
fn the_token_is_never_shown() {
    let cfg = load(&with_base(&["--enroll-token", "s3cr3t-token"])).expect("valid");
    assert!(!format!("{cfg:?}").contains("s3cr3t"));
    let raw = cli(&with_base(&["--enroll-token", "s3cr3t-token"]))
        .to_raw()
        .expect("raw");
    assert!(!format!("{raw:?}").contains("s3cr3t"));
    // Nor in errors about it.
    let err = load(&with_base(&["--enroll-token", "s3cr3t token"])).expect_err("invalid");
    assert!(!err.to_string().contains("s3cr3t"), "{err}");
}

#[test]
fn token_file_is_read_and_trimmed_and_flags_replace_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tok = dir.path().join("token");
    std::fs::write(&tok, "from-file\n").expect("write");
    let conf = dir.path().join("agent.toml");
    std::fs::write(
        &conf,
        format!(
            "[mqtt]\nurl = \"mqtt://b\"\n[enroll]\ntoken_file = {:?}\n",
            tok.display().to_string()
        ),
    )
    .expect("write");
    let path = conf.to_str().expect("utf-8");
    let cfg = load(&["--config", path]).expect("valid");
    assert_eq!(
        cfg.enroll.token.as_ref().map(Token::expose),
        Some("from-file")
    );
    // A token flag (or DOZOR_ENROLL_TOKEN) replaces the file's token_file.
    let cfg = load(&["--config", path, "--enroll-token", "from-flag"]).expect("valid");
    assert_eq!(
        cfg.enroll.token.as_ref().map(Token::expose),
        Some("from-flag")
    );
    std::fs::write(&tok, "  \n").expect("write");
    assert_eq!(field_of(load(&["--config", path])), "enroll.token_file");
}

#[test]
fn plain_http_enrollment_only_when_allowed() {
    let args = with_base(&["--enroll-token", "t", "--enroll-url", "http://c:8080"]);
    assert_eq!(field_of(load(&args)), "enroll.url");
    let mut allowed = args.clone();
    allowed.push("--enroll-allow-plain-http");
    let cfg = load(&allowed).expect("allowed in a lab");
    assert!(cfg.enroll.allow_plain_http);
    assert_eq!(cfg.tls, None, "nothing needs TLS");
}

#[test]
fn mqtts_uses_tls_on_8883_and_a_ca_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = rcgen::KeyPair::generate().expect("key");
    let ca = rcgen::CertificateParams::new(vec!["mqtt.miac.local".into()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).expect("write");
    let ca_arg = ca_path.to_str().expect("utf-8");
    let cfg = load(&[
        "--mo",
        "1.2",
        "--mqtt-url",
        "mqtts://mqtt.miac.local",
        "--tls-ca-file",
        ca_arg,
        "--tls-pin-sha256",
        &"ab".repeat(32),
    ])
    .expect("valid");
    assert!(cfg.mqtt.tls);
    assert_eq!(cfg.mqtt.port, 8883);
    assert!(cfg.tls.is_some());
    // A CA file that holds no certificate is an error naming the field, never plain MQTT.
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "not a certificate").expect("write");
    assert_eq!(
        field_of(load(&[
            "--mo",
            "1.2",
            "--mqtt-url",
            "mqtts://mqtt.miac.local",
            "--tls-ca-file",
            bad.to_str().expect("utf-8"),
        ])),
        "tls.ca_file"
    );
}
