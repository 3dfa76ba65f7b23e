//! An OCI runtime bundle: `config.json` (runtime-spec 1.x) and its root filesystem, read and
//! checked against what a flint guest can honour, and turned into a [`RunSpec`].
//!
//! A microVM is a stronger boundary than a container, so the namespaces a bundle asks for are
//! given by the VM itself. Bind mounts of host directories and files become virtio-fs shares
//! ([`Share`]) that the guest init binds into place. What would need the host otherwise (hooks,
//! joining a host namespace, host devices) or a policy flint does not enforce yet (seccomp, LSM
//! labels, cgroup resource limits) is refused with an error naming the field, never silently
//! ignored.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::spec::{Caps, GuestMount, Mount, Rlimit, RunSpec, ShareMount};
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

fn invalid(field: impl Into<String>, why: impl Into<String>) -> BundleError {
    BundleError::Invalid {
        field: field.into(),
        why: why.into(),
    }
}

fn unsupported(field: impl Into<String>, why: impl Into<String>) -> BundleError {
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
    resources: Option<BTreeMap<String, Value>>,
    rootfs_propagation: Option<String>,
    seccomp: Option<Value>,
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

/// A bundle read and checked: where its rootfs is, what to run, and the host paths its bind
/// mounts share with the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub dir: PathBuf,
    pub rootfs: PathBuf,
    pub spec: RunSpec,
    /// One per distinct (host path, read-only) of the bind mounts, in order of first use.
    pub shares: Vec<Share>,
}

impl Bundle {
    /// Reads `DIR/config.json` and checks it and the rootfs it names.
    pub fn load(dir: &Path) -> Result<Bundle, BundleError> {
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
        let (rootfs, spec) = to_run_spec(dir, config, &mut shares)?;
        check_executable(&rootfs, &spec, &shares.0)?;
        Ok(Bundle {
            dir: dir.to_path_buf(),
            rootfs,
            spec,
            shares: shares.0,
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
/// the guest could remount a read-write one.
#[derive(Default)]
struct Shares(Vec<Share>);

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

/// Checks the parsed config and turns it into the guest's run spec.
fn to_run_spec(
    dir: &Path,
    c: Config,
    shares: &mut Shares,
) -> Result<(PathBuf, RunSpec), BundleError> {
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
    let rootfs = confined_root(dir, &root.path)?;

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
    if let Some(l) = c.linux {
        linux_spec(l, &mut spec)?;
    }
    Ok((rootfs, spec))
}

/// The directory `root.path` names, symlinks resolved, which must be inside the bundle: the
/// rootfs becomes an image the guest can read, so a root that leads elsewhere (an absolute path,
/// `..`, a symlink) would hand host files to whoever wrote the bundle.
fn confined_root(dir: &Path, path: &str) -> Result<PathBuf, BundleError> {
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
    if !rootfs.starts_with(&bundle) {
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
    let no_lsm = "the guest kernel has no Linux security module";
    refuse_set("commandLine", p.command_line.is_some(), "it is for Windows")?;
    refuse_set(
        "user.username",
        p.user.username.is_some(),
        "it is for Windows",
    )?;
    refuse_set(
        "apparmorProfile",
        p.apparmor_profile.as_deref().is_some_and(|s| !s.is_empty()),
        no_lsm,
    )?;
    refuse_set(
        "selinuxLabel",
        p.selinux_label.as_deref().is_some_and(|s| !s.is_empty()),
        no_lsm,
    )?;
    refuse_set(
        "oomScoreAdj",
        p.oom_score_adj.is_some(),
        "not passed to the guest yet",
    )?;
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
        ..RunSpec::default()
    })
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
        return bind_spec(i, &field, m, dir, shares).map(GuestMount::Share);
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
) -> Result<ShareMount, BundleError> {
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
    Ok(ShareMount {
        tag,
        subpath,
        destination: m.destination.clone(),
        flags,
        data,
    })
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

fn linux_spec(l: Linux, spec: &mut RunSpec) -> Result<(), BundleError> {
    const NAMESPACES: &[&str] = &[
        "pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time",
    ];
    for ns in &l.namespaces {
        if !NAMESPACES.contains(&ns.kind.as_str()) {
            return Err(invalid(
                "linux.namespaces",
                format!("unknown type '{}'", ns.kind),
            ));
        }
        if ns.path.as_deref().is_some_and(|p| !p.is_empty()) {
            return Err(unsupported(
                format!("linux.namespaces ({} with a path)", ns.kind),
                "a guest cannot join a namespace of the host",
            ));
        }
    }
    let _ = (
        &l.uid_mappings,
        &l.gid_mappings,
        &l.cgroups_path,
        &l.rootfs_propagation,
    );
    if !l.devices.is_empty() {
        return Err(unsupported(
            "linux.devices",
            "host devices cannot be passed into the guest",
        ));
    }
    if let Some(r) = &l.resources {
        // Device rules are met by construction: the guest has only its virtual devices.
        if let Some((name, _)) = r
            .iter()
            .find(|(k, v)| k.as_str() != "devices" && !is_empty(v))
        {
            return Err(unsupported(
                format!("linux.resources.{name}"),
                "cgroup limits are not applied in the guest; size the VM with --memory and --cpus",
            ));
        }
    }
    for (field, set) in [
        (
            "linux.seccomp",
            l.seccomp.as_ref().is_some_and(|v| !is_empty(v)),
        ),
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
        (
            "linux.mountLabel",
            l.mount_label.as_deref().is_some_and(|s| !s.is_empty()),
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
    Ok(())
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
                r#", "linux": {"namespaces": [{"type": "network", "path": "/proc/1/ns/net"}]}"#,
                "cannot join a namespace",
            ),
            (
                r#", "linux": {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW"}}"#,
                "linux.seccomp is not supported",
            ),
            (
                r#", "linux": {"resources": {"memory": {"limit": 1000}}}"#,
                "linux.resources.memory is not supported",
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
        let lsm = r#"{"args": ["sh"], "cwd": "/", "apparmorProfile": "x"}"#;
        assert!(err(&config(lsm, "")).contains("process.apparmorProfile is not supported"));
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
            GuestMount::Share(m) => panic!("a bind, not a new file system: {m:?}"),
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
                GuestMount::New(m) => panic!("{m:?}"),
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
            bind(Path::new("etc/my hosts"), "/etc/hosts", &["rbind", "ro"]),
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
                "/etc/hosts",
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
        let live = crate::PrepareOptions { live_root: true };
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
}
