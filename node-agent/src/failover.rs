//! One kube client over several API servers, so a node outlives the loss of the
//! control-plane server it was talking to.
//!
//! Requests go to the *current* server. When it cannot be reached (connection refused or
//! reset, a timeout) or answers 503, the next request goes to the next server in the
//! list, round robin. The failed request itself is not re-sent — its body may be a
//! stream, and a write must not happen twice — it reaches its caller as an error, and
//! every caller in the agent retries on its own (watches re-list with back-off, the
//! heartbeat on its period, pod status writes on the next sync).
//!
//! This is what a load balancer in front of the API servers gives a kubelet; the agent
//! does it itself so that `--server a,b,c` is all a worker needs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::FutureExt;
use http::{Request, Response};
use kube::client::Body;

/// A tower service sending each request to the current server's client.
#[derive(Clone)]
pub struct Failover {
    servers: Arc<[(String, kube::Client)]>,
    current: Arc<AtomicUsize>,
}

impl Failover {
    /// A client over `servers` (URL, client of that URL), starting with the first.
    ///
    /// # Panics
    /// If `servers` is empty.
    pub fn client(servers: Vec<(String, kube::Client)>, default_namespace: &str) -> kube::Client {
        assert!(!servers.is_empty(), "a failover client needs a server");
        let svc = Failover {
            servers: servers.into(),
            current: Arc::new(AtomicUsize::new(0)),
        };
        kube::Client::new(svc, default_namespace)
    }
}

/// Whether a request's outcome says the server is not there for us: it could not be
/// reached, or it said it cannot serve (503).
fn unavailable(outcome: &Result<Response<Body>, kube::Error>) -> bool {
    match outcome {
        Ok(resp) => resp.status() == http::StatusCode::SERVICE_UNAVAILABLE,
        // An answer from the server (4xx/5xx status) means it is there.
        Err(kube::Error::Api(_)) => false,
        Err(_) => true,
    }
}

impl tower::Service<Request<Body>> for Failover {
    type Response = Response<Body>;
    type Error = kube::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, kube::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let n = self.servers.len();
        let i = self.current.load(Ordering::Relaxed) % n;
        let servers = self.servers.clone();
        let current = self.current.clone();
        async move {
            let outcome = servers[i].1.send(req).await;
            // Only the first of many requests failing on server i moves on, and only
            // from i: a burst of failures advances one step, not n.
            if n > 1
                && unavailable(&outcome)
                && current
                    .compare_exchange(i, (i + 1) % n, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                tracing::warn!(
                    from = %servers[i].0,
                    to = %servers[(i + 1) % n].0,
                    "API server unavailable; switching to the next"
                );
            }
            outcome
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    /// A fake API server answering every request with `status` and a body naming it.
    fn fake(name: &'static str, status: u16) -> kube::Client {
        let svc = tower::service_fn(move |_req: Request<Body>| async move {
            Ok::<_, Infallible>(
                Response::builder()
                    .status(status)
                    .body(Body::from(name.as_bytes().to_vec()))
                    .expect("a response"),
            )
        });
        kube::Client::new(svc, "default")
    }

    /// A server that cannot be reached.
    fn dead() -> kube::Client {
        let svc = tower::service_fn(|_req: Request<Body>| async {
            Err::<Response<Body>, _>(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
        });
        kube::Client::new(svc, "default")
    }

    async fn answer(client: &kube::Client) -> Result<String, kube::Error> {
        let req = Request::get("/version")
            .body(Vec::new())
            .expect("a request");
        client.request_text(req).await
    }

    #[tokio::test]
    async fn requests_move_on_from_an_unreachable_or_unavailable_server_and_stay() {
        let client = Failover::client(
            vec![
                ("a".into(), dead()),
                ("b".into(), fake("b", 503)),
                ("c".into(), fake("c", 200)),
            ],
            "default",
        );
        assert!(
            answer(&client).await.is_err(),
            "a is down: the request fails"
        );
        assert!(answer(&client).await.is_err(), "b answers 503");
        assert_eq!(answer(&client).await.expect("c answers"), "c");
        assert_eq!(answer(&client).await.expect("and stays c"), "c");
    }

    #[tokio::test]
    async fn an_error_answer_is_not_a_reason_to_switch() {
        let client = Failover::client(
            vec![("a".into(), fake("a", 404)), ("b".into(), fake("b", 200))],
            "default",
        );
        assert!(answer(&client).await.is_err(), "404 is an error");
        assert!(
            answer(&client).await.is_err(),
            "still a: a 404 is an answer from a live server"
        );
    }
}
