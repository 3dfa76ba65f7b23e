//! Lab tier: a stock Debian 12 system on flint, as a user would boot one: Debian's own kernel
//! and initramfs-tools initrd, and a debootstrap root filesystem under systemd
//! (resources/guest/build-debian-rootfs.sh; the lab gets it with `--with-debian`). Debian's
//! kernel has no `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES`: it finds the disks and the NIC only in
//! flint's ACPI tables, and udev loads `virtio_mmio` for them by their ACPI modalias.
//!
//! Three boots of the same image, one lab run: the first checks the system and the devices and
//! ends with `systemctl poweroff` (after which the lab reads the file it wrote from the image),
//! the second ends with `systemctl reboot`, the third is shut down from outside by its ACPI
//! power button (SIGPWR to flint). The guest runs its script from the image's
//! `flint-run.service`. Each boot stands alone (a lab that fails in one resumes with it, on a
//! fresh copy of the image).
//!
//! The image is built once (debootstrap, as root) and cached; without root and without that
//! cache the tests are skipped, and say so.

mod common;

use std::sync::OnceLock;

use common::{base64, LabResults};

/// The first boot's script (bash, run once the system is up). Each finding is a
/// `flint-debian: ` line.
const FIRST_BOOT: &str = r#"s() { echo "flint-debian: $*"; }
s "state: $(systemctl is-system-running --wait)"
systemctl --failed --plain --no-legend | while read -r u _; do s "failed: $u"; done
for i in $(seq 60); do systemctl -q is-active serial-getty@ttyS0 && break; sleep 1; done
s "getty: $(systemctl is-active serial-getty@ttyS0)"
s "root: $(findmnt -no SOURCE /)"
s "cpus: $(nproc)"
s "cpus with svm or vmx: $(grep -c -w -E 'svm|vmx' /proc/cpuinfo)"
s "modules: $(grep -o '^virtio_[a-z]*' /proc/modules | sort | tr '\n' ' ')"
s "vdb: $(cat /sys/block/vdb/serial) $(cat /sys/block/vdb/size)"
printf second-disk | dd of=/dev/vdb bs=512 seek=9 conv=sync oflag=direct 2>/dev/null
s "vdb read: $(dd if=/dev/vdb bs=512 skip=9 count=1 iflag=direct 2>/dev/null | head -c 11)"
n=$(ls /sys/class/net | grep -vx lo | head -n1)
s "nic: $n $(basename "$(readlink /sys/class/net/$n/device/driver)")"
ip addr add 169.254.100.2/24 dev "$n" && ip link set "$n" up
ping -c 2 -W 10 169.254.100.1 >/dev/null && s "ping: ok"
head -c 4194304 /dev/urandom > /run/blob
s "sent: $(md5sum < /run/blob | cut -d' ' -f1)"
cat /run/blob > /dev/tcp/169.254.100.1/5001 && s "tcp: sent"
echo written-before-poweroff > /root/persist.txt && sync
s "powering off"
systemctl poweroff
"#;

/// The second boot's script: a reboot ends flint.
const SECOND_BOOT: &str = r#"s() { echo "flint-debian: $*"; }
s "state: $(systemctl is-system-running --wait)"
s "rebooting"
systemctl reboot
"#;

/// The third boot's script: the system is up; the host then presses the power button.
const THIRD_BOOT: &str = r#"s() { echo "flint-debian: $*"; }
s "state: $(systemctl is-system-running --wait)"
s "buttons: $(grep -c 'Power Button' /proc/bus/input/devices)"
s "up"
"#;

/// A lab shell snippet booting the Debian system with `script`, which prints the line
/// `flint-debian: $last`, then runs `action` (in the lab) and waits for flint to end: prints
/// flint's console, its exit status, and the seconds from that line to flint's exit. (A boot
/// that never ends is the scenario's hang: `logged` reports it and runs it once more.)
fn boot(script: &str, last: &str, action: &str) -> String {
    format!(
        "flint run --kernel /guest/debian/vmlinuz --initrd /guest/debian/initrd.img \
           --rootfs /guest/debian/rootfs.ext4 --disk path=/tmp/data.img,serial=data-1 \
           --net tap=tap0 --cpus 2 --memory 1024 --append 'flint.run={}' >/tmp/debian.out 2>&1 & f=$!
while kill -0 $f 2>/dev/null && ! grep -q 'flint-debian: {last}' /tmp/debian.out; do sleep 0.2; done
t0=$(cut -d' ' -f1 /proc/uptime)
{action}
wait $f; code=$?
t1=$(cut -d' ' -f1 /proc/uptime)
cat /tmp/debian.out
echo \"flint exit: $code\"
echo \"seconds to exit: $(awk \"BEGIN {{ print $t1 - $t0 }}\")\"
",
        base64(script.as_bytes())
    )
}

/// Builds the Debian system (or finds it cached) before the lab starts; `Err` says why it cannot
/// be had here: it needs root once, for debootstrap.
fn debian_system() -> &'static Result<(), String> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = common::resource_script("guest/build-debian-rootfs.sh", common::NO_ARGS);
        let stderr = String::from_utf8_lossy(&out.stderr);
        match out.status.success() {
            true => Ok(()),
            // SAFETY: geteuid has no failure mode.
            false if unsafe { libc::geteuid() } != 0 => Err(format!(
                "no cached Debian system, and building one needs root (debootstrap): {}",
                stderr.trim()
            )),
            false => panic!("build-debian-rootfs.sh failed:\n{stderr}"),
        }
    })
}

