//! Fast tier: firmware guests on whatever `/dev/kvm` this host has (the nested PVM included).
//! They check the boot setup flint writes, port/MMIO exits, the serial console both ways, the
//! shutdown path, and how a VM ends (guest power-off, signal, vCPU failure).

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;

#[test]
fn long_mode_entry_sees_cmdline_e820_and_devices() {
    let fw = firmware("hello");
    let r = run(&[
        "run",
        "--kernel",
        fw.to_str().unwrap(),
        "--memory",
        "64",
        "--cmdline",
        "a=1 b",
    ]);
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(
        lines.contains(&"flint-fw: hello from long mode"),
        "{}",
        r.stdout
    );
    assert!(lines.contains(&"flint-fw: cmdline=a=1 b"));
    assert!(lines.contains(&"flint-fw: e820 entries=0000000000000003"));
    // Conventional memory, the EBDA (reserved), and RAM from 1 MiB to 64 MiB.
    assert!(lines.contains(&"flint-fw: e820 0000000000000000 000000000009fc00 0000000000000001"));
    assert!(lines.contains(&"flint-fw: e820 000000000009fc00 0000000000000400 0000000000000002"));
    assert!(lines.contains(&"flint-fw: e820 0000000000100000 0000000003f00000 0000000000000001"));
    assert!(lines.contains(&"flint-fw: cmos status d=0000000000000080"));
    assert!(lines.contains(&"flint-fw: i8042 self test=0000000000000055"));
    assert_eq!(lines.last(), Some(&"flint-fw: bye"));
}

#[test]
fn default_and_appended_cmdline() {
    let fw = firmware("hello");
    let r = run(&[
        "run",
        "--kernel",
        fw.to_str().unwrap(),
        "--append",
        "extra=yes",
    ]);
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    let expected = format!(
        "flint-fw: cmdline={} extra=yes",
        flint_vmm::config::DEFAULT_CMDLINE
    );
    assert!(r.stdout.lines().any(|l| l == expected), "{}", r.stdout);
}

#[test]
fn large_memory_map_skips_the_mmio_hole() {
    let fw = firmware("hello");
    let r = run(&["run", "--kernel", fw.to_str().unwrap(), "--memory", "4096"]);
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    assert!(r.stdout.contains("flint-fw: e820 entries=0000000000000004"));
    // RAM up to the 3 GiB hole, then the last 1 GiB above 4 GiB.
    assert!(r
        .stdout
        .contains("flint-fw: e820 0000000000100000 00000000bff00000 0000000000000001"));
    assert!(r
        .stdout
        .contains("flint-fw: e820 0000000100000000 0000000040000000 0000000000000001"));
}

#[test]
fn pvh_entry_gets_start_info_and_initrd_module() {
    let fw = firmware("pvh");
    let initrd = TempFile::new("pvh-initrd", &[7u8; 5000]);
    let r = run(&[
        "run",
        "--kernel",
        fw.to_str().unwrap(),
        "--initrd",
        initrd.path(),
        "--cmdline",
        "pvh=1",
    ]);
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(lines.contains(&"flint-fw: hello from pvh"), "{}", r.stdout);
    assert!(lines.contains(&"flint-fw: magic=336ec578"));
    assert!(lines.contains(&"flint-fw: cmdline=pvh=1"));
    assert!(lines.contains(&"flint-fw: memmap entries=00000003"));
    assert!(lines.contains(&"flint-fw: modules=00000001"));
}

#[test]
fn serial_input_reaches_the_guest() {
    let fw = firmware("echo");
    // More than the UART's 64-byte FIFO before the newline: nothing may be dropped.
    let line = "0123456789".repeat(10);
    let r = run_with_input(
        &["run", "--kernel", fw.to_str().unwrap()],
        format!("{line}\n").as_bytes(),
        Duration::from_secs(60),
    );
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    assert!(r.stdout.contains("flint-fw: ready"));
    assert!(
        r.stdout.contains(&format!("flint-fw: got {line}\n")),
        "{}",
        r.stdout
    );
}

