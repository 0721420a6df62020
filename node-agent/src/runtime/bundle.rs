//! One container as an OCI runtime bundle: `config.json` (built with `oci-spec`) beside
//! the overlay rootfs, from a [`ContainerSpec`] the pod worker resolved from the pod
//! (image config, command, env, volumes, limits, security context).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use oci_spec::runtime::{
    Capabilities, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder,
    LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxPidsBuilder, LinuxResourcesBuilder, Mount, MountBuilder, ProcessBuilder, RootBuilder,
    Spec, UserBuilder,
};

/// A mount into the container.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MountSpec {
    /// Host path (bind) or ignored (tmpfs).
    pub source: PathBuf,
    /// Path inside the container.
    pub destination: String,
    /// Mounted read-only.
    pub read_only: bool,
    /// A memory-backed tmpfs instead of a bind mount (emptyDir medium Memory).
    pub tmpfs: bool,
}

/// Everything runc needs to run one container, resolved from the pod.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ContainerSpec {
    /// The runc container id (unique on the node).
    pub id: String,
    /// argv (image entrypoint/cmd overridden by command/args).
    pub args: Vec<String>,
    /// `K=V` environment.
    pub env: Vec<String>,
    /// Working directory ("/" if unset).
    pub cwd: String,
    /// uid, gid and supplementary groups.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// Supplementary gids (fsGroup, supplementalGroups).
    pub additional_gids: Vec<u32>,
    /// Hostname (the pod's name).
    pub hostname: String,
    /// The pod's network namespace (`/run/netns/…`), shared by its containers.
    pub netns: PathBuf,
    /// Volume mounts, /etc/hosts, /etc/resolv.conf, termination-log.
    pub mounts: Vec<MountSpec>,
    /// cpu.shares from the cpu request (millicores × 1024 / 1000, min 2).
    pub cpu_shares: Option<u64>,
    /// CFS quota in µs per 100 ms period from the cpu limit.
    pub cpu_quota: Option<i64>,
    /// Memory limit in bytes.
    pub memory_limit: Option<i64>,
    /// Root filesystem mounted read-only.
    pub read_only_rootfs: bool,
    /// no_new_privs for the process (allowPrivilegeEscalation: false, default true).
    pub no_new_privileges: bool,
    /// All capabilities, all devices, no masked paths.
    pub privileged: bool,
    /// Capabilities added to the default set (names without `CAP_`).
    pub capabilities_add: Vec<String>,
    /// Capabilities dropped from it (`ALL` drops every one).
    pub capabilities_drop: Vec<String>,
    /// The cgroup path (cgroupfs driver), e.g. `/skiff/<id>`.
    pub cgroups_path: String,
}

/// Docker's (and so containerd's and the kubelet's) default capability set.
const DEFAULT_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

fn capability(name: &str) -> Option<Capability> {
    let name = name.trim().to_ascii_uppercase();
    let name = name.strip_prefix("CAP_").unwrap_or(&name);
    // The serde names are the kernel's (`CAP_CHOWN`).
    serde_json::from_value(serde_json::Value::String(format!("CAP_{name}"))).ok()
}

/// The effective capability set of a container.
fn capabilities(spec: &ContainerSpec) -> Capabilities {
    let mut caps: Capabilities = if spec.privileged {
        all_capabilities()
    } else {
        DEFAULT_CAPS.iter().filter_map(|c| capability(c)).collect()
    };
    if spec
        .capabilities_drop
        .iter()
        .any(|c| c.eq_ignore_ascii_case("ALL"))
    {
        caps.clear();
    } else {
        for c in spec.capabilities_drop.iter().filter_map(|c| capability(c)) {
            caps.remove(&c);
        }
    }
    for c in spec.capabilities_add.iter() {
        if c.eq_ignore_ascii_case("ALL") {
            caps.extend(all_capabilities());
        } else if let Some(c) = capability(c) {
            caps.insert(c);
        }
    }
    caps
}

fn all_capabilities() -> Capabilities {
    CAP_NAMES.iter().filter_map(|n| capability(n)).collect()
}

