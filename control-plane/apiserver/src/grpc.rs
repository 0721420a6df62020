//! `skiff.v1`: the control plane's gRPC API. The same registry and watch cache as the
//! REST API behind it, so both speak for the same objects with the same rules.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use serde_json::Value;
use skiff_proto::api::api_server::{Api, ApiServer};
use skiff_proto::api::watch_event::Type as EvType;
use skiff_proto::api::{
    CreateRequest, DeleteRequest, DeleteResponse, GetRequest, ListRequest, ListResponse, Object,
    PatchRequest, PatchType as PbPatchType, Resource, UpdateRequest, WatchEvent, WatchRequest,
};
use tonic::{Code, Request, Response, Status};

use crate::cache::{EventKind, WatchItem};
use crate::error::ApiError;
use crate::objects::{meta_str, Cached};
use crate::patch::PatchType;
use crate::registry::{DeleteOpts, FieldValidation, ListOpts, Part, WriteOpts};
use crate::resources::{self, ResourceInfo};
use crate::rest::{build_filter, open_watch};
use crate::server::App;

/// The gRPC service.
pub fn service(app: Arc<App>) -> ApiServer<GrpcApi> {
    ApiServer::new(GrpcApi { app }).max_decoding_message_size(crate::rest::MAX_BODY)
}

/// Implements `skiff.v1.Api`.
pub struct GrpcApi {
    app: Arc<App>,
}

/// An API error as a gRPC status; the message is the Kubernetes Status's, the details
/// carry the Status JSON.
pub fn to_status(e: ApiError) -> Status {
    let code = match (e.code, e.reason) {
        (404, _) => Code::NotFound,
        (409, "AlreadyExists") => Code::AlreadyExists,
        (409, _) => Code::Aborted,
        (400, _) | (422, _) | (415, _) | (413, _) => Code::InvalidArgument,
        (410, _) => Code::OutOfRange,
        (403, _) => Code::PermissionDenied,
        (405, _) | (406, _) => Code::Unimplemented,
        (503, _) => Code::Unavailable,
        (504, _) => Code::DeadlineExceeded,
        _ => Code::Internal,
    };
    let details = serde_json::to_vec(&e.status()).unwrap_or_default();
    Status::with_details(code, e.message.clone(), details.into())
}

fn resource(r: Option<Resource>) -> Result<&'static ResourceInfo, Status> {
    let r = r.ok_or_else(|| Status::invalid_argument("resource is required"))?;
    let version = if r.version.is_empty() {
        "v1"
    } else {
        r.version.as_str()
    };
    resources::lookup(&r.group, version, &r.resource).ok_or_else(|| {
        Status::not_found(format!(
            "the server does not serve resource {:?} in group {:?} version {version:?}",
            r.resource, r.group
        ))
    })
}

/// The envelope of an object: names from `v` (the object or its cached view), the JSON
/// as given.
fn envelope_of(v: &Value, resource_version: String, json: Vec<u8>) -> Object {
    Object {
        api_version: v["apiVersion"].as_str().unwrap_or("").to_string(),
        kind: v["kind"].as_str().unwrap_or("").to_string(),
        namespace: meta_str(v, "namespace").to_string(),
        name: meta_str(v, "name").to_string(),
        resource_version,
        json,
    }
}

fn envelope(v: &Value) -> Object {
    let rv = meta_str(v, "resourceVersion").to_string();
    envelope_of(v, rv, serde_json::to_vec(v).unwrap_or_default())
}

/// The envelope of a cached object, its JSON as is.
fn envelope_cached(c: &Cached) -> Object {
    envelope_of(&c.view, c.rev.to_string(), c.json.to_vec())
}

fn body(json: &[u8]) -> Result<Value, Status> {
    serde_json::from_slice(json)
        .map_err(|e| Status::invalid_argument(format!("the object is not valid JSON: {e}")))
}

