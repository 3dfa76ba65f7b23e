//! Builds flint's guest init for OCI bundles from `src/init/*.c` into `$OUT_DIR/flint-init`,
//! with the machine's C toolchain; the crate embeds it from the path in `FLINT_INIT_BIN`.

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "build/cc.rs"]
mod cc;
use cc::run;

fn main() {
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let cc = std::env::var("CC").unwrap_or_else(|_| "gcc".into());
    println!("cargo:rerun-if-env-changed=CC");
    build_oci_init(&cc, Path::new(&out));
}

/// Where the guest init's sources are: every `*.c` there is part of it.
const INIT_DIR: &str = "src/init";

/// Flags for the guest init, an ordinary Linux program: static (the initramfs has no
/// libraries), small (it is copied into every guest's initramfs) and stripped. No `-march`:
/// the guest's CPU may be an emulated one with fewer features than the build machine's.
const INIT_FLAGS: &[&str] = &[
    "-static",
    "-Os",
    "-s",
    "-std=gnu11",
    "-Wall",
    "-Wextra",
    "-Werror",
];

/// flint's guest init for OCI bundles, into `OUT/flint-init`.
fn build_oci_init(cc: &str, out: &Path) {
    println!("cargo:rerun-if-changed={INIT_DIR}");
    let mut sources: Vec<PathBuf> = std::fs::read_dir(INIT_DIR)
        .expect("src/init/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "c"))
        .collect();
    sources.sort();
    let bin = out.join("flint-init");
    let mut cmd = Command::new(cc);
    cmd.args(INIT_FLAGS).arg("-o").arg(&bin).args(&sources);
    run(cmd, "the guest init");
    println!("cargo:rustc-env=FLINT_INIT_BIN={}", bin.display());
    // Its hash, for the warm snapshot's key: computed here, not on every run.
    use sha2::Digest;
    let bytes = std::fs::read(&bin).expect("the init was just built");
    let hash: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!("cargo:rustc-env=FLINT_INIT_SHA256={hash}");
}