/// Capability names by number (capability.h), for `privileged`.
const CAP_NAMES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

fn namespace(typ: LinuxNamespaceType, path: Option<&Path>) -> Result<LinuxNamespace> {
    let b = LinuxNamespaceBuilder::default().typ(typ);
    Ok(match path {
        Some(p) => b.path(p.to_path_buf()).build()?,
        None => b.build()?,
    })
}

/// The OCI runtime spec of a container whose rootfs is `rootfs`.
///
/// # Errors
/// If a builder rejects a value (it should not for specs the worker resolved).
pub fn oci_spec(spec: &ContainerSpec, rootfs: &Path) -> Result<Spec> {
    let caps = capabilities(spec);
    // A non-root process starts without effective capabilities unless ambient ones are
    // set; like the kubelet, the bounding set is what it may gain (e.g. by setuid files).
    let root_user = spec.uid == 0;
    let effective = if root_user {
        caps.clone()
    } else {
        Default::default()
    };
    let process = ProcessBuilder::default()
        .terminal(false)
        .args(spec.args.clone())
        .env(spec.env.clone())
        .cwd(if spec.cwd.is_empty() {
            "/".into()
        } else {
            spec.cwd.clone()
        })
        .no_new_privileges(spec.no_new_privileges)
        .user(
            UserBuilder::default()
                .uid(spec.uid)
                .gid(spec.gid)
                .additional_gids(spec.additional_gids.clone())
                .build()?,
        )
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(caps.clone())
                .permitted(if root_user {
                    caps.clone()
                } else {
                    Default::default()
                })
                .effective(effective)
                .inheritable(Capabilities::default())
                .ambient(Capabilities::default())
                .build()?,
        )
        .build()?;

    let mut mounts: Vec<Mount> = oci_spec::runtime::get_default_mounts();
    if spec.privileged {
        // Writable /sys for privileged containers, like Docker's.
        for m in &mut mounts {
            if m.destination() == Path::new("/sys") {
                m.set_options(Some(vec!["nosuid".into(), "noexec".into(), "nodev".into()]));
            }
        }
    }
    for m in &spec.mounts {
        let mut options = vec!["rbind".to_string(), "rprivate".to_string()];
        if m.read_only {
            options.push("ro".into());
        }
        let mount = if m.tmpfs {
            MountBuilder::default()
                .destination(PathBuf::from(&m.destination))
                .typ("tmpfs")
                .source(PathBuf::from("tmpfs"))
                .options(vec!["nosuid".into(), "nodev".into(), "mode=1777".into()])
                .build()?
        } else {
            MountBuilder::default()
                .destination(PathBuf::from(&m.destination))
                .typ("bind")
                .source(m.source.clone())
                .options(options)
                .build()?
        };
        mounts.push(mount);
    }

    let mut cpu = LinuxCpuBuilder::default();
    if let Some(shares) = spec.cpu_shares {
        cpu = cpu.shares(shares);
    }
    if let Some(quota) = spec.cpu_quota {
        cpu = cpu.quota(quota).period(100_000u64);
    }
    let mut memory = LinuxMemoryBuilder::default();
    if let Some(limit) = spec.memory_limit {
        // swap = limit: no swap beyond memory, so the limit is the OOM line.
        memory = memory.limit(limit).swap(limit);
    }
    let resources = LinuxResourcesBuilder::default()
        .cpu(cpu.build()?)
        .memory(memory.build()?)
        .pids(LinuxPidsBuilder::default().limit(4096i64).build()?)
        .build()?;

    let netns = (!spec.netns.as_os_str().is_empty()).then_some(spec.netns.as_path());
    let namespaces = vec![
        namespace(LinuxNamespaceType::Pid, None)?,
        namespace(LinuxNamespaceType::Network, netns)?,
        namespace(LinuxNamespaceType::Ipc, None)?,
        namespace(LinuxNamespaceType::Uts, None)?,
        namespace(LinuxNamespaceType::Mount, None)?,
        namespace(LinuxNamespaceType::Cgroup, None)?,
    ];
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources)
        .cgroups_path(PathBuf::from(&spec.cgroups_path));
    if spec.privileged {
        linux = linux
            .masked_paths(Vec::<String>::new())
            .readonly_paths(Vec::<String>::new());
    } else {
        linux = linux
            .masked_paths(oci_spec::runtime::get_default_maskedpaths())
            .readonly_paths(oci_spec::runtime::get_default_readonly_paths());
    }

    let mut out = Spec::default();
    out.set_hostname(Some(spec.hostname.clone()));
    out.set_process(Some(process));
    out.set_root(Some(
        RootBuilder::default()
            .path(rootfs.to_path_buf())
            .readonly(spec.read_only_rootfs)
            .build()?,
    ));
    out.set_mounts(Some(mounts));
    out.set_linux(Some(linux.build()?));
    Ok(out)
}

