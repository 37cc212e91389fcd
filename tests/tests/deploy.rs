//! Packages and rollout (issue 12), against the packages `deploy/package` built into
//! `target/packages/` (revision 1, and revision 2 as the upgrade):
//! - the four packages hold what docs/deploy.md says (files, conffiles, user creation, unit),
//!   both units pass `systemd-analyze verify` and score below 4.0 in `systemd-analyze security`;
//! - the Ansible role installs the real agent .deb on this machine (`ansible-playbook -c
//!   local`), the agent started from the installed unit's `ExecStart` as the unit's `User`
//!   enrolls with the МО's token in a real collector and is online; an upgrade keeps its
//!   identity and spool; purge removes them.
//!
//! Needs root, dpkg, rpm, systemd-analyze and ansible-playbook: `tests/deploy.sh` installs them,
//! builds the packages and runs this file (`--features deploy`); it is not part of a plain
//! `cargo test --workspace` because it installs packages into the machine it runs on.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dozor_tests::{Broker, Collector, Proc, bin, wait_for};

const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The tests that install into this machine take turns.
static SYSTEM: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const MO: &str = "1.2.643.5.1.13.13.12.2.27.4242";
const SITE: &str = "ФАП с. Ивановка";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// target/packages/NAME of `deploy/package`; fails with the command to run when missing.
fn package(name: &str) -> PathBuf {
    let p = root().join("target/packages").join(name);
    assert!(
        p.exists(),
        "{} not found: build the packages first (deploy/package; tests/deploy.sh does)",
        p.display()
    );
    p
}

fn deb(name: &str, revision: u32) -> PathBuf {
    package(&format!("{name}_{VERSION}-{revision}_amd64.deb"))
}

fn rpm(name: &str) -> PathBuf {
    package(&format!("{name}-{VERSION}-1.x86_64.rpm"))
}

/// Runs a command; returns stdout+stderr; panics with them when it fails.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{text}",
        out.status
    );
    text
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// Files and control data of a .deb: (contents listing, conffiles, postinst, postrm).
fn inspect_deb(name: &str) {
    let deb = deb(name, 1);
    let d = path_str(&deb);
    let info = run("dpkg-deb", &["-I", d]);
    assert!(info.contains(&format!("Package: {name}")), "{info}");
    assert!(info.contains("Depends: libc6 (>= 2.17), passwd"), "{info}");
    let files = run("dpkg-deb", &["-c", d]);
    let short = name.trim_start_matches("dozor-");
    for f in [
        format!("./usr/bin/{name}"),
        format!("./etc/dozor/{short}.toml"),
        format!("/systemd/system/{name}.service"),
    ] {
        assert!(files.contains(&f), "{name}.deb lacks {f}:\n{files}");
    }
    let conffiles = run("dpkg-deb", &["-I", d, "conffiles"]);
    assert_eq!(
        conffiles.trim(),
        format!("/etc/dozor/{short}.toml"),
        "{name} conffiles"
    );
    let postinst = run("dpkg-deb", &["-I", d, "postinst"]);
    assert!(
        postinst.contains(&format!("useradd --system --gid {name}")),
        "{name} postinst creates no system user:\n{postinst}"
    );
    assert!(
        postinst.contains("deb-systemd-helper"),
        "{name} postinst does not enable the unit:\n{postinst}"
    );
    let postrm = run("dpkg-deb", &["-I", d, "postrm"]);
    assert!(
        postrm.contains("\"$1\" = purge") && postrm.contains(&format!("rm -rf /var/lib/{name}")),
        "{name} postrm does not remove the state on purge:\n{postrm}"
    );
    if name == "dozor-agent" {
        assert!(postinst.contains("dozor-set-token"), "{postinst}");
        assert!(
            files.contains("./usr/lib/dozor-agent/dozor-set-token"),
            "{files}"
        );
    }
}

