//! The test helpers themselves (tests/common): the watchdog that ends a stuck child, the skip
//! and rerun records, and the lab's hang handling (`logged` run by a local shell, and the
//! parsing of its output). No VM and no lab: these run in seconds anywhere.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

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
