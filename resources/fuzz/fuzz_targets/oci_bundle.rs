//! The OCI bundle reader on arbitrary `config.json` bytes: `Bundle::load` on a bundle
//! directory whose rootfs has an executable `/bin/sh`, a symlink to it, a symlink loop and a
//! link that tries to climb out of the root.
//!
//! When flint accepts a bundle, the run spec it writes for the guest must be one the guest
//! init accepts: the spec is encoded (`RunSpec::encode`) and parsed by the init's own C parser
//! (`src/init/spec.c`, compiled in), which must read back the same numbers of items and the
//! same values.
#![no_main]

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::PathBuf;
use std::sync::OnceLock;

use flint_fuzz::{scratch_dir, spec_c};
use flint_oci::bundle::Bundle;
use libfuzzer_sys::fuzz_target;

fn bundle_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch_dir("oci");
        let root = dir.join("rootfs");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        let sh = root.join("bin/sh");
        std::fs::write(&sh, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&sh, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(root.join("etc/passwd"), b"root:x:0:0::/:/bin/sh\n").unwrap();
        symlink("/bin/sh", root.join("usr/bin/env")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        symlink("../../../../..", root.join("up")).unwrap();
        dir
    })
}

/// `FLINT_FUZZ_VERBOSE=1`: say what happened to each input (for checking seeds).
fn verbose() -> bool {
    static VERBOSE: OnceLock<bool> = OnceLock::new();
    *VERBOSE.get_or_init(|| std::env::var_os("FLINT_FUZZ_VERBOSE").is_some())
}

fuzz_target!(|data: &[u8]| {
    let dir = bundle_dir();
    std::fs::write(dir.join("config.json"), data).unwrap();
    let bundle = match Bundle::load(dir) {
        Ok(b) => b,
        Err(e) => {
            if verbose() {
                eprintln!("oci_bundle: refused: {e}");
            }
            return;
        }
    };
    let spec = bundle.spec;
    assert!(!spec.args.is_empty() && spec.cwd.starts_with('/'));
    // A NUL in a string is refused when encoding (flint then reports it).
    let Ok(encoded) = spec.encode() else {
        return;
    };
    let Some(parsed) = spec_c::parse(&encoded, false) else {
        return; // longer than the C wrapper takes
    };
    let got = match parsed {
        Ok(summary) => summary,
        Err(why) => panic!("the guest init refuses the spec flint wrote: {why}"),
    };
    let caps = spec.caps.unwrap_or_default();
    let want = spec_c::Summary {
        n_args: spec.args.len(),
        n_env: spec.env.len(),
        n_groups: spec.additional_gids.len(),
        n_rlimits: spec.rlimits.len(),
        n_mounts: spec.mounts.len(),
        n_masked: spec.masked_paths.len(),
        n_readonly: spec.readonly_paths.len(),
        n_sysctls: spec.sysctl.len(),
        uid: spec.uid,
        gid: spec.gid,
        umask: spec.umask.unwrap_or(0),
        has_umask: spec.umask.is_some().into(),
        has_caps: spec.caps.is_some().into(),
        has_hostname: spec.hostname.is_some().into(),
        terminal: spec.terminal.into(),
        root_readonly: spec.root_readonly.into(),
        no_new_privileges: spec.no_new_privileges.into(),
        caps_bounding: caps.bounding,
        caps_ambient: caps.ambient,
    };
    assert_eq!(got, want, "what the guest init read back");
    if verbose() {
        eprintln!("oci_bundle: accepted, and the guest init reads the same spec: {got:?}");
    }
});
