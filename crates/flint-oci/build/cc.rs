//! Shared by the workspace's build scripts (the root's firmware, flint-oci's guest init):
//! running the C compiler with a useful failure.

use std::process::Command;

/// Runs a compiler command and fails the build, with its messages, if it fails.
pub fn run(mut cmd: Command, what: &str) {
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {:?} to build {what}: {e}", cmd.get_program()));
    assert!(
        output.status.success(),
        "building {what} failed: {:?}\n{}",
        cmd,
        String::from_utf8_lossy(&output.stderr)
    );
}
