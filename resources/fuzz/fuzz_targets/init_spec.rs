//! The guest init's run-spec parser (`crates/flint-oci/src/init/spec.c`, C) on arbitrary
//! bytes, the input ending right before an inaccessible page (see `c/spec_fuzz.c`); a spec it
//! accepts is also printed as `flint-init --print-spec` does (to /dev/null), which walks every
//! string and list it built.
#![no_main]

use std::os::fd::AsRawFd;
use std::sync::Once;

use flint_fuzz::spec_c;
use libfuzzer_sys::fuzz_target;

fn quiet_stdout() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let null = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .unwrap();
        // SAFETY: dup2 on two descriptors we hold; fd 1 becomes /dev/null (libFuzzer reports
        // on stderr).
        assert!(unsafe { libc::dup2(null.as_raw_fd(), 1) } == 1);
    });
}

fuzz_target!(|data: &[u8]| {
    quiet_stdout();
    if let Some(Ok(s)) = spec_c::parse(data, true) {
        assert!(s.n_args >= 1, "an accepted spec has a program");
        assert!(s.umask <= 0o777 || s.has_umask == 0);
    }
});
