//! `--cgroup PATH`: flint places itself (and so every thread it starts, and its guest's
//! memory) in a cgroup v2 directory, made if missing, after writing the limits it was given
//! (`--cgroup-limit memory.max=1G`, …). flint leaves the directory behind when it exits, as
//! Firecracker's jailer does; whoever made the name removes it.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// The interface files `--cgroup-limit` may write: the cpu, memory and pids controllers' limits.
pub const LIMIT_FILES: &[&str] = &[
    "cpu.max",
    "cpu.weight",
    "memory.high",
    "memory.max",
    "memory.swap.max",
    "pids.max",
];

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("--cgroup {0}: not an absolute path (give the cgroup's directory, e.g. /sys/fs/cgroup/flint/vm1)")]
    NotAbsolute(String),
    #[error("--cgroup {0}: not in a cgroup v2 hierarchy (its parent {1} is not on a cgroup2 filesystem)")]
    NotCgroup2(String, String),
    #[error("--cgroup {path}: cannot create it: {reason}")]
    Create { path: String, reason: String },
    #[error("--cgroup-limit {0}: not a limit flint sets (one of: {list})", list = LIMIT_FILES.join(", "))]
    UnknownLimit(String),
    #[error("--cgroup-limit {0}: expected KEY=VALUE, e.g. memory.max=1G")]
    BadLimit(String),
    #[error(
        "--cgroup-limit {key}: the {controller} controller is not enabled for {path} (enable it \
         in its parent: echo +{controller} > {parent}/cgroup.subtree_control)"
    )]
    NoController {
        key: String,
        controller: String,
        path: String,
        parent: String,
    },
    #[error("--cgroup-limit {key}={value}: {path} refused it: {reason}")]
    Write {
        key: String,
        value: String,
        path: String,
        reason: String,
    },
    #[error("--cgroup {path}: cannot join it: {reason}")]
    Join { path: String, reason: String },
}

/// A `KEY=VALUE` limit, checked against [`LIMIT_FILES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub key: String,
    pub value: String,
}

impl std::str::FromStr for Limit {
    type Err = CgroupError;

    fn from_str(s: &str) -> Result<Limit, CgroupError> {
        let (key, value) = s
            .split_once('=')
            .ok_or_else(|| CgroupError::BadLimit(s.into()))?;
        if value.is_empty() || value.contains('\n') {
            return Err(CgroupError::BadLimit(s.into()));
        }
        if !LIMIT_FILES.contains(&key) {
            return Err(CgroupError::UnknownLimit(key.into()));
        }
        Ok(Limit {
            key: key.into(),
            value: value.into(),
        })
    }
}

/// Whether `dir` is on a cgroup v2 hierarchy.
pub fn on_cgroup2(dir: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs reads the NUL-terminated path and fills the zeroed struct it is given.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let r = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    r == 0 && st.f_type == CGROUP2_SUPER_MAGIC
}

/// What a write into a cgroup file said: the kernel's EINVAL is a value it does not take.
fn reason(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EINVAL) => "invalid value".into(),
        _ => crate::config::io_reason(e),
    }
}

/// Makes `path` if missing, writes `limits` into it and moves this process into it.
pub fn join(path: &Path, limits: &[Limit]) -> Result<(), CgroupError> {
    let shown = path.display().to_string();
    if !path.is_absolute() {
        return Err(CgroupError::NotAbsolute(shown));
    }
    let parent: PathBuf = path.parent().unwrap_or(Path::new("/")).to_path_buf();
    if !on_cgroup2(&parent) {
        return Err(CgroupError::NotCgroup2(shown, parent.display().to_string()));
    }
    match std::fs::create_dir(path) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists && on_cgroup2(path) => {}
        Err(e) => {
            return Err(CgroupError::Create {
                path: shown,
                reason: reason(&e),
            })
        }
    }
    for limit in limits {
        let file = path.join(&limit.key);
        if !file.exists() {
            let controller = limit.key.split('.').next().unwrap_or_default().to_string();
            return Err(CgroupError::NoController {
                key: limit.key.clone(),
                controller,
                path: shown,
                parent: parent.display().to_string(),
            });
        }
        std::fs::write(&file, &limit.value).map_err(|e| CgroupError::Write {
            key: limit.key.clone(),
            value: limit.value.clone(),
            path: shown.clone(),
            reason: reason(&e),
        })?;
    }
    std::fs::write(path.join("cgroup.procs"), std::process::id().to_string()).map_err(|e| {
        CgroupError::Join {
            path: shown,
            reason: match e.raw_os_error() {
                // cgroup v2 keeps processes out of a cgroup whose controllers its children use.
                Some(libc::EBUSY) | Some(libc::EOPNOTSUPP) => {
                    "it hands controllers to child cgroups (no process may live in it); give a leaf cgroup"
                        .into()
                }
                _ => reason(&e),
            },
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked() {
        let l: Limit = "memory.max=256M".parse().unwrap();
        assert_eq!((l.key.as_str(), l.value.as_str()), ("memory.max", "256M"));
        assert!("pids.max=max".parse::<Limit>().is_ok());
        let err = |s: &str| s.parse::<Limit>().unwrap_err().to_string();
        assert!(err("memory.max").contains("expected KEY=VALUE"));
        assert!(err("memory.max=").contains("expected KEY=VALUE"));
        assert!(err("cgroup.procs=1").contains("not a limit flint sets"));
        assert!(err("../x=1").contains("not a limit flint sets"));
    }

    #[test]
    fn paths_are_checked() {
        let e = join(Path::new("rel/x"), &[]).unwrap_err().to_string();
        assert!(e.contains("not an absolute path"), "{e}");
        let e = join(Path::new("/tmp/flint-not-a-cgroup"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not in a cgroup v2 hierarchy"), "{e}");
    }
}
