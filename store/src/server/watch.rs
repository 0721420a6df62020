//! The etcd `Watch` service: one bidirectional stream carries many watchers.
//!
//! Every response of a stream — created/canceled notices, events, progress — goes
//! through one bounded channel, so their order on the wire is the order they were
//! queued in. A watcher whose events do not fit is demoted to catching up by the hub
//! instead of blocking apply (see `watch::hub`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use skiff_proto::etcdserverpb::watch_create_request::FilterType;
use skiff_proto::etcdserverpb::watch_request::RequestUnion;
use skiff_proto::etcdserverpb::watch_server::Watch;
use skiff_proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::member::Member;
use crate::mvcc::key::KeyRange;
use crate::server::check_leader;
use crate::watch::{WatchSpec, WatcherKey};

/// Responses buffered per stream before its watchers are demoted to catching up.
const STREAM_BUFFER: usize = 1024;

/// Watch service over a member.
pub struct WatchService {
    /// The member.
    pub member: Arc<Member>,
    /// Interval of `progress_notify` notifications (etcd: 10 minutes).
    pub progress_interval: Duration,
}

struct StreamState {
    member: Arc<Member>,
    tx: mpsc::Sender<WatchResponse>,
    /// watch id → (hub key, wants progress notifications)
    watchers: HashMap<i64, (WatcherKey, bool)>,
    next_id: i64,
    progress_pending: bool,
}

impl StreamState {
    async fn send(&self, r: WatchResponse) -> bool {
        self.tx.send(r).await.is_ok()
    }

    async fn create(&mut self, c: WatchCreateRequest) -> bool {
        let member = self.member.clone();
        let current = member.sm.kv.current_revision();
        let header = Some(member.header(current));
        let watch_id = if c.watch_id != 0 {
            if self.watchers.contains_key(&c.watch_id) || c.watch_id < 0 {
                return self
                    .send(WatchResponse {
                        header,
                        watch_id: c.watch_id,
                        created: true,
                        canceled: true,
                        cancel_reason: "etcdserver: duplicate watch ID provided on the WatchStream"
                            .into(),
                        ..Default::default()
                    })
                    .await;
            }
            c.watch_id
        } else {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            let id = self.next_id;
            self.next_id += 1;
            id
        };
        let range = KeyRange::from_request(&c.key, &c.range_end);
        if c.key.is_empty() && c.range_end.is_empty() {
            return self
                .send(WatchResponse {
                    header,
                    watch_id,
                    created: true,
                    canceled: true,
                    cancel_reason: "etcdserver: key is not provided".into(),
                    ..Default::default()
                })
                .await;
        }
        if !self
            .send(WatchResponse {
                header,
                watch_id,
                created: true,
                ..Default::default()
            })
            .await
        {
            return false;
        }
        let compacted = member.sm.kv.compact_revision();
        if c.start_revision > 0 && c.start_revision < compacted {
            return self
                .send(WatchResponse {
                    header,
                    watch_id,
                    canceled: true,
                    compact_revision: compacted,
                    cancel_reason: "etcdserver: mvcc: required revision has been compacted".into(),
                    ..Default::default()
                })
                .await;
        }
        let spec = WatchSpec {
            range,
            no_put: c.filters.contains(&(FilterType::Noput as i32)),
            no_delete: c.filters.contains(&(FilterType::Nodelete as i32)),
            prev_kv: c.prev_kv,
            watch_id,
            start_revision: c.start_revision,
        };
        let key = member.sm.hub.add(spec, self.tx.clone(), member.header_fn());
        self.watchers.insert(watch_id, (key, c.progress_notify));
        true
    }

    async fn cancel(&mut self, watch_id: i64) -> bool {
        if let Some((key, _)) = self.watchers.remove(&watch_id) {
            self.member.sm.hub.remove(key);
            let header = Some(self.member.header(self.member.sm.kv.current_revision()));
            return self
                .send(WatchResponse {
                    header,
                    watch_id,
                    canceled: true,
                    ..Default::default()
                })
                .await;
        }
        true
    }

    fn progress(&mut self) {
        let keys: Vec<WatcherKey> = self.watchers.values().map(|(k, _)| *k).collect();
        self.progress_pending =
            !self
                .member
                .sm
                .hub
                .progress(&keys, &self.tx, &self.member.header_fn());
    }

    fn close(&mut self) {
        for (_, (key, _)) in self.watchers.drain() {
            self.member.sm.hub.remove(key);
        }
    }
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<WatchResponse, Status>> + Send>>;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        check_leader(&self.member, &request)?;
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let mut state = StreamState {
            member: self.member.clone(),
            tx,
            watchers: HashMap::new(),
            next_id: 0,
            progress_pending: false,
        };
        let progress_interval = self.progress_interval;
        tokio::spawn(async move {
            let mut notify = tokio::time::interval(progress_interval);
            notify.tick().await;
            let mut retry = tokio::time::interval(Duration::from_millis(100));
            let closed_tx = state.tx.clone();
            loop {
                tokio::select! {
                    msg = inbound.next() => {
                        let ok = match msg {
                            Some(Ok(WatchRequest { request_union: Some(RequestUnion::CreateRequest(c)) })) => state.create(c).await,
                            Some(Ok(WatchRequest { request_union: Some(RequestUnion::CancelRequest(c)) })) => state.cancel(c.watch_id).await,
                            Some(Ok(WatchRequest { request_union: Some(RequestUnion::ProgressRequest(_)) })) => { state.progress(); true }
                            Some(Ok(WatchRequest { request_union: None })) => true,
                            Some(Err(_)) | None => false,
                        };
                        if !ok { break; }
                    }
                    _ = notify.tick() => {
                        for (key, wants) in state.watchers.values() {
                            if *wants {
                                state.member.sm.hub.notify_progress(*key);
                            }
                        }
                    }
                    _ = retry.tick(), if state.progress_pending => state.progress(),
                    _ = closed_tx.closed() => break,
                }
            }
            state.close();
        });
        let out = ReceiverStream::new(rx).map(Ok);
        Ok(Response::new(Box::pin(out)))
    }
}
