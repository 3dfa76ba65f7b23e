//! Compiles the guest init's run-spec parser (`crates/flint-oci/src/init/spec.c`, untouched)
//! into the fuzz targets, through `c/spec_fuzz.c`, which includes it to reach its parser.
//!
//! Under `cargo fuzz` (`--cfg fuzzing`) the C code must carry libFuzzer's coverage
//! instrumentation too, or the fuzzer would be blind inside it: that takes clang
//! (`-fsanitize=fuzzer-no-link`; gcc has no inline-8bit-counters). `$FLINT_FUZZ_CC` names the
//! compiler; else the first of clang, clang-14..clang-19 on PATH. Without clang the build fails
//! under `cargo fuzz`, and uses the default C compiler otherwise (clippy, plain builds).

use std::path::Path;
use std::process::Command;

const INIT_DIR: &str = "../../crates/flint-oci/src/init";

fn works(cc: &str) -> bool {
    Command::new(cc)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn clang() -> Option<String> {
    if let Ok(cc) = std::env::var("FLINT_FUZZ_CC") {
        return Some(cc);
    }
    [
        "clang", "clang-19", "clang-18", "clang-17", "clang-16", "clang-15", "clang-14",
    ]
    .into_iter()
    .find(|cc| works(cc))
    .map(str::to_string)
}

fn main() {
    println!("cargo:rerun-if-changed=c/spec_fuzz.c");
    println!("cargo:rerun-if-changed={INIT_DIR}/spec.c");
    println!("cargo:rerun-if-changed={INIT_DIR}/flint-init.h");
    println!("cargo:rerun-if-env-changed=FLINT_FUZZ_CC");
    let fuzzing = std::env::var_os("CARGO_CFG_FUZZING").is_some();
    let mut build = cc::Build::new();
    build
        .file("c/spec_fuzz.c")
        .include(Path::new(INIT_DIR))
        .flag("-std=gnu11")
        .flag("-g")
        .warnings(true)
        .extra_warnings(true);
    match clang() {
        Some(cc) => {
            build.compiler(cc);
            if fuzzing {
                build.flag("-fsanitize=fuzzer-no-link");
            }
        }
        None if fuzzing => panic!(
            "the fuzz targets need clang for the C parser's coverage (apt-get install clang-14, \
             or set FLINT_FUZZ_CC)"
        ),
        None => {}
    }
    build.compile("flint_spec_fuzz");
}
