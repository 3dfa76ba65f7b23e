//! Fast tier: snapshots of a firmware guest that counts in memory. Snapshotted and stopped,
//! then restored in a new process, it continues the count exactly; two restores of one
//! snapshot both continue it; the memory file holds only touched pages; a bad snapshot or a
//! bad request is a one-line error. All under flint's default seccomp filter (this machine's
//! PVM KVM answers every state ioctl a snapshot uses).

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use flint_vmm::api::client::{request, ClientError};

/// A snapshot directory in a VM's own directory.
fn snap_dir(vm: &CounterVm, name: &str) -> PathBuf {
    vm.dir.join(name)
}

/// `flint ctl snapshot --out DIR [--stop]`; returns its JSON summary.
fn snapshot(vm: &CounterVm, dir: &Path, stop: bool) -> serde_json::Value {
    let mut cmd = flint();
    cmd.args([
        "ctl",
        "--api-sock",
        vm.sock.to_str().unwrap(),
        "snapshot",
        "--out",
    ])
    .arg(dir);
    if stop {
        cmd.arg("--stop");
    }
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "snapshot failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("a JSON summary")
}

/// Waits for a flint whose VM was stopped after its snapshot: exit 0, and it says so.
fn wait_stopped(vm: &mut CounterVm) {
    let child = vm.child.take().unwrap();
    let out = wait_or_kill(child, Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("stopped after its snapshot"), "{stderr}");
}

/// The counts of `before` then `after` (the console of a VM and of its restore), asserted to
/// run on by one with nothing lost or repeated; returns how many came from `after`.
fn assert_continues(before: &str, after: &str) -> usize {
    let joined = format!("{before}{after}");
    let all = counts(&joined);
    for pair in all.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "the count jumped: {joined}");
    }
    all.len() - counts(before).len()
}

#[test]
fn a_stopped_snapshot_continues_the_count_exactly_in_a_new_process() {
    let mut vm = CounterVm::start("snap-stop", &["--cpus", "2"]);
    let dir = snap_dir(&vm, "snap");
    let summary = snapshot(&vm, &dir, true);
    wait_stopped(&mut vm);
    let before = vm.console();

    // Only what the guest touched is written: the rest of the 128 MiB file is holes.
    let mem = std::fs::metadata(dir.join("memory")).unwrap();
    assert_eq!(mem.len(), 128 << 20);
    let written = summary["memory_bytes_written"].as_u64().unwrap();
    assert!(written < 1 << 20, "{summary}");
    assert!(
        mem.blocks() * 512 <= written + (1 << 20),
        "{} blocks",
        mem.blocks()
    );
    assert!(
        std::fs::metadata(dir.join("state")).unwrap().mode() & 0o777 == 0o600,
        "the snapshot files are the owner's"
    );

    let restored = CounterVm::run("snap-stop-restored", &["--restore", dir.to_str().unwrap()]);
    restored.wait_for(
        |c| c > counts(&before).last().unwrap() + 5,
        "the count to go on",
    );
    let went_on = assert_continues(&before, &restored.console());
    assert!(went_on >= 5, "{went_on}");
    // The restored VM is a VM like any other: it pauses, and snapshots again.
    assert_eq!(restored.state(), "Running");
    let again = snap_dir(&restored, "again");
    snapshot(&restored, &again, false);
    let c = restored.count();
    restored.wait_for(|n| n > c, "the count to go on after a second snapshot");
}

