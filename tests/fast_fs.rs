//! virtio-fs against a real virtiofsd, without a guest: the test plays the guest's FUSE driver
//! on the device's queues (FUSE_INIT, LOOKUP, OPEN, READ, WRITE) in shareable guest memory,
//! and checks what lands in the rings, in the host directory and on the interrupt line. No
//! KVM is needed: what is tested is flint's vhost-user frontend (memory table, ring
//! addresses, kick and call relaying), virtiofsd's start and stop, and `--fs` errors.

mod common;

use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flint_vmm::devices::irq::IrqLine;
use flint_vmm::devices::virtio::fs::{Fs, Virtiofsd};
use flint_vmm::devices::virtio::testing::{TestQueue, F_WRITE};
use flint_vmm::devices::virtio::{ActivateContext, Interrupt, QueueWorker, VirtioDevice};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

const FUSE_LOOKUP: u32 = 1;
const FUSE_OPEN: u32 = 14;
const FUSE_READ: u32 = 15;
const FUSE_WRITE: u32 = 16;
const FUSE_INIT: u32 = 26;
const FUSE_CREATE: u32 = 35;
const ROOT: u64 = 1;

/// A guest FUSE driver's view of one virtio-fs device.
struct Driver {
    mem: GuestMemoryMmap,
    request: TestQueue,
    worker: Box<dyn QueueWorker>,
    irq: EventFd,
    unique: u64,
    served: u16,
}

const IN_BUF: u64 = 0x10_0000;
const OUT_BUF: u64 = 0x20_0000;
const OUT_LEN: u32 = 0x2_0000;

impl Driver {
    fn start(fs: &mut Fs) -> Driver {
        let mem = flint_vmm::vstate::memory::create_guest_memory(16, true).unwrap();
        let (_hiprio, q0) = TestQueue::new(&mem, GuestAddress(0x1_0000), 16);
        let (request, q1) = TestQueue::new(&mem, GuestAddress(0x2_0000), 16);
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let interrupt = Arc::new(Interrupt::new(IrqLine::Fd(irq.try_clone().unwrap())));
        let worker = fs
            .activate(ActivateContext {
                mem: mem.clone(),
                queues: vec![q0, q1],
                acked_features: 1 << 32, // VERSION_1 only: a notification for every request
                interrupt,
            })
            .expect("the device starts");
        Driver {
            mem,
            request,
            worker,
            irq,
            unique: 0,
            served: 0,
        }
    }

    /// Sends one FUSE request and returns the reply's error and body.
    fn call(&mut self, opcode: u32, nodeid: u64, body: &[u8]) -> (i32, Vec<u8>) {
        self.unique += 1;
        let len = u32::try_from(40 + body.len()).unwrap();
        let mut req = Vec::new();
        req.extend_from_slice(&len.to_le_bytes());
        req.extend_from_slice(&opcode.to_le_bytes());
        req.extend_from_slice(&self.unique.to_le_bytes());
        req.extend_from_slice(&nodeid.to_le_bytes());
        req.extend_from_slice(&[0u8; 16]); // uid, gid, pid, extlen, padding: root
        req.extend_from_slice(body);
        self.mem.write_slice(&req, GuestAddress(IN_BUF)).unwrap();
        self.mem
            .write_slice(&vec![0u8; OUT_LEN as usize], GuestAddress(OUT_BUF))
            .unwrap();
        self.request.recycle();
        let head = self
            .request
            .put_chain(&self.mem, &[(IN_BUF, len, 0), (OUT_BUF, OUT_LEN, F_WRITE)]);
        self.request.make_available(&self.mem, head);
        // The driver's notify, as the worker thread relays it.
        self.worker.process_queue(1);
        let call = self.worker.backend_fds()[1];
        assert!(
            readable(call, Duration::from_secs(20)),
            "virtiofsd never signalled opcode {opcode}"
        );
        self.worker.process_backend(1);
        assert!(self.irq.read().is_ok(), "the guest is interrupted");
        self.served += 1;
        assert_eq!(self.request.used_idx(&self.mem), self.served);
        let (_, used_len) = self.request.used(&self.mem, self.served - 1);
        let mut out = vec![0u8; used_len as usize];
        self.mem
            .read_slice(&mut out, GuestAddress(OUT_BUF))
            .unwrap();
        let olen = u32::from_le_bytes(out[0..4].try_into().unwrap());
        let error = i32::from_le_bytes(out[4..8].try_into().unwrap());
        let unique = u64::from_le_bytes(out[8..16].try_into().unwrap());
        assert_eq!(unique, self.unique, "the reply answers this request");
        assert_eq!(olen, used_len, "used length is the reply's");
        (error, out[16..].to_vec())
    }

