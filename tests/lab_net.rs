//! Lab tier: Linux on flint with virtio-net, inside the lab. The lab creates TAP devices
//! (tap0 = 169.254.100.1/24, tap1 = 169.254.101.1/24; the lab has no other network, so every
//! packet stays in it), boots the small kernel with `--net tap=...` and the guest configured by
//! `ip=` on its command line (169.254.100.2), and checks: the MAC the guest sees (given, and a
//! stable default), ping both ways, 4 MiB over TCP (busybox nc) each way with matching md5sums,
//! two interfaces, and the one-line errors for TAPs that are missing or cannot be opened and
//! for malformed MACs. One lab boot runs every scenario; every wait in it is bounded.

mod common;

use std::sync::OnceLock;

use common::{base64, has_line, value, LabResults};

/// The guest's address on tap0, configured by the kernel (IP_PNP) before init runs.
const IP_EQ: &str = "ip=169.254.100.2::169.254.100.1:255.255.255.0::eth0:off";
/// The MAC the traffic scenario asks for (mixed case on purpose), and what the guest must see.
const MAC_ARG: &str = "52:54:00:ab:CD:01";
const MAC_SEEN: &str = "52:54:00:ab:cd:01";
/// md5sum of nothing: a transfer that moved no bytes must not pass as a match.
const EMPTY_MD5: &str = "d41d8cd98f00b204e9800998ecf8427e";

/// A flint command line (small kernel, initramfs) running `script` in the guest.
fn flint_guest(script: &str, extra: &str) -> String {
    format!(
        "timeout 120 flint run --kernel /guest/vmlinux --initrd /guest/initramfs.cpio.gz {extra} \
         --append '{IP_EQ} flint.run={}'",
        base64(script.as_bytes())
    )
}

/// The lab side of the traffic scenario: listen for the guest's file on 5001, boot the guest,
/// wait until it listens on 5002, ping it, try a second VM on the same (busy) TAP, send it a
/// file, and wait for it to power off.
fn traffic() -> String {
    let guest = r#"
echo "eth0 mac=$(cat /sys/class/net/eth0/address)"
ip addr show eth0 | grep 'inet '
timeout 20 ping -c 3 -W 5 169.254.100.1 > /tmp/ping.out 2>&1; echo "guest ping host: $?"; cat /tmp/ping.out
dd if=/dev/urandom of=/tmp/g2h bs=1M count=4 2>/dev/null
echo "guest sent md5: $(md5sum < /tmp/g2h | cut -d' ' -f1)"
rc=1; for i in 1 2 3 4 5; do if timeout 60 nc 169.254.100.1 5001 < /tmp/g2h; then rc=0; break; fi; sleep 1; done
echo "guest nc send: $rc"
mkfifo /tmp/hold; exec 3<>/tmp/hold
echo guest-listening
timeout 60 nc -l -p 5002 <&3 > /tmp/h2g; echo "guest nc receive: $?"
echo "guest received md5: $(md5sum < /tmp/h2g | cut -d' ' -f1) bytes=$(wc -c < /tmp/h2g)"
"#;
    format!(
        r#"ip neigh flush dev tap0 >/dev/null 2>&1
dd if=/dev/urandom of=/tmp/h2g bs=1M count=4 2>/dev/null
echo "host sent md5: $(md5sum < /tmp/h2g | cut -d' ' -f1)"
mkfifo /tmp/hold; exec 3<>/tmp/hold
timeout 90 nc -l -p 5001 <&3 > /tmp/g2h & lpid=$!
{flint} </dev/null > /tmp/traffic.out 2>&1 & fpid=$!
i=0; while ! grep -q guest-listening /tmp/traffic.out && [ $i -lt 900 ]; do sleep 0.1; i=$((i+1)); done
timeout 20 ping -c 3 -W 5 169.254.100.2 > /tmp/ping.out 2>&1; echo "host ping guest: $?"; cat /tmp/ping.out
timeout 30 flint run --kernel /guest/vmlinux --initrd /guest/initramfs.cpio.gz --net tap=tap0 </dev/null >/tmp/busy.out 2>/tmp/busy.err
echo "busy exit=$? stdout-lines=$(wc -l < /tmp/busy.out) stderr-lines=$(wc -l < /tmp/busy.err)"
echo "busy stderr: $(cat /tmp/busy.err)"
rc=1; for i in $(seq 20); do if timeout 60 nc 169.254.100.2 5002 < /tmp/h2g; then rc=0; break; fi; sleep 0.5; done
echo "host nc send: $rc"
wait $fpid; echo "flint exit: $?"
wait $lpid; echo "host nc receive: $?"
echo "host received md5: $(md5sum < /tmp/g2h | cut -d' ' -f1) bytes=$(wc -c < /tmp/g2h)"
exec 3>&-
cat /tmp/traffic.out"#,
        flint = flint_guest(guest, &format!("--net tap=tap0,mac={MAC_ARG}"))
    )
}

