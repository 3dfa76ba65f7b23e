//! Landlock: flint takes away its own right to reach files by path. Once its inputs are open
//! ([`Inputs::open`](crate::builder::Inputs::open)), flint needs no path at all, so the ruleset
//! it enforces allows none: a flint thread taken over by a guest could not open, create,
//! remove, rename or execute any file, nor bind or connect a TCP socket, nor signal or reach
//! (through an abstract Unix socket) any process outside flint — whatever seccomp allows.
//! [`restrict`] takes a list of files that stay reachable, for tests and for callers that
//! open more later.

use std::path::PathBuf;

use landlock::{
    Access, AccessFs, AccessNet, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, Scope, ABI,
};

/// The newest Landlock ABI flint asks for; older kernels enforce what they know of it. Up to
/// this one, connecting to a pathname Unix socket is not a file access Landlock restricts,
/// which the vsock device's guest-initiated connections (`<uds_path>_<port>`) rely on: an ABI
/// with LANDLOCK_ACCESS_FS_RESOLVE_UNIX would need a rule for that socket's directory.
const ABI: ABI = ABI::V6;

#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    #[error("Landlock: {0}")]
    Ruleset(#[from] landlock::RulesetError),
    #[error("Landlock: cannot open {path} to allow it")]
    Path {
        path: String,
        #[source]
        source: landlock::PathFdError,
    },
}

/// How much of the ruleset this kernel enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforced {
    /// Every restriction flint asked for.
    Fully,
    /// Some (an older Landlock ABI: e.g. no TCP or signal rules before Linux 6.7 / 6.12).
    Partly,
    /// None: this kernel has no Landlock, or it is not enabled (the `lsm=` boot option).
    Not,
}

impl Enforced {
    /// The one line flint prints when Landlock cannot help, or `None`.
    pub fn note(self) -> Option<&'static str> {
        match self {
            Enforced::Not => Some(
                "flint: note: Landlock is not available in this kernel (or not enabled with \
                 lsm=); flint's file access is limited by seccomp alone",
            ),
            Enforced::Fully | Enforced::Partly => None,
        }
    }
}

/// A file or directory that stays reachable, and whether for writing too.
pub struct Allowed {
    pub path: PathBuf,
    pub write: bool,
}

/// Restricts the calling thread, and every thread and process it starts from now on, to the
/// `allowed` paths (none: no path at all). Sets `no_new_privs`, which Landlock needs.
pub fn restrict(allowed: &[Allowed]) -> Result<Enforced, LandlockError> {
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(ABI))?
        .handle_access(AccessNet::from_all(ABI))?
        .scope(Scope::from_all(ABI))?
        .create()?;
    for a in allowed {
        let access = if a.write {
            AccessFs::from_all(ABI)
        } else {
            AccessFs::from_read(ABI)
        };
        let fd = PathFd::new(&a.path).map_err(|source| LandlockError::Path {
            path: a.path.display().to_string(),
            source,
        })?;
        ruleset = ruleset.add_rule(PathBeneath::new(fd, access))?;
    }
    let status = ruleset.restrict_self()?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => Enforced::Fully,
        RulesetStatus::PartiallyEnforced => Enforced::Partly,
        RulesetStatus::NotEnforced => Enforced::Not,
    })
}

/// Whether this kernel has Landlock enabled (a probe; restricts nothing).
pub fn available() -> bool {
    // SAFETY: LANDLOCK_CREATE_RULESET_VERSION with a null attribute and size 0 only returns the
    // ABI version (or an error); it creates nothing.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32, // LANDLOCK_CREATE_RULESET_VERSION
        )
    };
    v > 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;

    /// Runs `f` in a forked child (Landlock cannot be lifted) and returns its exit status.
    fn in_child(f: impl FnOnce() -> i32) -> i32 {
        // SAFETY: the child only runs `f` (file opens) and _exits; the test harness's other
        // threads are not touched in it.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(99);
            // SAFETY: _exit ends the child without running the parent's atexit handlers.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child, writing its status into `status`.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status), "child died: {status:#x}");
        libc::WEXITSTATUS(status)
    }

    /// Whether to run: without Landlock the test says it skipped, and fails in CI (whose
    /// machines have it).
    fn landlock_here() -> bool {
        if available() {
            return true;
        }
        assert!(
            std::env::var_os("CI").is_none_or(|v| v != "true"),
            "this kernel has no Landlock, and CI's must"
        );
        eprintln!("SKIPPED: this kernel has no Landlock");
        false
    }

    fn denied<T>(r: std::io::Result<T>) -> bool {
        matches!(r, Err(e) if e.kind() == ErrorKind::PermissionDenied)
    }

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("flint-landlock-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("listed"), b"listed").unwrap();
        std::fs::write(dir.join("unlisted"), b"unlisted").unwrap();
        dir
    }

    #[test]
    fn an_unlisted_file_is_refused_and_a_listed_one_is_not() {
        if !landlock_here() {
            return;
        }
        let dir = scratch("listed");
        let code = in_child(|| {
            let listed = dir.join("listed");
            let allowed = [Allowed {
                path: listed.clone(),
                write: false,
            }];
            if restrict(&allowed).ok() == Some(Enforced::Not) {
                return 10;
            }
            if std::fs::read(&listed).ok().as_deref() != Some(&b"listed"[..]) {
                return 11;
            }
            if !denied(std::fs::read(dir.join("unlisted"))) {
                return 12;
            }
            // Read-only: the listed file cannot be written, nor a new file made beside it.
            if !denied(std::fs::OpenOptions::new().append(true).open(&listed)) {
                return 13;
            }
            if !denied(std::fs::write(dir.join("new"), b"x")) {
                return 14;
            }
            0
        });
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            code, 0,
            "10: not enforced, 11: listed unreadable, 12: unlisted readable, 13/14: writable"
        );
    }

    #[test]
    fn with_nothing_listed_no_path_opens_but_open_files_still_work() {
        if !landlock_here() {
            return;
        }
        let dir = scratch("none");
        let code = in_child(|| {
            let mut open = std::fs::File::open(dir.join("listed")).unwrap();
            if restrict(&[]).ok() == Some(Enforced::Not) {
                return 10;
            }
            for p in [
                dir.join("listed"),
                PathBuf::from("/etc/passwd"),
                PathBuf::from("/dev/null"),
            ] {
                if !denied(std::fs::File::open(&p)) {
                    return 11;
                }
            }
            let mut s = String::new();
            if std::io::Read::read_to_string(&mut open, &mut s).is_err() || s != "listed" {
                return 12;
            }
            0
        });
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            code, 0,
            "10: not enforced, 11: a path opened, 12: an open file stopped working"
        );
    }
}
