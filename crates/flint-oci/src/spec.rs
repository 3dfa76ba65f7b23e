//! The run spec: what flint's guest init (`crates/flint-oci/src/init/flint-init.c`) must set up and run,
//! written by the host into the generated initramfs as `/flint/spec`. The same format, with
//! the process's records only, is what the init's agent takes to exec another process in the
//! running container ([`crate::agent`]).
//!
//! Format: a sequence of NUL-terminated strings. It starts with the magic `flint-spec-1`;
//! then records, each a keyword followed by a fixed number of string arguments; it ends with
//! the keyword `end`. Numbers are unsigned decimal (but `oom-score-adj`'s). Records and their arguments:
//!
//! | keyword | arguments | meaning |
//! |---|---|---|
//! | `arg` | S | the next element of the process's argv (at least one) |
//! | `env` | `K=V` | one environment entry, in order |
//! | `cwd` | PATH | the working directory (absolute) |
//! | `uid`, `gid` | N | the process's user and group |
//! | `group` | N | one additional group |
//! | `umask` | N | the umask (decimal) |
//! | `hostname` | S | the guest's hostname |
//! | `terminal` | 0/1 | 1: stdin/stdout/stderr are ttyS0 as a controlling terminal, cooked |
//! | `root-readonly` | 0/1 | 1: the root is the image itself, read-only; 0: an overlay with a tmpfs upper layer (with `root-fs`: the share, read-only or read-write) |
//! | `root-fs` | TAG | the root is the virtio-fs share TAG, mounted as it is (no image, no overlay) |
//! | `no-new-privileges` | 0/1 | `PR_SET_NO_NEW_PRIVS` before exec |
//! | `rlimit` | RES SOFT HARD | `setrlimit(RES, ...)`; RES is the Linux resource number |
//! | `caps` | BND EFF INH PRM AMB | capability sets as 64-bit masks (bit N = capability N) |
//! | `oom-score-adj` | N | write N (-1000 to 1000, the one signed number) to /proc/self/oom_score_adj |
//! | `pids-limit` | N | run the process in a cgroup (v2) whose `pids.max` is N (≥ 1), in a cgroup namespace of its own |
//! | `seccomp` | FLAGS PROGRAM | install the classic BPF PROGRAM with `seccomp(SECCOMP_SET_MODE_FILTER, FLAGS)` right before exec (see below); PROGRAM is 16 hex digits per instruction (code 4, jt 2, jf 2, k 8), 1 to 4096 instructions |
//! | `mount` | DEST TYPE SOURCE FLAGS DATA | `mount(SOURCE, root+DEST, TYPE, FLAGS, DATA)`; FLAGS are `MS_*` bits |
//! | `fs-mount` | TAG SUBPATH DEST FLAGS DATA | bind SUBPATH of the virtio-fs share TAG (`""`: all of it) onto root+DEST, then apply FLAGS' per-mount bits (`MS_RDONLY`, `MS_NOSUID`, ...) |
//! | `file` | DEST MODE FLAGS CONTENT | create a file of CONTENT (at most 64 KiB; 256 KiB for all) with MODE (≤ 0777) in a tmpfs of the init's, bind it onto root+DEST and apply FLAGS' per-mount bits, as `fs-mount` does |
//! | `masked` | PATH | hide PATH: /dev/null over a file, an empty read-only tmpfs over a directory |
//! | `readonly-path` | PATH | bind PATH onto itself read-only |
//! | `sysctl` | KEY VALUE | write VALUE to /proc/sys/KEY (dots as slashes) |
//!
//! `mount`, `fs-mount` and `file` records form one list, performed in order (a bind under
//! `/data/x` after a tmpfs on `/data` lands in the tmpfs). Arguments are bytes without NUL;
//! nothing else is escaped.
//!
//! The order of the last steps before exec is runc's: with `no-new-privileges 1`, the seccomp
//! filter is installed after the user, groups and capabilities are set and the working
//! directory entered, right before `execve`; without it, while the init still has
//! `CAP_SYS_ADMIN` (which installing a filter then needs), before it changes user: the
//! profile must then allow what the init does afterwards (`setgroups`, `prctl`, `setgid`,
//! `setuid`, `capset`, `chdir`, `execve`, and `write` and `exit_group` to report a failure).

