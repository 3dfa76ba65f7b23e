//! Bad input gets one clear line on stderr and a non-zero exit, never a panic.

mod common;

use common::*;

fn fails_with(args: &[&str], needle: &str) {
    expect_failure(args, &run(args), needle);
}

/// As [`fails_with`], and within a few seconds: flint must not wait on the input.
fn fails_quickly_with(args: &[&str], needle: &str) {
    let t = std::time::Instant::now();
    let r = run_with_input(args, b"", std::time::Duration::from_secs(15));
    assert!(
        t.elapsed() < std::time::Duration::from_secs(10),
        "args {args:?}: took {:?}",
        t.elapsed()
    );
    expect_failure(args, &r, needle);
}

fn expect_failure(args: &[&str], r: &Run, needle: &str) {
    assert_eq!(
        r.code,
        Some(1),
        "args {args:?}: stdout {} stderr {}",
        r.stdout,
        r.stderr
    );
    assert!(
        r.stderr.contains(needle),
        "args {args:?}: want {needle:?} in {:?}",
        r.stderr
    );
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "one line: {:?}", r.stderr);
}

fn hello() -> String {
    firmware("hello").to_str().unwrap().to_string()
}

#[test]
fn missing_kernel() {
    fails_with(
        &["run", "--kernel", "/nonexistent/vmlinux"],
        "--kernel /nonexistent/vmlinux: no such file",
    );
}

#[test]
fn kernel_is_a_directory() {
    fails_with(&["run", "--kernel", "/"], "is a directory");
}

/// A scratch directory holding a FIFO and a listening socket, removed when dropped.
struct SpecialFiles(std::path::PathBuf);

