//! The Kubernetes REST API over HTTP: URL routing, query parameters, content negotiation
//! (JSON, Table, PartialObjectMetadata), watch streams, and `Status` errors.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::cache::{bookmark_object, watch_line, EventKind, Filter, Subscription, WatchItem};
use crate::error::{ApiError, ApiResult};
use crate::objects::Cached;
use crate::patch::PatchType;
use crate::registry::{DeleteOpts, FieldValidation, ListOpts, Part, WriteOpts};
use crate::resources::{self, ResourceInfo};
use crate::selector::{supported_fields, FieldSelector, LabelSelector};
use crate::server::App;
use crate::table::{to_table, IncludeObject};

/// Largest request body accepted (etcd's request limit is 1.5 MiB; Kubernetes's 3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// What a URL under `/api` or `/apis` names.
#[derive(Debug)]
pub enum Target {
    /// `…/<plural>` (in a namespace or across all).
    Collection {
        res: &'static ResourceInfo,
        ns: Option<String>,
        watch: bool,
    },
    /// `…/<plural>/<name>[/<subresource>]`.
    Object {
        res: &'static ResourceInfo,
        ns: String,
        name: String,
        sub: Option<String>,
        watch: bool,
    },
}

/// Parses the path below `/api/v1` or `/apis/<group>/<version>`. `None` for anything
/// else (a 404).
pub fn parse_target(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, mut rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let mut watch = false;
    if rest.first() == Some(&"watch") {
        watch = true;
        rest = &rest[1..];
    }
    let mut ns = None;
    if rest.len() >= 3 && rest[0] == "namespaces" {
        if let Some(r) = resources::lookup(group, version, rest[2]).filter(|r| r.namespaced) {
            ns = Some(rest[1].to_string());
            rest = &rest[2..];
            let _ = r;
        }
    }
    let res = resources::lookup(group, version, rest.first()?)?;
    if res.namespaced != ns.is_some() && rest.len() > 1 {
        return None;
    }
    match rest.len() {
        1 => Some(Target::Collection { res, ns, watch }),
        2 | 3 => {
            let name = rest[1].to_string();
            let sub = rest.get(2).map(|s| s.to_string());
            if name.is_empty() {
                return None;
            }
            if let Some(s) = &sub {
                let known = res.subresources.contains(&s.as_str())
                    || (res.kind == "Namespace" && s == "finalize");
                if !known {
                    return None;
                }
            }
            Some(Target::Object {
                res,
                ns: ns.unwrap_or_default(),
                name,
                sub,
                watch,
            })
        }
        _ => None,
    }
}

/// Query parameters, last value wins.
pub struct Query(HashMap<String, String>);

impl Query {
    fn parse(q: Option<&str>) -> Query {
        let mut m = HashMap::new();
        for (k, v) in form_pairs(q.unwrap_or("")) {
            m.insert(k, v);
        }
        Query(m)
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }

    fn int(&self, k: &str) -> ApiResult<Option<i64>> {
        match self.get(k) {
            None | Some("") => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                ApiError::bad_request(format!("invalid value for {k}: {v:?} is not an integer"))
            }),
        }
    }
}

/// Decodes `application/x-www-form-urlencoded` pairs.
fn form_pairs(q: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

/// How the client wants the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Json,
    Table,
    PartialMetadata,
}

