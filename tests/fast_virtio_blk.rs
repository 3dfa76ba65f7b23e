//! Fast tier: the virtio-mmio block device (`--disk`) driven by a firmware guest written in C,
//! `firmware/virtio_blk.c`. It sets the device up by the virtio 1.1 spec (features, one split
//! virtqueue, polled), then reads, writes, flushes, asks for the ID, reads past the end, sends an
//! unknown request type and reads twice round the rings; the tests check the statuses it prints
//! and the host file afterwards.

mod common;

use std::process::Command;

use common::*;

const SECTOR: usize = 512;
const SECTOR0_TEXT: &[u8] = b"hello-from-host!";
/// What the guest writes to sector 1 (the rest of the sector zeros).
const WRITTEN: &[u8] = b"flint-fw wrote sector 1";

/// A 1 MiB disk (0x800 sectors) whose sector 0 starts with `SECTOR0_TEXT`.
fn image() -> Vec<u8> {
    let mut img = vec![0u8; 1 << 20];
    img[..SECTOR0_TEXT.len()].copy_from_slice(SECTOR0_TEXT);
    img
}

/// What the guest printed on its line `PREFIX<text> status=S len=L` for one request: the text
/// and the status.
fn reply<'a>(stdout: &'a str, prefix: &str) -> (&'a str, u32) {
    let rest = stdout
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line {prefix:?} in the guest's output:\n{stdout}"));
    let (text, fields) = rest
        .rsplit_once(" status=")
        .unwrap_or_else(|| panic!("no status on line {prefix:?}{rest:?}"));
    let status = fields
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status on line {prefix:?}{rest:?}"));
    (text, status)
}

fn run_blk(disk: &str, extra: &[&str]) -> Run {
    let fw = firmware("virtio_blk");
    let mut args = vec!["run", "--kernel", fw.to_str().unwrap(), "--disk", disk];
    args.extend_from_slice(extra);
    let r = run(&args);
    assert_eq!(
        r.code,
        Some(0),
        "stdout: {}\nstderr: {}",
        r.stdout,
        r.stderr
    );
    assert!(
        r.stdout.lines().any(|l| l == "flint-fw: virtio-blk done"),
        "the guest did not finish:\n{}\nstderr: {}",
        r.stdout,
        r.stderr
    );
    r
}

#[test]
fn guest_reads_writes_flushes_and_gets_the_id() {
    let img = TempFile::new("blk-rw.img", &image());
    let r = run_blk(&format!("path={},serial=fw-disk-1", img.path()), &[]);
    let out = r.stdout.as_str();
    assert!(
        out.lines().any(|l| l == "flint-fw: capacity=0x800"),
        "{out}"
    );
    assert_eq!(reply(out, "flint-fw: sector0="), ("hello-from-host!", 0));
    assert_eq!(reply(out, "flint-fw: write"), ("", 0));
    // The guest reads sector 1 back: the device serves what it just wrote.
    assert_eq!(
        reply(out, "flint-fw: sector1="),
        ("flint-fw wrote sector 1", 0)
    );
    assert_eq!(reply(out, "flint-fw: flush"), ("", 0));
    assert_eq!(reply(out, "flint-fw: id="), ("fw-disk-1", 0));
    assert_eq!(reply(out, "flint-fw: past-end").1, 1, "IOERR: {out}");
    assert_eq!(reply(out, "flint-fw: unknown-type").1, 2, "UNSUPP: {out}");
    assert!(
        out.lines()
            .any(|l| l == "flint-fw: ring wrap reads=16 good=16"),
        "{out}"
    );

    // On the host, once flint is gone: sector 1 holds the guest's bytes, nothing else changed.
    let after = std::fs::read(&img.0).unwrap();
    let mut expected = image();
    expected[SECTOR..SECTOR + WRITTEN.len()].copy_from_slice(WRITTEN);
    assert_eq!(after.len(), expected.len());
    assert!(
        after[SECTOR..2 * SECTOR] == expected[SECTOR..2 * SECTOR],
        "sector 1 on the host: {:?}",
        String::from_utf8_lossy(&after[SECTOR..2 * SECTOR])
    );
    assert!(after == expected, "the guest changed more than sector 1");
}