/// Whether the Debian system is here; if not, `test` is reported as skipped.
fn have_debian(test: &str) -> bool {
    match debian_system() {
        Ok(()) => true,
        Err(why) => {
            common::skip(test, why);
            false
        }
    }
}

fn lab() -> &'static LabResults {
    static RESULTS: OnceLock<LabResults> = OnceLock::new();
    RESULTS.get_or_init(|| {
        // Every boot has the second disk and the NIC.
        let setup = "dd if=/dev/zero of=/tmp/data.img bs=1M count=8 2>/dev/null
tunctl -t tap0 >/dev/null && ip addr add 169.254.100.1/24 dev tap0 && ip link set tap0 up
";
        let first = format!(
            "timeout 500 nc -l -p 5001 > /tmp/received & l=$!
{}
# nc ends when the guest's connection closes; if the guest never connected, it is stopped.
n=0; while kill -0 $l 2>/dev/null && [ $n -lt 50 ]; do sleep 0.2; n=$((n+1)); done
kill $l 2>/dev/null; wait $l
echo \"host received: $(wc -c < /tmp/received) $(md5sum < /tmp/received | cut -d' ' -f1)\"
echo \"in the image: $(debugfs -R 'cat /root/persist.txt' /guest/debian/rootfs.ext4 2>/dev/null)\"
",
            boot(FIRST_BOOT, "powering off", "")
        );
        let second = boot(SECOND_BOOT, "rebooting", "");
        let third = boot(THIRD_BOOT, "up", "kill -PWR $f");
        let list = vec![
            ("debian-poweroff".to_string(), first),
            ("debian-reboot".to_string(), second),
            ("debian-power-button".to_string(), third),
        ];
        common::run_scenarios_in_lab(setup, &list, 480, &["--with-debian".to_string()])
    })
}

/// The scenario's output, whose flint exited 0 within 30 s of the guest's power action.
fn ended_cleanly(name: &str) -> &'static str {
    let out = common::succeeded(lab(), name);
    assert!(common::has_line(out, "flint exit: 0"), "{out}");
    let seconds: f64 = common::value(out, "seconds to exit: ")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no time to exit: {out}"));
    assert!(
        seconds < 30.0,
        "{seconds} s from the power action to flint's exit: {out}"
    );
    out
}

/// The `flint-debian: KEY: VALUE` finding's value (journald puts its own prefix before it on
/// the console).
fn finding<'a>(out: &'a str, key: &str) -> &'a str {
    let tag = format!("flint-debian: {key}: ");
    out.lines()
        .find_map(|l| l.split_once(&tag).map(|(_, v)| v.trim_end()))
        .unwrap_or_else(|| panic!("no {key:?} finding: {out}"))
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn debian_boots_under_systemd_with_disks_network_and_powers_off() {
    if !have_debian("debian_boots_under_systemd_with_disks_network_and_powers_off") {
        return;
    }
    let out = ended_cleanly("debian-poweroff");
    // Debian's kernel finds the devices only through ACPI.
    assert!(
        out.contains("virtio_mmio: unknown parameter 'device' ignored"),
        "{out}"
    );
    let state = finding(out, "state");
    assert!(state == "running" || state == "degraded", "{out}");
    assert_eq!(finding(out, "getty"), "active", "{out}");
    assert!(
        out.contains("flint-debian login:"),
        "no login prompt: {out}"
    );
    assert_eq!(finding(out, "root"), "/dev/vda", "{out}");
    assert_eq!(finding(out, "cpus"), "2", "{out}");
    // No nested virtualization (the lab's CPUs have SVM): without it hidden, udev loaded
    // kvm_amd here, and the lab's own kernel crashed in such boots.
    assert_eq!(finding(out, "cpus with svm or vmx"), "0", "{out}");
    assert!(!out.contains("kvm: Nested Virtualization"), "{out}");
    let modules = finding(out, "modules");
    for m in ["virtio_blk", "virtio_mmio", "virtio_net"] {
        assert!(modules.split(' ').any(|x| x == m), "{m} not loaded: {out}");
    }
    assert_eq!(finding(out, "vdb"), "data-1 16384", "{out}");
    assert_eq!(finding(out, "vdb read"), "second-disk", "{out}");
    assert!(finding(out, "nic").ends_with(" virtio_net"), "{out}");
    assert_eq!(finding(out, "ping"), "ok", "{out}");
    assert_eq!(finding(out, "tcp"), "sent", "{out}");
    let sent = finding(out, "sent");
    assert_eq!(
        common::value(out, "host received: "),
        Some(format!("4194304 {sent}").as_str()),
        "{out}"
    );
    assert_eq!(
        common::value(out, "in the image: "),
        Some("written-before-poweroff"),
        "{out}"
    );
    assert!(out.contains("reboot: Power down"), "{out}");
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn debian_boots_again_and_reboot_ends_flint() {
    if !have_debian("debian_boots_again_and_reboot_ends_flint") {
        return;
    }
    let out = ended_cleanly("debian-reboot");
    let state = finding(out, "state");
    assert!(state == "running" || state == "degraded", "{out}");
    assert!(out.contains("reboot: Restarting system"), "{out}");
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn debian_shuts_down_when_its_power_button_is_pressed() {
    if !have_debian("debian_shuts_down_when_its_power_button_is_pressed") {
        return;
    }
    let out = ended_cleanly("debian-power-button");
    // The button is there (the GED's PNP0C0C, bound by the guest's button driver) and the
    // press made systemd power the guest off.
    assert_eq!(finding(out, "buttons"), "1", "{out}");
    assert!(out.contains("reboot: Power down"), "{out}");
}
