//! Builds, with the machine's C toolchain (no extra Rust target can be installed here), the
//! firmware test guests in `firmware/`, each into `$OUT_DIR/firmware/NAME.elf`; tests find the
//! directory through the `FLINT_FIRMWARE_DIR` variable set at compile time.
//!   - `NAME.S`: an assembly program (it includes `lib64.inc` for its helpers).
//!   - `NAME.c`: a C program, linked with the runtime: `crt64.S` (the entry, which calls
//!     `fw_main(boot_params)`) and `fwlib.c` (serial, port and MMIO access, paging, …).
//!
//!   The guests run on KVMs that emulate guest kernel code and may not do SSE or x87, so C is
//!   compiled for general-purpose registers only.

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "crates/flint-oci/build/cc.rs"]
mod cc;
use cc::run;

/// Files in `firmware/` that are parts of other programs, not programs of their own.
const C_RUNTIME: [&str; 2] = ["crt64.S", "fwlib.c"];

/// Flags for both kinds: a static, non-PIE executable at 1 MiB, laid out by our linker script.
const LINK_FLAGS: &[&str] = &[
    "-nostdlib",
    "-static",
    "-no-pie",
    "-Ifirmware",
    "-Wl,-T,firmware/firmware.ld",
    "-Wl,--build-id=none",
];

/// Flags for C: freestanding, integer instructions only, no red zone (no interrupt handlers
/// today, but an interrupt on the guest's stack must not clobber locals), small code model
/// (everything is linked below 2 GiB).
const C_FLAGS: &[&str] = &[
    "-std=gnu11",
    "-O2",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-ffreestanding",
    "-fno-builtin",
    "-fno-pic",
    "-mcmodel=small",
    "-mgeneral-regs-only",
    "-mno-red-zone",
    "-mno-sse",
    "-mno-mmx",
    "-mno-80387",
    "-fno-stack-protector",
    "-fno-asynchronous-unwind-tables",
    "-fno-unwind-tables",
    // Else gcc may turn memset/memcpy's own loops into calls to memset/memcpy.
    "-fno-tree-loop-distribute-patterns",
];

fn main() {
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let cc = std::env::var("CC").unwrap_or_else(|_| "gcc".into());
    println!("cargo:rerun-if-env-changed=CC");
    build_firmware(&cc, Path::new(&out));
}

/// The firmware test guests, into `OUT/firmware/`.
fn build_firmware(cc: &str, out: &Path) {
    let dir = out.join("firmware");
    std::fs::create_dir_all(&dir).expect("create the firmware output directory");
    println!("cargo:rerun-if-changed=firmware");

    for src in programs() {
        let name = src
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("utf-8 name");
        let elf = dir.join(format!("{name}.elf"));
        let mut cmd = Command::new(cc);
        cmd.args(LINK_FLAGS).arg("-o").arg(&elf);
        if src.extension().is_some_and(|e| e == "c") {
            cmd.args(C_FLAGS);
            cmd.args(C_RUNTIME.iter().map(|f| Path::new("firmware").join(f)));
        }
        cmd.arg(&src);
        run(cmd, &format!("firmware {}", src.display()));
    }
    println!("cargo:rustc-env=FLINT_FIRMWARE_DIR={}", dir.display());
}

/// The programs in `firmware/`: every `*.S` and `*.c` but the C runtime's own files.
fn programs() -> Vec<PathBuf> {
    let mut sources: Vec<_> = std::fs::read_dir("firmware")
        .expect("firmware/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "S" || e == "c"))
        .filter(|p| {
            let file = p.file_name().and_then(|f| f.to_str());
            !C_RUNTIME.iter().any(|r| file == Some(*r))
        })
        .collect();
    sources.sort();
    sources
}
