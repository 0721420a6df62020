//! Fenced leader election (docs/leader-fencing.md) against a real `skiff server`:
//! the API server refuses writes carrying a deposed leader's token, and a leader paused
//! (SIGSTOP) past its lease, then resumed after another took over, lands none of the writes
//! it keeps attempting.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use http::{HeaderName, HeaderValue};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};
use kube::Client;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use skiff_tests::server::Server;

fn cm(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn lease(holder: &str, term: i32) -> Lease {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "fence-test", "namespace": "kube-system"},
        "spec": {"holderIdentity": holder, "leaseTransitions": term, "leaseDurationSeconds": 15},
    }))
    .expect("valid Lease")
}

async fn fenced(s: &Server, token: &str) -> Result<Client> {
    let mut config = s.kube_config().await?;
    config.headers.push((
        HeaderName::from_static("skiff-fencing-token"),
        HeaderValue::from_str(token)?,
    ));
    Ok(Client::try_from(config)?)
}

fn code<T>(r: kube::Result<T>) -> u16 {
    match r {
        Ok(_) => 200,
        Err(kube::Error::Api(s)) => s.code,
        Err(e) => panic!("transport error: {e}"),
    }
}

#[tokio::test]
async fn api_server_refuses_a_deposed_token() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path(), &[]).await?;
    let plain = server.kube_client().await?;
    let leases: Api<Lease> = Api::namespaced(plain.clone(), "kube-system");
    leases
        .create(&PostParams::default(), &lease("leader-a", 1))
        .await?;

    let a: Api<ConfigMap> =
        Api::default_namespaced(fenced(&server, "kube-system/fence-test/1/leader-a").await?);
    a.create(&PostParams::default(), &cm("a-1")).await?;

    // Renewals (same holder and term) racing the leader's writes cost nothing visible.
    let renewer = {
        let leases = leases.clone();
        tokio::spawn(async move {
            for _ in 0..40 {
                let mut l = leases.get("fence-test").await?;
                l.spec.as_mut().expect("spec").renew_time =
                    Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                        k8s_openapi::jiff::Timestamp::now(),
                    ));
                leases
                    .replace("fence-test", &PostParams::default(), &l)
                    .await?;
            }
            anyhow::Ok(())
        })
    };
    for i in 0..40 {
        a.create(&PostParams::default(), &cm(&format!("a-r{i}")))
            .await
            .with_context(|| format!("write {i} during renewals"))?;
    }
    renewer.await??;

    // Another process takes over: term 2.
    let mut l = leases.get("fence-test").await?;
    l.spec = lease("leader-b", 2).spec;
    leases
        .replace("fence-test", &PostParams::default(), &l)
        .await?;

    let refused = a.create(&PostParams::default(), &cm("a-late")).await;
    let Err(kube::Error::Api(status)) = refused else {
        bail!("the deposed leader's create was not refused: {refused:?}");
    };
    ensure!(status.code == 403, "expected 403, got {status:?}");
    ensure!(
        status.message.contains("fencing token refused") && status.message.contains("leader-b"),
        "the message should say who holds the lease now: {}",
        status.message
    );
    // Updates, patches and deletes are fenced too.
    let mut old = a.get("a-1").await?;
    old.data = Some([("k".to_string(), "v".to_string())].into());
    assert_eq!(
        code(a.replace("a-1", &PostParams::default(), &old).await),
        403
    );
    assert_eq!(
        code(
            a.patch(
                "a-1",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(serde_json::json!({"data": {"x": "y"}}))
            )
            .await
        ),
        403
    );
    assert_eq!(code(a.delete("a-1", &Default::default()).await), 403);

    // The new leader writes; a token for a lease that does not exist, or a malformed one,
    // is refused.
    let b: Api<ConfigMap> =
        Api::default_namespaced(fenced(&server, "kube-system/fence-test/2/leader-b").await?);
    b.create(&PostParams::default(), &cm("b-1")).await?;
    let ghost: Api<ConfigMap> =
        Api::default_namespaced(fenced(&server, "kube-system/no-such-lease/1/x").await?);
    assert_eq!(
        code(ghost.create(&PostParams::default(), &cm("ghost")).await),
        403
    );
    let bad: Api<ConfigMap> = Api::default_namespaced(fenced(&server, "not-a-token").await?);
    assert_eq!(
        code(bad.create(&PostParams::default(), &cm("bad")).await),
        400
    );

    let all: Api<ConfigMap> = Api::default_namespaced(plain);
    let names: Vec<String> = all
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    ensure!(names.contains(&"a-1".to_string()) && names.contains(&"b-1".to_string()));
    for absent in ["a-late", "ghost", "bad"] {
        ensure!(
            !names.contains(&absent.to_string()),
            "{absent} landed: {names:?}"
        );
    }
    ensure!(
        all.get("a-1").await?.data.is_none(),
        "a refused update landed"
    );
    Ok(())
}

