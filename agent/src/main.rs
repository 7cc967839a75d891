//! `agent`: stallwatch's node daemon and command line.
//!
//! `agent run` loads the probes, scans the cgroup tree and serves Prometheus
//! metrics and the JSON API until SIGTERM or SIGINT; `agent top` shows a
//! running agent's view live; `agent recommend` turns a Prometheus server's
//! history of the agents' series into requests and limits. Errors reach the user here, with context.
//! The pieces live in the library (`lib.rs`), so benchmarks can use them.

use std::{process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::Parser as _;
use tokio::{
    io::unix::AsyncFd,
    net::TcpListener,
    signal::unix::{SignalKind, signal},
};

use agent::{
    cli::{Cli, Command, LogFormat, RunArgs},
    exposition::Exporter,
};

/// The longest a shutdown may take: in-flight scrapes get this long.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Top(args) => agent::top::run(args),
        Command::Recommend(args) => agent::recommend::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Into the log if there is one (JSON for a DaemonSet), else plain.
            if tracing::dispatcher::has_been_set() {
                tracing::error!("{err:#}");
            } else {
                eprintln!("agent: error: {err:#}");
            }
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .with_context(|| format!("invalid --log-level `{filter}`"))?;
    // Colour only for a person at a terminal, never in a file or a pod log.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let installed = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("installing the logger: {e}"))
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging(args.log_format, &args.log_level)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_agent(args))
}

async fn run_agent(args: RunArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {} (--listen)", args.listen))?;
    let agent::startup::Started {
        collector,
        logger,
        cgroup_root,
        tracefs,
    } = agent::startup::collector(&args.collect)?;
    let probe_logs = logger.map(|logger| tokio::spawn(forward_probe_logs(logger)));
    let cri = Arc::new(agent::cri::Cri::default());
    let cri_task = tokio::spawn(cri.clone().run(args.cri.config()));
    let collector = collector.with_names(cri, args.cri.policy());
    let exporter = Arc::new(Exporter::new(collector));
    let state = Arc::new(agent::http::AppState::new(
        agent::exposition::registry(exporter.clone()),
        exporter.clone(),
    ));

    let local = listener
        .local_addr()
        .context("reading the listening address")?;
    tracing::info!(
        cgroup_root = %cgroup_root.display(),
        tracefs = %tracefs.as_ref().map(|t| t.root().display().to_string()).unwrap_or_default(),
        "serving metrics on http://{local}/metrics"
    );

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(agent::http::serve(listener, state, async {
        let _ = stop_rx.await;
    }));
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = sigterm.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = sigint.recv() => tracing::info!("SIGINT: shutting down"),
        result = &mut server => {
            result.context("the HTTP server task failed")?.context("serving HTTP")?;
            anyhow::bail!("the HTTP server stopped unexpectedly");
        }
    }
    let _ = stop_tx.send(());
    if tokio::time::timeout(SHUTDOWN_GRACE, &mut server)
        .await
        .is_err()
    {
        tracing::warn!("open connections did not close in {SHUTDOWN_GRACE:?}; closing them");
        server.abort();
    }
    if let Some(task) = probe_logs {
        task.abort();
    }
    cri_task.abort();
    // Dropping the exporter drops the eBPF object, which detaches every probe.
    drop(exporter);
    tracing::info!("probes detached; bye");
    Ok(())
}

/// Forwards log records of the probes (aya-log) into the agent's log.
async fn forward_probe_logs(logger: agent::startup::ProbeLogger) {
    // SAFETY: the logger owns its ring buffer's fd, which stays open and
    // unchanged until the logger, moved into the AsyncFd, is dropped with it.
    let registered =
        unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!("cannot poll the probes' log buffer: {e}");
            return;
        }
    };
    loop {
        let mut guard = match fd.readable_mut().await {
            Ok(guard) => guard,
            Err(e) => {
                tracing::warn!("polling the probes' log buffer: {e}");
                return;
            }
        };
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}
