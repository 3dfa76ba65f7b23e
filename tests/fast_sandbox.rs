//! Fast tier: what confines flint besides seccomp (tests/fast_seccomp.rs) — the jail
//! (`--jail`, as root), Landlock, closed inherited descriptors, guest memory left out of core
//! dumps, and `--cgroup` — seen from outside a running flint through `/proc`.

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::*;

fn is_root() -> bool {
    // SAFETY: geteuid has no failure mode.
    unsafe { libc::geteuid() == 0 }
}

/// flint running the spinning firmware with `args` (and `env`), once the guest runs.
fn spinning(args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut cmd = flint();
    cmd.args(["run", "--kernel", firmware("spin").to_str().unwrap()])
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    let (child, running) = spawn_until_spinning(cmd);
    if !running {
        panic!("the guest never ran: {:?}", stop(child));
    }
    child
}

/// SIGTERMs flint and returns (exit status, stderr).
fn stop(child: Child) -> (Option<i32>, String) {
    signal(&child, libc::SIGTERM);
    let out = wait_or_kill(child, Duration::from_secs(20));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn proc_file(pid: u32, name: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/{name}")).unwrap_or_default()
}

fn ns(pid: &str, kind: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// A jail-wide limit from /proc/PID/limits: (soft, hard).
fn limit(limits: &str, name: &str) -> (String, String) {
    let line = limits.lines().find(|l| l.starts_with(name)).unwrap_or("");
    let mut f = line[name.len().min(line.len())..].split_whitespace();
    (
        f.next().unwrap_or("").to_string(),
        f.next().unwrap_or("").to_string(),
    )
}

/// What a jailed flint is and sees: checked on the child that runs the VM (the supervising
/// parent's only child), while its guest spins. `env` adds debug switches.
fn check_jail(tag: &str, env: &[(&str, &str)]) {
    if !is_root() {
        skip(&format!("jail_{tag}"), "--jail needs root");
        return;
    }
    let disk = TempFile::new(&format!("jail-{tag}"), &vec![0u8; 3 << 20]);
    let mut env = env.to_vec();
    env.push(("FLINT_TEST_OPEN", "/etc/passwd"));
    let jail = [
        "--jail",
        "--uid",
        "65534",
        "--gid",
        "65534",
        "--disk",
        disk.path(),
    ];
    let parent = spinning(&jail, &env);
    let children = proc_file(parent.id(), &format!("task/{}/children", parent.id()));
    let Ok(child) = children.trim().parse::<u32>() else {
        panic!(
            "the jail's parent has not one child: {children:?}: {:?}",
            stop(parent)
        );
    };
    let status = proc_file(child, "status");
    let mountinfo = proc_file(child, "mountinfo");
    let root: Vec<_> = std::fs::read_dir(format!("/proc/{child}/root"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_else(|e| panic!("cannot list the jail's root: {e}"));
    let limits = proc_file(child, "limits");
    let namespaces: Vec<(String, String)> = ["mnt", "pid", "ipc", "uts", "net"]
        .iter()
        .map(|k| (ns("self", k), ns(&child.to_string(), k)))
        .collect();
    let parent_status = proc_file(parent.id(), "status");
    let (code, stderr) = stop(parent);

    // The VM ran to the signal and the parent passed on the child's status.
    assert_eq!(code, Some(128 + libc::SIGTERM), "{stderr}");
    // Its own PID namespace, where it is PID 1.
    let nspid = status_field(&status, "NSpid");
    assert_eq!(nspid, format!("{child}\t1"), "{status}");
    // Its own mount, PID, IPC and UTS namespaces; the host's network (no --netns).
    for (kind, (ours, its)) in ["mnt", "pid", "ipc", "uts", "net"].iter().zip(&namespaces) {
        assert!(!its.is_empty(), "no {kind} namespace link");
        assert_eq!(
            ours == its,
            *kind == "net",
            "{kind}: ours {ours}, the jail's {its}"
        );
    }
    // An unprivileged user with no capabilities and no way back.
    for f in ["Uid", "Gid"] {
        assert_eq!(
            status_field(&status, f),
            "65534\t65534\t65534\t65534",
            "{f}: {status}"
        );
    }
    assert_eq!(status_field(&status, "Groups"), "", "{status}");
    for f in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(
            status_field(&status, f),
            "0000000000000000",
            "{f}: {status}"
        );
    }
    assert_eq!(status_field(&status, "NoNewPrivs"), "1", "{status}");
    assert_eq!(status_field(&status, "Seccomp"), "2", "{status}");
    // One mount: its empty, read-only tmpfs root. Nothing of the host's.
    let mounts: Vec<&str> = mountinfo.lines().collect();
    assert_eq!(mounts.len(), 1, "{mountinfo}");
    let fields: Vec<&str> = mounts[0].split_whitespace().collect();
    assert_eq!((fields[3], fields[4]), ("/", "/"), "{mountinfo}");
    assert!(fields[5].split(',').any(|o| o == "ro"), "{mountinfo}");
    assert!(mounts[0].contains(" - tmpfs flint-jail "), "{mountinfo}");
    assert!(root.is_empty(), "the jail's root is not empty: {root:?}");
    // Nothing to open by path (and Landlock would refuse it anyway).
    assert!(
        stderr.contains("flint: test: open /etc/passwd: No such file or directory"),
        "{stderr}"
    );
    // rlimits: open files, no core dumps, no file written past the 3 MiB disk (stdout is a
    // pipe here, so the console needs no more).
    assert_eq!(
        limit(&limits, "Max open files"),
        ("1024".into(), "1024".into()),
        "{limits}"
    );
    assert_eq!(
        limit(&limits, "Max core file size"),
        ("0".into(), "0".into()),
        "{limits}"
    );
    let fsize = (3u64 << 20).to_string();
    assert_eq!(
        limit(&limits, "Max file size"),
        (fsize.clone(), fsize),
        "{limits}"
    );
    // The supervising parent keeps no privilege either.
    assert_eq!(
        status_field(&parent_status, "Uid"),
        "65534\t65534\t65534\t65534"
    );
    assert_eq!(status_field(&parent_status, "CapEff"), "0000000000000000");
}

#[test]
fn jailed_flint_sees_only_its_jail() {
    check_jail("pivot_root", &[]);
}

/// Where the root cannot be pivoted away from (an initramfs), the jail moves its root over
/// `/` and chroots instead; debug builds take that path on request.
#[test]
fn jail_without_pivot_root_is_the_same_jail() {
    check_jail("move_and_chroot", &[("FLINT_TEST_NO_PIVOT", "1")]);
}

/// The jail's parent passes SIGPWR on to the child that runs the VM: without ACPI, the child
/// says it has no power button, and the VM goes on until SIGTERM.
#[test]
fn jailed_flint_passes_sigpwr_on() {
    if !is_root() {
        skip("jailed_flint_passes_sigpwr_on", "--jail needs root");
        return;
    }
    let parent = spinning(
        &["--jail", "--uid", "65534", "--gid", "65534", "--no-acpi"],
        &[],
    );
    signal(&parent, libc::SIGPWR);
    std::thread::sleep(Duration::from_millis(500));
    let (code, stderr) = stop(parent);
    assert_eq!(code, Some(128 + libc::SIGTERM), "{stderr}");
    assert!(
        stderr.contains("flint: SIGPWR: the guest has no power button to press"),
        "{stderr}"
    );
}

#[test]
fn jail_refuses_without_root_and_with_root_ids() {
    let hello = firmware("hello");
    let hello = hello.to_str().unwrap();
    let r = run(&[
        "run", "--kernel", hello, "--jail", "--uid", "0", "--gid", "100",
    ]);
    if is_root() {
        assert_eq!(r.code, Some(1), "{}", r.stderr);
        assert_eq!(
            r.stderr,
            "flint: error: --uid 0 would keep root's rights in the jail; give an unprivileged id\n"
        );
    }
    let r = run(&["run", "--kernel", hello, "--uid", "100"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("--jail"), "{}", r.stderr);
    if !is_root() {
        skip(
            "jail_refuses_without_root",
            "running flint as another user needs root",
        );
        return;
    }
    let copies = SharedCopies::new(
        "jail-nobody",
        &[Path::new(env!("CARGO_BIN_EXE_flint")), &firmware("hello")],
    );
    let mut cmd = std::process::Command::new(copies.path("flint"));
    cmd.args(["run", "--kernel"])
        .arg(copies.path("hello.elf"))
        .args(["--jail", "--uid", "1000", "--gid", "1000"])
        .uid(65534)
        .gid(65534);
    let r = run_command(cmd, b"", Duration::from_secs(30));
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr.starts_with("flint: error: --jail needs root"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.is_empty(), "no guest ran: {}", r.stdout);
}

#[test]
fn landlock_refuses_what_flint_was_not_given() {
    if !flint_vmm::sandbox::landlock::available() {
        skip(
            "landlock_refuses_what_flint_was_not_given",
            "this kernel has no Landlock",
        );
        return;
    }
    // A file flint could read (root reads anything) but was not given: refused once its inputs
    // are open. So is its own kernel, by path: it reads it through the fd it opened.
    let other = TempFile::new("landlock-other", b"not for flint");
    let hello = firmware("hello");
    for path in [other.path(), hello.to_str().unwrap()] {
        let mut cmd = flint();
        cmd.args(["run", "--kernel", hello.to_str().unwrap()])
            .env("FLINT_TEST_OPEN", path);
        let r = run_command(cmd, b"", Duration::from_secs(30));
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        assert!(r.stdout.contains("flint-fw: bye"), "{}", r.stdout);
        assert_eq!(
            r.stderr,
            format!("flint: test: open {path}: Permission denied (os error 13)\n")
        );
    }
}

#[test]
fn inherited_descriptors_are_closed() {
    let secret = TempFile::new("inherited", b"host secret");
    let file = std::fs::File::open(secret.path()).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    let mut cmd = flint();
    cmd.args(["run", "--kernel", firmware("spin").to_str().unwrap()])
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: dup2 in the child before exec; it leaves the file open (no CLOEXEC) as fd 7.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(fd, 7) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (child, running) = spawn_until_spinning(cmd);
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", child.id()))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|p| p.display().to_string())
                .collect()
        })
        .unwrap_or_default();
    let (code, stderr) = stop(child);
    assert!(running, "{stderr}");
    assert_eq!(code, Some(128 + libc::SIGTERM), "{stderr}");
    assert!(!fds.is_empty());
    assert!(
        !fds.iter().any(|p| p == secret.path()),
        "flint kept an inherited descriptor: {fds:?}"
    );
}

#[test]
fn guest_memory_is_left_out_of_core_dumps() {
    let child = spinning(&["--memory", "96"], &[]);
    let smaps = proc_file(child.id(), "smaps");
    stop(child);
    // The guest's RAM is the one 96 MiB mapping; its VmFlags carry "dd" (do not dump).
    let mut flags = None;
    let mut size_matches = false;
    for line in smaps.lines() {
        if let Some(kb) = line.strip_prefix("Size:") {
            size_matches = kb.trim() == "98304 kB";
        } else if let Some(f) = line.strip_prefix("VmFlags:") {
            if size_matches {
                flags = Some(f.split_whitespace().map(str::to_string).collect::<Vec<_>>());
            }
        }
    }
    let flags = flags.expect("no 96 MiB mapping in flint's smaps");
    assert!(flags.iter().any(|f| f == "dd"), "{flags:?}");
}

/// The cgroup v2 mount of this host, if any.
fn cgroup2_mount() -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        right
            .starts_with("cgroup2 ")
            .then(|| left.split_whitespace().nth(4).map(str::to_string))?
    })
}