fn inspect_rpm(name: &str) {
    let rpm = rpm(name);
    let r = path_str(&rpm);
    let info = run("rpm", &["-qip", r]);
    assert!(info.contains(&format!("Name        : {name}")), "{info}");
    assert!(info.contains("Release     : 1"), "{info}");
    let files = run("rpm", &["-qlp", r]);
    let short = name.trim_start_matches("dozor-");
    for f in [
        format!("/usr/bin/{name}"),
        format!("/etc/dozor/{short}.toml"),
        format!("/usr/lib/systemd/system/{name}.service"),
    ] {
        assert!(
            files.lines().any(|l| l == f),
            "{name}.rpm lacks {f}:\n{files}"
        );
    }
    let config = run("rpm", &["-qcp", r]);
    assert_eq!(config.trim(), format!("/etc/dozor/{short}.toml"));
    let scripts = run("rpm", &["-qp", "--scripts", r]);
    assert!(
        scripts.contains("preinstall scriptlet") && scripts.contains("useradd --system"),
        "{name}.rpm %pre creates no system user:\n{scripts}"
    );
    assert!(
        scripts.contains("postuninstall scriptlet")
            && scripts.contains(&format!("rm -rf /var/lib/{name}"))
            && scripts.contains("if [ \"$1\" -ge 1 ]"),
        "{name}.rpm %postun does not keep the state on upgrade and remove it on erase:\n{scripts}"
    );
    let deps = run("rpm", &["-qRp", r]);
    assert!(deps.contains("glibc >= 2.17"), "{deps}");
}

/// `systemd-analyze verify` and `security --offline` on the unit as the .deb installs it,
/// with `ExecStart` pointed at the extracted binary (verify checks that it is executable; the
/// package is not installed here). Returns the exposure score.
fn unit_checks(name: &str) -> f64 {
    let tree = tempfile::tempdir().unwrap();
    let t = path_str(tree.path());
    run("dpkg-deb", &["-x", path_str(&deb(name, 1)), t]);
    let text = std::fs::read_to_string(format!("{t}/usr/lib/systemd/system/{name}.service"))
        .unwrap_or_else(|e| panic!("{name}.service not in the .deb: {e}"));
    assert!(
        text.contains(&format!("ExecStart=/usr/bin/{name} ")),
        "{text}"
    );
    let unit = format!("{t}/{name}.service");
    std::fs::write(
        &unit,
        text.replace("ExecStart=/usr/bin/", &format!("ExecStart={t}/usr/bin/")),
    )
    .unwrap();
    run("systemd-analyze", &["verify", "--man=no", &unit]);
    let report = run(
        "systemd-analyze",
        &["security", "--offline=true", "--no-pager", &unit],
    );
    let score: f64 = report
        .lines()
        .find_map(|l| l.split("Overall exposure level for ").nth(1))
        .and_then(|rest| rest.split(':').nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    println!("{name}.service: systemd-analyze security exposure {score}");
    score
}

#[test]
fn packages_hold_binary_conffile_user_and_unit() {
    for name in ["dozor-agent", "dozor-collector"] {
        inspect_deb(name);
        inspect_rpm(name);
        let score = unit_checks(name);
        assert!(score < 4.0, "{name}.service exposure {score} ≥ 4.0");
    }
}

/// The unit's `[Service]` keys as the package installed them.
struct Unit {
    exec_start: Vec<String>,
    user: String,
    environment_file: Option<String>,
    working_directory: Option<String>,
}

fn installed_unit(name: &str) -> Unit {
    let path = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .iter()
        .map(|d| format!("{d}/{name}.service"))
        .find(|p| Path::new(p).exists())
        // The test just installed the package: a missing unit is the package's defect (fail).
        .unwrap_or_else(|| panic!("the installed package holds no {name}.service"));
    let text = std::fs::read_to_string(&path).unwrap();
    let key = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(str::to_owned)
    };
    Unit {
        exec_start: key("ExecStart")
            .expect("ExecStart")
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        user: key("User").expect("User"),
        environment_file: key("EnvironmentFile"),
        working_directory: key("WorkingDirectory"),
    }
}

/// Starts the installed agent as systemd would (ExecStart, User, EnvironmentFile,
/// WorkingDirectory), without systemd: there is none running here.
fn start_from_unit(log: &Path) -> Proc {
    let u = installed_unit("dozor-agent");
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={}", u.user))
        .arg(format!("--regid={}", u.user))
        .arg("--init-groups")
        .arg("--")
        .args(&u.exec_start)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("RUST_LOG", "info");
    if let Some(f) = &u.environment_file {
        // "-/etc/dozor/agent.env": optional file of KEY=VALUE lines.
        let f = f.trim_start_matches('-');
        for line in std::fs::read_to_string(f).unwrap_or_default().lines() {
            if let Some((k, v)) = line.split_once('=')
                && !k.trim_start().starts_with('#')
            {
                cmd.env(k.trim(), v.trim());
            }
        }
    }
    if let Some(d) = &u.working_directory {
        cmd.current_dir(d);
    }
    let err = std::fs::File::create(log).unwrap();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .expect("start the agent from the unit's ExecStart");
    Proc {
        name: "dozor-agent (unit)".into(),
        child: Some(child),
    }
}