impl SpecialFiles {
    fn new(name: &str) -> SpecialFiles {
        let dir = std::env::temp_dir().join(format!("flint-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let fifo = std::ffi::CString::new(dir.join("fifo").to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads the NUL-terminated path only.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        // The listener is dropped at once; its socket file stays.
        std::os::unix::net::UnixListener::bind(dir.join("socket")).unwrap();
        SpecialFiles(dir)
    }
    fn path(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_string()
    }
}

impl Drop for SpecialFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every way of naming a host input, with `path` in it, and the option the error must name.
fn input_options(path: &str) -> Vec<(Vec<String>, &'static str)> {
    let k = hello();
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        (args(&["run", "--kernel", path]), "--kernel"),
        (args(&["run", "--kernel", &k, "--initrd", path]), "--initrd"),
        (args(&["run", "--kernel", &k, "--rootfs", path]), "--rootfs"),
        (args(&["run", "--kernel", &k, "--disk", path]), "--disk"),
        (
            args(&["run", "--kernel", &k, "--disk", &format!("path={path},ro")]),
            "--disk",
        ),
    ]
}

#[test]
fn a_fifo_socket_directory_or_device_as_an_input_is_refused_at_once() {
    let special = SpecialFiles::new("inputs");
    for (path, kind) in [
        (special.path("fifo"), "is a FIFO (named pipe)"),
        (special.path("socket"), "is a socket"),
        (special.0.to_str().unwrap().to_string(), "is a directory"),
        ("/dev/null".to_string(), "is a character device"),
    ] {
        for (args, option) in input_options(&path) {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            fails_quickly_with(&args, &format!("{option} {path}: {kind}"));
        }
    }
}

#[test]
fn a_symlinked_kernel_still_boots() {
    let dir = SpecialFiles::new("symlink");
    let link = dir.0.join("vmlinuz");
    std::os::unix::fs::symlink(firmware("hello"), &link).unwrap();
    let r = run(&["run", "--kernel", link.to_str().unwrap()]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stdout.contains("flint-fw"), "{}", r.stdout);
}

#[test]
fn kernel_is_not_a_kernel() {
    let f = TempFile::new("notakernel", b"#!/bin/sh\necho I am a script\n");
    fails_with(&["run", "--kernel", f.path()], "not a kernel image");
    let empty = TempFile::new("empty", b"");
    fails_with(&["run", "--kernel", empty.path()], "not a kernel image");
}

#[test]
fn truncated_elf_is_a_load_error() {
    let f = TempFile::new("truncated-elf", b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    fails_with(&["run", "--kernel", f.path()], "cannot load the kernel");
}

#[test]
fn an_elf_segment_past_the_file_end_is_named() {
    // An ELF64 header and one PT_LOAD of 4 KiB at file offset 0x1000, in a 512-byte file.
    let mut f = vec![0u8; 512];
    f[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
    f[16] = 2; // ET_EXEC
    f[18] = 0x3e; // x86-64
    f[20] = 1;
    f[24..32].copy_from_slice(&0x10_0000u64.to_le_bytes()); // e_entry
    f[32] = 64; // e_phoff
    f[52] = 64; // e_ehsize
    f[54] = 56; // e_phentsize
    f[56] = 1; // e_phnum
    f[64] = 1; // PT_LOAD
    f[72..80].copy_from_slice(&0x1000u64.to_le_bytes()); // p_offset
    f[88..96].copy_from_slice(&0x10_0000u64.to_le_bytes()); // p_paddr
    f[96..104].copy_from_slice(&0x1000u64.to_le_bytes()); // p_filesz
    f[104..112].copy_from_slice(&0x1000u64.to_le_bytes()); // p_memsz
    let k = TempFile::new("segment-past-eof", &f);
    fails_with(
        &["run", "--kernel", k.path()],
        "the kernel is malformed: ELF segment 0: 4096 bytes at file offset 0x1000 go past the \
         file's end (512 bytes)",
    );
}

#[test]
fn missing_initrd() {
    fails_with(
        &[
            "run",
            "--kernel",
            &hello(),
            "--initrd",
            "/nonexistent/initrd",
        ],
        "--initrd /nonexistent/initrd: no such file",
    );
}

#[test]
fn zero_and_too_many_cpus() {
    fails_with(
        &["run", "--kernel", &hello(), "--cpus", "0"],
        "--cpus must be at least 1",
    );
    fails_with(
        &["run", "--kernel", &hello(), "--cpus", "100000"],
        "more than flint can give a VM",
    );
}

#[test]
fn zero_and_too_much_memory() {
    fails_with(
        &["run", "--kernel", &hello(), "--memory", "0"],
        "--memory must be at least 1 MiB",
    );
    fails_with(
        &["run", "--kernel", &hello(), "--memory", "100000000"],
        "more than this host's",
    );
}

#[test]
fn command_line_too_long() {
    let long = "x".repeat(3000);
    fails_with(
        &["run", "--kernel", &hello(), "--cmdline", &long],
        "at most 2047",
    );
}

#[test]
fn initrd_that_does_not_fit() {
    let big = TempFile::new("big-initrd", &vec![0u8; 3 << 20]);
    fails_with(
        &[
            "run",
            "--kernel",
            &hello(),
            "--memory",
            "2",
            "--initrd",
            big.path(),
        ],
        "does not fit",
    );
}

#[test]
fn unparsable_numbers_are_clap_errors() {
    let r = run(&["run", "--kernel", &hello(), "--cpus", "two"]);
    assert_eq!(r.code, Some(2));
    assert!(r.stderr.contains("invalid value 'two'"), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "one line: {}", r.stderr);
    let r = run(&["run"]);
    assert_eq!(r.code, Some(2));
    assert!(
        r.stderr.contains("--kernel"),
        "names what is missing: {}",
        r.stderr
    );
}

#[test]
fn linux_kernel_on_a_kvm_that_cannot_boot_it() {
    // The smallest thing flint recognises as a Linux bzImage.
    let mut bz = vec![0u8; 0x1000];
    bz[0x202..0x206].copy_from_slice(b"HdrS");
    let f = TempFile::new("fake-bzimage", &bz);
    if kvm_is_pvm() {
        fails_with(
            &["run", "--kernel", f.path()],
            "this /dev/kvm cannot boot a Linux kernel",
        );
        let r = run(&["run", "--kernel", f.path()]);
        assert!(
            r.stderr.contains("resources/lab/run"),
            "points to the lab: {}",
            r.stderr
        );
    } else if have_kvm() {
        // A real KVM gets past the check and rejects the fake image itself.
        fails_with(&["run", "--kernel", f.path()], "cannot load the kernel");
    } else {
        skip(
            "linux_kernel_on_a_kvm_that_cannot_boot_it",
            "no usable /dev/kvm",
        );
    }
}

/// Creates TAP `name` with `ip tuntap add` and `extra` arguments; on failure, the reason.
fn add_tap(name: &str, extra: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new("ip")
        .args(["tuntap", "add", "dev", name, "mode", "tap"])
        .args(extra)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "cannot create a TAP here (not root?): ip tuntap add: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[test]
fn help_documents_every_option() {
    let r = run(&["run", "--help"]);
    assert_eq!(r.code, Some(0));
    for opt in [
        "--kernel",
        "--initrd",
        "--cmdline",
        "--append",
        "--cpus",
        "--memory",
        "--boot-timer",
        "--console-limit",
    ] {
        assert!(r.stdout.contains(opt), "{opt} missing from help");
    }
    let r = run(&["--help"]);
    assert_eq!(r.code, Some(0));
    assert!(r.stdout.contains("run"));
}

#[test]
fn net_errors() {
    fails_with(
        &["run", "--kernel", &hello(), "--net", "tap=flintnosuch0"],
        "there is no network interface 'flintnosuch0'",
    );
    fails_with(
        &["run", "--kernel", &hello(), "--net", "tap=lo"],
        "is not a TAP device",
    );
    fails_with(
        &[
            "run",
            "--kernel",
            &hello(),
            "--net",
            "tap=x",
            "--net",
            "tap=x",
        ],
        "given to more than one --net",
    );
    let r = run(&[
        "run",
        "--kernel",
        &hello(),
        "--net",
        "tap=t,mac=52:54:00:12:34",
    ]);
    assert_eq!(r.code, Some(2));
    assert!(r.stderr.contains("not a MAC address"), "{}", r.stderr);
}

#[test]
fn attaches_to_a_real_tap() {
    // Needs CAP_NET_ADMIN to create one (CI and the lab run as root).
    let name = format!("flt{}", std::process::id() % 100_000);
    if let Err(why) = add_tap(&name, &[]) {
        skip("attaches_to_a_real_tap", &why);
        return;
    }
    let r = run(&["run", "--kernel", &hello(), "--net", &format!("tap={name}")]);
    let _ = std::process::Command::new("ip")
        .args(["tuntap", "del", "dev", &name, "mode", "tap"])
        .status();
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stdout.contains("flint-fw: bye"));
    // The device is announced on the guest's command line after the boot timer's window.
    assert!(
        r.stdout.contains("virtio_mmio.device=4K@0xd0001000:5"),
        "{}",
        r.stdout
    );
}

#[test]
fn tap_owned_by_someone_else_without_cap_net_admin() {
    let name = format!("flo{}", std::process::id() % 100_000);
    let ip = |args: &[&str]| {
        std::process::Command::new("ip")
            .args(args)
            .status()
            .is_ok_and(|s| s.success())
    };
    if let Err(why) = add_tap(&name, &["user", "nobody"]) {
        skip("tap_owned_by_someone_else_without_cap_net_admin", &why);
        return;
    }
    // Drop CAP_NET_ADMIN for flint: then only the TAP's owner may attach.
    let out = std::process::Command::new("setpriv")
        .args(["--inh-caps=-net_admin", "--bounding-set=-net_admin"])
        .arg(env!("CARGO_BIN_EXE_flint"))
        .args(["run", "--kernel", &hello(), "--net", &format!("tap={name}")])
        .stdin(std::process::Stdio::null())
        .output();
    ip(&["tuntap", "del", "dev", &name, "mode", "tap"]);
    let r = Run::from(out.expect("setpriv (util-linux) runs"));
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("permission denied"), "{}", r.stderr);
    assert!(r.stderr.contains("CAP_NET_ADMIN"), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1);
    assert!(r.stdout.is_empty(), "no guest ran: {}", r.stdout);
}

#[test]
fn unreadable_kernel_and_initrd() {
    // Root reads any file; without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH a mode-000 file is
    // unreadable to it too.
    use std::os::unix::fs::PermissionsExt;
    let f = TempFile::new("unreadable", &std::fs::read(firmware("hello")).unwrap());
    std::fs::set_permissions(&f.0, std::fs::Permissions::from_mode(0o000)).unwrap();
    let without_dac = |args: &[&str]| -> Run {
        std::process::Command::new("setpriv")
            .args([
                "--inh-caps=-dac_override,-dac_read_search",
                "--bounding-set=-dac_override,-dac_read_search",
            ])
            .arg(env!("CARGO_BIN_EXE_flint"))
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("setpriv (util-linux) runs")
            .into()
    };
    for (args, what) in [
        (vec!["run", "--kernel", f.path()], "--kernel"),
        (
            vec!["run", "--kernel", &hello(), "--initrd", f.path()],
            "--initrd",
        ),
    ] {
        let r = without_dac(&args);
        assert_eq!(r.code, Some(1), "{}", r.stderr);
        assert!(
            r.stderr
                .contains(&format!("{what} {}: permission denied", f.path())),
            "{}",
            r.stderr
        );
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    }
}

#[test]
fn bad_bundles() {
    let k = hello();
    let bundle_fails = |b: &TestBundle, needle: &str| {
        let mut cmd = b.flint();
        cmd.args(["run", "--oci-bundle", b.path(), "--kernel", &k]);
        let r = run_command(cmd, b"", std::time::Duration::from_secs(60));
        assert_eq!(r.code, Some(1), "{}", r.stderr);
        let want = format!("flint: error: --oci-bundle {}: {needle}", b.path());
        assert!(
            r.stderr.starts_with(&want),
            "want {want:?} in {:?}",
            r.stderr
        );
        assert_eq!(r.stderr.lines().count(), 1, "one line: {:?}", r.stderr);
        assert!(!b.cache().exists(), "no image is built for a bad bundle");
    };
    let b = TestBundle::new("no-config", "{}");
    std::fs::remove_file(b.dir.join("config.json")).unwrap();
    bundle_fails(&b, "config.json: no such file");
    bundle_fails(
        &TestBundle::new("bad-json", r#"{"ociVersion": "1.0.2", "process": "#),
        "config.json is not valid: EOF while parsing",
    );
    bundle_fails(
        &TestBundle::with_args("no-exe", r#"["nosuch", "x"]"#),
        "process.args[0]: 'nosuch' is not found in the rootfs (searched the bundle's PATH: /bin)",
    );
    bundle_fails(
        &TestBundle::new(
            "hooks",
            r#"{"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "process": {"args": ["sh"], "cwd": "/"},
                "hooks": {"prestart": [{"path": "/usr/bin/true"}]}}"#,
        ),
        "hooks is not supported by flint",
    );
    bundle_fails(
        &TestBundle::new(
            "unknown",
            r#"{"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "process": {"args": ["sh"], "cwd": "/", "priority": 3}}"#,
        ),
        "config.json is not valid: unknown field `priority`",
    );
    fails_with(
        &["run", "--oci-bundle", "/nonexistent/bundle", "--kernel", &k],
        "--oci-bundle /nonexistent/bundle: no such file",
    );
}

#[test]
fn bundle_option_conflicts_and_kernel() {
    let r = run(&[
        "run",
        "--oci-bundle",
        "/tmp",
        "--initrd",
        "/x",
        "--kernel",
        "/k",
    ]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("--initrd"), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    // Without --kernel, flint looks for its kernel; where there is none, it says where it looked.
    if let Some(k) = flint_oci::DEFAULT_KERNELS
        .iter()
        .find(|k| std::path::Path::new(k).exists())
    {
        skip(
            "bundle_option_conflicts_and_kernel",
            &format!("{k} exists: the error for a missing guest kernel is not checked"),
        );
    } else {
        let b = TestBundle::with_args("nokernel", r#"["sh"]"#);
        let mut cmd = b.flint();
        cmd.env_remove("FLINT_KERNEL")
            .args(["run", "--oci-bundle", b.path()]);
        let r = run_command(cmd, b"", std::time::Duration::from_secs(60));
        assert_eq!(r.code, Some(1));
        assert!(
            r.stderr
                .contains("--oci-bundle needs flint's guest kernel: pass --kernel PATH"),
            "{}",
            r.stderr
        );
    }
    let r = run(&["run", "--memory", "64"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("--kernel <PATH>"), "{}", r.stderr);
    // --cold is about bundles only.
    let r = run(&["run", "--kernel", "/k", "--cold"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("--oci-bundle"), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
}

#[test]
fn no_home_no_image_cache() {
    // Only a user other than root has a cache under its home: this runs flint as nobody, which
    // needs root.
    // SAFETY: geteuid has no failure mode.
    if unsafe { libc::geteuid() } != 0 {
        skip(
            "no_home_no_image_cache",
            "running flint as another user needs root",
        );
        return;
    }
    use std::os::unix::process::CommandExt;
    let b = TestBundle::with_args("no-home", r#"["/bin/sh"]"#);
    let copies = SharedCopies::new(
        "as-nobody",
        &[
            std::path::Path::new(env!("CARGO_BIN_EXE_flint")),
            &firmware("hello"),
        ],
    );
    let mut cmd = std::process::Command::new(copies.path("flint"));
    cmd.args(["run", "--oci-bundle", b.path(), "--kernel"])
        .arg(copies.path("hello.elf"))
        .env_clear()
        .uid(65534)
        .gid(65534);
    let r = run_command(cmd, b"", std::time::Duration::from_secs(60));
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert_eq!(
        r.stderr,
        "flint: error: --oci-bundle needs an image cache of your own, and neither XDG_CACHE_HOME nor HOME is set: set FLINT_IMAGE_CACHE to a directory\n"
    );
}
