//! Builds the firmware test guests in `firmware/` with the machine's C toolchain (no extra Rust
//! target can be installed here): each `*.S` becomes `$OUT_DIR/firmware/NAME.elf`, and tests find
//! the directory through the `FLINT_FIRMWARE_DIR` variable set at compile time.

use std::path::Path;
use std::process::Command;

fn main() {
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let dir = Path::new(&out).join("firmware");
    std::fs::create_dir_all(&dir).expect("create the firmware output directory");
    let cc = std::env::var("CC").unwrap_or_else(|_| "gcc".into());
    println!("cargo:rerun-if-changed=firmware");
    println!("cargo:rerun-if-env-changed=CC");

    let mut sources: Vec<_> = std::fs::read_dir("firmware")
        .expect("firmware/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "S"))
        .collect();
    sources.sort();
    for src in sources {
        let name = src
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("utf-8 name");
        let elf = dir.join(format!("{name}.elf"));
        let status = Command::new(&cc)
            .args(["-nostdlib", "-static", "-no-pie", "-Ifirmware"])
            .args(["-Wl,-T,firmware/firmware.ld", "-Wl,--build-id=none"])
            .arg("-o")
            .arg(&elf)
            .arg(&src)
            .status()
            .unwrap_or_else(|e| panic!("cannot run {cc} to build the firmware: {e}"));
        assert!(
            status.success(),
            "building firmware {} failed",
            src.display()
        );
    }
    println!("cargo:rustc-env=FLINT_FIRMWARE_DIR={}", dir.display());
}