/// An inventory shaped like deploy/ansible/inventory.example.yml: the МО's group holds its OID
/// and names its token in the vault, the site's group holds the site, and this machine is
/// the one host.
fn inventory(dir: &Path) -> PathBuf {
    let inv = serde_json::json!({
        "all": {"children": {"dozor_agents": {"children": {"mo_4242": {
            "vars": {
                "dozor_mo": MO,
                "dozor_enroll_token": format!("{{{{ vault_dozor_tokens['{MO}'] }}}}"),
            },
            "children": {"mo_4242_fap": {
                "vars": {"dozor_site": SITE},
                "hosts": {"localhost": {
                    "ansible_connection": "local",
                    "ansible_python_interpreter": "/usr/bin/python3",
                }},
            }},
        }}}}}
    });
    let path = dir.join("inventory.json");
    // JSON is YAML: ansible's yaml inventory plugin reads it.
    std::fs::write(&path, inv.to_string()).unwrap();
    path
}

/// Runs the role against this machine; returns the output and how long it took.
fn ansible(inventory: &Path, vars: &Path, extra: &[&str]) -> (String, Duration) {
    let play = root().join("deploy/ansible/site.yml");
    let start = Instant::now();
    let out = Command::new("ansible-playbook")
        .arg("-i")
        .arg(inventory)
        .arg("-e")
        .arg(format!("@{}", vars.display()))
        .args(extra)
        .arg(play)
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_HOST_KEY_CHECKING", "0")
        .env("ANSIBLE_LOCALHOST_WARNING", "0")
        .env("ANSIBLE_INVENTORY_UNPARSED_WARNING", "0")
        .output()
        .expect("ansible-playbook");
    let took = start.elapsed();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "ansible-playbook failed:\n{text}");
    (text, took)
}

