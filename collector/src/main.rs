//! `dozor-collector`: parses configuration, sets up logging and runs the collector.

use anyhow::Context;
use clap::{Parser, Subcommand};
use dozor_collector::config::{DEFAULT_CONFIG, RawConfig};
use dozor_collector::roster::Roster;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// mimalloc: ingest allocates and frees a few small objects per message on two threads (ids,
/// decoded bodies, batch records); glibc malloc took ~20 % of the pipeline's CPU in profiles.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for configuration errors (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser, Debug)]
#[command(
    name = "dozor-collector",
    version,
    about = "dozor collector: live state, history, availability, indicators and alerts of clinic hosts"
)]
struct Cli {
    /// Configuration file (TOML); see --print-default-config.
    #[arg(long, global = true, env = "DOZOR_CONFIG")]
    config: Option<PathBuf>,
    /// Print the commented default configuration and exit.
    #[arg(long, global = true)]
    print_default_config: bool,
    /// HTTP listen address (API, status page, metrics).
    #[arg(long, global = true, env = "DOZOR_HTTP_LISTEN")]
    http_listen: Option<String>,
    /// Run the embedded MQTT broker on this address (the default mode).
    #[arg(
        long,
        global = true,
        env = "DOZOR_MQTT_LISTEN",
        conflicts_with = "mqtt_url"
    )]
    mqtt_listen: Option<String>,
    /// Use an external MQTT broker (Mosquitto, EMQX) instead of the embedded one.
    #[arg(long, global = true, env = "DOZOR_MQTT_URL")]
    mqtt_url: Option<String>,
    /// MQTT client id of the collector (must be unique per collector on a shared broker).
    #[arg(long, global = true, env = "DOZOR_MQTT_CLIENT_ID")]
    mqtt_client_id: Option<String>,
    /// Directory for the store and state.
    #[arg(long, global = true, env = "DOZOR_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Roster of МО, sites and planned АРМ: TOML, CSV (UTF-8 or CP1251, `;` or `,`) or a
    /// workbook (XLSX, XLS, ODS). Kept in the data dir; without it the kept one is used.
    #[arg(long, global = true, env = "DOZOR_ROSTER")]
    roster: Option<PathBuf>,
    /// Reject messages of МО missing from the roster.
    #[arg(long, global = true, env = "DOZOR_ROSTER_STRICT")]
    roster_strict: bool,
    /// `enrolled` (default: only enrolled agents, signed messages) or `open` (labs only).
    #[arg(long, global = true, env = "DOZOR_SECURITY_MODE")]
    security_mode: Option<String>,
    /// Run a simulated region (and this machine's agent, if installed next to the collector).
    #[arg(long, global = true, env = "DOZOR_DEMO")]
    demo: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write a report for a period: the indicator table, counts or availability (CSV, XLSX or
    /// JSON, as the HTTP API serves them). Uses the roster the collector keeps in its data dir
    /// unless --roster is given.
    Report {
        /// indicators, counts, availability or offhours (workstations most often switched off
        /// in working hours).
        #[arg(default_value = "indicators")]
        table: String,
        /// Period: 2024-Q1, 2024-03, 2024-W10, 2024-03-05, 2024 or FROM..TO.
        #[arg(long)]
        period: String,
        /// csv, xlsx or json.
        #[arg(long, default_value = "csv")]
        format: String,
        /// Availability grouped by host, mo or target.
        #[arg(long, default_value = "mo")]
        by: String,
        /// offhours: how many workstations to list, for the region and for each МО.
        #[arg(long, default_value_t = dozor_collector::report::DEFAULT_TOP)]
        top: usize,
        /// Output file; `-` (the default) writes to stdout.
        #[arg(short = 'o', long, default_value = "-")]
        output: PathBuf,
    },
    /// Enrollment tokens: each lets agents of one МО enroll (works while the collector runs).
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Enrolled agents: list, revoke (a revoked agent is cut off within seconds).
    Agent {
        #[command(subcommand)]
        action: AgentAction,
    },
    /// Users of the HTTP API and the web UI (works while the collector runs).
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// API tokens for scripts and Grafana (`Authorization: Bearer dzt_…`).
    ApiToken {
        #[command(subcommand)]
        action: ApiTokenAction,
    },
}

