//! Lab tier: real Linux guests on flint, inside the lab (QEMU/TCG with nested SVM, where
//! Debian's kvm-amd gives a real /dev/kvm; see resources/lab/). One lab boot runs every
//! scenario below and each test checks its own; the first test to ask starts the lab.
//!
//! These are `#[ignore]`d in a plain `cargo test` (a lab run builds kernels and takes minutes);
//! `cargo test -- --include-ignored` (what the README and CI run) includes them.

mod common;

use common::LabResults;
use std::sync::OnceLock;

/// (name, flint arguments). Every guest's init prints `flint-guest:` lines and powers off.
const SCENARIOS: &[(&str, &str)] = &[
    ("small-pvh-1cpu", "--kernel /guest/vmlinux --initrd /guest/initramfs.cpio.gz --boot-timer"),
    ("small-pvh-2cpu", "--kernel /guest/vmlinux --initrd /guest/initramfs.cpio.gz --cpus 2 --memory 256"),
    ("small-bzimage-cmdline", "--kernel /guest/bzImage --initrd /guest/initramfs.cpio.gz --cmdline 'console=ttyS0 reboot=k panic=1 flint.test=custom'"),
    ("debian-1cpu-append", "--kernel /guest/debian-vmlinuz --initrd /guest/initramfs.cpio.gz --memory 512 --append 'quiet flint.test=appended'"),
    ("debian-2cpu", "--kernel /guest/debian-vmlinuz --initrd /guest/initramfs.cpio.gz --memory 512 --cpus 2 --append quiet --boot-timer"),
    ("no-initrd-panics", "--kernel /guest/vmlinux --append 'panic=-1'"),
];

fn lab() -> &'static LabResults {
    static RESULTS: OnceLock<LabResults> = OnceLock::new();
    RESULTS.get_or_init(|| {
        // Each boot's console goes to a file and is shown when it ends (see LAB_LOGGED_FN).
        let list: Vec<(String, String)> = SCENARIOS
            .iter()
            .map(|(name, args)| (name.to_string(), format!("flint run {args}")))
            .collect();
        let script = common::lab_script("", &list, 300);
        common::scenarios(&common::run_in_lab(&script))
    })
}

/// Scenario `name`'s (output, flint's exit status).
fn scenario(name: &str) -> (&'static str, i32) {
    let (output, code) = common::scenario(lab(), name);
    (output, *code)
}

/// Asserts the guest's init ran and powered off cleanly, and returns its `flint-guest:` lines.
fn booted(name: &str) -> Vec<&'static str> {
    let (output, code) = scenario(name);
    assert_eq!(code, 0, "{name}: flint exited {code}:\n{output}");
    let lines: Vec<&str> = output
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix("flint-guest: "))
        .collect();
    assert!(lines.contains(&"init started"), "{name}:\n{output}");
    assert!(lines.contains(&"powering off"), "{name}:\n{output}");
    lines
}

fn boot_time(name: &str) -> u64 {
    common::boot_time_us(scenario(name).0).unwrap_or_else(|| panic!("{name}: no boot time"))
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn small_kernel_pvh_one_cpu() {
    let lines = booted("small-pvh-1cpu");
    assert!(lines.contains(&"cpus=1"), "{lines:?}");
    assert!(lines.contains(&"root=initramfs"));
    let default = format!("cmdline={}", flint_vmm::config::DEFAULT_CMDLINE);
    assert!(lines.contains(&default.as_str()), "{lines:?}");
    assert!(boot_time("small-pvh-1cpu") > 0);
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn small_kernel_sees_two_cpus() {
    assert!(booted("small-pvh-2cpu").contains(&"cpus=2"));
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn small_bzimage_with_replaced_cmdline() {
    let lines = booted("small-bzimage-cmdline");
    assert!(
        lines.contains(&"cmdline=console=ttyS0 reboot=k panic=1 flint.test=custom"),
        "{lines:?}"
    );
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn debian_kernel_with_appended_cmdline() {
    let lines = booted("debian-1cpu-append");
    assert!(lines.contains(&"cpus=1"));
    let want = format!(
        "cmdline={} quiet flint.test=appended",
        flint_vmm::config::DEFAULT_CMDLINE
    );
    assert!(lines.contains(&want.as_str()), "{lines:?}");
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn debian_kernel_sees_two_cpus() {
    assert!(booted("debian-2cpu").contains(&"cpus=2"));
    assert!(boot_time("debian-2cpu") > 0);
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn kernel_panic_reboots_and_flint_exits() {
    // No initrd and no root disk: the kernel panics and, with panic=-1, reboots at once. A
    // guest-initiated reboot ends the VM with exit 0, like a power-off; flint must not hang.
    let (output, code) = scenario("no-initrd-panics");
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("Kernel panic"), "{output}");
    assert!(!output.contains("flint-guest: init started"));
}