fn negotiate(headers: &HeaderMap) -> ApiResult<Format> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(Format::Json);
    };
    if accept.trim().is_empty() {
        return Ok(Format::Json);
    }
    for entry in accept.split(',') {
        let mut parts = entry.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        let params: HashMap<&str, &str> = parts.filter_map(|p| p.split_once('=')).collect();
        if !matches!(
            media,
            "application/json" | "*/*" | "application/*" | "application/json-seq"
        ) {
            continue;
        }
        match params.get("as").copied() {
            None => return Ok(Format::Json),
            Some("Table")
                if params.get("g") == Some(&"meta.k8s.io")
                    && matches!(params.get("v"), Some(&"v1") | Some(&"v1beta1")) =>
            {
                return Ok(Format::Table)
            }
            Some("PartialObjectMetadata" | "PartialObjectMetadataList")
                if params.get("g") == Some(&"meta.k8s.io") =>
            {
                return Ok(Format::PartialMetadata)
            }
            Some(_) => continue,
        }
    }
    Err(ApiError::new(
        406,
        "NotAcceptable",
        format!("only the following media types are accepted: application/json, application/json;as=Table;v=v1;g=meta.k8s.io (asked for {accept:?})"),
    ))
}

/// A JSON response.
pub fn json_response(code: u16, body: &Value, warnings: &[String]) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for w in warnings {
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{}\"", w.replace('"', "'"))) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

/// The error as a `Status` response.
pub fn error_response(e: &ApiError) -> Response {
    let mut resp = json_response(e.code, &e.status(), &[]);
    if let Some(r) = e.details.retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(r));
    }
    resp
}

fn partial(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata").cloned().unwrap_or_default()})
}

fn filters(res: &ResourceInfo, q: &Query) -> ApiResult<Option<Filter>> {
    build_filter(
        res,
        q.get("labelSelector").unwrap_or(""),
        q.get("fieldSelector").unwrap_or(""),
        None,
    )
}

/// The filter of a list or watch: label and field selectors, and one name.
pub fn build_filter(
    res: &ResourceInfo,
    labels: &str,
    fields: &str,
    name: Option<String>,
) -> ApiResult<Option<Filter>> {
    let labels = LabelSelector::parse(labels)?;
    let fields = FieldSelector::parse(fields, supported_fields(res.group, res.plural))?;
    if labels.is_empty() && fields.is_empty() && name.is_none() {
        return Ok(None);
    }
    Ok(Some(Arc::new(move |o: &Value| {
        name.as_deref()
            .is_none_or(|n| crate::objects::meta_str(o, "name") == n)
            && labels.matches_value(o)
            && fields.matches(o)
    })))
}

/// Opens a watch on the cache with Kubernetes's resourceVersion rules: unset → the
/// current state (made consistent with the store first) then changes; "0" → the cached
/// state then changes; N → changes after N (410 if N is older than the cache's history).
pub async fn open_watch(
    app: &App,
    res: &'static ResourceInfo,
    ns: Option<String>,
    filter: Option<Filter>,
    rv: &str,
    send_initial: bool,
    bookmarks: bool,
) -> ApiResult<Subscription> {
    let rv = crate::objects::parse_rv(rv)?;
    let cache = app.registry.cache(res).clone();
    let from = match rv {
        None => {
            let current = app.registry.store.current_revision().await?;
            cache.wait_for(current, Duration::from_secs(3)).await?;
            None
        }
        Some(0) => {
            cache.wait_for(1, Duration::from_secs(3)).await?;
            None
        }
        Some(r) => {
            cache.wait_for(r, Duration::from_secs(3)).await?;
            (!send_initial).then_some(r)
        }
    };
    cache.subscribe(from, ns, filter, bookmarks)
}

fn write_opts(q: &Query) -> ApiResult<WriteOpts> {
    let dry_run = match q.get("dryRun") {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unsupported dryRun value {other:?}: only \"All\""
            )))
        }
    };
    Ok(WriteOpts {
        dry_run,
        validation: FieldValidation::parse(q.get("fieldValidation"))?,
    })
}

fn parse_json_body(body: &Bytes) -> ApiResult<Value> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
}

