//! Benchmark: what flint's seccomp filters cost per system call on this host. For the calls a
//! device worker and a vCPU make per guest request, it times N calls without a filter and N
//! under that thread kind's filter, each in a forked child (a filter cannot be removed), and
//! prints ns per call and the difference. Calls the kernel can answer from its seccomp cache
//! (allowed whatever their arguments) skip the filter program; `ioctl` (allowed only for some
//! requests) runs it every time, so it is the worst case.
//!
//! cargo run --release -p flint-vmm --example seccomp_cost [-- N [OUT_DIR]]
//! (default N = 200000, OUT_DIR = results): prints a table, writes OUT_DIR/seccomp-cost-<unix time>.json.

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

use flint_vmm::sandbox::seccomp::{Filters, SeccompLevel, ThreadKind};

/// KVM_IRQ_LINE: an ioctl both the vCPU and the worker lists allow (by request number). On an
/// eventfd it fails with ENOTTY after the filter let it through.
const KVM_IRQ_LINE: libc::c_ulong = 0x4008_ae61;

#[derive(Clone, Copy)]
enum Call {
    Pread4k,
    Pwrite4k,
    EventfdWrite,
    EventfdRead,
    EpollWait,
    IoctlIrqLine,
}

impl Call {
    fn name(self) -> &'static str {
        match self {
            Call::Pread4k => "preadv 4 KiB",
            Call::Pwrite4k => "pwritev 4 KiB",
            Call::EventfdWrite => "write (eventfd)",
            Call::EventfdRead => "read (eventfd)",
            Call::EpollWait => "epoll_wait (no wait)",
            Call::IoctlIrqLine => "ioctl KVM_IRQ_LINE (arg-filtered)",
        }
    }
}

struct Fds {
    file: RawFd,
    event: RawFd,
    epoll: RawFd,
}

/// One call; returns nothing useful (the result is not what is measured).
fn once(call: Call, fds: &Fds, buf: &mut [u8; 4096]) {
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let one: u64 = 1;
    let mut out: u64 = 0;
    let mut ev = libc::epoll_event { events: 0, u64: 0 };
    // SAFETY: each call gets valid fds of ours and buffers that outlive it.
    unsafe {
        match call {
            Call::Pread4k => libc::preadv(fds.file, &iov, 1, 0),
            Call::Pwrite4k => libc::pwritev(fds.file, &iov, 1, 0),
            Call::EventfdWrite => libc::write(fds.event, (&one as *const u64).cast(), 8),
            Call::EventfdRead => libc::read(fds.event, (&mut out as *mut u64).cast(), 8),
            Call::EpollWait => libc::epoll_wait(fds.epoll, &mut ev, 1, 0) as isize,
            Call::IoctlIrqLine => libc::ioctl(fds.event, KVM_IRQ_LINE, 0usize) as isize,
        };
    }
}

