//! `skiff`: one binary for every role. It parses flags and hands a configuration and a
//! shutdown signal to the role's library; it holds no logic of its own.
//!
//! # Layout
//! - [`cli`]: the flags.

mod cli;

use clap::Parser;
use cli::{Cli, Command, LogFormat, StoreAction};
use tracing_subscriber::EnvFilter;

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,openraft=warn,h2=warn,tower=warn,hyper=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
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
    }
}