/// The object in the body of a POST or PUT, as JSON: a JSON body as it is, a Kubernetes
/// protobuf body (what kubectl's typed generators send) decoded by
/// [`crate::protobuf::decode_body`]; either then goes through the same decoding,
/// defaulting and validation. Any other media type is refused with 415.
fn request_body(headers: &HeaderMap, body: &Bytes) -> ApiResult<Value> {
    let ct = content_type(headers);
    let media = ct.split(';').next().unwrap_or("").trim();
    if media.is_empty() || media == "application/json" || media == "*/*" {
        return parse_json_body(body);
    }
    if crate::protobuf::is_protobuf(ct) {
        return crate::protobuf::decode_body(body);
    }
    Err(ApiError::new(
        415,
        "UnsupportedMediaType",
        format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, {} (got {media:?})",
            crate::protobuf::MEDIA_TYPE
        ),
    ))
}

/// Serves one request under `/api` or `/apis`.
pub async fn serve_resource(State(app): State<Arc<App>>, req: Request) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = Query::parse(req.uri().query());
    let headers = req.headers().clone();
    let target = parse_target(&path);
    let (verb, resource) = describe(&method, &target, &query);
    // An exec upgrades the connection: it needs the request itself, not its body.
    if let Some(Target::Object {
        res,
        ns,
        name,
        sub: Some(sub),
        ..
    }) = &target
    {
        if res.plural == "pods" && res.group.is_empty() && sub == "exec" {
            let (ns, name) = (ns.clone(), name.clone());
            let resp = match crate::exec::pod_exec(&app, &ns, &name, req).await {
                Ok(r) => r,
                Err(e) => error_response(&e),
            };
            app.metrics
                .observe_request(verb, &resource, resp.status().as_u16(), start.elapsed());
            return resp;
        }
    }
    let body = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            let e = ApiError::new(
                413,
                "RequestEntityTooLarge",
                format!("the request body is larger than {MAX_BODY} bytes"),
            );
            return error_response(&e);
        }
    };
    let resp = match target {
        None => error_response(&ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )),
        Some(t) => match handle(&app, &method, t, &query, &headers, body).await {
            Ok(r) => r,
            Err(e) => error_response(&e),
        },
    };
    let code = resp.status().as_u16();
    app.metrics
        .observe_request(verb, &resource, code, start.elapsed());
    // At debug level: a busy control plane makes thousands of requests a second, and
    // /metrics counts them by verb, resource and code.
    if verb != "watch" {
        tracing::debug!(target: "skiff::request", %method, %path, verb, resource, code, latency_ms = start.elapsed().as_secs_f64() * 1000.0, "request");
    }
    resp
}

fn describe(method: &Method, target: &Option<Target>, q: &Query) -> (&'static str, String) {
    match target {
        None => ("unknown", String::new()),
        Some(Target::Collection { res, watch, .. }) => {
            let verb = match *method {
                Method::GET if *watch || q.flag("watch") => "watch",
                Method::GET => "list",
                Method::POST => "create",
                Method::DELETE => "deletecollection",
                _ => "unknown",
            };
            (verb, res.plural.to_string())
        }
        Some(Target::Object {
            res, sub, watch, ..
        }) => {
            let verb = match *method {
                Method::GET if *watch || q.flag("watch") => "watch",
                Method::GET => "get",
                Method::PUT => "update",
                Method::PATCH => "patch",
                Method::DELETE => "delete",
                Method::POST => "create",
                _ => "unknown",
            };
            let r = match sub {
                Some(s) => format!("{}/{s}", res.plural),
                None => res.plural.to_string(),
            };
            (verb, r)
        }
    }
}

