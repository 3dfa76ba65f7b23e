//! Generates the x86_64 syscall number → name table that the seccomp SIGSYS handler uses to
//! name a blocked syscall, from the kernel's UAPI header (linux-libc-dev, which libc6-dev pulls
//! in). Without the header the table is empty and the handler prints the number alone.

use std::fmt::Write;

const HEADER: &str = "/usr/include/x86_64-linux-gnu/asm/unistd_64.h";

fn main() {
    println!("cargo:rerun-if-changed={HEADER}");
    let text = std::fs::read_to_string(HEADER).unwrap_or_default();
    let mut names: Vec<(u32, String)> = text
        .lines()
        .filter_map(|l| {
            let mut words = l.strip_prefix("#define __NR_")?.split_whitespace();
            let name = words.next()?;
            let nr = words.next()?.parse().ok()?;
            Some((nr, name.to_string()))
        })
        .collect();
    names.sort();
    let mut out = String::from("/// (number, name) of every x86_64 syscall, by number.\n");
    out.push_str("pub static SYSCALL_NAMES: &[(u32, &str)] = &[\n");
    for (nr, name) in names {
        let _ = writeln!(out, "    ({nr}, {name:?}),");
    }
    out.push_str("];\n");
    let dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    std::fs::write(format!("{dir}/syscall_names.rs"), out).expect("write syscall_names.rs");
}
