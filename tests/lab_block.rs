//! Lab tier: Linux on flint with virtio-blk disks, inside the lab. The guest boots from the
//! ext4 rootfs on /dev/vda, writes, and the lab host checks the image files after flint exits:
//! what the guest synced is there (even after SIGKILL), a read-only disk stays untouched, and
//! several disks appear in order with their serials. One lab boot runs every scenario.

mod common;

use std::sync::OnceLock;

use common::{base64, has_line, LabResults};

/// A flint command line booting the small kernel from a private copy of the rootfs, running
/// `script` in the guest (no redirections: the caller adds them).
fn flint_rootfs(script: &str, extra: &str) -> String {
    format!(
        "flint run --kernel /guest/vmlinux --rootfs /tmp/root.ext4 {extra} --append 'flint.run={}'",
        base64(script.as_bytes())
    )
}

fn lab() -> &'static LabResults {
    static RESULTS: OnceLock<LabResults> = OnceLock::new();
    RESULTS.get_or_init(|| {
        let mut list: Vec<(String, String)> = Vec::new();
        let mut scenario = |name: &str, body: &str| list.push((name.into(), body.into()));
        // 1. Boot from the rootfs, write a file, power off; boot again and read it back.
        scenario(
            "rootfs-persists",
            &format!(
                "cp /guest/rootfs.ext4 /tmp/root.ext4 && {} 2>&1 </dev/null && {} 2>&1 </dev/null",
                flint_rootfs("echo persisted-$((6*7)) > /hello.txt && sync", ""),
                flint_rootfs("echo \"read-back: $(cat /hello.txt)\"", "")
            ),
        );
        // 2. A raw data disk: the guest writes a sector and syncs; the host reads the file.
        scenario(
            "raw-disk-on-host",
            &format!(
                "dd if=/dev/zero of=/tmp/data.img bs=1M count=8 2>/dev/null && {} 2>&1 </dev/null && \
                 echo \"host sees: $(dd if=/tmp/data.img bs=512 skip=100 count=1 2>/dev/null | head -c 19)\"",
                flint_rootfs(
                    "printf 'written-by-guest-42' | dd of=/dev/vdb bs=512 seek=100 conv=sync,fsync 2>/dev/null; echo dd=$?",
                    "--disk path=/tmp/data.img,serial=data-1"
                )
            ),
        );
        // 3. SIGKILL right after the guest's sync: nothing it synced is lost.
        scenario(
            "sigkill-after-sync",
            &format!(
                "dd if=/dev/zero of=/tmp/kill.img bs=1M count=8 2>/dev/null; \
                 {} </dev/null >/tmp/kill.out 2>&1 & pid=$!; \
                 i=0; while ! grep -q synced-now /tmp/kill.out && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; \
                 kill -9 $pid; wait $pid; echo \"flint killed: $?\"; cat /tmp/kill.out | grep flint-guest; \
                 echo \"host sees: $(dd if=/tmp/kill.img bs=512 skip=7 count=1 2>/dev/null | head -c 14)\"",
                flint_rootfs(
                    "printf 'survives-kill!' | dd of=/dev/vdb bs=512 seek=7 conv=sync 2>/dev/null; sync; echo synced-now; sleep 600",
                    "--disk /tmp/kill.img"
                )
            ),
        );
        // 4. Read-only disk: the guest cannot write it and the file does not change.
        scenario(
            "read-only-disk",
            &format!(
                "dd if=/dev/urandom of=/tmp/ro.img bs=1M count=4 2>/dev/null; before=$(md5sum < /tmp/ro.img); {} 2>&1 </dev/null; \
                 after=$(md5sum < /tmp/ro.img); [ \"$before\" = \"$after\" ] && echo 'host: unchanged'",
                flint_rootfs(
                    "echo ro=$(cat /sys/block/vdb/ro); err=$(dd if=/dev/zero of=/dev/vdb bs=512 count=1 conv=fsync 2>&1); echo write-exit=$?; echo \"dd said: $err\"",
                    "--disk path=/tmp/ro.img,ro"
                )
            ),
        );
        // 5. Several disks in order, with serials.
        scenario(
            "several-disks",
            &format!(
                "dd if=/dev/zero of=/tmp/a.img bs=1M count=1 2>/dev/null; dd if=/dev/zero of=/tmp/b.img bs=1M count=2 2>/dev/null; {} 2>&1 </dev/null",
                flint_rootfs(
                    "for d in vda vdb vdc; do echo \"$d size=$(cat /sys/block/$d/size) serial=$(cat /sys/block/$d/serial) ro=$(cat /sys/block/$d/ro)\"; done",
                    "--disk path=/tmp/a.img,serial=disk-a --disk path=/tmp/b.img,ro,serial=disk-b"
                )
            ),
        );
        // 6. Read-only root: the system boots, and writing / fails.
        scenario(
            "read-only-root",
            &format!(
                "cp /guest/rootfs.ext4 /tmp/root.ext4 && {} 2>&1 </dev/null",
                flint_rootfs("touch /x 2>/dev/null && echo wrote-root || echo root-is-read-only", "")
                    .replace("--rootfs /tmp/root.ext4", "--rootfs path=/tmp/root.ext4,ro")
            ),
        );
        // Every lab run makes the rootfs copy first: a run resumed after a lab failure starts
        // with a later scenario, which boots from it too.
        common::run_scenarios_in_lab("cp /guest/rootfs.ext4 /tmp/root.ext4\n", &list, 600, &[])
    })
}

fn scenario(name: &str) -> &'static str {
    common::succeeded(lab(), name)
}

#[test]
fn base64_matches_known_vectors() {
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foobar"), "Zm9vYmFy");
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn boots_from_rootfs_and_writes_persist() {
    let out = scenario("rootfs-persists");
    assert!(has_line(out, "flint-guest: root=/dev/vda"), "{out}");
    assert!(has_line(out, "read-back: persisted-42"), "{out}");
    assert_eq!(out.matches("flint-guest: powering off").count(), 2, "{out}");
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn guest_writes_reach_the_host_file() {
    let out = scenario("raw-disk-on-host");
    assert!(has_line(out, "dd=0"), "{out}");
    assert!(has_line(out, "host sees: written-by-guest-42"), "{out}");
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn nothing_synced_is_lost_on_sigkill() {
    let out = scenario("sigkill-after-sync");
    assert!(has_line(out, "flint killed: 137"), "{out}");
    assert!(has_line(out, "host sees: survives-kill!"), "{out}");
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn read_only_disk_refuses_writes() {
    let out = scenario("read-only-disk");
    assert!(has_line(out, "ro=1"), "{out}");
    assert!(out.contains("write-exit="), "{out}");
    assert!(!has_line(out, "write-exit=0"), "the write must fail: {out}");
    assert!(has_line(out, "host: unchanged"), "{out}");
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn several_disks_in_order_with_serials() {
    let out = scenario("several-disks");
    assert!(
        has_line(out, "vda size=131072 serial=flint-vda ro=0"),
        "{out}"
    );
    assert!(has_line(out, "vdb size=2048 serial=disk-a ro=0"), "{out}");
    assert!(has_line(out, "vdc size=4096 serial=disk-b ro=1"), "{out}");
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn read_only_root_boots_and_stays_read_only() {
    let out = scenario("read-only-root");
    assert!(has_line(out, "flint-guest: root=/dev/vda"), "{out}");
    assert!(has_line(out, "root-is-read-only"), "{out}");
}