async fn handle(
    app: &Arc<App>,
    method: &Method,
    target: Target,
    q: &Query,
    headers: &HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let reg = &app.registry;
    match target {
        Target::Collection { res, ns, watch } => {
            if res.namespaced && ns.is_none() && !matches!(*method, Method::GET) {
                return Err(ApiError::method_not_allowed(format!(
                    "{} must be created and deleted within a namespace",
                    res.plural
                )));
            }
            match *method {
                Method::GET if watch || q.flag("watch") => {
                    watch_response(app, res, ns, None, q, headers).await
                }
                Method::GET => {
                    let format = negotiate(headers)?;
                    let filter = filters(res, q)?;
                    let opts = ListOpts {
                        resource_version: q.get("resourceVersion").unwrap_or("").to_string(),
                        exact: q.get("resourceVersionMatch") == Some("Exact"),
                        limit: q.int("limit")?.unwrap_or(0).max(0),
                        continue_token: q.get("continue").unwrap_or("").to_string(),
                    };
                    let page = reg.list(res, ns.as_deref(), filter, &opts).await?;
                    let mut meta = json!({"resourceVersion": page.resource_version.to_string()});
                    if let Some(c) = &page.continue_token {
                        meta["continue"] = json!(c);
                    }
                    Ok(list_response(res, &page.items, meta, format, q)?)
                }
                Method::POST => {
                    let obj = request_body(headers, &body)?;
                    let opts = write_opts(q)?;
                    let out = reg
                        .create(res, ns.as_deref().unwrap_or(""), obj, opts)
                        .await?;
                    Ok(json_response(201, &out.object, &out.warnings))
                }
                Method::DELETE => {
                    let filter = filters(res, q)?;
                    let mut dopts = delete_opts(q)?;
                    if !body.is_empty() {
                        dopts.merge_body(&parse_json_body(&body)?)?;
                    }
                    let page = reg
                        .list(res, ns.as_deref(), filter, &ListOpts::default())
                        .await?;
                    let mut deleted = Vec::new();
                    for obj in page.items {
                        let ns = crate::objects::meta_str(&obj.view, "namespace");
                        let name = crate::objects::meta_str(&obj.view, "name");
                        match reg.delete(res, ns, name, &dopts).await {
                            Ok(d) => deleted.push(d.object),
                            Err(e) if e.code == 404 => {}
                            Err(e) => return Err(e),
                        }
                    }
                    let list = json!({"kind": res.list_kind(), "apiVersion": res.api_version(), "metadata": {}, "items": deleted});
                    Ok(json_response(200, &list, &[]))
                }
                _ => Err(ApiError::method_not_allowed(format!(
                    "{method} is not supported on a collection"
                ))),
            }
        }
        Target::Object {
            res,
            ns,
            name,
            sub,
            watch,
        } => {
            if watch || (q.flag("watch") && *method == Method::GET && sub.is_none()) {
                return watch_response(
                    app,
                    res,
                    if res.namespaced { Some(ns) } else { None },
                    Some(name),
                    q,
                    headers,
                )
                .await;
            }
            let part = match sub.as_deref() {
                None => Part::Main,
                Some("status") => Part::Status,
                Some("scale") => Part::Scale,
                Some("binding") => {
                    if *method != Method::POST {
                        return Err(ApiError::method_not_allowed(
                            "pods/binding only accepts POST",
                        ));
                    }
                    let status = reg.bind(&ns, &name, parse_json_body(&body)?).await?;
                    return Ok(json_response(201, &status, &[]));
                }
                Some("log") => return crate::logs::pod_log(app, &ns, &name, q.0.clone()).await,
                Some("finalize") => {
                    if *method != Method::PUT {
                        return Err(ApiError::method_not_allowed(
                            "namespaces/finalize only accepts PUT",
                        ));
                    }
                    let out = reg
                        .finalize_namespace(&name, parse_json_body(&body)?)
                        .await?;
                    return Ok(json_response(200, &out, &[]));
                }
                Some(other) => {
                    return Err(ApiError::new(
                        404,
                        "NotFound",
                        format!("unknown subresource {other:?}"),
                    ))
                }
            };
            match *method {
                Method::GET => {
                    let format = negotiate(headers)?;
                    let obj = match q.get("resourceVersion") {
                        Some("0") => match reg.get_cached(res, &ns, &name) {
                            Some(o) => o,
                            None => reg.get(res, &ns, &name).await?,
                        },
                        _ => reg.get(res, &ns, &name).await?,
                    };
                    let obj = if part == Part::Scale {
                        crate::registry::scale_of(res, &obj)
                    } else {
                        obj
                    };
                    match format {
                        Format::Json => Ok(json_response(200, &obj, &[])),
                        Format::PartialMetadata => Ok(json_response(200, &partial(&obj), &[])),
                        Format::Table => {
                            let meta = json!({"resourceVersion": crate::objects::meta_str(&obj, "resourceVersion")});
                            let include = IncludeObject::parse(q.get("includeObject"))?;
                            let t = to_table(
                                res.group,
                                res.plural,
                                std::slice::from_ref(&obj),
                                meta,
                                include,
                                jiff::Timestamp::now(),
                            );
                            Ok(json_response(200, &t, &[]))
                        }
                    }
                }
                Method::PUT => {
                    let obj = request_body(headers, &body)?;
                    let out = reg
                        .update(res, &ns, &name, part, obj, write_opts(q)?)
                        .await?;
                    Ok(json_response(
                        if out.created { 201 } else { 200 },
                        &out.object,
                        &out.warnings,
                    ))
                }
                Method::PATCH => {
                    let ct = content_type(headers);
                    let Some(pt) = PatchType::from_content_type(ct) else {
                        return Err(ApiError::new(
                            415,
                            "UnsupportedMediaType",
                            format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {ct:?})"),
                        ));
                    };
                    let out = reg
                        .patch(res, &ns, &name, part, pt, &body, write_opts(q)?)
                        .await?;
                    Ok(json_response(200, &out.object, &out.warnings))
                }
                Method::DELETE if part == Part::Main => {
                    let mut dopts = delete_opts(q)?;
                    if !body.is_empty() {
                        dopts.merge_body(&parse_json_body(&body)?)?;
                    }
                    let d = reg.delete(res, &ns, &name, &dopts).await?;
                    Ok(json_response(
                        if d.gone { 200 } else { 202 },
                        &d.object,
                        &[],
                    ))
                }
                _ => Err(ApiError::method_not_allowed(format!(
                    "{method} is not supported here"
                ))),
            }
        }
    }
}

