//! `skiff get|watch|apply|delete`: a small client of the `skiff.v1` gRPC API.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde_json::Value;
use skiff_apiserver::resources::{ResourceInfo, RESOURCES};
use skiff_proto::api::api_client::ApiClient;
use skiff_proto::api::watch_event::Type as EvType;
use skiff_proto::api::{
    CreateRequest, DeleteRequest, GetRequest, ListRequest, Resource, UpdateRequest, WatchRequest,
};
use tonic::transport::Channel;

/// Where the API server is, and which namespace.
#[derive(Debug, Args)]
pub struct Target {
    /// The API server (its gRPC API shares the Kubernetes API's port).
    #[arg(
        long,
        env = "SKIFF_SERVER",
        default_value = "http://127.0.0.1:6443",
        global = true
    )]
    pub server: String,
    /// Namespace of namespaced resources.
    #[arg(
        short,
        long,
        env = "SKIFF_NAMESPACE",
        default_value = "default",
        global = true
    )]
    pub namespace: String,
}

/// Output format.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Output {
    /// One line per object or event.
    Text,
    /// The objects as JSON (one per line for watch).
    Json,
}

/// `skiff get <resource> [name]`.
#[derive(Debug, Args)]
pub struct GetCmd {
    /// Resource: plural, singular, short name or kind (pods, pod, po, Pod).
    pub resource: String,
    /// One object's name; all when absent.
    pub name: Option<String>,
    /// All namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Label selector.
    #[arg(short = 'l', long, default_value = "")]
    pub selector: String,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(flatten)]
    pub target: Target,
}

/// `skiff watch <resource>`.
#[derive(Debug, Args)]
pub struct WatchCmd {
    /// Resource: plural, singular, short name or kind.
    pub resource: String,
    /// Only this object.
    pub name: Option<String>,
    /// All namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Label selector.
    #[arg(short = 'l', long, default_value = "")]
    pub selector: String,
    /// Resume after this resourceVersion (default: current state, then changes).
    #[arg(long, default_value = "")]
    pub resource_version: String,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(flatten)]
    pub target: Target,
}

/// `skiff apply -f <file>`.
#[derive(Debug, Args)]
pub struct ApplyCmd {
    /// A JSON or YAML file (YAML may hold several documents); `-` reads stdin.
    #[arg(short = 'f', long)]
    pub file: PathBuf,
    #[command(flatten)]
    pub target: Target,
}

/// `skiff delete <resource> <name>`.
#[derive(Debug, Args)]
pub struct DeleteCmd {
    /// Resource: plural, singular, short name or kind.
    pub resource: String,
    /// The object's name.
    pub name: String,
    #[command(flatten)]
    pub target: Target,
}

/// The resource a user's word names.
pub fn resolve(word: &str) -> Result<&'static ResourceInfo> {
    let w = word.to_ascii_lowercase();
    let (name, group) = match w.split_once('.') {
        Some((n, g)) => (n.to_string(), Some(g.to_string())),
        None => (w.clone(), None),
    };
    RESOURCES
        .iter()
        .find(|r| {
            (r.plural == name
                || r.singular == name
                || r.kind.eq_ignore_ascii_case(&name)
                || r.short_names.contains(&name.as_str()))
                && group.as_deref().is_none_or(|g| r.group == g)
        })
        .with_context(|| format!("the server doesn't have a resource type {word:?}"))
}

fn pb(r: &ResourceInfo) -> Option<Resource> {
    Some(Resource {
        group: r.group.into(),
        version: r.version.into(),
        resource: r.plural.into(),
    })
}

async fn connect(server: &str) -> Result<ApiClient<Channel>> {
    let ch = tonic::transport::Endpoint::from_shared(server.to_string())
        .with_context(|| format!("bad server URL {server:?}"))?
        .connect()
        .await
        .with_context(|| format!("connecting to {server}"))?;
    Ok(ApiClient::new(ch).max_decoding_message_size(64 << 20))
}

fn ns_for(r: &ResourceInfo, t: &Target, all: bool) -> String {
    if r.namespaced && !all {
        t.namespace.clone()
    } else {
        String::new()
    }
}

fn status_err(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("Error from server ({:?}): {}", s.code(), s.message())
}

fn line(ns: &str, name: &str, rv: &str) -> String {
    if ns.is_empty() {
        format!("{name}\t{rv}")
    } else {
        format!("{ns}/{name}\t{rv}")
    }
}

/// Runs `skiff get`.
pub async fn get(cmd: GetCmd) -> Result<()> {
    let r = resolve(&cmd.resource)?;
    let mut c = connect(&cmd.target.server).await?;
    let ns = ns_for(r, &cmd.target, cmd.all_namespaces);
    let items = match &cmd.name {
        Some(name) => vec![c
            .get(GetRequest {
                resource: pb(r),
                namespace: ns,
                name: name.clone(),
                resource_version: String::new(),
            })
            .await
            .map_err(status_err)?
            .into_inner()],
        None => {
            let req = ListRequest {
                resource: pb(r),
                namespace: ns,
                label_selector: cmd.selector.clone(),
                ..Default::default()
            };
            c.list(req).await.map_err(status_err)?.into_inner().items
        }
    };
    if cmd.output == Output::Text && !items.is_empty() {
        println!("NAME\tRESOURCE-VERSION");
    }
    for o in items {
        match cmd.output {
            Output::Json => println!("{}", String::from_utf8_lossy(&o.json)),
            Output::Text => println!("{}", line(&o.namespace, &o.name, &o.resource_version)),
        }
    }
    Ok(())
}