fn purge_agent() {
    let _ = Command::new("dpkg")
        .args(["--purge", "dozor-agent"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// `meta.inst` and `meta.next_seq` of the installed agent's spool, read from a copy (with its
/// WAL) so that no file of root's appears in the agent's directory and a running agent is
/// not disturbed.
fn spool_meta() -> (String, u64) {
    let copy = tempfile::tempdir().unwrap();
    for suffix in ["", "-wal"] {
        let src = format!("/var/lib/dozor-agent/spool.db{suffix}");
        if Path::new(&src).exists() {
            std::fs::copy(&src, copy.path().join(format!("spool.db{suffix}"))).unwrap();
        }
    }
    let db = rusqlite::Connection::open(copy.path().join("spool.db")).expect("spool.db");
    let get = |k: &str| -> String {
        db.query_row(
            "SELECT CAST(value AS TEXT) FROM meta WHERE key = ?1",
            [k],
            |r| r.get(0),
        )
        .unwrap_or_else(|e| panic!("meta {k}: {e}"))
    };
    (get("inst"), get("next_seq").parse().expect("next_seq"))
}

/// Creates an enrollment token for `MO` with the collector's CLI, as a region admin would.
fn create_token(data: &Path) -> String {
    let out = Command::new(bin("dozor-collector"))
        .arg("--data-dir")
        .arg(data)
        .args(["token", "create", "--mo", MO, "--note", "deploy test"])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "token create");
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(!token.is_empty());
    token
}

async fn wait_online(c: &Collector, what: &str) -> serde_json::Value {
    wait_for(Duration::from_secs(60), || async {
        let hosts = c.get("/api/v1/hosts").await;
        hosts
            .as_array()?
            .iter()
            .find(|h| h["mo"] == MO && h["state"] == "online")
            .cloned()
    })
    .await
    .unwrap_or_else(|| panic!("{what}: the agent is not online in the collector within 60 s"))
}

fn mode_owner(path: &str) -> (u32, String) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let owner = run("stat", &["-c", "%U:%G", path]).trim().to_owned();
    (m.mode() & 0o7777, owner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ansible_installs_enrolls_upgrades_and_purges_the_agent() {
    let _turn = SYSTEM.lock().await;
    purge_agent();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("collector");
    std::fs::create_dir_all(&data).unwrap();
    let c = Collector::start(
        &Broker::Embedded(0),
        &data,
        &["--security-mode", "enrolled"],
    );
    let token = create_token(&data);

    // Group and host variables as the inventory would give them (the token as from the vault),
    // in a vars file so the token is on no command line.
    let vars_for = |deb: &Path| {
        serde_json::json!({
            "dozor_agent_package_file": deb,
            "dozor_mqtt_url": c.mqtt_url(),
            "dozor_enroll_url": format!("http://{}", c.http),
            "dozor_enroll_allow_plain_http": true,
            "dozor_role": "workstation",
            "vault_dozor_tokens": {MO: token},
            "dozor_interval_secs": 2,
            "dozor_probes": [{"name": "mis", "url": format!("http://{}/healthz", c.http)}],
            "dozor_agent_manage_service": false,
        })
    };
    let inv = inventory(dir.path());
    let vars = dir.path().join("vars.json");
    std::fs::write(&vars, vars_for(&deb("dozor-agent", 1)).to_string()).unwrap();

    // 1. Install.
    let (out, took) = ansible(&inv, &vars, &[]);
    println!("ansible install run: {took:?}");
    assert!(
        !out.contains(&token),
        "the token appears in Ansible's output"
    );
    let status = run(
        "dpkg-query",
        &["-W", "-f=${Status} ${Version}", "dozor-agent"],
    );
    assert_eq!(status, format!("install ok installed {VERSION}-1"));
    let conf = std::fs::read_to_string("/etc/dozor/agent.toml").unwrap();
    assert!(conf.contains(&format!("site = \"{SITE}\"")), "{conf}");
    assert_eq!(
        mode_owner("/etc/dozor/enroll-token"),
        (0o640, "root:dozor-agent".into())
    );
    let env = std::fs::read_to_string("/etc/dozor/agent.env").unwrap();
    assert!(
        env.contains("DOZOR_ENROLL_TOKEN_FILE=/etc/dozor/enroll-token"),
        "{env}"
    );
    assert!(!env.contains(&token), "agent.env holds the token itself");
    // The installed unit, with the installed binary and user.
    run(
        "systemd-analyze",
        &[
            "verify",
            "--man=no",
            "/usr/lib/systemd/system/dozor-agent.service",
        ],
    );
    run(
        "setpriv",
        &[
            "--reuid=dozor-agent",
            "--regid=dozor-agent",
            "--init-groups",
            "--",
            "/usr/bin/dozor-agent",
            "--version",
        ],
    );

    // 2. Start from the unit; enroll; online.
    let log = dir.path().join("agent.log");
    let started = Instant::now();
    let mut agent = start_from_unit(&log);
    let host = wait_online(&c, "first start").await;
    println!(
        "enrolled and online {:?} after the start",
        started.elapsed()
    );
    assert_eq!(host["site"], SITE, "{host}");
    assert_eq!(
        mode_owner("/var/lib/dozor-agent/identity.json"),
        (0o600, "dozor-agent:dozor-agent".into())
    );
    let identity = std::fs::read("/var/lib/dozor-agent/identity.json").unwrap();
    assert_eq!(agent.terminate(), Some(0), "agent stops cleanly on SIGTERM");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("enrolled; identity saved"), "{logged}");
    assert!(
        !logged.contains(&token),
        "the token appears in the agent's log"
    );
    let (inst, next_seq) = spool_meta();
    assert!(next_seq > 1, "the agent spooled nothing");

    // 3. Upgrade to the rebuilt package (revision 2): identity and spool stay.
    std::fs::write(&vars, vars_for(&deb("dozor-agent", 2)).to_string()).unwrap();
    let (_, took) = ansible(&inv, &vars, &[]);
    println!("ansible upgrade run: {took:?}");
    let status = run("dpkg-query", &["-W", "-f=${Version}", "dozor-agent"]);
    assert_eq!(status, format!("{VERSION}-2"));
    assert_eq!(
        std::fs::read("/var/lib/dozor-agent/identity.json").unwrap(),
        identity,
        "identity.json changed on upgrade"
    );
    let (inst_after, next_after) = spool_meta();
    assert_eq!(inst_after, inst, "the spool was recreated on upgrade");
    assert_eq!(next_after, next_seq);
    let mut agent = start_from_unit(&log);
    let again = wait_online(&c, "after the upgrade").await;
    assert_eq!(
        again["host_id"], host["host_id"],
        "a new identity after upgrade"
    );
    let hosts = c.get("/api/v1/hosts").await;
    let of_mo = hosts
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["mo"] == MO)
        .count();
    assert_eq!(of_mo, 1, "the upgraded agent enrolled again: {hosts}");
    wait_for(Duration::from_secs(30), || async {
        (spool_meta().1 > next_seq).then_some(())
    })
    .await
    .expect("the upgraded agent continues the spool's numbering");
    assert_eq!(agent.terminate(), Some(0));

    // 4. Purge through the role: identity, spool, token, user gone.
    let (_, took) = ansible(&inv, &vars, &["-e", "dozor_agent_state=absent"]);
    println!("ansible purge run: {took:?}");
    for gone in [
        "/var/lib/dozor-agent",
        "/etc/dozor/agent.toml",
        "/etc/dozor/enroll-token",
        "/etc/dozor/agent.env",
        "/usr/bin/dozor-agent",
    ] {
        assert!(!Path::new(gone).exists(), "{gone} survived the purge");
    }
    let user = Command::new("getent")
        .args(["passwd", "dozor-agent"])
        .output()
        .unwrap();
    assert!(
        !user.status.success(),
        "the dozor-agent user survived the purge"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_sh_installs_the_deb_and_the_agent_enrolls() {
    let _turn = SYSTEM.lock().await;
    purge_agent();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("collector");
    std::fs::create_dir_all(&data).unwrap();
    let c = Collector::start(
        &Broker::Embedded(0),
        &data,
        &["--security-mode", "enrolled"],
    );
    let token = create_token(&data);
    // The token on stdin (`--token -`), as an installer typing it or a script piping it.
    let started = Instant::now();
    let mut child = Command::new(root().join("deploy/install.sh"))
        .arg("--package")
        .arg(deb("dozor-agent", 1))
        .args(["--collector", &c.mqtt_url(), "--mo", MO, "--site", SITE])
        .args([
            "--enroll-url",
            &format!("http://{}", c.http),
            "--allow-plain-http",
        ])
        .args(["--probe", &format!("mis=http://{}/healthz", c.http)])
        .args(["--token", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("deploy/install.sh");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{token}").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "install.sh failed:\n{text}");
    println!("install.sh run: {:?}", started.elapsed());
    assert!(
        !text.contains(&token),
        "install.sh printed the token:\n{text}"
    );
    assert!(text.contains("enrollment token in place"), "{text}");
    let conf = std::fs::read_to_string("/etc/dozor/agent.toml").unwrap();
    assert!(conf.contains(&format!("site = \"{SITE}\"")), "{conf}");
    assert_eq!(
        std::fs::read_to_string("/etc/dozor/enroll-token")
            .unwrap()
            .trim(),
        token
    );
    assert_eq!(
        mode_owner("/etc/dozor/enroll-token"),
        (0o640, "root:dozor-agent".into())
    );

    let log = dir.path().join("agent.log");
    let mut agent = start_from_unit(&log);
    wait_online(&c, "installed by install.sh").await;
    assert_eq!(agent.terminate(), Some(0));
    let identity = std::fs::read("/var/lib/dozor-agent/identity.json").unwrap();

    // Run again (idempotent): the identity stays, and the script says the token is unused.
    let out = Command::new(root().join("deploy/install.sh"))
        .arg("--package")
        .arg(deb("dozor-agent", 1))
        .args(["--collector", &c.mqtt_url(), "--mo", MO, "--site", SITE])
        .args([
            "--enroll-url",
            &format!("http://{}", c.http),
            "--allow-plain-http",
        ])
        .env("DOZOR_ENROLL_TOKEN", &token)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "second install.sh run failed:\n{text}"
    );
    assert!(text.contains("already enrolled"), "{text}");
    assert_eq!(
        std::fs::read("/var/lib/dozor-agent/identity.json").unwrap(),
        identity
    );
    purge_agent();
    assert!(!Path::new("/var/lib/dozor-agent").exists());
}
