//! `skiff store` driven by the real `etcdctl` (Debian `etcd-client`, v3.4, `ETCDCTL_API=3`):
//! every command an operator uses, asserted on what etcdctl prints — values, revisions in
//! `-w json`, watch event lines, lease TTLs, member tables, error messages.
//!
//! Each test starts its own cluster on loopback ports (killed by pid when the test ends)
//! and is bounded in time.

mod common;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use common::{base64, bounded, eventually, json};
use skiff_tests::{Cluster, Etcdctl};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader, Lines};

/// Per-test time bound.
const LIMIT: Duration = Duration::from_secs(60);

/// `etcdctl put <key> <value> -w json`; returns the header revision of the write.
async fn put(ctl: &Etcdctl, key: &str, value: &str) -> Result<i64> {
    let out = json(&ctl.ok(&["put", key, value, "-w", "json"]).await?)?;
    out["header"]["revision"]
        .as_i64()
        .with_context(|| format!("no header.revision in {out}"))
}

/// The `kvs` of `etcdctl get <args> -w json` as (key, value, create, mod, version).
async fn get_json(ctl: &Etcdctl, args: &[&str]) -> Result<serde_json::Value> {
    let mut full = vec!["get"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["-w", "json"]);
    json(&ctl.ok(&full).await?)
}

/// Reads lines from a child's output until `wanted` lines arrived or 10 s passed.
async fn read_lines<R: AsyncRead + Unpin>(
    lines: &mut Lines<BufReader<R>>,
    wanted: usize,
) -> Result<Vec<String>> {
    let mut got = Vec::new();
    let read = async {
        while got.len() < wanted {
            match lines.next_line().await? {
                Some(l) => got.push(l),
                None => break,
            }
        }
        anyhow::Ok(())
    };
    match tokio::time::timeout(Duration::from_secs(10), read).await {
        Ok(r) => r?,
        Err(_) => anyhow::bail!("only {} of {wanted} lines within 10 s: {got:?}", got.len()),
    }
    ensure!(got.len() == wanted, "output ended after {got:?}");
    Ok(got)
}