#[derive(Subcommand, Debug)]
enum UserAction {
    /// Add a user; the password is read from stdin (first line) or --password-file, never argv.
    Add {
        name: String,
        /// viewer, operator or admin.
        #[arg(long)]
        role: String,
        /// Read the password from this file (first line) instead of stdin.
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// List users (JSON lines).
    List,
    /// Remove a user (their sessions end).
    Remove { name: String },
    /// Change a user's role: viewer, operator or admin.
    SetRole { name: String, role: String },
}

#[derive(Subcommand, Debug)]
enum ApiTokenAction {
    /// Create a token with a role; prints it once (it is stored only as a hash).
    Create {
        /// What it is for (`grafana`, `backup script`).
        #[arg(long)]
        name: String,
        /// viewer, operator or admin.
        #[arg(long)]
        role: String,
        /// Valid for this many days (default: until revoked).
        #[arg(long)]
        expires_days: Option<u32>,
    },
    /// List tokens (JSON lines).
    List,
    /// Revoke a token by its id.
    Revoke { id: String },
}

fn parse_role(s: &str) -> anyhow::Result<dozor_collector::auth::Role> {
    dozor_collector::auth::Role::parse(s)
        .with_context(|| format!("--role: {s:?} is not viewer, operator or admin"))
}

/// The first line of `file`, or of stdin.
fn read_password(file: Option<&std::path::Path>) -> anyhow::Result<String> {
    let text = match file {
        Some(f) => std::fs::read_to_string(f).with_context(|| format!("{}", f.display()))?,
        None => {
            use std::io::BufRead;
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("stdin")?;
            line
        }
    };
    Ok(text.lines().next().unwrap_or("").to_string())
}

/// Runs a `user`/`api-token` subcommand against the data dir's auth.db.
fn auth_command(data_dir: &std::path::Path, cmd: &Command) -> anyhow::Result<()> {
    use dozor_collector::auth::db::{AuthDb, path};
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("data_dir {}", data_dir.display()))?;
    let db = AuthDb::open(&path(data_dir))?;
    let now = dozor_collector::clock::now_ms();
    match cmd {
        Command::User { action } => match action {
            UserAction::Add {
                name,
                role,
                password_file,
            } => {
                let role = parse_role(role)?;
                let password = read_password(password_file.as_deref())?;
                db.add_user(name, role, &password, now)?;
                eprintln!("user {name} ({}) added", role.as_str());
            }
            UserAction::List => {
                for u in db.users()? {
                    println!("{}", serde_json::to_string(&u)?);
                }
            }
            UserAction::Remove { name } => {
                db.remove_user(name)?;
                eprintln!("user {name} removed");
            }
            UserAction::SetRole { name, role } => {
                let role = parse_role(role)?;
                db.set_role(name, role)?;
                eprintln!("user {name} is now {}", role.as_str());
            }
        },
        Command::ApiToken { action } => match action {
            ApiTokenAction::Create {
                name,
                role,
                expires_days,
            } => {
                let role = parse_role(role)?;
                let expires = expires_days.map(|d| now + i64::from(d) * 86_400_000);
                let (id, token) = db.create_api_token(name, role, expires, "cli", now)?;
                eprintln!(
                    "API token {id} ({}) created; it is shown only now:",
                    role.as_str()
                );
                println!("{token}");
            }
            ApiTokenAction::List => {
                for t in db.api_tokens()? {
                    println!("{}", serde_json::to_string(&t)?);
                }
            }
            ApiTokenAction::Revoke { id } => {
                db.revoke_api_token(id, now)?;
                eprintln!("API token {id} revoked");
            }
        },
        _ => {}
    }
    Ok(())
}

#[derive(Subcommand, Debug)]
enum TokenAction {
    /// Create a token for an МО; prints it once (it is stored only as a hash).
    Create {
        /// ФРМО OID of the МО the token enrolls into.
        #[arg(long)]
        mo: String,
        /// How many agents may enroll with it (default: unlimited).
        #[arg(long)]
        max_uses: Option<u32>,
        /// Valid for this many days (default: until revoked).
        #[arg(long)]
        expires_days: Option<u32>,
        /// A note for the list (who, what rollout).
        #[arg(long, default_value = "")]
        note: String,
    },
    /// List tokens (JSON lines).
    List,
    /// Revoke a token by its id; agents already enrolled with it stay enrolled.
    Revoke { id: String },
}

#[derive(Subcommand, Debug)]
enum AgentAction {
    /// List enrolled agents (JSON lines).
    List,
    /// Revoke an agent's identity: `MO/HOST`.
    Revoke { identity: String },
}

