//! Pod and container status as the kubelet reports it, computed from what the worker
//! knows (pure functions, so the rules are tested without containers).

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, Pod, PodCondition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::shim::Exited;

/// One attempt of a container.
#[derive(Clone, Debug, PartialEq)]
pub struct Attempt {
    /// Runtime id.
    pub id: String,
    /// Restart count it has.
    pub attempt: u32,
    /// Image reference and id.
    pub image: String,
    /// `sha256:…`.
    pub image_id: String,
    /// RFC 3339, once started.
    pub started_at: Option<String>,
    /// How it ended, once it did.
    pub exited: Option<Exited>,
}

/// What the worker knows of one container of the pod.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerView {
    /// Container name.
    pub name: String,
    /// The image the spec asks for.
    pub image: String,
    /// The current (latest) attempt.
    pub current: Option<Attempt>,
    /// The attempt before it (for lastState).
    pub previous: Option<Attempt>,
    /// Why it is not running, if it is waiting (reason, message).
    pub waiting: Option<(String, String)>,
    /// Ready (readiness probe passed, or running without one).
    pub ready: bool,
    /// Startup probe passed (or none).
    pub started: bool,
}

fn time(rfc3339: &str) -> Option<Time> {
    rfc3339.parse::<jiff::Timestamp>().ok().map(Time)
}

/// The Terminated state of an ended attempt.
pub fn terminated(a: &Attempt, e: &Exited) -> ContainerStateTerminated {
    let reason = if e.oom_killed {
        "OOMKilled"
    } else if e.message.is_some() && a.started_at.as_deref().unwrap_or("").is_empty() {
        "StartError"
    } else if e.exit_code == 0 {
        "Completed"
    } else {
        "Error"
    };
    ContainerStateTerminated {
        exit_code: e.exit_code,
        signal: e.signal,
        reason: Some(reason.into()),
        message: e.message.clone(),
        started_at: time(&e.started_at).or_else(|| a.started_at.as_deref().and_then(time)),
        finished_at: time(&e.finished_at),
        container_id: Some(format!("runc://{}", a.id)),
    }
}

/// A container's status.
pub fn container_status(v: &ContainerView) -> ContainerStatus {
    let last_state = |a: Option<&Attempt>| {
        a.and_then(|a| {
            a.exited.as_ref().map(|e| ContainerState {
                terminated: Some(terminated(a, e)),
                ..Default::default()
            })
        })
    };
    let (state, last) = match (&v.current, &v.waiting) {
        // Waiting to restart an ended attempt (back-off) or for an image.
        (Some(cur), Some((reason, message))) if cur.exited.is_some() => (
            ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.clone()),
                    message: Some(message.clone()).filter(|m| !m.is_empty()),
                }),
                ..Default::default()
            },
            last_state(Some(cur)),
        ),
        (Some(cur), _) => match &cur.exited {
            Some(e) => (
                ContainerState {
                    terminated: Some(terminated(cur, e)),
                    ..Default::default()
                },
                last_state(v.previous.as_ref()),
            ),
            None => (
                ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: cur.started_at.as_deref().and_then(time),
                    }),
                    ..Default::default()
                },
                last_state(v.previous.as_ref()),
            ),
        },
        (None, w) => (
            ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(
                        w.as_ref()
                            .map_or("ContainerCreating".to_string(), |w| w.0.clone()),
                    ),
                    message: w.as_ref().map(|w| w.1.clone()).filter(|m| !m.is_empty()),
                }),
                ..Default::default()
            },
            last_state(v.previous.as_ref()),
        ),
    };
    let running = state.running.is_some();
    let cur = v.current.as_ref();
    ContainerStatus {
        name: v.name.clone(),
        image: v.image.clone(),
        image_id: cur.map(|c| c.image_id.clone()).unwrap_or_default(),
        container_id: cur.map(|c| format!("runc://{}", c.id)),
        ready: running && v.ready,
        started: Some(running && v.started),
        restart_count: cur.map_or(0, |c| c.attempt as i32),
        state: Some(state),
        last_state: Some(last.unwrap_or_default()),
        ..Default::default()
    }
}