#[test]
fn a_running_vm_snapshots_and_two_clones_of_it_continue_from_the_same_count() {
    let vm = CounterVm::start("snap-run", &[]);
    let dir = snap_dir(&vm, "snap");
    snapshot(&vm, &dir, false);
    let at = vm.count();
    vm.wait_for(|c| c > at + 3, "the snapshotted VM to run on");
    assert_eq!(vm.state(), "Running");

    let a = CounterVm::run("snap-run-a", &["--restore", dir.to_str().unwrap()]);
    let b = CounterVm::run("snap-run-b", &["--restore", dir.to_str().unwrap()]);
    a.wait_for(|c| c > 0, "clone a");
    b.wait_for(|c| c > 0, "clone b");
    let first = |v: &CounterVm| counts(&v.console())[0];
    assert_eq!(first(&a), first(&b), "both clones continue from one state");
    // The clone's first count is one the snapshotted VM printed too, once it got there (its
    // console file lags its memory a little, so `at` is no bound).
    let n = first(&a);
    vm.wait_for(
        |c| c > n,
        "the snapshotted VM to pass the clone's first count",
    );
    assert!(
        counts(&vm.console()).contains(&n),
        "{n} is not in the original's count"
    );
    assert!(n > 1);

    // A snapshot taken while paused leaves the VM paused.
    vm.call("PATCH", "/vm", Some(r#"{"state":"Paused"}"#))
        .unwrap();
    snapshot(&vm, &snap_dir(&vm, "paused"), false);
    assert_eq!(vm.state(), "Paused");
}

/// `flint run --restore DIR`: its exit code and stderr, expected to be one line.
fn restore_error(dir: &Path, extra: &[&str]) -> String {
    let mut args = vec!["run", "--restore", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let r = run_with_input(&args, b"", Duration::from_secs(20));
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "one line: {}", r.stderr);
    r.stderr
}

#[test]
fn bad_snapshots_are_one_line_errors_before_anything_runs() {
    let disk =
        TempFile(std::env::temp_dir().join(format!("flint-snap-disk-{}", std::process::id())));
    std::fs::write(&disk.0, vec![0u8; 1 << 20]).unwrap();
    let disk_arg = format!("path={}", disk.0.display());
    let mut vm = CounterVm::start("snap-bad", &["--disk", &disk_arg]);
    let good = snap_dir(&vm, "good");
    snapshot(&vm, &good, true);
    wait_stopped(&mut vm);
    let state = std::fs::read(good.join("state")).unwrap();
    let variant = |name: &str, f: &dyn Fn(&mut Vec<u8>)| {
        let dir = vm.dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = state.clone();
        f(&mut s);
        std::fs::write(dir.join("state"), s).unwrap();
        std::fs::hard_link(good.join("memory"), dir.join("memory")).unwrap();
        dir
    };

    let truncated = variant("truncated", &|s| s.truncate(s.len() / 2));
    assert!(restore_error(&truncated, &[]).contains("truncated"));
    let flipped = variant("flipped", &|s| {
        let i = s.len() - 10;
        s[i] ^= 0x20;
    });
    assert!(restore_error(&flipped, &[]).contains("corrupted"));
    let version = variant("version", &|s| s[8] = 77);
    assert!(restore_error(&version, &[]).contains("format version 77"));
    let not_one = variant("not-one", &|s| {
        s[..8].copy_from_slice(b"\x7fELF\x02\x01\x01\x00")
    });
    assert!(restore_error(&not_one, &[]).contains("not a flint snapshot"));

    let short_memory = vm.dir.join("short-memory");
    std::fs::create_dir_all(&short_memory).unwrap();
    std::fs::write(short_memory.join("state"), &state).unwrap();
    std::fs::write(short_memory.join("memory"), b"tiny").unwrap();
    assert!(restore_error(&short_memory, &[]).contains("the memory file is 4 bytes"));
    let no_memory = vm.dir.join("no-memory");
    std::fs::create_dir_all(&no_memory).unwrap();
    std::fs::write(no_memory.join("state"), &state).unwrap();
    assert!(restore_error(&no_memory, &[]).contains("memory: no such file"));

    // Devices that do not match the snapshot's.
    let other = TempFile(disk.0.with_extension("other"));
    std::fs::write(&other.0, vec![0u8; 2 << 20]).unwrap();
    let e = restore_error(&good, &["--disk", other.0.to_str().unwrap()]);
    assert!(e.contains("the snapshot's disk 0 had 1048576 bytes"), "{e}");
    let e = restore_error(&good, &["--disk", &disk_arg, "--disk", &disk_arg]);
    assert!(e.contains("give all or none"), "{e}");
    let e = restore_error(&good, &["--disk", &format!("{disk_arg},ro")]);
    assert!(e.contains("was writable"), "{e}");
}

#[test]
fn snapshot_requests_with_unusable_files_are_refused_and_the_vm_runs_on() {
    let vm = CounterVm::start("snap-req", &[]);
    let refused = |fds: &[std::os::fd::RawFd]| match request(
        &vm.sock,
        "PUT",
        "/snapshot/create",
        Some("{}"),
        fds,
    ) {
        Err(ClientError::Refused { status, message }) => (status, message),
        other => panic!("expected a refusal, got {other:?}"),
    };
    use std::os::fd::AsRawFd;
    let (status, msg) = refused(&[]);
    assert_eq!(status, 400);
    assert!(msg.contains("two open files"), "{msg}");
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .unwrap();
    let (status, msg) = refused(&[null.as_raw_fd(), null.as_raw_fd()]);
    assert_eq!(status, 400);
    assert!(msg.contains("regular files"), "{msg}");
    let ro_path = vm.dir.join("read-only");
    std::fs::write(&ro_path, b"").unwrap();
    let ro = std::fs::File::open(&ro_path).unwrap();
    let (status, msg) = refused(&[ro.as_raw_fd(), ro.as_raw_fd()]);
    assert_eq!(status, 400);
    assert!(msg.contains("open for writing"), "{msg}");
    assert_eq!(
        std::fs::metadata(&ro_path).unwrap().len(),
        0,
        "nothing written"
    );

    // `flint ctl snapshot` into a path it cannot make: its own one-line error.
    let o = flint()
        .args([
            "ctl",
            "--api-sock",
            vm.sock.to_str().unwrap(),
            "snapshot",
            "--out",
        ])
        .arg(ro_path.join("sub"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cannot make the directory"), "{err}");

    let c = vm.count();
    vm.wait_for(|n| n > c, "the guest to go on counting");
    assert_eq!(vm.state(), "Running");
}

#[test]
fn a_jailed_flint_snapshots_and_restores_under_its_file_size_limit() {
    // SAFETY: geteuid has no failure mode.
    if unsafe { libc::geteuid() } != 0 {
        skip(
            "a_jailed_flint_snapshots_and_restores_under_its_file_size_limit",
            "--jail needs root",
        );
        return;
    }
    let jail = ["--jail", "--uid", "65534", "--gid", "65534"];
    // The console limit sets the jail's RLIMIT_FSIZE to about 1 MiB: below the 128 MiB memory
    // file, which the API's presence must make room for.
    let mut args = vec!["--console-limit", "100000"];
    args.extend_from_slice(&jail);
    let mut vm = CounterVm::start("snap-jail", &args);
    let dir = snap_dir(&vm, "snap");
    snapshot(&vm, &dir, true);
    wait_stopped(&mut vm);
    let before = vm.console();
    let mut args = vec!["--restore", dir.to_str().unwrap()];
    args.extend_from_slice(&jail);
    let restored = CounterVm::run("snap-jail-restored", &args);
    restored.wait_for(
        |c| c > counts(&before).last().unwrap() + 3,
        "the count to go on",
    );
    assert_continues(&before, &restored.console());
}

#[test]
fn a_snapshot_of_a_bundle_vm_restores_with_its_second_console() {
    // The counting firmware run as a bundle's guest: COM2 is stderr, as for a workload.
    let bundle = TestBundle::with_args("snap-oci", r#"["sh", "-c", "true"]"#);
    let cache = bundle.cache();
    let counter = firmware("counter");
    let args = [
        "--oci-bundle",
        bundle.path(),
        "--cold",
        "--kernel",
        counter.to_str().unwrap(),
    ];
    let mut vm = CounterVm::run_with_env("snap-oci", &args, &[("FLINT_IMAGE_CACHE", &cache)]);
    let dir = snap_dir(&vm, "snap");
    snapshot(&vm, &dir, true);
    wait_stopped(&mut vm);
    let before = vm.console();
    let restored = CounterVm::run("snap-oci-restored", &["--restore", dir.to_str().unwrap()]);
    restored.wait_for(
        |c| c > counts(&before).last().unwrap() + 3,
        "the count to go on",
    );
    assert!(assert_continues(&before, &restored.console()) >= 3);
}