/// Runs a `token`/`agent` subcommand against the data dir's identity.db.
fn identity_command(data_dir: &std::path::Path, cmd: &Command) -> anyhow::Result<()> {
    use dozor_collector::identity::db::{IdentityDb, path};
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("data_dir {}", data_dir.display()))?;
    let db = IdentityDb::open(&path(data_dir))?;
    let now = dozor_collector::clock::now_ms();
    match cmd {
        Command::Token { action } => match action {
            TokenAction::Create {
                mo,
                max_uses,
                expires_days,
                note,
            } => {
                anyhow::ensure!(
                    dozor_proto::valid_id(mo),
                    "--mo: {mo:?} is not a valid МО id"
                );
                let expires = expires_days.map(|d| now + i64::from(d) * 86_400_000);
                let (id, token) = db.create_token(mo, *max_uses, expires, note, now)?;
                eprintln!("token {id} for МО {mo} created; it is shown only now:");
                println!("{token}");
            }
            TokenAction::List => {
                for t in db.tokens()? {
                    println!("{}", serde_json::to_string(&t)?);
                }
            }
            TokenAction::Revoke { id } => {
                db.revoke_token(id, now)?;
                eprintln!("token {id} revoked");
            }
        },
        Command::Agent { action } => match action {
            AgentAction::List => {
                for a in db.agents()? {
                    println!("{}", serde_json::to_string(&a)?);
                }
            }
            AgentAction::Revoke { identity } => {
                let (mo, host) = dozor_proto::parse_username(identity)
                    .with_context(|| format!("{identity:?} is not MO/HOST"))?;
                db.revoke_agent(mo, host, now)?;
                eprintln!("agent {mo}/{host} revoked");
            }
        },
        _ => {}
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.print_default_config {
        print!("{DEFAULT_CONFIG}");
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                "info,rumqttd=warn,rumqttd::server::broker=off,rumqttc=warn".into()
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let (cfg, roster) = match load(&cli) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("dozor-collector: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(cmd @ (Command::Token { .. } | Command::Agent { .. })) = &cli.command {
        return match identity_command(&cfg.data_dir, cmd) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dozor-collector: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(cmd @ (Command::User { .. } | Command::ApiToken { .. })) = &cli.command {
        return match auth_command(&cfg.data_dir, cmd) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dozor-collector: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::Report {
        table,
        period,
        format,
        by,
        top,
        output,
    }) = &cli.command
    {
        let what = ReportWhat {
            table,
            period,
            format,
            by,
            top: *top,
        };
        return match report_command(&cli, &cfg, roster, &what, output) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dozor-collector: report: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let roster = match roster {
        RosterFrom::File(r) => {
            // Kept for `report` and for a start without a roster; a failure costs only that.
            if let Err(e) = dozor_collector::roster_file::save(&cfg.data_dir, &r) {
                tracing::warn!(error = %e, dir = %cfg.data_dir.display(), "cannot keep the roster in the data dir");
            }
            r
        }
        RosterFrom::Demo(r) => r,
        RosterFrom::None => match dozor_collector::roster_file::load(&cfg.data_dir) {
            Ok(Some(r)) => {
                tracing::info!(
                    mo = r.mos.len(),
                    file = %dozor_collector::roster_file::path(&cfg.data_dir).display(),
                    "no roster configured: using the one kept in the data dir"
                );
                r
            }
            Ok(None) => Roster::default(),
            Err(e) => {
                eprintln!("dozor-collector: kept roster: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
    };
    raise_open_files(&cfg);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dozor-collector: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        let shutdown = CancellationToken::new();
        let s = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            s.cancel();
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<dozor_collector::Bound>();
        tokio::spawn(async move {
            if let Ok(b) = rx.await {
                // A machine-readable line for scripts and tests that start us on port 0.
                println!(
                    "dozor-collector listening http={} mqtt={}:{}",
                    b.http, b.mqtt.0, b.mqtt.1
                );
            }
        });
        dozor_collector::run(cfg, roster, shutdown, Some(tx)).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dozor-collector: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(cli: &Cli) -> anyhow::Result<(dozor_collector::config::Config, RosterFrom)> {
    // The file, then every `DOZOR_*` variable naming an option, then the flags.
    // Variables that are not UTF-8 name no option (`std::env::vars` would panic on them).
    let vars = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    let mut raw = RawConfig::load_env(cli.config.as_deref(), vars)?;
    if let Some(v) = &cli.http_listen {
        raw.http.listen.clone_from(v);
    }
    if let Some(v) = &cli.mqtt_listen {
        raw.mqtt.kind = "embedded".into();
        raw.mqtt.listen.clone_from(v);
    }
    if let Some(v) = &cli.mqtt_url {
        raw.mqtt.kind = "external".into();
        raw.mqtt.url = Some(v.clone());
    }
    if let Some(v) = &cli.mqtt_client_id {
        raw.mqtt.client_id.clone_from(v);
    }
    if let Some(v) = &cli.data_dir {
        raw.data_dir.clone_from(v);
    }
    if let Some(v) = &cli.roster {
        raw.roster.path = Some(v.clone());
    }
    if cli.roster_strict {
        raw.roster.strict = true;
    }
    if let Some(v) = &cli.security_mode {
        raw.security.mode.clone_from(v);
    }
    let mut cfg = raw.validate()?;
    cfg.demo = cli.demo;
    cfg.config_path.clone_from(&cli.config);
    let roster = match &cfg.roster_path {
        Some(p) => RosterFrom::File(Roster::load(p).context("roster")?),
        None if cfg.demo => RosterFrom::Demo(
            Roster::from_toml(dozor_collector::demo::DEMO_ROSTER, "demo roster")
                .context("demo roster")?,
        ),
        None => RosterFrom::None,
    };
    Ok((cfg, roster))
}

/// Where the roster came from.
enum RosterFrom {
    /// `roster.path` (`--roster`, `DOZOR_ROSTER`, the config file).
    File(Roster),
    /// The embedded demo roster (`--demo` without a roster).
    Demo(Roster),
    /// Nothing configured.
    None,
}

/// What `report` was asked for (its arguments).
#[derive(Clone, Copy)]
struct ReportWhat<'a> {
    table: &'a str,
    period: &'a str,
    format: &'a str,
    by: &'a str,
    top: usize,
}

/// `report`: the roster is `--roster` (flag or `DOZOR_ROSTER`) when given, else the one the
/// collector keeps in its data dir (what the web page uses), else the config file's.
fn report_command(
    cli: &Cli,
    cfg: &dozor_collector::config::Config,
    configured: RosterFrom,
    what: &ReportWhat<'_>,
    output: &std::path::Path,
) -> anyhow::Result<()> {
    let ReportWhat {
        table,
        period,
        format,
        by,
        top,
    } = *what;
    use dozor_collector::availability::AvailabilityBy;
    use dozor_collector::report::{Format, Kind, report_file};
    let format = Format::parse(format)
        .with_context(|| format!("--format: {format:?} is not csv, xlsx or json"))?;
    let by = AvailabilityBy::parse(by)
        .with_context(|| format!("--by: {by:?} is not host, mo or target"))?;
    if !(1..=dozor_collector::report::MAX_TOP).contains(&top) {
        anyhow::bail!(
            "--top: {top} is not 1..={}",
            dozor_collector::report::MAX_TOP
        );
    }
    let kind = Kind::parse(table, by, top).with_context(|| {
        format!("{table:?} is not indicators, counts, availability or offhours")
    })?;
    let kept = if cli.roster.is_some() {
        None
    } else {
        dozor_collector::roster_file::load(&cfg.data_dir).context("kept roster")?
    };
    let roster = match (kept, configured) {
        (Some(r), _) => r,
        (None, RosterFrom::File(r) | RosterFrom::Demo(r)) => r,
        (None, RosterFrom::None) => {
            eprintln!(
                "dozor-collector: report: no roster (none kept in {} and no --roster): plans \
                 are empty, МО are those that sent data",
                cfg.data_dir.display()
            );
            Roster::default()
        }
    };
    let db = dozor_collector::store::db_path(&cfg.data_dir);
    let bytes = report_file(
        &db,
        &roster,
        &cfg.store,
        period,
        kind,
        format,
        dozor_collector::clock::now_ms(),
    )?;
    if output.as_os_str() == "-" {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        out.write_all(&bytes).context("writing to stdout")?;
        out.flush().context("writing to stdout")?;
    } else {
        std::fs::write(output, bytes).with_context(|| format!("writing {}", output.display()))?;
    }
    Ok(())
}

/// Raises the soft limit of open files to the hard limit: with the embedded broker each agent
/// holds one descriptor in this process (the gateway's socket to the agent; the gateway reaches
/// rumqttd through an in-memory pipe, docs/benchmarks.md "Embedded broker over in-process
/// pipes"), so the usual soft limit of 1,024 would stop a region at ~1,000 agents. Warns when
/// even the hard limit is below what `mqtt.max_connections` needs.
fn raise_open_files(cfg: &dozor_collector::config::Config) {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-files limit");
            return;
        }
    };
    if let dozor_collector::config::MqttMode::Embedded {
        max_connections, ..
    } = &cfg.mqtt.mode
    {
        let need = *max_connections as u64 + 1024;
        if limit < need {
            tracing::warn!(
                limit,
                need,
                "open-files limit below what mqtt.max_connections needs (LimitNOFILE in the unit)"
            );
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