/// ns per call of `call`, `n` times, in a forked child under `kind`'s filter (or none).
fn measure(call: Call, kind: Option<ThreadKind>, n: u32, fds: &Fds) -> Option<f64> {
    let mut pipe = [0; 2];
    // SAFETY: pipe fills the two-element array.
    if unsafe { libc::pipe(pipe.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: the benchmark is single-threaded; the child only makes system calls and _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let mut buf = [0u8; 4096];
        if let Some(kind) = kind {
            let filters = Filters::new(SeccompLevel::Kill).expect("filters build");
            filters.apply(kind, "bench").expect("filter installs");
        }
        // Warm up, then time. For reads of the eventfd, each read is preceded by a write (both
        // are timed, and the write alone is subtracted by the caller).
        for _ in 0..1000 {
            if matches!(call, Call::EventfdRead) {
                once(Call::EventfdWrite, fds, &mut buf);
            }
            once(call, fds, &mut buf);
        }
        let start = Instant::now();
        for _ in 0..n {
            if matches!(call, Call::EventfdRead) {
                once(Call::EventfdWrite, fds, &mut buf);
            }
            once(call, fds, &mut buf);
        }
        let ns = start.elapsed().as_nanos() as f64 / f64::from(n);
        let bytes = ns.to_le_bytes();
        // SAFETY: writes 8 bytes from `bytes` to the pipe, then ends the child.
        unsafe {
            libc::write(pipe[1], bytes.as_ptr().cast(), 8);
            libc::_exit(0);
        }
    }
    // SAFETY: closes our copy of the write end.
    unsafe { libc::close(pipe[1]) };
    // SAFETY: the read end is ours; File takes it over.
    let mut r = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(pipe[0]) });
    let mut bytes = [0u8; 8];
    let got = std::io::Read::read_exact(&mut r, &mut bytes).is_ok();
    let mut status = 0;
    // SAFETY: waits for our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    (got && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0)
        .then(|| f64::from_le_bytes(bytes))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let out_dir = args.next().unwrap_or_else(|| "results".into());
    let path = std::env::temp_dir().join(format!("flint-seccomp-cost-{}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("scratch file");
    file.set_len(4096).expect("scratch file size");
    // SAFETY: plain fd-creating calls; the results are checked.
    let (event, epoll) = unsafe { (libc::eventfd(0, 0), libc::epoll_create1(0)) };
    assert!(event >= 0 && epoll >= 0, "eventfd/epoll");
    let fds = Fds {
        file: file.as_raw_fd(),
        event,
        epoll,
    };
    let rows: &[(ThreadKind, &str, Call)] = &[
        (ThreadKind::DeviceWorker, "device worker", Call::Pread4k),
        (ThreadKind::DeviceWorker, "device worker", Call::Pwrite4k),
        (
            ThreadKind::DeviceWorker,
            "device worker",
            Call::EventfdWrite,
        ),
        (ThreadKind::DeviceWorker, "device worker", Call::EventfdRead),
        (ThreadKind::DeviceWorker, "device worker", Call::EpollWait),
        (
            ThreadKind::DeviceWorker,
            "device worker",
            Call::IoctlIrqLine,
        ),
        (ThreadKind::Vcpu, "vCPU", Call::EventfdWrite),
        (ThreadKind::Vcpu, "vCPU", Call::IoctlIrqLine),
    ];
    println!(
        "{:<14} {:<34} {:>10} {:>10} {:>9}",
        "thread", "call", "none (ns)", "filter", "+ns"
    );
    let mut json = String::new();
    for (kind, kname, call) in rows {
        let base_write = |k| measure(Call::EventfdWrite, k, n, &fds).unwrap_or(0.0);
        let mut none = measure(*call, None, n, &fds);
        let mut filtered = measure(*call, Some(*kind), n, &fds);
        if matches!(call, Call::EventfdRead) {
            none = none.map(|v| v - base_write(None));
            filtered = filtered.map(|v| v - base_write(Some(*kind)));
        }
        let show = |v: Option<f64>| v.map_or("refused".to_string(), |v| format!("{v:.0}"));
        let delta = match (none, filtered) {
            (Some(a), Some(b)) => format!("{:+.0}", b - a),
            _ => "-".into(),
        };
        println!(
            "{:<14} {:<34} {:>10} {:>10} {:>9}",
            kname,
            call.name(),
            show(none),
            show(filtered),
            delta
        );
        let num = |v: Option<f64>| v.map_or("null".to_string(), |v| format!("{v:.1}"));
        json.push_str(&format!(
            "{}    {{\"thread\": \"{kname}\", \"call\": \"{}\", \"ns_unfiltered\": {}, \"ns_filtered\": {}}}",
            if json.is_empty() { "" } else { ",\n" },
            call.name(),
            num(none),
            num(filtered)
        ));
    }
    let _ = std::fs::remove_file(&path);
    let when = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let report = format!(
        "{{\n  \"benchmark\": \"seccomp-cost\",\n  \"where\": \"this host (kernel {})\",\n  \"calls_per_row\": {n},\n  \"results\": [\n{json}\n  ]\n}}\n",
        kernel.trim()
    );
    if std::fs::create_dir_all(&out_dir).is_ok() {
        let out = std::path::Path::new(&out_dir).join(format!("seccomp-cost-{when}.json"));
        if let Ok(mut f) = std::fs::File::create(&out) {
            let _ = f.write_all(report.as_bytes());
            println!("written to {}", out.display());
        }
    }
}
