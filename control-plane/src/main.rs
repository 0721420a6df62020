//! `skiff`: one binary for every role. It parses flags and hands a configuration and a
//! shutdown signal to the role's library; it holds no logic of its own.
//!
//! # Layout
//! - [`cli`]: the flags.
//! - [`client`]: `skiff get|watch|apply|delete` over the skiff.v1 gRPC API.

mod cli;
mod client;

/// mimalloc instead of glibc's malloc for every Rust allocation of every role: `perf` on
/// a three-member store at 256 clients put 17 % of the members' CPU in glibc's
/// `malloc`/`free` (bin consolidation, chunk unlinking) — request buffers, protobuf
/// messages, raft entries, all short-lived and passed between threads.
/// `docs/allocator.md` has the measurements.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Shim(args) = cli.command {
        // One per container: a small, single-threaded process without a runtime.
        return skiff_node_agent::shim::run(args);
    }
    init_logging(cli.log_format);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Command::Store(store) = &cli.command {
        runtime.worker_threads(store.worker_threads());
    }
    runtime.enable_all().build()?.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
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
        Command::Agent(args) => {
            let shutdown = tokio_util::sync::CancellationToken::new();
            let agent = tokio::spawn(skiff_node_agent::agent::run(args, shutdown.clone()));
            tokio::select! {
                _ = shutdown_signal() => {
                    tracing::info!("shutting down; containers keep running and are adopted by the next agent");
                    shutdown.cancel();
                    Ok(())
                }
                r = agent => r?,
            }
        }
        Command::Image(cmd) => skiff_node_agent::image::run_cli(&cmd.root_dir, cmd.action).await,
        Command::Shim(_) => unreachable!("handled before the runtime starts"),
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

/// The all-in-one server's own node agent, on this server's API. A machine that cannot
/// run pods (not root, no runc) keeps its control plane: the agent says what is missing
/// and stops.
fn start_local_agent(
    cmd: &cli::ServerCmd,
    data_dir: &std::path::Path,
    api: std::net::SocketAddr,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let host = if api.ip().is_unspecified() {
        std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), api.port())
    } else {
        api
    };
    let root = cmd
        .agent_root_dir
        .clone()
        .unwrap_or_else(|| data_dir.join("agent"));
    let mut argv = vec![
        "agent".to_string(),
        "--server".into(),
        format!("http://{host}"),
        "--root-dir".into(),
        root.display().to_string(),
        "--port".into(),
        cmd.agent_port.to_string(),
    ];
    if let Some(n) = &cmd.node_name {
        argv.extend(["--node-name".into(), n.clone()]);
    }
    if let Some(ip) = cmd.node_ip {
        argv.extend(["--node-ip".into(), ip.to_string()]);
    }
    if cmd.cluster_cidr.is_empty() {
        // No node IPAM: the local node takes the first /24 of the default pod network.
        argv.extend(["--pod-cidr".into(), "10.244.0.0/24".into()]);
    }
    let args = skiff_node_agent::agent::AgentArgs::parse_args(&argv)?;
    Ok(tokio::spawn(async move {
        if let Err(e) = skiff_node_agent::agent::run(args, shutdown).await {
            tracing::error!(error = %format!("{e:#}"), "the local node agent stopped (the control plane runs on)");
        }
    }))
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
    let mut components = start_components(&cmd, api.addr)?;
    let agent_shutdown = tokio_util::sync::CancellationToken::new();
    if !cmd.disable_agent {
        components.push(start_local_agent(
            &cmd,
            &data_dir,
            api.addr,
            agent_shutdown.clone(),
        )?);
    }
    match &store {
        Some(s) => tokio::select! {
            _ = shutdown_signal() => tracing::info!("shutting down"),
            _ = s.removed() => tracing::warn!("this member was removed from the cluster; exiting"),
        },
        None => shutdown_signal().await,
    }
    agent_shutdown.cancel();
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