/// Runs `skiff watch`: prints events until interrupted or the server ends the stream.
pub async fn watch(cmd: WatchCmd) -> Result<()> {
    let r = resolve(&cmd.resource)?;
    let mut c = connect(&cmd.target.server).await?;
    let req = WatchRequest {
        resource: pb(r),
        namespace: ns_for(r, &cmd.target, cmd.all_namespaces),
        name: cmd.name.clone().unwrap_or_default(),
        label_selector: cmd.selector.clone(),
        resource_version: cmd.resource_version.clone(),
        ..Default::default()
    };
    let mut stream = c.watch(req).await.map_err(status_err)?.into_inner();
    while let Some(ev) = stream.message().await.map_err(status_err)? {
        let t = EvType::try_from(ev.r#type).unwrap_or(EvType::Unspecified);
        if t == EvType::Expired {
            bail!("resourceVersion {} is too old: list again and watch from the list's resourceVersion", ev.resource_version);
        }
        match (cmd.output, ev.object) {
            (Output::Json, Some(o)) => {
                println!(
                    "{{\"type\":\"{}\",\"object\":{}}}",
                    t.as_str_name(),
                    String::from_utf8_lossy(&o.json)
                );
            }
            (Output::Text, Some(o)) => println!(
                "{}\t{}",
                t.as_str_name(),
                line(&o.namespace, &o.name, &o.resource_version)
            ),
            (_, None) => println!("{}\t{}", t.as_str_name(), ev.resource_version),
        }
    }
    Ok(())
}

/// The objects in a JSON or YAML file (or stdin).
pub fn read_objects(path: &std::path::Path) -> Result<Vec<Value>> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading stdin")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    if let Ok(v) = serde_json::from_str::<Value>(&text) {
        return Ok(match v {
            Value::Object(ref m)
                if m.get("kind")
                    .and_then(Value::as_str)
                    .is_some_and(|k| k.ends_with("List")) =>
            {
                m.get("items")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            }
            other => vec![other],
        });
    }
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc)
            .with_context(|| format!("parsing {}", path.display()))?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// Runs `skiff apply`: creates each object, or replaces it if it exists.
pub async fn apply(cmd: ApplyCmd) -> Result<()> {
    let objects = read_objects(&cmd.file)?;
    let mut c = connect(&cmd.target.server).await?;
    for mut obj in objects {
        let kind = obj["kind"].as_str().unwrap_or("").to_string();
        let api_version = obj["apiVersion"].as_str().unwrap_or("").to_string();
        let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        let r = RESOURCES
            .iter()
            .find(|r| r.kind == kind && r.group == group)
            .with_context(|| format!("no resource for kind {kind:?} in {api_version:?}"))?;
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        let ns = if r.namespaced {
            obj["metadata"]["namespace"]
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| cmd.target.namespace.clone())
        } else {
            String::new()
        };
        let existing = c
            .get(GetRequest {
                resource: pb(r),
                namespace: ns.clone(),
                name: name.clone(),
                resource_version: String::new(),
            })
            .await;
        match existing {
            Err(s) if s.code() == tonic::Code::NotFound => {
                let json = serde_json::to_vec(&obj)?;
                c.create(CreateRequest {
                    resource: pb(r),
                    namespace: ns,
                    json,
                    ..Default::default()
                })
                .await
                .map_err(status_err)?;
                println!("{}/{name} created", r.qualified());
            }
            Err(s) => return Err(status_err(s)),
            Ok(cur) => {
                let cur = cur.into_inner();
                obj["metadata"]["resourceVersion"] = Value::String(cur.resource_version.clone());
                let json = serde_json::to_vec(&obj)?;
                let out = c
                    .update(UpdateRequest {
                        resource: pb(r),
                        namespace: ns,
                        name: name.clone(),
                        json,
                        ..Default::default()
                    })
                    .await
                    .map_err(status_err)?
                    .into_inner();
                let verb = if out.resource_version == cur.resource_version {
                    "unchanged"
                } else {
                    "replaced"
                };
                println!("{}/{name} {verb}", r.qualified());
            }
        }
    }
    Ok(())
}

/// Runs `skiff delete`.
pub async fn delete(cmd: DeleteCmd) -> Result<()> {
    let r = resolve(&cmd.resource)?;
    let mut c = connect(&cmd.target.server).await?;
    let ns = ns_for(r, &cmd.target, false);
    let d = c
        .delete(DeleteRequest {
            resource: pb(r),
            namespace: ns,
            name: cmd.name.clone(),
            ..Default::default()
        })
        .await
        .map_err(status_err)?
        .into_inner();
    println!(
        "{}/{} {}",
        r.qualified(),
        cmd.name,
        if d.gone {
            "deleted"
        } else {
            "marked for deletion"
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_words_like_kubectl() {
        assert_eq!(resolve("po").unwrap().plural, "pods");
        assert_eq!(resolve("Deployment").unwrap().plural, "deployments");
        assert_eq!(resolve("deploy").unwrap().group, "apps");
        assert_eq!(resolve("leases.coordination.k8s.io").unwrap().kind, "Lease");
        assert!(resolve("widgets").is_err());
    }

    #[test]
    fn reads_yaml_documents_and_json_lists() {
        let dir = tempfile::tempdir().unwrap();
        let y = dir.path().join("a.yaml");
        std::fs::write(&y, "kind: ConfigMap\napiVersion: v1\nmetadata: {name: a}\n---\nkind: Namespace\napiVersion: v1\nmetadata: {name: b}\n").unwrap();
        let objs = read_objects(&y).unwrap();
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[1]["metadata"]["name"], "b");
        let j = dir.path().join("a.json");
        std::fs::write(&j, r#"{"kind":"List","items":[{"kind":"ConfigMap"}]}"#).unwrap();
        assert_eq!(read_objects(&j).unwrap().len(), 1);
    }
}