    fn init(&mut self) {
        let mut body = Vec::new();
        for v in [7u32, 31, 0, 0] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        let (error, out) = self.call(FUSE_INIT, 0, &body);
        assert_eq!(error, 0);
        assert_eq!(
            u32::from_le_bytes(out[0..4].try_into().unwrap()),
            7,
            "FUSE major"
        );
    }

    /// LOOKUP then OPEN: the node and the file handle.
    fn open(&mut self, name: &str, flags: u32) -> Result<(u64, u64), i32> {
        let (error, entry) = self.call(FUSE_LOOKUP, ROOT, &cstr(name));
        if error != 0 {
            return Err(error);
        }
        let node = u64::from_le_bytes(entry[0..8].try_into().unwrap());
        let mut body = flags.to_le_bytes().to_vec();
        body.extend_from_slice(&0u32.to_le_bytes());
        let (error, open) = self.call(FUSE_OPEN, node, &body);
        if error != 0 {
            return Err(error);
        }
        Ok((node, u64::from_le_bytes(open[0..8].try_into().unwrap())))
    }

    fn read(&mut self, node: u64, fh: u64, size: u32) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&fh.to_le_bytes());
        body.extend_from_slice(&0u64.to_le_bytes());
        body.extend_from_slice(&size.to_le_bytes());
        body.extend_from_slice(&[0u8; 20]);
        let (error, data) = self.call(FUSE_READ, node, &body);
        assert_eq!(error, 0);
        data
    }
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn readable(fd: RawFd, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd on the stack.
        if unsafe { libc::poll(&mut p, 1, 100) } == 1 {
            return true;
        }
    }
    false
}

struct Share {
    dir: PathBuf,
}

