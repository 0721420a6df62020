//! `skiff store` driven by the `etcd-client` crate, a second real client of the etcd v3
//! API: KV, txn, leases with keep-alive, watches with prev_kv, watch resume after a
//! compaction and after the watched member is killed, and etcd's errors (gRPC code and
//! message) for bad input — after which the member must still answer.
//!
//! Each test starts its own cluster on loopback ports (killed by pid when the test ends)
//! and is bounded in time.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use common::{bounded, eventually};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, PutOptions,
    SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse, WatchOptions, WatchStream,
};
use skiff_tests::Cluster;
use tonic::Code;

/// Per-test time bound.
const LIMIT: Duration = Duration::from_secs(60);

/// A client of the given members (etcd-client balances over them).
async fn client_of(endpoints: &[String]) -> Result<Client> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(Duration::from_secs(5));
    Client::connect(endpoints, Some(options))
        .await
        .with_context(|| format!("connecting to {endpoints:?}"))
}

async fn client(cluster: &Cluster) -> Result<Client> {
    client_of(&cluster.endpoints()).await
}

/// The gRPC code and message of an etcd-client error; anything but a gRPC status fails.
fn status(err: etcd_client::Error) -> Result<(Code, String)> {
    match err {
        etcd_client::Error::GRpcStatus(s) => Ok((s.code(), s.message().to_string())),
        other => bail!("not a gRPC status: {other:?}"),
    }
}

/// Asserts that `result` failed with exactly this gRPC code and message.
fn assert_status<T: std::fmt::Debug>(
    result: Result<T, etcd_client::Error>,
    code: Code,
    message: &str,
) -> Result<()> {
    let err = match result {
        Ok(v) => bail!("expected {code:?} {message:?}, got success {v:?}"),
        Err(e) => e,
    };
    let (got_code, got_message) = status(err)?;
    ensure!(
        (got_code, got_message.as_str()) == (code, message),
        "expected {code:?} {message:?}, got {got_code:?} {got_message:?}"
    );
    Ok(())
}

