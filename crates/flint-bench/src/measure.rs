//! Readings from `/proc` and the filesystem: a process tree, stopping it for a consistent memory
//! snapshot, `smaps` totals, and allocated disk space.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// `root` and all its descendants (through the `ppid` in `/proc/PID/stat`), root first, then
/// breadth-first. Processes that vanish while we read are skipped. Container processes are
/// found too: they are ordinary descendants in the host's PID namespace.
pub fn process_tree(root: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            if let Some(ppid) = read_stat(pid).map(|s| s.ppid) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        if let Some(kids) = children.get(&tree[i]) {
            tree.extend(kids.iter().copied().filter(|k| *k != root));
        }
        i += 1;
    }
    tree
}

/// The fields of `/proc/PID/stat` (or `/proc/PID/task/TID/stat`) we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub state: char,
    pub ppid: i32,
}

fn read_stat(pid: i32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Parses a `stat` line. The command name is in parentheses and may itself contain spaces and
/// parentheses, so the fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some(Stat { state, ppid })
}

/// Whether every thread of `pid` has stopped (or the process is gone). A SIGSTOP is delivered
/// asynchronously, and a VMM's vCPU threads leave KVM_RUN only when kicked, so we check each
/// task rather than the main thread alone.
fn fully_stopped(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    tasks.flatten().all(|t| {
        let path = t.path().join("stat");
        match std::fs::read_to_string(path)
            .ok()
            .as_deref()
            .and_then(parse_stat)
        {
            Some(s) => matches!(s.state, 'T' | 't' | 'Z' | 'X'),
            None => true,
        }
    })
}

/// A process tree held stopped with SIGSTOP; dropping it sends SIGCONT (children first, so
/// that a parent never sees a half-continued tree).
pub struct StoppedTree {
    pids: Vec<i32>,
    since: Instant,
}

impl StoppedTree {
    /// Stops `root` and its descendants. The tree is read again after each round of signals,
    /// so a child forked meanwhile is caught too. Waits (briefly) until every thread has
    /// stopped, so what is read next is a consistent picture.
    pub fn stop(root: i32) -> StoppedTree {
        let since = Instant::now();
        let mut stopped: Vec<i32> = Vec::new();
        let mut seen = HashSet::new();
        for _ in 0..4 {
            let new: Vec<i32> = process_tree(root)
                .into_iter()
                .filter(|p| seen.insert(*p))
                .collect();
            if new.is_empty() {
                break;
            }
            for &pid in &new {
                // SAFETY: kill has no memory effects; the pids are our descendants.
                unsafe { libc::kill(pid, libc::SIGSTOP) };
            }
            stopped.extend(new);
        }
        let deadline = Instant::now() + Duration::from_millis(200);
        while !stopped.iter().all(|&p| fully_stopped(p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(200));
        }
        StoppedTree {
            pids: stopped,
            since,
        }
    }

    /// The processes held stopped, root first.
    pub fn pids(&self) -> &[i32] {
        &self.pids
    }

    /// Continues the tree and returns how long it was held stopped.
    pub fn resume(self) -> Duration {
        let since = self.since;
        drop(self);
        since.elapsed()
    }
}

impl Drop for StoppedTree {
    fn drop(&mut self) {
        for &pid in self.pids.iter().rev() {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGCONT) };
        }
    }
}

/// One mapping of `/proc/PID/smaps`: its size and how much of it is resident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mapping {
    pub size_bytes: u64,
    pub rss_kib: u64,
    pub pss_kib: u64,
}

/// Parses `smaps` text. A mapping starts with its address range line (`start-end perms ...`);
/// its `Rss:` and `Pss:` lines follow, in kB.
pub fn parse_smaps(text: &str) -> Vec<Mapping> {
    let mut mappings: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        let Some(first) = line.split_whitespace().next() else {
            continue;
        };
        if let Some(key) = first.strip_suffix(':') {
            let value = || -> u64 {
                line.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            if let Some(m) = mappings.last_mut() {
                match key {
                    "Rss" => m.rss_kib = value(),
                    "Pss" => m.pss_kib = value(),
                    _ => {}
                }
            }
        } else if let Some((start, end)) = first.split_once('-') {
            if let (Ok(start), Ok(end)) =
                (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
            {
                mappings.push(Mapping {
                    size_bytes: end.saturating_sub(start),
                    ..Mapping::default()
                });
            }
        }
    }
    mappings
}

/// Reads and parses `/proc/PID/smaps`; `None` if the process is gone.
pub fn read_smaps(pid: i32) -> Option<Vec<Mapping>> {
    std::fs::read_to_string(format!("/proc/{pid}/smaps"))
        .ok()
        .map(|t| parse_smaps(&t))
}

/// Rss and Pss summed over processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    pub rss_kib: u64,
    pub pss_kib: u64,
    /// How many of the processes had memory (the others are gone or exiting).
    pub processes: usize,
}

