//! The watch cache: one store watch per resource feeds an in-memory copy of its objects
//! and a window of recent events, from which many API watches and `resourceVersion=0`
//! lists are served without touching the store.
//!
//! Invariants:
//! - `rev` is the revision the cache is consistent at: every event up to `rev` has been
//!   applied and dispatched, none after it. It advances with events and with the store's
//!   progress notifications.
//! - `history` holds every event with revision in `(oldest, rev]`, so a watch may resume
//!   from any resourceVersion `>= oldest`; older ones get 410 Expired.
//! - Events reach a watcher in revision order, each once. A watcher whose queue is full
//!   is cut off (its stream ends; the client resumes from the last resourceVersion it
//!   saw) rather than allowed to stall the feed or other watchers.
//! - Bookmarks are queued by the feed itself, behind every event they cover, so a
//!   bookmark's resourceVersion never runs ahead of an event the watcher has not seen.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::RwLock;
use serde_json::{json, Value};
use skiff_proto::etcdserverpb::watch_request::RequestUnion;
use skiff_proto::etcdserverpb::{
    RangeRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest,
};
use skiff_proto::mvccpb::event::EventType;
use tokio::sync::{mpsc, watch};

use crate::error::ApiError;
use crate::objects::{self, Cached};
use crate::resources::ResourceInfo;
use crate::store::{Store, StoreError};

/// Events kept per resource for resuming watches.
pub const HISTORY: usize = 10_000;
/// Items a watcher may have queued before it is cut off.
pub const WATCHER_QUEUE: usize = 1_000;
/// How often watchers that asked for bookmarks get one, and the cache asks the store
/// for progress when idle.
pub const BOOKMARK_EVERY: Duration = Duration::from_secs(5);
/// Objects per page when the cache lists the store.
const LIST_PAGE: i64 = 1_000;

/// What happened to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Added,
    Modified,
    Deleted,
}

impl EventKind {
    /// The watch event type as Kubernetes spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Added => "ADDED",
            EventKind::Modified => "MODIFIED",
            EventKind::Deleted => "DELETED",
        }
    }
}

/// One change of one object, at one revision.
#[derive(Debug)]
pub struct Event {
    pub kind: EventKind,
    pub rev: i64,
    /// The object after the change (for deletes: its last state, resourceVersion = `rev`).
    pub object: Arc<Cached>,
    /// The object before the change (None for creations).
    pub prev: Option<Arc<Cached>>,
    /// `{"type":…,"object":…}\n`, encoded once for every watcher that takes the event
    /// as is.
    line: OnceLock<Bytes>,
}

impl Event {
    fn new(kind: EventKind, rev: i64, object: Arc<Cached>, prev: Option<Arc<Cached>>) -> Event {
        Event {
            kind,
            rev,
            object,
            prev,
            line: OnceLock::new(),
        }
    }

    /// The event as one line of a Kubernetes watch stream.
    pub fn json_line(&self) -> Bytes {
        self.line
            .get_or_init(|| watch_line_raw(self.kind.as_str(), &self.object.json))
            .clone()
    }
}

/// `{"type":"<kind>","object":<object>}\n`.
pub fn watch_line(kind: &str, object: &Value) -> Bytes {
    watch_line_raw(kind, &serde_json::to_vec(object).unwrap_or_default())
}

/// `{"type":"<kind>","object":<json>}\n` around an object's encoded JSON.
pub fn watch_line_raw(kind: &str, json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + 32);
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"object\":");
    out.extend_from_slice(json);
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}

/// Decides which objects a watcher or list wants, from an object's [`Cached::view`]
/// (or, for lists read from the store, the whole object).
pub type Filter = Arc<dyn Fn(&Value) -> bool + Send + Sync>;

/// What a watcher receives.
#[derive(Clone, Debug)]
pub enum WatchItem {
    /// An event, possibly re-typed for the watcher's filter (an object entering the
    /// filter arrives as ADDED, one leaving it as DELETED).
    Event { kind: EventKind, event: Arc<Event> },
    /// All events up to this revision have been delivered.
    Bookmark(i64),
}

impl WatchItem {
    /// The revision this item brings the watcher to.
    pub fn rev(&self) -> i64 {
        match self {
            WatchItem::Event { event, .. } => event.rev,
            WatchItem::Bookmark(r) => *r,
        }
    }
}

struct Watcher {
    id: u64,
    namespace: Option<String>,
    filter: Option<Filter>,
    bookmarks: bool,
    tx: mpsc::Sender<WatchItem>,
}

