//! Helpers shared by the integration tests: run the real `flint` binary and inspect what it did.
#![allow(dead_code)] // each test crate uses a different subset

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

pub fn flint() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flint"))
}

/// A firmware guest built by build.rs from `firmware/NAME.S`.
pub fn firmware(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("FLINT_FIRMWARE_DIR")).join(format!("{name}.elf"));
    assert!(p.exists(), "firmware {} was not built", p.display());
    p
}

pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Runs flint with `args` and `input` on stdin; kills it after `timeout`.
pub fn run_with_input(args: &[&str], input: &[u8], timeout: Duration) -> Run {
    let mut child = flint()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn flint");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    drop(stdin);
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(timeout);
        // SAFETY: sending a signal to a pid; harmless if it already exited.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    });
    let out = child.wait_with_output().expect("wait for flint");
    drop(watchdog);
    out.into()
}

pub fn run(args: &[&str]) -> Run {
    run_with_input(args, b"", Duration::from_secs(60))
}

/// True where `/dev/kvm` is the nested PVM hypervisor (Linux cannot boot on it).
pub fn kvm_is_pvm() -> bool {
    std::path::Path::new("/sys/module/kvm_pvm").exists()
}

pub fn have_kvm() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// A scratch file with `bytes`, removed when dropped.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(name: &str, bytes: &[u8]) -> TempFile {
        let p = std::env::temp_dir().join(format!("flint-test-{}-{name}", std::process::id()));
        std::fs::write(&p, bytes).unwrap();
        TempFile(p)
    }
    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The boot time flint printed for `--boot-timer` ("flint: guest booted in N us"), if any.
pub fn boot_time_us(output: &str) -> Option<u64> {
    output.lines().find_map(|l| {
        l.strip_prefix("flint: guest booted in ")?
            .strip_suffix(" us")?
            .parse()
            .ok()
    })
}
