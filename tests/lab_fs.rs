//! Lab tier: host directories shared live with a Linux guest over virtio-fs (`--fs`), served by
//! the virtiofsd flint starts. One lab boot runs every scenario; every wait is bounded.
//!
//! The guest's script reaches it through a read-only share of its own (`ctl`, mounted by a
//! one-line `flint.run`), which keeps the kernel command line short and tests a second,
//! read-only share at the same time.

mod common;

use std::sync::OnceLock;

use common::{base64, has_line, value, LabResults};

/// 64 MiB: the issue's size for a checksummed copy each way.
const BIG_MIB: u32 = 64;
/// How many small files the guest creates.
const SMALL_FILES: u32 = 300;
/// How many virtiofsd processes run in the lab (busybox has no pgrep).
const VIRTIOFSDS: &str =
    r#"$(for c in /proc/[0-9]*/comm; do cat "$c" 2>/dev/null; done | grep -cx virtiofsd)"#;
/// md5sum of nothing: a copy that moved no bytes must not pass as a match.
const EMPTY_MD5: &str = "d41d8cd98f00b204e9800998ecf8427e";

/// `flint run` with the small kernel, its initramfs, a share `ctl` (read-only) holding the
/// guest script `CTL/guest.sh`, and `extra` options; the guest mounts `ctl` and runs the script.
fn flint_guest(ctl: &str, extra: &str) -> String {
    let boot = "mkdir -p /ctl && mount -t virtiofs ctl /ctl && sh /ctl/guest.sh";
    format!(
        "timeout 600 flint run --kernel /guest/vmlinux --initrd /guest/initramfs.cpio.gz \
         --memory 256 --fs tag=ctl,path={ctl},ro {extra} --append 'flint.run={}'",
        base64(boot.as_bytes())
    )
}