/// Sums the smaps of `pids`; processes that are gone or have no memory left are skipped.
pub fn sum_smaps(pids: &[i32]) -> Totals {
    let mut t = Totals::default();
    for &pid in pids {
        if let Some(maps) = read_smaps(pid).filter(|m| !m.is_empty()) {
            t.rss_kib += maps.iter().map(|m| m.rss_kib).sum::<u64>();
            t.pss_kib += maps.iter().map(|m| m.pss_kib).sum::<u64>();
            t.processes += 1;
        }
    }
    t
}

/// Like [`sum_smaps`], leaving out each process's mappings of the guest RAM (recognised as in
/// [`split_guest`], per process): for a VMM's helpers, such as the virtiofsd flint starts for a
/// live root, which maps the guest's memory to serve it. Those pages are the guest's (counted
/// as guest RAM in the VMM); a process without such mappings counts whole.
pub fn sum_smaps_outside_guest(pids: &[i32], guest_sizes: &[u64]) -> Totals {
    let mut t = Totals::default();
    for &pid in pids {
        if let Some(maps) = read_smaps(pid).filter(|m| !m.is_empty()) {
            let (rss, pss) = outside_guest(&maps, guest_sizes);
            t.rss_kib += rss;
            t.pss_kib += pss;
            t.processes += 1;
        }
    }
    t
}

/// Rss and Pss of `mappings` without the guest RAM's (all of them if it is not found whole).
fn outside_guest(mappings: &[Mapping], guest_sizes: &[u64]) -> (u64, u64) {
    let split = split_guest(mappings, guest_sizes);
    match split.guest {
        Some(g) => (g.vmm_rss_kib, g.vmm_pss_kib),
        None => (split.total_rss_kib, split.total_pss_kib),
    }
}

/// A VMM's memory split into the guest's RAM and the VMM's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmmSplit {
    pub total_rss_kib: u64,
    pub total_pss_kib: u64,
    /// `None` when the guest RAM mappings could not be told apart (see [`split_guest`]).
    pub guest: Option<GuestSplit>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestSplit {
    pub guest_rss_kib: u64,
    pub vmm_rss_kib: u64,
    pub vmm_pss_kib: u64,
}

/// Splits a VMM's mappings into guest RAM and the rest. The guest RAM is recognised by size:
/// both VMMs map it as anonymous regions of exactly the sizes in `guest_sizes` (one region for
/// QEMU; flint has two above 3 GiB, split around the MMIO hole). Each expected size matches one
/// mapping. If one is missing (the kernel merged the region with a neighbour), the split is
/// unknown rather than wrong.
pub fn split_guest(mappings: &[Mapping], guest_sizes: &[u64]) -> VmmSplit {
    let total_rss_kib = mappings.iter().map(|m| m.rss_kib).sum();
    let total_pss_kib = mappings.iter().map(|m| m.pss_kib).sum();
    let mut wanted: Vec<u64> = guest_sizes.to_vec();
    let (mut guest_rss, mut guest_pss) = (0, 0);
    for m in mappings {
        if let Some(i) = wanted.iter().position(|&s| s == m.size_bytes) {
            wanted.swap_remove(i);
            guest_rss += m.rss_kib;
            guest_pss += m.pss_kib;
        }
    }
    let guest = wanted.is_empty().then(|| GuestSplit {
        guest_rss_kib: guest_rss,
        vmm_rss_kib: total_rss_kib - guest_rss,
        vmm_pss_kib: total_pss_kib - guest_pss,
    });
    VmmSplit {
        total_rss_kib,
        total_pss_kib,
        guest,
    }
}

/// Allocated bytes (`st_blocks` × 512) of one file (symlinks followed): what it really
/// occupies, sparse holes not counted.
pub fn allocated_bytes(path: &Path) -> io::Result<u64> {
    Ok(std::fs::metadata(path)?.blocks() * 512)
}