#[test]
fn boot_timer_reports_microseconds() {
    let fw = firmware("boot_timer");
    let r = run(&["run", "--kernel", fw.to_str().unwrap(), "--boot-timer"]);
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    assert!(r.stdout.contains("flint-fw: boot timer written"));
    let us =
        boot_time_us(&r.stderr).unwrap_or_else(|| panic!("no boot time in stderr: {}", r.stderr));
    assert!(us > 0 && us < 60_000_000, "{us} us");
    // Without the flag, the write is ignored and nothing is printed.
    let r = run(&["run", "--kernel", fw.to_str().unwrap()]);
    assert_eq!(r.code, Some(0));
    assert!(!r.stderr.contains("booted in"), "{}", r.stderr);
}

#[test]
fn triple_fault_is_reported_with_rip_and_fails() {
    let fw = firmware("triple_fault");
    let r = run(&["run", "--kernel", fw.to_str().unwrap()]);
    assert_eq!(r.code, Some(1), "stdout: {} stderr: {}", r.stdout, r.stderr);
    assert!(r.stdout.contains("flint-fw: faulting"));
    // The lab's harness runs a scenario once more on exactly this text.
    assert!(r.stderr.contains(TRIPLE_FAULT), "{}", r.stderr);
    assert!(r.stderr.contains("at RIP 0x1"), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "one line: {}", r.stderr);
}

fn stop_with(sig: i32, expected_code: i32) {
    let fw = firmware("spin");
    let mut child = flint()
        .args(["run", "--kernel", fw.to_str().unwrap(), "--cpus", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the guest to be running before stopping it.
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("spinning") {
        use std::io::Read;
        let n = stdout.read(&mut buf).unwrap();
        assert!(n > 0, "flint exited before the guest ran");
        seen.extend_from_slice(&buf[..n]);
    }
    signal(&child, sig);
    // Back to the child, so that the rest of its output is read too.
    child.stdout = Some(stdout);
    let out = wait_or_kill(child, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(expected_code));
    assert!(String::from_utf8_lossy(&out.stderr).contains("stopped by signal"));
}

#[test]
fn sigterm_stops_the_vm_with_non_zero_exit() {
    stop_with(libc::SIGTERM, 128 + libc::SIGTERM);
}

#[test]
fn sigint_stops_the_vm_with_non_zero_exit() {
    stop_with(libc::SIGINT, 128 + libc::SIGINT);
}

/// flint running the spinning firmware with `args`, once the guest runs: SIGPWR (the power
/// button) must not end it, SIGTERM then does. Returns flint's stderr.
fn power_button_then_stop(args: &[&str], env: &[(&str, &str)]) -> String {
    let fw = firmware("spin");
    let mut cmd = flint();
    cmd.args(["run", "--kernel", fw.to_str().unwrap()])
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    let (mut child, running) = spawn_until_spinning(cmd);
    assert!(running, "the guest never ran");
    signal(&child, libc::SIGPWR);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGPWR ended flint: it only asks the guest"
    );
    signal(&child, libc::SIGTERM);
    let out = wait_or_kill(child, Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(128 + libc::SIGTERM));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn sigpwr_presses_the_power_button_and_the_vm_goes_on() {
    // The press itself (an edge on the GED's line, under the main thread's seccomp filter)
    // succeeds; what the guest makes of it is the lab's to see (tests/lab_debian.rs).
    let stderr = power_button_then_stop(&[], &[]);
    assert!(!stderr.contains("power button"), "{stderr}");
    // Where KVM has no irqfd the main thread raises the line itself (KVM_IRQ_LINE), which its
    // seccomp filter allows.
    let stderr = power_button_then_stop(&[], &[("FLINT_NO_IRQFD", "1")]);
    assert!(!stderr.contains("power button"), "{stderr}");
    // Without ACPI there is no button, and flint says so.
    let stderr = power_button_then_stop(&["--no-acpi"], &[]);
    assert!(
        stderr.contains("flint: SIGPWR: the guest has no power button to press"),
        "{stderr}"
    );
}