/// The pod's phase (the kubelet's getPhase): Pending until every container has run,
/// Succeeded/Failed when all ended for good, Running otherwise.
pub fn phase(
    restart_policy: &str,
    init_failed: bool,
    initialized: bool,
    containers: &[ContainerView],
) -> &'static str {
    if init_failed {
        return "Failed";
    }
    if !initialized {
        return "Pending";
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in containers {
        match c.current.as_ref() {
            None => waiting += 1,
            Some(a) => match &a.exited {
                None => running += 1,
                Some(e) => {
                    // A container waiting to restart counts as running once it has run.
                    let restarts = match restart_policy {
                        "Always" => true,
                        "OnFailure" => e.exit_code != 0,
                        _ => false,
                    };
                    if restarts {
                        running += 1;
                    } else {
                        stopped += 1;
                        if e.exit_code == 0 {
                            succeeded += 1;
                        }
                    }
                }
            },
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped == containers.len() && stopped > 0 {
        if succeeded == stopped {
            "Succeeded"
        } else {
            "Failed"
        }
    } else {
        "Pending"
    }
}

/// A condition, keeping its lastTransitionTime if `old` had it with the same status.
pub fn condition(
    old: Option<&Pod>,
    type_: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let prev = old
        .and_then(|p| p.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_));
    let transition = match prev {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Some(Time(jiff::Timestamp::now())),
    };
    PodCondition {
        type_: type_.into(),
        status: status.into(),
        reason: if ok { None } else { reason.map(String::from) },
        message: if ok { None } else { message },
        last_transition_time: transition,
        last_probe_time: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(exit: Option<i32>, waiting: Option<&str>) -> ContainerView {
        ContainerView {
            name: "c".into(),
            image: "busybox".into(),
            current: Some(Attempt {
                id: "u-c-1".into(),
                attempt: 1,
                image: "busybox".into(),
                image_id: "sha256:x".into(),
                started_at: Some("2026-11-28T10:00:00Z".into()),
                exited: exit.map(|code| Exited {
                    exit_code: code,
                    signal: None,
                    started_at: "2026-11-28T10:00:00Z".into(),
                    finished_at: "2026-11-28T10:00:01Z".into(),
                    oom_killed: false,
                    message: None,
                }),
            }),
            previous: None,
            waiting: waiting.map(|r| (r.to_string(), "back-off 10s".to_string())),
            ready: true,
            started: true,
        }
    }

    #[test]
    fn phases() {
        assert_eq!(phase("Always", false, true, &[view(None, None)]), "Running");
        assert_eq!(
            phase(
                "Always",
                false,
                true,
                &[view(Some(1), Some("CrashLoopBackOff"))]
            ),
            "Running"
        );
        assert_eq!(
            phase("Never", false, true, &[view(Some(0), None)]),
            "Succeeded"
        );
        assert_eq!(
            phase("Never", false, true, &[view(Some(2), None)]),
            "Failed"
        );
        assert_eq!(
            phase("OnFailure", false, true, &[view(Some(0), None)]),
            "Succeeded"
        );
        assert_eq!(
            phase("OnFailure", false, true, &[view(Some(3), None)]),
            "Running"
        );
        assert_eq!(
            phase("Always", false, false, &[view(None, None)]),
            "Pending"
        );
        let mut fresh = view(None, None);
        fresh.current = None;
        assert_eq!(
            phase("Always", false, true, &[fresh, view(None, None)]),
            "Pending"
        );
        assert_eq!(phase("Never", true, false, &[]), "Failed");
    }

    #[test]
    fn a_crashing_container_waits_in_back_off_with_its_last_exit() {
        let s = container_status(&view(Some(1), Some("CrashLoopBackOff")));
        let w = s.state.unwrap().waiting.unwrap();
        assert_eq!(w.reason.as_deref(), Some("CrashLoopBackOff"));
        let t = s.last_state.unwrap().terminated.unwrap();
        assert_eq!(t.exit_code, 1);
        assert_eq!(t.reason.as_deref(), Some("Error"));
        assert_eq!(s.restart_count, 1);
        assert!(!s.ready);
    }

    #[test]
    fn running_and_terminated_states() {
        let s = container_status(&view(None, None));
        assert!(s.state.unwrap().running.is_some());
        assert!(s.ready);
        assert_eq!(s.container_id.as_deref(), Some("runc://u-c-1"));
        let s = container_status(&view(Some(0), None));
        let t = s.state.unwrap().terminated.unwrap();
        assert_eq!(t.reason.as_deref(), Some("Completed"));
    }
}
