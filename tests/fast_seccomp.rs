//! Fast tier: every flint thread runs under its seccomp filter with `no_new_privs` while the VM
//! runs (`/proc/PID/task/*/status`), and `--seccomp off` installs none. What each filter
//! refuses is tested in `flint_vmm::sandbox::seccomp`'s unit tests; that the lists allow what
//! real guests need is what every fast and lab test shows, since they all run with the default.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;

/// (thread name, Seccomp mode, NoNewPrivs) of every thread of a running flint with a spinning
/// guest and a disk (so a device worker exists), with `extra` options.
fn thread_states(name: &str, extra: &[&str]) -> Vec<(String, String, String)> {
    let disk = TempFile::new(name, &vec![0u8; 1 << 20]);
    let fw = firmware("spin");
    let mut cmd = flint();
    cmd.args([
        "run",
        "--kernel",
        fw.to_str().unwrap(),
        "--disk",
        disk.path(),
    ])
    .args(extra)
    .stdin(Stdio::null())
    .stderr(Stdio::piped());
    let (child, running) = spawn_until_spinning(cmd);
    let mut states = Vec::new();
    if running {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", child.id())).unwrap();
        for t in tasks.flatten() {
            let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
            let field = |name: &str| status_field(&status, name.trim_end_matches(':'));
            let name = field("Name:");
            // KVM attaches a kernel worker of its own to the process (kvm-nx-lpage-recovery);
            // it runs no flint code.
            if !name.starts_with("kvm-") {
                states.push((name, field("Seccomp:"), field("NoNewPrivs:")));
            }
        }
    }
    signal(&child, libc::SIGTERM);
    let out = wait_or_kill(child, Duration::from_secs(20));
    assert!(running, "the guest never ran: {:?}", out);
    assert_eq!(
        out.status.code(),
        Some(128 + libc::SIGTERM),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    states.sort();
    states
}

#[test]
fn every_thread_runs_under_seccomp_with_no_new_privs() {
    let states = thread_states("seccomp-on", &[]);
    let names: Vec<&str> = states.iter().map(|s| s.0.as_str()).collect();
    // The main thread (named after the binary), the console's writer, the vCPU and the disk's
    // worker (its name cut to the kernel's 15 characters).
    assert_eq!(
        names,
        ["flint", "flint-console", "flint-vcpu0", "flint-virtio-bl"],
        "{states:?}"
    );
    for (name, seccomp, nnp) in &states {
        assert_eq!(seccomp, "2", "thread {name} is not filtered: {states:?}");
        assert_eq!(nnp, "1", "thread {name} has no no_new_privs: {states:?}");
    }
}

#[test]
fn seccomp_off_installs_no_filter() {
    let states = thread_states("seccomp-off", &["--seccomp", "off"]);
    assert_eq!(states.len(), 4, "{states:?}");
    for (name, seccomp, _) in &states {
        assert_eq!(seccomp, "0", "thread {name}: {states:?}");
    }
}

#[test]
fn seccomp_levels_are_checked() {
    let r = run(&[
        "run",
        "--kernel",
        firmware("hello").to_str().unwrap(),
        "--seccomp",
        "on",
    ]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("'on' is not a seccomp level (off, log or kill)"),
        "{}",
        r.stderr
    );
}