/// Each bad `--net` runs flint with its stdout and stderr counted and shown, bounded in time.
fn errors() -> String {
    let cases: &[(&str, &str)] = &[
        ("missing-tap", "tap=nosuch0"),
        ("not-a-tap", "tap=lo"),
        ("mac-short", "tap=tap0,mac=52:54:00:12:34"),
        ("mac-long", "tap=tap0,mac=52:54:00:12:34:56:78"),
        ("mac-not-hex", "tap=tap0,mac=52:54:00:12:34:zz"),
        ("mac-no-colons", "tap=tap0,mac=525400123456"),
        ("mac-empty", "tap=tap0,mac="),
        ("no-tap-key", "mac=52:54:00:12:34:56"),
        ("empty-tap", "tap="),
        ("unknown-key", "tap=tap0,speed=10"),
        ("tap-name-too-long", "tap=abcdefghijklmnopq"),
    ];
    let mut s = String::new();
    for (name, net) in cases {
        s.push_str(&format!(
            "timeout 30 flint run --kernel /guest/vmlinux --initrd /guest/initramfs.cpio.gz --net '{net}' \
             </dev/null >/tmp/err.out 2>/tmp/err.err; \
             echo \"{name} exit=$? stdout-lines=$(wc -l < /tmp/err.out) stderr-lines=$(wc -l < /tmp/err.err)\"; \
             echo \"{name} stderr: $(head -c 300 /tmp/err.err)\"\n"
        ));
    }
    // flint must not create the TAP it was asked for (as root, TUNSETIFF would).
    s.push_str("ip link show nosuch0 >/dev/null 2>&1 && echo 'nosuch0: exists' || echo 'nosuch0: absent'\n");
    s
}

/// A network namespace (bound at /run/netns/jail) holding TAP `tapj` (169.254.102.1); a jailed
/// flint joins it with --netns and its guest pings the lab's end of the TAP.
fn jailed_netns() -> String {
    let guest = "timeout 20 ping -c 2 -W 5 169.254.102.1 >/dev/null 2>&1; echo \"jail ping: $?\"";
    format!(
        r#"{report}
mkdir -p /run/netns && touch /run/netns/jail && unshare --net=/run/netns/jail true || echo "netns: not made"
nsenter --net=/run/netns/jail sh -c 'ip link set lo up; tunctl -t tapj >/dev/null && ip addr add 169.254.102.1/24 dev tapj && ip link set tapj up'
ip link show tapj >/dev/null 2>&1 && echo "tapj in the lab's namespace: yes" || echo "tapj in the lab's namespace: no"
timeout 120 flint run --jail --uid 1000 --gid 1000 --netns /run/netns/jail --kernel /guest/vmlinux \
    --initrd /guest/initramfs.cpio.gz --net tap=tapj \
    --append 'ip=169.254.102.2::169.254.102.1:255.255.255.0::eth0:off flint.run={script}' \
    </dev/null >/tmp/jnet.out 2>&1 & p=$!
jail_report $p jail
wait $p; echo "flint exit: $?"
cat /tmp/jnet.out"#,
        report = common::LAB_JAIL_REPORT_FN,
        script = base64(guest.as_bytes())
    )
}

fn lab() -> &'static LabResults {
    static RESULTS: OnceLock<LabResults> = OnceLock::new();
    RESULTS.get_or_init(|| {
        let setup = String::from(
            "tunctl -t tap0 >/dev/null && ip addr add 169.254.100.1/24 dev tap0 && ip link set tap0 up || exit 1\n\
             tunctl -t tap1 >/dev/null && ip addr add 169.254.101.1/24 dev tap1 && ip link set tap1 up || exit 1\n",
        );
        let mut list: Vec<(String, String)> = Vec::new();
        let mut scenario = |name: &str, body: &str| list.push((name.into(), body.into()));
        // 1. Given MAC, ping both ways, 4 MiB each way over TCP, a busy TAP.
        scenario("traffic", &traffic());
        // 2. No mac=: the same default on two boots.
        let show_mac = "echo \"eth0 mac=$(cat /sys/class/net/eth0/address)\"";
        scenario(
            "default-mac",
            &format!(
                "{} </dev/null 2>&1; {} </dev/null 2>&1",
                flint_guest(show_mac, "--net tap=tap0"),
                flint_guest(show_mac, "--net tap=tap0")
            ),
        );
        // 3. Two interfaces, booted from the rootfs: eth0 on tap0 (configured by ip=), eth1 on
        //    tap1 (configured by the guest script); each pings its side of the lab.
        let two = r#"
for d in eth0 eth1; do echo "$d mac=$(cat /sys/class/net/$d/address)"; done
echo "interfaces: $(ls /sys/class/net | tr '\n' ' ')"
ip addr add 169.254.101.2/24 dev eth1 && ip link set eth1 up
timeout 20 ping -c 2 -W 5 169.254.100.1 >/dev/null 2>&1; echo "eth0 ping: $?"
timeout 20 ping -c 2 -W 5 169.254.101.1 >/dev/null 2>&1; echo "eth1 ping: $?"
"#;
        scenario(
            "two-nics",
            &format!(
                "ip neigh flush dev tap0 >/dev/null 2>&1; before=$(cat /sys/class/net/tap1/statistics/tx_packets); \
                 cp /guest/rootfs.ext4 /tmp/root.ext4 && {} </dev/null 2>&1; echo \"flint exit: $?\"; \
                 echo \"tap1 packets to the guest: $(( $(cat /sys/class/net/tap1/statistics/tx_packets) - before ))\"",
                flint_guest(two, "--net tap=tap0 --net tap=tap1")
                    .replace("--initrd /guest/initramfs.cpio.gz", "--rootfs /tmp/root.ext4")
            ),
        );
        // 4. Bad --net arguments.
        scenario("errors", &errors());
        // 5. A jailed flint on a TAP that exists only in a network namespace of its own.
        scenario("jailed-netns", &jailed_netns());
        common::run_scenarios_in_lab(&setup, &list, 600, &[])
    })
}

