//! The backend quota: past `--quota-backend-bytes` a member raises the NOSPACE alarm and
//! only reads and deletes pass, until compaction, defragmentation and `alarm disarm` —
//! etcd's behaviour, through the real etcdctl.

mod common;

use std::time::Duration;

use anyhow::{ensure, Result};
use common::{bounded, eventually};
use skiff_tests::Cluster;

#[tokio::test]
async fn nospace_alarm_allows_only_reads_and_deletes_until_disarmed() -> Result<()> {
    bounded(Duration::from_secs(90), async {
        let mut config = common::skiff(1)?;
        config
            .extra_args
            .push("--quota-backend-bytes=1048576".into());
        let cluster = Cluster::start(config).await?;
        let ctl = common::etcdctl(&cluster);
        let value = "x".repeat(100 * 1024);
        // Fill past 1 MiB; the alarm is raised by the member's periodic size check.
        let nospace = eventually(Duration::from_secs(20), "NOSPACE on put", || {
            let ctl = ctl.clone();
            let value = value.clone();
            async move {
                let key = format!("big/{}", rand_suffix());
                let out = ctl.run(&["put", &key, &value]).await?;
                Ok(out.stderr.contains("database space exceeded").then_some(()))
            }
        })
        .await;
        nospace?;
        let alarms = ctl.ok(&["alarm", "list"]).await?;
        ensure!(alarms.contains("alarm:NOSPACE"), "alarm list: {alarms}");
        // Reads and deletes still work.
        ensure!(
            ctl.run(&["get", "big/", "--prefix", "--keys-only"])
                .await?
                .code
                == Some(0)
        );
        ctl.ok(&["del", "big/", "--prefix"]).await?;
        // Compact, defragment, disarm: writes work again.
        let status = common::json(&ctl.ok(&["endpoint", "status", "-w", "json"]).await?)?;
        let rev = status[0]["Status"]["header"]["revision"]
            .as_i64()
            .unwrap_or(0);
        ctl.ok(&["compact", &rev.to_string(), "--physical"]).await?;
        // Compaction runs in the background: defragment and disarm until the space is
        // really reclaimed (a disarm while still over quota is raised again).
        eventually(
            Duration::from_secs(20),
            "put after compact + defrag + disarm",
            || {
                let ctl = ctl.clone();
                async move {
                    ctl.ok(&["defrag"]).await?;
                    ctl.ok(&["alarm", "disarm"]).await?;
                    tokio::time::sleep(Duration::from_millis(600)).await;
                    Ok((ctl.run(&["put", "small", "v"]).await?.code == Some(0)).then_some(()))
                }
            },
        )
        .await?;
        ensure!(
            ctl.ok(&["alarm", "list"]).await?.trim().is_empty(),
            "alarm still raised"
        );
        Ok(())
    })
    .await
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
