//! A container's state on disk, under the runtime's `--root`: one directory per container ID
//! holding `state.json` (what `create` recorded), the `start.sock` the waiting VMM listens on,
//! and a `started` mark once `start` released it. The status is worked out from the VMM
//! process each time it is asked for, so it is true across processes: a VMM that has ended is
//! `stopped`, whoever asks.

use std::fs::File;
use std::io::{ErrorKind, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Where runc keeps its state is `/run/runc`; flint's is its own.
pub const DEFAULT_ROOT: &str = "/run/flint";

/// The runtime-spec version the state and `features` speak.
pub const OCI_VERSION: &str = "1.1.0";

/// What `create` records; never rewritten afterwards.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    pub id: String,
    /// The VMM: the container's process.
    pub pid: i32,
    /// The VMM's start time (field 22 of /proc/PID/stat), so a PID reused after it ended is
    /// not taken for it.
    pub start_time: u64,
    pub bundle: PathBuf,
    /// When `create` made it (RFC 3339, UTC).
    pub created: String,
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
    /// The cgroup the VMM runs in (linux.cgroupsPath), removed by `delete`.
    #[serde(default)]
    pub cgroup: Option<PathBuf>,
}

/// The container's status, as the runtime spec names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Stopped,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Stopped => "stopped",
        }
    }
}

/// The OCI state document (`flint state ID`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OciState<'a> {
    pub oci_version: &'static str,
    pub id: &'a str,
    pub status: &'static str,
    /// 0 once stopped, as runc reports it.
    pub pid: i32,
    pub bundle: &'a Path,
    pub created: &'a str,
    pub annotations: &'a std::collections::BTreeMap<String, String>,
}

/// runc's rule for IDs: letters, digits and `_+-.`, not `.` or `..`; they name a directory.
pub fn check_id(id: &str) -> anyhow::Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+-.".contains(&b));
    if !ok {
        anyhow::bail!(
            "invalid container ID '{id}': use letters, digits and _ + - . (at most 1024, not . or ..)"
        );
    }
    Ok(())
}

/// A container's directory under the root.
pub struct Container {
    pub id: String,
    pub dir: PathBuf,
}

impl Container {
    pub fn new(root: &Path, id: &str) -> anyhow::Result<Container> {
        check_id(id)?;
        Ok(Container {
            id: id.to_string(),
            dir: root.join(id),
        })
    }

    /// Makes the container's directory (and the root, private to root), failing if the ID is
    /// taken: `mkdir` is the one atomic claim two `create`s racing for one ID can make.
    pub fn claim(&self) -> anyhow::Result<()> {
        if let Some(root) = self.dir.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(root)
                .with_context(|| format!("cannot make the state directory {}", root.display()))?;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                anyhow::bail!("container \"{}\" already exists", self.id)
            }
            Err(e) => Err(e)
                .with_context(|| format!("cannot make the state directory {}", self.dir.display())),
        }
    }

    /// The VM's hybrid-vsock socket: the guest agent's way in.
    pub fn vsock_socket(&self) -> PathBuf {
        self.dir.join("vsock.sock")
    }

    pub fn start_socket(&self) -> PathBuf {
        self.dir.join("start.sock")
    }

    fn started_mark(&self) -> PathBuf {
        self.dir.join("started")
    }

    pub fn mark_started(&self) -> anyhow::Result<()> {
        File::create(self.started_mark()).context("cannot record that the container started")?;
        Ok(())
    }

    /// Reads `state.json`; a container `create` has not finished (or never made) does not
    /// exist.
    pub fn load(&self) -> anyhow::Result<Record> {
        let text = match std::fs::read(self.dir.join("state.json")) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                anyhow::bail!("container \"{}\" does not exist", self.id)
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read the state of {}", self.id))
            }
        };
        serde_json::from_slice(&text).with_context(|| {
            format!(
                "the state of {} is damaged (delete it with --force)",
                self.id
            )
        })
    }

    /// Writes `state.json` whole or not at all (a reader never sees half of it).
    pub fn save(&self, record: &Record) -> anyhow::Result<()> {
        let text = serde_json::to_vec(record)?;
        write_atomically(&self.dir.join("state.json"), &text)
    }

    pub fn status(&self, record: &Record) -> Status {
        if !alive(record.pid, record.start_time) {
            Status::Stopped
        } else if self.started_mark().exists() {
            Status::Running
        } else {
            Status::Created
        }
    }

    /// Holds the container's lock (flock on its directory) until dropped: `start`, `kill` and
    /// `delete` of one container take turns.
    pub fn lock(&self) -> anyhow::Result<Lock> {
        let dir = match File::open(&self.dir) {
            Ok(d) => d,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                anyhow::bail!("container \"{}\" does not exist", self.id)
            }
            Err(e) => return Err(e).context("cannot open the container's state directory"),
        };
        // SAFETY: flock on a descriptor we own; it blocks until the other holder lets go.
        if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error()).context("cannot lock the container");
        }
        Ok(Lock(dir))
    }

    pub fn remove(&self) -> anyhow::Result<()> {
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot remove {}", self.dir.display())),
        }
    }
}

