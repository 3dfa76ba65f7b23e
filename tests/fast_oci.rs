//! Fast tier: `flint run --oci-bundle` on the host side, with a firmware guest standing in for
//! Linux (which this tier cannot boot): the bundle is checked, its rootfs becomes a cached
//! image on the first disk, the generated initramfs and the bundle's kernel arguments are
//! loaded, the second UART goes to stderr, the end of stdin reaches the guest as ^D, and the
//! status the guest writes to the exit-status port is flint's exit code.

mod common;

use std::time::Duration;

use common::*;

fn probe(bundle: &TestBundle, extra: &[&str]) -> Run {
    let fw = firmware("oci_probe");
    let mut cmd = bundle.flint();
    cmd.args(["run", "--oci-bundle", bundle.path(), "--kernel"])
        .arg(&fw)
        .args(extra);
    run_command(cmd, b"", Duration::from_secs(60))
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