impl Share {
    fn new(name: &str) -> Share {
        let dir = std::env::temp_dir().join(format!("flint-fast-fs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hello.txt"), b"hello from the host\n").unwrap();
        Share { dir }
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(bin: &Path, share: &Share, read_only: bool) -> (Virtiofsd, Fs) {
    let (daemon, backend) = Virtiofsd::start(bin, "hostdir", &share.dir, read_only).unwrap();
    (daemon, Fs::new("hostdir", backend).unwrap())
}

fn alive(pid: u32) -> bool {
    // A zombie is gone for this purpose: it serves nothing.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

#[test]
fn a_guest_reads_and_writes_a_host_directory_through_virtiofsd() {
    let name = "a_guest_reads_and_writes_a_host_directory_through_virtiofsd";
    let Some(bin) = common::virtiofsd(name) else {
        return;
    };
    let share = Share::new("rw");
    let (daemon, mut fs) = start(&bin, &share, false);

    let mut config = [0u8; 40];
    fs.read_config(0, &mut config);
    assert_eq!(&config[..8], b"hostdir\0", "the tag the guest mounts");
    assert_eq!(
        u32::from_le_bytes(config[36..].try_into().unwrap()),
        1,
        "request queues"
    );

    let mut d = Driver::start(&mut fs);
    d.init();
    let (node, fh) = d.open("hello.txt", libc::O_RDONLY as u32).unwrap();
    assert_eq!(d.read(node, fh, 4096), b"hello from the host\n");
    // A file written on the host after the share started is seen: it is live.
    std::fs::write(share.dir.join("later.txt"), b"written later").unwrap();
    let (node, fh) = d.open("later.txt", libc::O_RDONLY as u32).unwrap();
    assert_eq!(d.read(node, fh, 4096), b"written later");

    // And the other way round: the guest creates and writes a file the host then reads.
    let mut create = Vec::new();
    create.extend_from_slice(&((libc::O_WRONLY | libc::O_CREAT) as u32).to_le_bytes());
    create.extend_from_slice(&0o644u32.to_le_bytes()); // mode
    create.extend_from_slice(&0o022u32.to_le_bytes()); // umask
    create.extend_from_slice(&0u32.to_le_bytes()); // open_flags
    create.extend_from_slice(&cstr("from-guest.txt"));
    let (error, out) = d.call(FUSE_CREATE, ROOT, &create);
    assert_eq!(error, 0, "FUSE_CREATE");
    let node = u64::from_le_bytes(out[0..8].try_into().unwrap());
    // fuse_entry_out is 128 bytes; fuse_open_out follows.
    let fh = u64::from_le_bytes(out[128..136].try_into().unwrap());
    let data = b"bytes from the guest";
    let mut write = Vec::new();
    write.extend_from_slice(&fh.to_le_bytes());
    write.extend_from_slice(&0u64.to_le_bytes()); // offset
    write.extend_from_slice(&u32::try_from(data.len()).unwrap().to_le_bytes());
    write.extend_from_slice(&[0u8; 20]); // write_flags, lock_owner, flags, padding
    write.extend_from_slice(data);
    let (error, out) = d.call(FUSE_WRITE, node, &write);
    assert_eq!(error, 0, "FUSE_WRITE");
    assert_eq!(
        u32::from_le_bytes(out[0..4].try_into().unwrap()),
        u32::try_from(data.len()).unwrap()
    );
    assert_eq!(
        std::fs::read(share.dir.join("from-guest.txt")).unwrap(),
        data
    );

    // flint's end stops the virtiofsd it started.
    assert!(
        !virtiofsds_for(&share.dir).is_empty(),
        "virtiofsd runs for the share"
    );
    fs.reset();
    drop(d);
    drop(fs);
    drop(daemon);
    let left = virtiofsds_left(&share.dir);
    assert!(
        left.is_empty(),
        "virtiofsd {left:?} still runs 5 s after its owner dropped it"
    );
}

#[test]
fn a_read_only_share_refuses_writes() {
    let name = "a_read_only_share_refuses_writes";
    let Some(bin) = common::virtiofsd(name) else {
        return;
    };
    let share = Share::new("ro");
    let (_daemon, mut fs) = start(&bin, &share, true);
    let mut d = Driver::start(&mut fs);
    d.init();
    let (node, fh) = d.open("hello.txt", libc::O_RDONLY as u32).unwrap();
    assert_eq!(d.read(node, fh, 4096), b"hello from the host\n");
    assert_eq!(
        d.open("hello.txt", libc::O_WRONLY as u32),
        Err(-libc::EROFS),
        "opening for writing"
    );
    let mut create = Vec::new();
    create.extend_from_slice(&((libc::O_WRONLY | libc::O_CREAT) as u32).to_le_bytes());
    create.extend_from_slice(
        &[
            0o644u32.to_le_bytes(),
            0u32.to_le_bytes(),
            0u32.to_le_bytes(),
        ]
        .concat(),
    );
    create.extend_from_slice(&cstr("new.txt"));
    let (error, _) = d.call(FUSE_CREATE, ROOT, &create);
    assert_eq!(error, -libc::EROFS, "creating a file");
    assert!(!share.dir.join("new.txt").exists());
}

#[test]
fn a_single_file_is_shared_alone() {
    let name = "a_single_file_is_shared_alone";
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        common::skip(
            name,
            "sharing a single file needs root (a private mount namespace)",
        );
        return;
    }
    let Some(bin) = common::virtiofsd(name) else {
        return;
    };
    let share = Share::new("file");
    std::fs::write(share.dir.join("secret.txt"), b"not shared").unwrap();
    let (_daemon, backend) =
        Virtiofsd::start(&bin, "one", &share.dir.join("hello.txt"), true).unwrap();
    let mut fs = Fs::new("one", backend).unwrap();
    let mut d = Driver::start(&mut fs);
    d.init();
    let (node, fh) = d.open("hello.txt", libc::O_RDONLY as u32).unwrap();
    assert_eq!(d.read(node, fh, 4096), b"hello from the host\n");
    assert_eq!(
        d.open("secret.txt", libc::O_RDONLY as u32),
        Err(-libc::ENOENT)
    );
}

#[test]
fn virtiofsd_failing_to_start_is_one_clear_error() {
    let name = "virtiofsd_failing_to_start_is_one_clear_error";
    let Some(_bin) = common::virtiofsd(name) else {
        return;
    };
    let share = Share::new("fail");
    // /bin/false stands for a virtiofsd that exits at once.
    let err = match Virtiofsd::start(Path::new("/bin/false"), "t", &share.dir, false) {
        Ok(_) => panic!("a backend that exits at once was taken"),
        Err(e) => flint_vmm::exit::error_chain(&e),
    };
    assert!(
        err.contains("--fs tag=t") && err.contains("exited") && !err.contains('\n'),
        "{err}"
    );
}

#[test]
fn fs_options_are_checked_before_anything_starts() {
    for (args, wanted) in [
        (vec!["--fs", "tag=a"], "missing path=DIR"),
        (vec!["--fs", "path=/tmp"], "missing tag=TAG"),
        (
            vec!["--fs", "tag=a,path=/nonexistent-flint-share"],
            "--fs /nonexistent-flint-share: no such file",
        ),
        (vec!["--fs", "tag=a,socket=/tmp"], "is not a socket"),
        (
            vec!["--fs", "tag=a,path=/tmp", "--fs", "tag=a,path=/"],
            "tag 'a' is given to more than one share",
        ),
    ] {
        let mut all = vec!["run", "--kernel", "/proc/self/exe"];
        all.extend(args.iter().copied());
        let r = common::run(&all);
        assert!(matches!(r.code, Some(1 | 2)), "{all:?}: {:?}", r.code);
        assert!(r.stderr.contains(wanted), "{all:?}: {}", r.stderr);
        assert_eq!(
            r.stderr.trim_end().lines().count(),
            1,
            "one line: {}",
            r.stderr
        );
    }
}

/// The virtiofsds still serving `dir` once they have had 5 s to end: flint waits for the one
/// it started, but that one's own sandboxed child dies with it a moment later (CI once saw it
/// still there right after flint's drop).
fn virtiofsds_left(dir: &Path) -> Vec<u32> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut left = virtiofsds_for(dir);
    while !left.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        left = virtiofsds_for(dir);
    }
    left
}