struct Inner {
    objects: BTreeMap<Vec<u8>, Arc<Cached>>,
    rev: i64,
    /// Watches may resume from any revision >= `oldest`.
    oldest: i64,
    history: VecDeque<Arc<Event>>,
    watchers: Vec<Watcher>,
    ready: bool,
}

/// The cache of one resource.
pub struct ResourceCache {
    pub res: &'static ResourceInfo,
    inner: RwLock<Inner>,
    rev_tx: watch::Sender<i64>,
    progress_tx: mpsc::Sender<()>,
    progress_rx: parking_lot::Mutex<Option<mpsc::Receiver<()>>>,
    next_id: AtomicU64,
    /// Watchers cut off for being slow, for metrics.
    pub dropped: AtomicU64,
}

/// A registered watch: first `initial` (in order), then the items from `rx`.
pub struct Subscription {
    pub initial: Vec<WatchItem>,
    pub rx: mpsc::Receiver<WatchItem>,
    /// The revision the watch starts after.
    pub start_rev: i64,
    id: u64,
    cache: Arc<ResourceCache>,
}

impl Subscription {
    /// The subscription as a stream of items, in order: the initial items, then live
    /// ones, until the watcher is cut off or `timeout` passes. A bookmark never goes
    /// back behind an event already sent and is not repeated.
    pub fn into_stream(
        mut self,
        timeout: Duration,
    ) -> impl futures::Stream<Item = WatchItem> + Send {
        async_stream::stream! {
            let mut last = self.start_rev;
            let mut last_bookmark = -1;
            let deadline = tokio::time::Instant::now() + timeout;
            for item in std::mem::take(&mut self.initial) {
                last = last.max(item.rev());
                yield item;
            }
            loop {
                tokio::select! {
                    item = self.rx.recv() => {
                        let Some(item) = item else { break };
                        if let WatchItem::Bookmark(r) = item {
                            // A bookmark may repeat the last event's revision, once.
                            if r < last || r == last_bookmark { continue; }
                            last_bookmark = r;
                        }
                        last = last.max(item.rev());
                        yield item;
                    }
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.cache
            .inner
            .write()
            .watchers
            .retain(|w| w.id != self.id);
    }
}

fn matches(ns: &Option<String>, filter: &Option<Filter>, obj: &Cached) -> bool {
    if let Some(ns) = ns {
        if objects::meta_str(&obj.view, "namespace") != ns {
            return false;
        }
    }
    filter.as_ref().is_none_or(|f| f(&obj.view))
}

/// How a watcher sees an event: its own type after filtering, or nothing.
fn retype(ns: &Option<String>, filter: &Option<Filter>, ev: &Event) -> Option<EventKind> {
    let now = matches(ns, filter, &ev.object);
    match ev.kind {
        EventKind::Added => now.then_some(EventKind::Added),
        EventKind::Deleted => now.then_some(EventKind::Deleted),
        EventKind::Modified => {
            let before = ev.prev.as_ref().is_some_and(|p| matches(ns, filter, p));
            match (before, now) {
                (true, true) => Some(EventKind::Modified),
                (false, true) => Some(EventKind::Added),
                (true, false) => Some(EventKind::Deleted),
                (false, false) => None,
            }
        }
    }
}

impl ResourceCache {
    /// An empty cache of `res`; [`ResourceCache::run`] fills and feeds it.
    pub fn new(res: &'static ResourceInfo) -> Arc<ResourceCache> {
        let (rev_tx, _) = watch::channel(0);
        let (progress_tx, progress_rx) = mpsc::channel(4);
        Arc::new(ResourceCache {
            res,
            inner: RwLock::new(Inner {
                objects: BTreeMap::new(),
                rev: 0,
                oldest: 0,
                history: VecDeque::new(),
                watchers: Vec::new(),
                ready: false,
            }),
            rev_tx,
            progress_tx,
            progress_rx: parking_lot::Mutex::new(Some(progress_rx)),
            next_id: AtomicU64::new(1),
            dropped: AtomicU64::new(0),
        })
    }

    /// The revision the cache is consistent at (0 before the first list).
    pub fn rev(&self) -> i64 {
        self.inner.read().rev
    }

    /// Whether the cache holds a complete copy.
    pub fn ready(&self) -> bool {
        self.inner.read().ready
    }

    /// Number of objects cached.
    pub fn len(&self) -> usize {
        self.inner.read().objects.len()
    }

    /// Whether the cache holds no objects.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of live watchers.
    pub fn watcher_count(&self) -> usize {
        self.inner.read().watchers.len()
    }

    /// Waits until the cache has reached `rev`, asking the store for a progress
    /// notification so that an idle resource catches up too.
    pub async fn wait_for(&self, rev: i64, timeout: Duration) -> Result<(), ApiError> {
        let mut rx = self.rev_tx.subscribe();
        if *rx.borrow() >= rev && self.ready() {
            return Ok(());
        }
        let _ = self.progress_tx.try_send(());
        let wait = async {
            loop {
                if *rx.borrow_and_update() >= rev && self.ready() {
                    return;
                }
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.map_err(|_| {
            ApiError::timeout(format!(
                "Too large resource version: {rev}, current: {}",
                self.rev()
            ))
        })
    }

    /// The objects (of `namespace`, if given) that pass `filter`, and the revision of
    /// that state.
    pub fn list(
        &self,
        namespace: Option<&str>,
        filter: Option<&Filter>,
    ) -> (Vec<Arc<Cached>>, i64) {
        let inner = self.inner.read();
        let prefix = objects::prefix(self.res, namespace);
        let mut out = Vec::new();
        for (k, v) in inner.objects.range(prefix.clone()..) {
            if !k.starts_with(&prefix) {
                break;
            }
            if filter.is_none_or(|f| f(&v.view)) {
                out.push(v.clone());
            }
        }
        (out, inner.rev)
    }

    /// One object by key.
    pub fn get(&self, key: &[u8]) -> Option<Arc<Cached>> {
        self.inner.read().objects.get(key).cloned()
    }

    /// Starts a watch. `from`: `None` → the current state as ADDED events, then changes;
    /// `Some(rv)` → every change after `rv` (410 if `rv` is older than the history kept).
    pub fn subscribe(
        self: &Arc<Self>,
        from: Option<i64>,
        namespace: Option<String>,
        filter: Option<Filter>,
        bookmarks: bool,
    ) -> Result<Subscription, ApiError> {
        let (tx, rx) = mpsc::channel(WATCHER_QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.inner.write();
        let mut initial = Vec::new();
        let start_rev;
        match from {
            None => {
                start_rev = inner.rev;
                let prefix = objects::prefix(self.res, namespace.as_deref());
                for (k, v) in inner.objects.range(prefix.clone()..) {
                    if !k.starts_with(&prefix) {
                        break;
                    }
                    if matches(&namespace, &filter, v) {
                        let rev = v.rev;
                        let ev = Arc::new(Event::new(EventKind::Added, rev, v.clone(), None));
                        initial.push(WatchItem::Event {
                            kind: EventKind::Added,
                            event: ev,
                        });
                    }
                }
            }
            Some(rv) => {
                if rv < inner.oldest {
                    return Err(ApiError::expired(format!(
                        "too old resource version: {rv} ({})",
                        inner.oldest
                    )));
                }
                start_rev = rv;
                let skip = inner.history.partition_point(|e| e.rev <= rv);
                for ev in inner.history.iter().skip(skip) {
                    if let Some(kind) = retype(&namespace, &filter, ev) {
                        initial.push(WatchItem::Event {
                            kind,
                            event: ev.clone(),
                        });
                    }
                }
            }
        }
        inner.watchers.push(Watcher {
            id,
            namespace,
            filter,
            bookmarks,
            tx,
        });
        drop(inner);
        Ok(Subscription {
            initial,
            rx,
            start_rev,
            id,
            cache: self.clone(),
        })
    }

    /// Applies the events of one store revision and hands them to watchers.
    fn apply(&self, rev: i64, changes: Vec<(Vec<u8>, Option<Cached>)>) {
        let mut inner = self.inner.write();
        let mut events = Vec::with_capacity(changes.len());
        for (key, value) in changes {
            let prev = inner.objects.get(&key).cloned();
            let ev = match value {
                Some(obj) => {
                    let obj = Arc::new(obj);
                    inner.objects.insert(key, obj.clone());
                    let kind = if prev.is_some() {
                        EventKind::Modified
                    } else {
                        EventKind::Added
                    };
                    Event::new(kind, rev, obj, prev)
                }
                None => {
                    let Some(prev) = inner.objects.remove(&key) else {
                        continue;
                    };
                    let last = prev.with_rev(self.res, rev);
                    Event::new(EventKind::Deleted, rev, Arc::new(last), Some(prev))
                }
            };
            events.push(Arc::new(ev));
        }
        inner.rev = inner.rev.max(rev);
        let mut dropped = Vec::new();
        for ev in &events {
            for w in &inner.watchers {
                if let Some(kind) = retype(&w.namespace, &w.filter, ev) {
                    let item = WatchItem::Event {
                        kind,
                        event: ev.clone(),
                    };
                    if w.tx.try_send(item).is_err() {
                        dropped.push(w.id);
                    }
                }
            }
        }
        for ev in events {
            inner.history.push_back(ev);
        }
        while inner.history.len() > HISTORY {
            if let Some(old) = inner.history.pop_front() {
                inner.oldest = old.rev;
            }
        }
        self.cut_off(&mut inner, &dropped);
        let rev = inner.rev;
        drop(inner);
        self.rev_tx.send_replace(rev);
    }

    fn cut_off(&self, inner: &mut Inner, ids: &[u64]) {
        if ids.is_empty() {
            return;
        }
        let before = inner.watchers.len();
        inner.watchers.retain(|w| !ids.contains(&w.id));
        let n = before - inner.watchers.len();
        self.dropped.fetch_add(n as u64, Ordering::Relaxed);
        tracing::info!(resource = self.res.plural, cut = n, "slow watchers cut off");
    }

    /// The store confirmed that every event up to `rev` has been delivered.
    fn progress(&self, rev: i64) {
        let mut inner = self.inner.write();
        if rev > inner.rev {
            inner.rev = rev;
        }
        let rev = inner.rev;
        drop(inner);
        self.rev_tx.send_replace(rev);
    }

    /// Queues a bookmark at the current revision to every watcher that asked for them.
    fn bookmark(&self) {
        let mut inner = self.inner.write();
        let rev = inner.rev;
        let mut dropped = Vec::new();
        for w in inner.watchers.iter().filter(|w| w.bookmarks) {
            if let Err(mpsc::error::TrySendError::Full(_)) = w.tx.try_send(WatchItem::Bookmark(rev))
            {
                dropped.push(w.id);
            }
        }
        self.cut_off(&mut inner, &dropped);
    }

    /// Replaces the whole state with a fresh list at `rev`. Watchers cannot be told what
    /// changed in between, so they are cut off and resume (or relist) themselves.
    fn reset(&self, objects: BTreeMap<Vec<u8>, Arc<Cached>>, rev: i64) {
        let mut inner = self.inner.write();
        inner.objects = objects;
        inner.rev = rev;
        inner.oldest = rev;
        inner.history.clear();
        let ids: Vec<u64> = inner.watchers.iter().map(|w| w.id).collect();
        self.cut_off(&mut inner, &ids);
        inner.ready = true;
        drop(inner);
        self.rev_tx.send_replace(rev);
    }

    async fn list_store(
        &self,
        store: &Store,
    ) -> Result<(BTreeMap<Vec<u8>, Arc<Cached>>, i64), StoreError> {
        let prefix = objects::prefix(self.res, None);
        let end = skiff_proto::prefix_end(&prefix);
        let mut out = BTreeMap::new();
        let mut start = prefix.clone();
        let mut rev = 0;
        loop {
            let resp = store
                .range(RangeRequest {
                    key: start.clone(),
                    range_end: end.clone(),
                    limit: LIST_PAGE,
                    revision: rev,
                    ..Default::default()
                })
                .await?;
            if rev == 0 {
                rev = resp.header.as_ref().map_or(0, |h| h.revision);
            }
            for kv in &resp.kvs {
                match objects::decode(kv) {
                    Ok(v) => {
                        out.insert(kv.key.clone(), Arc::new(Cached::new(self.res, &v)));
                    }
                    Err(e) => tracing::warn!(error = %e, "skipping undecodable object"),
                }
            }
            match resp.kvs.last() {
                Some(last) if resp.more => {
                    start = last.key.clone();
                    start.push(0);
                }
                _ => break,
            }
        }
        Ok((out, rev))
    }

    /// Keeps the cache filled and fed until the process ends: list, then watch from the
    /// list's revision; on a broken stream resume from the last revision on the next
    /// endpoint; on compaction (history gone) list again.
    pub async fn run(self: Arc<Self>, store: Arc<Store>) {
        let mut progress_rx = self.progress_rx.lock().take().expect("run called once");
        let mut need_list = true;
        let mut backoff = Duration::from_millis(100);
        loop {
            if need_list {
                match self.list_store(&store).await {
                    Ok((objs, rev)) => {
                        tracing::debug!(
                            resource = self.res.plural,
                            objects = objs.len(),
                            rev,
                            "cache listed"
                        );
                        self.reset(objs, rev);
                        need_list = false;
                    }
                    Err(e) => {
                        tracing::warn!(resource = self.res.plural, error = %e, "cache list failed");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                        continue;
                    }
                }
            }
            match self.watch_store(&store, &mut progress_rx).await {
                WatchEnd::Compacted => need_list = true,
                WatchEnd::Broken(e) => {
                    tracing::info!(resource = self.res.plural, error = %e, "store watch broke; resuming");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    async fn watch_store(&self, store: &Store, progress_rx: &mut mpsc::Receiver<()>) -> WatchEnd {
        let prefix = objects::prefix(self.res, None);
        let (endpoint, mut client) = store.watch_client();
        let (req_tx, req_rx) = mpsc::channel::<WatchRequest>(8);
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                range_end: skiff_proto::prefix_end(&prefix),
                key: prefix,
                start_revision: self.rev() + 1,
                progress_notify: true,
                ..Default::default()
            })),
        };
        if req_tx.send(create).await.is_err() {
            return WatchEnd::Broken("request channel closed".into());
        }
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(req_rx));
        // Without a leader a store member cannot promise the stream is current.
        request
            .metadata_mut()
            .insert("hasleader", "true".parse().expect("ascii"));
        let mut stream = match client.watch(request).await {
            Ok(s) => s.into_inner(),
            Err(e) => {
                store.rotate(endpoint);
                return WatchEnd::Broken(e.to_string());
            }
        };
        let mut ticker = tokio::time::interval(BOOKMARK_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Pending events of a revision not yet complete (a revision may span messages
        // when the store fragments a large batch).
        let mut pending_rev = 0;
        let mut pending: Vec<(Vec<u8>, Option<Cached>)> = Vec::new();
        loop {
            tokio::select! {
                msg = stream.message() => {
                    let resp = match msg {
                        Ok(Some(r)) => r,
                        Ok(None) => { store.rotate(endpoint); return WatchEnd::Broken("stream ended".into()) }
                        Err(e) => { store.rotate(endpoint); return WatchEnd::Broken(e.to_string()) }
                    };
                    if resp.canceled {
                        if resp.compact_revision > 0 {
                            return WatchEnd::Compacted;
                        }
                        store.rotate(endpoint);
                        return WatchEnd::Broken(format!("watch canceled: {}", resp.cancel_reason));
                    }
                    if resp.created {
                        continue;
                    }
                    for ev in resp.events {
                        let Some(kv) = ev.kv else { continue };
                        if kv.mod_revision != pending_rev && !pending.is_empty() {
                            self.apply(pending_rev, std::mem::take(&mut pending));
                        }
                        pending_rev = kv.mod_revision;
                        let value = if ev.r#type == EventType::Delete as i32 {
                            None
                        } else {
                            match objects::decode(&kv) {
                                Ok(v) => Some(Cached::new(self.res, &v)),
                                Err(e) => { tracing::warn!(error = %e, "skipping undecodable object"); continue }
                            }
                        };
                        pending.push((kv.key, value));
                    }
                    if !resp.fragment && !pending.is_empty() {
                        self.apply(pending_rev, std::mem::take(&mut pending));
                    }
                    if pending.is_empty() {
                        if let Some(h) = resp.header {
                            self.progress(h.revision);
                        }
                    }
                }
                Some(()) = progress_rx.recv() => {
                    let req = WatchRequest { request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})) };
                    let _ = req_tx.try_send(req);
                }
                _ = ticker.tick() => {
                    let req = WatchRequest { request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})) };
                    let _ = req_tx.try_send(req);
                    self.bookmark();
                }
            }
        }
    }
}

