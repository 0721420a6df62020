//! Smoke tests of the harness against real clusters in network namespaces
//! (≤ 3 minutes together): Skiff under partitions and under kill -9 must be
//! valid, Skiff with `--unsafe-local-reads` under leader isolation must be
//! caught (invalid), and real etcd under partitions must be valid.
//!
//! They need root, `ip` and `nft`; without them they print why and pass
//! without running. The skiff binary is `$SKIFF_BIN`, else
//! `<workspace>/target/debug/skiff`. The tests run one at a time (a lock),
//! each in its own testbed slot, and check that the testbed is gone after.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use skiff_jepsen::nemesis::partition::PartitionMode;
use skiff_jepsen::nemesis::{NemesisKind, NemesisOptions};
use skiff_jepsen::run::{run_test, RunResult, TestOptions};
use skiff_jepsen::target::{default_skiff_bin, Target, TargetKind, Tuning, UnsafeMode};
use skiff_jepsen::testbed::{run_cmd, Testbed};
use skiff_jepsen::verdict::Verdict;
use skiff_jepsen::workload::WorkloadKind;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Why these tests cannot run here, if they cannot.
fn cannot_run(target: TargetKind) -> Option<String> {
    let uid = run_cmd("id", &["-u"]).unwrap_or_default();
    if uid.trim() != "0" {
        return Some("not root".into());
    }
    for tool in ["ip", "nft"] {
        if run_cmd("which", &[tool]).is_err() {
            return Some(format!("`{tool}` not installed"));
        }
    }
    let bin = match target {
        TargetKind::Skiff => default_skiff_bin(),
        TargetKind::Etcd => PathBuf::from("/usr/bin/etcd"),
    };
    if !bin.is_file() {
        return Some(format!("{} not found (set SKIFF_BIN)", bin.display()));
    }
    None
}

fn options(
    name: &str,
    target: TargetKind,
    nemesis: NemesisKind,
    partition_mode: PartitionMode,
    unsafe_mode: Option<UnsafeMode>,
    seconds: u64,
    interval: u64,
) -> TestOptions {
    let binary = match target {
        TargetKind::Skiff => default_skiff_bin(),
        TargetKind::Etcd => PathBuf::from("/usr/bin/etcd"),
    };
    let out = std::env::temp_dir().join(format!("sjp-smoke-{}-{name}", std::process::id()));
    TestOptions {
        workload: WorkloadKind::Register,
        nemesis: NemesisOptions {
            kind: nemesis,
            interval: Duration::from_secs(interval),
            partition_mode,
        },
        target: Target::new(target, binary, unsafe_mode, Tuning::default()).expect("target"),
        nodes: 3,
        time_limit: Duration::from_secs(seconds),
        op_limit: 50_000,
        concurrency: 6,
        keys: 3,
        op_timeout: Duration::from_secs(2),
        seed: 7,
        out,
        keep_data: false,
        check_time_limit: Duration::from_secs(60),
    }
}

fn run(opts: TestOptions) -> RunResult {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let result = runtime.block_on(run_test(opts)).expect("the run completes");
    println!(
        "{}: {:?}, {} ops {:?}, {} faults, anomalies {:?}, notes {:?}",
        result.out.display(),
        result.verdict,
        result.ops,
        result.outcomes,
        result.faults,
        result.anomalies,
        result.errors
    );
    for file in [
        "history.jsonl",
        "nemesis.jsonl",
        "results.json",
        "report.html",
        "run.json",
    ] {
        assert!(result.out.join(file).is_file(), "{file} written");
    }
    let namespaces = run_cmd("ip", &["netns", "list"]).unwrap_or_default();
    let ours = format!("sjp{}n", result.slot);
    assert!(
        !namespaces.lines().any(|l| l.starts_with(&ours)),
        "testbed slot {} removed after the run: {namespaces}",
        result.slot
    );
    result
}

macro_rules! require {
    ($target:expr) => {
        if let Some(why) = cannot_run($target) {
            eprintln!(
                "SKIPPED: {why}; the jepsen smoke tests need root, ip, nft and the store binary"
            );
            return;
        }
    };
}

#[test]
fn skiff_register_under_partitions_is_linearizable() {
    require!(TargetKind::Skiff);
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let r = run(options(
        "partition",
        TargetKind::Skiff,
        NemesisKind::Partition,
        PartitionMode::Random,
        None,
        25,
        6,
    ));
    assert!(r.faults >= 1, "a partition happened");
    assert_eq!(r.verdict, Verdict::Valid, "see {}", r.out.display());
    let _ = std::fs::remove_dir_all(&r.out);
}

#[test]
fn skiff_register_under_kill_is_linearizable() {
    require!(TargetKind::Skiff);
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let r = run(options(
        "kill",
        TargetKind::Skiff,
        NemesisKind::Kill,
        PartitionMode::Random,
        None,
        25,
        6,
    ));
    assert!(r.faults >= 1, "a kill happened");
    assert_eq!(r.verdict, Verdict::Valid, "see {}", r.out.display());
    let _ = std::fs::remove_dir_all(&r.out);
}

/// The harness can fail: local reads on an isolated former leader are
/// stale, and the linearizability checker must say so.
#[test]
fn skiff_unsafe_local_reads_are_caught() {
    require!(TargetKind::Skiff);
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let r = run(options(
        "unsafe",
        TargetKind::Skiff,
        NemesisKind::Partition,
        PartitionMode::Leader,
        Some(UnsafeMode::LocalReads),
        16,
        6,
    ));
    assert_eq!(
        r.verdict,
        Verdict::Invalid,
        "stale reads caught; see {}",
        r.out.display()
    );
    assert!(
        r.anomalies.iter().any(|(k, _)| k == "nonlinearizable"),
        "{:?}",
        r.anomalies
    );
    let _ = std::fs::remove_dir_all(&r.out);
}

#[test]
fn etcd_register_under_partitions_is_linearizable() {
    require!(TargetKind::Etcd);
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let r = run(options(
        "etcd",
        TargetKind::Etcd,
        NemesisKind::Partition,
        PartitionMode::Leader,
        None,
        15,
        5,
    ));
    assert_eq!(r.verdict, Verdict::Valid, "see {}", r.out.display());
    let _ = std::fs::remove_dir_all(&r.out);
}

/// The guard removes the testbed while unwinding from a panic.
#[test]
fn testbed_is_removed_after_a_panic() {
    require!(TargetKind::Etcd);
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let caught = std::panic::catch_unwind(|| {
        let bed = Testbed::create(2).expect("testbed");
        std::panic::panic_any(bed.slot());
    });
    let slot = *caught
        .expect_err("it panicked")
        .downcast::<u8>()
        .expect("the slot as payload");
    let namespaces = run_cmd("ip", &["netns", "list"]).unwrap_or_default();
    assert!(!namespaces.contains(&format!("sjp{slot}n")), "{namespaces}");
    let links = run_cmd("ip", &["-o", "link", "show"]).unwrap_or_default();
    assert!(!links.contains(&format!("sjp{slot}br")), "{links}");
}