/// A held container lock (released when the directory's descriptor closes).
pub struct Lock(#[allow(dead_code)] File);

/// Writes `path` through a temporary file renamed over it.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    drop(f);
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// A process's state letter and start time, from /proc/PID/stat.
fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields resume after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    // Field 22 overall is the 20th after the name.
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// The start time of a live process (`None` if it has ended).
pub fn start_time(pid: i32) -> Option<u64> {
    proc_stat(pid)
        .filter(|(state, _)| !matches!(state, 'Z' | 'X'))
        .map(|(_, t)| t)
}

/// Whether the process `create` recorded still runs: a zombie has ended (its output is all
/// written: the VMM flushes it before exiting), and a PID with another start time is another
/// process.
pub fn alive(pid: i32, start: u64) -> bool {
    pid > 0 && start_time(pid) == Some(start)
}

/// Now as RFC 3339 UTC with nanoseconds (what runc writes for `created`).
pub fn rfc3339_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(now.as_secs(), now.subsec_nanos())
}

/// `secs` since the epoch as `YYYY-MM-DDTHH:MM:SS.NNNNNNNNNZ`.
pub fn rfc3339(secs: u64, nanos: u32) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (the well-known
/// era-of-400-years reckoning).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc3339_utc() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        // 2000-02-29 (a leap day in a year divisible by 400) 12:34:56.
        assert_eq!(rfc3339(951_827_696, 7), "2000-02-29T12:34:56.000000007Z");
        assert_eq!(rfc3339(1_798_761_599, 0), "2026-12-31T23:59:59.000000000Z");
    }

    #[test]
    fn ids_follow_runc() {
        for ok in ["a", "web-1", "x_y.z+1", &"a".repeat(1024)] {
            assert!(check_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "é", &"a".repeat(1025)] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_not() {
        let pid = i32::try_from(std::process::id()).unwrap();
        let start = start_time(pid).expect("our own stat");
        assert!(alive(pid, start));
        assert!(!alive(pid, start + 1));
        assert!(!alive(0, start));
    }

    #[test]
    fn status_follows_the_process_and_the_start_mark() {
        let root = std::env::temp_dir().join(format!("flint-state-test-{}", std::process::id()));
        let c = Container::new(&root, "c1").unwrap();
        c.claim().unwrap();
        assert!(c
            .claim()
            .unwrap_err()
            .to_string()
            .contains("already exists"));
        assert!(c.load().unwrap_err().to_string().contains("does not exist"));
        let pid = i32::try_from(std::process::id()).unwrap();
        let mut record = Record {
            id: "c1".into(),
            pid,
            start_time: start_time(pid).unwrap(),
            bundle: "/b".into(),
            created: rfc3339_now(),
            annotations: Default::default(),
            cgroup: None,
        };
        c.save(&record).unwrap();
        assert_eq!(c.load().unwrap(), record);
        assert_eq!(c.status(&record), Status::Created);
        c.mark_started().unwrap();
        assert_eq!(c.status(&record), Status::Running);
        record.start_time += 1;
        assert_eq!(c.status(&record), Status::Stopped);
        drop(c.lock().unwrap());
        c.remove().unwrap();
        assert!(!c.dir.exists());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
