//! `dozor-agent` binary: parses flags and configuration, sets up logging, runs the agent on a
//! current-thread runtime until SIGTERM or Ctrl-C.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use dozor_agent::config::EXAMPLE_CONFIG;
use dozor_agent::{Cli, run};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Exit code for a configuration error (EX_USAGE in sysexits.h).
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are not errors.
            let code = if e.use_stderr() { EXIT_CONFIG } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if cli.print_default_config {
        print!("{EXAMPLE_CONFIG}");
        return ExitCode::SUCCESS;
    }
    let config = match cli.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dozor-agent: configuration error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match serve(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: dozor_agent::config::Config) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // Name lookups (DNS probe, HTTP probe) run on the blocking pool once per round; with
        // tokio's default 10 s keep-alive a 30 s interval started a new thread every round
        // (docs/benchmarks.md, "Agent diet").
        .thread_keep_alive(std::time::Duration::from_secs(180))
        .build()
        .context("cannot start the async runtime")?;
    let shutdown = CancellationToken::new();
    let result = rt.block_on(async {
        let token = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("stop requested");
            token.cancel();
        });
        #[cfg(unix)]
        if std::env::var_os("DOZOR_EXIT_WITH_PARENT").is_some() {
            tokio::spawn(exit_with_parent(shutdown.clone()));
        }
        run(config, shutdown).await
    });
    // A sample stuck in the kernel must not keep the process alive.
    rt.shutdown_timeout(Duration::from_secs(1));
    result.context("agent failed to start")
}

/// Stops gracefully once the process that started us is gone (we are re-parented): set by a
/// collector's `--demo` for its own agent, so that a killed collector leaves no orphan behind.
#[cfg(unix)]
async fn exit_with_parent(stop: CancellationToken) {
    let parent = std::os::unix::process::parent_id();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if std::os::unix::process::parent_id() != parent {
            tracing::info!("parent process gone; stopping");
            stop.cancel();
            return;
        }
    }
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(windows)]
async fn wait_for_signal() {
    // Service wrappers and logoff/shutdown deliver console control events.
    use tokio::signal::windows::{ctrl_close, ctrl_shutdown};
    match (ctrl_close(), ctrl_shutdown()) {
        (Ok(mut close), Ok(mut shut)) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = close.recv() => {}
                _ = shut.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(any(unix, windows)))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
