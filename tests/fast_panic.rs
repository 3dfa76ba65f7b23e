//! Fast tier: a panic in any flint thread ends flint with one message and exit status 1, never
//! a hang. The debug build's `FLINT_TEST_PANIC=POINT` makes flint panic at POINT (see
//! `flint_vmm::panic::test_point`): in a vCPU thread, in a device called from a vCPU (holding
//! its lock, which the event loop's console input needs too), in the control event loop, and in
//! a virtio device's worker thread.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Runs a firmware guest with a panic at `point`; returns the run and how long it took.
fn panic_at(point: &str, firmware_name: &str, extra: &[&str]) -> (Run, Duration) {
    let fw = firmware(firmware_name);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flint"));
    cmd.args(["run", "--kernel", fw.to_str().unwrap()])
        .args(extra)
        .env("FLINT_TEST_PANIC", point);
    let started = Instant::now();
    let r = run_command(cmd, b"", Duration::from_secs(30));
    (r, started.elapsed())
}

/// The run ended at once with status 1 and exactly one line on stderr naming the panic.
fn assert_one_line_internal_error(point: &str, r: &Run, took: Duration, thread: &str) {
    assert_eq!(r.code, Some(1), "{point}: stderr: {}", r.stderr);
    assert!(took < Duration::from_secs(10), "{point}: took {took:?}");
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{point}: one line, got:\n{}", r.stderr);
    let line = lines[0];
    assert!(
        line.starts_with("flint: error: internal error: "),
        "{point}: {line}"
    );
    assert!(
        line.contains(&format!("thread '{thread}' panicked at ")),
        "{point}: {line}"
    );
    assert!(
        line.contains(&format!("FLINT_TEST_PANIC={point}")),
        "{point}: {line}"
    );
}

#[test]
fn a_vcpu_panic_ends_flint_with_a_message() {
    let (r, took) = panic_at("vcpu", "hello", &[]);
    assert_one_line_internal_error("vcpu", &r, took, "flint-vcpu0");
    assert!(r.stderr.contains("the VM was stopped"), "{}", r.stderr);
}

#[test]
fn a_device_panic_on_a_vcpu_ends_flint_with_a_message() {
    // The serial port panics under its lock on the guest's first byte; the lock it poisons is
    // never used again.
    let (r, took) = panic_at("serial", "hello", &[]);
    assert_one_line_internal_error("serial", &r, took, "flint-vcpu0");
    assert!(!r.stdout.contains("flint-fw: bye"), "{}", r.stdout);
}

#[test]
fn an_event_loop_panic_ends_flint_with_a_message() {
    let (r, took) = panic_at("event-loop", "spin", &[]);
    assert_one_line_internal_error("event-loop", &r, took, "main");
}

#[test]
fn a_device_worker_panic_ends_flint_with_a_message() {
    let disk = TempFile::new("panic-disk", &vec![0u8; 1 << 20]);
    let (r, took) = panic_at("worker", "virtio_blk", &["--disk", disk.path()]);
    assert_one_line_internal_error("worker", &r, took, "flint-virtio-blk0");
    assert!(
        !r.stdout.contains("flint-fw: virtio-blk done"),
        "{}",
        r.stdout
    );
}