fn delete_opts(q: &Query) -> ApiResult<DeleteOpts> {
    Ok(DeleteOpts {
        grace_period: q.int("gracePeriodSeconds")?,
        propagation: q.get("propagationPolicy").map(String::from),
        precondition_uid: None,
        precondition_rv: None,
        dry_run: q.get("dryRun") == Some("All"),
    })
}

fn list_response(
    res: &ResourceInfo,
    items: &[Arc<Cached>],
    meta: Value,
    format: Format,
    q: &Query,
) -> ApiResult<Response> {
    match format {
        Format::Table => {
            let include = IncludeObject::parse(q.get("includeObject"))?;
            let items: Vec<Value> = items.iter().map(|i| i.object()).collect();
            Ok(json_response(
                200,
                &to_table(
                    res.group,
                    res.plural,
                    &items,
                    meta,
                    include,
                    jiff::Timestamp::now(),
                ),
                &[],
            ))
        }
        Format::PartialMetadata => {
            let items: Vec<Value> = items.iter().map(|i| partial(&i.object())).collect();
            let list = json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "items": items});
            Ok(json_response(200, &list, &[]))
        }
        Format::Json => {
            // Written piecewise from the items' encoded JSON, shared with the cache.
            let mut out = Vec::with_capacity(128 + items.len() * 512);
            out.extend_from_slice(
                format!(
                    "{{\"kind\":\"{}\",\"apiVersion\":\"{}\",\"metadata\":",
                    res.list_kind(),
                    res.api_version()
                )
                .as_bytes(),
            );
            let _ = serde_json::to_writer(&mut out, &meta);
            out.extend_from_slice(b",\"items\":[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&item.json);
            }
            out.extend_from_slice(b"]}");
            let mut resp = Response::new(Body::from(out));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok(resp)
        }
    }
}