/// Both ways while both run, 64 MiB each way, rename, unlink, many small files, ownership
/// and permissions, a read-only share; nothing left running after flint exits.
fn share() -> String {
    let guest = format!(
        r#"
mkdir -p /mnt/data /mnt/ro
mount -t virtiofs data /mnt/data && echo "guest mounted data: yes"
mount -t virtiofs ro /mnt/ro && echo "guest mounted ro: yes"
echo "guest mount: $(grep ' /mnt/data ' /proc/mounts | cut -d' ' -f1,3)"
echo "guest read: $(cat /mnt/data/host.txt)"
echo "guest big md5: $(md5sum < /mnt/data/big.bin | cut -d' ' -f1)"
cp /mnt/data/big.bin /mnt/data/big-copy.bin && sync && echo "guest copied big: yes"
echo "guest perm: $(stat -c '%u %g %a' /mnt/data/perm.txt)"
echo from-guest > /mnt/data/guest.txt
mv /mnt/data/guest.txt /mnt/data/renamed.txt && echo "guest renamed: yes"
rm /mnt/data/delete-me.txt && echo "guest unlinked: yes"
mkdir /mnt/data/small && i=0; while [ $i -lt {SMALL_FILES} ]; do echo $i > /mnt/data/small/$i; i=$((i+1)); done
echo "guest small files: $(ls /mnt/data/small | wc -l)"
echo "guest ro read: $(cat /mnt/ro/ro.txt)"
echo x > /mnt/ro/new.txt 2>/dev/null && echo "guest ro write: allowed" || echo "guest ro write: refused"
rm /mnt/ro/ro.txt 2>/dev/null && echo "guest ro unlink: allowed" || echo "guest ro unlink: refused"
echo "live from guest" > /mnt/data/live-guest.txt
echo guest-waiting
i=0; while [ ! -e /mnt/data/live-host.txt ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
echo "guest saw live: $(cat /mnt/data/live-host.txt 2>/dev/null || echo nothing)"
"#
    );
    format!(
        r#"mkdir -p /tmp/ctl /tmp/share /tmp/roshare
printf '%s' {script} | base64 -d > /tmp/ctl/guest.sh
echo hello-from-host > /tmp/share/host.txt
dd if=/dev/urandom of=/tmp/share/big.bin bs=1M count={BIG_MIB} 2>/dev/null
echo "host big md5: $(md5sum < /tmp/share/big.bin | cut -d' ' -f1)"
echo perm > /tmp/share/perm.txt && chown 1000:1001 /tmp/share/perm.txt && chmod 640 /tmp/share/perm.txt
echo bye > /tmp/share/delete-me.txt
echo read-only > /tmp/roshare/ro.txt
{flint} </dev/null > /tmp/share.out 2>&1 & fpid=$!
i=0; while ! grep -q guest-waiting /tmp/share.out && [ $i -lt 4800 ]; do sleep 0.1; i=$((i+1)); done
echo "host saw guest's file while it runs: $(cat /tmp/share/live-guest.txt 2>/dev/null || echo nothing)"
echo "virtiofsd running: {count}"
echo "live from host" > /tmp/share/live-host.txt
wait $fpid; echo "flint exit: $?"
echo "host copy md5: $(md5sum < /tmp/share/big-copy.bin | cut -d' ' -f1) bytes=$(wc -c < /tmp/share/big-copy.bin)"
echo "host renamed: $(cat /tmp/share/renamed.txt 2>/dev/null) old=$([ -e /tmp/share/guest.txt ] && echo yes || echo no)"
echo "host unlinked: $([ -e /tmp/share/delete-me.txt ] && echo no || echo yes)"
echo "host small files: $(ls /tmp/share/small | wc -l) last=$(cat /tmp/share/small/{last})"
echo "host guest-file owner: $(stat -c '%u %g' /tmp/share/renamed.txt)"
echo "host ro dir: $(ls -A /tmp/roshare | tr '\n' ' ')"
echo "virtiofsd left: {count}"
echo "private dirs left: $(ls -d /tmp/flint-fs-* 2>/dev/null | wc -l)"
cat /tmp/share.out"#,
        script = base64(guest.as_bytes()),
        last = SMALL_FILES - 1,
        count = VIRTIOFSDS,
        flint = flint_guest(
            "/tmp/ctl",
            "--fs tag=data,path=/tmp/share --fs tag=ro,path=/tmp/roshare,ro"
        ),
    )
}

/// virtiofsd killed while the guest uses the share: flint stops the VM with one line.
fn killed() -> String {
    let guest = r#"
mkdir -p /mnt/k && mount -t virtiofs k /mnt/k && echo guest-ready
i=0; while [ $i -lt 600 ]; do ls /mnt/k > /dev/null 2>&1; sleep 0.1; i=$((i+1)); done
echo "guest outlived virtiofsd"
"#;
    format!(
        r#"mkdir -p /tmp/kctl /tmp/k && printf '%s' {script} | base64 -d > /tmp/kctl/guest.sh
{flint} </dev/null > /tmp/k.out 2> /tmp/k.err & fpid=$!
i=0; while ! grep -q guest-ready /tmp/k.out && [ $i -lt 4800 ]; do sleep 0.1; i=$((i+1)); done
pids=
for p in /proc/[0-9]*; do
    [ "$(cat $p/comm 2>/dev/null)" = virtiofsd ] && tr '\0' ' ' < $p/cmdline | grep -q 'shared-dir /tmp/k ' \
        && pids="$pids ${{p#/proc/}}"
done
# virtiofsd and its sandboxed child at once (numeric order: the parent first).
[ -n "$pids" ] && kill -KILL $(echo $pids | tr ' ' '\n' | sort -n) && echo "killed virtiofsd: yes"
wait $fpid; echo "flint exit: $?"
echo "flint's stderr lines: $(grep -c '^flint:' /tmp/k.err)"
echo "other stderr lines not virtiofsd's: $(grep -v '^flint:' /tmp/k.err | grep -vc virtiofsd)"
echo "stderr: $(grep '^flint:' /tmp/k.err)"
echo "virtiofsd left: {count}"
cat /tmp/k.out"#,
        script = base64(guest.as_bytes()),
        flint = flint_guest("/tmp/kctl", "--fs tag=k,path=/tmp/k"),
        count = VIRTIOFSDS,
    )
}

/// A jailed flint (its own mount and PID namespaces, an empty root, uid 1000) still serves
/// the shares it was given: virtiofsd starts before flint confines itself.
fn jailed() -> String {
    let guest = r#"
mkdir -p /mnt/j && mount -t virtiofs j /mnt/j && echo "jailed guest read: $(cat /mnt/j/host.txt)"
echo from-jailed-guest > /mnt/j/guest.txt
"#;
    format!(
        r#"mkdir -p /tmp/jctl /tmp/j && printf '%s' {script} | base64 -d > /tmp/jctl/guest.sh
echo jailed-hello > /tmp/j/host.txt
{flint} </dev/null > /tmp/j.out 2>&1; echo "flint exit: $?"
echo "host read jailed guest's file: $(cat /tmp/j/guest.txt 2>/dev/null || echo nothing)"
echo "virtiofsd left: {count}"
cat /tmp/j.out"#,
        script = base64(guest.as_bytes()),
        flint = flint_guest(
            "/tmp/jctl",
            "--fs tag=j,path=/tmp/j --jail --uid 1000 --gid 1000"
        ),
        count = VIRTIOFSDS,
    )
}

/// A missing virtiofsd and a path that is not there: one line each, nothing started.
fn errors() -> String {
    r#"
FLINT_VIRTIOFSD=/nonexistent/virtiofsd timeout 60 flint run --kernel /guest/vmlinux --fs tag=a,path=/tmp </dev/null >/tmp/e1.out 2>/tmp/e1.err
echo "no-virtiofsd exit=$? stdout-lines=$(wc -l < /tmp/e1.out) stderr-lines=$(wc -l < /tmp/e1.err)"
echo "no-virtiofsd stderr: $(cat /tmp/e1.err)"
timeout 60 flint run --kernel /guest/vmlinux --fs tag=a,path=/nonexistent </dev/null >/tmp/e2.out 2>/tmp/e2.err
echo "no-path exit=$? stdout-lines=$(wc -l < /tmp/e2.out) stderr-lines=$(wc -l < /tmp/e2.err)"
echo "no-path stderr: $(cat /tmp/e2.err)"
echo "virtiofsd left: {count}"
"#
    .replace("{count}", VIRTIOFSDS)
}

fn lab() -> &'static LabResults {
    static RESULTS: OnceLock<LabResults> = OnceLock::new();
    RESULTS.get_or_init(|| {
        let list = vec![
            ("share".to_string(), share()),
            ("killed".to_string(), killed()),
            ("jailed".to_string(), jailed()),
            ("errors".to_string(), errors()),
        ];
        common::run_scenarios_in_lab("", &list, 900, &[])
    })
}

