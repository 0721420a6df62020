//! A container's environment and mounts, resolved from the pod spec: env values and
//! references (ConfigMap, Secret, pod fields), envFrom, and volumes (emptyDir,
//! hostPath, configMap, secret, downwardAPI, projected) materialised under the pod's
//! directory, plus the pod's /etc/hosts and /etc/resolv.conf.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Volume};
use kube::{Api, Client};

use crate::runtime::bundle::MountSpec;
use crate::runtime::StartError;

fn config_error(msg: impl std::fmt::Display) -> StartError {
    StartError::new("CreateContainerConfigError", msg)
}

async fn config_map(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, String>>, StartError> {
    match Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
    {
        Ok(cm) => Ok(cm.map(|cm| cm.data.unwrap_or_default())),
        Err(e) => Err(config_error(format!("reading configmap {name:?}: {e}"))),
    }
}

async fn secret(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, StartError> {
    match Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
    {
        Ok(s) => Ok(s.map(|s| {
            let mut m: BTreeMap<String, Vec<u8>> = s
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            for (k, v) in s.string_data.unwrap_or_default() {
                m.insert(k, v.into_bytes());
            }
            m
        })),
        Err(e) => Err(config_error(format!("reading secret {name:?}: {e}"))),
    }
}

/// A downward-API field of the pod (`metadata.name`, `metadata.labels['x']`, …).
pub fn pod_field(pod: &Pod, path: &str, pod_ip: Option<Ipv4Addr>, host_ip: &str) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let map_key = |prefix: &str, map: Option<&BTreeMap<String, String>>| {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    Some(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        "status.podIP" | "status.podIPs" => pod_ip.map(|i| i.to_string()).unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => host_ip.to_owned(),
        p if p.starts_with("metadata.labels['") => {
            return map_key("metadata.labels['", meta.labels.as_ref())
        }
        p if p.starts_with("metadata.annotations['") => {
            return map_key("metadata.annotations['", meta.annotations.as_ref())
        }
        "metadata.labels" => render_map(meta.labels.as_ref()),
        "metadata.annotations" => render_map(meta.annotations.as_ref()),
        _ => return None,
    })
}

fn render_map(m: Option<&BTreeMap<String, String>>) -> String {
    m.map(|m| {
        m.iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    })
    .unwrap_or_default()
}

/// The container's own environment (envFrom first, then env, in order).
///
/// # Errors
/// `CreateContainerConfigError` for a missing non-optional ConfigMap/Secret/key.
pub async fn resolve_env(
    client: &Client,
    pod: &Pod,
    c: &Container,
    pod_ip: Option<Ipv4Addr>,
    host_ip: &str,
) -> Result<Vec<(String, String)>, StartError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut out: Vec<(String, String)> = Vec::new();
    let set = |out: &mut Vec<(String, String)>, k: String, v: String| {
        if let Some(e) = out.iter_mut().find(|(ek, _)| *ek == k) {
            e.1 = v;
        } else {
            out.push((k, v));
        }
    };
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match config_map(client, ns, &r.name).await? {
                Some(data) => {
                    for (k, v) in data {
                        set(&mut out, format!("{prefix}{k}"), v);
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(config_error(format!("configmap {:?} not found", r.name))),
            }
        }
        if let Some(r) = &from.secret_ref {
            match secret(client, ns, &r.name).await? {
                Some(data) => {
                    for (k, v) in data {
                        set(
                            &mut out,
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(&v).into(),
                        );
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(config_error(format!("secret {:?} not found", r.name))),
            }
        }
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(from) = &e.value_from {
            if let Some(r) = &from.config_map_key_ref {
                let optional = r.optional == Some(true);
                match config_map(client, ns, &r.name).await? {
                    Some(data) => match data.get(&r.key) {
                        Some(v) => v.clone(),
                        None if optional => continue,
                        None => {
                            return Err(config_error(format!(
                                "couldn't find key {} in ConfigMap {ns}/{}",
                                r.key, r.name
                            )))
                        }
                    },
                    None if optional => continue,
                    None => return Err(config_error(format!("configmap {:?} not found", r.name))),
                }
            } else if let Some(r) = &from.secret_key_ref {
                let optional = r.optional == Some(true);
                match secret(client, ns, &r.name).await? {
                    Some(data) => match data.get(&r.key) {
                        Some(v) => String::from_utf8_lossy(v).into_owned(),
                        None if optional => continue,
                        None => {
                            return Err(config_error(format!(
                                "couldn't find key {} in Secret {ns}/{}",
                                r.key, r.name
                            )))
                        }
                    },
                    None if optional => continue,
                    None => return Err(config_error(format!("secret {:?} not found", r.name))),
                }
            } else if let Some(f) = &from.field_ref {
                pod_field(pod, &f.field_path, pod_ip, host_ip).ok_or_else(|| {
                    config_error(format!("unsupported fieldRef {:?}", f.field_path))
                })?
            } else if let Some(r) = &from.resource_field_ref {
                resource_field(c, &r.resource)
            } else {
                String::new()
            }
        } else {
            // $(VAR) references to earlier variables expand here, as in Kubernetes.
            crate::runtime::real::expand_vars(e.value.as_deref().unwrap_or(""), &out)
        };
        set(&mut out, e.name.clone(), value);
    }
    Ok(out)
}

fn resource_field(c: &Container, resource: &str) -> String {
    use skiff_controllers::scheduler::quantity::{parse_milli, parse_value};
    let (section, name) = resource.split_once('.').unwrap_or(("", resource));
    let r = c.resources.as_ref();
    let q = match section {
        "limits" => r.and_then(|r| r.limits.as_ref()),
        _ => r.and_then(|r| r.requests.as_ref()),
    }
    .and_then(|m| m.get(name));
    match (name, q) {
        // Rounded up to whole cores, like the kubelet's default divisor of 1.
        ("cpu", Some(q)) => {
            parse_milli(&q.0).map_or(String::new(), |m| ((m + 999) / 1000).to_string())
        }
        (_, Some(q)) => parse_value(&q.0).map_or(String::new(), |v| v.to_string()),
        _ => String::new(),
    }
}

fn write_file(path: &Path, data: &[u8], mode: Option<i32>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("skiff-tmp");
    std::fs::write(&tmp, data)?;
    std::fs::set_permissions(
        &tmp,
        std::fs::Permissions::from_mode(mode.unwrap_or(0o644) as u32),
    )?;
    std::fs::rename(&tmp, path)
}

/// Items of a ConfigMap/Secret into `dir` (all keys, or the listed ones with paths).
fn write_items(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<k8s_openapi::api::core::v1::KeyToPath>>,
    default_mode: Option<i32>,
    what: &str,
) -> Result<(), StartError> {
    let err = |e: std::io::Error| config_error(format!("writing {what}: {e}"));
    match items {
        Some(items) => {
            for i in items {
                let v = data.get(&i.key).ok_or_else(|| {
                    config_error(format!("couldn't find key {} in {what}", i.key))
                })?;
                if i.path.contains("..") || i.path.starts_with('/') {
                    return Err(config_error(format!("invalid item path {:?}", i.path)));
                }
                write_file(&dir.join(&i.path), v, i.mode.or(default_mode)).map_err(err)?;
            }
        }
        None => {
            for (k, v) in data {
                write_file(&dir.join(k), v, default_mode).map_err(err)?;
            }
        }
    }
    Ok(())
}

/// Materialises every volume of the pod under `<pod_dir>/volumes/<name>` (hostPath
/// and memory emptyDirs are mounted directly); name → (host path, tmpfs).
///
/// # Errors
/// `CreateContainerConfigError` for a missing ConfigMap/Secret or an unsupported
/// volume type.
pub async fn prepare_volumes(
    client: &Client,
    pod: &Pod,
    pod_dir: &Path,
    pod_ip: Option<Ipv4Addr>,
    host_ip: &str,
) -> Result<BTreeMap<String, (PathBuf, bool)>, StartError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut out = BTreeMap::new();
    let empty: Vec<Volume> = Vec::new();
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .unwrap_or(&empty);
    for v in volumes {
        let dir = pod_dir.join("volumes").join(&v.name);
        let io = |e: std::io::Error| config_error(format!("volume {:?}: {e}", v.name));
        if let Some(e) = &v.empty_dir {
            if e.medium.as_deref() == Some("Memory") {
                out.insert(v.name.clone(), (PathBuf::new(), true));
                continue;
            }
            std::fs::create_dir_all(&dir).map_err(io)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).map_err(io)?;
        } else if let Some(h) = &v.host_path {
            let path = PathBuf::from(&h.path);
            match h.type_.as_deref().unwrap_or("") {
                "DirectoryOrCreate" => std::fs::create_dir_all(&path).map_err(io)?,
                "FileOrCreate" if !path.exists() => {
                    write_file(&path, b"", Some(0o644)).map_err(io)?
                }
                "Directory" if !path.is_dir() => {
                    return Err(config_error(format!(
                        "hostPath type check failed: {} is not a directory",
                        h.path
                    )))
                }
                "File" if !path.is_file() => {
                    return Err(config_error(format!(
                        "hostPath type check failed: {} is not a file",
                        h.path
                    )))
                }
                _ => {}
            }
            out.insert(v.name.clone(), (path, false));
            continue;
        } else if let Some(c) = &v.config_map {
            std::fs::create_dir_all(&dir).map_err(io)?;
            match config_map(client, ns, &c.name).await? {
                Some(data) => {
                    let data = data.into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
                    write_items(
                        &dir,
                        &data,
                        c.items.as_ref(),
                        c.default_mode,
                        &format!("ConfigMap {ns}/{}", c.name),
                    )?;
                }
                None if c.optional == Some(true) => {}
                None => return Err(config_error(format!("configmap {:?} not found", c.name))),
            }
        } else if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            std::fs::create_dir_all(&dir).map_err(io)?;
            match secret(client, ns, &name).await? {
                Some(data) => write_items(
                    &dir,
                    &data,
                    s.items.as_ref(),
                    s.default_mode,
                    &format!("Secret {ns}/{name}"),
                )?,
                None if s.optional == Some(true) => {}
                None => return Err(config_error(format!("secret {name:?} not found"))),
            }
        } else if let Some(d) = &v.downward_api {
            std::fs::create_dir_all(&dir).map_err(io)?;
            for i in d.items.iter().flatten() {
                if let Some(f) = &i.field_ref {
                    let value = pod_field(pod, &f.field_path, pod_ip, host_ip).unwrap_or_default();
                    write_file(
                        &dir.join(&i.path),
                        value.as_bytes(),
                        i.mode.or(d.default_mode),
                    )
                    .map_err(io)?;
                }
            }
        } else if let Some(p) = &v.projected {
            std::fs::create_dir_all(&dir).map_err(io)?;
            for src in p.sources.iter().flatten() {
                if let Some(c) = &src.config_map {
                    if let Some(data) = config_map(client, ns, &c.name).await? {
                        let data = data.into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
                        write_items(
                            &dir,
                            &data,
                            c.items.as_ref(),
                            p.default_mode,
                            &format!("ConfigMap {ns}/{}", c.name),
                        )?;
                    } else if c.optional != Some(true) {
                        return Err(config_error(format!("configmap {:?} not found", c.name)));
                    }
                }
                if let Some(s) = &src.secret {
                    if let Some(data) = secret(client, ns, &s.name).await? {
                        write_items(
                            &dir,
                            &data,
                            s.items.as_ref(),
                            p.default_mode,
                            &format!("Secret {ns}/{}", s.name),
                        )?;
                    } else if s.optional != Some(true) {
                        return Err(config_error(format!("secret {:?} not found", s.name)));
                    }
                }
                if let Some(d) = &src.downward_api {
                    for i in d.items.iter().flatten() {
                        if let Some(f) = &i.field_ref {
                            let value =
                                pod_field(pod, &f.field_path, pod_ip, host_ip).unwrap_or_default();
                            write_file(
                                &dir.join(&i.path),
                                value.as_bytes(),
                                i.mode.or(p.default_mode),
                            )
                            .map_err(io)?;
                        }
                    }
                }
                // serviceAccountToken sources need a token issuer, which Skiff's API
                // server does not have yet; the directory exists without a token.
            }
        } else {
            return Err(config_error(format!(
                "volume {:?}: this volume type is not supported by the skiff agent",
                v.name
            )));
        }
        out.insert(v.name.clone(), (dir, false));
    }
    Ok(out)
}