enum WatchEnd {
    Compacted,
    Broken(String),
}

/// A BOOKMARK watch event for `kind`/`api_version` at `rev`.
pub fn bookmark_object(api_version: &str, kind: &str, rev: i64) -> Value {
    json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": rev.to_string()}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::lookup;

    fn pod(ns: &str, name: &str, rv: i64, app: &str) -> Cached {
        let v = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "resourceVersion": rv.to_string(), "labels": {"app": app}}, "spec": {"nodeName": "n1"}});
        Cached::new(lookup("", "v1", "pods").unwrap(), &v)
    }

    fn key(ns: &str, name: &str) -> Vec<u8> {
        format!("/registry/pods/{ns}/{name}").into_bytes()
    }

    fn drain(sub: &mut Subscription) -> Vec<(EventKind, i64, String)> {
        let mut out = Vec::new();
        for it in sub.initial.drain(..) {
            if let WatchItem::Event { kind, event } = it {
                out.push((
                    kind,
                    event.rev,
                    objects::meta_str(&event.object.view, "name").to_string(),
                ));
            }
        }
        while let Ok(it) = sub.rx.try_recv() {
            if let WatchItem::Event { kind, event } = it {
                out.push((
                    kind,
                    event.rev,
                    objects::meta_str(&event.object.view, "name").to_string(),
                ));
            }
        }
        out
    }

    #[test]
    fn resume_filter_transitions_and_expiry() {
        let c = ResourceCache::new(lookup("", "v1", "pods").unwrap());
        c.reset(BTreeMap::new(), 10);
        c.apply(11, vec![(key("a", "p1"), Some(pod("a", "p1", 11, "web")))]);
        c.apply(12, vec![(key("b", "p2"), Some(pod("b", "p2", 12, "db")))]);

        // From scratch: current state as ADDED.
        let mut all = c.subscribe(None, None, None, false).unwrap();
        assert_eq!(drain(&mut all).len(), 2);
        // Resume after 11: only p2.
        let mut after = c.subscribe(Some(11), None, None, false).unwrap();
        assert_eq!(drain(&mut after), vec![(EventKind::Added, 12, "p2".into())]);

        // A label filter sees p1 leave it as DELETED and re-enter as ADDED.
        let web: Filter = Arc::new(|o: &Value| o["metadata"]["labels"]["app"] == "web");
        let mut sub = c
            .subscribe(Some(12), Some("a".into()), Some(web), false)
            .unwrap();
        c.apply(
            13,
            vec![(key("a", "p1"), Some(pod("a", "p1", 13, "other")))],
        );
        c.apply(14, vec![(key("a", "p1"), Some(pod("a", "p1", 14, "web")))]);
        c.apply(15, vec![(key("b", "p2"), None)]);
        c.apply(16, vec![(key("a", "p1"), None)]);
        assert_eq!(
            drain(&mut sub),
            vec![
                (EventKind::Deleted, 13, "p1".into()),
                (EventKind::Added, 14, "p1".into()),
                (EventKind::Deleted, 16, "p1".into()),
            ]
        );
        assert!(c.subscribe(Some(9), None, None, false).is_err());
        assert_eq!(c.rev(), 16);
        assert!(c.list(None, None).0.is_empty());
    }

    #[test]
    fn slow_watcher_is_cut_off_others_continue() {
        let c = ResourceCache::new(lookup("", "v1", "pods").unwrap());
        c.reset(BTreeMap::new(), 1);
        let mut slow = c.subscribe(None, None, None, false).unwrap();
        let mut fast = c.subscribe(None, None, None, false).unwrap();
        for i in 0..(WATCHER_QUEUE as i64 + 5) {
            c.apply(
                2 + i,
                vec![(key("a", &format!("p{i}")), Some(pod("a", "p", 2 + i, "x")))],
            );
            while fast.rx.try_recv().is_ok() {}
        }
        assert_eq!(c.watcher_count(), 1);
        assert_eq!(c.dropped.load(Ordering::Relaxed), 1);
        // The slow one got a full queue, then its stream ends.
        let mut n = 0;
        while slow.rx.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(n, WATCHER_QUEUE);
        assert!(matches!(
            slow.rx.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
    }

    #[test]
    fn deleted_event_carries_deletion_revision() {
        let c = ResourceCache::new(lookup("", "v1", "pods").unwrap());
        c.reset(BTreeMap::new(), 1);
        c.apply(2, vec![(key("a", "p"), Some(pod("a", "p", 2, "x")))]);
        let mut sub = c.subscribe(Some(2), None, None, true).unwrap();
        c.apply(3, vec![(key("a", "p"), None)]);
        c.bookmark();
        match sub.rx.try_recv().unwrap() {
            WatchItem::Event { kind, event } => {
                assert_eq!(kind, EventKind::Deleted);
                assert_eq!(event.object.rev, 3);
                assert_eq!(event.object.object()["metadata"]["resourceVersion"], "3");
                // The view keeps what filters read, not the whole object.
                assert_eq!(event.object.view["spec"]["nodeName"], "n1");
                assert_eq!(event.object.view["metadata"]["labels"]["app"], "x");
                assert!(event.json_line().starts_with(b"{\"type\":\"DELETED\""));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(sub.rx.try_recv().unwrap(), WatchItem::Bookmark(3)));
    }
}