fn scenario(name: &str) -> &'static str {
    common::succeeded(lab(), name)
}

fn all_values<'a>(out: &'a str, prefix: &str) -> Vec<&'a str> {
    out.lines().filter_map(|l| l.strip_prefix(prefix)).collect()
}

/// A unicast, locally administered MAC in the form the kernel prints (aa:bb:cc:dd:ee:ff).
fn is_local_unicast(mac: &str) -> bool {
    let bytes: Vec<_> = mac.split(':').collect();
    bytes.len() == 6
        && bytes.iter().all(|b| {
            b.len() == 2
                && b.bytes()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        })
        && u8::from_str_radix(bytes[0], 16).is_ok_and(|b| b & 1 == 0 && b & 2 == 2)
}

#[test]
fn mac_classification() {
    assert!(is_local_unicast("52:54:00:12:34:56"));
    assert!(is_local_unicast("06:00:00:00:00:01"));
    assert!(!is_local_unicast("00:11:22:33:44:55")); // universally administered
    assert!(!is_local_unicast("03:00:00:00:00:01")); // multicast
    assert!(!is_local_unicast("52:54:00:12:34")); // short
    assert!(!is_local_unicast("52:54:00:AB:34:56")); // not as the kernel prints it
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn guest_sees_the_given_mac_and_its_address() {
    let out = scenario("traffic");
    assert!(has_line(out, &format!("eth0 mac={MAC_SEEN}")), "{out}");
    assert!(out.contains("inet 169.254.100.2/24"), "{out}");
    assert!(has_line(out, "flint exit: 0"), "{out}");
    assert!(has_line(out, "flint-guest: powering off"), "{out}");
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn ping_both_ways() {
    let out = scenario("traffic");
    assert!(has_line(out, "guest ping host: 0"), "{out}");
    assert!(has_line(out, "host ping guest: 0"), "{out}");
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn tcp_moves_4_mib_each_way_intact() {
    let out = scenario("traffic");
    assert!(has_line(out, "guest nc send: 0"), "{out}");
    assert!(has_line(out, "host nc receive: 0"), "{out}");
    assert!(has_line(out, "host nc send: 0"), "{out}");
    assert!(has_line(out, "guest nc receive: 0"), "{out}");
    for (sent, received) in [
        ("guest sent md5: ", "host received md5: "),
        ("host sent md5: ", "guest received md5: "),
    ] {
        let sent = value(out, sent).unwrap_or_else(|| panic!("no '{sent}' line:\n{out}"));
        let received =
            value(out, received).unwrap_or_else(|| panic!("no '{received}' line:\n{out}"));
        assert_eq!(sent.len(), 32, "{out}");
        assert_ne!(sent, EMPTY_MD5, "{out}");
        assert_eq!(received, format!("{sent} bytes=4194304"), "{out}");
    }
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn a_busy_tap_is_a_one_line_error() {
    let out = scenario("traffic");
    assert!(
        has_line(out, "busy exit=1 stdout-lines=0 stderr-lines=1"),
        "{out}"
    );
    let err = value(out, "busy stderr: ").unwrap();
    // The second VM could not attach: the first one still works (tcp_moves_4_mib_each_way_intact).
    assert!(
        err.starts_with("flint: error:") && err.contains("tap0"),
        "{out}"
    );
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn default_mac_is_stable_and_locally_administered() {
    let out = scenario("default-mac");
    let macs = all_values(out, "eth0 mac=");
    assert_eq!(macs.len(), 2, "{out}");
    assert_eq!(macs[0], macs[1], "{out}");
    assert!(is_local_unicast(macs[0]), "{out}");
    assert_eq!(out.matches("flint-guest: powering off").count(), 2, "{out}");
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn two_nets_are_eth0_and_eth1_and_both_work() {
    let out = scenario("two-nics");
    assert!(has_line(out, "flint-guest: root=/dev/vda"), "{out}");
    let interfaces = value(out, "interfaces: ").unwrap_or_else(|| panic!("{out}"));
    assert_eq!(
        interfaces.split_whitespace().collect::<Vec<_>>(),
        ["eth0", "eth1", "lo"],
        "{out}"
    );
    let eth0 = value(out, "eth0 mac=").unwrap();
    let eth1 = value(out, "eth1 mac=").unwrap();
    assert!(is_local_unicast(eth0) && is_local_unicast(eth1), "{out}");
    assert_ne!(eth0, eth1, "{out}");
    assert!(has_line(out, "eth0 ping: 0"), "{out}");
    assert!(has_line(out, "eth1 ping: 0"), "{out}");
    let to_guest: i64 = value(out, "tap1 packets to the guest: ")
        .unwrap()
        .parse()
        .unwrap();
    assert!(to_guest >= 2, "{out}");
    assert!(has_line(out, "flint exit: 0"), "{out}");
}

/// The outcome of an error case: flint's exit code, how many lines it wrote to stdout and
/// stderr, and the first line of its stderr.
fn error_case(case: &str) -> (i32, usize, usize, &'static str) {
    let out = scenario("errors");
    let status =
        value(out, &format!("{case} exit=")).unwrap_or_else(|| panic!("no {case}:\n{out}"));
    let field = |i: usize| -> usize { status.split([' ', '=']).nth(i).unwrap().parse().unwrap() };
    let err = value(out, &format!("{case} stderr: ")).unwrap();
    (i32::try_from(field(0)).unwrap(), field(2), field(4), err)
}

/// The case made flint exit `want` (1: bad input, 2: command-line syntax) before any guest
/// output, with one `flint: error:` line that mentions `mentions`.
fn one_line_error_with(case: &str, mentions: &str, want: i32) {
    let (code, stdout_lines, stderr_lines, err) = error_case(case);
    assert_eq!(
        (code, stdout_lines, stderr_lines),
        (want, 0, 1),
        "{case}: want exit {want} and one line on stderr, got exit {code}, {stderr_lines} lines: {err}"
    );
    assert!(err.starts_with("flint: error:"), "{case}: {err}");
    assert!(
        err.to_lowercase().contains(&mentions.to_lowercase()),
        "{case}: the error does not mention '{mentions}': {err}"
    );
}

fn one_line_error(case: &str, mentions: &str) {
    one_line_error_with(case, mentions, 1)
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn a_missing_tap_is_a_one_line_error_and_is_not_created() {
    one_line_error("missing-tap", "nosuch0");
    assert!(has_line(scenario("errors"), "nosuch0: absent"));
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn a_device_that_is_not_a_tap_is_a_one_line_error() {
    one_line_error("not-a-tap", "lo");
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn a_malformed_mac_is_a_one_line_error() {
    for case in [
        "mac-short",
        "mac-long",
        "mac-not-hex",
        "mac-no-colons",
        "mac-empty",
    ] {
        // A MAC is part of the option's syntax: a usage error (exit 2), in one line.
        one_line_error_with(case, "mac", 2);
    }
}

/// A malformed `--net` is a command-line syntax error (exit 2, like `--cpus two`) or, for a
/// name no TAP can have, bad input (exit 1); either way one line, and no guest starts.
#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn a_malformed_net_option_is_refused() {
    for (case, mentions) in [
        ("no-tap-key", "tap"),
        ("empty-tap", "tap"),
        ("unknown-key", "speed"),
        ("tap-name-too-long", "abcdefghijklmnopq"),
    ] {
        let (code, _, _, err) = error_case(case);
        assert!(code == 1 || code == 2, "{case}: exit {code}: {err}");
        one_line_error_with(case, mentions, code);
    }
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn jailed_flint_uses_a_tap_in_the_network_namespace_it_was_given() {
    let out = scenario("jailed-netns");
    assert!(has_line(out, "tapj in the lab's namespace: no"), "{out}");
    assert_eq!(
        value(out, "jail net ns same as the lab's: "),
        Some("no"),
        "{out}"
    );
    assert_eq!(
        value(out, "jail uid: "),
        Some("1000 1000 1000 1000"),
        "{out}"
    );
    assert!(has_line(out, "jail ping: 0"), "{out}");
    assert!(has_line(out, "flint exit: 0"), "{out}");
}
