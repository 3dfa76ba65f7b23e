//! The test helpers themselves (tests/common): the watchdog that ends a stuck child, the skip
//! and rerun records, and the lab's hang handling (`logged` run by a local shell, and the
//! parsing of its output). No VM and no lab: these run in seconds anywhere.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A scratch directory under cargo's target tmp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("harness-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.0.join(file)).unwrap_or_default()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_stuck_child_is_killed_at_its_deadline() {
    let start = Instant::now();
    let mut cmd = Command::new("sleep");
    cmd.arg("30");
    let r = run_command(cmd, b"", Duration::from_millis(300));
    assert_eq!(r.code, None, "killed by a signal");
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_child_that_ends_is_waited_for_not_killed() {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "cat; echo to-stderr >&2; exit 7"]);
    let r = run_command(cmd, b"from stdin\n", Duration::from_secs(60));
    assert_eq!(r.code, Some(7));
    assert_eq!(r.stdout, "from stdin\n");
    assert_eq!(r.stderr, "to-stderr\n");
}

#[test]
fn full_pipes_do_not_block() {
    // More than a pipe holds, each way, and the child never reads its input.
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "head -c 1000000 /dev/zero; head -c 1000000 /dev/zero >&2",
    ]);
    let r = run_command(cmd, &vec![b'x'; 1_000_000], Duration::from_secs(60));
    assert_eq!(r.code, Some(0));
    assert_eq!((r.stdout.len(), r.stderr.len()), (1_000_000, 1_000_000));
}

#[test]
fn skips_are_shown_and_logged() {
    let dir = Scratch::new("skips");
    let report = Report::quiet_at(&dir.0);
    let line = report.skip("some_test", "no /dev/kvm");
    assert_eq!(line, "flint-test: SKIPPED harness::some_test: no /dev/kvm");
    report.skip("other_test", "no ip");
    assert_eq!(
        dir.read(SKIPS_LOG),
        "flint-test: SKIPPED harness::some_test: no /dev/kvm\n\
         flint-test: SKIPPED harness::other_test: no ip\n"
    );
}
