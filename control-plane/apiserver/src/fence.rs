//! Fencing tokens: the API server's half of leader election that cannot be fooled by a
//! paused leader (docs/leader-fencing.md).
//!
//! A leader-elected client (the scheduler, the controller manager) sends with every request
//! the header [`HEADER`] naming the `coordination.k8s.io/v1` Lease it was elected through,
//! its `holderIdentity` and its term (the Lease's `leaseTransitions` when it acquired it).
//! Every store transaction the request makes then also compares the Lease's mod_revision
//! with the revision of the Lease the check was made against, so the write lands only if,
//! at the revision it commits at, that Lease still names this holder and term. Renewals
//! change the Lease but not holder or term: a transaction that loses to a renewal is
//! retried on the renewed Lease. A takeover changes the holder (or at least the term), and
//! every later write carrying the old token is refused with 403.

use std::future::Future;

use serde_json::Value;

use crate::error::ApiError;

/// The request header carrying a fencing token: `<namespace>/<name>/<term>/<holder>`.
pub const HEADER: &str = "skiff-fencing-token";

/// A leader's claim: "I hold Lease `namespace/name` as `holder`, in term `term`".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub namespace: String,
    pub name: String,
    /// The Lease's `spec.leaseTransitions` when the holder acquired it.
    pub term: i64,
    /// The Lease's `spec.holderIdentity`.
    pub holder: String,
}

impl Fence {
    /// Parses a header value; the holder comes last so it may contain `/`.
    pub fn parse(v: &str) -> Result<Fence, ApiError> {
        let bad = || {
            ApiError::bad_request(format!(
                "invalid {HEADER} header {v:?}: expected <namespace>/<name>/<term>/<holder>"
            ))
        };
        let mut parts = v.splitn(4, '/');
        let (Some(namespace), Some(name), Some(term), Some(holder)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let term = term.parse::<i64>().map_err(|_| bad())?;
        if namespace.is_empty() || name.is_empty() || holder.is_empty() {
            return Err(bad());
        }
        Ok(Fence {
            namespace: namespace.to_string(),
            name: name.to_string(),
            term,
            holder: holder.to_string(),
        })
    }

    /// The header value.
    pub fn encode(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.namespace, self.name, self.term, self.holder
        )
    }

    /// Whether `lease` (a Lease object) still grants this token; a 403 saying who holds
    /// it now if not.
    pub fn check(&self, lease: Option<&Value>) -> Result<(), ApiError> {
        let Some(lease) = lease else {
            return Err(self.refused("the lease does not exist".to_string()));
        };
        let spec = lease.get("spec");
        let holder = spec
            .and_then(|s| s.get("holderIdentity"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let term = spec
            .and_then(|s| s.get("leaseTransitions"))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if holder == self.holder && term == self.term {
            return Ok(());
        }
        let now = if holder.is_empty() {
            "nobody".to_string()
        } else {
            format!("{holder:?}")
        };
        Err(self.refused(format!("it is now held by {now} in term {term}")))
    }

    fn refused(&self, why: String) -> ApiError {
        ApiError::new(
            403,
            "Forbidden",
            format!(
                "fencing token refused: {:?} held lease {}/{} in term {}, but {why}; \
                 a deposed leader may not write",
                self.holder, self.namespace, self.name, self.term
            ),
        )
    }
}

tokio::task_local! {
    static CURRENT: Option<Fence>;
}

/// Runs `f` (one request's handling) with `fence` as the token its writes are checked
/// against.
pub async fn scope<F: Future>(fence: Option<Fence>, f: F) -> F::Output {
    CURRENT.scope(fence, f).await
}

/// The token of the request being handled, if it carries one.
pub fn current() -> Option<Fence> {
    CURRENT.try_with(Clone::clone).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fence() -> Fence {
        Fence::parse("kube-system/skiff-scheduler/3/host-a_1/2").unwrap()
    }

    #[test]
    fn parse_and_encode_round_trip() {
        let f = fence();
        assert_eq!(f.namespace, "kube-system");
        assert_eq!(f.name, "skiff-scheduler");
        assert_eq!(f.term, 3);
        assert_eq!(f.holder, "host-a_1/2");
        assert_eq!(Fence::parse(&f.encode()).unwrap(), f);
        for bad in ["", "a/b/c", "a/b/x/h", "/b/1/h", "a//1/h", "a/b/1/"] {
            let e = Fence::parse(bad).unwrap_err();
            assert_eq!(e.code, 400, "{bad}");
        }
    }

    #[test]
    fn check_wants_same_holder_and_term() {
        let f = fence();
        let lease = |holder: &str, term: i64| {
            json!({"spec": {"holderIdentity": holder, "leaseTransitions": term,
                            "renewTime": "2026-11-28T00:00:00.000000Z"}})
        };
        assert!(f.check(Some(&lease("host-a_1/2", 3))).is_ok());
        let e = f.check(Some(&lease("host-b", 4))).unwrap_err();
        assert_eq!(e.code, 403);
        assert!(e.message.contains("\"host-b\" in term 4"), "{}", e.message);
        // Same holder, later term: it lost the lease and won it again; the old term's
        // writes stay fenced.
        assert_eq!(
            f.check(Some(&lease("host-a_1/2", 4))).unwrap_err().code,
            403
        );
        assert_eq!(f.check(None).unwrap_err().code, 403);
        assert_eq!(f.check(Some(&json!({"spec": {}}))).unwrap_err().code, 403);
    }

    #[tokio::test]
    async fn current_is_scoped_to_the_request() {
        assert_eq!(current(), None);
        let seen = scope(Some(fence()), async { current() }).await;
        assert_eq!(seen, Some(fence()));
        assert_eq!(scope(None, async { current() }).await, None);
    }
}
