//! An OCI runtime bundle: `config.json` (runtime-spec 1.x) and its root filesystem, read and
//! checked against what a flint guest can honour, and turned into a [`RunSpec`].
//!
//! A microVM is a stronger boundary than a container, so the namespaces a bundle asks for are
//! given by the VM itself; a network namespace given by path is where the runtime runs the VMM
//! ([`Bundle::netns`]). Bind mounts of host directories and files become virtio-fs shares
//! ([`Share`]) that the guest init binds into place, except the small files container engines
//! generate (`/etc/hosts`, ...), which are copied into the run spec, and `/dev/shm`, which
//! becomes a tmpfs in the guest. The seccomp profile is compiled for the guest init
//! ([`crate::seccomp`]); `linux.resources` sizes the VM ([`Resources`]). LSM labels are
//! accepted: the guest kernel has no LSM, and the VM boundary stands in for it. What would
//! need the host otherwise (hooks, joining another namespace, host devices) is refused with an
//! error naming the field, never silently ignored.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::spec::{Caps, FileMount, GuestMount, Mount, Rlimit, RunSpec, ShareMount};
use crate::{Share, ROOT_TAG};

/// PATH for finding `process.args[0]` when the bundle's env has none (what runc and crun use).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BundleError {
    #[error("{0}")]
    Io(String),
    #[error("config.json is not valid: {0}")]
    Json(String),
    #[error("{field}: {why}")]
    Invalid { field: String, why: String },
    #[error("{field} is not supported by flint: {why}")]
    Unsupported { field: String, why: String },
}

pub(crate) fn invalid(field: impl Into<String>, why: impl Into<String>) -> BundleError {
    BundleError::Invalid {
        field: field.into(),
        why: why.into(),
    }
}

pub(crate) fn unsupported(field: impl Into<String>, why: impl Into<String>) -> BundleError {
    BundleError::Unsupported {
        field: field.into(),
        why: why.into(),
    }
}