/// A watch: a chunked stream of `{"type","object"}` lines from the watch cache.
async fn watch_response(
    app: &Arc<App>,
    res: &'static ResourceInfo,
    ns: Option<String>,
    name: Option<String>,
    q: &Query,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    // `kubectl get -w` asks for Tables: then each event carries a one-row Table.
    let table = match negotiate(headers)? {
        Format::Table => Some(IncludeObject::parse(q.get("includeObject"))?),
        _ => None,
    };
    let group = res.group;
    let filter = build_filter(
        res,
        q.get("labelSelector").unwrap_or(""),
        q.get("fieldSelector").unwrap_or(""),
        name,
    )?;
    let bookmarks = q.flag("allowWatchBookmarks");
    let send_initial = q.flag("sendInitialEvents");
    let timeout = match q.int("timeoutSeconds")? {
        Some(t) if t > 0 => Duration::from_secs(t as u64),
        _ => Duration::from_secs(1800 + rand::random::<u64>() % 1800),
    };
    let kind = res.kind;
    let api_version = res.api_version();
    let sub = match open_watch(
        app,
        res,
        ns,
        filter,
        q.get("resourceVersion").unwrap_or(""),
        send_initial,
        bookmarks,
    )
    .await
    {
        Ok(s) => s,
        Err(e) if e.code == 410 => {
            // Kubernetes reports an expired watch as an ERROR event, not an HTTP error.
            let line = watch_line("ERROR", &e.status());
            return Ok(stream_response(
                futures::stream::once(async move { line }).boxed(),
            ));
        }
        Err(e) => return Err(e),
    };
    let metrics = app.metrics.clone();
    metrics.watch_started(res.plural);
    let plural = res.plural;
    let initial = sub.initial.len();
    let start_rev = sub.start_rev;
    let guard = crate::metrics::WatchGuard::new(metrics, plural);
    let items = sub.into_stream(timeout).enumerate();
    let stream = async_stream::stream! {
        let _guard = guard;
        let mut last = start_rev;
        if initial == 0 && send_initial && bookmarks {
            yield initial_events_end(&api_version, kind, start_rev);
        }
        futures::pin_mut!(items);
        while let Some((i, item)) = items.next().await {
            last = last.max(item.rev());
            yield encode_item(&item, &api_version, kind, table.map(|t| (group, plural, t)));
            if i + 1 == initial && send_initial && bookmarks {
                yield initial_events_end(&api_version, kind, last);
            }
        }
    };
    Ok(stream_response(stream.boxed()))
}