#[tokio::test]
async fn put_get_prefix_rev_limit_sort_and_json_revisions() -> Result<()> {
    bounded(LIMIT, async {
        let cluster = common::start(1).await?;
        let ctl = common::etcdctl(&cluster);

        let r1 = put(&ctl, "fruit/apple", "red").await?;
        let r2 = put(&ctl, "fruit/banana", "yellow").await?;
        let r3 = put(&ctl, "fruit/apple", "green").await?;
        let r4 = put(&ctl, "veg/carrot", "orange").await?;
        ensure!(
            r2 == r1 + 1 && r3 == r2 + 1 && r4 == r3 + 1,
            "one revision per put: {r1} {r2} {r3} {r4}"
        );

        // Plain get prints key and value lines.
        let out = ctl.ok(&["get", "fruit/apple"]).await?;
        assert_eq!(out, "fruit/apple\ngreen\n");

        // -w json: create/mod revision and version of a key written twice.
        let j = get_json(&ctl, &["fruit/apple"]).await?;
        let kv = &j["kvs"][0];
        assert_eq!(kv["key"], base64(b"fruit/apple"));
        assert_eq!(kv["value"], base64(b"green"));
        assert_eq!(kv["create_revision"], r1);
        assert_eq!(kv["mod_revision"], r3);
        assert_eq!(kv["version"], 2);
        assert_eq!(j["header"]["revision"], r4);
        assert_eq!(j["count"], 1);

        // --prefix: only the keys under it, in key order.
        let out = ctl.ok(&["get", "fruit/", "--prefix"]).await?;
        assert_eq!(out, "fruit/apple\ngreen\nfruit/banana\nyellow\n");
        let out = ctl
            .ok(&["get", "fruit/", "--prefix", "--keys-only"])
            .await?;
        assert_eq!(
            out.split_whitespace().collect::<Vec<_>>(),
            ["fruit/apple", "fruit/banana"]
        );
        // --rev: the value as of an older revision.
        let out = ctl
            .ok(&["get", "fruit/apple", &format!("--rev={r1}")])
            .await?;
        assert_eq!(out, "fruit/apple\nred\n");
        let out = ctl
            .ok(&["get", "veg/carrot", &format!("--rev={r3}")])
            .await?;
        assert_eq!(
            out, "",
            "a key created later is absent at an earlier revision"
        );

        // --limit: the first N keys, "more" set and the full count.
        let j = get_json(&ctl, &["", "--prefix", "--limit=2"]).await?;
        assert_eq!(j["kvs"].as_array().map(Vec::len), Some(2));
        assert_eq!(j["more"], true);
        assert_eq!(j["count"], 3);

        // --sort-by / --order.
        let keys = |out: String| {
            out.lines()
                .step_by(2)
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        let out = ctl
            .ok(&["get", "", "--prefix", "--sort-by=KEY", "--order=DESCEND"])
            .await?;
        assert_eq!(keys(out), ["veg/carrot", "fruit/banana", "fruit/apple"]);
        let out = ctl
            .ok(&["get", "", "--prefix", "--sort-by=MODIFY", "--order=ASCEND"])
            .await?;
        assert_eq!(keys(out), ["fruit/banana", "fruit/apple", "veg/carrot"]);
        let out = ctl
            .ok(&["get", "", "--prefix", "--sort-by=CREATE", "--order=DESCEND"])
            .await?;
        assert_eq!(keys(out), ["veg/carrot", "fruit/banana", "fruit/apple"]);
        let out = ctl
            .ok(&["get", "", "--prefix", "--sort-by=VALUE", "--order=ASCEND"])
            .await?;
        assert_eq!(keys(out), ["fruit/apple", "veg/carrot", "fruit/banana"]);
        let out = ctl
            .ok(&[
                "get",
                "",
                "--prefix",
                "--sort-by=VERSION",
                "--order=DESCEND",
                "--limit=1",
            ])
            .await?;
        assert_eq!(keys(out), ["fruit/apple"]);

        // A range from a key: [fruit/banana, end of keyspace).
        let out = ctl
            .ok(&["get", "fruit/banana", "--from-key", "--keys-only"])
            .await?;
        assert_eq!(
            out.split_whitespace().collect::<Vec<_>>(),
            ["fruit/banana", "veg/carrot"]
        );
        Ok(())
    })
    .await
}

/// etcd's store starts at revision 1 (an empty store answers with header revision 1 and
/// the first write gets revision 2). Skiff started at 0 and gave the first write revision
/// 1, so a client that lists an empty store gets revision 0 — the value Kubernetes and
/// etcd's own watch API read as "no revision / from now".
#[tokio::test]
async fn fresh_store_starts_at_revision_1_like_etcd() -> Result<()> {
    bounded(LIMIT, async {
        let cluster = common::start(1).await?;
        let ctl = common::etcdctl(&cluster);
        let j = get_json(&ctl, &["nothing"]).await?;
        assert_eq!(j["header"]["revision"], 1, "empty store: {j}");
        assert_eq!(put(&ctl, "first", "v").await?, 2);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn del_prefix_and_prev_kv() -> Result<()> {
    bounded(LIMIT, async {
        let cluster = common::start(1).await?;
        let ctl = common::etcdctl(&cluster);
        for (k, v) in [("d/a", "1"), ("d/b", "2"), ("d/c", "3"), ("e", "4")] {
            put(&ctl, k, v).await?;
        }
        assert_eq!(ctl.ok(&["del", "d/a"]).await?, "1\n");
        assert_eq!(
            ctl.ok(&["del", "d/a"]).await?,
            "0\n",
            "deleting a missing key"
        );

        // --prev-kv prints the count, then each deleted key and value.
        let out = ctl.ok(&["del", "d/", "--prefix", "--prev-kv"]).await?;
        assert_eq!(out, "2\nd/b\n2\nd/c\n3\n");
        assert_eq!(ctl.ok(&["get", "d/", "--prefix"]).await?, "");
        assert_eq!(ctl.ok(&["get", "e"]).await?, "e\n4\n", "outside the prefix");

        // A deleted key's version restarts at 1 when it is put again.
        let rev = put(&ctl, "d/b", "again").await?;
        let kv = &get_json(&ctl, &["d/b"]).await?["kvs"][0];
        assert_eq!(kv["version"], 1);
        assert_eq!(kv["create_revision"], rev);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn txn_interactive_success_and_failure_branches() -> Result<()> {
    bounded(LIMIT, async {
        let cluster = common::start(1).await?;
        let ctl = common::etcdctl(&cluster);
        put(&ctl, "acct", "100").await?;
        put(&ctl, "other", "x").await?;

        // The compare holds: both success puts apply at one revision.
        let input = b"value(\"acct\") = \"100\"\n\nput acct 90\nput audit debit-10\n\nput acct failed\n\n";
        let out = ctl.run_with_input(&["txn", "-i"], input).await?;
        ensure!(out.success(), "txn failed: {}", out.stderr);
        let body: Vec<&str> = out.stdout.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(
            body,
            [
                "compares:",
                "success requests (get, put, del):",
                "failure requests (get, put, del):",
                "SUCCESS",
                "OK",
                "OK"
            ],
            "{}",
            out.stdout
        );
        let acct = &get_json(&ctl, &["acct"]).await?["kvs"][0];
        let audit = &get_json(&ctl, &["audit"]).await?["kvs"][0];
        assert_eq!(acct["value"], base64(b"90"));
        assert_eq!(acct["mod_revision"], audit["mod_revision"], "one revision per txn");

        // The compares do not hold (value and mod revision): the failure branch runs, with a
        // get and a delete.
        let input = b"value(\"acct\") = \"100\"\nmod(\"other\") > \"0\"\n\nput acct 0\n\nget acct\ndel other\n\n";
        let out = ctl.run_with_input(&["txn", "-i"], input).await?;
        ensure!(out.success(), "txn failed: {}", out.stderr);
        let body: Vec<&str> = out.stdout.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(
            &body[3..],
            ["FAILURE", "acct", "90", "1"],
            "{}",
            out.stdout
        );
        assert_eq!(ctl.ok(&["get", "acct", "--print-value-only"]).await?, "90\n");
        assert_eq!(ctl.ok(&["get", "other"]).await?, "", "failure-branch delete applied");

        // Compare on version and create revision, success branch deletes by prefix.
        let input = b"version(\"acct\") = \"2\"\ncreate(\"audit\") > \"0\"\n\ndel a --prefix\n\n\n";
        let out = ctl.run_with_input(&["txn", "-i"], input).await?;
        let body: Vec<&str> = out.stdout.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(&body[3..], ["SUCCESS", "2"], "{}", out.stdout);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn watch_prefix_rev_and_prev_kv() -> Result<()> {
    bounded(LIMIT, async {
        let cluster = common::start(1).await?;
        let ctl = common::etcdctl(&cluster);
        let first = put(&ctl, "w/a", "1").await?;
        put(&ctl, "w/b", "2").await?;
        put(&ctl, "elsewhere", "x").await?;

        // A live prefix watch with prev-kv: start it, write, read what it prints, kill it.
        let mut child = ctl.spawn(&["watch", "w/", "--prefix", "--prev-kv"])?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        // etcdctl prints nothing until the watch is created; give it a moment to register
        // so the writes below are not before its start revision.
        tokio::time::sleep(Duration::from_millis(700)).await;
        put(&ctl, "w/a", "10").await?;
        put(&ctl, "outside", "ignored").await?;
        ctl.ok(&["del", "w/b"]).await?;
        put(&ctl, "w/new", "n").await?;
        let got = read_lines(&mut lines, 5 + 5 + 3).await?;
        assert_eq!(
            got,
            [
                // PUT with prev-kv: event type, prev key/value, new key/value.
                "PUT", "w/a", "1", "w/a", "10",
                // DELETE with prev-kv: prev key/value, then the key with an empty value.
                "DELETE", "w/b", "2", "w/b", "", // A created key has no previous value.
                "PUT", "w/new", "n",
            ]
        );
        child.kill().await?;

        // --rev replays history from an old revision, here every event on w/a.
        let mut child = ctl.spawn(&["watch", "w/a", &format!("--rev={first}")])?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let got = read_lines(&mut lines, 6).await?;
        assert_eq!(got, ["PUT", "w/a", "1", "PUT", "w/a", "10"]);
        child.kill().await?;
        Ok(())
    })
    .await
}

/// A lease grant prints `lease <hex id> granted with TTL(<n>s)`; returns the hex id.
fn lease_id(granted: &str) -> Result<String> {
    let mut words = granted.split_whitespace();
    ensure!(
        words.next() == Some("lease"),
        "unexpected grant output {granted:?}"
    );
    let id = words.next().context("no lease id")?.to_string();
    ensure!(
        granted.contains("granted with TTL("),
        "unexpected grant output {granted:?}"
    );
    Ok(id)
}

/// The keys of `lease timetolive --keys` output (`… attached keys([k1 k2])`), sorted: etcd
/// lists them in no particular order.
fn attached_keys(out: &str) -> Result<Vec<String>> {
    let start = out.find("attached keys([").context("no attached keys")? + "attached keys([".len();
    let end = start + out[start..].find("])").context("unterminated key list")?;
    let mut keys: Vec<String> = out[start..end]
        .split_whitespace()
        .map(String::from)
        .collect();
    keys.sort();
    Ok(keys)
}

#[tokio::test]
async fn lease_grant_keepalive_timetolive_revoke_and_expiry() -> Result<()> {
    bounded(LIMIT, async {
        let cluster = common::start(1).await?;
        let ctl = common::etcdctl(&cluster);

        let out = ctl.ok(&["lease", "grant", "60"]).await?;
        let id = lease_id(&out)?;
        assert!(out.contains("granted with TTL(60s)"), "{out}");
        ctl.ok(&["put", "l/a", "1", &format!("--lease={id}")])
            .await?;
        ctl.ok(&["put", "l/b", "2", &format!("--lease={id}")])
            .await?;
        ctl.ok(&["put", "l/free", "3"]).await?;

        let out = ctl.ok(&["lease", "timetolive", &id, "--keys"]).await?;
        assert!(
            out.starts_with(&format!("lease {id} granted with TTL(60s), remaining(")),
            "{out}"
        );
        assert_eq!(attached_keys(&out)?, ["l/a", "l/b"], "{out}");
        let j = json(
            &ctl.ok(&["lease", "timetolive", &id, "--keys", "-w", "json"])
                .await?,
        )?;
        let remaining = j["ttl"].as_i64().context("ttl")?;
        ensure!(
            (55..=60).contains(&remaining),
            "remaining {remaining} of 60: {j}"
        );
        assert_eq!(j["granted-ttl"], 60);

        let out = ctl.ok(&["lease", "keep-alive", "--once", &id]).await?;
        assert_eq!(out.trim(), format!("lease {id} keepalived with TTL(60)"));
        let out = ctl.ok(&["lease", "list"]).await?;
        assert!(out.contains(&id), "{out}");

        // Revoke deletes the attached keys, not the others.
        let out = ctl.ok(&["lease", "revoke", &id]).await?;
        assert_eq!(out.trim(), format!("lease {id} revoked"));
        assert_eq!(
            ctl.ok(&["get", "l/", "--prefix", "--keys-only"])
                .await?
                .trim(),
            "l/free"
        );
        let out = ctl.ok(&["lease", "timetolive", &id]).await?;
        assert_eq!(out.trim(), format!("lease {id} already expired"));
        let out = ctl.run(&["lease", "keep-alive", "--once", &id]).await?;
        assert!(!out.success());
        assert!(
            out.stderr.contains("requested lease not found"),
            "{}",
            out.stderr
        );

        // Expiry: a 2 s lease nobody keeps alive takes its key with it.
        let id = lease_id(&ctl.ok(&["lease", "grant", "2"]).await?)?;
        ctl.ok(&["put", "l/short", "x", &format!("--lease={id}")])
            .await?;
        assert_eq!(
            ctl.ok(&["get", "l/short", "--print-value-only"]).await?,
            "x\n"
        );
        eventually(
            Duration::from_secs(10),
            "leased key deleted on expiry",
            || async { Ok((ctl.ok(&["get", "l/short"]).await?.is_empty()).then_some(())) },
        )
        .await?;
        let out = ctl.ok(&["lease", "timetolive", &id]).await?;
        assert_eq!(out.trim(), format!("lease {id} already expired"));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn compaction_then_reads_below_it_fail() -> Result<()> {
    bounded(LIMIT, async {
        let cluster = common::start(1).await?;
        let ctl = common::etcdctl(&cluster);
        let r1 = put(&ctl, "c", "1").await?;
        let r2 = put(&ctl, "c", "2").await?;
        let r3 = put(&ctl, "c", "3").await?;

        let out = ctl.ok(&["compaction", &r2.to_string()]).await?;
        assert_eq!(out.trim(), format!("compacted revision {r2}"));

        let out = ctl.run(&["get", "c", &format!("--rev={r1}")]).await?;
        assert!(!out.success());
        assert!(
            out.stderr
                .contains("Error: etcdserver: mvcc: required revision has been compacted"),
            "{}",
            out.stderr
        );
        // At and above the compaction revision reads still work.
        assert_eq!(
            ctl.ok(&["get", "c", &format!("--rev={r2}"), "--print-value-only"])
                .await?,
            "2\n"
        );
        assert_eq!(
            ctl.ok(&["get", "c", &format!("--rev={r3}"), "--print-value-only"])
                .await?,
            "3\n"
        );
        // A future revision is its own error.
        let out = ctl
            .run(&["get", "c", &format!("--rev={}", r3 + 100)])
            .await?;
        assert!(
            out.stderr
                .contains("etcdserver: mvcc: required revision is a future revision"),
            "{}",
            out.stderr
        );
        // Compacting again at or below the compacted revision is refused.
        let out = ctl.run(&["compaction", &r1.to_string()]).await?;
        assert!(
            out.stderr.contains("required revision has been compacted"),
            "{}",
            out.stderr
        );

        // A watch from below the compaction point is canceled with the compacted error.
        let out = ctl.run(&["watch", "c", &format!("--rev={r1}")]).await?;
        assert!(!out.success());
        assert!(
            out.stdout.contains("required revision has been compacted")
                || out.stderr.contains("required revision has been compacted"),
            "stdout {} stderr {}",
            out.stdout,
            out.stderr
        );

        // --physical waits until the compaction is applied; still correct afterwards.
        ctl.ok(&["compaction", &r3.to_string(), "--physical"])
            .await?;
        assert_eq!(ctl.ok(&["get", "c", "--print-value-only"]).await?, "3\n");
        Ok(())
    })
    .await
}

/// Parses `etcdctl member list` (simple format) into (id, status, name, peer, client, learner).
fn member_rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split(", ").map(|f| f.trim().to_string()).collect())
        .collect()
}

#[tokio::test]
async fn member_list_add_learner_promote_remove() -> Result<()> {
    bounded(Duration::from_secs(90), async {
        let mut cluster = common::start(3).await?;
        let ctl = common::etcdctl(&cluster);
        put(&ctl, "before-join", "v").await?;

        // Every member appears by name once it has published its attributes (see
        // `member_list_names_every_member_that_serves_clients` for why this polls).
        let rows = eventually(Duration::from_secs(10), "members published", || async {
            let rows = member_rows(&ctl.ok(&["member", "list"]).await?);
            Ok(rows.iter().all(|r| r[1] == "started").then_some(rows))
        })
        .await?;
        assert_eq!(rows.len(), 3, "{rows:?}");
        for m in cluster.members() {
            let row = rows
                .iter()
                .find(|r| r[2] == m.name())
                .with_context(|| format!("{} not listed by name: {rows:?}", m.name()))?;
            assert_eq!(row[3], m.peer_url());
            assert_eq!(row[4], m.client_url());
            assert_eq!(row[5], "false");
        }

        // Add a learner; etcdctl prints the environment for the new member.
        let new = cluster.add_member()?;
        let peer = cluster.member(new)?.peer_url().to_string();
        // etcd refuses membership changes ("unhealthy cluster") until every member has
        // been connected for a few seconds; retrying covers that.
        let out = eventually(Duration::from_secs(15), "member add", || async {
            let args = [
                "member",
                "add",
                "m3",
                &format!("--peer-urls={peer}"),
                "--learner",
            ];
            let out = ctl.run(&args).await?;
            if out.success() {
                return Ok(Some(out.stdout));
            }
            ensure!(
                out.stderr.contains("unhealthy cluster"),
                "member add: {}",
                out.stderr
            );
            Ok(None)
        })
        .await?;
        assert!(out.contains("ETCD_NAME=\"m3\""), "{out}");
        assert!(
            out.contains("ETCD_INITIAL_CLUSTER_STATE=\"existing\""),
            "{out}"
        );
        assert!(out.contains(&format!("m3={peer}")), "{out}");
        let learner_id = out
            .split_whitespace()
            .nth(1)
            .context("member add output")?
            .to_string();
        let rows = member_rows(&ctl.ok(&["member", "list"]).await?);
        let row = rows
            .iter()
            .find(|r| r[0] == learner_id)
            .context("learner listed")?;
        assert_eq!((row[1].as_str(), row[5].as_str()), ("unstarted", "true"));

        // Start it against the existing cluster; it catches up as a learner.
        let m = cluster.member_mut(new)?;
        m.start()?;
        m.wait_healthy(Duration::from_secs(30)).await?;
        let learner_url = cluster.member(new)?.client_url().to_string();
        // A learner serves serializable reads of the replicated data.
        let learner_ctl = Etcdctl::new(vec![learner_url]);
        eventually(Duration::from_secs(15), "learner has the data", || async {
            let out = learner_ctl
                .run(&[
                    "get",
                    "before-join",
                    "--consistency=s",
                    "--print-value-only",
                ])
                .await?;
            Ok((out.stdout == "v\n").then_some(()))
        })
        .await?;

        // Promote once it is in sync (etcd refuses earlier, with a known message).
        let out = eventually(Duration::from_secs(15), "learner promoted", || async {
            let out = ctl.run(&["member", "promote", &learner_id]).await?;
            if out.success() {
                return Ok(Some(out.stdout));
            }
            ensure!(
                out.stderr
                    .contains("can only promote a learner member which is in sync with leader"),
                "unexpected promote error: {}",
                out.stderr
            );
            Ok(None)
        })
        .await?;
        // etcdctl prints the id as %16x here (space-padded), as %x elsewhere.
        let words: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(
            words[..4],
            ["Member", &learner_id, "promoted", "in"],
            "{out}"
        );
        let rows = member_rows(&ctl.ok(&["member", "list"]).await?);
        assert_eq!(rows.len(), 4);
        let row = rows.iter().find(|r| r[0] == learner_id).context("listed")?;
        assert_eq!(row[5], "false", "promoted: {row:?}");
        // A started member publishes its name and client URLs (etcd does so right after
        // it joins).
        let new_url = cluster.member(new)?.client_url().to_string();
        eventually(
            Duration::from_secs(10),
            "new member listed as started",
            || async {
                let rows = member_rows(&ctl.ok(&["member", "list"]).await?);
                let row = rows.iter().find(|r| r[0] == learner_id).context("listed")?;
                let want = ["started", "m3", peer.as_str(), new_url.as_str(), "false"];
                ensure!(row[1] == "started" || row[1] == "unstarted", "{row:?}");
                Ok((row[1..] == want).then_some(()))
            },
        )
        .await?;

        // Promoting a voter is refused.
        let out = ctl.run(&["member", "promote", &learner_id]).await?;
        assert!(!out.success());
        assert!(
            out.stderr.contains("can only promote a learner member"),
            "{}",
            out.stderr
        );

        // Remove it again: three members remain and the cluster still takes writes.
        let out = ctl.ok(&["member", "remove", &learner_id]).await?;
        assert!(
            out.split_whitespace().collect::<Vec<_>>()[..3] == ["Member", &learner_id, "removed"],
            "{out}"
        );
        let rows = member_rows(&ctl.ok(&["member", "list"]).await?);
        assert_eq!(rows.len(), 3);
        assert!(rows.iter().all(|r| r[0] != learner_id));
        let three = Etcdctl::new(cluster.endpoints()[..3].to_vec());
        put(&three, "after-remove", "v").await?;
        // Removing an unknown member is etcd's error.
        let out = ctl.run(&["member", "remove", &learner_id]).await?;
        assert!(!out.success());
        assert!(out.stderr.contains("member not found"), "{}", out.stderr);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn endpoint_status_and_health() -> Result<()> {
    bounded(LIMIT, async {
        let cluster = common::start(3).await?;
        let leader = cluster.wait_leader(Duration::from_secs(10)).await?;
        put(&common::etcdctl(&cluster), "k", "v").await?;

        // etcdctl 3.4 prints the health lines on stderr.
        let out = common::etcdctl(&cluster)
            .run(&["endpoint", "health"])
            .await?;
        ensure!(out.success(), "endpoint health: {}", out.stderr);
        let out = out.stderr + &out.stdout;
        for ep in cluster.endpoints() {
            assert!(
                out.contains(&format!("{ep} is healthy: successfully committed proposal")),
                "{out}"
            );
        }

        let ctl = common::etcdctl_hostport(&cluster.endpoints());
        let j = json(&ctl.ok(&["endpoint", "status", "-w", "json"]).await?)?;
        let rows = j.as_array().context("a list of endpoints")?;
        assert_eq!(rows.len(), 3, "{j}");
        let mut leaders = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            let st = &row["Status"];
            let me = st["header"]["member_id"].as_u64().context("member_id")?;
            ensure!(st["leader"].as_u64().is_some(), "no leader in {st}");
            if st["leader"].as_u64() == Some(me) {
                leaders.push(i);
            }
            ensure!(
                st["version"].as_str().is_some_and(|v| v.starts_with("3.")),
                "version {st}"
            );
            ensure!(st["dbSize"].as_i64().is_some_and(|s| s > 0), "dbSize {st}");
            ensure!(
                st["raftIndex"].as_u64().is_some_and(|s| s > 0),
                "raftIndex {st}"
            );
            ensure!(
                st["raftTerm"].as_u64().is_some_and(|s| s > 0),
                "raftTerm {st}"
            );
        }
        assert_eq!(
            leaders,
            [leader],
            "exactly the harness's leader says it leads: {j}"
        );
        // `--cluster` takes the members' advertised client URLs (`http://…`) from
        // `member list` and dials each on its own connection.
        let one = Etcdctl::new(vec![cluster.endpoints()[0].clone()]);
        let j = json(
            &one.ok(&["endpoint", "status", "--cluster", "-w", "json"])
                .await?,
        )?;
        let mut seen: Vec<String> = j
            .as_array()
            .context("a list of endpoints")?
            .iter()
            .filter_map(|row| row["Endpoint"].as_str().map(String::from))
            .collect();
        seen.sort_unstable();
        let mut want = cluster.endpoints();
        want.sort_unstable();
        assert_eq!(seen, want, "{j}");
        let table = ctl.ok(&["endpoint", "status", "-w", "table"]).await?;
        assert!(table.contains("IS LEADER"), "{table}");
        let rows: Vec<&str> = table.lines().filter(|l| l.contains("127.0.0.1:")).collect();
        assert_eq!(rows.len(), 3, "{table}");
        Ok(())
    })
    .await
}

/// etcdctl 3.4 opens one connection per endpoint for `endpoint status`, `endpoint hashkv`
/// and `defrag`, with the gRPC target `passthrough:///http://127.0.0.1:PORT`, so the
/// HTTP/2 `:authority` it sends is the whole URL. etcd (Go) accepts that; hyper's HTTP/2
/// server would reset the stream with PROTOCOL_ERROR ("malformed authority") if the client
/// port did not mend it first (`server::authority`). `defrag` with `http://` endpoints is
/// in `defrag_and_alarm_list`.
#[tokio::test]
async fn endpoint_status_and_hashkv_with_http_endpoints() -> Result<()> {
    bounded(LIMIT, async {
        let cluster = common::start(1).await?;
        let ctl = common::etcdctl(&cluster);
        let ep = &cluster.endpoints()[0];
        assert!(ep.starts_with("http://"), "{ep}");
        put(&ctl, "k", "v").await?;
        let j = json(&ctl.ok(&["endpoint", "status", "-w", "json"]).await?)?;
        assert_eq!(j[0]["Endpoint"], ep.as_str(), "{j}");
        assert!(
            j[0]["Status"]["header"]["revision"].as_i64() >= Some(2),
            "{j}"
        );
        let j = json(&ctl.ok(&["endpoint", "hashkv", "-w", "json"]).await?)?;
        assert!(
            j[0]["HashKV"]["hash"].as_u64().is_some_and(|h| h != 0),
            "{j}"
        );
        // Requests on connections that were not mended are unaffected.
        assert_eq!(
            ctl.ok(&["get", "k", "--print-value-only"]).await?.trim(),
            "v"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn defrag_and_alarm_list() -> Result<()> {
    bounded(LIMIT, async {
        let cluster = common::start(1).await?;
        let ctl = common::etcdctl(&cluster);
        for i in 0..50 {
            put(&ctl, &format!("k{}", i % 5), &"x".repeat(1000)).await?;
        }
        let rev = put(&ctl, "last", "v").await?;
        ctl.ok(&["compaction", &rev.to_string(), "--physical"])
            .await?;

        let ep = &cluster.endpoints()[0];
        let out = ctl.ok(&["defrag"]).await?;
        assert_eq!(
            out.trim(),
            format!("Finished defragmenting etcd member[{ep}]")
        );
        assert_eq!(
            ctl.ok(&["get", "k3", "--print-value-only"]).await?.trim(),
            "x".repeat(1000)
        );

        // No alarm raised: `alarm list` prints nothing and succeeds.
        let out = ctl.run(&["alarm", "list"]).await?;
        ensure!(out.success(), "alarm list: {}", out.stderr);
        assert_eq!(out.stdout, "");
        let out = ctl.run(&["alarm", "disarm"]).await?;
        ensure!(out.success(), "alarm disarm: {}", out.stderr);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn snapshot_save_restore_into_a_fresh_member() -> Result<()> {
    bounded(LIMIT, async {
        if common::against_etcd() {
            eprintln!("skipped against etcd: restores with `skiff store restore`");
            return Ok(());
        }
        let source = common::start(1).await?;
        let ctl = common::etcdctl(&source);
        for i in 0..20 {
            put(&ctl, &format!("snap/{i:02}"), &format!("v{i}")).await?;
        }
        let lease = lease_id(&ctl.ok(&["lease", "grant", "600"]).await?)?;
        ctl.ok(&["put", "snap/leased", "l", &format!("--lease={lease}")])
            .await?;
        let rev = put(&ctl, "snap/00", "rewritten").await?;
        let before = get_json(&ctl, &["snap/", "--prefix"]).await?;

        let file = source.dir().join("backup.db");
        let file_arg = file.display().to_string();
        let out = ctl.run(&["snapshot", "save", &file_arg]).await?;
        ensure!(out.success(), "snapshot save: {}", out.stderr);
        assert!(
            out.stdout
                .contains(&format!("Snapshot saved at {file_arg}")),
            "{}",
            out.stdout
        );
        ensure!(std::fs::metadata(&file)?.len() > 0, "empty snapshot file");

        // Restore into the empty data dir of a new one-member cluster, then start it.
        let mut restored = Cluster::prepare(common::skiff(1)?)?;
        let data_dir = restored.member(0)?.data_dir().to_path_buf();
        let status = std::process::Command::new(skiff_tests::skiff_binary()?)
            .args(["store", "restore", &file_arg, "--data-dir"])
            .arg(&data_dir)
            .output()?;
        ensure!(
            status.status.success(),
            "skiff store restore: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        // Restoring over an existing member is refused.
        let again = std::process::Command::new(skiff_tests::skiff_binary()?)
            .args(["store", "restore", &file_arg, "--data-dir"])
            .arg(&data_dir)
            .output()?;
        ensure!(!again.status.success(), "restore over a member succeeded");
        restored.start_members().await?;

        let rctl = common::etcdctl(&restored);
        let after = get_json(&rctl, &["snap/", "--prefix"]).await?;
        assert_eq!(
            after["kvs"], before["kvs"],
            "same keys, values and revisions"
        );
        assert_eq!(after["header"]["revision"], rev);
        // The lease survived the restore with its key.
        let out = rctl.ok(&["lease", "timetolive", &lease, "--keys"]).await?;
        assert!(out.contains("attached keys([snap/leased])"), "{out}");
        // The restored member is a new cluster that takes writes from where it left off.
        assert_eq!(put(&rctl, "snap/new", "n").await?, rev + 1);
        let src_id = get_json(&ctl, &["x"]).await?["header"]["cluster_id"].clone();
        let dst_id = get_json(&rctl, &["x"]).await?["header"]["cluster_id"].clone();
        assert_ne!(src_id, dst_id, "a restored cluster is a new cluster");
        Ok(())
    })
    .await
}

/// etcd serves clients only after the member has published its name and client URLs
/// through raft (embed's `serve` waits for `ReadyNotify`), so a member that answers a
/// client is always listed as started. Skiff publishes from a background loop after it
/// starts serving: right after every member is healthy, `member list` showed all three as
/// `unstarted` with empty names and client URLs.
#[tokio::test]
async fn member_list_names_every_member_that_serves_clients() -> Result<()> {
    bounded(LIMIT, async {
        let cluster = common::start(3).await?;
        let rows = member_rows(&common::etcdctl(&cluster).ok(&["member", "list"]).await?);
        for row in &rows {
            assert_eq!(row[1], "started", "{rows:?}");
        }
        Ok(())
    })
    .await
}