/// Writes `<bundle>/config.json` for `spec` with `rootfs` as the root.
///
/// # Errors
/// On I/O errors.
pub fn write_bundle(bundle: &Path, spec: &ContainerSpec, rootfs: &Path) -> Result<()> {
    std::fs::create_dir_all(bundle).with_context(|| format!("creating {}", bundle.display()))?;
    let config = oci_spec(spec, rootfs)?;
    let tmp = bundle.join("config.json.tmp");
    config
        .save(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, bundle.join("config.json"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ContainerSpec {
        ContainerSpec {
            id: "c1".into(),
            args: vec!["sh".into(), "-c".into(), "echo hi".into()],
            env: vec!["A=1".into()],
            hostname: "web-0".into(),
            netns: "/run/netns/skiff-x".into(),
            cpu_shares: Some(256),
            cpu_quota: Some(50_000),
            memory_limit: Some(64 << 20),
            no_new_privileges: true,
            cgroups_path: "/skiff/c1".into(),
            mounts: vec![MountSpec {
                source: "/var/lib/x".into(),
                destination: "/data".into(),
                read_only: true,
                tmpfs: false,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn config_carries_process_limits_and_the_pod_network() {
        let s = oci_spec(&spec(), Path::new("/b/rootfs")).unwrap();
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["process"]["args"][2], "echo hi");
        assert_eq!(v["process"]["noNewPrivileges"], true);
        assert_eq!(v["hostname"], "web-0");
        assert_eq!(v["root"]["path"], "/b/rootfs");
        assert_eq!(v["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(v["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(v["linux"]["resources"]["cpu"]["period"], 100_000);
        assert_eq!(v["linux"]["resources"]["cpu"]["shares"], 256);
        let net = v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["type"] == "network")
            .unwrap();
        assert_eq!(net["path"], "/run/netns/skiff-x");
        let data = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/data")
            .unwrap();
        assert!(data["options"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("ro")));
        let caps = v["process"]["capabilities"]["bounding"].as_array().unwrap();
        assert!(caps.contains(&serde_json::json!("CAP_CHOWN")));
        assert!(!caps.contains(&serde_json::json!("CAP_SYS_ADMIN")));
    }

    #[test]
    fn capabilities_add_and_drop() {
        let mut s = spec();
        s.capabilities_drop = vec!["ALL".into()];
        s.capabilities_add = vec!["NET_ADMIN".into(), "cap_kill".into()];
        let caps = capabilities(&s);
        assert_eq!(caps.len(), 2);
        assert!(caps.contains(&Capability::NetAdmin));
        s.privileged = true;
        s.capabilities_drop.clear();
        s.capabilities_add.clear();
        assert!(capabilities(&s).contains(&Capability::SysAdmin));
    }

    #[test]
    fn non_root_processes_get_no_effective_capabilities() {
        let mut s = spec();
        s.uid = 1000;
        let v = serde_json::to_value(oci_spec(&s, Path::new("/r")).unwrap()).unwrap();
        assert!(v["process"]["capabilities"]["effective"]
            .as_array()
            .is_none_or(|a| a.is_empty()));
    }
}
