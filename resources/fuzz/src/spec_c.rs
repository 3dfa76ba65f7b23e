//! The guest init's run-spec parser (`crates/flint-oci/src/init/spec.c`), compiled in by
//! build.rs through `c/spec_fuzz.c`.

use std::ffi::{c_char, c_int};

/// What the C parser read, to compare with what the Rust side encoded.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub n_args: usize,
    pub n_env: usize,
    pub n_groups: usize,
    pub n_rlimits: usize,
    pub n_mounts: usize,
    pub n_masked: usize,
    pub n_readonly: usize,
    pub n_sysctls: usize,
    pub uid: u32,
    pub gid: u32,
    pub umask: u32,
    pub has_umask: c_int,
    pub has_caps: c_int,
    pub has_hostname: c_int,
    pub terminal: c_int,
    pub root_readonly: c_int,
    pub no_new_privileges: c_int,
    pub caps_bounding: u64,
    pub caps_ambient: u64,
}

extern "C" {
    fn flint_fuzz_spec_parse(
        data: *const u8,
        len: usize,
        print: c_int,
        out: *mut Summary,
        why: *mut c_char,
        why_size: usize,
    ) -> c_int;
}

/// The init parser's verdict on `data`: what it read, or why it refused it. `print` also
/// prints an accepted spec to stdout as `flint-init --print-spec` does. None if the input is
/// longer than the wrapper takes (1 MiB).
pub fn parse(data: &[u8], print: bool) -> Option<Result<Summary, String>> {
    let mut out = Summary::default();
    let mut why = [0u8; 600];
    // SAFETY: the C side reads `len` bytes from `data` (a live slice), writes one Summary to
    // `out` and at most `why.len()` bytes (NUL included) to `why`; it keeps no pointer.
    let rc = unsafe {
        flint_fuzz_spec_parse(
            data.as_ptr(),
            data.len(),
            c_int::from(print),
            &mut out,
            why.as_mut_ptr().cast(),
            why.len(),
        )
    };
    match rc {
        0 => Some(Ok(out)),
        1 => {
            let end = why.iter().position(|&b| b == 0).unwrap_or(why.len());
            Some(Err(String::from_utf8_lossy(&why[..end]).into_owned()))
        }
        _ => None,
    }
}