/// Allocated bytes of everything under `root` (root included), each inode counted once (hard
/// links), symlinks not followed.
pub fn tree_allocated_bytes(root: &Path) -> io::Result<u64> {
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        if seen.insert((meta.dev(), meta.ino())) {
            total += meta.blocks() * 512;
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    const SMAPS: &str = "\
55d0c0a00000-55d0c0a2c000 r--p 00000000 08:01 1234                       /usr/bin/qemu-system-x86_64
Size:                176 kB
KernelPageSize:        4 kB
Rss:                 176 kB
Pss:                  88 kB
Shared_Clean:        176 kB
VmFlags: rd mr mw me dw sd
7f3a40000000-7f3a48000000 rw-p 00000000 00:00 0 
Size:             131072 kB
Rss:               20480 kB
Pss:               20480 kB
Anonymous:         20480 kB
AnonHugePages:         0 kB
VmFlags: rd wr mr mw me ac sd hg
7f3a48000000-7f3a48021000 rw-p 00000000 00:00 0                          [heap]
Size:                132 kB
Rss:                  64 kB
Pss:                  64 kB
7ffd1c000000-7ffd1c021000 rw-p 00000000 00:00 0                          [stack]
Size:                132 kB
Rss:                  12 kB
Pss:                  12 kB
";

    #[test]
    fn smaps_mappings_have_their_size_rss_and_pss() {
        let m = parse_smaps(SMAPS);
        assert_eq!(m.len(), 4);
        assert_eq!(
            m[0],
            Mapping {
                size_bytes: 176 * 1024,
                rss_kib: 176,
                pss_kib: 88
            }
        );
        assert_eq!(m[1].size_bytes, 128 << 20);
        assert_eq!((m[1].rss_kib, m[1].pss_kib), (20480, 20480));
    }

    #[test]
    fn guest_ram_is_split_from_the_vmm_by_size() {
        let split = split_guest(&parse_smaps(SMAPS), &[128 << 20]);
        assert_eq!(split.total_rss_kib, 176 + 20480 + 64 + 12);
        assert_eq!(split.total_pss_kib, 88 + 20480 + 64 + 12);
        assert_eq!(
            split.guest,
            Some(GuestSplit {
                guest_rss_kib: 20480,
                vmm_rss_kib: 176 + 64 + 12,
                vmm_pss_kib: 88 + 64 + 12
            })
        );
    }

    #[test]
    fn guest_split_is_unknown_when_a_region_is_missing() {
        // 256 MiB of guest RAM: no mapping of that size.
        let split = split_guest(&parse_smaps(SMAPS), &[256 << 20]);
        assert_eq!(split.guest, None);
        assert_eq!(split.total_rss_kib, 176 + 20480 + 64 + 12);
        // Two regions expected, only one present.
        assert_eq!(
            split_guest(&parse_smaps(SMAPS), &[128 << 20, 128 << 20]).guest,
            None
        );
    }

    #[test]
    fn a_helper_counts_without_its_mapping_of_guest_ram() {
        let maps = parse_smaps(SMAPS);
        // It maps the guest's 128 MiB: left out.
        assert_eq!(
            outside_guest(&maps, &[128 << 20]),
            (176 + 64 + 12, 88 + 64 + 12)
        );
        // It does not (a helper's parent, say): it counts whole.
        assert_eq!(
            outside_guest(&maps, &[256 << 20]),
            (176 + 20480 + 64 + 12, 88 + 20480 + 64 + 12)
        );
        assert_eq!(outside_guest(&[], &[128 << 20]), (0, 0));
    }

    #[test]
    fn stat_parsing_survives_odd_command_names() {
        let s = parse_stat("42 (a) b (c)) S 7 42 42 0 -1 4194560").unwrap();
        assert_eq!(
            s,
            Stat {
                state: 'S',
                ppid: 7
            }
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn process_tree_finds_our_children() {
        let me = std::process::id() as i32;
        let mut kids: Vec<_> = (0..2)
            .map(|_| {
                Command::new("sleep")
                    .arg("5")
                    .stdin(Stdio::null())
                    .spawn()
                    .expect("spawn sleep")
            })
            .collect();
        let tree = process_tree(me);
        for k in &mut kids {
            let _ = k.kill();
            let _ = k.wait();
        }
        assert_eq!(tree[0], me);
        for k in &kids {
            assert!(
                tree.contains(&(k.id() as i32)),
                "{} not in {tree:?}",
                k.id()
            );
        }
    }

    #[test]
    fn a_stopped_tree_is_stopped_and_continues() {
        // A shell with a child of its own: both must stop.
        let mut sh = Command::new("sh")
            .args(["-c", "sleep 5 & wait"])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sh");
        let pid = sh.id() as i32;
        let deadline = Instant::now() + Duration::from_secs(5);
        while process_tree(pid).len() < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let stopped = StoppedTree::stop(pid);
        assert_eq!(stopped.pids().len(), 2);
        for &p in stopped.pids() {
            assert_eq!(read_stat(p).map(|s| s.state), Some('T'));
            assert!(read_smaps(p).is_some_and(|m| !m.is_empty()));
        }
        let pids = stopped.pids().to_vec();
        stopped.resume();
        for &p in &pids {
            // SAFETY: our own children.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        let _ = sh.wait();
    }

    #[test]
    fn tree_usage_counts_hard_links_once() {
        let dir = std::env::temp_dir().join(format!("flint-bench-du-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/a"), vec![1u8; 64 * 1024]).unwrap();
        std::fs::hard_link(dir.join("sub/a"), dir.join("b")).unwrap();
        let file = allocated_bytes(&dir.join("b")).unwrap();
        let total = tree_allocated_bytes(&dir).unwrap();
        let dirs = allocated_bytes(&dir).unwrap() + allocated_bytes(&dir.join("sub")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(file >= 64 * 1024);
        assert_eq!(total, file + dirs);
    }
}
