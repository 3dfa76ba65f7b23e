//! Tests of the guest init's run-spec parser (`init/spec.c`) against the writer
//! ([`super::spec`]). The init's `--print-spec FILE` mode parses a spec as the guest init does
//! and prints what it read, one item a line: that must be exactly what the encoded
//! [`RunSpec`] holds. A spec that breaks the format must be refused with status 125 and one
//! line that says why.

use std::path::PathBuf;
use std::process::{Command, Output};

use super::spec::{
    program_hex, Caps, FileMount, GuestMount, Insn, Mount, Rlimit, RunSpec, SeccompFilter,
    ShareMount, MAGIC,
};

const INIT: &str = env!("FLINT_INIT_BIN");

/// How `--print-spec` shows a string: the bytes that could split a line or a field (controls,
/// space, DEL) and the backslash as `\xHH`; anything else, UTF-8 included, as it is.
fn field(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c <= ' ' || c == '\x7f' || c == '\\' {
                format!("\\x{:02x}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// What `--print-spec` must print for `s`: its items in the format's order.
pub(crate) fn expected(s: &RunSpec) -> String {
    let mut lines = Vec::new();
    lines.extend(s.args.iter().map(|a| format!("arg {}", field(a))));
    lines.extend(s.env.iter().map(|e| format!("env {}", field(e))));
    lines.push(format!("cwd {}", field(&s.cwd)));
    lines.push(format!("uid {}", s.uid));
    lines.push(format!("gid {}", s.gid));
    lines.extend(s.additional_gids.iter().map(|g| format!("group {g}")));
    lines.extend(s.umask.map(|u| format!("umask {u}")));
    lines.extend(s.hostname.iter().map(|h| format!("hostname {}", field(h))));
    lines.push(format!("terminal {}", u8::from(s.terminal)));
    lines.push(format!("root-readonly {}", u8::from(s.root_readonly)));
    lines.extend(s.root_fs.iter().map(|t| format!("root-fs {}", field(t))));
    lines.push(format!(
        "no-new-privileges {}",
        u8::from(s.no_new_privileges)
    ));
    lines.extend(
        s.rlimits
            .iter()
            .map(|r| format!("rlimit {} {} {}", r.resource, r.soft, r.hard)),
    );
    lines.extend(s.caps.iter().map(|c| {
        format!(
            "caps {} {} {} {} {}",
            c.bounding, c.effective, c.inheritable, c.permitted, c.ambient
        )
    }));
    lines.extend(s.oom_score_adj.map(|n| format!("oom-score-adj {n}")));
    lines.extend(s.pids_limit.map(|n| format!("pids-limit {n}")));
    lines.extend(
        s.seccomp
            .iter()
            .map(|f| format!("seccomp {} {}", f.flags, program_hex(&f.program))),
    );
    lines.extend(s.mounts.iter().map(|m| match m {
        GuestMount::New(m) => format!(
            "mount {} {} {} {} {}",
            field(&m.destination),
            field(&m.fstype),
            field(&m.source),
            m.flags,
            field(&m.data)
        ),
        GuestMount::Share(m) => format!(
            "fs-mount {} {} {} {} {}",
            field(&m.tag),
            field(&m.subpath),
            field(&m.destination),
            m.flags,
            field(&m.data)
        ),
        GuestMount::File(m) => format!(
            "file {} {:o} {} {}",
            field(&m.destination),
            m.mode,
            m.flags,
            field(&m.content)
        ),
    }));
    lines.extend(
        s.masked_paths
            .iter()
            .map(|p| format!("masked {}", field(p))),
    );
    lines.extend(
        s.readonly_paths
            .iter()
            .map(|p| format!("readonly-path {}", field(p))),
    );
    lines.extend(
        s.sysctl
            .iter()
            .map(|(k, v)| format!("sysctl {} {}", field(k), field(v))),
    );
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// A file in the temporary directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &[u8]) -> Self {
        let file = format!("flint-init-test-{}-{name}", std::process::id());
        let path = std::env::temp_dir().join(file);
        std::fs::write(&path, contents).expect("write the spec file");
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs `flint-init --print-spec` on `bytes`; `name` makes the file unique among the tests.
pub(crate) fn print_spec(name: &str, bytes: &[u8]) -> Output {
    let file = TempFile::new(name, bytes);
    Command::new(INIT)
        .arg("--print-spec")
        .arg(&file.0)
        .output()
        .expect("run flint-init --print-spec")
}

fn assert_round_trip(name: &str, spec: &RunSpec) {
    let out = print_spec(name, &spec.encode().expect("encode"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(stderr, "");
    let stdout = String::from_utf8(out.stdout).expect("UTF-8 output");
    assert_eq!(stdout, expected(spec));
}

/// Asserts that flint-init refuses `bytes` with status 125 and one line that contains `why`.
fn assert_refused(name: &str, bytes: &[u8], why: &str) {
    let out = print_spec(name, bytes);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "stderr: {stderr}");
    assert!(out.stdout.is_empty(), "{:?}", out.stdout);
    assert!(
        stderr.starts_with("flint-init: error: bad run spec ")
            && stderr.contains(why)
            && stderr.ends_with('\n')
            && stderr.lines().count() == 1,
        "expected one line with {why:?}, got {stderr:?}"
    );
}

/// A spec as its strings: the magic, then each item NUL-terminated.
fn raw(items: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for item in [MAGIC].iter().chain(items) {
        out.extend_from_slice(item.as_bytes());
        out.push(0);
    }
    out
}

/// The records every spec needs (and a valid spec with them and `end`).
const MINIMAL: &[&str] = &["arg", "true", "cwd", "/"];

fn with_minimal(items: &[&str]) -> Vec<u8> {
    let all: Vec<&str> = MINIMAL.iter().chain(items).copied().collect();
    raw(&all)
}

use libc::{
    MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC, MS_RELATIME, MS_STRICTATIME,
};

fn mount(destination: &str, fstype: &str, source: &str, flags: u64, data: &str) -> GuestMount {
    GuestMount::New(Mount {
        destination: destination.into(),
        fstype: fstype.into(),
        source: source.into(),
        flags,
        data: data.into(),
    })
}

fn file(destination: &str, mode: u32, flags: u64, content: &str) -> GuestMount {
    GuestMount::File(FileMount {
        destination: destination.into(),
        mode,
        flags,
        content: content.into(),
    })
}

/// A program with every field at its widest (the parser does not judge it; the kernel does).
fn program() -> SeccompFilter {
    let insn = |code, jt, jf, k| Insn { code, jt, jf, k };
    SeccompFilter {
        flags: 7,
        program: vec![
            insn(0x20, 0, 0, 4),
            insn(0x15, 1, 0, 0xc000_003e),
            insn(0xffff, 0xff, 0xff, u32::MAX),
            insn(0x06, 0, 0, 0x7fff_0000),
        ],
    }
}

fn fs_mount(tag: &str, subpath: &str, destination: &str, flags: u64, data: &str) -> GuestMount {
    GuestMount::Share(ShareMount {
        tag: tag.into(),
        subpath: subpath.into(),
        destination: destination.into(),
        flags,
        data: data.into(),
    })
}

/// A spec with every kind of record, and strings that are hard to get through: spaces,
/// empty strings, backslashes, controls, UTF-8.
fn full_spec() -> RunSpec {
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    RunSpec {
        args: s(&[
            "/bin/sh",
            "-c",
            "echo 'hello world'  two  spaces ",
            "",
            "héllo wörld ✓ 日本語",
            "tab\there",
            "new\nline\r\n",
            "back\\slash \\x20",
            "\x01\x1f\x7f",
            "",
        ]),
        env: s(&[
            "PATH=/usr/local/bin:/usr/bin:/bin",
            "EMPTY=",
            "SPACES=a b  c",
            "UTF8=ünïcødé",
            "=",
        ]),
        cwd: "/home/a user/ü".into(),
        uid: 1000,
        gid: 1001,
        additional_gids: vec![10, 0, u32::MAX],
        umask: Some(0o027),
        hostname: Some("flint host ✓".into()),
        terminal: true,
        root_readonly: true,
        root_fs: Some("flint-root".into()),
        no_new_privileges: true,
        rlimits: vec![
            Rlimit {
                resource: 7,
                soft: 1024,
                hard: 4096,
            },
            Rlimit {
                resource: 4,
                soft: 0,
                hard: u64::MAX,
            },
        ],
        caps: Some(Caps {
            bounding: u64::MAX,
            effective: 0xa80425fb,
            inheritable: 1 << 10,
            permitted: 0xa80425fb,
            ambient: 1 << 10,
        }),
        oom_score_adj: Some(-999),
        pids_limit: Some(u64::MAX),
        seccomp: Some(program()),
        mounts: vec![
            mount(
                "/proc",
                "proc",
                "proc",
                MS_NOSUID | MS_NOEXEC | MS_NODEV,
                "",
            ),
            mount(
                "/dev",
                "tmpfs",
                "tmpfs",
                MS_NOSUID | MS_STRICTATIME,
                "mode=755,size=65536k",
            ),
            mount(
                "/dev/pts",
                "devpts",
                "devpts",
                MS_NOSUID | MS_NOEXEC,
                "newinstance,ptmxmode=0666,mode=0620,gid=5",
            ),
            mount(
                "/sys/fs/cgroup",
                "cgroup",
                "cgroup",
                MS_NOSUID | MS_NOEXEC | MS_NODEV | MS_RELATIME | MS_RDONLY,
                "",
            ),
            mount("/a dir/ü", "tmpfs", "", MS_PRIVATE | MS_REC, "size=1m, x"),
            mount("/max", "tmpfs", "none", u64::MAX, ""),
            // Binds from shares, among the other mounts.
            fs_mount("flint-fs0", "", "/data", 0, ""),
            fs_mount(
                "flint-fs1",
                "my hosts ✓",
                "/etc/hosts",
                MS_RDONLY | MS_NOSUID,
                "",
            ),
            mount("/data/tmp", "tmpfs", "tmpfs", 0, ""),
            fs_mount("flint-fs0", "", "/data/tmp/again", MS_NOEXEC, "x y"),
            fs_mount(&"t".repeat(36), "..a", "/max", u64::MAX, ""),
            file(
                "/etc/hosts",
                0o644,
                MS_RDONLY,
                "127.0.0.1\tlocalhost\n::1 localhost ✓\n\\x20\n",
            ),
            file("/run/.containerenv", 0o600, 0, ""),
            file("/etc/resolv.conf", 0o777, u64::MAX, &"x".repeat(64 << 10)),
        ],
        masked_paths: s(&["/proc/kcore", "/proc/a dir", "/proc/ü"]),
        readonly_paths: s(&["/proc/sys", "/proc/bus"]),
        sysctl: vec![
            ("net.ipv4.ip_forward".into(), "1".into()),
            ("net.ipv4.tcp_rmem".into(), "4096 87380 6291456".into()),
            ("kernel.domainname".into(), "".into()),
        ],
    }
}

#[test]
fn every_kind_of_record_reads_back_as_written() {
    assert_round_trip("full", &full_spec());
}

#[test]
fn a_minimal_spec_reads_back_with_the_defaults() {
    let spec = RunSpec {
        args: vec!["true".into()],
        cwd: "/".into(),
        ..RunSpec::default()
    };
    assert_round_trip("minimal", &spec);
}

#[test]
fn long_lists_and_long_strings_read_back() {
    // More items than any buffer's first sizes, and more bytes than the first read.
    let mut spec = full_spec();
    spec.args = (0..600).map(|i| format!("argument {i}")).collect();
    spec.args.push("x".repeat(200_000));
    spec.env = (0..300).map(|i| format!("VAR_{i}=value {i}")).collect();
    spec.additional_gids = (0..100).collect();
    spec.rlimits = (0..16)
        .map(|r| Rlimit {
            resource: r,
            soft: r as u64,
            hard: u64::MAX - r as u64,
        })
        .collect();
    spec.mounts = (0..1000)
        .map(|i| {
            if i % 3 == 0 {
                fs_mount(&format!("flint-fs{i}"), "", &format!("/m/{i}"), i, "")
            } else {
                mount(
                    &format!("/m/{i}"),
                    "tmpfs",
                    "tmpfs",
                    i,
                    &format!("size={i}k"),
                )
            }
        })
        .collect();
    spec.masked_paths = (0..100).map(|i| format!("/masked/{i}")).collect();
    spec.readonly_paths = (0..100).map(|i| format!("/ro/{i}")).collect();
    spec.sysctl = (0..100)
        .map(|i| (format!("k.{i}"), format!("v {i}")))
        .collect();
    assert_round_trip("long", &spec);
}

#[test]
fn every_truncation_of_a_spec_is_refused() {
    let spec = RunSpec {
        args: vec!["/bin/echo".into(), "hi".into()],
        env: vec!["PATH=/bin".into()],
        cwd: "/".into(),
        umask: Some(18),
        caps: Some(Caps::default()),
        root_fs: Some("flint-root".into()),
        oom_score_adj: Some(-5),
        pids_limit: Some(10),
        seccomp: Some(program()),
        mounts: vec![
            mount("/proc", "proc", "proc", 14, ""),
            fs_mount("flint-fs0", "f", "/f", 1, ""),
            file("/etc/hostname", 0o644, 0, "box\n"),
        ],
        ..RunSpec::default()
    };
    let bytes = spec.encode().expect("encode");
    for len in 0..bytes.len() {
        let out = print_spec("truncated", &bytes[..len]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{len} bytes: {stderr}");
        assert!(out.stdout.is_empty(), "{len} bytes");
        assert!(
            stderr.contains("truncated") || stderr.contains("wrong magic"),
            "{len} bytes: {stderr}"
        );
    }
}

#[test]
fn a_cut_in_a_record_or_a_string_says_where() {
    assert_refused(
        "cut-record",
        &with_minimal(&["mount", "/proc", "proc"]),
        "truncated: the mount record at byte 28 has 2 of its 5 arguments",
    );
    let mut bytes = with_minimal(&["end"]);
    bytes.pop();
    assert_refused(
        "cut-string",
        &bytes,
        "truncated: unterminated string at byte 28",
    );
}

#[test]
fn a_wrong_magic_is_refused() {
    let mut other = with_minimal(&["end"]);
    other[MAGIC.len() - 1] = b'2';
    assert_refused("magic-2", &other, "wrong magic");
    assert_refused("magic-empty", b"", "wrong magic");
    assert_refused(
        "magic-none",
        &with_minimal(&["end"])[MAGIC.len() + 1..],
        "wrong magic",
    );
    assert_refused("magic-junk", b"\x7fELF\x02\x01\x01\0\0\0", "wrong magic");
}

#[test]
fn an_unknown_keyword_is_refused_and_named() {
    assert_refused(
        "unknown",
        &with_minimal(&["frobnicate", "x", "end"]),
        "unknown keyword \"frobnicate\" at byte 28",
    );
    // Shown escaped, so that the message stays one line.
    assert_refused(
        "unknown-newline",
        &with_minimal(&["a b\nc", "end"]),
        "unknown keyword \"a\\x20b\\x0ac\"",
    );
    // Keywords are case-sensitive.
    assert_refused(
        "unknown-case",
        &with_minimal(&["END"]),
        "unknown keyword \"END\"",
    );
}

#[test]
fn a_spec_without_end_is_refused() {
    let full = full_spec().encode().expect("encode");
    let without_end = &full[..full.len() - "end\0".len()];
    assert_refused("no-end", without_end, "truncated: no end record");
}

#[test]
fn bytes_after_end_are_refused() {
    let mut bytes = with_minimal(&["end"]);
    bytes.extend_from_slice(b"arg\0x\0");
    assert_refused("after-end", &bytes, "6 bytes after the end record");
}

#[test]
fn bad_numbers_and_flags_are_refused() {
    let cases: &[(&[&str], &str)] = &[
        (&["uid", ""], "uid: \"\" is not a decimal number"),
        (&["uid", "-1"], "uid: \"-1\" is not a decimal number"),
        (&["uid", "+1"], "uid: \"+1\" is not a decimal number"),
        (&["uid", " 1"], "uid: \"\\x201\" is not a decimal number"),
        (&["gid", "12a"], "gid: \"12a\" is not a decimal number"),
        (&["gid", "0x10"], "gid: \"0x10\" is not a decimal number"),
        (&["uid", "4294967296"], "up to 4294967295"),
        (&["group", "99999999999"], "group: \"99999999999\""),
        (&["umask", "512"], "umask: 512 is more than 0777"),
        (&["terminal", "2"], "terminal: \"2\" is not 0 or 1"),
        (&["root-readonly", ""], "root-readonly: \"\" is not 0 or 1"),
        (&["no-new-privileges", "yes"], "no-new-privileges: \"yes\""),
        (
            &["rlimit", "7", "1", "18446744073709551616"],
            "rlimit hard: \"18446744073709551616\"",
        ),
        (&["caps", "1", "2", "3", "4", "x"], "caps ambient: \"x\""),
        (
            &["mount", "/p", "proc", "proc", "1.5", ""],
            "mount flags: \"1.5\"",
        ),
        (
            &["fs-mount", "t", "", "/p", "-1", ""],
            "fs-mount flags: \"-1\"",
        ),
    ];
    for (i, (record, why)) in cases.iter().enumerate() {
        let items: Vec<&str> = record.iter().copied().chain(["end"]).collect();
        assert_refused(&format!("number-{i}"), &with_minimal(&items), why);
    }
}

#[test]
fn the_largest_numbers_are_accepted() {
    let bytes = with_minimal(&[
        "uid",
        "4294967295",
        "rlimit",
        "00007",
        "18446744073709551615",
        "0",
        "umask",
        "511",
        "end",
    ]);
    let out = print_spec("largest", &bytes);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("uid 4294967295\n"), "{stdout}");
    assert!(
        stdout.contains("rlimit 7 18446744073709551615 0\n"),
        "{stdout}"
    );
    assert!(stdout.contains("umask 511\n"), "{stdout}");
}

#[test]
fn a_record_that_may_appear_once_is_refused_twice() {
    for keyword in ["cwd", "uid", "umask", "hostname", "terminal", "root-fs"] {
        let value = if keyword == "cwd" { "/" } else { "0" };
        let bytes = with_minimal(&[keyword, value, keyword, value, "end"]);
        let why = format!("more than one {keyword} record");
        assert_refused(&format!("twice-{keyword}"), &bytes, &why);
    }
}

#[test]
fn share_tags_and_subpaths_are_single_names() {
    let long = "t".repeat(37);
    let cases: &[(&[&str], &str)] = &[
        (
            &["fs-mount", "", "", "/d", "0", ""],
            "fs-mount tag \"\" is not a name",
        ),
        (
            &["fs-mount", "a/b", "", "/d", "0", ""],
            "fs-mount tag \"a/b\" is not a name",
        ),
        (
            &["fs-mount", "..", "", "/d", "0", ""],
            "fs-mount tag \"..\" is not a name",
        ),
        (
            &["fs-mount", &long, "", "/d", "0", ""],
            "is longer than 36 bytes",
        ),
        (
            &["fs-mount", "t", "../x", "/d", "0", ""],
            "fs-mount subpath \"../x\" is not a name",
        ),
        (
            &["fs-mount", "t", ".", "/d", "0", ""],
            "fs-mount subpath \".\" is not a name",
        ),
        (&["root-fs", "."], "root-fs tag \".\" is not a name"),
        (&["root-fs", ""], "root-fs tag \"\" is not a name"),
        (&["root-fs", &long], "is longer than 36 bytes"),
    ];
    for (i, (record, why)) in cases.iter().enumerate() {
        let items: Vec<&str> = record.iter().copied().chain(["end"]).collect();
        assert_refused(&format!("name-{i}"), &with_minimal(&items), why);
    }
}

#[test]
fn a_cut_fs_mount_record_says_where() {
    assert_refused(
        "cut-fs-mount",
        &with_minimal(&["fs-mount", "t", "", "/d", "0"]),
        "truncated: the fs-mount record at byte 28 has 4 of its 5 arguments",
    );
}

#[test]
fn a_spec_needs_a_program_and_an_absolute_cwd() {
    assert_refused(
        "no-arg",
        &raw(&["cwd", "/", "end"]),
        "no arg record: the process has no program to run",
    );
    assert_refused("no-cwd", &raw(&["arg", "true", "end"]), "no cwd record");
    assert_refused(
        "relative-cwd",
        &raw(&["arg", "true", "cwd", "home", "end"]),
        "cwd \"home\" is not an absolute path",
    );
}

#[test]
fn an_unreadable_spec_is_a_setup_failure() {
    let path = std::env::temp_dir().join(format!("flint-init-test-{}-absent", std::process::id()));
    let out = Command::new(INIT)
        .arg("--print-spec")
        .arg(&path)
        .output()
        .expect("run flint-init --print-spec");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "flint-init: error: read the run spec {}: No such file or directory\n",
            path.display()
        )
    );
}

#[test]
fn oom_pids_seccomp_and_file_records_are_checked() {
    let k = "x".repeat(60 << 10);
    let insn = "0006000000000000";
    let most = insn.repeat(4096);
    let too_many = insn.repeat(4097);
    let cases: &[(&[&str], &str)] = &[
        (
            &["oom-score-adj", "1001"],
            "oom-score-adj: \"1001\" is not a decimal number from -1000 to 1000",
        ),
        (&["oom-score-adj", "-1001"], "oom-score-adj: \"-1001\""),
        (&["oom-score-adj", "-0"], "oom-score-adj: \"-0\""),
        (&["oom-score-adj", "--1"], "oom-score-adj: \"--1\""),
        (&["oom-score-adj", "+1"], "oom-score-adj: \"+1\""),
        (&["oom-score-adj", "-"], "oom-score-adj: \"-\""),
        (
            &["pids-limit", "0"],
            "pids-limit: 0 would allow no process at all",
        ),
        (
            &["pids-limit", "-1"],
            "pids-limit: \"-1\" is not a decimal number",
        ),
        (&["seccomp", "x", insn], "seccomp flags: \"x\""),
        (
            &["seccomp", "0", ""],
            "seccomp: a program of 0 hex digits is not 1 to 4096 instructions of 16",
        ),
        (
            &["seccomp", "0", "000600000000000"],
            "a program of 15 hex digits",
        ),
        (
            &["seccomp", "0", &too_many],
            "a program of 65552 hex digits",
        ),
        (
            &["seccomp", "0", "0006000000000000000600000000000G"],
            "seccomp: instruction 1 is not 16 lower-case hex digits",
        ),
        (
            &["seccomp", "0", "0006000000000000000600000000000A"],
            "instruction 1 is not",
        ),
        (
            &["file", "/etc/hosts", "512", "0", "x"],
            "file mode: \"512\" is not a decimal number up to 511",
        ),
        (
            &["file", "/etc/hosts", "420", "x", "x"],
            "file flags: \"x\"",
        ),
        (
            &[
                "file",
                "/etc/hosts",
                "420",
                "0",
                &"x".repeat((64 << 10) + 1),
            ],
            "file /etc/hosts: 65537 bytes, more than 65536",
        ),
        (
            &[
                "file", "/a", "420", "0", &k, "file", "/b", "420", "0", &k, "file", "/c", "420",
                "0", &k, "file", "/d", "420", "0", &k, "file", "/e", "420", "0", &k,
            ],
            "file records: more than 262144 bytes in all",
        ),
        (
            &["oom-score-adj", "1", "oom-score-adj", "1"],
            "more than one oom-score-adj record",
        ),
        (
            &["pids-limit", "1", "pids-limit", "1"],
            "more than one pids-limit record",
        ),
        (
            &["seccomp", "0", insn, "seccomp", "0", insn],
            "more than one seccomp record",
        ),
    ];
    for (i, (record, why)) in cases.iter().enumerate() {
        let items: Vec<&str> = record.iter().copied().chain(["end"]).collect();
        assert_refused(&format!("new-{i}"), &with_minimal(&items), why);
    }
    let out = print_spec(
        "new-ok",
        &with_minimal(&[
            "oom-score-adj",
            "-1000",
            "pids-limit",
            "4194304",
            "seccomp",
            "5",
            &most,
            "file",
            "/a",
            "0",
            "0",
            &k,
            "file",
            "/b",
            "511",
            "0",
            &k,
            "end",
        ]),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("oom-score-adj -1000\n"));
    assert!(stdout.contains("pids-limit 4194304\n"));
    assert!(stdout.contains(&format!("seccomp 5 {most}\n")));
    assert!(stdout.contains("file /b 777 0 x"));
}
