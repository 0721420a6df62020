//! Clusters of `skiff store` under faults: kill -9 of the leader under write load, a
//! member kept down past `--snapshot-count`, a wiped member replaced through membership
//! change, a rolling restart under load, a five-member cluster losing two members, a
//! lease kept alive through a follower while its leader is killed, and a leader restarted
//! in its term reading what it acknowledged before.
//!
//! The invariant every test ends with: each acknowledged write is readable on every
//! member (member-local, serializable reads once the member has applied up to the final
//! revision), and every member's HashKV at that revision is the same.
//!
//! Each test starts its own cluster on loopback ports (killed by pid when the test ends)
//! and is bounded in time.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use common::{bounded, eventually};
use etcd_client::{Client, ConnectOptions, GetOptions, PutOptions};
use skiff_tests::{Cluster, ClusterConfig};
use tokio::task::JoinHandle;

/// Per-test time bound.
const LIMIT: Duration = Duration::from_secs(90);

/// A client of one member only, with short timeouts so a dead member fails fast.
async fn client_at(endpoint: &str) -> Result<Client> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(2));
    Client::connect([endpoint], Some(options))
        .await
        .with_context(|| format!("connecting to {endpoint}"))
}

/// One acknowledged put: its unique key and the revision the server answered.
#[derive(Debug, Clone)]
struct Ack {
    key: String,
    rev: i64,
    at: Instant,
}

/// Concurrent writers putting unique keys under `prefix`, rotating through `endpoints`
/// on any error; every acknowledged put is recorded. A retry uses a new key, so each key
/// is written at most once and must end up with exactly the acknowledged revision.
struct Load {
    stop: Arc<AtomicBool>,
    writers: Vec<JoinHandle<Vec<Ack>>>,
}