async fn value(client: &mut Client, key: &str) -> Result<Option<String>> {
    let resp = client.get(key, None).await?;
    Ok(resp
        .kvs()
        .first()
        .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
}

fn revision(header: Option<&etcd_client::ResponseHeader>) -> Result<i64> {
    Ok(header.context("response without header")?.revision())
}

/// The next watch response, or an error after 10 s.
async fn next(stream: &mut WatchStream) -> Result<etcd_client::WatchResponse> {
    match tokio::time::timeout(Duration::from_secs(10), stream.message()).await {
        Ok(r) => r?.context("watch stream ended"),
        Err(_) => bail!("no watch response within 10 s"),
    }
}

/// Reads watch responses until `n` events arrived; returns them as (type, key, value,
/// mod revision, prev value).
async fn events(stream: &mut WatchStream, n: usize) -> Result<Vec<Ev>> {
    let mut out = Vec::new();
    while out.len() < n {
        let resp = next(stream).await?;
        ensure!(
            !resp.canceled(),
            "watch canceled: {:?}",
            resp.cancel_reason()
        );
        out.extend(resp.events().iter().map(Ev::from));
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Ev {
    put: bool,
    key: String,
    value: String,
    rev: i64,
    prev: Option<String>,
}

impl From<&etcd_client::Event> for Ev {
    fn from(e: &etcd_client::Event) -> Self {
        let kv = e.kv();
        Ev {
            put: e.event_type() == EventType::Put,
            key: kv
                .map(|k| String::from_utf8_lossy(k.key()).into_owned())
                .unwrap_or_default(),
            value: kv
                .map(|k| String::from_utf8_lossy(k.value()).into_owned())
                .unwrap_or_default(),
            rev: kv.map(|k| k.mod_revision()).unwrap_or_default(),
            prev: e
                .prev_kv()
                .map(|p| String::from_utf8_lossy(p.value()).into_owned()),
        }
    }
}

#[tokio::test]
async fn kv_put_get_delete_with_options() -> Result<()> {
    bounded(LIMIT, async {
        let cluster = common::start(1).await?;
        let mut c = client(&cluster).await?;

        let r1 = revision(c.put("k/a", "1", None).await?.header())?;
        let resp = c
            .put("k/a", "2", Some(PutOptions::new().with_prev_key()))
            .await?;
        let r2 = revision(resp.header())?;
        assert_eq!(r2, r1 + 1);
        assert_eq!(resp.prev_key().map(|kv| kv.value()), Some(&b"1"[..]));
        c.put("k/b", "3", None).await?;
        c.put("k/c", "4", None).await?;

        let resp = c.get("k/a", None).await?;
        let kv = &resp.kvs()[0];
        assert_eq!(
            (kv.create_revision(), kv.mod_revision(), kv.version()),
            (r1, r2, 2)
        );

        let resp = c
            .get("k/", Some(GetOptions::new().with_prefix().with_limit(2)))
            .await?;
        assert_eq!(resp.kvs().len(), 2);
        assert!(resp.more());
        assert_eq!(resp.count(), 3);

        let resp = c
            .get(
                "k/",
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_sort(SortTarget::Key, SortOrder::Descend),
                ),
            )
            .await?;
        let keys: Vec<&[u8]> = resp.kvs().iter().map(|kv| kv.key()).collect();
        assert_eq!(keys, [&b"k/c"[..], b"k/b", b"k/a"]);

        let resp = c
            .get("k/a", Some(GetOptions::new().with_revision(r1)))
            .await?;
        assert_eq!(resp.kvs()[0].value(), b"1");

        let resp = c
            .get(
                "k/",
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await?;
        assert_eq!((resp.count(), resp.kvs().len()), (3, 0));
        let resp = c
            .get("k/", Some(GetOptions::new().with_prefix().with_keys_only()))
            .await?;
        assert!(resp.kvs().iter().all(|kv| kv.value().is_empty()));
        let resp = c
            .get(
                "k/",
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_min_mod_revision(r2 + 1),
                ),
            )
            .await?;
        assert_eq!(resp.kvs().len(), 2, "k/b and k/c were modified after r2");
        let resp = c
            .get("k/a", Some(GetOptions::new().with_serializable()))
            .await?;
        assert_eq!(resp.kvs()[0].value(), b"2");

        // ignore_value keeps the value, changes the revision.
        c.put("k/a", "", Some(PutOptions::new().with_ignore_value()))
            .await?;
        assert_eq!(value(&mut c, "k/a").await?.as_deref(), Some("2"));

        let resp = c
            .delete(
                "k/",
                Some(DeleteOptions::new().with_prefix().with_prev_key()),
            )
            .await?;
        assert_eq!(resp.deleted(), 3);
        assert_eq!(resp.prev_kvs().len(), 3);
        assert_eq!(
            c.get("k/", Some(GetOptions::new().with_prefix()))
                .await?
                .count(),
            0
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn txn_compare_and_swap_with_nested_ops() -> Result<()> {
    bounded(LIMIT, async {
        let cluster = common::start(1).await?;
        let mut c = client(&cluster).await?;
        let created = revision(c.put("cas", "v1", None).await?.header())?;

        // Optimistic update as Kubernetes does it: compare mod_revision, on failure get.
        let txn = Txn::new()
            .when([Compare::mod_revision("cas", CompareOp::Equal, created)])
            .and_then([TxnOp::put("cas", "v2", None), TxnOp::put("side", "s", None)])
            .or_else([TxnOp::get("cas", None)]);
        let resp = c.txn(txn.clone()).await?;
        assert!(resp.succeeded());
        let rev = revision(resp.header())?;
        assert_eq!(rev, created + 1, "both puts share one revision");
        let side = c.get("side", None).await?;
        assert_eq!(side.kvs()[0].mod_revision(), rev);

        // Same txn again: the compare fails, the failure branch returns the current value.
        let resp = c.txn(txn).await?;
        assert!(!resp.succeeded());
        match &resp.op_responses()[..] {
            [TxnOpResponse::Get(g)] => assert_eq!(g.kvs()[0].value(), b"v2"),
            other => bail!("unexpected op responses {other:?}"),
        }

        // Create-if-absent (create_revision = 0), value / version compares, a nested txn.
        let txn = Txn::new()
            .when([
                Compare::create_revision("fresh", CompareOp::Equal, 0),
                Compare::value("cas", CompareOp::Equal, "v2"),
                Compare::version("cas", CompareOp::Greater, 1),
            ])
            .and_then([
                TxnOp::put("fresh", "f", None),
                TxnOp::txn(
                    Txn::new()
                        .when([Compare::value("side", CompareOp::NotEqual, "s")])
                        .and_then([TxnOp::delete("side", None)])
                        .or_else([TxnOp::get("side", None)]),
                ),
            ]);
        let resp = c.txn(txn).await?;
        assert!(resp.succeeded());
        match &resp.op_responses()[..] {
            [TxnOpResponse::Put(_), TxnOpResponse::Txn(inner)] => {
                assert!(!inner.succeeded());
                match &inner.op_responses()[..] {
                    [TxnOpResponse::Get(g)] => assert_eq!(g.kvs()[0].value(), b"s"),
                    other => bail!("unexpected nested responses {other:?}"),
                }
            }
            other => bail!("unexpected op responses {other:?}"),
        }
        assert_eq!(value(&mut c, "fresh").await?.as_deref(), Some("f"));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn lease_keep_alive_holds_the_key_and_expiry_deletes_it_with_an_event() -> Result<()> {
    bounded(LIMIT, async {
        let cluster = common::start(1).await?;
        let mut c = client(&cluster).await?;
        let lease = c.lease_grant(2, None).await?;
        assert_eq!(lease.ttl(), 2);
        let id = lease.id();
        c.put("leased", "v", Some(PutOptions::new().with_lease(id)))
            .await?;
        let start = revision(c.get("x", None).await?.header())?;
        let mut watch = c
            .watch(
                "leased",
                Some(
                    WatchOptions::new()
                        .with_start_revision(start + 1)
                        .with_prev_key(),
                ),
            )
            .await?;

        // Keep it alive for twice its TTL: the key stays.
        let (mut keeper, mut responses) = c.lease_keep_alive(id).await?;
        for _ in 0..8 {
            keeper.keep_alive().await?;
            let resp = tokio::time::timeout(Duration::from_secs(5), responses.message())
                .await
                .context("keep-alive response")??
                .context("keep-alive stream ended")?;
            assert_eq!((resp.id(), resp.ttl()), (id, 2));
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert_eq!(value(&mut c, "leased").await?.as_deref(), Some("v"));
        let ttl = c
            .lease_time_to_live(
                id,
                Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys()),
            )
            .await?;
        assert_eq!(ttl.keys(), [b"leased".to_vec()]);
        assert!(c.leases().await?.leases().iter().any(|l| l.id() == id));

        // Stop keeping it alive: it expires, the key is deleted with a DELETE event.
        drop(keeper);
        drop(responses);
        let evs = events(&mut watch, 1).await?;
        assert!(!evs[0].put, "expected a DELETE: {evs:?}");
        assert_eq!(evs[0].key, "leased");
        assert_eq!(evs[0].prev.as_deref(), Some("v"));
        assert_eq!(value(&mut c, "leased").await?, None);
        let ttl = c.lease_time_to_live(id, None).await?;
        assert_eq!(ttl.ttl(), -1, "expired lease");

        // Revoke deletes attached keys at once.
        let id2 = c.lease_grant(60, None).await?.id();
        c.put("r1", "a", Some(PutOptions::new().with_lease(id2)))
            .await?;
        c.put("r2", "b", Some(PutOptions::new().with_lease(id2)))
            .await?;
        c.lease_revoke(id2).await?;
        assert_eq!(
            c.get("r", Some(GetOptions::new().with_prefix()))
                .await?
                .count(),
            0
        );
        assert_status(
            c.lease_revoke(id2).await,
            Code::NotFound,
            "etcdserver: requested lease not found",
        )?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn watch_prefix_with_prev_kv_filters_and_cancel() -> Result<()> {
    bounded(LIMIT, async {
        let cluster = common::start(1).await?;
        let mut c = client(&cluster).await?;
        c.put("p/a", "0", None).await?;
        let mut w = c
            .watch(
                "p/",
                Some(WatchOptions::new().with_prefix().with_prev_key()),
            )
            .await?;
        let created = next(&mut w).await?;
        assert!(created.created());
        let id = created.watch_id();

        let r1 = revision(c.put("p/a", "1", None).await?.header())?;
        c.put("q", "outside", None).await?;
        let resp = c
            .txn(Txn::new().and_then([TxnOp::put("p/b", "x", None), TxnOp::delete("p/a", None)]))
            .await?;
        let r3 = revision(resp.header())?;

        let evs = events(&mut w, 3).await?;
        assert_eq!(
            evs,
            [
                Ev {
                    put: true,
                    key: "p/a".into(),
                    value: "1".into(),
                    rev: r1,
                    prev: Some("0".into())
                },
                Ev {
                    put: true,
                    key: "p/b".into(),
                    value: "x".into(),
                    rev: r3,
                    prev: None
                },
                Ev {
                    put: false,
                    key: "p/a".into(),
                    value: String::new(),
                    rev: r3,
                    prev: Some("1".into())
                },
            ]
        );

        // Cancel: a canceled response for our watch id, then nothing more.
        w.cancel(id).await?;
        let resp = next(&mut w).await?;
        assert!(resp.canceled() && resp.watch_id() == id, "{resp:?}");
        c.put("p/after-cancel", "x", None).await?;
        let more = tokio::time::timeout(Duration::from_millis(500), w.message()).await;
        ensure!(more.is_err(), "event after cancel: {more:?}");

        // NODELETE filter on a second watch of the same stream.
        w.watch(
            "p/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_filters([etcd_client::WatchFilterType::NoDelete]),
            ),
        )
        .await?;
        assert!(next(&mut w).await?.created());
        c.delete("p/b", None).await?;
        let r = revision(c.put("p/c", "c", None).await?.header())?;
        let evs = events(&mut w, 1).await?;
        assert_eq!((evs[0].key.as_str(), evs[0].rev), ("p/c", r), "{evs:?}");

        // A progress request is answered with the current revision.
        w.request_progress().await?;
        let resp = next(&mut w).await?;
        assert!(resp.events().is_empty());
        assert!(revision(resp.header())? >= r);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn watch_from_compacted_revision_is_canceled_and_resumes_from_compact_revision() -> Result<()>
{
    bounded(LIMIT, async {
        let cluster = common::start(1).await?;
        let mut c = client(&cluster).await?;
        let mut revs = Vec::new();
        for i in 0..6 {
            revs.push(revision(c.put("wc", i.to_string(), None).await?.header())?);
        }
        let compact_at = revs[3];
        c.compact(compact_at, None).await?;

        // A watch from a revision below the compaction point: created, then canceled with
        // compact_revision (etcd may send both in one response).
        let mut w = c
            .watch("wc", Some(WatchOptions::new().with_start_revision(revs[0])))
            .await?;
        let mut resp = next(&mut w).await?;
        if resp.created() && !resp.canceled() {
            resp = next(&mut w).await?;
        }
        assert!(resp.canceled(), "{resp:?}");
        assert_eq!(resp.compact_revision(), compact_at);
        assert!(resp.events().is_empty());

        // Resuming after compact_revision gets everything from there on, in order.
        let mut w = c
            .watch(
                "wc",
                Some(WatchOptions::new().with_start_revision(resp.compact_revision() + 1)),
            )
            .await?;
        assert!(next(&mut w).await?.created());
        let evs = events(&mut w, 2).await?;
        let got: Vec<(i64, &str)> = evs.iter().map(|e| (e.rev, e.value.as_str())).collect();
        assert_eq!(got, [(revs[4], "4"), (revs[5], "5")]);
        // And then the live events.
        let r = revision(c.put("wc", "live", None).await?.header())?;
        let evs = events(&mut w, 1).await?;
        assert_eq!((evs[0].rev, evs[0].value.as_str()), (r, "live"));
        Ok(())
    })
    .await
}

/// The compacted revision itself is still readable (etcd compacts revisions *below* it),
/// and etcd serves a watch that starts there: its check is `start < compact_revision`.
/// Skiff's watch service cancels a watch with `start_revision <= compact_revision`, so a
/// client that resumes from the `compact_revision` of a canceled watch — what the
/// WatchResponse documentation points it to — is canceled a second time.
#[tokio::test]
async fn watch_from_exactly_the_compact_revision_is_served() -> Result<()> {
    bounded(LIMIT, async {
        let cluster = common::start(1).await?;
        let mut c = client(&cluster).await?;
        let mut revs = Vec::new();
        for i in 0..3 {
            revs.push(revision(c.put("wx", i.to_string(), None).await?.header())?);
        }
        c.compact(revs[1], None).await?;
        let got = c
            .get("wx", Some(GetOptions::new().with_revision(revs[1])))
            .await?;
        assert_eq!(
            got.kvs()[0].value(),
            b"1",
            "the compact revision is readable"
        );
        let mut w = c
            .watch("wx", Some(WatchOptions::new().with_start_revision(revs[1])))
            .await?;
        assert!(next(&mut w).await?.created());
        let evs = events(&mut w, 2).await?;
        let got: Vec<(i64, &str)> = evs.iter().map(|e| (e.rev, e.value.as_str())).collect();
        assert_eq!(got, [(revs[1], "1"), (revs[2], "2")]);
        Ok(())
    })
    .await
}

/// A watcher on member X reads events while a writer writes through the other members;
/// X is killed with SIGKILL mid-stream (it is the leader, so writes also have to wait for
/// an election); the watcher reconnects to another member and resumes from its last
/// revision + 1. Together the two watches must see every revision exactly once, in order.
#[tokio::test]
async fn watch_resumes_on_another_member_after_its_member_is_killed() -> Result<()> {
    bounded(Duration::from_secs(90), async {
        let mut cluster = common::start(3).await?;
        let x = cluster.wait_leader(Duration::from_secs(10)).await?;
        let endpoints = cluster.endpoints();
        let others: Vec<String> = endpoints
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != x)
            .map(|(_, e)| e.clone())
            .collect();

        let mut setup = client_of(&others).await?;
        let start = revision(setup.put("ww/start", "s", None).await?.header())?;
        let mut on_x = client_of(&[endpoints[x].clone()]).await?;
        let mut w = on_x
            .watch(
                "ww/",
                Some(WatchOptions::new().with_prefix().with_start_revision(start)),
            )
            .await?;

        // Writer: 300 puts through the survivors, each retried until acknowledged.
        const WRITES: usize = 300;
        let writer = tokio::spawn({
            let others = others.clone();
            async move {
                let mut c = client_of(&others).await?;
                let mut acked = Vec::new();
                for i in 0..WRITES {
                    let key = format!("ww/{i:04}");
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
                    loop {
                        match c.put(key.clone(), "v", None).await {
                            Ok(r) => {
                                acked.push(revision(r.header())?);
                                break;
                            }
                            Err(_) if tokio::time::Instant::now() < deadline => {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                            Err(e) => {
                                return Err(anyhow::Error::from(e).context(format!("put {key}")))
                            }
                        }
                    }
                }
                anyhow::Ok(acked)
            }
        });

        // Read from X until 50 events, then kill it.
        let mut seen: Vec<Ev> = Vec::new();
        while seen.len() < 50 {
            let resp = next(&mut w).await?;
            seen.extend(resp.events().iter().map(Ev::from));
        }
        cluster.kill(x)?;
        // Drain whatever X had sent before it died; then the stream ends or fails.
        loop {
            match tokio::time::timeout(Duration::from_secs(5), w.message()).await {
                Ok(Ok(Some(resp))) => seen.extend(resp.events().iter().map(Ev::from)),
                Ok(Ok(None)) | Ok(Err(_)) => break,
                Err(_) => bail!("the watch on a killed member neither ended nor failed in 5 s"),
            }
        }
        drop(w);
        drop(on_x);
        let last = seen.last().context("no events")?.rev;

        // Resume on another member from last + 1.
        let elsewhere = client_of(&others[..1]).await?;
        let mut w = eventually(Duration::from_secs(15), "watch on a survivor", || {
            let mut c = elsewhere.clone();
            async move {
                let options = WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(last + 1);
                Ok(c.watch("ww/", Some(options)).await.ok())
            }
        })
        .await?;
        let acked = writer.await??;
        assert_eq!(acked.len(), WRITES);
        let mut reader = elsewhere.clone();
        let final_rev = revision(
            reader
                .get(
                    "ww/",
                    Some(GetOptions::new().with_prefix().with_count_only()),
                )
                .await?
                .header(),
        )?;
        while seen.last().map(|e| e.rev) < Some(final_rev) {
            let resp = next(&mut w).await?;
            ensure!(!resp.canceled(), "resumed watch canceled: {resp:?}");
            seen.extend(resp.events().iter().map(Ev::from));
        }

        // Every revision from start to the end exactly once and in order (only this test
        // writes), which covers every acknowledged write.
        let revs: Vec<i64> = seen.iter().map(|e| e.rev).collect();
        let expected: Vec<i64> = (start..=final_rev).collect();
        assert_eq!(revs, expected, "gap or duplicate around the kill at {last}");
        let seen_revs: BTreeSet<i64> = revs.iter().copied().collect();
        for r in &acked {
            ensure!(
                seen_revs.contains(r),
                "acknowledged write at revision {r} never seen"
            );
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn bad_requests_get_etcds_errors_and_the_member_keeps_serving() -> Result<()> {
    bounded(LIMIT, async {
        let cluster = common::start(1).await?;
        let mut c = client(&cluster).await?;
        let r1 = revision(c.put("bad", "1", None).await?.header())?;
        let r2 = revision(c.put("bad", "2", None).await?.header())?;
        c.compact(r2, None).await?;

        // Over the 1.5 MiB request limit (within gRPC's 2 MiB receive limit).
        let big = vec![b'x'; 1_600_000];
        assert_status(
            c.put("big", big, None).await,
            Code::InvalidArgument,
            "etcdserver: request is too large",
        )?;
        // Far over it: rejected by the gRPC layer (see
        // `message_over_the_grpc_limit_is_resource_exhausted` for its code), the member
        // survives.
        let huge = vec![b'x'; 3 * 1024 * 1024];
        ensure!(
            c.put("huge", huge, None).await.is_err(),
            "3 MiB put succeeded"
        );

        assert_status(
            c.put("k", "v", Some(PutOptions::new().with_lease(0x1234_5678)))
                .await,
            Code::NotFound,
            "etcdserver: requested lease not found",
        )?;
        assert_status(
            c.get("bad", Some(GetOptions::new().with_revision(r1)))
                .await,
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted",
        )?;
        assert_status(
            c.get("bad", Some(GetOptions::new().with_revision(r2 + 1000)))
                .await,
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision",
        )?;
        assert_status(
            c.compact(r1, None).await,
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted",
        )?;
        assert_status(
            c.compact(r2 + 1000, None).await,
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision",
        )?;

        let dup = Txn::new().and_then([TxnOp::put("d", "1", None), TxnOp::put("d", "2", None)]);
        assert_status(
            c.txn(dup).await,
            Code::InvalidArgument,
            "etcdserver: duplicate key given in txn request",
        )?;
        let dup_del = Txn::new().and_then([
            TxnOp::put("d/x", "1", None),
            TxnOp::delete("d/", Some(DeleteOptions::new().with_prefix())),
        ]);
        assert_status(
            c.txn(dup_del).await,
            Code::InvalidArgument,
            "etcdserver: duplicate key given in txn request",
        )?;

        let many: Vec<TxnOp> = (0..129)
            .map(|i| TxnOp::put(format!("m{i}"), "v", None))
            .collect();
        assert_status(
            c.txn(Txn::new().and_then(many)).await,
            Code::InvalidArgument,
            "etcdserver: too many operations in txn request",
        )?;
        let max: Vec<TxnOp> = (0..128)
            .map(|i| TxnOp::put(format!("m{i}"), "v", None))
            .collect();
        c.txn(Txn::new().and_then(max))
            .await
            .context("128 ops are allowed")?;

        assert_status(
            c.put("", "v", None).await,
            Code::InvalidArgument,
            "etcdserver: key is not provided",
        )?;
        assert_status(
            c.get("", None).await,
            Code::InvalidArgument,
            "etcdserver: key is not provided",
        )?;
        assert_status(
            c.delete("", None).await,
            Code::InvalidArgument,
            "etcdserver: key is not provided",
        )?;

        // range_end < key is not an error: nothing is in that range.
        let resp = c
            .get("m5", Some(GetOptions::new().with_range("m1")))
            .await?;
        assert_eq!((resp.count(), resp.kvs().len()), (0, 0));
        let resp = c
            .delete("m5", Some(DeleteOptions::new().with_range("m1")))
            .await?;
        assert_eq!(resp.deleted(), 0);

        // The member still serves, with its data intact.
        assert_eq!(value(&mut c, "bad").await?.as_deref(), Some("2"));
        c.put("still", "alive", None).await?;
        assert_eq!(value(&mut c, "still").await?.as_deref(), Some("alive"));
        assert_eq!(
            c.get("m", Some(GetOptions::new().with_prefix().with_count_only()))
                .await?
                .count(),
            128
        );
        assert!(cluster.member(0)?.is_running());
        Ok(())
    })
    .await
}

/// etcd's gRPC server receives at most the request limit + 512 KiB (2 MiB by default) and
/// rejects a larger message with ResourceExhausted ("grpc: received message larger than
/// max (3145739 vs. 2097152)"). Skiff's tonic server answered OutOfRange ("Error, decoded
/// message length too large: found 3145739 bytes, the limit is: 2097152 bytes"): a client
/// retrying or classifying by code sees a different error class.
#[tokio::test]
async fn message_over_the_grpc_limit_is_resource_exhausted() -> Result<()> {
    bounded(LIMIT, async {
        let cluster = common::start(1).await?;
        let mut c = client(&cluster).await?;
        let huge = vec![b'x'; 3 * 1024 * 1024];
        let err = c
            .put("huge", huge, None)
            .await
            .err()
            .context("3 MiB put succeeded")?;
        let (code, msg) = status(err)?;
        ensure!(code == Code::ResourceExhausted, "3 MiB put: {code:?} {msg}");
        c.put("still", "alive", None).await?;
        Ok(())
    })
    .await
}

/// A range's header revision is the revision the range read: while writes land
/// concurrently, every response holds exactly what a range pinned to its header revision
/// holds (the API server's watch cache lists, then watches from that revision + 1, and
/// would miss a write otherwise).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_header_revision_is_the_revision_read() -> Result<()> {
    bounded(LIMIT, async {
        let cluster = common::start(1).await?;
        let mut writer = client(&cluster).await?;
        let mut reader = client(&cluster).await?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop_w = stop.clone();
        let w = tokio::spawn(async move {
            for i in 0..3000 {
                if stop_w.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                writer.put(format!("hdr/{i:05}"), "v", None).await?;
            }
            Ok::<_, anyhow::Error>(())
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut checked = 0;
        while tokio::time::Instant::now() < deadline {
            let now = reader
                .get("hdr/", Some(GetOptions::new().with_prefix()))
                .await?;
            let rev = revision(now.header())?;
            let pinned = reader
                .get(
                    "hdr/",
                    Some(GetOptions::new().with_prefix().with_revision(rev)),
                )
                .await?;
            ensure!(
                now.kvs().len() == pinned.kvs().len(),
                "range said revision {rev} with {} keys; the same range at {rev} has {}",
                now.kvs().len(),
                pinned.kvs().len()
            );
            ensure!(now.kvs().iter().all(|kv| kv.mod_revision() <= rev));
            checked += 1;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        w.await??;
        ensure!(checked > 10, "only {checked} ranges checked");
        Ok(())
    })
    .await
}

/// The client port hands gRPC requests to their service by name: a service it does not
/// serve answers gRPC's Unimplemented (what grpc-go answers), a plain HTTP path it does
/// not know a 404, and the known ones keep working.
#[tokio::test]
async fn unknown_grpc_service_is_unimplemented_and_unknown_path_is_404() -> Result<()> {
    use skiff_proto::etcdserverpb::{RangeRequest, RangeResponse};
    bounded(LIMIT, async {
        let cluster = common::start(1).await?;
        let url = cluster.endpoints()[0].clone();
        let channel = skiff_tests::client::connect(&url).await?;
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await?;
        let path = http::uri::PathAndQuery::from_static("/etcdserverpb.Nope/Range");
        let r = grpc
            .unary::<RangeRequest, RangeResponse, _>(
                tonic::Request::new(RangeRequest::default()),
                path,
                skiff_proto::codec::Codec::default(),
            )
            .await;
        let code = r
            .err()
            .context("a call to an unknown service succeeded")?
            .code();
        ensure!(code == Code::Unimplemented, "unknown service: {code:?}");

        let authority = skiff_tests::health::authority_of(&url)?;
        let (status, _) = skiff_tests::health::http_get(authority, "/nope").await?;
        ensure!(status == 404, "GET /nope: {status}");
        let (status, body) = skiff_tests::health::http_get(authority, "/version").await?;
        ensure!(status == 200, "GET /version: {status}");
        ensure!(
            String::from_utf8_lossy(&body).contains("etcdserver"),
            "GET /version: {}",
            String::from_utf8_lossy(&body)
        );
        let mut c = client(&cluster).await?;
        c.put("k", "v", None).await?;
        ensure!(value(&mut c, "k").await?.as_deref() == Some("v"));
        Ok(())
    })
    .await
}

/// The value of an unlabelled sample in Prometheus text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// `/metrics` on a single member: it leads, has a term, and its raft index gauges and
/// proposal counters follow the writes.
#[tokio::test]
async fn metrics_show_leadership_and_follow_the_writes() -> Result<()> {
    bounded(LIMIT, async {
        let cluster = common::start(1).await?;
        let url = cluster.endpoints()[0].clone();
        let authority = skiff_tests::health::authority_of(&url)?;
        let mut c = client(&cluster).await?;
        for i in 0..20 {
            c.put(format!("m{i}"), "v", None).await?;
        }
        let (status, body) = skiff_tests::health::http_get(authority, "/metrics").await?;
        ensure!(status == 200, "GET /metrics: {status}");
        let text = String::from_utf8_lossy(&body);
        let get = |name: &str| sample(&text, name).with_context(|| format!("{name} in {text}"));
        ensure!(get("etcd_server_has_leader")? == 1.0);
        ensure!(get("etcd_server_is_leader")? == 1.0);
        ensure!(get("skiff_raft_term")? >= 1.0);
        let applied = get("skiff_raft_applied_index")?;
        ensure!(applied >= 20.0, "applied index {applied} after 20 puts");
        ensure!(get("skiff_raft_commit_index")? >= applied);
        ensure!(get("etcd_server_proposals_applied_total")? >= 20.0);
        Ok(())
    })
    .await
}