/// The pod's /etc/hosts (localhost, and the pod's own name on its IP), /etc/hostname and
/// a copy of the node's resolv.conf, written into `pod_dir`.
///
/// # Errors
/// On I/O errors.
pub fn write_etc(pod_dir: &Path, hostname: &str, ip: Ipv4Addr) -> std::io::Result<()> {
    let hosts = format!(
        "# Kubernetes-managed hosts file (skiff).\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{ip}\t{hostname}\n"
    );
    write_file(&pod_dir.join("etc-hosts"), hosts.as_bytes(), Some(0o644))?;
    write_file(
        &pod_dir.join("hostname"),
        format!("{hostname}\n").as_bytes(),
        Some(0o644),
    )?;
    let resolv = std::fs::read("/etc/resolv.conf").unwrap_or_default();
    write_file(&pod_dir.join("resolv.conf"), &resolv, Some(0o644))
}

/// A container's mounts: its volumeMounts (subPath, readOnly) and /etc/hosts,
/// /etc/resolv.conf unless it mounts those itself.
///
/// # Errors
/// `CreateContainerConfigError` for a mount of an unknown volume or a bad subPath.
pub fn mounts(
    c: &Container,
    volumes: &BTreeMap<String, (PathBuf, bool)>,
    pod_dir: &Path,
) -> Result<Vec<MountSpec>, StartError> {
    let mut out = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let (source, tmpfs) = volumes.get(&m.name).ok_or_else(|| {
            config_error(format!(
                "unable to find volume {:?} for mount {}",
                m.name, m.mount_path
            ))
        })?;
        let mut source = source.clone();
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            if sub.starts_with('/') || sub.split('/').any(|p| p == "..") {
                return Err(config_error(format!("invalid subPath {sub:?}")));
            }
            source = source.join(sub);
            if !source.exists() {
                std::fs::create_dir_all(&source)
                    .map_err(|e| config_error(format!("subPath {sub:?}: {e}")))?;
            }
        }
        out.push(MountSpec {
            source,
            destination: m.mount_path.clone(),
            read_only: m.read_only == Some(true),
            tmpfs: *tmpfs,
        });
    }
    for (file, dest) in [
        ("etc-hosts", "/etc/hosts"),
        ("hostname", "/etc/hostname"),
        ("resolv.conf", "/etc/resolv.conf"),
    ] {
        if !out.iter().any(|m| m.destination == dest) && pod_dir.join(file).exists() {
            out.push(MountSpec {
                source: pod_dir.join(file),
                destination: dest.into(),
                read_only: false,
                tmpfs: false,
            });
        }
    }
    Ok(out)
}
