//! `skiff`: one binary for every role. It parses flags and hands a configuration and a
//! shutdown signal to the role's library; it holds no logic of its own.
//!
//! # Layout
//! - [`cli`]: the flags.
//! - [`client`]: `skiff get|watch|apply|delete` over the skiff.v1 gRPC API.

mod cli;
mod client;

use clap::Parser;
use cli::{Cli, Command, LogFormat, StoreAction};
use tracing_subscriber::EnvFilter;

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,openraft=warn,h2=warn,tower=warn,hyper=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for people at a terminal, not in log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Store(cmd) => match cmd.action {
            Some(StoreAction::Restore(args)) => {
                let header = skiff_store::restore::restore(&args.snapshot, &args.data_dir)?;
                println!(
                    "restored {} (revision {}) into {}; start the member with --initial-cluster-state new",
                    args.snapshot.display(),
                    header.revision,
                    args.data_dir.display()
                );
                Ok(())
            }
            None => {
                let config = cmd.flags.to_config()?;
                let store = skiff_store::start(config).await?;
                tokio::select! {
                    _ = shutdown_signal() => tracing::info!("shutting down"),
                    _ = store.removed() => tracing::warn!("this member was removed from the cluster; exiting"),
                }
                store.shutdown().await;
                Ok(())
            }
        },
        Command::Server(cmd) => run_server(cmd).await,
        Command::Get(cmd) => client::get(cmd).await,
        Command::Watch(cmd) => client::watch(cmd).await,
        Command::Apply(cmd) => client::apply(cmd).await,
        Command::Delete(cmd) => client::delete(cmd).await,
    }
}

/// `skiff server`: an embedded store member (unless --store-endpoints) and the API
/// server on it; writes `<data-dir>/kubeconfig`.
/// Starts the scheduler and the controller manager (unless disabled), each campaigning
/// for its Lease through this server's own API.
fn start_components(
    cmd: &cli::ServerCmd,
    api: std::net::SocketAddr,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    use skiff_controllers::manager;
    let host = if api.ip().is_unspecified() {
        std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), api.port())
    } else {
        api
    };
    let config = kube::Config::new(format!("http://{host}").parse()?);
    let identity = skiff_controllers::leader::identity();
    fn spawn(
        what: &'static str,
        run: impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            if let Err(e) = run.await {
                tracing::error!(error = %e, "{what} stopped");
            }
        })
    }
    let mut tasks = Vec::new();
    if !cmd.disable_controller_manager {
        tasks.push(spawn(
            "controller manager",
            manager::run_controller_manager(
                config.clone(),
                cmd.controller_settings(&identity),
                cmd.election(manager::CONTROLLER_MANAGER_LEASE, &identity),
            ),
        ));
    }
    if !cmd.disable_scheduler {
        tasks.push(spawn(
            "scheduler",
            manager::run_scheduler(
                config.clone(),
                cmd.controller_settings(&identity),
                cmd.election(manager::SCHEDULER_LEASE, &identity),
            ),
        ));
    }
    Ok(tasks)
}

async fn run_server(cmd: cli::ServerCmd) -> anyhow::Result<()> {
    let data_dir = cmd.data_dir();
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", data_dir.display()))?;
    let (store, endpoints) = if cmd.store_endpoints.is_empty() {
        let config = cmd.store_config()?;
        // The local member first: requests fail over to the others.
        let endpoints = config.advertise_client_urls.clone();
        (Some(skiff_store::start(config).await?), endpoints)
    } else {
        (None, cmd.store_endpoints.clone())
    };
    let api = skiff_apiserver::server::start(cmd.api_config(endpoints)).await?;
    let kubeconfig = data_dir.join("kubeconfig");
    write_kubeconfig(&kubeconfig, api.addr)?;
    tracing::info!(kubeconfig = %kubeconfig.display(), "ready: export KUBECONFIG={}", kubeconfig.display());
    let components = start_components(&cmd, api.addr)?;
    match &store {
        Some(s) => tokio::select! {
            _ = shutdown_signal() => tracing::info!("shutting down"),
            _ = s.removed() => tracing::warn!("this member was removed from the cluster; exiting"),
        },
        None => shutdown_signal().await,
    }
    for c in components {
        c.abort();
    }
    api.shutdown();
    if let Some(s) = store {
        s.shutdown().await;
    }
    Ok(())
}

/// Writes a kubeconfig that points kubectl at the API server.
fn write_kubeconfig(path: &std::path::Path, addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: http://{host}:{port}\ncontexts:\n- name: skiff\n  context:\n    cluster: skiff\n    user: admin\n    namespace: default\ncurrent-context: skiff\nusers:\n- name: admin\n  user: {{}}\n",
        port = addr.port()
    );
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| anyhow::anyhow!("writing {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    Ok(())
}
