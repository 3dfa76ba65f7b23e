//! Fast tier: `flint run --oci-bundle` on the host side, with a firmware guest standing in for
//! Linux (which this tier cannot boot): the bundle is checked, its rootfs becomes a cached
//! image on the first disk, the generated initramfs and the bundle's kernel arguments are
//! loaded, the second UART goes to stderr, the end of stdin reaches the guest as ^D, and the
//! status the guest writes to the exit-status port is flint's exit code. These runs boot cold
//! (`--cold`); the warm start's host side runs with a firmware guest that plays the warm init
//! (`warm_probe`): made on first use, restored with the bundle's disks, remade when broken.

mod common;

use std::time::Duration;

use common::*;

fn probe(bundle: &TestBundle, extra: &[&str]) -> Run {
    let mut cold = vec!["--cold"];
    cold.extend_from_slice(extra);
    run_bundle(bundle, "oci_probe", &cold)
}

/// `flint run --oci-bundle` of `bundle` with firmware `fw` as the kernel.
fn run_bundle(bundle: &TestBundle, fw: &str, extra: &[&str]) -> Run {
    let fw = firmware(fw);
    let mut cmd = bundle.flint();
    cmd.args(["run", "--oci-bundle", bundle.path(), "--kernel"])
        .arg(&fw)
        .args(extra);
    run_command(cmd, b"", Duration::from_secs(60))
}

/// What is in the image cache's warm/ directory: (name, mode) of each entry and of each
/// entry's files.
fn warm_entries(bundle: &TestBundle) -> Vec<(String, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let list = |dir: &std::path::Path| -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    for entry in list(&bundle.cache().join("warm")) {
        let mode = |p: &std::path::Path| p.metadata().unwrap().permissions().mode() & 0o7777;
        let name = entry.file_name().unwrap().to_string_lossy().into_owned();
        out.push((name.clone(), mode(&entry)));
        for f in list(&entry) {
            let file = f.file_name().unwrap().to_string_lossy();
            out.push((format!("{name}/{file}"), mode(&f)));
        }
    }
    out
}

fn images(bundle: &TestBundle) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(bundle.cache())
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == "ext4"));
    v
}

#[test]
fn a_bundle_run_gets_its_disk_initramfs_consoles_and_exit_status() {
    let b = TestBundle::with_args("probe", r#"["sh", "-c", "true"]"#);
    let r = probe(&b, &[]);
    assert_eq!(
        r.code,
        Some(42),
        "stdout: {}\nstderr: {}",
        r.stdout,
        r.stderr
    );
    let cmdline = format!(
        "flint-fw: cmdline={} virtio_mmio.device=4K@0xd0001000:5",
        flint_oci::KERNEL_ARGS
    );
    assert!(r.stdout.lines().any(|l| l == cmdline), "{}", r.stdout);
    let size = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("flint-fw: initrd size="))
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .expect("initrd size line");
    // The init (a static binary) and the spec.
    assert!(size > 100_000, "initrd of {size} bytes");
    assert!(
        r.stdout.contains("flint-fw: input=0000000000000004"),
        "{}",
        r.stdout
    );
    assert_eq!(
        r.stderr, "flint-fw: on COM2\n",
        "COM2 is the workload's stderr, alone"
    );
    assert!(!r.stdout.contains("on COM2"));

    // The image is cached by content: a second run uses it as is.
    let first = images(&b);
    assert_eq!(first.len(), 1, "{first:?}");
    let mtime = first[0].metadata().unwrap().modified().unwrap();
    assert_eq!(probe(&b, &[]).code, Some(42));
    assert_eq!(images(&b), first);
    assert_eq!(first[0].metadata().unwrap().modified().unwrap(), mtime);
}