pub use crate::seccomp::{Insn, SeccompFilter};

/// The magic string that opens a spec.
pub const MAGIC: &str = "flint-spec-1";

/// The most a `file` record may carry, and all of them together (the init checks it too):
/// they are copied into every guest's memory.
pub const FILE_MAX: usize = 64 << 10;
pub const FILES_TOTAL_MAX: usize = 256 << 10;

/// A mount the init performs inside the new root, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub destination: String,
    pub fstype: String,
    pub source: String,
    /// `MS_*` flags.
    pub flags: u64,
    /// Filesystem-specific options (`mode=755,size=65536k`, ...).
    pub data: String,
}

/// A bind mount from a virtio-fs share (a host path, see [`crate::Share`]), in order among
/// the [`Mount`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareMount {
    /// The share's virtio-fs tag.
    pub tag: String,
    /// What to bind inside the share: `""` for all of it (a directory share), the file's
    /// base name for a file share.
    pub subpath: String,
    pub destination: String,
    /// `MS_*` flags; the per-mount ones (`MS_RDONLY`, `MS_NOSUID`, `MS_NODEV`, `MS_NOEXEC`,
    /// the atime bits) are applied to the bind.
    pub flags: u64,
    /// Passed with the bind's remount, which ignores it; flint refuses the options a bind
    /// cannot apply, so it writes `""` (the field keeps the record shaped like `mount`).
    pub data: String,
}

/// A small file the host copied into the spec (`/etc/hosts`, ...), which the init creates in a
/// tmpfs of its own and binds onto `destination`, in order among the [`Mount`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMount {
    pub destination: String,
    /// Permission bits (at most 0o777).
    pub mode: u32,
    /// `MS_*` per-mount flags applied to the bind, as for a [`ShareMount`].
    pub flags: u64,
    pub content: String,
}

/// One of the mounts the init performs inside the new root, in the bundle's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestMount {
    /// A new file system (`mount` record).
    New(Mount),
    /// A bind from a virtio-fs share (`fs-mount` record).
    Share(ShareMount),
    /// A file copied into the spec (`file` record).
    File(FileMount),
}

impl GuestMount {
    /// Where it is mounted, inside the root.
    pub fn destination(&self) -> &str {
        match self {
            GuestMount::New(m) => &m.destination,
            GuestMount::Share(m) => &m.destination,
            GuestMount::File(m) => &m.destination,
        }
    }
}

/// One resource limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    /// The Linux resource number (`RLIMIT_NOFILE` = 7, ...).
    pub resource: u32,
    pub soft: u64,
    pub hard: u64,
}

/// Capability sets as bit masks (bit N = capability number N).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Caps {
    pub bounding: u64,
    pub effective: u64,
    pub inheritable: u64,
    pub permitted: u64,
    pub ambient: u64,
}

/// Everything the guest init needs to run the bundle's process.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunSpec {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub umask: Option<u32>,
    pub hostname: Option<String>,
    pub terminal: bool,
    pub root_readonly: bool,
    /// The root is this virtio-fs share (a live root), not the image on the first disk.
    pub root_fs: Option<String>,
    pub no_new_privileges: bool,
    pub rlimits: Vec<Rlimit>,
    pub caps: Option<Caps>,
    /// `process.oomScoreAdj`.
    pub oom_score_adj: Option<i32>,
    /// `linux.resources.pids.limit`, enforced in the guest.
    pub pids_limit: Option<u64>,
    /// `linux.seccomp`, compiled.
    pub seccomp: Option<SeccompFilter>,
    pub mounts: Vec<GuestMount>,
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
    pub sysctl: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0} contains a NUL byte, which cannot be passed to the guest")]
pub struct NulInSpec(pub String);

struct Writer(Vec<u8>);