fn wopts(dry_run: bool, fv: &str) -> Result<WriteOpts, Status> {
    let validation = if fv.is_empty() {
        FieldValidation::Strict
    } else {
        FieldValidation::parse(Some(fv)).map_err(to_status)?
    };
    Ok(WriteOpts {
        dry_run,
        validation,
    })
}

fn part(sub: &str) -> Result<Part, Status> {
    match sub {
        "" => Ok(Part::Main),
        "status" => Ok(Part::Status),
        "scale" => Ok(Part::Scale),
        other => Err(Status::invalid_argument(format!(
            "unknown subresource {other:?}"
        ))),
    }
}

fn check_ns(res: &ResourceInfo, ns: &str, needed: bool) -> Result<(), Status> {
    if res.namespaced && needed && ns.is_empty() {
        return Err(Status::invalid_argument(format!(
            "{} are namespaced: give a namespace",
            res.plural
        )));
    }
    if !res.namespaced && !ns.is_empty() {
        return Err(Status::invalid_argument(format!(
            "{} are not namespaced",
            res.plural
        )));
    }
    Ok(())
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Api for GrpcApi {
    async fn get(&self, req: Request<GetRequest>) -> Result<Response<Object>, Status> {
        let r = req.into_inner();
        let res = resource(r.resource)?;
        check_ns(res, &r.namespace, true)?;
        let reg = &self.app.registry;
        let obj = if r.resource_version == "0" {
            match reg.get_cached(res, &r.namespace, &r.name) {
                Some(o) => o,
                None => reg
                    .get(res, &r.namespace, &r.name)
                    .await
                    .map_err(to_status)?,
            }
        } else {
            reg.get(res, &r.namespace, &r.name)
                .await
                .map_err(to_status)?
        };
        Ok(Response::new(envelope(&obj)))
    }

    async fn list(&self, req: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let r = req.into_inner();
        let res = resource(r.resource)?;
        check_ns(res, &r.namespace, false)?;
        let filter =
            build_filter(res, &r.label_selector, &r.field_selector, None).map_err(to_status)?;
        let opts = ListOpts {
            resource_version: r.resource_version,
            exact: false,
            limit: r.limit.max(0),
            continue_token: r.continue_token,
        };
        let ns = (!r.namespace.is_empty()).then_some(r.namespace.as_str());
        let page = self
            .app
            .registry
            .list(res, ns, filter, &opts)
            .await
            .map_err(to_status)?;
        Ok(Response::new(ListResponse {
            items: page.items.iter().map(|i| envelope_cached(i)).collect(),
            resource_version: page.resource_version.to_string(),
            continue_token: page.continue_token.unwrap_or_default(),
        }))
    }

    async fn create(&self, req: Request<CreateRequest>) -> Result<Response<Object>, Status> {
        let r = req.into_inner();
        let res = resource(r.resource)?;
        check_ns(res, &r.namespace, true)?;
        let out = self
            .app
            .registry
            .create(
                res,
                &r.namespace,
                body(&r.json)?,
                wopts(r.dry_run, &r.field_validation)?,
            )
            .await
            .map_err(to_status)?;
        Ok(Response::new(envelope(&out.object)))
    }

    async fn update(&self, req: Request<UpdateRequest>) -> Result<Response<Object>, Status> {
        let r = req.into_inner();
        let res = resource(r.resource)?;
        check_ns(res, &r.namespace, true)?;
        let out = self
            .app
            .registry
            .update(
                res,
                &r.namespace,
                &r.name,
                part(&r.subresource)?,
                body(&r.json)?,
                wopts(r.dry_run, &r.field_validation)?,
            )
            .await
            .map_err(to_status)?;
        Ok(Response::new(envelope(&out.object)))
    }

    async fn patch(&self, req: Request<PatchRequest>) -> Result<Response<Object>, Status> {
        let r = req.into_inner();
        let res = resource(r.resource)?;
        check_ns(res, &r.namespace, true)?;
        let pt = match PbPatchType::try_from(r.r#type).unwrap_or(PbPatchType::Unspecified) {
            PbPatchType::Merge => PatchType::Merge,
            PbPatchType::Json => PatchType::Json,
            PbPatchType::Strategic => PatchType::StrategicMerge,
            PbPatchType::Unspecified => {
                return Err(Status::invalid_argument("patch type is required"))
            }
        };
        let out = self
            .app
            .registry
            .patch(
                res,
                &r.namespace,
                &r.name,
                part(&r.subresource)?,
                pt,
                &r.patch,
                wopts(r.dry_run, &r.field_validation)?,
            )
            .await
            .map_err(to_status)?;
        Ok(Response::new(envelope(&out.object)))
    }

    async fn delete(
        &self,
        req: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let r = req.into_inner();
        let res = resource(r.resource)?;
        check_ns(res, &r.namespace, true)?;
        let opts = DeleteOpts {
            grace_period: r.grace_period_seconds,
            propagation: (!r.propagation_policy.is_empty()).then_some(r.propagation_policy),
            precondition_uid: (!r.precondition_uid.is_empty()).then_some(r.precondition_uid),
            precondition_rv: (!r.precondition_resource_version.is_empty())
                .then_some(r.precondition_resource_version),
            dry_run: r.dry_run,
        };
        let d = self
            .app
            .registry
            .delete(res, &r.namespace, &r.name, &opts)
            .await
            .map_err(to_status)?;
        Ok(Response::new(DeleteResponse {
            object: Some(envelope(&d.object)),
            gone: d.gone,
        }))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, req: Request<WatchRequest>) -> Result<Response<WatchStream>, Status> {
        let r = req.into_inner();
        let res = resource(r.resource)?;
        check_ns(res, &r.namespace, false)?;
        let name = (!r.name.is_empty()).then_some(r.name);
        let filter =
            build_filter(res, &r.label_selector, &r.field_selector, name).map_err(to_status)?;
        let ns = (!r.namespace.is_empty()).then_some(r.namespace);
        let timeout = if r.timeout_seconds > 0 {
            Duration::from_secs(r.timeout_seconds as u64)
        } else {
            Duration::from_secs(1800 + rand::random::<u64>() % 1800)
        };
        let sub = match open_watch(
            &self.app,
            res,
            ns,
            filter,
            &r.resource_version,
            false,
            r.bookmarks,
        )
        .await
        {
            Ok(s) => s,
            Err(e) if e.code == 410 => {
                let ev = WatchEvent {
                    r#type: EvType::Expired as i32,
                    object: None,
                    resource_version: r.resource_version,
                };
                let s: WatchStream = Box::pin(futures::stream::once(async move { Ok(ev) }));
                return Ok(Response::new(s));
            }
            Err(e) => return Err(to_status(e)),
        };
        let metrics = self.app.metrics.clone();
        metrics.watch_started(res.plural);
        let plural = res.plural;
        let guard = crate::metrics::WatchGuard::new(metrics, plural);
        let stream = sub.into_stream(timeout).map(move |item| {
            // The guard lives as long as the stream: it counts the watch as open.
            let _ = &guard;
            Ok::<_, Status>(to_event(&item))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

fn to_event(item: &WatchItem) -> WatchEvent {
    match item {
        WatchItem::Bookmark(r) => WatchEvent {
            r#type: EvType::Bookmark as i32,
            object: None,
            resource_version: r.to_string(),
        },
        WatchItem::Event { kind, event } => {
            let t = match kind {
                EventKind::Added => EvType::Added,
                EventKind::Modified => EvType::Modified,
                EventKind::Deleted => EvType::Deleted,
            };
            let mut obj = envelope_cached(&event.object);
            obj.resource_version = event.rev.to_string();
            WatchEvent {
                r#type: t as i32,
                object: Some(obj),
                resource_version: event.rev.to_string(),
            }
        }
    }
}