/// A `skiff-fence-probe` process and the file its stdout goes to.
struct Probe {
    child: std::process::Child,
    out: std::path::PathBuf,
}

impl Probe {
    fn start(dir: &Path, server: &Server, prefix: &str) -> Result<Probe> {
        let out = dir.join(format!("probe-{prefix}.out"));
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_skiff-fence-probe"))
            .args(["--kubeconfig", &server.kubeconfig().display().to_string()])
            .args(["--prefix", prefix, "--lease-seconds", "5"])
            .stdout(Stdio::from(std::fs::File::create(&out)?))
            .stderr(Stdio::from(std::fs::File::create(
                dir.join(format!("probe-{prefix}.err")),
            )?))
            .spawn()?;
        Ok(Probe { child, out })
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// `(term, lease resourceVersion)` of each `LEADING` line.
    fn terms(&self) -> Vec<(i64, i64)> {
        self.lines()
            .iter()
            .filter_map(|l| {
                let rest = l.strip_prefix("LEADING term=")?;
                let (t, rv) = rest.split_once(" lease_rv=")?;
                Some((t.parse().ok()?, rv.parse().ok()?))
            })
            .collect()
    }

    fn writes_with(&self, code: &str) -> usize {
        self.lines()
            .iter()
            .filter(|l| l.starts_with("WRITE ") && l.ends_with(&format!(" code={code}")))
            .count()
    }

    fn signal(&self, sig: Signal) -> Result<()> {
        kill(Pid::from_raw(self.child.id() as i32), sig)?;
        Ok(())
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while !f() {
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::test]
async fn paused_leader_lands_no_write_after_takeover() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path(), &[]).await?;
    let a = Probe::start(dir.path(), &server, "a")?;
    wait_for("probe a to lead", Duration::from_secs(30), || {
        !a.terms().is_empty()
    })
    .await?;
    let b = Probe::start(dir.path(), &server, "b")?;
    wait_for("probe a's first writes", Duration::from_secs(10), || {
        a.writes_with("201") >= 5
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    ensure!(
        b.terms().is_empty(),
        "b leads while a renews: {:?}",
        b.lines()
    );

    // Pause a past its lease (5 s); b takes over.
    a.signal(Signal::SIGSTOP)?;
    let paused = Instant::now();
    wait_for("probe b to take over", Duration::from_secs(30), || {
        !b.terms().is_empty()
    })
    .await?;
    let (b_term, takeover_rv) = b.terms()[0];
    let (a_term, _) = a.terms()[0];
    ensure!(
        b_term > a_term,
        "b's term {b_term} must follow a's {a_term}"
    );
    ensure!(
        paused.elapsed() >= Duration::from_secs(5),
        "b took over after {:?}, before a's lease could have run out",
        paused.elapsed()
    );

    // Resume a: its detached writer keeps trying with the old token.
    let refused_before = a.writes_with("403");
    a.signal(Signal::SIGCONT)?;
    wait_for(
        "a's writes after resuming to be refused",
        Duration::from_secs(15),
        || a.writes_with("403") >= refused_before + 5,
    )
    .await?;
    wait_for("b's writes", Duration::from_secs(10), || {
        b.writes_with("201") >= 5
    })
    .await?;
    ensure!(
        a.terms().len() == 1,
        "a must not lead again while b renews: {:?}",
        a.terms()
    );

    // Nothing a wrote landed after b's takeover; everything b wrote did.
    let cms: Api<ConfigMap> = Api::default_namespaced(server.kube_client().await?);
    let mut a_landed = 0;
    for c in cms.list(&ListParams::default()).await?.items {
        let name = c.metadata.name.unwrap_or_default();
        let rv: i64 = c.metadata.resource_version.unwrap_or_default().parse()?;
        if name.starts_with("a-") {
            a_landed += 1;
            ensure!(
                rv < takeover_rv,
                "{name} of the deposed leader landed at revision {rv}, after b took over at {takeover_rv}"
            );
        }
    }
    ensure!(
        a_landed == a.writes_with("201"),
        "a's acknowledged writes are all there"
    );
    ensure!(a.writes_with("201") >= 5);
    Ok(())
}
