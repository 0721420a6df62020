//! `skiff-fence-probe`: a leader-elected process for the fencing test
//! (tests/tests/leader_fencing.rs). It campaigns with Skiff's elector and, whenever it
//! leads, starts a writer that creates ConfigMaps through the term's fenced client —
//! *detached*, so it keeps writing after leadership is lost, as a task that escaped
//! cancellation would. Fencing must refuse every such write. One line per event on stdout:
//! `LEADING term=<t> lease_rv=<rv>`, `WRITE term=<t> name=<n> code=<http status>`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use skiff_controllers::leader::{identity, Election};

#[derive(Parser, Debug)]
struct Args {
    /// The API server's kubeconfig.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// The Lease to campaign for, in kube-system.
    #[arg(long, default_value = "fence-probe")]
    lease: String,
    /// Prefix of the ConfigMaps written (in namespace default).
    #[arg(long)]
    prefix: String,
    /// Lease duration in seconds (renew deadline is 2/3 of it, retry period 1/5).
    #[arg(long, default_value_t = 6)]
    lease_seconds: u64,
}

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let kc = Kubeconfig::read_from(&args.kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    let mut election = Election::new(&args.lease, &identity());
    election.lease_duration = Duration::from_secs(args.lease_seconds);
    election.renew_deadline = Duration::from_secs(args.lease_seconds) * 2 / 3;
    election.retry_period = Duration::from_secs(args.lease_seconds) / 5;
    let prefix = args.prefix.clone();
    let lease_name = args.lease.clone();
    election
        .run(config, move |client, fence| {
            let prefix = prefix.clone();
            let lease_name = lease_name.clone();
            async move {
                let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
                let rv = leases
                    .get(&lease_name)
                    .await?
                    .metadata
                    .resource_version
                    .unwrap_or_default();
                say(format!("LEADING term={} lease_rv={rv}", fence.term));
                // Detached on purpose: this writer outlives the term.
                tokio::spawn(async move {
                    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
                    for n in 0u64.. {
                        let name = format!("{prefix}-t{}-{n}", fence.term);
                        let cm = ConfigMap {
                            metadata: kube::api::ObjectMeta {
                                name: Some(name.clone()),
                                ..Default::default()
                            },
                            ..Default::default()
                        };
                        let code = match cms.create(&PostParams::default(), &cm).await {
                            Ok(_) => 201,
                            Err(kube::Error::Api(s)) => s.code,
                            Err(_) => 0,
                        };
                        say(format!("WRITE term={} name={name} code={code}", fence.term));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                });
                std::future::pending::<()>().await;
                Ok(())
            }
        })
        .await
}