#[test]
fn read_only_disk_fails_writes_and_keeps_the_file() {
    let img = TempFile::new("blk-ro.img", &image());
    let r = run_blk(&format!("path={},ro", img.path()), &["--append", "blk.ro"]);
    let out = r.stdout.as_str();
    assert!(
        out.lines()
            .any(|l| l == "flint-fw: expecting a read-only disk"),
        "{out}"
    );
    assert_eq!(reply(out, "flint-fw: sector0="), ("hello-from-host!", 0));
    assert_eq!(reply(out, "flint-fw: write").1, 1, "IOERR: {out}");
    // Sector 1 still reads as zeros (the guest prints text up to the first NUL).
    assert_eq!(reply(out, "flint-fw: sector1="), ("", 0));
    // No serial given: the device still answers GET_ID with some default.
    let (id, status) = reply(out, "flint-fw: id=");
    assert_eq!(status, 0, "{out}");
    assert!(!id.is_empty(), "{out}");
    assert_eq!(reply(out, "flint-fw: past-end").1, 1, "IOERR: {out}");
    assert!(
        std::fs::read(&img.0).unwrap() == image(),
        "a read-only disk's file changed"
    );
}

#[test]
fn without_a_disk_nothing_answers_at_the_device_address() {
    // Also the C runtime's smoke test: entry, command line, mapping the MMIO hole, power-off.
    let fw = firmware("virtio_blk");
    let r = run(&["run", "--kernel", fw.to_str().unwrap()]);
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    assert!(
        r.stdout
            .lines()
            .any(|l| l == "flint-fw: no virtio-mmio device at 0xd0001000 (magic=0xffffffff)"),
        "{}",
        r.stdout
    );
}

/// The PVM emulator fails on SSE/x87 code, so C firmware must be built for general-purpose
/// registers only (build.rs's flags).
#[test]
fn c_firmware_uses_integer_instructions_only() {
    let fw = firmware("virtio_blk");
    let out = Command::new("objdump")
        .args(["-d", "--no-show-raw-insn"])
        .arg(&fw)
        .output()
        .expect("run objdump (binutils, which gcc needs too)");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let bad: Vec<&str> = text
        .lines()
        .filter(|l| {
            // "  100000:\tmnemonic operands"
            let insn = l.split('\t').nth(1).unwrap_or("");
            let mnemonic = insn.split_whitespace().next().unwrap_or("");
            mnemonic.starts_with('f') // x87 (and fxsave & co)
                || mnemonic == "emms"
                || ["%xmm", "%ymm", "%zmm", "%mm", "%st"]
                    .iter()
                    .any(|r| insn.contains(r))
        })
        .collect();
    assert!(
        bad.is_empty(),
        "floating-point/vector instructions:\n{}",
        bad.join("\n")
    );
}

#[test]
fn works_without_ioeventfd_and_irqfd() {
    // The fallbacks for a KVM without them: notify writes exit to flint, which signals the queue
    // itself, and interrupts go through KVM_IRQ_LINE.
    let img = TempFile::new("fallback.img", &image());
    let fw = firmware("virtio_blk");
    let out = flint()
        .args([
            "run",
            "--kernel",
            fw.to_str().unwrap(),
            "--disk",
            img.path(),
        ])
        .env("FLINT_NO_IOEVENTFD", "1")
        .env("FLINT_NO_IRQFD", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let r = Run::from(out);
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    assert_eq!(reply(&r.stdout, "flint-fw: sector0=").0, "hello-from-host!");
    assert_eq!(reply(&r.stdout, "flint-fw: write").1, 0);
    assert!(
        r.stdout.contains("flint-fw: interrupt status seen=0x1"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("flint-fw: virtio-blk done"));
    let file = std::fs::read(img.path()).unwrap();
    assert_eq!(&file[SECTOR..SECTOR + WRITTEN.len()], WRITTEN);
}