impl Load {
    fn start(endpoints: Vec<String>, prefix: &str, writers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let writers = (0..writers)
            .map(|w| {
                let stop = stop.clone();
                let endpoints = endpoints.clone();
                let prefix = prefix.to_string();
                tokio::spawn(async move {
                    let mut acks = Vec::new();
                    let mut target = w % endpoints.len();
                    let mut client: Option<Client> = None;
                    let mut attempt = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        attempt += 1;
                        let key = format!("{prefix}w{w}/{attempt:06}");
                        if client.is_none() {
                            client = client_at(&endpoints[target]).await.ok();
                        }
                        let put = match client.as_mut() {
                            Some(c) => c.put(key.clone(), "v", None).await.ok(),
                            None => None,
                        };
                        match put.and_then(|r| r.header().map(|h| h.revision())) {
                            Some(rev) => acks.push(Ack {
                                key,
                                rev,
                                at: Instant::now(),
                            }),
                            None => {
                                // Unknown outcome: move on to the next member.
                                client = None;
                                target = (target + 1) % endpoints.len();
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                    acks
                })
            })
            .collect();
        Load { stop, writers }
    }

    async fn stop(self) -> Result<Vec<Ack>> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for w in self.writers {
            all.extend(w.await.context("writer task")?);
        }
        Ok(all)
    }
}

/// Waits until some live member answers a linearizable read; returns the cluster's
/// revision at that point.
async fn current_revision(cluster: &Cluster) -> Result<i64> {
    let endpoints = cluster.live_endpoints();
    eventually(Duration::from_secs(20), "a linearizable read", || {
        let endpoints = endpoints.clone();
        async move {
            for ep in &endpoints {
                if let Ok(mut c) = client_at(ep).await {
                    if let Ok(r) = c.get("any", None).await {
                        return Ok(r.header().map(|h| h.revision()));
                    }
                }
            }
            Ok(None)
        }
    })
    .await
}

/// Checks every running member on its own: it has applied up to the cluster's current
/// revision, holds every acknowledged key at exactly its revision (serializable, i.e.
/// member-local, reads), and its HashKV at that revision equals the others'.
async fn verify_members(cluster: &Cluster, prefix: &str, acks: &[Ack]) -> Result<()> {
    let rev = current_revision(cluster).await?;
    let mut hashes = BTreeMap::new();
    for m in cluster.members().iter().filter(|m| m.is_running()) {
        let c = client_at(m.client_url()).await?;
        let local = GetOptions::new().with_prefix().with_serializable();
        let resp = eventually(
            Duration::from_secs(30),
            &format!("{} applies up to revision {rev}", m.name()),
            || {
                let mut c = c.clone();
                let local = local.clone();
                async move {
                    let r = c.get(prefix, Some(local)).await?;
                    let applied = r.header().map(|h| h.revision()).unwrap_or(0);
                    Ok((applied >= rev).then_some(r))
                }
            },
        )
        .await?;
        let have: BTreeMap<&[u8], i64> = resp
            .kvs()
            .iter()
            .map(|kv| (kv.key(), kv.mod_revision()))
            .collect();
        let missing: Vec<&Ack> = acks
            .iter()
            .filter(|a| have.get(a.key.as_bytes()) != Some(&a.rev))
            .collect();
        ensure!(
            missing.is_empty(),
            "{} lacks {} of {} acknowledged writes (or has them at another revision), e.g. {:?}",
            m.name(),
            missing.len(),
            acks.len(),
            &missing[..missing.len().min(5)]
        );
        let h = c.maintenance_client().hash_kv(rev).await?;
        hashes.insert(m.name().to_string(), (h.hash(), h.compact_version()));
    }
    let distinct: std::collections::BTreeSet<_> = hashes.values().collect();
    ensure!(distinct.len() == 1, "HashKV at {rev} differs: {hashes:?}");
    Ok(())
}

/// Config with extra flags after the fast raft timing.
fn config(size: usize, extra: &[&str]) -> Result<ClusterConfig> {
    let mut c = common::skiff(size)?;
    c.extra_args.extend(extra.iter().map(|s| s.to_string()));
    Ok(c)
}

/// The member id of the member named `name`, from MemberList.
async fn member_id(client: &mut Client, name: &str) -> Result<u64> {
    let list = client.member_list().await?;
    list.members()
        .iter()
        .find(|m| m.name() == name)
        .map(|m| m.id())
        .with_context(|| format!("no member {name} in {:?}", list.members()))
}

#[tokio::test]
async fn leader_kill_under_write_load_loses_no_acknowledged_write() -> Result<()> {
    bounded(LIMIT, async {
        let mut cluster = common::start(3).await?;
        let leader = cluster.wait_leader(Duration::from_secs(10)).await?;
        let load = Load::start(cluster.endpoints(), "lk/", 6);
        tokio::time::sleep(Duration::from_millis(1500)).await;

        cluster.kill(leader)?;
        let killed_at = Instant::now();
        // Writes resume through the survivors: wait until a good number of puts were
        // acknowledged after the kill, then stop.
        let new_leader = cluster.wait_leader(Duration::from_secs(15)).await?;
        ensure!(
            new_leader != leader,
            "the killed member is still the leader"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        let acks = load.stop().await?;
        let after = acks.iter().filter(|a| a.at > killed_at).count();
        ensure!(
            after >= 20,
            "only {after} writes acknowledged after the kill"
        );
        ensure!(acks.len() > after, "no writes before the kill");

        // The survivors have everything; then the killed member catches up on restart.
        verify_members(&cluster, "lk/", &acks).await?;
        cluster.restart(leader).await?;
        verify_members(&cluster, "lk/", &acks).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn member_down_past_snapshot_count_catches_up_by_snapshot() -> Result<()> {
    bounded(LIMIT, async {
        let mut cluster = Cluster::start(config(3, &["--snapshot-count=100"])?).await?;
        let leader = cluster.wait_leader(Duration::from_secs(10)).await?;
        let down = (leader + 1) % 3;
        cluster.kill(down)?;

        // Five times the snapshot count while it is down: the leader snapshots and purges
        // the log it would need.
        let live = cluster.live_endpoints();
        let mut c = client_at(&live[0]).await?;
        let mut acks = Vec::new();
        for i in 0..500 {
            let key = format!("snap/{i:04}");
            let r = c.put(key.clone(), vec![b'x'; 200], None).await?;
            acks.push(Ack {
                key,
                rev: r.header().context("header")?.revision(),
                at: Instant::now(),
            });
        }

        cluster.restart(down).await?;
        verify_members(&cluster, "snap/", &acks).await?;
        let log = std::fs::read_to_string(cluster.member(down)?.log_path())?;
        ensure!(
            common::against_etcd() || log.contains("received snapshot; installing"),
            "{} caught up without a snapshot install; log tail:\n{}",
            cluster.member(down)?.name(),
            cluster.member(down)?.log_tail(20)
        );
        // It keeps following: a write after the catch-up reaches it too.
        let r = c.put("snap/after", "a", None).await?;
        acks.push(Ack {
            key: "snap/after".into(),
            rev: r.header().context("header")?.revision(),
            at: Instant::now(),
        });
        verify_members(&cluster, "snap/", &acks).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn wiped_member_is_replaced_through_member_remove_and_add() -> Result<()> {
    bounded(LIMIT, async {
        let mut cluster = common::start(3).await?;
        let leader = cluster.wait_leader(Duration::from_secs(10)).await?;
        let lost = (leader + 1) % 3;
        let lost_name = cluster.member(lost)?.name().to_string();
        let lost_peer = cluster.member(lost)?.peer_url().to_string();
        let live: Vec<String> = cluster
            .endpoints()
            .into_iter()
            .enumerate()
            .filter(|(i, _)| *i != lost)
            .map(|(_, e)| e)
            .collect();
        let mut c = client_at(&live[0]).await?;
        let mut acks = Vec::new();
        for i in 0..100 {
            let key = format!("rep/{i:03}");
            let r = c.put(key.clone(), "v", None).await?;
            acks.push(Ack {
                key,
                rev: r.header().context("header")?.revision(),
                at: Instant::now(),
            });
        }

        // The disk is lost.
        cluster.kill(lost)?;
        cluster.member_mut(lost)?.wipe_data_dir()?;

        // Replace it: remove the old identity, add the same peer URL as a new member.
        let old_id = eventually(Duration::from_secs(10), "old member id", || {
            let mut c = c.clone();
            let name = lost_name.clone();
            async move { Ok(member_id(&mut c, &name).await.ok()) }
        })
        .await?;
        c.member_remove(old_id).await?;
        // etcd refuses a change ("unhealthy cluster") until its members have been
        // connected for a few seconds; retrying covers that.
        let added = eventually(Duration::from_secs(15), "member add", || {
            let mut c = c.clone();
            let peer = lost_peer.clone();
            async move {
                match c.member_add([peer.as_str()], None).await {
                    Ok(r) => Ok(Some(r)),
                    Err(e) if e.to_string().contains("unhealthy cluster") => Ok(None),
                    Err(e) => Err(anyhow::Error::from(e).context("member add")),
                }
            }
        })
        .await?;
        let new_id = added.member().context("added member")?.id();
        ensure!(new_id != old_id, "the replacement reused the old member id");
        let initial = cluster.initial_cluster(&[0, 1, 2])?;
        let m = cluster.member_mut(lost)?;
        m.join_existing(&initial);
        m.start()?;
        m.wait_healthy(Duration::from_secs(30)).await?;

        // It receives everything, the cluster lists three voters, and writes go on.
        verify_members(&cluster, "rep/", &acks).await?;
        eventually(Duration::from_secs(20), "three started voters", || {
            let mut c = c.clone();
            let name = lost_name.clone();
            async move {
                let list = c.member_list().await?;
                let ms = list.members();
                ensure!(
                    ms.iter().all(|m| m.id() != old_id),
                    "old id still listed: {ms:?}"
                );
                let ok = ms.len() == 3
                    && ms
                        .iter()
                        .all(|m| !m.is_learner() && !m.client_urls().is_empty())
                    && ms.iter().any(|m| m.id() == new_id && m.name() == name);
                Ok(ok.then_some(()))
            }
        })
        .await?;
        let r = c.put("rep/after", "a", None).await?;
        acks.push(Ack {
            key: "rep/after".into(),
            rev: r.header().context("header")?.revision(),
            at: Instant::now(),
        });
        verify_members(&cluster, "rep/", &acks).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn rolling_restart_under_write_load_loses_no_acknowledged_write() -> Result<()> {
    bounded(LIMIT, async {
        let mut cluster = common::start(3).await?;
        let load = Load::start(cluster.endpoints(), "roll/", 4);
        tokio::time::sleep(Duration::from_millis(500)).await;
        for i in 0..cluster.len() {
            // kill -9 and start again on the same data dir; wait until it serves.
            cluster.restart(i).await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let acks = load.stop().await?;
        ensure!(acks.len() >= 50, "only {} writes acknowledged", acks.len());
        verify_members(&cluster, "roll/", &acks).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn five_members_form_and_survive_losing_two() -> Result<()> {
    bounded(LIMIT, async {
        let mut cluster = common::start(5).await?;
        let leader = cluster.wait_leader(Duration::from_secs(10)).await?;
        let mut c = client_at(&cluster.endpoints()[(leader + 1) % 5]).await?;
        let list = c.member_list().await?;
        ensure!(list.members().len() == 5, "{:?}", list.members());
        let mut acks = Vec::new();
        let put = |c: Client, key: String| async move {
            let mut c = c;
            let r = c.put(key.clone(), "v", None).await?;
            anyhow::Ok(Ack {
                key,
                rev: r.header().context("header")?.revision(),
                at: Instant::now(),
            })
        };
        acks.push(put(c.clone(), "five/before".into()).await?);

        // Lose two members, the leader among them.
        let second = (leader + 2) % 5;
        cluster.kill(leader)?;
        cluster.kill(second)?;
        let survivor = cluster.live_endpoints()[0].clone();
        let ack = eventually(Duration::from_secs(15), "a write with 3 of 5", || {
            let c = c.clone();
            async move { Ok(put(c, "five/after".into()).await.ok()) }
        })
        .await?;
        acks.push(ack);
        verify_members(&cluster, "five/", &acks).await?;

        // A third loss leaves no quorum: writes cannot commit.
        let third = cluster
            .members()
            .iter()
            .position(|m| m.is_running() && m.client_url() != survivor)
            .context("a third live member")?;
        cluster.kill(third)?;
        let mut c = client_at(&survivor).await?;
        let stalled =
            tokio::time::timeout(Duration::from_secs(3), c.put("five/no-quorum", "x", None)).await;
        if let Ok(Ok(r)) = stalled {
            bail!("a write committed with 2 of 5 members: {r:?}");
        }

        // Back to quorum: the dead come back, every write so far is everywhere.
        cluster.restart(third).await?;
        cluster.restart(leader).await?;
        cluster.restart(second).await?;
        let c = client_at(&survivor).await?;
        let ack = eventually(Duration::from_secs(15), "a write after recovery", || {
            let c = c.clone();
            async move { Ok(put(c, "five/recovered".into()).await.ok()) }
        })
        .await?;
        acks.push(ack);
        verify_members(&cluster, "five/", &acks).await?;
        Ok(())
    })
    .await
}

/// A lease kept alive through a follower outlives the leader being killed: the
/// follower forwards each keep-alive to whoever leads, the new leader renews only once it
/// has confirmed its leadership and applied what the old one committed, and its lease
/// deadlines start over when it takes office. Once the keep-alives stop, the lease expires
/// on the new leader and its key is deleted.
#[tokio::test]
async fn lease_kept_alive_through_a_follower_outlives_a_leader_kill() -> Result<()> {
    bounded(LIMIT, async {
        let mut cluster = common::start(3).await?;
        let leader = cluster.wait_leader(Duration::from_secs(10)).await?;
        let follower = (0..3).find(|i| *i != leader).context("no follower")?;
        let mut c = client_at(cluster.member(follower)?.client_url()).await?;
        let ttl = 4;
        let id = c.lease_grant(ttl, None).await?.id();
        c.put("held", "v", Some(PutOptions::new().with_lease(id)))
            .await?;

        // Keep-alives every 500 ms for three TTLs, the leader killed one second in. A
        // keep-alive may fail while no leader is known (the stream is then opened again);
        // none may say the lease is gone.
        let killed_at = Instant::now() + Duration::from_secs(1);
        let mut killed = false;
        let mut renewed_after_kill = 0;
        let mut keeper = None;
        let end = Instant::now() + Duration::from_secs(3 * ttl as u64);
        while Instant::now() < end {
            if !killed && Instant::now() >= killed_at {
                cluster.kill(leader)?;
                killed = true;
            }
            if keeper.is_none() {
                keeper = c.lease_keep_alive(id).await.ok();
            }
            if let Some((k, stream)) = keeper.as_mut() {
                let answer = async {
                    k.keep_alive().await?;
                    tokio::time::timeout(Duration::from_secs(3), stream.message())
                        .await
                        .context("keep-alive response")??
                        .context("keep-alive stream ended")
                }
                .await;
                match answer {
                    Ok(resp) => {
                        ensure!(
                            resp.ttl() > 0,
                            "the lease was reported gone while kept alive: {resp:?}"
                        );
                        if killed {
                            renewed_after_kill += 1;
                        }
                    }
                    Err(_) => keeper = None,
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        ensure!(killed, "the leader was not killed");
        ensure!(
            renewed_after_kill >= 3,
            "only {renewed_after_kill} keep-alives answered after the leader was killed"
        );
        let got = c.get("held", None).await?;
        ensure!(got.kvs().len() == 1, "the kept-alive key is gone: {got:?}");
        // TimeToLive through the follower: forwarded to the new leader, which answers
        // once it confirmed its leadership and its lessor keeps the deadlines.
        let t = c.lease_time_to_live(id, None).await?;
        ensure!(
            t.granted_ttl() == ttl && t.ttl() > 0 && t.ttl() <= ttl,
            "TimeToLive after the kill: {t:?}"
        );

        // No more keep-alives: the new leader expires the lease and deletes the key.
        drop(keeper);
        eventually(
            Duration::from_secs(3 * ttl as u64),
            "the key expires",
            || {
                let mut c = c.clone();
                async move { Ok((c.get("held", None).await?.kvs().is_empty()).then_some(())) }
            },
        )
        .await?;
        Ok(())
    })
    .await
}

/// A leader killed and restarted before the others' election timeout resumes its term
/// without an election (openraft), with a state machine that lost its unsynced tail. Its
/// first linearizable read must still see every write acknowledged before the kill
/// (`docs/store-restarted-leader-reads.md`): jepsen once caught it answering with a value
/// overwritten seconds earlier. The followers are paused across the restart so that the
/// read's index is taken before the leader has heard from them (and learnt how far its
/// log was committed) — the window jepsen hit by chance.
#[tokio::test]
async fn leader_restarted_before_an_election_reads_its_acknowledged_writes() -> Result<()> {
    bounded(LIMIT, async {
        // Slow elections, so that the restart is over long before anyone else campaigns.
        let mut config = common::skiff(3)?;
        config.extra_args = vec![
            "--heartbeat-interval=100".into(),
            "--election-timeout=5000".into(),
        ];
        let mut cluster = Cluster::start(config).await?;
        let leader = cluster.wait_leader(Duration::from_secs(30)).await?;
        let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
        let mut c = client_at(cluster.member(leader)?.client_url()).await?;
        // Values of 1 KiB, so that part of the state machine's unsynced writes reach the
        // disk before the kill and part do not: the restarted leader has applied past the
        // first entry of its term, but not everything.
        let value = |i: usize| format!("{i:06}{}", "x".repeat(1024));
        let (mut last, mut last_value) = (0, String::new());
        for i in 1..=2000 {
            let r = c.put("rl/k", value(i), None).await?;
            last = r.header().context("header")?.revision();
            last_value = value(i);
        }

        for f in &followers {
            cluster.pause(*f)?;
        }
        cluster.kill(leader)?;
        let killed_at = Instant::now();
        cluster.member_mut(leader)?.start()?;
        let url = cluster.member(leader)?.client_url().to_string();
        let c = eventually(Duration::from_secs(10), "the restarted leader listens", || {
            let url = url.clone();
            async move { Ok(client_at(&url).await.ok()) }
        })
        .await?;
        // The read is in flight (waiting for the paused followers to confirm the
        // leadership) when they resume.
        let read = tokio::spawn({
            let mut c = c.clone();
            async move {
                let first = c.get("rl/k", None).await;
                (first, c)
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        for f in &followers {
            cluster.resume(*f)?;
        }
        let (first, c) = read.await.context("read task")?;
        // A read that timed out while the followers were paused is asked again.
        let got = match first {
            Ok(r) => r,
            Err(_) => {
                eventually(Duration::from_secs(20), "a linearizable read", || {
                    let mut c = c.clone();
                    async move { Ok(c.get("rl/k", None).await.ok()) }
                })
                .await?
            }
        };
        let kv = got.kvs().first().context("rl/k is missing")?;
        ensure!(
            kv.value() == last_value.as_bytes() && kv.mod_revision() == last,
            "read value {:?}… at revision {} after the restart; the last acknowledged write was {:?}… at {last}",
            String::from_utf8_lossy(&kv.value()[..6.min(kv.value().len())]),
            kv.mod_revision(),
            &last_value[..6]
        );
        if !common::against_etcd() {
            ensure!(
                cluster.leader().await? == leader && killed_at.elapsed() < Duration::from_secs(5),
                "another member was elected meanwhile: the restart did not resume the term"
            );
        }
        Ok(())
    })
    .await
}
