//! Running the scheduler and the controller manager: each campaigns for its Lease and,
//! while leading, runs its loops with the term's fenced client.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;

use crate::events::Recorder;
use crate::leader::Election;
use crate::{Context, Settings};

/// One loop of the controller manager: its event `component` name and its entry point.
struct Loop {
    component: &'static str,
    run: fn(Context) -> BoxFuture<'static, anyhow::Result<()>>,
}

/// The controller manager's loops.
fn controllers() -> Vec<Loop> {
    vec![
        Loop {
            component: "namespace-controller",
            run: |ctx| crate::namespace::run(ctx).boxed(),
        },
        Loop {
            component: "node-controller",
            run: |ctx| crate::node_lifecycle::run(ctx).boxed(),
        },
        Loop {
            component: "node-ipam-controller",
            run: |ctx| crate::ipam::run(ctx).boxed(),
        },
        Loop {
            component: "replicaset-controller",
            run: |ctx| crate::replicaset::run(ctx).boxed(),
        },
        Loop {
            component: "deployment-controller",
            run: |ctx| crate::deployment::run(ctx).boxed(),
        },
        Loop {
            component: "endpoint-controller",
            run: |ctx| crate::endpoints::run(ctx).boxed(),
        },
        Loop {
            component: "garbage-collector-controller",
            run: |ctx| crate::gc::run(ctx).boxed(),
        },
        Loop {
            component: "pod-garbage-collector",
            run: |ctx| crate::podgc::run(ctx).boxed(),
        },
    ]
}

/// The Lease the controller manager is elected through, in `kube-system`.
pub const CONTROLLER_MANAGER_LEASE: &str = "skiff-controller-manager";
/// The Lease the scheduler is elected through, in `kube-system`.
pub const SCHEDULER_LEASE: &str = "skiff-scheduler";

/// Runs the controller manager forever: campaigns for its Lease and, while leading, runs
/// every controller (each restarted after a pause if it fails).
pub async fn run_controller_manager(
    config: kube::Config,
    settings: Settings,
    election: Election,
) -> anyhow::Result<()> {
    let settings = Arc::new(settings);
    election
        .run(config, move |client, _fence| {
            let settings = settings.clone();
            async move {
                let mut tasks = tokio::task::JoinSet::new();
                for l in controllers() {
                    let ctx = Context {
                        events: Recorder::new(client.clone(), l.component, &settings.identity),
                        client: client.clone(),
                        settings: settings.clone(),
                    };
                    tasks.spawn(supervise(l, ctx));
                }
                // The loops never end on their own; the elector aborts this future, and
                // dropping the JoinSet aborts them all, when leadership is lost.
                while tasks.join_next().await.is_some() {}
                Ok(())
            }
        })
        .await
}

/// Runs the scheduler forever: campaigns for its Lease and, while leading, schedules.
pub async fn run_scheduler(
    config: kube::Config,
    settings: Settings,
    election: Election,
) -> anyhow::Result<()> {
    let settings = Arc::new(settings);
    election
        .run(config, move |client, _fence| {
            let ctx = Context {
                events: Recorder::new(client.clone(), "default-scheduler", &settings.identity),
                client,
                settings: settings.clone(),
            };
            supervise(
                Loop {
                    component: "default-scheduler",
                    run: |ctx| crate::scheduler::run(ctx).boxed(),
                },
                ctx,
            )
            .map(Ok)
        })
        .await
}

/// Runs one loop, restarting it with a growing pause (1 s to 30 s) whenever it fails.
async fn supervise(l: Loop, ctx: Context) {
    let mut pause = Duration::from_secs(1);
    loop {
        match (l.run)(ctx.clone()).await {
            Ok(()) => tracing::warn!(component = l.component, "loop ended; restarting"),
            Err(e) => {
                tracing::error!(component = l.component, error = %e, "loop failed; restarting")
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(30));
    }
}