// --- config.json, as far as flint reads it. Unknown fields are refused by serde. ---

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Config {
    oci_version: String,
    process: Option<Process>,
    root: Option<Root>,
    hostname: Option<String>,
    domainname: Option<String>,
    #[serde(default)]
    mounts: Vec<OciMount>,
    hooks: Option<Value>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    linux: Option<Linux>,
    // Other platforms' sections.
    windows: Option<Value>,
    solaris: Option<Value>,
    vm: Option<Value>,
    zos: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Process {
    #[serde(default)]
    terminal: bool,
    console_size: Option<Value>,
    #[serde(default)]
    user: User,
    #[serde(default)]
    args: Vec<String>,
    command_line: Option<String>,
    #[serde(default)]
    env: Vec<String>,
    cwd: String,
    capabilities: Option<Capabilities>,
    #[serde(default)]
    rlimits: Vec<OciRlimit>,
    #[serde(default)]
    no_new_privileges: bool,
    apparmor_profile: Option<String>,
    oom_score_adj: Option<i64>,
    scheduler: Option<Value>,
    selinux_label: Option<String>,
    io_priority: Option<Value>,
    #[serde(rename = "execCPUAffinity")]
    exec_cpu_affinity: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct User {
    #[serde(default)]
    uid: u32,
    #[serde(default)]
    gid: u32,
    umask: Option<u32>,
    #[serde(default)]
    additional_gids: Vec<u32>,
    username: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Capabilities {
    #[serde(default)]
    bounding: Vec<String>,
    #[serde(default)]
    effective: Vec<String>,
    #[serde(default)]
    inheritable: Vec<String>,
    #[serde(default)]
    permitted: Vec<String>,
    #[serde(default)]
    ambient: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OciRlimit {
    #[serde(rename = "type")]
    kind: String,
    soft: u64,
    hard: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Root {
    path: String,
    #[serde(default)]
    readonly: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct OciMount {
    destination: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    source: Option<String>,
    #[serde(default)]
    options: Vec<String>,
    uid_mappings: Option<Value>,
    gid_mappings: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Linux {
    #[serde(default)]
    namespaces: Vec<Namespace>,
    // The guest has its own users; a mapping onto host IDs has nothing to map onto.
    uid_mappings: Option<Value>,
    gid_mappings: Option<Value>,
    time_offsets: Option<Value>,
    #[serde(default)]
    devices: Vec<Value>,
    cgroups_path: Option<String>,
    resources: Option<OciResources>,
    rootfs_propagation: Option<String>,
    seccomp: Option<crate::seccomp::Profile>,
    #[serde(default)]
    sysctl: BTreeMap<String, String>,
    #[serde(default)]
    masked_paths: Vec<String>,
    #[serde(default)]
    readonly_paths: Vec<String>,
    mount_label: Option<String>,
    intel_rdt: Option<Value>,
    personality: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Namespace {
    #[serde(rename = "type")]
    kind: String,
    path: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct OciResources {
    devices: Option<Vec<DeviceRule>>,
    memory: Option<OciMemory>,
    cpu: Option<OciCpu>,
    pids: Option<OciPids>,
    #[serde(rename = "blockIO")]
    block_io: Option<Value>,
    hugepage_limits: Option<Value>,
    network: Option<Value>,
    rdma: Option<Value>,
    unified: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceRule {
    #[serde(default)]
    allow: bool,
    #[serde(rename = "type")]
    kind: Option<String>,
    major: Option<i64>,
    minor: Option<i64>,
    access: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct OciMemory {
    limit: Option<i64>,
    reservation: Option<i64>,
    swap: Option<i64>,
    kernel: Option<i64>,
    #[serde(rename = "kernelTCP")]
    kernel_tcp: Option<i64>,
    swappiness: Option<u64>,
    #[serde(rename = "disableOOMKiller")]
    disable_oom_killer: Option<bool>,
    use_hierarchy: Option<bool>,
    check_before_update: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct OciCpu {
    shares: Option<u64>,
    quota: Option<i64>,
    burst: Option<u64>,
    period: Option<u64>,
    realtime_runtime: Option<i64>,
    realtime_period: Option<u64>,
    cpus: Option<String>,
    mems: Option<String>,
    idle: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OciPids {
    limit: i64,
}

/// The least guest memory a `memory.limit` gives: below it flint's kernel and init do not fit
/// beside a workload.
pub const MIN_GUEST_MEMORY: u64 = 64 << 20;

/// The most guest memory a `memory.limit` may ask for: 64 TiB, the guest physical address
/// space of x86 CPUs with 46-bit addresses (the VMM then checks the host's RAM).
pub const MAX_GUEST_MEMORY: u64 = 64 << 40;

/// The most vCPUs `linux.resources.cpu` may ask for (flint's MP table and ACPI tables).
pub const MAX_VCPUS: u32 = 255;

/// The largest `pids.limit` the kernel takes (`PID_MAX_LIMIT`).
const PID_MAX_LIMIT: i64 = 4 << 20;

/// What `linux.resources` asks of the VM as a whole, for the runtime that starts it (flint
/// writes no host cgroup itself). Each is None when the bundle does not ask.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    /// Guest RAM: `memory.limit`, rounded up to a whole MiB and at least [`MIN_GUEST_MEMORY`]
    /// (the guest's kernel and init live in it too).
    pub memory_bytes: Option<u64>,
    /// vCPUs: ceil(`cpu.quota` / `cpu.period`), else the number of CPUs in `cpu.cpus`.
    pub cpus: Option<u32>,
    /// The cgroup v2 `cpu.weight` (1–10000) for the VMM's cgroup on the host, from
    /// `cpu.shares` converted as runc and crun convert it.
    pub cpu_weight: Option<u64>,
    /// `pids.limit`: enforced in the guest (the run spec's `pids-limit`), here for the record.
    pub pids_limit: Option<u64>,
}

impl Resources {
    /// [`Resources::memory_bytes`] in MiB (it is a whole number of them).
    pub fn memory_mib(&self) -> Option<u64> {
        self.memory_bytes.map(|b| b >> 20)
    }
}

/// A bundle read and checked: where its rootfs is, what to run, and the host paths its bind
/// mounts share with the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub dir: PathBuf,
    pub rootfs: PathBuf,
    pub spec: RunSpec,
    /// One per distinct (host path, read-only) of the bind mounts, in order of first use.
    pub shares: Vec<Share>,
    /// What `linux.resources` asks of the VM.
    pub resources: Resources,
    /// The network namespace to run the VMM in (`linux.namespaces`' `network` with a `path`,
    /// as podman and CNI give it): checked to be a namespace file, not opened.
    pub netns: Option<PathBuf>,
}

impl Bundle {
    /// Reads `DIR/config.json` and checks it and the rootfs it names, which must be inside
    /// the bundle.
    pub fn load(dir: &Path) -> Result<Bundle, BundleError> {
        Self::load_with(dir, false)
    }

    /// [`Bundle::load`]; with `root_anywhere`, `root.path` may lead outside the bundle (as
    /// podman's and containerd's do: an OCI runtime's caller made the bundle and its root).
    pub fn load_with(dir: &Path, root_anywhere: bool) -> Result<Bundle, BundleError> {
        let meta = std::fs::metadata(dir)
            .map_err(|e| BundleError::Io(flint_vmm::config::io_reason(&e)))?;
        if !meta.is_dir() {
            return Err(BundleError::Io(
                "not a directory (a bundle is a directory with config.json and a rootfs)".into(),
            ));
        }
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            BundleError::Io(format!("config.json: {}", flint_vmm::config::io_reason(&e)))
        })?;
        let config: Config =
            serde_json::from_str(&text).map_err(|e| BundleError::Json(e.to_string()))?;
        let mut shares = Shares::default();
        let (rootfs, spec, linux) = to_run_spec(dir, config, &mut shares, root_anywhere)?;
        check_executable(&rootfs, &spec, &shares.0)?;
        Ok(Bundle {
            dir: dir.to_path_buf(),
            rootfs,
            spec,
            shares: shares.0,
            resources: linux.resources,
            netns: linux.netns,
        })
    }

    /// Makes the rootfs a live root: the first share, tagged [`ROOT_TAG`], read-only if the
    /// root is, which the guest mounts as its root instead of an image.
    pub(crate) fn share_root(&mut self) {
        if self.spec.root_fs.is_some() {
            return;
        }
        self.shares.insert(
            0,
            Share {
                tag: ROOT_TAG.into(),
                path: self.rootfs.clone(),
                read_only: self.spec.root_readonly,
                file: false,
            },
        );
        self.spec.root_fs = Some(ROOT_TAG.into());
    }
}

/// The shares the bind mounts need, one per distinct (canonical host path, read-only): two
/// binds of one directory share a device, but a read-only bind needs a read-only share, since
/// the guest could remount a read-write one. Also the bytes of files copied into the spec.
#[derive(Default)]
struct Shares(Vec<Share>, usize);

impl Shares {
    /// The tag of the share for `path`, added if it is new. Tags are short (virtio-fs allows
    /// 36 bytes) and never [`ROOT_TAG`].
    fn tag_for(&mut self, path: PathBuf, read_only: bool, file: bool) -> String {
        if let Some(s) = self
            .0
            .iter()
            .find(|s| s.path == path && s.read_only == read_only)
        {
            return s.tag.clone();
        }
        let tag = format!("flint-fs{}", self.0.len());
        self.0.push(Share {
            tag: tag.clone(),
            path,
            read_only,
            file,
        });
        tag
    }
}

/// What `linux` gives beyond the run spec.
#[derive(Default)]
struct LinuxExtra {
    resources: Resources,
    netns: Option<PathBuf>,
}

/// Checks the parsed config and turns it into the guest's run spec.
fn to_run_spec(
    dir: &Path,
    c: Config,
    shares: &mut Shares,
    root_anywhere: bool,
) -> Result<(PathBuf, RunSpec, LinuxExtra), BundleError> {
    if !c.oci_version.starts_with("1.") {
        return Err(invalid(
            "ociVersion",
            format!("'{}' is not a 1.x runtime spec", c.oci_version),
        ));
    }
    for (name, v) in [
        ("windows", &c.windows),
        ("solaris", &c.solaris),
        ("vm", &c.vm),
        ("zos", &c.zos),
    ] {
        if v.is_some() {
            return Err(unsupported(name, "flint runs Linux bundles"));
        }
    }
    if c.hooks.as_ref().is_some_and(|h| !is_empty(h)) {
        return Err(unsupported(
            "hooks",
            "hooks run host programs around the container; a flint guest has no host side to run them on",
        ));
    }
    if c.domainname.as_deref().is_some_and(|d| !d.is_empty()) {
        return Err(unsupported(
            "domainname",
            "the guest's NIS domain is not set",
        ));
    }
    let _ = &c.annotations; // Annotations are free-form metadata for tools; nothing to honour.

    let root = c
        .root
        .ok_or_else(|| invalid("root", "missing (root.path names the rootfs)"))?;
    let rootfs = confined_root(dir, &root.path, root_anywhere)?;

    let p = c
        .process
        .ok_or_else(|| invalid("process", "missing (it says what to run)"))?;
    let mut spec = process_spec(p)?;
    spec.root_readonly = root.readonly;
    spec.hostname = c.hostname.filter(|h| !h.is_empty());
    spec.mounts = c
        .mounts
        .iter()
        .enumerate()
        .map(|(i, m)| mount_spec(i, m, dir, shares))
        .collect::<Result<_, _>>()?;
    let extra = match c.linux {
        Some(l) => linux_spec(l, &mut spec)?,
        None => LinuxExtra::default(),
    };
    Ok((rootfs, spec, extra))
}

/// The directory `root.path` names, symlinks resolved, which must be inside the bundle: the
/// rootfs becomes an image the guest can read, so a root that leads elsewhere (an absolute path,
/// `..`, a symlink) would hand host files to whoever wrote the bundle. With `anywhere`, only
/// that it is a directory.
fn confined_root(dir: &Path, path: &str, anywhere: bool) -> Result<PathBuf, BundleError> {
    let named = dir.join(path); // an absolute path replaces `dir`
    let rootfs = match std::fs::canonicalize(&named) {
        Ok(p) => p,
        Err(e) => {
            return Err(invalid(
                "root.path",
                format!("{}: {}", named.display(), flint_vmm::config::io_reason(&e)),
            ))
        }
    };
    let bundle = std::fs::canonicalize(dir)
        .map_err(|e| BundleError::Io(flint_vmm::config::io_reason(&e)))?;
    if !anywhere && !rootfs.starts_with(&bundle) {
        return Err(invalid(
            "root.path",
            format!(
                "'{path}' leads to {}, outside the bundle {} (put the rootfs inside the bundle directory)",
                rootfs.display(),
                bundle.display()
            ),
        ));
    }
    match std::fs::metadata(&rootfs) {
        Ok(m) if m.is_dir() => Ok(rootfs),
        Ok(_) => Err(invalid(
            "root.path",
            format!("{} is not a directory", rootfs.display()),
        )),
        Err(e) => Err(invalid(
            "root.path",
            format!("{}: {}", rootfs.display(), flint_vmm::config::io_reason(&e)),
        )),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(o) => o.values().all(is_empty),
        Value::Array(a) => a.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

fn process_spec(p: Process) -> Result<RunSpec, BundleError> {
    if p.args.is_empty() || p.args[0].is_empty() {
        return Err(invalid(
            "process.args",
            "missing (the program to run and its arguments)",
        ));
    }
    if !p.cwd.starts_with('/') {
        return Err(invalid(
            "process.cwd",
            format!("'{}' is not an absolute path", p.cwd),
        ));
    }
    for e in &p.env {
        if e.split_once('=').is_none_or(|(k, _)| k.is_empty()) {
            return Err(invalid("process.env", format!("'{e}' is not NAME=VALUE")));
        }
    }
    let refuse_set = |field: &str, set: bool, why: &str| {
        if set {
            Err(unsupported(format!("process.{field}"), why))
        } else {
            Ok(())
        }
    };
    refuse_set("commandLine", p.command_line.is_some(), "it is for Windows")?;
    refuse_set(
        "user.username",
        p.user.username.is_some(),
        "it is for Windows",
    )?;
    // The guest kernel has no LSM to load a profile or label into: the VM boundary stands in
    // for it, and the VMM is confined on the host by its own seccomp filters and jail.
    let _ = (&p.apparmor_profile, &p.selinux_label);
    let oom_score_adj = match p.oom_score_adj {
        None => None,
        Some(n) => Some(
            i32::try_from(n)
                .ok()
                .filter(|n| (-1000..=1000).contains(n))
                .ok_or_else(|| {
                    invalid(
                        "process.oomScoreAdj",
                        format!("{n} is not from -1000 to 1000"),
                    )
                })?,
        ),
    };
    refuse_set(
        "scheduler",
        p.scheduler.is_some(),
        "not passed to the guest yet",
    )?;
    refuse_set(
        "ioPriority",
        p.io_priority.is_some(),
        "not passed to the guest yet",
    )?;
    refuse_set(
        "execCPUAffinity",
        p.exec_cpu_affinity.is_some(),
        "not passed to the guest yet",
    )?;
    let _ = p.console_size; // The serial console has no size to set.

    // The guest init refuses more (found by fuzzing: the guest failed to start instead).
    if let Some(u) = p.user.umask.filter(|&u| u > 0o777) {
        return Err(invalid(
            "process.user.umask",
            format!("{u} is more than 0777 (511)"),
        ));
    }

    let rlimits = p
        .rlimits
        .iter()
        .map(|r| {
            let resource = rlimit_number(&r.kind).ok_or_else(|| {
                invalid("process.rlimits", format!("unknown resource '{}'", r.kind))
            })?;
            if r.soft > r.hard {
                return Err(invalid(
                    "process.rlimits",
                    format!(
                        "{}: soft limit {} is above the hard limit {}",
                        r.kind, r.soft, r.hard
                    ),
                ));
            }
            Ok(Rlimit {
                resource,
                soft: r.soft,
                hard: r.hard,
            })
        })
        .collect::<Result<_, _>>()?;
    let caps = match p.capabilities {
        None => None,
        Some(c) => Some(Caps {
            bounding: cap_mask("bounding", &c.bounding)?,
            effective: cap_mask("effective", &c.effective)?,
            inheritable: cap_mask("inheritable", &c.inheritable)?,
            permitted: cap_mask("permitted", &c.permitted)?,
            ambient: cap_mask("ambient", &c.ambient)?,
        }),
    };
    Ok(RunSpec {
        args: p.args,
        env: p.env,
        cwd: p.cwd,
        uid: p.user.uid,
        gid: p.user.gid,
        additional_gids: p.user.additional_gids,
        umask: p.user.umask,
        terminal: p.terminal,
        no_new_privileges: p.no_new_privileges,
        rlimits,
        caps,
        oom_score_adj,
        ..RunSpec::default()
    })
}

/// A `process` object as `runc exec --process FILE` gets it (what podman writes for `podman
/// exec`), read and checked as config.json's: the process-level part of a run spec, for
/// [`crate::agent`].
pub(crate) fn process_from_json(text: &str) -> Result<RunSpec, BundleError> {
    let p: Process = serde_json::from_str(text)
        .map_err(|e| invalid("process", format!("not a valid process object: {e}")))?;
    process_spec(p)
}

/// What a process exec'd in the bundle's running container takes from its config.json by
/// default: the `process` section (a run spec with the process-level records only) and the
/// compiled `linux.seccomp` profile, which applies to every process of the container.
pub(crate) fn container_process(dir: &Path) -> Result<RunSpec, BundleError> {
    let text = std::fs::read_to_string(dir.join("config.json")).map_err(|e| {
        BundleError::Io(format!("config.json: {}", flint_vmm::config::io_reason(&e)))
    })?;
    let config: Config =
        serde_json::from_str(&text).map_err(|e| BundleError::Json(e.to_string()))?;
    let p = config
        .process
        .ok_or_else(|| invalid("process", "missing (it says what to run)"))?;
    let mut spec = process_spec(p)?;
    if let Some(p) = config.linux.as_ref().and_then(|l| l.seccomp.as_ref()) {
        spec.seccomp = Some(crate::seccomp::compile(p)?);
    }
    Ok(spec)
}

/// Filesystems a guest can mount by itself; everything else would need the host.
const GUEST_FILESYSTEMS: &[&str] = &[
    "proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2", "devtmpfs", "ramfs",
];

fn mount_spec(
    i: usize,
    m: &OciMount,
    dir: &Path,
    shares: &mut Shares,
) -> Result<GuestMount, BundleError> {
    let field = format!("mounts[{i}] ({})", m.destination);
    if !m.destination.starts_with('/') {
        return Err(invalid(field, "the destination is not an absolute path"));
    }
    if m.uid_mappings.is_some() || m.gid_mappings.is_some() {
        return Err(unsupported(field, "ID-mapped mounts"));
    }
    let fstype = m.kind.clone().unwrap_or_default();
    let is_bind = fstype == "bind" || m.options.iter().any(|o| o == "bind" || o == "rbind");
    if is_bind {
        return bind_spec(i, &field, m, dir, shares);
    }
    if !GUEST_FILESYSTEMS.contains(&fstype.as_str()) {
        return Err(unsupported(
            field,
            format!(
                "filesystem type '{fstype}' (a guest can mount {})",
                GUEST_FILESYSTEMS.join(", ")
            ),
        ));
    }
    let (flags, data) = mount_options(&m.options).map_err(|why| invalid(field, why))?;
    Ok(GuestMount::New(Mount {
        destination: m.destination.clone(),
        fstype,
        source: m.source.clone().unwrap_or_else(|| "none".into()),
        flags,
        data,
    }))
}

/// A bind mount of a host directory or regular file: its source (absolute, or relative to the
/// bundle, as the runtime spec allows) becomes a share, which the guest binds onto the
/// destination. The source is whatever host path the bundle names, as with crun: whoever
/// runs a bundle trusts its config with their files.
fn bind_spec(
    i: usize,
    field: &str,
    m: &OciMount,
    dir: &Path,
    shares: &mut Shares,
) -> Result<GuestMount, BundleError> {
    let source = m
        .source
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            invalid(
                field,
                "a bind mount needs a source (the host path to share with the guest)",
            )
        })?;
    let named = dir.join(source); // an absolute source replaces `dir`
    let reason = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::NotFound {
            invalid(
                field,
                format!(
                    "the source {} does not exist (create it on the host, or correct mounts[{i}].source)",
                    named.display()
                ),
            )
        } else {
            invalid(
                field,
                format!(
                    "the source {}: {}",
                    named.display(),
                    flint_vmm::config::io_reason(&e)
                ),
            )
        }
    };
    let meta = std::fs::metadata(&named).map_err(reason)?;
    let file = if meta.is_dir() {
        false
    } else if meta.is_file() {
        true
    } else {
        return Err(unsupported(
            field,
            format!(
                "the source {} is {}: only a directory or a regular file can be shared with the guest",
                named.display(),
                flint_vmm::config::file_type_name(&meta.file_type())
            ),
        ));
    };
    let path = std::fs::canonicalize(&named).map_err(reason)?;
    let destination = Path::new(&m.destination);

    let options: Vec<String> = m
        .options
        .iter()
        .filter(|o| *o != "bind" && *o != "rbind")
        .cloned()
        .collect();
    let (flags, data) = mount_options(&options).map_err(|why| invalid(field, why))?;
    // A bind has no file system to give options to, and a bind remount takes only the
    // per-mount flags: anything else would be dropped without a word.
    if let Some(o) = data.split(',').find(|o| !o.is_empty()) {
        return Err(unsupported(
            field,
            format!("option '{o}' on a bind mount (flint applies ro, nosuid, nodev, noexec and the atime options)"),
        ));
    }
    const NOT_PER_MOUNT: u64 = libc::MS_SYNCHRONOUS | libc::MS_DIRSYNC | libc::MS_MANDLOCK;
    if flags & NOT_PER_MOUNT != 0 {
        return Err(unsupported(
            field,
            "sync, dirsync and mand on a bind mount (they belong to the host's file system)",
        ));
    }

    if file && COPIED_FILES.iter().any(|f| destination == Path::new(f)) {
        let content = copied_file(field, &path, &mut shares.1)?;
        return Ok(GuestMount::File(FileMount {
            destination: m.destination.clone(),
            mode: content.1,
            flags,
            content: content.0,
        }));
    }
    if !file && destination == Path::new("/dev/shm") {
        // podman's /dev/shm is a host tmpfs bound in, for IPC with the host or other
        // containers, which a VM cannot share: the guest gets a tmpfs of its own.
        return Ok(GuestMount::New(Mount {
            destination: m.destination.clone(),
            fstype: "tmpfs".into(),
            source: "shm".into(),
            flags,
            data: SHM_OPTIONS.into(),
        }));
    }

    // A file is shared alone, at the share's root under its own name.
    let subpath = if file {
        path.file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| {
                invalid(
                    field,
                    format!("the source file {}'s name is not UTF-8", path.display()),
                )
            })?
            .to_string()
    } else {
        String::new()
    };
    let tag = shares.tag_for(path, flags & libc::MS_RDONLY != 0, file);
    Ok(GuestMount::Share(ShareMount {
        tag,
        subpath,
        destination: m.destination.clone(),
        flags,
        data,
    }))
}

/// The bind-mounted files container engines generate for each container, which the guest
/// gets as copies made at create time (one virtiofsd per file would cost more than the run).
const COPIED_FILES: &[&str] = &[
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
    "/run/.containerenv",
];

/// The guest's /dev/shm instead of a bind of the host's: runc's and containerd's default.
const SHM_OPTIONS: &str = "mode=1777,size=65536k";

/// The text of the file `path` and its permission bits, within the size limits (`total` is
/// the bytes copied so far, counted here).
fn copied_file(field: &str, path: &Path, total: &mut usize) -> Result<(String, u32), BundleError> {
    use crate::spec::{FILES_TOTAL_MAX, FILE_MAX};
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let io = |e: std::io::Error| {
        invalid(
            field,
            format!("{}: {}", path.display(), flint_vmm::config::io_reason(&e)),
        )
    };
    let file = std::fs::File::open(path).map_err(io)?;
    // Checked on the open file: the path may have changed since it was looked at.
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(invalid(
            field,
            format!("{} is no longer a regular file", path.display()),
        ));
    }
    let mut bytes = Vec::new();
    file.take(FILE_MAX as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() > FILE_MAX {
        return Err(unsupported(
            field,
            format!(
                "{} is more than {} KiB, the most flint copies into the guest",
                path.display(),
                FILE_MAX >> 10
            ),
        ));
    }
    *total += bytes.len();
    if *total > FILES_TOTAL_MAX {
        return Err(unsupported(
            field,
            format!(
                "the copied files (/etc/hosts, ...) come to more than {} KiB",
                FILES_TOTAL_MAX >> 10
            ),
        ));
    }
    let text = String::from_utf8(bytes)
        .ok()
        .filter(|t| !t.contains('\0'))
        .ok_or_else(|| {
            invalid(
                field,
                format!("{} is not text (UTF-8 without NUL bytes)", path.display()),
            )
        })?;
    Ok((text, meta.permissions().mode() & 0o777))
}

/// Splits mount options into `MS_*` flags and the filesystem's own data string.
fn mount_options(options: &[String]) -> Result<(u64, String), String> {
    const FLAGS: &[(&str, bool, u64)] = &[
        ("ro", true, libc::MS_RDONLY),
        ("rw", false, libc::MS_RDONLY),
        ("nosuid", true, libc::MS_NOSUID),
        ("suid", false, libc::MS_NOSUID),
        ("nodev", true, libc::MS_NODEV),
        ("dev", false, libc::MS_NODEV),
        ("noexec", true, libc::MS_NOEXEC),
        ("exec", false, libc::MS_NOEXEC),
        ("sync", true, libc::MS_SYNCHRONOUS),
        ("async", false, libc::MS_SYNCHRONOUS),
        ("dirsync", true, libc::MS_DIRSYNC),
        ("mand", true, libc::MS_MANDLOCK),
        ("nomand", false, libc::MS_MANDLOCK),
        ("noatime", true, libc::MS_NOATIME),
        ("atime", false, libc::MS_NOATIME),
        ("nodiratime", true, libc::MS_NODIRATIME),
        ("diratime", false, libc::MS_NODIRATIME),
        ("relatime", true, libc::MS_RELATIME),
        ("norelatime", false, libc::MS_RELATIME),
        ("strictatime", true, libc::MS_STRICTATIME),
        ("nostrictatime", false, libc::MS_STRICTATIME),
    ];
    // Propagation only matters between mount namespaces, and the guest's process has the
    // only one that sees these mounts.
    const PROPAGATION: &[&str] = &[
        "private",
        "rprivate",
        "shared",
        "rshared",
        "slave",
        "rslave",
        "unbindable",
        "runbindable",
    ];
    let mut flags = 0u64;
    let mut data = Vec::new();
    for o in options {
        if let Some((_, set, bit)) = FLAGS.iter().find(|(n, _, _)| n == o) {
            if *set {
                flags |= bit;
            } else {
                flags &= !bit;
            }
        } else if PROPAGATION.contains(&o.as_str()) {
        } else if o == "remount" || o == "tmpcopyup" || o.starts_with("idmap") {
            return Err(format!("option '{o}' is not supported"));
        } else if o.contains(',') {
            return Err(format!("option '{o}' contains a comma"));
        } else {
            data.push(o.as_str());
        }
    }
    Ok((flags, data.join(",")))
}

fn linux_spec(l: Linux, spec: &mut RunSpec) -> Result<LinuxExtra, BundleError> {
    const NAMESPACES: &[&str] = &[
        "pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time",
    ];
    let mut extra = LinuxExtra::default();
    for ns in &l.namespaces {
        if !NAMESPACES.contains(&ns.kind.as_str()) {
            return Err(invalid(
                "linux.namespaces",
                format!("unknown type '{}'", ns.kind),
            ));
        }
        let Some(path) = ns.path.as_deref().filter(|p| !p.is_empty()) else {
            continue;
        };
        // A pod's containers join its sandbox's IPC and UTS namespaces by path. The VM is its
        // own IPC namespace (System V IPC and message queues are not shared with the pod's
        // other containers); the UTS one names the guest when the config gives no hostname.
        if ns.kind == "ipc" {
            namespace_file(path, "linux.namespaces (ipc)")?;
            continue;
        }
        if ns.kind == "uts" {
            namespace_file(path, "linux.namespaces (uts)")?;
            if spec.hostname.is_none() {
                spec.hostname = Some(hostname_in(path)?);
            }
            continue;
        }
        if ns.kind != "network" {
            return Err(unsupported(
                format!("linux.namespaces ({} with a path)", ns.kind),
                format!(
                    "the VM is its own {} namespace; joining another (another container's, as in a pod sharing its processes) is not supported",
                    ns.kind
                ),
            ));
        }
        if extra.netns.is_some() {
            return Err(invalid(
                "linux.namespaces",
                "more than one network namespace",
            ));
        }
        extra.netns = Some(network_namespace(path)?);
    }
    let _ = (
        &l.uid_mappings,
        &l.gid_mappings,
        // The runtime's to use for the VMM's own cgroup.
        &l.cgroups_path,
        &l.rootfs_propagation,
        // SELinux's label for the container's mounts: the guest kernel has no LSM.
        &l.mount_label,
    );
    if !l.devices.is_empty() {
        return Err(unsupported(
            "linux.devices",
            "host devices cannot be passed into the guest",
        ));
    }
    if let Some(r) = &l.resources {
        extra.resources = resources(r)?;
        spec.pids_limit = extra.resources.pids_limit;
    }
    if let Some(p) = &l.seccomp {
        spec.seccomp = Some(crate::seccomp::compile(p)?);
    }
    for (field, set) in [
        (
            "linux.timeOffsets",
            l.time_offsets.as_ref().is_some_and(|v| !is_empty(v)),
        ),
        (
            "linux.intelRdt",
            l.intel_rdt.as_ref().is_some_and(|v| !is_empty(v)),
        ),
        (
            "linux.personality",
            l.personality.as_ref().is_some_and(|v| !is_empty(v)),
        ),
    ] {
        if set {
            return Err(unsupported(field, "not enforced in the guest yet"));
        }
    }
    for p in l.masked_paths.iter().chain(&l.readonly_paths) {
        if !p.starts_with('/') {
            return Err(invalid(
                "linux.maskedPaths/readonlyPaths",
                format!("'{p}' is not absolute"),
            ));
        }
    }
    spec.masked_paths = l.masked_paths;
    spec.readonly_paths = l.readonly_paths;
    spec.sysctl = l.sysctl.into_iter().collect();
    Ok(extra)
}

/// A network namespace's path: absolute, and a namespace file (on nsfs: a bind-mounted
/// `/run/netns/NAME` or `/proc/PID/ns/net`). The runtime opens it; nothing is opened here.
fn network_namespace(path: &str) -> Result<PathBuf, BundleError> {
    namespace_file(path, "linux.namespaces (network)")
}

/// The hostname in the UTS namespace at `path` (a pod sandbox's), read by a thread that joins
/// it (setns affects only the calling thread).
fn hostname_in(path: &str) -> Result<String, BundleError> {
    const FIELD: &str = "linux.namespaces (uts)";
    let file = std::fs::File::open(path).map_err(|e| {
        invalid(
            FIELD,
            format!("{path}: {}", flint_vmm::config::io_reason(&e)),
        )
    })?;
    let read = std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        // SAFETY: setns with an open namespace fd, for this (short-lived) thread only.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWUTS) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut name = [0u8; 65];
        // SAFETY: gethostname writes at most len bytes into the buffer.
        if unsafe { libc::gethostname(name.as_mut_ptr().cast(), name.len() - 1) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let len = name.iter().position(|&b| b == 0).unwrap_or(name.len() - 1);
        Ok(String::from_utf8_lossy(&name[..len]).into_owned())
    })
    .join()
    .map_err(|_| invalid(FIELD, format!("{path}: reading its hostname failed")))?;
    read.map_err(|e| invalid(FIELD, format!("{path}: cannot read its hostname: {e}")))
}

/// A namespace's path: absolute, and a namespace file (on nsfs).
fn namespace_file(path: &str, field: &'static str) -> Result<PathBuf, BundleError> {
    const NSFS_MAGIC: libc::__fsword_t = 0x6e73_6673;
    if !path.starts_with('/') {
        return Err(invalid(field, format!("'{path}' is not an absolute path")));
    }
    let c =
        std::ffi::CString::new(path).map_err(|_| invalid(field, "the path contains a NUL byte"))?;
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: c is a NUL-terminated path and st a statfs buffer for the kernel to fill.
    if unsafe { libc::statfs(c.as_ptr(), st.as_mut_ptr()) } < 0 {
        let e = std::io::Error::last_os_error();
        return Err(invalid(
            field,
            format!("{path}: {}", flint_vmm::config::io_reason(&e)),
        ));
    }
    // SAFETY: statfs succeeded, so it filled st.
    let st = unsafe { st.assume_init() };
    if st.f_type != NSFS_MAGIC {
        return Err(invalid(
            field,
            format!("{path} is not a namespace (a file on nsfs, such as /run/netns/NAME)"),
        ));
    }
    Ok(PathBuf::from(path))
}

/// Checks `linux.resources` and maps what it asks onto the VM.
fn resources(r: &OciResources) -> Result<Resources, BundleError> {
    let mut out = Resources::default();
    // The device cgroup is met by construction: the guest has only its virtual devices and
    // the standard nodes the init creates; the rules are checked for form only.
    for d in r.devices.iter().flatten() {
        let _ = (d.allow, d.major, d.minor);
        if d.kind
            .as_deref()
            .is_some_and(|t| !["a", "b", "c", ""].contains(&t))
            || d.access
                .as_deref()
                .is_some_and(|a| !a.chars().all(|c| "rwm".contains(c)))
        {
            return Err(invalid(
                "linux.resources.devices",
                "a rule's type is not a, b or c, or its access not of r, w and m",
            ));
        }
    }
    if let Some(m) = &r.memory {
        out.memory_bytes = memory_limit(m)?;
    }
    if let Some(c) = &r.cpu {
        let (cpus, weight) = cpu(c)?;
        out.cpus = cpus;
        out.cpu_weight = weight;
    }
    if let Some(p) = &r.pids {
        out.pids_limit = match p.limit {
            // runc's reading: 0 and -1 are no limit (podman's --pids-limit=-1 writes 0).
            -1 | 0 => None,
            n if n > 0 && n <= PID_MAX_LIMIT => u64::try_from(n).ok(),
            n => {
                return Err(invalid(
                    "linux.resources.pids.limit",
                    format!("{n} is not from 1 to {PID_MAX_LIMIT} (0 or -1: no limit)"),
                ))
            }
        };
    }
    for (name, v, why) in [
        (
            "blockIO",
            &r.block_io,
            "the guest's disk I/O is the VMM's; weigh or throttle the VMM's cgroup on the host",
        ),
        (
            "hugepageLimits",
            &r.hugepage_limits,
            "the guest has no huge pages",
        ),
        (
            "network",
            &r.network,
            "net_cls and net_prio do not reach the guest's traffic, which the VMM carries",
        ),
        ("rdma", &r.rdma, "the guest has no RDMA devices"),
        (
            "unified",
            &r.unified,
            "cgroup v2 files are not written in the guest",
        ),
    ] {
        if v.as_ref().is_some_and(|v| !is_empty(v)) {
            return Err(unsupported(format!("linux.resources.{name}"), why));
        }
    }
    Ok(out)
}

/// `memory`: the limit sizes the guest; what has no meaning for a VM without swap is
/// accepted, what would need the guest's kernel memory or OOM killer changed is refused.
fn memory_limit(m: &OciMemory) -> Result<Option<u64>, BundleError> {
    let bytes = |name: &str, v: i64| {
        if v < -1 {
            Err(invalid(
                format!("linux.resources.memory.{name}"),
                format!("{v} is not a size in bytes (-1: no limit)"),
            ))
        } else {
            Ok(v)
        }
    };
    let limit = match m.limit {
        None | Some(-1) => None,
        Some(n) if n > 0 => u64::try_from(n).ok(),
        Some(n) => {
            return Err(invalid(
                "linux.resources.memory.limit",
                format!("{n} is not a size in bytes (-1: no limit)"),
            ))
        }
    };
    if let Some(swap) = m.swap {
        // memory+swap: 0 leaves it unset, as in runc.
        let swap = bytes("swap", swap)?;
        if let (Some(l), Ok(s)) = (limit, u64::try_from(swap)) {
            if s != 0 && s < l {
                return Err(invalid(
                    "linux.resources.memory.swap",
                    format!("{s} is below memory.limit {l} (it counts memory and swap together)"),
                ));
            }
        }
    }
    if let Some(r) = m.reservation {
        bytes("reservation", r)?;
    }
    if m.swappiness.is_some_and(|s| s > 100) {
        return Err(invalid(
            "linux.resources.memory.swappiness",
            "more than 100",
        ));
    }
    if m.kernel.is_some() || m.kernel_tcp.is_some() {
        return Err(unsupported(
            "linux.resources.memory.kernel",
            "kernel memory limits are gone from cgroup v2 (and from the runtime spec)",
        ));
    }
    if m.disable_oom_killer == Some(true) {
        return Err(unsupported(
            "linux.resources.memory.disableOOMKiller",
            "the guest kernel's OOM killer stays on",
        ));
    }
    let _ = (m.use_hierarchy, m.check_before_update);
    let Some(limit) = limit else {
        return Ok(None);
    };
    const MIB: u64 = 1 << 20;
    let rounded = limit
        .checked_add(MIB - 1)
        .map(|b| b / MIB * MIB)
        .filter(|&b| b <= MAX_GUEST_MEMORY)
        .ok_or_else(|| {
            invalid(
                "linux.resources.memory.limit",
                format!(
                    "{limit} bytes is more than any guest can have ({} TiB)",
                    MAX_GUEST_MEMORY >> 40
                ),
            )
        })?;
    Ok(Some(rounded.max(MIN_GUEST_MEMORY)))
}

/// `cpu`: vCPUs from the quota or the CPU set, the host-side weight from the shares.
fn cpu(c: &OciCpu) -> Result<(Option<u32>, Option<u64>), BundleError> {
    let field = |name: &str| format!("linux.resources.cpu.{name}");
    let weight = match c.shares {
        None => None,
        // The kernel's range for cgroup v1 shares, and runc's conversion to v2's weight.
        Some(s @ 2..=262_144) => Some(1 + (s - 2) * 9999 / 262_142),
        Some(s) => {
            return Err(invalid(
                field("shares"),
                format!("{s} is not from 2 to 262144"),
            ))
        }
    };
    let period = match c.period {
        None => 100_000, // the kernel's default, in µs
        Some(p @ 1000..=1_000_000) => p,
        Some(p) => {
            return Err(invalid(
                field("period"),
                format!("{p} µs is not from 1000 to 1000000"),
            ))
        }
    };
    let too_many = |n: u64| {
        invalid(
            field("quota"),
            format!("asks for {n} vCPUs, more than flint's {MAX_VCPUS}"),
        )
    };
    let mut cpus = match c.quota {
        None | Some(-1) => None,
        Some(q) if q > 0 => {
            let q = q.unsigned_abs();
            // ceil(q / period), without overflow: period ≥ 1000.
            let n = q / period + u64::from(q % period != 0);
            Some(
                u32::try_from(n)
                    .ok()
                    .filter(|&n| n <= MAX_VCPUS)
                    .ok_or_else(|| too_many(n))?,
            )
        }
        Some(q) => {
            return Err(invalid(
                field("quota"),
                format!("{q} µs is not a quota (-1: no limit)"),
            ))
        }
    };
    if let Some(set) = c.cpus.as_deref().filter(|s| !s.is_empty()) {
        let n = cpu_list_count(&field("cpus"), set)?;
        if n > MAX_VCPUS {
            return Err(invalid(
                field("cpus"),
                format!("'{set}' has {n} CPUs, more than flint's {MAX_VCPUS} vCPUs"),
            ));
        }
        cpus = cpus.or(Some(n));
    }
    if let Some(set) = c.mems.as_deref().filter(|s| !s.is_empty()) {
        // The guest is one memory node: nothing to pin, but the list must be one.
        cpu_list_count(&field("mems"), set)?;
    }
    for (name, set) in [
        (
            "realtimeRuntime",
            c.realtime_runtime.is_some_and(|v| v != 0),
        ),
        ("realtimePeriod", c.realtime_period.is_some_and(|v| v != 0)),
        ("idle", c.idle.is_some_and(|v| v != 0)),
        ("burst", c.burst.is_some_and(|v| v != 0)),
    ] {
        if set {
            return Err(unsupported(
                field(name),
                "not applied to the VM (only quota, period, cpus and shares are)",
            ));
        }
    }
    Ok((cpus, weight))
}

/// How many distinct numbers a list such as `0-3,8,10-11` names (each below 4096).
fn cpu_list_count(field: &str, list: &str) -> Result<u32, BundleError> {
    const LIMIT: usize = 4096;
    let bad = || {
        invalid(
            field,
            format!("'{list}' is not a list of numbers below {LIMIT} such as 0-3,6"),
        )
    };
    let number = |s: &str| {
        s.parse::<usize>()
            .ok()
            .filter(|&n| n < LIMIT && !s.starts_with('+'))
            .ok_or_else(bad)
    };
    let mut seen = vec![false; LIMIT];
    for part in list.split(',') {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => (number(part)?, number(part)?),
        };
        if first > last {
            return Err(bad());
        }
        seen[first..=last].iter_mut().for_each(|s| *s = true);
    }
    // At most LIMIT: it fits.
    Ok(u32::try_from(seen.iter().filter(|&&s| s).count()).unwrap_or(u32::MAX))
}

/// Linux's resource numbers (asm-generic/resource.h).
fn rlimit_number(name: &str) -> Option<u32> {
    const NAMES: [&str; 16] = [
        "CPU",
        "FSIZE",
        "DATA",
        "STACK",
        "CORE",
        "RSS",
        "NPROC",
        "NOFILE",
        "MEMLOCK",
        "AS",
        "LOCKS",
        "SIGPENDING",
        "MSGQUEUE",
        "NICE",
        "RTPRIO",
        "RTTIME",
    ];
    let short = name.strip_prefix("RLIMIT_")?;
    NAMES
        .iter()
        .position(|n| *n == short)
        .and_then(|i| u32::try_from(i).ok())
}

/// Linux's capability numbers (linux/capability.h), in order.
const CAPABILITIES: [&str; 41] = [
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

fn cap_mask(set: &str, names: &[String]) -> Result<u64, BundleError> {
    let mut mask = 0u64;
    for n in names {
        let i = n
            .strip_prefix("CAP_")
            .and_then(|s| CAPABILITIES.iter().position(|c| *c == s))
            .ok_or_else(|| {
                invalid(
                    format!("process.capabilities.{set}"),
                    format!("unknown capability '{n}'"),
                )
            })?;
        mask |= 1 << i;
    }
    Ok(mask)
}

/// Checks that `process.args[0]` names an executable file in the rootfs (or a bind mount's
/// source), found the way the guest init will find it (the bundle's PATH for a bare name), so
/// a typo fails here and not after a boot.
fn check_executable(rootfs: &Path, spec: &RunSpec, shares: &[Share]) -> Result<(), BundleError> {
    let prog = &spec.args[0];
    let candidates: Vec<String> = if prog.contains('/') {
        if prog.starts_with('/') {
            vec![prog.clone()]
        } else {
            vec![format!("{}/{prog}", spec.cwd.trim_end_matches('/'))]
        }
    } else {
        let path = spec
            .env
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH);
        path.split(':')
            .filter(|d| d.starts_with('/'))
            .map(|d| format!("{}/{prog}", d.trim_end_matches('/')))
            .collect()
    };
    let mut found_not_executable = None;
    for c in &candidates {
        if let Some(host) = host_path(rootfs, spec, shares, c) {
            use std::os::unix::fs::PermissionsExt;
            match std::fs::metadata(&host) {
                Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => return Ok(()),
                Ok(m) if m.is_file() => found_not_executable = Some(c.clone()),
                _ => {}
            }
        }
    }
    Err(match found_not_executable {
        Some(c) => invalid(
            "process.args[0]",
            format!("{c} in the rootfs is not executable"),
        ),
        None if prog.contains('/') => invalid(
            "process.args[0]",
            format!("'{prog}' does not exist in the rootfs"),
        ),
        None => invalid(
            "process.args[0]",
            format!(
                "'{prog}' is not found in the rootfs (searched the bundle's PATH: {})",
                candidates
                    .iter()
                    .map(|c| c.rsplit_once('/').map_or("/", |(d, _)| d))
                    .collect::<Vec<_>>()
                    .join(":")
            ),
        ),
    })
}

/// The host path of the file `guest_path` names in the guest: in the source of a bind mount if
/// the last mount over it is one, else in the rootfs. Symlinks are followed inside the share
/// or the rootfs (one that leads from one to the other is not: this is a check for typos).
fn host_path(rootfs: &Path, spec: &RunSpec, shares: &[Share], guest_path: &str) -> Option<PathBuf> {
    let over = spec.mounts.iter().rev().find_map(|m| {
        let rest = Path::new(guest_path).strip_prefix(m.destination()).ok()?;
        Some((m, rest))
    });
    let Some((GuestMount::Share(m), rest)) = over else {
        return resolve_in_root(rootfs, guest_path);
    };
    let share = shares.iter().find(|s| s.tag == m.tag)?;
    if share.file {
        return rest.as_os_str().is_empty().then(|| share.path.clone());
    }
    resolve_in_root(&share.path, rest.to_str()?)
}

/// The host path of `guest_path` inside `root`, following symlinks as the guest would (an
/// absolute target starts again at `root`; `..` never leaves it). None if it does not exist.
pub fn resolve_in_root(root: &Path, guest_path: &str) -> Option<PathBuf> {
    let mut pending: Vec<String> = components(guest_path).into_iter().rev().collect();
    let mut resolved: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(c) = pending.pop() {
        if c == ".." {
            resolved.pop();
            continue;
        }
        let host = resolved
            .iter()
            .fold(root.to_path_buf(), |p, s| p.join(s))
            .join(&c);
        let meta = std::fs::symlink_metadata(&host).ok()?;
        if meta.file_type().is_symlink() {
            links += 1;
            if links > 40 {
                return None; // ELOOP
            }
            let target = std::fs::read_link(&host).ok()?;
            let target = target.to_str()?;
            if target.starts_with('/') {
                resolved.clear();
            }
            pending.extend(components(target).into_iter().rev());
        } else {
            resolved.push(c);
        }
    }
    Some(resolved.iter().fold(root.to_path_buf(), |p, s| p.join(s)))
}

fn components(path: &str) -> Vec<String> {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => s.to_str().map(str::to_string),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A bundle directory with a rootfs holding an executable /bin/sh and a /usr/bin/env link.
    struct TestBundle(PathBuf);

    impl TestBundle {
        fn new(config: &str) -> TestBundle {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "flint-bundle-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let bin = dir.join("rootfs/bin");
            std::fs::create_dir_all(&bin).unwrap();
            std::fs::create_dir_all(dir.join("rootfs/usr/bin")).unwrap();
            std::fs::write(bin.join("sh"), b"#!x").unwrap();
            std::fs::set_permissions(bin.join("sh"), std::fs::Permissions::from_mode(0o755))
                .unwrap();
            std::fs::write(bin.join("data"), b"x").unwrap();
            std::os::unix::fs::symlink("/bin/sh", dir.join("rootfs/usr/bin/env")).unwrap();
            std::fs::write(dir.join("config.json"), config).unwrap();
            TestBundle(dir)
        }
        fn load(&self) -> Result<Bundle, BundleError> {
            Bundle::load(&self.0)
        }
    }

    impl Drop for TestBundle {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn config(process: &str, extra: &str) -> String {
        format!(
            r#"{{"ociVersion": "1.0.2", "root": {{"path": "rootfs"}}, "process": {process}{extra}}}"#
        )
    }

    const PROCESS: &str = r#"{"args": ["sh", "-c", "echo hi"], "env": ["PATH=/usr/bin:/bin", "A=b c"], "cwd": "/tmp"}"#;

    fn err(config: &str) -> String {
        TestBundle::new(config).load().unwrap_err().to_string()
    }

    #[test]
    fn a_minimal_bundle_becomes_a_run_spec() {
        let b = TestBundle::new(&config(PROCESS, ""));
        let bundle = b.load().unwrap();
        assert_eq!(
            bundle.rootfs,
            std::fs::canonicalize(b.0.join("rootfs")).unwrap()
        );
        let s = bundle.spec;
        assert_eq!(s.args, ["sh", "-c", "echo hi"]);
        assert_eq!(s.env, ["PATH=/usr/bin:/bin", "A=b c"]);
        assert_eq!(s.cwd, "/tmp");
        assert_eq!(
            (s.uid, s.gid, s.terminal, s.root_readonly),
            (0, 0, false, false)
        );
        assert!(s.caps.is_none() && s.mounts.is_empty());
    }

    #[test]
    fn crun_spec_defaults_are_honoured() {
        // The shape `crun spec` writes (terminal off, as a user running it from a script would).
        let process = r#"{"terminal": false, "user": {"uid": 1000, "gid": 100, "additionalGids": [5, 6]},
            "args": ["/usr/bin/env"], "env": ["PATH=/bin"], "cwd": "/",
            "capabilities": {"bounding": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                             "effective": ["CAP_KILL"], "inheritable": [], "permitted": ["CAP_KILL"], "ambient": []},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 512}],
            "noNewPrivileges": true}"#;
        let extra = r#", "hostname": "box", "root": {"path": "rootfs", "readonly": true},
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                       {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                       {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}],
            "linux": {"namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "mount"}],
                      "resources": {"devices": [{"allow": false, "access": "rwm"}]},
                      "maskedPaths": ["/proc/kcore"], "readonlyPaths": ["/proc/sys"],
                      "sysctl": {"net.ipv4.ip_forward": "1"}}"#;
        // Written without the duplicate "root" key: serde would refuse it.
        let json = format!(
            r#"{{"ociVersion": "1.0.0", "process": {process}{}}}"#,
            extra
        );
        let s = TestBundle::new(&json).load().unwrap().spec;
        assert_eq!(
            (s.uid, s.gid, s.additional_gids.clone()),
            (1000, 100, vec![5, 6])
        );
        let caps = s.caps.unwrap();
        assert_eq!(caps.bounding, 1 << 29 | 1 << 5 | 1 << 10);
        assert_eq!(
            (caps.effective, caps.permitted, caps.ambient),
            (1 << 5, 1 << 5, 0)
        );
        assert_eq!(
            s.rlimits,
            [Rlimit {
                resource: 7,
                soft: 512,
                hard: 1024
            }]
        );
        assert!(s.no_new_privileges && s.root_readonly);
        assert_eq!(s.hostname.as_deref(), Some("box"));
        assert_eq!(s.mounts.len(), 3);
        let dev = new_mount(&s.mounts[1]);
        assert_eq!(dev.flags, libc::MS_NOSUID | libc::MS_STRICTATIME);
        assert_eq!(dev.data, "mode=755,size=65536k");
        assert_eq!(
            new_mount(&s.mounts[2]).flags,
            libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_NODEV | libc::MS_RDONLY
        );
        assert_eq!(s.masked_paths, ["/proc/kcore"]);
        assert_eq!(s.readonly_paths, ["/proc/sys"]);
        assert_eq!(
            s.sysctl,
            [("net.ipv4.ip_forward".to_string(), "1".to_string())]
        );
    }

    #[test]
    fn bad_bundles_say_what_is_wrong() {
        assert!(
            err("{").starts_with("config.json is not valid: EOF"),
            "{}",
            err("{")
        );
        assert!(err(&config(PROCESS, r#", "bogus": 1"#)).contains("unknown field `bogus`"));
        assert!(
            err(r#"{"ociVersion": "1.0.2", "root": {"path": "rootfs"}}"#)
                .contains("process: missing")
        );
        assert!(err(&config(r#"{"args": [], "cwd": "/"}"#, "")).contains("process.args: missing"));
        assert!(err(&config(r#"{"args": ["sh"], "cwd": "tmp"}"#, ""))
            .contains("process.cwd: 'tmp' is not an absolute path"));
        assert!(err(&config(
            r#"{"args": ["sh"], "cwd": "/", "env": ["=x"]}"#,
            ""
        ))
        .contains("'=x' is not NAME=VALUE"));
        assert!(err(&config(PROCESS, r#", "ociVersion": "0.9""#)).contains("duplicate field"));
        assert!(err(r#"{"ociVersion": "2.0", "process": {"args": ["sh"], "cwd": "/"}, "root": {"path": "rootfs"}}"#).contains("not a 1.x"));
        assert!(err(r#"{"ociVersion": "1.0", "process": {"args": ["sh"], "cwd": "/"}, "root": {"path": "nope"}}"#).contains("root.path:"));
    }

    #[test]
    fn what_flint_cannot_honour_is_refused() {
        let cases = [
            (
                r#", "hooks": {"prestart": [{"path": "/bin/true"}]}"#,
                "hooks is not supported",
            ),
            (
                r#", "mounts": [{"destination": "/data", "type": "bind", "source": "/nonexistent-flint-source", "options": ["rbind"]}]"#,
                "the source /nonexistent-flint-source does not exist",
            ),
            (
                r#", "mounts": [{"destination": "/null", "type": "none", "source": "/dev/null", "options": ["bind"]}]"#,
                "the source /dev/null is a character device",
            ),
            (
                r#", "mounts": [{"destination": "/n", "type": "nfs", "source": "h:/x"}]"#,
                "filesystem type 'nfs'",
            ),
            (
                r#", "linux": {"namespaces": [{"type": "pid", "path": "/proc/1/ns/pid"}]}"#,
                "linux.namespaces (pid with a path) is not supported by flint: the VM is its own pid namespace; joining another (another container's, as in a pod sharing its processes) is not supported",
            ),
            (
                r#", "linux": {"seccomp": {"defaultAction": "SCMP_ACT_NOTIFY"}}"#,
                "linux.seccomp.defaultAction is not supported",
            ),
            (
                r#", "linux": {"resources": {"memory": {"kernel": 1000}}}"#,
                "linux.resources.memory.kernel is not supported",
            ),
            (
                r#", "linux": {"devices": [{"path": "/dev/sda", "type": "b", "major": 8, "minor": 0}]}"#,
                "linux.devices",
            ),
            (r#", "windows": {}"#, "windows is not supported"),
        ];
        for (extra, want) in cases {
            let e = err(&config(PROCESS, extra));
            assert!(e.contains(want), "{extra}: {e}");
        }
        let cap = r#"{"args": ["sh"], "cwd": "/", "capabilities": {"bounding": ["CAP_FLY"]}}"#;
        assert!(err(&config(cap, "")).contains("unknown capability 'CAP_FLY'"));
        let rl = r#"{"args": ["sh"], "cwd": "/", "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 9, "hard": 1}]}"#;
        assert!(err(&config(rl, "")).contains("soft limit 9 is above the hard limit 1"));
        // Empty sections are fine.
        let ok = config(
            PROCESS,
            r#", "hooks": {}, "linux": {"seccomp": null, "resources": {"devices": []}}"#,
        );
        TestBundle::new(&ok).load().unwrap();
    }

    /// The `mount` record `m` is (a test failure if it is a bind).
    fn new_mount(m: &GuestMount) -> &Mount {
        match m {
            GuestMount::New(m) => m,
            other => panic!("not a new file system: {other:?}"),
        }
    }

    /// A config whose mounts are `mounts` (JSON objects).
    fn with_mounts(mounts: &[String]) -> String {
        config(PROCESS, &format!(r#", "mounts": [{}]"#, mounts.join(", ")))
    }

    /// A bind mount of `source` on `destination` with `options`, as JSON.
    fn bind(source: &Path, destination: &str, options: &[&str]) -> String {
        format!(
            r#"{{"destination": "{destination}", "type": "bind", "source": "{}", "options": {:?}}}"#,
            source.display(),
            options
        )
    }

    /// Whether the encoded spec has the record of `items` (keyword and arguments).
    fn has_record(spec: &RunSpec, items: &[&str]) -> bool {
        let bytes = spec.encode().unwrap();
        let record: Vec<u8> = items
            .iter()
            .flat_map(|i| [i.as_bytes(), b"\0"])
            .flatten()
            .copied()
            .collect();
        bytes.windows(record.len()).any(|w| w == record)
    }

    #[test]
    fn a_bind_of_a_host_directory_becomes_a_share() {
        let b = TestBundle::new("{}");
        let data = b.0.join("host data");
        std::fs::create_dir(&data).unwrap();
        let tmpfs = r#"{"destination": "/data", "type": "tmpfs", "source": "tmpfs"}"#.to_string();
        // After the tmpfs it binds into: one list, in the bundle's order.
        let json = with_mounts(&[
            tmpfs,
            bind(&data, "/data/x", &["rbind", "rprivate", "nosuid", "nodev"]),
        ]);
        std::fs::write(b.0.join("config.json"), json).unwrap();
        let bundle = b.load().unwrap();
        let path = std::fs::canonicalize(&data).unwrap();
        assert_eq!(
            bundle.shares,
            [Share {
                tag: "flint-fs0".into(),
                path,
                read_only: false,
                file: false
            }]
        );
        let s = &bundle.spec;
        assert_eq!(new_mount(&s.mounts[0]).destination, "/data");
        let flags = libc::MS_NOSUID | libc::MS_NODEV;
        assert_eq!(
            s.mounts[1],
            GuestMount::Share(ShareMount {
                tag: "flint-fs0".into(),
                subpath: "".into(),
                destination: "/data/x".into(),
                flags,
                data: "".into(),
            })
        );
        assert!(has_record(
            s,
            &[
                "fs-mount",
                "flint-fs0",
                "",
                "/data/x",
                &flags.to_string(),
                ""
            ]
        ));
        assert!(s.root_fs.is_none());
    }

    #[test]
    fn one_share_per_directory_and_access_mode() {
        let b = TestBundle::new("{}");
        let data = b.0.join("data");
        std::fs::create_dir(&data).unwrap();
        std::os::unix::fs::symlink("data", b.0.join("link")).unwrap();
        let json = with_mounts(&[
            bind(&data, "/a", &["bind"]),
            bind(&b.0.join("link"), "/b", &["rbind"]), // the same directory
            bind(&data, "/c", &["rbind", "ro"]),
            bind(&data, "/d", &["ro", "rw"]), // the last wins
            bind(&data, "/e", &["rw", "ro"]),
        ]);
        std::fs::write(b.0.join("config.json"), json).unwrap();
        let bundle = b.load().unwrap();
        let path = std::fs::canonicalize(&data).unwrap();
        let share = |tag: &str, read_only| Share {
            tag: tag.into(),
            path: path.clone(),
            read_only,
            file: false,
        };
        assert_eq!(
            bundle.shares,
            [share("flint-fs0", false), share("flint-fs1", true)]
        );
        let tags: Vec<(&str, u64)> = bundle
            .spec
            .mounts
            .iter()
            .map(|m| match m {
                GuestMount::Share(m) => (m.tag.as_str(), m.flags),
                other => panic!("{other:?}"),
            })
            .collect();
        let ro = libc::MS_RDONLY;
        assert_eq!(
            tags,
            [
                ("flint-fs0", 0),
                ("flint-fs0", 0),
                ("flint-fs1", ro),
                ("flint-fs0", 0),
                ("flint-fs1", ro)
            ]
        );
    }

    #[test]
    fn a_bind_of_a_host_file_shares_the_file_under_its_name() {
        let b = TestBundle::new("{}");
        std::fs::create_dir(b.0.join("etc")).unwrap();
        std::fs::write(b.0.join("etc/my hosts"), b"127.0.0.1 x\n").unwrap();
        // Relative sources are in the bundle directory.
        let json = with_mounts(&[
            bind(Path::new("etc/my hosts"), "/etc/my-hosts", &["rbind", "ro"]),
            bind(Path::new("etc"), "/mnt/etc", &["rbind"]),
        ]);
        std::fs::write(b.0.join("config.json"), json).unwrap();
        let bundle = b.load().unwrap();
        let etc = std::fs::canonicalize(b.0.join("etc")).unwrap();
        assert_eq!(
            bundle.shares,
            [
                Share {
                    tag: "flint-fs0".into(),
                    path: etc.join("my hosts"),
                    read_only: true,
                    file: true
                },
                Share {
                    tag: "flint-fs1".into(),
                    path: etc,
                    read_only: false,
                    file: false
                }
            ]
        );
        assert!(has_record(
            &bundle.spec,
            &[
                "fs-mount",
                "flint-fs0",
                "my hosts",
                "/etc/my-hosts",
                &libc::MS_RDONLY.to_string(),
                ""
            ]
        ));
        assert!(has_record(
            &bundle.spec,
            &["fs-mount", "flint-fs1", "", "/mnt/etc", "0", ""]
        ));
    }

    #[test]
    fn a_bind_whose_source_cannot_be_shared_is_refused() {
        let b = TestBundle::new("{}");
        let load = |mount: String| {
            std::fs::write(b.0.join("config.json"), with_mounts(&[mount])).unwrap();
            b.load().unwrap_err().to_string()
        };
        let missing = b.0.join("missing");
        assert_eq!(
            load(bind(Path::new("missing"), "/data", &["rbind"])),
            format!(
                "mounts[0] (/data): the source {} does not exist (create it on the host, or correct mounts[0].source)",
                missing.display()
            )
        );
        let sock = b.0.join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert_eq!(
            load(bind(&sock, "/s", &["bind"])),
            format!(
                "mounts[0] (/s) is not supported by flint: the source {} is a socket: only a directory or a regular file can be shared with the guest",
                sock.display()
            )
        );
        let no_source = r#"{"destination": "/d", "type": "bind"}"#.to_string();
        assert!(load(no_source).contains("mounts[0] (/d): a bind mount needs a source"));
        let dir = b.0.join("rootfs");
        assert!(load(bind(&dir, "/d", &["bind", "mode=755"]))
            .contains("option 'mode=755' on a bind mount"));
        assert!(load(bind(&dir, "/d", &["bind", "sync"])).contains("sync, dirsync and mand"));
        assert!(
            load(bind(&dir, "/d", &["bind", "idmap"])).contains("option 'idmap' is not supported")
        );
    }

    #[test]
    fn the_executable_may_come_from_a_bind() {
        let b = TestBundle::new("{}");
        let tools = b.0.join("tools");
        std::fs::create_dir(&tools).unwrap();
        let exe = |path: &Path| {
            std::fs::write(path, b"#!x").unwrap();
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        exe(&tools.join("run"));
        exe(&b.0.join("tool"));
        let load = |args: &str| {
            let process =
                format!(r#"{{"args": {args}, "env": ["PATH=/opt/bin:/bin"], "cwd": "/"}}"#);
            let mounts = [
                bind(&tools, "/opt/tools", &["rbind"]),
                bind(&b.0.join("tool"), "/opt/bin/tool", &["rbind", "ro"]),
            ];
            let json = config(&process, &format!(r#", "mounts": [{}]"#, mounts.join(", ")));
            std::fs::write(b.0.join("config.json"), json).unwrap();
            b.load().map(|_| ()).map_err(|e| e.to_string())
        };
        assert_eq!(load(r#"["/opt/tools/run"]"#), Ok(()));
        assert_eq!(load(r#"["tool"]"#), Ok(())); // a file bind, through PATH
        assert_eq!(load(r#"["sh"]"#), Ok(())); // the rootfs still
        let e = load(r#"["/opt/tools/nope"]"#).unwrap_err();
        assert!(e.contains("'/opt/tools/nope' does not exist"), "{e}");
    }

    #[test]
    fn a_live_root_is_a_share_and_no_image() {
        let b = TestBundle::new("{}");
        let data = b.0.join("data");
        std::fs::create_dir(&data).unwrap();
        let json = format!(
            r#"{{"ociVersion": "1.0.2", "root": {{"path": "rootfs", "readonly": true}}, "process": {PROCESS}, "mounts": [{}]}}"#,
            bind(&data, "/data", &["rbind"])
        );
        std::fs::write(b.0.join("config.json"), json).unwrap();
        // No cache is used: a path that cannot be one shows it.
        let cache = b.0.join("rootfs/bin/sh/no-cache");
        let live = crate::PrepareOptions {
            live_root: true,
            ..Default::default()
        };
        let plan = crate::prepare_with(&b.0, &cache, &live).unwrap();
        assert_eq!(plan.image, None);
        let rootfs = std::fs::canonicalize(b.0.join("rootfs")).unwrap();
        assert_eq!(
            plan.shares,
            [
                Share {
                    tag: ROOT_TAG.into(),
                    path: rootfs,
                    read_only: true,
                    file: false
                },
                Share {
                    tag: "flint-fs0".into(),
                    path: std::fs::canonicalize(&data).unwrap(),
                    read_only: false,
                    file: false
                }
            ]
        );
        let tail: Vec<u8> = b"root-readonly\x001\x00root-fs\x00flint-root\x00".to_vec();
        assert!(plan.spec.windows(tail.len()).any(|w| w == tail));
        assert!(plan.initramfs().is_ok());

        // Without a live root, the spec has no root-fs record and the rootfs no share.
        let mut bundle = b.load().unwrap();
        assert!(!has_record(&bundle.spec, &["root-fs", ROOT_TAG]));
        assert_eq!(bundle.shares.len(), 1);
        bundle.share_root();
        assert!(has_record(&bundle.spec, &["root-fs", ROOT_TAG]));
        bundle.share_root(); // once
        assert_eq!(bundle.shares.len(), 2);
    }

    #[test]
    fn the_executable_is_looked_up_like_the_guest_will() {
        let run = |args: &str, env: &str, cwd: &str| {
            let p = format!(r#"{{"args": {args}, "env": {env}, "cwd": "{cwd}"}}"#);
            TestBundle::new(&config(&p, ""))
                .load()
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        assert_eq!(run(r#"["sh"]"#, r#"["PATH=/nope:/bin"]"#, "/"), Ok(()));
        assert_eq!(run(r#"["env"]"#, r#"[]"#, "/"), Ok(())); // default PATH, through a symlink
        assert_eq!(run(r#"["/usr/bin/env"]"#, r#"[]"#, "/"), Ok(()));
        assert_eq!(run(r#"["./sh"]"#, r#"[]"#, "/bin"), Ok(()));
        assert_eq!(run(r#"["../../bin/sh"]"#, r#"[]"#, "/"), Ok(())); // .. stops at the root
        let e = run(r#"["nosuch"]"#, r#"["PATH=/usr/bin:/bin"]"#, "/").unwrap_err();
        assert!(
            e.contains(
                "'nosuch' is not found in the rootfs (searched the bundle's PATH: /usr/bin:/bin)"
            ),
            "{e}"
        );
        let e = run(r#"["/bin/data"]"#, "[]", "/").unwrap_err();
        assert!(
            e.contains("/bin/data in the rootfs is not executable"),
            "{e}"
        );
        let e = run(r#"["/sbin/init"]"#, "[]", "/").unwrap_err();
        assert!(
            e.contains("'/sbin/init' does not exist in the rootfs"),
            "{e}"
        );
        let e = run(r#"["sh"]"#, r#"["PATH=/usr/sbin"]"#, "/").unwrap_err();
        assert!(e.contains("not found"), "{e}");
    }

    #[test]
    fn symlinks_never_leave_the_root() {
        let b = TestBundle::new(&config(PROCESS, ""));
        let root = b.0.join("rootfs");
        std::os::unix::fs::symlink("../../../../../../bin", root.join("up")).unwrap();
        assert_eq!(resolve_in_root(&root, "/up/sh"), Some(root.join("bin/sh")));
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        assert_eq!(resolve_in_root(&root, "/loop"), None);
    }

    #[test]
    fn the_root_stays_inside_the_bundle() {
        let with_root = |b: &TestBundle, root: &str| {
            let c = format!(
                r#"{{"ociVersion": "1.0.2", "root": {{"path": "{root}"}}, "process": {PROCESS}}}"#
            );
            std::fs::write(b.0.join("config.json"), c).unwrap();
            b.load()
        };
        let b = TestBundle::new(&config(PROCESS, ""));
        // The host's own root has a /bin/sh too: without the check it would pass.
        std::os::unix::fs::symlink("/", b.0.join("host")).unwrap();
        std::fs::create_dir_all(b.0.join("rootfs/inner")).unwrap();
        std::os::unix::fs::symlink("/", b.0.join("rootfs/escape")).unwrap();
        for root in ["/", "..", "../..", "rootfs/../..", "host", "rootfs/escape"] {
            let e = with_root(&b, root).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("root.path: '{root}' leads to "))
                    && e.contains("outside the bundle")
                    && e.ends_with("(put the rootfs inside the bundle directory)"),
                "{root}: {e}"
            );
        }
        // A symlink inside the bundle is resolved; an absolute path inside it is fine.
        let real = std::fs::canonicalize(b.0.join("rootfs")).unwrap();
        std::os::unix::fs::symlink("rootfs", b.0.join("link")).unwrap();
        assert_eq!(with_root(&b, "link").unwrap().rootfs, real);
        let abs = real.to_str().unwrap().to_string();
        assert_eq!(with_root(&b, &abs).unwrap().rootfs, real);
        assert_eq!(with_root(&b, "rootfs/inner/..").unwrap().rootfs, real);
        // As an OCI runtime (podman's root is its storage's mount, elsewhere): allowed, but
        // it must still be a directory.
        let elsewhere = TestBundle::new(&config(PROCESS, ""));
        let outside = std::fs::canonicalize(elsewhere.0.join("rootfs")).unwrap();
        with_root(&b, outside.to_str().unwrap()).unwrap_err();
        let loaded = Bundle::load_with(&b.0, true).unwrap();
        assert_eq!(loaded.rootfs, outside);
        with_root(&b, "/etc/hostname").unwrap_err();
        let e = Bundle::load_with(&b.0, true).unwrap_err().to_string();
        assert_eq!(e, "root.path: /etc/hostname is not a directory");
    }

    #[test]
    fn not_a_bundle() {
        let e = Bundle::load(Path::new("/nonexistent-bundle")).unwrap_err();
        assert_eq!(e.to_string(), "no such file");
        let b = TestBundle::new("{}");
        std::fs::remove_file(b.0.join("config.json")).unwrap();
        assert_eq!(
            b.load().unwrap_err().to_string(),
            "config.json: no such file"
        );
        let e = Bundle::load(&b.0.join("rootfs/bin/sh")).unwrap_err();
        assert!(e.to_string().contains("not a directory"));
    }

    /// Found by the `oci_bundle` fuzz target: flint accepted a umask the guest init refuses,
    /// so the bundle failed in the guest (exit 125) instead of before the boot.
    #[test]
    fn a_umask_beyond_0777_is_refused_before_the_boot() {
        let user =
            |umask: u32| format!(r#"{{"user": {{"umask": {umask}}}, "args": ["sh"], "cwd": "/"}}"#);
        assert_eq!(
            err(&config(&user(1000), "")),
            "process.user.umask: 1000 is more than 0777 (511)"
        );
        let s = TestBundle::new(&config(&user(0o777), ""))
            .load()
            .unwrap()
            .spec;
        assert_eq!(s.umask, Some(0o777));
    }

    /// A bundle from a fixture in testdata/, its host paths (`@BUNDLE@`) in the bundle
    /// directory and its network namespace (`@NETNS@`) this process's.
    fn fixture(name: &str, edit: impl FnOnce(&mut Value)) -> TestBundle {
        let b = TestBundle::new("{}");
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("testdata")
                .join(name),
        )
        .unwrap()
        .replace("@BUNDLE@", b.0.to_str().unwrap())
        .replace("@NETNS@", "/proc/self/ns/net");
        let mut json: Value = serde_json::from_str(&text).unwrap();
        edit(&mut json);
        std::fs::write(b.0.join("config.json"), json.to_string()).unwrap();
        b
    }

    /// podman's generated files, as `podman run` leaves them in the container's userdata.
    fn podman_userdata(b: &TestBundle) {
        let ud = b.0.join("userdata");
        std::fs::create_dir_all(ud.join("shm")).unwrap();
        std::fs::write(
            ud.join("hosts"),
            "127.0.0.1\tlocalhost\n10.88.0.5\t3f1e0c4b9a7d\n",
        )
        .unwrap();
        std::fs::write(ud.join("hostname"), "3f1e0c4b9a7d\n").unwrap();
        std::fs::write(ud.join("resolv.conf"), "nameserver 10.88.0.1\n").unwrap();
        std::fs::write(
            ud.join(".containerenv"),
            "engine=\"podman-4.3.1\"\nname=\"x\"\n",
        )
        .unwrap();
        std::fs::set_permissions(
            ud.join(".containerenv"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }

    fn file_mount(destination: &str, mode: u32, flags: u64, content: &str) -> GuestMount {
        GuestMount::File(FileMount {
            destination: destination.into(),
            mode,
            flags,
            content: content.into(),
        })
    }

    #[test]
    fn podmans_default_config_runs() {
        let b = fixture("podman-4.3-config.json", |_| {});
        podman_userdata(&b);
        let bundle = b.load().unwrap();
        let s = &bundle.spec;
        // No share at all: the generated files are copied, /dev/shm is the guest's.
        assert_eq!(bundle.shares, []);
        let nosuid_noexec_nodev = libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_NODEV;
        assert_eq!(
            s.mounts[5..10],
            [
                file_mount("/etc/resolv.conf", 0o644, 0, "nameserver 10.88.0.1\n"),
                file_mount(
                    "/etc/hosts",
                    0o644,
                    0,
                    "127.0.0.1\tlocalhost\n10.88.0.5\t3f1e0c4b9a7d\n"
                ),
                GuestMount::New(Mount {
                    destination: "/dev/shm".into(),
                    fstype: "tmpfs".into(),
                    source: "shm".into(),
                    flags: nosuid_noexec_nodev,
                    data: "mode=1777,size=65536k".into(),
                }),
                file_mount(
                    "/run/.containerenv",
                    0o600,
                    0,
                    "engine=\"podman-4.3.1\"\nname=\"x\"\n"
                ),
                file_mount("/etc/hostname", 0o644, 0, "3f1e0c4b9a7d\n"),
            ]
        );
        assert_eq!(new_mount(&s.mounts[10]).fstype, "cgroup");
        assert!(has_record(
            s,
            &["file", "/etc/hostname", "420", "0", "3f1e0c4b9a7d\n"]
        ));
        // The profile is compiled and passed; the resources and namespace are mapped.
        let profile = crate::seccomp::tests::compile_json(crate::seccomp::tests::PODMAN).unwrap();
        assert_eq!(s.seccomp.as_ref(), Some(&profile));
        assert_eq!((s.oom_score_adj, s.pids_limit), (Some(0), Some(2048)));
        assert_eq!(
            bundle.resources,
            Resources {
                pids_limit: Some(2048),
                ..Resources::default()
            }
        );
        assert_eq!(
            bundle.netns.as_deref(),
            Some(Path::new("/proc/self/ns/net"))
        );
        assert_eq!(
            s.sysctl,
            [("net.ipv4.ping_group_range".into(), "0 0".into())]
        );
        assert_eq!(s.caps.unwrap().bounding.count_ones(), 11);

        // The guest init reads all of it back.
        let out = crate::init_tests::print_spec("podman", &s.encode().unwrap());
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            crate::init_tests::expected(s)
        );

        // The plan carries what the runtime needs.
        let live = crate::PrepareOptions {
            live_root: true,
            ..Default::default()
        };
        let plan = crate::prepare_with(&b.0, &b.0.join("no-cache"), &live).unwrap();
        assert_eq!(plan.netns, bundle.netns);
        assert_eq!(plan.resources.pids_limit, Some(2048));
        assert!(plan.initramfs().is_ok());
    }

    #[test]
    fn podman_resource_options_size_the_vm() {
        let with = |resources: Value| {
            let b = fixture("podman-4.3-config.json", |j| {
                j["linux"]["resources"] = resources;
            });
            podman_userdata(&b);
            b.load().map(|b| b.resources).map_err(|e| e.to_string())
        };
        // --memory 512m+1 --memory-swap 1g --cpus 1.5 --cpu-shares 512
        let r = with(serde_json::json!({
            "memory": {"limit": 536_870_913_i64, "swap": 1_073_741_824_i64},
            "cpu": {"shares": 512, "quota": 150_000, "period": 100_000},
            "pids": {"limit": -1}
        }))
        .unwrap();
        assert_eq!(r.memory_bytes, Some(513 << 20));
        assert_eq!(r.memory_mib(), Some(513));
        assert_eq!(r.cpus, Some(2));
        assert_eq!(r.cpu_weight, Some(20)); // runc: 1 + (512 - 2) * 9999 / 262142
        assert_eq!(r.pids_limit, None);
        // --cpuset-cpus, a tiny --memory, the extreme shares.
        let r = with(serde_json::json!({
            "memory": {"limit": 1000, "reservation": 500, "swappiness": 60},
            "cpu": {"cpus": "0-2,5,2-3", "mems": "0", "shares": 2}
        }))
        .unwrap();
        assert_eq!(
            (r.memory_bytes, r.cpus, r.cpu_weight),
            (Some(64 << 20), Some(5), Some(1))
        );
        let r =
            with(serde_json::json!({"cpu": {"quota": 100_000, "cpus": "0-7", "shares": 262_144}}))
                .unwrap();
        assert_eq!((r.cpus, r.cpu_weight), (Some(1), Some(10_000))); // the quota wins
        let r =
            with(serde_json::json!({"cpu": {"quota": 1_000_001, "period": 1_000_000}})).unwrap();
        assert_eq!(r.cpus, Some(2));

        let cases = [
            (
                serde_json::json!({"memory": {"limit": 0}}),
                "linux.resources.memory.limit: 0 is not a size in bytes (-1: no limit)",
            ),
            (
                serde_json::json!({"memory": {"limit": -2}}),
                "linux.resources.memory.limit: -2 is not a size",
            ),
            (
                serde_json::json!({"memory": {"limit": i64::MAX}}),
                "bytes is more than any guest can have",
            ),
            (
                serde_json::json!({"memory": {"limit": 1_000_000, "swap": 1000}}),
                "linux.resources.memory.swap: 1000 is below memory.limit 1000000",
            ),
            (
                serde_json::json!({"memory": {"swappiness": 101}}),
                "swappiness: more than 100",
            ),
            (
                serde_json::json!({"memory": {"disableOOMKiller": true}}),
                "disableOOMKiller is not supported",
            ),
            (
                serde_json::json!({"memory": {"kernelTCP": 1}}),
                "memory.kernel is not supported",
            ),
            (
                serde_json::json!({"cpu": {"shares": 1}}),
                "linux.resources.cpu.shares: 1 is not from 2 to 262144",
            ),
            (
                serde_json::json!({"cpu": {"shares": 0}}),
                "cpu.shares: 0 is not",
            ),
            (
                serde_json::json!({"cpu": {"quota": 0}}),
                "linux.resources.cpu.quota: 0 µs is not a quota",
            ),
            (
                serde_json::json!({"cpu": {"quota": 100_000, "period": 0}}),
                "linux.resources.cpu.period: 0 µs is not from 1000 to 1000000",
            ),
            (
                serde_json::json!({"cpu": {"quota": i64::MAX, "period": 1000}}),
                "asks for 9223372036854776 vCPUs, more than flint's 255",
            ),
            (
                serde_json::json!({"cpu": {"cpus": "0-300"}}),
                "'0-300' has 301 CPUs, more than flint's 255",
            ),
            (
                serde_json::json!({"cpu": {"cpus": "3-1"}}),
                "linux.resources.cpu.cpus: '3-1' is not a list",
            ),
            (
                serde_json::json!({"cpu": {"cpus": "0,,1"}}),
                "is not a list",
            ),
            (
                serde_json::json!({"cpu": {"cpus": "99999"}}),
                "is not a list",
            ),
            (
                serde_json::json!({"cpu": {"mems": "x"}}),
                "linux.resources.cpu.mems: 'x'",
            ),
            (
                serde_json::json!({"cpu": {"realtimeRuntime": 950_000}}),
                "cpu.realtimeRuntime is not supported",
            ),
            (
                serde_json::json!({"pids": {"limit": -2}}),
                "linux.resources.pids.limit: -2 is not from 1 to 4194304",
            ),
            (
                serde_json::json!({"pids": {"limit": 4_194_305}}),
                "4194305 is not from 1",
            ),
            (
                serde_json::json!({"blockIO": {"weight": 500}}),
                "linux.resources.blockIO is not supported",
            ),
            (
                serde_json::json!({"hugepageLimits": [{"pageSize": "2MB", "limit": 1}]}),
                "hugepageLimits is not supported",
            ),
            (
                serde_json::json!({"unified": {"memory.high": "1G"}}),
                "linux.resources.unified is not supported",
            ),
            (
                serde_json::json!({"devices": [{"allow": true, "type": "x"}]}),
                "linux.resources.devices",
            ),
            (serde_json::json!({"frobs": 1}), "unknown field `frobs`"),
        ];
        for (resources, want) in cases {
            let e = with(resources.clone()).unwrap_err();
            assert!(e.contains(want) && !e.contains('\n'), "{resources}: {e}");
        }
        // Empty sections ask nothing.
        assert_eq!(
            with(serde_json::json!({"blockIO": {}, "unified": {}, "network": null})).unwrap(),
            Resources::default()
        );
    }

    #[test]
    fn containerds_default_config_runs() {
        let b = fixture("containerd-1.6-config.json", |_| {});
        std::fs::create_dir(b.0.join("host-etc")).unwrap();
        std::fs::write(b.0.join("host-etc/hosts"), "127.0.0.1 localhost\n").unwrap();
        std::fs::write(b.0.join("host-etc/resolv.conf"), "nameserver 192.0.2.1\n").unwrap();
        let bundle = b.load().unwrap();
        let s = &bundle.spec;
        assert_eq!(bundle.shares, []);
        assert_eq!(bundle.netns, None);
        assert_eq!(bundle.resources, Resources::default());
        assert_eq!(s.pids_limit, None);
        assert!(s.no_new_privileges);
        assert_eq!(new_mount(&s.mounts[3]).data, "mode=1777,size=65536k");
        assert_eq!(
            s.mounts[7..],
            [
                file_mount(
                    "/etc/hosts",
                    0o644,
                    libc::MS_RDONLY,
                    "127.0.0.1 localhost\n"
                ),
                file_mount(
                    "/etc/resolv.conf",
                    0o644,
                    libc::MS_RDONLY,
                    "nameserver 192.0.2.1\n"
                ),
            ]
        );
        let profile =
            crate::seccomp::tests::compile_json(crate::seccomp::tests::CONTAINERD).unwrap();
        assert_eq!(s.seccomp.as_ref(), Some(&profile));
        let out = crate::init_tests::print_spec("containerd", &s.encode().unwrap());
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            crate::init_tests::expected(s)
        );
    }

    #[test]
    fn only_the_generated_files_are_copied() {
        let b = TestBundle::new("{}");
        std::fs::write(b.0.join("hosts"), "x\n").unwrap();
        std::fs::create_dir(b.0.join("dir")).unwrap();
        let load = |mounts: &[String]| {
            std::fs::write(b.0.join("config.json"), with_mounts(mounts)).unwrap();
            b.load().map_err(|e| e.to_string())
        };
        // Another destination, or a directory onto /etc/hosts: a share, as before.
        let bundle = load(&[
            bind(Path::new("hosts"), "/etc/other", &["bind"]),
            bind(Path::new("dir"), "/etc/hosts", &["bind"]),
            bind(
                Path::new("hosts"),
                "/etc//hosts/",
                &["bind", "ro", "nosuid"],
            ),
        ])
        .unwrap();
        assert_eq!(bundle.shares.len(), 2);
        assert!(matches!(bundle.spec.mounts[0], GuestMount::Share(_)));
        assert!(matches!(bundle.spec.mounts[1], GuestMount::Share(_)));
        assert_eq!(
            bundle.spec.mounts[2],
            file_mount(
                "/etc//hosts/",
                0o644,
                libc::MS_RDONLY | libc::MS_NOSUID,
                "x\n"
            )
        );
        // A file onto /dev/shm is no shm; a directory elsewhere is no tmpfs.
        let bundle = load(&[
            bind(Path::new("hosts"), "/dev/shm", &["bind"]),
            bind(Path::new("dir"), "/dev/shm2", &["bind"]),
        ])
        .unwrap();
        assert_eq!(bundle.shares.len(), 2);
        // Limits, and what is not text.
        std::fs::write(b.0.join("big"), vec![b'x'; (64 << 10) + 1]).unwrap();
        let e = load(&[bind(Path::new("big"), "/etc/hosts", &["bind"])]).unwrap_err();
        assert!(
            e.ends_with("big is more than 64 KiB, the most flint copies into the guest"),
            "{e}"
        );
        std::fs::write(b.0.join("full"), vec![b'x'; 64 << 10]).unwrap();
        let full = |dest| bind(Path::new("full"), dest, &["bind"]);
        load(&[
            full("/etc/hosts"),
            full("/etc/hostname"),
            full("/etc/resolv.conf"),
            full("/run/.containerenv"),
        ])
        .unwrap();
        let e = load(&[
            full("/etc/hosts"),
            full("/etc/hostname"),
            full("/etc/resolv.conf"),
            full("/run/.containerenv"),
            bind(Path::new("hosts"), "/etc/hosts", &["bind"]),
        ])
        .unwrap_err();
        assert!(e.contains("mounts[4] (/etc/hosts) is not supported by flint: the copied files (/etc/hosts, ...) come to more than 256 KiB"), "{e}");
        std::fs::write(b.0.join("nul"), b"a\0b").unwrap();
        let e = load(&[bind(Path::new("nul"), "/etc/hosts", &["bind"])]).unwrap_err();
        assert!(e.contains("is not text (UTF-8 without NUL bytes)"), "{e}");
        std::fs::write(b.0.join("latin1"), b"caf\xe9").unwrap();
        let e = load(&[bind(Path::new("latin1"), "/etc/hosts", &["bind"])]).unwrap_err();
        assert!(e.contains("is not text"), "{e}");
        // Options a bind cannot apply are refused as for any bind.
        let e = load(&[bind(
            Path::new("hosts"),
            "/etc/hosts",
            &["bind", "mode=600"],
        )])
        .unwrap_err();
        assert!(e.contains("option 'mode=600' on a bind mount"), "{e}");
    }

    #[test]
    fn process_and_namespace_fields_podman_sets() {
        let run = |process: &str, linux: &str| {
            let json = config(process, &format!(r#", "linux": {linux}"#));
            TestBundle::new(&json).load().map_err(|e| e.to_string())
        };
        let p = |extra: &str| format!(r#"{{"args": ["sh"], "cwd": "/"{extra}}}"#);
        let b = run(&p(r#", "apparmorProfile": "containers-default-0.50.0", "selinuxLabel": "system_u:system_r:container_t:s0:c1,c2", "oomScoreAdj": -999"#),
            r#"{"mountLabel": "system_u:object_r:container_file_t:s0:c1,c2"}"#).unwrap();
        assert_eq!(b.spec.oom_score_adj, Some(-999));
        assert!(has_record(&b.spec, &["oom-score-adj", "-999"]));
        for bad in [1001, -1001, i64::MAX] {
            let e = run(&p(&format!(r#", "oomScoreAdj": {bad}"#)), "{}").unwrap_err();
            assert_eq!(
                e,
                format!("process.oomScoreAdj: {bad} is not from -1000 to 1000")
            );
        }
        let ns = |path: &str| {
            run(
                &p(""),
                &format!(r#"{{"namespaces": [{{"type": "network", "path": "{path}"}}]}}"#),
            )
        };
        assert_eq!(
            ns("/proc/self/ns/net").unwrap().netns.as_deref(),
            Some(Path::new("/proc/self/ns/net"))
        );
        assert_eq!(ns("").unwrap().netns, None);
        assert_eq!(
            ns("run/netns/x").unwrap_err(),
            "linux.namespaces (network): 'run/netns/x' is not an absolute path"
        );
        assert_eq!(
            ns("/nonexistent-netns").unwrap_err(),
            "linux.namespaces (network): /nonexistent-netns: no such file"
        );
        assert!(ns("/proc/self/status")
            .unwrap_err()
            .ends_with("is not a namespace (a file on nsfs, such as /run/netns/NAME)"));
        let two = r#"{"namespaces": [{"type": "network", "path": "/proc/self/ns/net"}, {"type": "network", "path": "/proc/self/ns/net"}]}"#;
        assert!(run(&p(""), two)
            .unwrap_err()
            .contains("more than one network namespace"));
        // A pod's IPC and UTS namespaces: joined in name only; the UTS one's hostname is the
        // guest's unless the config gives one.
        let shared = |hostname: &str| {
            let json = config(
                &p(""),
                &format!(
                    r#"{hostname}, "linux": {{"namespaces": [{{"type": "ipc", "path": "/proc/self/ns/ipc"}}, {{"type": "uts", "path": "/proc/self/ns/uts"}}]}}"#
                ),
            );
            TestBundle::new(&json).load().map_err(|e| e.to_string())
        };
        assert_eq!(
            shared(r#", "hostname": "given""#)
                .unwrap()
                .spec
                .hostname
                .as_deref(),
            Some("given")
        );
        let mut host = [0u8; 65];
        // SAFETY: gethostname writes at most len bytes into the buffer.
        let r = unsafe { libc::gethostname(host.as_mut_ptr().cast(), 64) };
        assert_eq!(r, 0);
        let host = std::ffi::CStr::from_bytes_until_nul(&host)
            .unwrap()
            .to_str()
            .unwrap();
        // SAFETY: geteuid has no failure mode.
        if unsafe { libc::geteuid() } == 0 {
            assert_eq!(shared("").unwrap().spec.hostname.as_deref(), Some(host));
        } else {
            // Joining a UTS namespace takes CAP_SYS_ADMIN.
            let e = shared("").unwrap_err();
            assert!(e.contains("cannot read its hostname"), "{e}");
        }
        for kind in ["pid", "mount", "user", "cgroup"] {
            let e = run(
                &p(""),
                &format!(
                    r#"{{"namespaces": [{{"type": "{kind}", "path": "/proc/self/ns/{kind}"}}]}}"#
                ),
            )
            .unwrap_err();
            assert!(e.starts_with(&format!("linux.namespaces ({kind} with a path) is not supported by flint: the VM is its own {kind} namespace")), "{e}");
        }
    }
}