impl Writer {
    fn record(&mut self, what: &str, keyword: &str, args: &[&str]) -> Result<(), NulInSpec> {
        self.0.extend_from_slice(keyword.as_bytes());
        self.0.push(0);
        for a in args {
            if a.contains('\0') {
                return Err(NulInSpec(what.to_string()));
            }
            self.0.extend_from_slice(a.as_bytes());
            self.0.push(0);
        }
        Ok(())
    }
}

fn flag(b: bool) -> &'static str {
    if b {
        "1"
    } else {
        "0"
    }
}

/// A BPF program as the `seccomp` record has it: 16 hex digits per instruction.
pub fn program_hex(program: &[Insn]) -> String {
    program
        .iter()
        .map(|i| format!("{:04x}{:02x}{:02x}{:08x}", i.code, i.jt, i.jf, i.k))
        .collect()
}

impl RunSpec {
    /// Serializes the spec in the format above.
    pub fn encode(&self) -> Result<Vec<u8>, NulInSpec> {
        let mut w = Writer(Vec::new());
        w.0.extend_from_slice(MAGIC.as_bytes());
        w.0.push(0);
        for a in &self.args {
            w.record("process.args", "arg", &[a])?;
        }
        for e in &self.env {
            w.record("process.env", "env", &[e])?;
        }
        w.record("process.cwd", "cwd", &[&self.cwd])?;
        w.record("", "uid", &[&self.uid.to_string()])?;
        w.record("", "gid", &[&self.gid.to_string()])?;
        for g in &self.additional_gids {
            w.record("", "group", &[&g.to_string()])?;
        }
        if let Some(u) = self.umask {
            w.record("", "umask", &[&u.to_string()])?;
        }
        if let Some(h) = &self.hostname {
            w.record("hostname", "hostname", &[h])?;
        }
        w.record("", "terminal", &[flag(self.terminal)])?;
        w.record("", "root-readonly", &[flag(self.root_readonly)])?;
        if let Some(tag) = &self.root_fs {
            w.record("root.path", "root-fs", &[tag])?;
        }
        w.record("", "no-new-privileges", &[flag(self.no_new_privileges)])?;
        for r in &self.rlimits {
            w.record(
                "",
                "rlimit",
                &[
                    &r.resource.to_string(),
                    &r.soft.to_string(),
                    &r.hard.to_string(),
                ],
            )?;
        }
        if let Some(c) = &self.caps {
            w.record(
                "",
                "caps",
                &[
                    &c.bounding.to_string(),
                    &c.effective.to_string(),
                    &c.inheritable.to_string(),
                    &c.permitted.to_string(),
                    &c.ambient.to_string(),
                ],
            )?;
        }
        if let Some(n) = self.oom_score_adj {
            w.record("", "oom-score-adj", &[&n.to_string()])?;
        }
        if let Some(n) = self.pids_limit {
            w.record("", "pids-limit", &[&n.to_string()])?;
        }
        if let Some(f) = &self.seccomp {
            w.record(
                "",
                "seccomp",
                &[&f.flags.to_string(), &program_hex(&f.program)],
            )?;
        }
        for m in &self.mounts {
            match m {
                GuestMount::New(m) => w.record(
                    "mounts",
                    "mount",
                    &[
                        &m.destination,
                        &m.fstype,
                        &m.source,
                        &m.flags.to_string(),
                        &m.data,
                    ],
                )?,
                GuestMount::Share(m) => w.record(
                    "mounts",
                    "fs-mount",
                    &[
                        &m.tag,
                        &m.subpath,
                        &m.destination,
                        &m.flags.to_string(),
                        &m.data,
                    ],
                )?,
                GuestMount::File(m) => w.record(
                    "mounts",
                    "file",
                    &[
                        &m.destination,
                        &m.mode.to_string(),
                        &m.flags.to_string(),
                        &m.content,
                    ],
                )?,
            }
        }
        for p in &self.masked_paths {
            w.record("linux.maskedPaths", "masked", &[p])?;
        }
        for p in &self.readonly_paths {
            w.record("linux.readonlyPaths", "readonly-path", &[p])?;
        }
        for (k, v) in &self.sysctl {
            w.record("linux.sysctl", "sysctl", &[k, v])?;
        }
        w.record("", "end", &[])?;
        Ok(w.0)
    }
}