/// Processes named virtiofsd whose command line mentions `dir`.
fn virtiofsds_for(dir: &Path) -> Vec<u32> {
    let needle = dir.to_str().unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "virtiofsd")
                && std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
                && alive(*pid)
        })
        .collect()
}

#[test]
fn a_vm_with_a_share_refuses_a_snapshot_and_its_virtiofsd_ends_with_it() {
    let name = "a_vm_with_a_share_refuses_a_snapshot_and_its_virtiofsd_ends_with_it";
    if !common::have_kvm() {
        common::skip(name, "no /dev/kvm");
        return;
    }
    let Some(bin) = common::virtiofsd(name) else {
        return;
    };
    let share = Share::new("vm");
    let fs = format!("tag=data,path={}", share.dir.display());
    let mut vm = common::CounterVm::run_with_env(
        "fs-snapshot",
        &[
            "--kernel",
            common::firmware("counter").to_str().unwrap(),
            "--fs",
            &fs,
        ],
        &[("FLINT_VIRTIOFSD", &bin)],
    );
    // The flint binary (under its seccomp filter) started one virtiofsd for the share.
    assert!(!virtiofsds_for(&share.dir).is_empty(), "no virtiofsd runs");
    let out = common::flint()
        .args([
            "ctl",
            "--api-sock",
            vm.sock.to_str().unwrap(),
            "snapshot",
            "--out",
        ])
        .arg(vm.dir.join("snap"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--fs shares cannot be snapshotted"),
        "{stderr}"
    );
    // The VM still runs; SIGTERM ends it, and its virtiofsd with it.
    let child = vm.child.take().unwrap();
    common::signal(&child, libc::SIGTERM);
    let out = common::wait_or_kill(child, Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(128 + libc::SIGTERM));
    let left = virtiofsds_left(&share.dir);
    assert!(left.is_empty(), "virtiofsd {left:?} outlived flint by 5 s");
}

/// A virtiofsd the user started (`--fs tag=T,socket=PATH`): flint connects to it, leaves it
/// running when it ends, and stops the VM with one line when that virtiofsd goes away.
#[test]
fn a_user_started_virtiofsd_is_used_and_its_end_stops_the_vm() {
    let name = "a_user_started_virtiofsd_is_used_and_its_end_stops_the_vm";
    if !common::have_kvm() {
        common::skip(name, "no /dev/kvm");
        return;
    }
    let Some(bin) = common::virtiofsd(name) else {
        return;
    };
    let share = Share::new("socket");
    let sock = share.dir.with_extension("sock");
    let _ = std::fs::remove_file(&sock);
    let mut daemon = std::process::Command::new(&bin)
        .arg("--socket-path")
        .arg(&sock)
        .arg("--shared-dir")
        .arg(&share.dir)
        .args(["--log-level", "error"])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "virtiofsd made no socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    let fs = format!("tag=data,socket={}", sock.display());
    let mut vm = common::CounterVm::run(
        "fs-socket",
        &[
            "--kernel",
            common::firmware("counter").to_str().unwrap(),
            "--fs",
            &fs,
        ],
    );
    // The guest runs (it counted); flint started no virtiofsd of its own (those get --fd).
    let running = virtiofsds_for(&share.dir);
    assert!(!running.is_empty());
    for pid in &running {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains("--fd="),
            "flint started one"
        );
    }
    // The user's virtiofsd dies (with the process its sandbox forks, if any): flint ends the
    // VM, exit 1, one line naming the share.
    for pid in running {
        // SAFETY: kill on processes this test started (the virtiofsd and its sandbox child).
        unsafe { libc::kill(i32::try_from(pid).unwrap(), libc::SIGKILL) };
    }
    let _ = daemon.wait();
    let child = vm.child.take().unwrap();
    let out = common::wait_or_kill(child, Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("share 'data' went away"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    let _ = std::fs::remove_file(&sock);
}