/// The bookmark that ends the initial events of a `sendInitialEvents` watch.
fn initial_events_end(api_version: &str, kind: &str, rev: i64) -> Bytes {
    let mut b = bookmark_object(api_version, kind, rev);
    b["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    watch_line("BOOKMARK", &b)
}

/// One watch event line; as a one-row Table when `table` says so.
fn encode_item(
    item: &WatchItem,
    api_version: &str,
    kind: &str,
    table: Option<(&str, &str, IncludeObject)>,
) -> Bytes {
    match item {
        WatchItem::Event { kind: k, event } if *k == event.kind && table.is_none() => {
            event.json_line()
        }
        WatchItem::Event { kind: k, event } => {
            let obj = if *k == EventKind::Deleted && *k != event.kind {
                event.prev.clone().unwrap_or_else(|| event.object.clone())
            } else {
                event.object.clone()
            };
            let mut obj = obj.object();
            crate::objects::set_resource_version(&mut obj, event.rev);
            match table {
                Some((group, plural, include)) => {
                    let meta = json!({"resourceVersion": event.rev.to_string()});
                    let t = to_table(
                        group,
                        plural,
                        std::slice::from_ref(&obj),
                        meta,
                        include,
                        jiff::Timestamp::now(),
                    );
                    watch_line(k.as_str(), &t)
                }
                None => watch_line(k.as_str(), &obj),
            }
        }
        WatchItem::Bookmark(r) => watch_line("BOOKMARK", &bookmark_object(api_version, kind, *r)),
    }
}

fn stream_response(stream: futures::stream::BoxStream<'static, Bytes>) -> Response {
    let body = Body::from_stream(stream.map(Ok::<_, std::convert::Infallible>));
    let mut resp = body.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = parse_target("/api/v1/namespaces/default/pods/web/status").unwrap();
        match t {
            Target::Object {
                res,
                ns,
                name,
                sub,
                watch,
            } => {
                assert_eq!(
                    (
                        res.plural,
                        ns.as_str(),
                        name.as_str(),
                        sub.as_deref(),
                        watch
                    ),
                    ("pods", "default", "web", Some("status"), false)
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_target("/api/v1/pods"),
            Some(Target::Collection { ns: None, .. })
        ));
        assert!(
            matches!(parse_target("/api/v1/namespaces/kube-system"), Some(Target::Object { ref name, .. }) if name == "kube-system")
        );
        assert!(
            matches!(parse_target("/api/v1/namespaces/x/finalize"), Some(Target::Object { sub: Some(ref s), .. }) if s == "finalize")
        );
        assert!(
            matches!(parse_target("/apis/apps/v1/namespaces/d/deployments"), Some(Target::Collection { ns: Some(ref n), .. }) if n == "d")
        );
        assert!(matches!(
            parse_target("/api/v1/watch/namespaces/d/pods"),
            Some(Target::Collection { watch: true, .. })
        ));
        assert!(parse_target("/api/v1/bogus").is_none());
        assert!(parse_target("/api/v1/namespaces/d/pods/p/bogus").is_none());
        assert!(parse_target("/apis/apps/v2/deployments").is_none());
    }

    #[test]
    fn query_and_accept() {
        let q = Query::parse(Some(
            "labelSelector=app%3Dweb%2Ctier+in+(a)&limit=5&watch=true",
        ));
        assert_eq!(q.get("labelSelector"), Some("app=web,tier in (a)"));
        assert_eq!(q.int("limit").unwrap(), Some(5));
        assert!(q.flag("watch"));
        assert_eq!(
            Query::parse(Some("limit=x")).int("limit").unwrap_err().code,
            400
        );
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"));
        assert_eq!(negotiate(&h).unwrap(), Format::Table);
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/vnd.kubernetes.protobuf"),
        );
        assert_eq!(negotiate(&h).unwrap_err().code, 406);
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/vnd.kubernetes.protobuf, */*"),
        );
        assert_eq!(negotiate(&h).unwrap(), Format::Json);
    }

    #[test]
    fn request_bodies_by_content_type() {
        let mut h = HeaderMap::new();
        let json = Bytes::from_static(br#"{"kind":"Namespace","metadata":{"name":"a"}}"#);
        assert_eq!(request_body(&h, &json).unwrap()["metadata"]["name"], "a");
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert_eq!(request_body(&h, &json).unwrap()["kind"], "Namespace");
        assert_eq!(
            request_body(&h, &Bytes::from_static(b"{"))
                .unwrap_err()
                .code,
            400
        );

        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/vnd.kubernetes.protobuf"),
        );
        let pb = Bytes::from_static(include_bytes!("../tests/fixtures/kubectl/namespace.pb"));
        let ns = request_body(&h, &pb).unwrap();
        assert_eq!(
            (&ns["apiVersion"], &ns["kind"], &ns["metadata"]["name"]),
            (&json!("v1"), &json!("Namespace"), &json!("team-a"))
        );
        let e = request_body(&h, &json).unwrap_err();
        assert_eq!((e.code, e.reason), (400, "BadRequest"), "{e:?}");

        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/cbor"),
        );
        let e = request_body(&h, &json).unwrap_err();
        assert_eq!((e.code, e.reason), (415, "UnsupportedMediaType"));
        assert!(
            e.message.contains(
                "accepted media types include: application/json, application/vnd.kubernetes.protobuf (got \"application/cbor\")"
            ),
            "{}",
            e.message
        );
    }
}