#[test]
fn more_disks_follow_the_bundle_root() {
    let b = TestBundle::with_args("disks", r#"["/bin/sh"]"#);
    let data = TempFile::new("oci-data.img", &[0u8; 4096]);
    let r = probe(&b, &["--disk", data.path(), "--append", "extra=1"]);
    assert_eq!(r.code, Some(42), "{}", r.stderr);
    assert!(
        r.stdout.contains(
            "extra=1 virtio_mmio.device=4K@0xd0001000:5 virtio_mmio.device=4K@0xd0002000:6"
        ),
        "{}",
        r.stdout
    );
}

#[test]
fn a_jailed_bundle_run_is_the_same_run() {
    // SAFETY: geteuid has no failure mode.
    if unsafe { libc::geteuid() } != 0 {
        skip("a_jailed_bundle_run_is_the_same_run", "--jail needs root");
        return;
    }
    let b = TestBundle::with_args("jailed", r#"["sh", "-c", "true"]"#);
    let free = probe(&b, &[]);
    let jailed = probe(&b, &["--jail", "--uid", "65534", "--gid", "65534"]);
    assert_eq!(jailed.code, Some(42), "{}", jailed.stderr);
    assert_eq!(jailed.stdout, free.stdout);
    assert_eq!(jailed.stderr, "flint-fw: on COM2\n");
}

#[test]
fn a_warm_start_restores_the_snapshot_made_on_first_use_with_the_bundles_disks() {
    let b = TestBundle::with_args("warm", r#"["sh", "-c", "true"]"#);
    assert!(warm_entries(&b).is_empty());
    let first = run_bundle(&b, "warm_probe", &[]);
    assert_eq!(first.code, Some(42), "{}\n{}", first.stdout, first.stderr);
    // Only the restored guest's output: the snapshot's own boot printed nothing here.
    let image = images(&b)[0].metadata().unwrap().len();
    let line = first
        .stdout
        .strip_prefix("flint-fw: restored vda=0x")
        .unwrap_or_else(|| {
            panic!("{}", first.stdout);
        });
    let (vda, vdb) = line.trim_end().split_once(" vdb=0x").expect("two sizes");
    assert_eq!(u64::from_str_radix(vda, 16).unwrap(), image / 512);
    // The spec disk: a 512-byte header, then the spec, in whole sectors.
    assert!(u64::from_str_radix(vdb, 16).unwrap() >= 2, "{line}");
    assert_eq!(first.stderr, "");

    // One snapshot, private, complete, nothing else left behind.
    let entries = warm_entries(&b);
    assert_eq!(entries.len(), 4, "{entries:?}");
    let (key, mode) = &entries[0];
    assert_eq!((key.len(), *mode), (32, 0o700), "{entries:?}");
    for (i, file) in ["empty", "memory", "state"].iter().enumerate() {
        assert_eq!(
            entries[i + 1],
            (format!("{key}/{file}"), 0o600),
            "{entries:?}"
        );
    }

    // The next run restores the same snapshot: not made again.
    let state = b.cache().join("warm").join(key).join("state");
    let made = state.metadata().unwrap().modified().unwrap();
    let again = run_bundle(&b, "warm_probe", &[]);
    assert_eq!(
        (again.code, &again.stdout),
        (Some(42), &first.stdout),
        "{}",
        again.stderr
    );
    assert_eq!(state.metadata().unwrap().modified().unwrap(), made);
    assert_eq!(warm_entries(&b), entries);

    // Another machine is another snapshot.
    let two = run_bundle(&b, "warm_probe", &["--cpus", "2"]);
    assert_eq!(two.code, Some(42), "{}", two.stderr);
    assert_eq!(warm_entries(&b).len(), 8);
}

#[test]
fn a_warm_snapshot_that_no_longer_restores_is_made_anew() {
    let b = TestBundle::with_args("warm-broken", r#"["sh", "-c", "true"]"#);
    assert_eq!(run_bundle(&b, "warm_probe", &[]).code, Some(42));
    let key = warm_entries(&b)[0].0.clone();
    let state = b.cache().join("warm").join(&key).join("state");
    // A snapshot someone else could have changed is refused, not used.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o666)).unwrap();
    let r = run_bundle(&b, "warm_probe", &[]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr.lines().count() == 1
            && r.stderr
                .contains("state is writable by other users (mode 0666), not one flint"),
        "{}",
        r.stderr
    );
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o600)).unwrap();
    let len = state.metadata().unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&state)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let r = run_bundle(&b, "warm_probe", &[]);
    assert_eq!(r.code, Some(42), "{}", r.stderr);
    assert!(
        r.stderr.starts_with("flint: the warm snapshot ")
            && r.stderr.contains("cannot be restored (")
            && r.stderr.trim_end().ends_with("; making it anew")
            && r.stderr.lines().count() == 1,
        "{}",
        r.stderr
    );
    // Whole again (its clock values may print a few digits longer or shorter).
    assert!(state.metadata().unwrap().len() > len / 2 + 100, "made anew");
}

#[test]
fn a_guest_that_never_gets_warm_is_a_one_line_error_that_names_cold() {
    // `hello` prints a line and powers off: the snapshot's flint ends without a snapshot.
    let b = TestBundle::with_args("warm-never", r#"["sh", "-c", "true"]"#);
    let r = run_bundle(&b, "hello", &[]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.starts_with(
            "flint: error: making the warm snapshot failed: the guest ended before its init was \
             ready: flint-fw: "
        ) && r.stderr.trim_end().ends_with("(--cold boots without it)"),
        "{}",
        r.stderr
    );
    assert!(warm_entries(&b).is_empty(), "{:?}", warm_entries(&b));
}

#[test]
fn a_flint_killed_while_making_the_warm_snapshot_leaves_no_guest_running() {
    // `spin` never says it is ready: the snapshot's flint would run until its timeout.
    let b = TestBundle::with_args("warm-killed", r#"["sh", "-c", "true"]"#);
    let making = |b: &TestBundle| -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(b.cache().join("warm")) else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with(".making-"))
            .collect()
    };
    let mut cmd = b.flint();
    cmd.args(["run", "--oci-bundle", b.path(), "--kernel"])
        .arg(firmware("spin"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut parent = cmd.spawn().unwrap();
    // Its helper runs once the directory it makes the snapshot in exists.
    let child_pid = wait_until(Duration::from_secs(30), || {
        let dir = making(&b).pop()?;
        let pid: i32 = dir.strip_prefix(".making-")?.parse().ok()?;
        children_of(pid).into_iter().next()
    })
    .expect("flint started a flint to make the warm snapshot");
    parent.kill().unwrap();
    parent.wait().unwrap();
    let gone = wait_until(Duration::from_secs(10), || {
        (!std::path::Path::new(&format!("/proc/{child_pid}")).exists()).then_some(())
    });
    assert!(
        gone.is_some(),
        "the snapshot's flint ({child_pid}) outlived its parent"
    );
    // What it left is removed by the next run that makes the snapshot.
    assert_eq!(making(&b).len(), 1);
    let r = run_bundle(&b, "warm_probe", &[]);
    assert_eq!(r.code, Some(42), "{}", r.stderr);
    assert!(making(&b).is_empty(), "{:?}", making(&b));
}

/// Polls `f` every 20 ms until it gives a value or `limit` passes.
fn wait_until<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// The PIDs of `pid`'s children (from /proc/PID/task/*/children).
fn children_of(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}
