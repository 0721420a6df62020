//! Leader election through a `coordination.k8s.io/v1` Lease, with fencing.
//!
//! The campaign is client-go's: a Lease held by someone else is taken over only after it
//! went unrenewed for its whole duration *as observed locally* (the time the Lease's
//! resourceVersion last changed, so clock skew between processes does not matter), and
//! every change is a compare-and-swap on the Lease's resourceVersion. A leader renews every
//! `retry_period`; if no renewal succeeded within `renew_deadline` it stops at once.
//!
//! Beyond client-go: every acquisition starts a new *term* (`spec.leaseTransitions` + 1),
//! and the work of a term runs with a client whose every request carries the fencing token
//! (lease, holder, term) in the `skiff-fencing-token` header. The API server checks the
//! token inside the store transaction of each write, so a leader that was paused past its
//! lease and resumes cannot write even before it notices it lost
//! (docs/leader-fencing.md). Leading again takes winning an election again.

use std::future::Future;
use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::Client;
use skiff_apiserver::fence::{Fence, HEADER};

/// One election: which Lease, who we are, and Kubernetes's timings.
#[derive(Clone, Debug)]
pub struct Election {
    pub namespace: String,
    pub name: String,
    /// This process's `holderIdentity`; unique per process.
    pub identity: String,
    /// How long a Lease lasts unrenewed before others may take it (default 15 s).
    pub lease_duration: Duration,
    /// A leader that could not renew for this long stops (default 10 s).
    pub renew_deadline: Duration,
    /// How often to renew, and to retry a campaign (default 2 s).
    pub retry_period: Duration,
}