fn scenario(name: &str) -> &'static str {
    common::succeeded(lab(), name)
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn host_and_guest_see_each_others_files_while_both_run() {
    let out = scenario("share");
    assert!(has_line(out, "guest mounted data: yes"), "{out}");
    assert!(has_line(out, "guest mount: data virtiofs"), "{out}");
    assert!(has_line(out, "guest read: hello-from-host"), "{out}");
    assert!(
        has_line(out, "host saw guest's file while it runs: live from guest"),
        "{out}"
    );
    assert!(has_line(out, "guest saw live: live from host"), "{out}");
    assert!(has_line(out, "flint exit: 0"), "{out}");
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn sixty_four_mib_cross_both_ways_intact() {
    let out = scenario("share");
    let host = value(out, "host big md5: ").unwrap_or_else(|| panic!("{out}"));
    assert_eq!(host.len(), 32, "{out}");
    assert_ne!(host, EMPTY_MD5, "{out}");
    assert_eq!(value(out, "guest big md5: "), Some(host), "{out}");
    assert!(has_line(out, "guest copied big: yes"), "{out}");
    assert_eq!(
        value(out, "host copy md5: "),
        Some(format!("{host} bytes={}", BIG_MIB << 20).as_str()),
        "{out}"
    );
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn rename_unlink_and_many_small_files() {
    let out = scenario("share");
    assert!(has_line(out, "guest renamed: yes"), "{out}");
    assert!(has_line(out, "host renamed: from-guest old=no"), "{out}");
    assert!(has_line(out, "guest unlinked: yes"), "{out}");
    assert!(has_line(out, "host unlinked: yes"), "{out}");
    assert!(
        has_line(out, &format!("guest small files: {SMALL_FILES}")),
        "{out}"
    );
    assert!(
        has_line(
            out,
            &format!("host small files: {SMALL_FILES} last={}", SMALL_FILES - 1)
        ),
        "{out}"
    );
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn ownership_and_permissions_are_the_hosts() {
    let out = scenario("share");
    assert!(has_line(out, "guest perm: 1000 1001 640"), "{out}");
    // The guest's root wrote it: root owns it on the host too.
    assert!(has_line(out, "host guest-file owner: 0 0"), "{out}");
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn a_read_only_share_refuses_writes() {
    let out = scenario("share");
    assert!(has_line(out, "guest mounted ro: yes"), "{out}");
    assert!(has_line(out, "guest ro read: read-only"), "{out}");
    assert!(has_line(out, "guest ro write: refused"), "{out}");
    assert!(has_line(out, "guest ro unlink: refused"), "{out}");
    assert!(has_line(out, "host ro dir: ro.txt "), "{out}");
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn virtiofsd_ends_with_flint_and_leaves_nothing() {
    let out = scenario("share");
    // Three shares (ctl, data, ro), each a virtiofsd (which may fork into its sandbox).
    let running: u32 = value(out, "virtiofsd running: ").unwrap().parse().unwrap();
    assert!(running >= 3, "{out}");
    assert!(has_line(out, "virtiofsd left: 0"), "{out}");
    assert!(has_line(out, "private dirs left: 0"), "{out}");
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn virtiofsd_killed_stops_the_vm_with_one_line() {
    let out = scenario("killed");
    assert!(has_line(out, "killed virtiofsd: yes"), "{out}");
    assert!(has_line(out, "flint exit: 1"), "{out}");
    // flint's one line; virtiofsd may say its own (its child died) on the stderr it shares.
    assert!(has_line(out, "flint's stderr lines: 1"), "{out}");
    assert!(
        has_line(out, "other stderr lines not virtiofsd's: 0"),
        "{out}"
    );
    let err = value(out, "stderr: ").unwrap();
    assert!(err.contains("share 'k' went away"), "{out}");
    assert!(!out.contains("guest outlived virtiofsd"), "{out}");
    assert!(has_line(out, "virtiofsd left: 0"), "{out}");
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn a_jailed_flint_serves_its_shares() {
    let out = scenario("jailed");
    assert!(has_line(out, "jailed guest read: jailed-hello"), "{out}");
    assert!(
        has_line(out, "host read jailed guest's file: from-jailed-guest"),
        "{out}"
    );
    assert!(has_line(out, "flint exit: 0"), "{out}");
    assert!(has_line(out, "virtiofsd left: 0"), "{out}");
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn share_errors_are_one_line() {
    let out = scenario("errors");
    assert!(
        has_line(out, "no-virtiofsd exit=1 stdout-lines=0 stderr-lines=1"),
        "{out}"
    );
    assert!(
        value(out, "no-virtiofsd stderr: ")
            .unwrap()
            .contains("/nonexistent/virtiofsd"),
        "{out}"
    );
    assert!(
        has_line(out, "no-path exit=1 stdout-lines=0 stderr-lines=1"),
        "{out}"
    );
    assert!(
        value(out, "no-path stderr: ")
            .unwrap()
            .contains("--fs /nonexistent: no such file"),
        "{out}"
    );
    assert!(has_line(out, "virtiofsd left: 0"), "{out}");
}