#[test]
fn flint_runs_in_the_cgroup_it_was_given() {
    let Some(mount) = cgroup2_mount().filter(|_| is_root()) else {
        skip(
            "flint_runs_in_the_cgroup_it_was_given",
            "needs root and a cgroup2 mount",
        );
        return;
    };
    let name = format!("flint-test-{}", std::process::id());
    let dir = Path::new(&mount).join(&name);
    let controllers = std::fs::read_to_string(Path::new(&mount).join("cgroup.subtree_control"))
        .unwrap_or_default();
    let pids = controllers.split_whitespace().any(|c| c == "pids");
    let dir_s = dir.to_str().unwrap();
    let mut args = vec!["--cgroup", dir_s, "--cgroup-limit", "pids.max=50"];
    if !pids {
        // This host's cgroup2 has no pids controller for its children: that is the error.
        let r = run(&[
            &["run", "--kernel", firmware("hello").to_str().unwrap()],
            &args[..],
        ]
        .concat());
        let _ = std::fs::remove_dir(&dir);
        assert_eq!(r.code, Some(1), "{}", r.stderr);
        assert!(
            r.stderr.contains(&format!("--cgroup-limit pids.max: the pids controller is not enabled for {dir_s} (enable it in its parent: echo +pids > {mount}/cgroup.subtree_control)")),
            "{}",
            r.stderr
        );
        args.truncate(2);
    }
    let child = spinning(&args, &[]);
    let cgroup = proc_file(child.id(), "cgroup");
    let max = std::fs::read_to_string(dir.join("pids.max")).unwrap_or_default();
    stop(child);
    let _ = std::fs::remove_dir(&dir);
    assert!(
        cgroup.lines().any(|l| l == format!("0::/{name}")),
        "{cgroup}"
    );
    if pids {
        assert_eq!(max.trim(), "50");
    }
}