impl Election {
    /// An election for Lease `kube-system/<name>` with Kubernetes's default timings.
    pub fn new(name: &str, identity: &str) -> Election {
        Election {
            namespace: "kube-system".to_string(),
            name: name.to_string(),
            identity: identity.to_string(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// Campaigns forever; while leading, runs `lead(client, fence)` with the term's fenced
    /// client. The work is aborted the moment leadership is lost (and restarted after a
    /// pause if it ends on its own while still leading).
    pub async fn run<F, Fut>(self, config: kube::Config, lead: F) -> anyhow::Result<()>
    where
        F: Fn(Client, Fence) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let leases: Api<Lease> =
            Api::namespaced(Client::try_from(config.clone())?, &self.namespace);
        let mut observed: Option<(String, Instant)> = None;
        loop {
            let (mut lease, term) = loop {
                match self.try_acquire(&leases, &mut observed).await {
                    Ok(Some(won)) => break won,
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(lease = %self.name, error = %e, "campaign round failed")
                    }
                }
                tokio::time::sleep(jittered(self.retry_period)).await;
            };
            let fence = Fence {
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                term,
                holder: self.identity.clone(),
            };
            tracing::info!(lease = %self.name, identity = %self.identity, term, "became leader");
            let mut cfg = config.clone();
            cfg.headers.push((
                HeaderName::from_static(HEADER),
                HeaderValue::from_str(&fence.encode())?,
            ));
            let client = Client::try_from(cfg)?;
            let mut work = tokio::spawn(lead(client.clone(), fence.clone()));
            let mut last_renew = Instant::now();
            let why = loop {
                tokio::select! {
                    _ = tokio::time::sleep(self.retry_period) => {}
                    ended = &mut work => {
                        tracing::error!(lease = %self.name, outcome = ?ended.map(|r| r.map_err(|e| e.to_string())), "leader work ended; restarting it");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        work = tokio::spawn(lead(client.clone(), fence.clone()));
                        continue;
                    }
                }
                // Checked before trying: after a pause (SIGSTOP, a long GC-like stall) the
                // deadline may be long gone, and the work must stop before anything else.
                if last_renew.elapsed() > self.renew_deadline {
                    break "renew deadline passed";
                }
                match self.renew(&leases, &lease, term).await {
                    Ok(Some(renewed)) => {
                        lease = renewed;
                        last_renew = Instant::now();
                    }
                    Ok(None) => break "another process holds the lease",
                    Err(e) => tracing::warn!(lease = %self.name, error = %e, "renewal failed"),
                }
                if last_renew.elapsed() > self.renew_deadline {
                    break "renew deadline passed";
                }
            };
            work.abort();
            tracing::warn!(lease = %self.name, identity = %self.identity, term, reason = why, "stopped leading");
            observed = None;
        }
    }

    /// One campaign round: the won Lease and term, or `None` if someone else leads.
    async fn try_acquire(
        &self,
        leases: &Api<Lease>,
        observed: &mut Option<(String, Instant)>,
    ) -> kube::Result<Option<(Lease, i64)>> {
        let now = MicroTime(Timestamp::now());
        let spec = |term: i64| LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.lease_duration.as_secs().max(1) as i32),
            acquire_time: Some(now.clone()),
            renew_time: Some(now.clone()),
            lease_transitions: Some(term as i32),
            ..Default::default()
        };
        let Some(current) = leases.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(spec(0)),
            };
            return match leases.create(&PostParams::default(), &lease).await {
                Ok(l) => Ok(Some((l, 0))),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
                Err(e) => Err(e),
            };
        };
        let rv = current
            .metadata
            .resource_version
            .clone()
            .unwrap_or_default();
        if observed.as_ref().is_none_or(|(seen, _)| *seen != rv) {
            *observed = Some((rv, Instant::now()));
        }
        let held = current.spec.clone().unwrap_or_default();
        let holder = held.holder_identity.unwrap_or_default();
        let duration = held
            .lease_duration_seconds
            .map_or(
                self.lease_duration,
                |s| Duration::from_secs(s.max(0) as u64),
            );
        let unrenewed_for = observed
            .as_ref()
            .map_or(Duration::ZERO, |(_, t)| t.elapsed());
        if !holder.is_empty() && holder != self.identity && unrenewed_for < duration {
            return Ok(None);
        }
        let term = i64::from(held.lease_transitions.unwrap_or(0)) + 1;
        let mut next = current;
        next.spec = Some(spec(term));
        match leases
            .replace(&self.name, &PostParams::default(), &next)
            .await
        {
            Ok(l) => Ok(Some((l, term))),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Renews the Lease of `term`: the renewed Lease, or `None` if it is no longer ours.
    async fn renew(
        &self,
        leases: &Api<Lease>,
        lease: &Lease,
        term: i64,
    ) -> kube::Result<Option<Lease>> {
        let mut next = lease.clone();
        for _ in 0..2 {
            let spec = next.spec.get_or_insert_with(LeaseSpec::default);
            spec.renew_time = Some(MicroTime(Timestamp::now()));
            match leases
                .replace(&self.name, &PostParams::default(), &next)
                .await
            {
                Ok(l) => return Ok(Some(l)),
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    // Someone wrote the Lease: still ours (e.g. a label added by hand)?
                    let Some(fresh) = leases.get_opt(&self.name).await? else {
                        return Ok(None);
                    };
                    if !holds(&fresh, &self.identity, term) {
                        return Ok(None);
                    }
                    next = fresh;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Some(next))
    }
}

/// Whether `lease` names `identity` as holder in `term`.
fn holds(lease: &Lease, identity: &str, term: i64) -> bool {
    lease.spec.as_ref().is_some_and(|s| {
        s.holder_identity.as_deref() == Some(identity)
            && i64::from(s.lease_transitions.unwrap_or(0)) == term
    })
}

/// `base` plus up to 20 %, so campaigners do not retry in lockstep.
fn jittered(base: Duration) -> Duration {
    base + base.mul_f64(rand::random::<f64>() * 0.2)
}

/// A process identity: host name plus a random suffix, unique per process.
pub fn identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "skiff".to_string());
    format!("{host}_{}", uuid::Uuid::new_v4())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_wants_holder_and_term() {
        let lease = |holder: &str, t: i32| Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.to_string()),
                lease_transitions: Some(t),
                ..Default::default()
            }),
        };
        assert!(holds(&lease("a", 2), "a", 2));
        assert!(!holds(&lease("a", 3), "a", 2));
        assert!(!holds(&lease("b", 2), "a", 2));
        assert!(!holds(
            &Lease {
                metadata: ObjectMeta::default(),
                spec: None
            },
            "a",
            0
        ));
    }

    #[test]
    fn jitter_stays_within_a_fifth() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(2));
            assert!(d >= Duration::from_secs(2) && d <= Duration::from_millis(2400));
        }
    }

    #[test]
    fn identities_are_unique() {
        assert_ne!(identity(), identity());
    }
}
