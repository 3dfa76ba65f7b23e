//! `linux.seccomp`: the bundle's seccomp profile compiled on the host into a classic BPF
//! program for x86_64, which the guest init installs before it executes the workload.
//!
//! The semantics are libseccomp's (what runc and crun apply) for the profiles people use:
//!
//! - **Architectures.** The guest is x86_64 and its kernel has neither the 32-bit nor the x32
//!   system call ABI, so only x86_64 numbers are compiled. `SCMP_ARCH_X86` and `SCMP_ARCH_X32`
//!   (which podman and containerd list beside x86_64) and other known architectures are
//!   accepted and have nothing to filter; an unknown name is refused. The program's first
//!   check kills the process (`SECCOMP_RET_KILL_PROCESS`) for a call from another architecture
//!   or with x32's number bit, as libseccomp's bad-architecture action does.
//! - **Names.** Looked up in the x86_64 table; a name unknown there (`_llseek`, `chown32`, an
//!   ARM call) is skipped, as libseccomp does.
//! - **Actions.** `SCMP_ACT_ALLOW`, `ERRNO` (`errnoRet`, default `EPERM`; the default action
//!   takes `defaultErrnoRet`), `KILL`/`KILL_THREAD`, `KILL_PROCESS`, `TRAP` (SIGSYS), `LOG`
//!   (allowed and logged) and `TRACE` (to a tracer in the guest, with `errnoRet` as its message;
//!   without one the call fails with ENOSYS, as the kernel does). `SCMP_ACT_NOTIFY` needs an
//!   agent on the host (`listenerPath`) and is refused.
//! - **Arguments.** `args[]` comparisons of one rule must all hold (`SCMP_CMP_NE`, `LT`, `LE`,
//!   `EQ`, `GE`, `GT`, `MASKED_EQ`: `arg & value == valueTwo`), on the whole 64-bit argument:
//!   the high halves are compared first, the low halves when those are equal.
//! - **Several rules for one call.** A rule whose action is the default action is dropped, as
//!   runc drops it before libseccomp sees it. A rule without arguments decides the call (the
//!   first such rule, if several), and rules with arguments for that call then have no effect:
//!   libseccomp, too, lets a rule without arguments supersede narrower ones. Otherwise the
//!   rules with arguments are tried in the profile's order and the first whose comparisons all
//!   hold decides; none: the default action. Where rules with arguments overlap with different
//!   actions, libseccomp's outcome depends on its rule tree; the profiles of podman, containerd
//!   and Docker have no such overlap.
//! - **Flags.** `SECCOMP_FILTER_FLAG_LOG` and `SECCOMP_FILTER_FLAG_SPEC_ALLOW` are passed to
//!   `seccomp(2)`; `SECCOMP_FILTER_FLAG_TSYNC` too (the init has one thread: it changes
//!   nothing); `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV` only concerns a notify listener and is
//!   dropped.

mod syscalls;

use serde::Deserialize;

use crate::bundle::{invalid, unsupported, BundleError};

/// `linux.seccomp`, as runtime-spec 1.x defines it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Profile {
    default_action: String,
    default_errno_ret: Option<u32>,
    architectures: Option<Vec<String>>,
    flags: Option<Vec<String>>,
    listener_path: Option<String>,
    listener_metadata: Option<String>,
    syscalls: Option<Vec<Rule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Rule {
    names: Option<Vec<String>>,
    action: String,
    errno_ret: Option<u32>,
    args: Option<Vec<Arg>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Arg {
    index: u32,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: String,
}

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// A compiled profile: what the init passes to `seccomp(SECCOMP_SET_MODE_FILTER, flags, ...)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeccompFilter {
    /// `SECCOMP_FILTER_FLAG_*` bits.
    pub flags: u32,
    pub program: Vec<Insn>,
}

/// The kernel's limit on a classic BPF program (`BPF_MAXINSNS`).
pub const MAX_INSNS: usize = 4096;

// Return values (linux/seccomp.h).
pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
pub const RET_KILL_THREAD: u32 = 0;
pub const RET_TRAP: u32 = 0x0003_0000;
pub const RET_ERRNO: u32 = 0x0005_0000;
pub const RET_TRACE: u32 = 0x7ff0_0000;
pub const RET_LOG: u32 = 0x7ffc_0000;
pub const RET_ALLOW: u32 = 0x7fff_0000;

/// `AUDIT_ARCH_X86_64`.
pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// `__X32_SYSCALL_BIT`: x32 calls have it in their number.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// The largest errno the kernel passes on (`MAX_ERRNO`).
const MAX_ERRNO: u32 = 4095;
const EPERM: u32 = 1;

// Classic BPF opcodes (linux/filter.h).
pub const LD_W_ABS: u16 = 0x20;
pub const ALU_AND_K: u16 = 0x54;
pub const JMP_JA: u16 = 0x05;
pub const JMP_JEQ_K: u16 = 0x15;
pub const JMP_JGT_K: u16 = 0x25;
pub const JMP_JGE_K: u16 = 0x35;
pub const RET_K: u16 = 0x06;

// Offsets in `struct seccomp_data`.
const NR_OFFSET: u32 = 0;
const ARCH_OFFSET: u32 = 4;
const ARGS_OFFSET: u32 = 16;

/// libseccomp's architecture names; only x86_64 has calls in a flint guest.
const ARCHITECTURES: &[&str] = &[
    "SCMP_ARCH_NATIVE",
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_PARISC",
    "SCMP_ARCH_PARISC64",
    "SCMP_ARCH_RISCV64",
    "SCMP_ARCH_LOONGARCH64",
    "SCMP_ARCH_M68K",
    "SCMP_ARCH_SH",
    "SCMP_ARCH_SHEB",
];

/// The x86_64 number of the system call `name`, if it has one.
pub fn syscall_number(name: &str) -> Option<u32> {
    syscalls::SYSCALLS
        .binary_search_by(|(n, _)| (*n).cmp(name))
        .ok()
        .map(|i| syscalls::SYSCALLS[i].1)
}

/// The return value for `action`; `errno` is the `errnoRet` given, `default_errno` the one
/// without it.
fn action_value(field: &str, action: &str, errno: Option<u32>) -> Result<u32, BundleError> {
    let with_errno = |base: u32| {
        let e = errno.unwrap_or(EPERM);
        if e > MAX_ERRNO {
            return Err(invalid(
                field,
                format!("errno {e} is more than the kernel's largest, {MAX_ERRNO}"),
            ));
        }
        Ok(base | e)
    };
    let value = match action {
        "SCMP_ACT_ALLOW" => RET_ALLOW,
        "SCMP_ACT_ERRNO" => return with_errno(RET_ERRNO),
        "SCMP_ACT_TRACE" => return with_errno(RET_TRACE),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => RET_KILL_THREAD,
        "SCMP_ACT_KILL_PROCESS" => RET_KILL_PROCESS,
        "SCMP_ACT_TRAP" => RET_TRAP,
        "SCMP_ACT_LOG" => RET_LOG,
        "SCMP_ACT_NOTIFY" => {
            return Err(unsupported(
                field,
                "SCMP_ACT_NOTIFY needs a seccomp agent on the host (listenerPath)",
            ))
        }
        _ => return Err(invalid(field, format!("unknown action '{action}'"))),
    };
    if errno.is_some() {
        return Err(invalid(
            field,
            format!("an errno is given with {action}, which returns none (only SCMP_ACT_ERRNO and SCMP_ACT_TRACE do)"),
        ));
    }
    Ok(value)
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Ne,
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
    MaskedEq,
}

#[derive(Debug, Clone, Copy)]
struct Cmp {
    index: u32,
    op: Op,
    value: u64,
    value_two: u64,
}

fn comparison(field: &str, a: &Arg) -> Result<Cmp, BundleError> {
    if a.index > 5 {
        return Err(invalid(
            field,
            format!("argument index {} (a system call has 6, 0 to 5)", a.index),
        ));
    }
    let op = match a.op.as_str() {
        "SCMP_CMP_NE" => Op::Ne,
        "SCMP_CMP_LT" => Op::Lt,
        "SCMP_CMP_LE" => Op::Le,
        "SCMP_CMP_EQ" => Op::Eq,
        "SCMP_CMP_GE" => Op::Ge,
        "SCMP_CMP_GT" => Op::Gt,
        "SCMP_CMP_MASKED_EQ" => Op::MaskedEq,
        other => return Err(invalid(field, format!("unknown operator '{other}'"))),
    };
    Ok(Cmp {
        index: a.index,
        op,
        value: a.value,
        value_two: a.value_two,
    })
}

/// What one system call's rules say, after the precedence rules above.
#[derive(Default)]
struct Call {
    /// The action of the first rule without arguments: it decides the call.
    whole: Option<u32>,
    /// Rules with arguments, in the profile's order: all comparisons hold → the action.
    with_args: Vec<(Vec<Cmp>, u32)>,
}

/// Compiles the profile for x86_64.
pub(crate) fn compile(p: &Profile) -> Result<SeccompFilter, BundleError> {
    const FIELD: &str = "linux.seccomp";
    if p.listener_path.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(unsupported(
            "linux.seccomp.listenerPath",
            "a seccomp agent on the host cannot serve a guest's calls",
        ));
    }
    let _ = &p.listener_metadata; // Only for that agent.
    for a in p.architectures.iter().flatten() {
        if !ARCHITECTURES.contains(&a.as_str()) {
            return Err(invalid(
                "linux.seccomp.architectures",
                format!("unknown architecture '{a}'"),
            ));
        }
    }
    let mut flags = 0u32;
    for f in p.flags.iter().flatten() {
        flags |= match f.as_str() {
            "SECCOMP_FILTER_FLAG_TSYNC" => 1,
            "SECCOMP_FILTER_FLAG_LOG" => 2,
            "SECCOMP_FILTER_FLAG_SPEC_ALLOW" => 4,
            "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV" => 0,
            other => {
                return Err(invalid(
                    "linux.seccomp.flags",
                    format!("unknown flag '{other}'"),
                ))
            }
        };
    }
    let default = action_value(
        "linux.seccomp.defaultAction",
        &p.default_action,
        p.default_errno_ret,
    )?;

    let mut calls: std::collections::BTreeMap<u32, Call> = Default::default();
    for (i, r) in p.syscalls.iter().flatten().enumerate() {
        let field = format!("{FIELD}.syscalls[{i}]");
        let action = action_value(&field, &r.action, r.errno_ret)?;
        let cmps = r
            .args
            .iter()
            .flatten()
            .map(|a| comparison(&field, a))
            .collect::<Result<Vec<_>, _>>()?;
        let names = r.names.as_deref().unwrap_or_default();
        if names.is_empty() {
            return Err(invalid(field, "no names"));
        }
        if action == default {
            continue;
        }
        for nr in names.iter().filter_map(|n| syscall_number(n)) {
            let call = calls.entry(nr).or_default();
            if cmps.is_empty() {
                call.whole.get_or_insert(action);
            } else {
                call.with_args.push((cmps.clone(), action));
            }
        }
    }
    let calls: Vec<(u32, Call)> = calls.into_iter().collect();
    let program = Asm::program(&calls, default)?;
    Ok(SeccompFilter { flags, program })
}

/// A 64-bit value's high and low 32-bit halves.
fn halves(v: u64) -> (u32, u32) {
    let [h0, h1, h2, h3, l0, l1, l2, l3] = v.to_be_bytes();
    (
        u32::from_be_bytes([h0, h1, h2, h3]),
        u32::from_be_bytes([l0, l1, l2, l3]),
    )
}

/// A jump target: the next instruction, or a label.
#[derive(Clone, Copy)]
enum To {
    Next,
    L(usize),
}

enum Item {
    Stmt(u16, u32),
    Jump(u16, u32, To, To),
    Ja(usize),
    Label(usize),
}

/// A tiny assembler: conditional jumps go to near labels only (their offsets are 8 bits);
/// anything far is reached through `ja`, whose offset is 32 bits.
#[derive(Default)]
struct Asm {
    items: Vec<Item>,
    labels: usize,
}

impl Asm {
    fn label(&mut self) -> usize {
        self.labels += 1;
        self.labels - 1
    }
    fn place(&mut self, l: usize) {
        self.items.push(Item::Label(l));
    }
    fn stmt(&mut self, code: u16, k: u32) {
        self.items.push(Item::Stmt(code, k));
    }
    fn jump(&mut self, code: u16, k: u32, jt: To, jf: To) {
        self.items.push(Item::Jump(code, k, jt, jf));
    }
    fn ret(&mut self, v: u32) {
        self.stmt(RET_K, v);
    }

    fn program(calls: &[(u32, Call)], default: u32) -> Result<Vec<Insn>, BundleError> {
        let mut a = Asm::default();
        // Another architecture, or x32's numbers: kill (see the module's documentation).
        a.stmt(LD_W_ABS, ARCH_OFFSET);
        let native = a.label();
        a.jump(JMP_JEQ_K, AUDIT_ARCH_X86_64, To::L(native), To::Next);
        a.ret(RET_KILL_PROCESS);
        a.place(native);
        a.stmt(LD_W_ABS, NR_OFFSET);
        let not_x32 = a.label();
        a.jump(JMP_JGE_K, X32_SYSCALL_BIT, To::Next, To::L(not_x32));
        a.ret(RET_KILL_PROCESS);
        a.place(not_x32);

        let bodies: Vec<usize> = calls.iter().map(|_| a.label()).collect();
        a.dispatch(calls, &bodies, default);
        for ((_, call), body) in calls.iter().zip(&bodies) {
            if call.whole.is_some() {
                continue;
            }
            a.place(*body);
            for (cmps, action) in &call.with_args {
                let next_rule = a.label();
                for c in cmps {
                    a.compare(c, next_rule);
                }
                a.ret(*action);
                a.place(next_rule);
            }
            a.ret(default);
        }
        a.assemble()
    }

    /// A binary search on the call number (in A), which is ≤ log2(calls) jumps deep, to the
    /// call's action or its rules; the default action for a call without rules.
    fn dispatch(&mut self, calls: &[(u32, Call)], bodies: &[usize], default: u32) {
        if calls.len() <= 4 {
            for ((nr, call), body) in calls.iter().zip(bodies) {
                let skip = self.label();
                self.jump(JMP_JEQ_K, *nr, To::Next, To::L(skip));
                match call.whole {
                    Some(action) => self.ret(action),
                    None => self.items.push(Item::Ja(*body)),
                }
                self.place(skip);
            }
            self.ret(default);
            return;
        }
        let mid = calls.len() / 2;
        let low = self.label();
        let high = self.label();
        self.jump(JMP_JGE_K, calls[mid].0, To::Next, To::L(low));
        self.items.push(Item::Ja(high));
        self.place(low);
        self.dispatch(&calls[..mid], &bodies[..mid], default);
        self.place(high);
        self.dispatch(&calls[mid..], &bodies[mid..], default);
    }

    /// One comparison of a 64-bit argument: falls through if it holds, else jumps to `fail`
    /// (through a `ja`, so that `fail` may be far).
    fn compare(&mut self, c: &Cmp, fail: usize) {
        let lo = ARGS_OFFSET + 8 * c.index; // little-endian: the low half first
        let hi = lo + 4;
        let (vhi, vlo) = halves(c.value);
        let ok = self.label();
        let no = self.label();
        let (o, n) = (To::L(ok), To::L(no));
        match c.op {
            Op::Eq => {
                self.stmt(LD_W_ABS, hi);
                self.jump(JMP_JEQ_K, vhi, To::Next, n);
                self.stmt(LD_W_ABS, lo);
                self.jump(JMP_JEQ_K, vlo, o, n);
            }
            Op::Ne => {
                self.stmt(LD_W_ABS, hi);
                self.jump(JMP_JEQ_K, vhi, To::Next, o);
                self.stmt(LD_W_ABS, lo);
                self.jump(JMP_JEQ_K, vlo, n, o);
            }
            Op::Gt | Op::Ge => {
                self.stmt(LD_W_ABS, hi);
                self.jump(JMP_JGT_K, vhi, o, To::Next);
                self.jump(JMP_JEQ_K, vhi, To::Next, n);
                self.stmt(LD_W_ABS, lo);
                let code = if matches!(c.op, Op::Gt) {
                    JMP_JGT_K
                } else {
                    JMP_JGE_K
                };
                self.jump(code, vlo, o, n);
            }
            Op::Lt | Op::Le => {
                self.stmt(LD_W_ABS, hi);
                self.jump(JMP_JGT_K, vhi, n, To::Next);
                self.jump(JMP_JEQ_K, vhi, To::Next, o);
                self.stmt(LD_W_ABS, lo);
                // arg < v ⇔ !(arg >= v); arg <= v ⇔ !(arg > v)
                let code = if matches!(c.op, Op::Lt) {
                    JMP_JGE_K
                } else {
                    JMP_JGT_K
                };
                self.jump(code, vlo, n, o);
            }
            Op::MaskedEq => {
                let (dhi, dlo) = halves(c.value_two);
                self.stmt(LD_W_ABS, hi);
                self.stmt(ALU_AND_K, vhi);
                self.jump(JMP_JEQ_K, dhi, To::Next, n);
                self.stmt(LD_W_ABS, lo);
                self.stmt(ALU_AND_K, vlo);
                self.jump(JMP_JEQ_K, dlo, o, n);
            }
        }
        self.place(no);
        self.items.push(Item::Ja(fail));
        self.place(ok);
    }

    fn assemble(self) -> Result<Vec<Insn>, BundleError> {
        let mut at = vec![usize::MAX; self.labels];
        let mut n = 0usize;
        for item in &self.items {
            match item {
                Item::Label(l) => at[*l] = n,
                _ => n += 1,
            }
        }
        if n > MAX_INSNS {
            return Err(invalid(
                "linux.seccomp",
                format!("the profile compiles to {n} BPF instructions, more than the kernel's {MAX_INSNS}"),
            ));
        }
        // Every target is a later instruction: the program has no loops.
        let offset = |from: usize, to: To| match to {
            To::Next => 0,
            To::L(l) => at[l] - from - 1,
        };
        let mut out = Vec::with_capacity(n);
        for item in &self.items {
            let pc = out.len();
            let insn = match *item {
                Item::Label(_) => continue,
                Item::Stmt(code, k) => Insn {
                    code,
                    jt: 0,
                    jf: 0,
                    k,
                },
                Item::Ja(l) => Insn {
                    code: JMP_JA,
                    jt: 0,
                    jf: 0,
                    // n ≤ MAX_INSNS: it fits.
                    k: u32::try_from(offset(pc, To::L(l))).map_err(|_| {
                        invalid("linux.seccomp", "internal error: a BPF jump is too far")
                    })?,
                },
                Item::Jump(code, k, jt, jf) => {
                    // Conditional jumps are only ever made to near labels.
                    let near = |to| {
                        u8::try_from(offset(pc, to)).map_err(|_| {
                            invalid("linux.seccomp", "internal error: a BPF jump is too far")
                        })
                    };
                    Insn {
                        code,
                        jt: near(jt)?,
                        jf: near(jf)?,
                        k,
                    }
                }
            };
            out.push(insn);
        }
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const PODMAN: &str = include_str!("../testdata/podman-4.3-seccomp.json");
    pub(crate) const CONTAINERD: &str = include_str!("../testdata/containerd-1.6-seccomp.json");

    pub(crate) fn compile_json(json: &str) -> Result<SeccompFilter, String> {
        let p: Profile = serde_json::from_str(json).map_err(|e| e.to_string())?;
        compile(&p).map_err(|e| e.to_string())
    }

    const AUDIT_ARCH_I386: u32 = 0x4000_0003;

    /// Runs `prog` as the kernel would on `struct seccomp_data`: the instructions flint
    /// emits, each checked (a jump out of the program or an unknown opcode fails the test).
    fn interpret(prog: &[Insn], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_ne_bytes());
        data[4..8].copy_from_slice(&arch.to_ne_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
        }
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let i = prog[pc];
            pc += 1;
            let cond = |taken: bool| if taken { i.jt as usize } else { i.jf as usize };
            match i.code {
                LD_W_ABS => {
                    let k = i.k as usize;
                    assert!(k.is_multiple_of(4) && k + 4 <= 64, "load at {k}");
                    a = u32::from_ne_bytes(data[k..k + 4].try_into().unwrap());
                }
                ALU_AND_K => a &= i.k,
                JMP_JA => pc += i.k as usize,
                JMP_JEQ_K => pc += cond(a == i.k),
                JMP_JGT_K => pc += cond(a > i.k),
                JMP_JGE_K => pc += cond(a >= i.k),
                RET_K => return i.k,
                other => panic!("opcode {other:#x} at {}", pc - 1),
            }
            assert!(pc < prog.len(), "ran off the end");
        }
    }

    fn x86_64(f: &SeccompFilter, name: &str, args: [u64; 6]) -> u32 {
        let nr = syscall_number(name).unwrap_or_else(|| panic!("{name}"));
        interpret(&f.program, AUDIT_ARCH_X86_64, nr, args)
    }

    const NO_ARGS: [u64; 6] = [0; 6];
    fn arg0(v: u64) -> [u64; 6] {
        [v, 0, 0, 0, 0, 0]
    }

    #[test]
    fn the_table_is_sorted_and_has_the_usual_numbers() {
        assert!(syscalls::SYSCALLS.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(syscall_number("read"), Some(0));
        assert_eq!(syscall_number("getpid"), Some(39));
        assert_eq!(syscall_number("reboot"), Some(169));
        assert_eq!(syscall_number("kexec_load"), Some(246));
        assert_eq!(syscall_number("clone3"), Some(435));
        assert_eq!(syscall_number("chown32"), None); // 32-bit x86 only
        assert_eq!(syscall_number(""), None);
    }

    #[test]
    fn podmans_profile_allows_denies_and_checks_arguments() {
        let f = compile_json(PODMAN).unwrap();
        let enosys = RET_ERRNO | 38;
        let eperm = RET_ERRNO | 1;
        assert_eq!(x86_64(&f, "getpid", NO_ARGS), RET_ALLOW);
        assert_eq!(x86_64(&f, "execve", NO_ARGS), RET_ALLOW);
        assert_eq!(x86_64(&f, "kexec_load", NO_ARGS), eperm);
        assert_eq!(x86_64(&f, "swapon", NO_ARGS), eperm);
        assert_eq!(x86_64(&f, "open_by_handle_at", NO_ARGS), eperm); // no CAP_DAC_READ_SEARCH
        assert_eq!(x86_64(&f, "chroot", NO_ARGS), RET_ALLOW); // CAP_SYS_CHROOT is given
        assert_eq!(x86_64(&f, "getpriority", NO_ARGS), enosys); // not listed
        assert_eq!(
            interpret(&f.program, AUDIT_ARCH_X86_64, 1000, NO_ARGS),
            enosys
        );
        for v in [0, 8, 0x20000, 0x20008, 0xffff_ffff] {
            assert_eq!(x86_64(&f, "personality", arg0(v)), RET_ALLOW, "{v:#x}");
        }
        // The whole 64 bits count: the same low half with a high bit set is another value.
        for v in [
            1,
            0x1_0000_0000,
            0x1_0000_0008,
            0xffff_ffff_ffff_ffff,
            0x400,
        ] {
            assert_eq!(x86_64(&f, "personality", arg0(v)), enosys, "{v:#x}");
        }
        // socket(AF_NETLINK, *, NETLINK_AUDIT) is EINVAL without CAP_AUDIT_WRITE.
        assert_eq!(x86_64(&f, "socket", [16, 3, 9, 0, 0, 0]), RET_ERRNO | 22);
        assert_eq!(x86_64(&f, "socket", [16, 3, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(x86_64(&f, "socket", [1, 1, 9, 0, 0, 0]), RET_ALLOW);
        // Another architecture, and x32 numbers, are killed.
        let getpid = syscall_number("getpid").unwrap();
        assert_eq!(
            interpret(&f.program, AUDIT_ARCH_I386, 20, NO_ARGS),
            RET_KILL_PROCESS
        );
        assert_eq!(
            interpret(&f.program, AUDIT_ARCH_X86_64, getpid | 0x4000_0000, NO_ARGS),
            RET_KILL_PROCESS
        );
    }

    #[test]
    fn containerds_profile_denies_reboot_and_namespaces_in_clone() {
        let f = compile_json(CONTAINERD).unwrap();
        let eperm = RET_ERRNO | 1; // the default action, without defaultErrnoRet
        assert_eq!(x86_64(&f, "getpid", NO_ARGS), RET_ALLOW);
        assert_eq!(x86_64(&f, "reboot", NO_ARGS), eperm);
        assert_eq!(x86_64(&f, "kexec_load", NO_ARGS), eperm);
        assert_eq!(x86_64(&f, "clone3", NO_ARGS), RET_ERRNO | 38);
        let sigchld = 17;
        assert_eq!(x86_64(&f, "clone", arg0(sigchld)), RET_ALLOW);
        assert_eq!(x86_64(&f, "clone", arg0(0x0011_0f00 | sigchld)), RET_ALLOW); // threads
        for ns in [
            0x0002_0000,
            0x0400_0000,
            0x0800_0000,
            0x1000_0000,
            0x2000_0000,
            0x4000_0000,
            0x0200_0000,
        ] {
            assert_eq!(x86_64(&f, "clone", arg0(ns | sigchld)), eperm, "{ns:#x}");
        }
        // High bits outside the mask do not matter to MASKED_EQ; inside it, they do.
        assert_eq!(x86_64(&f, "clone", arg0(1 << 40 | sigchld)), RET_ALLOW);
    }

    /// Every operator against 64-bit values whose halves differ in every way, compared with
    /// Rust's own comparison of the whole values.
    #[test]
    fn comparisons_are_on_the_whole_64_bits() {
        let edges = [
            0u64,
            1,
            0xffff_ffff,
            0x1_0000_0000,
            0x1_0000_0001,
            0x1_ffff_ffff,
            0x2_0000_0000,
            0x8000_0000_0000_0000,
            u64::MAX - 1,
            u64::MAX,
        ];
        type Holds = fn(u64, u64, u64) -> bool;
        let ops: [(&str, Holds); 7] = [
            ("SCMP_CMP_EQ", |x, v, _| x == v),
            ("SCMP_CMP_NE", |x, v, _| x != v),
            ("SCMP_CMP_LT", |x, v, _| x < v),
            ("SCMP_CMP_LE", |x, v, _| x <= v),
            ("SCMP_CMP_GT", |x, v, _| x > v),
            ("SCMP_CMP_GE", |x, v, _| x >= v),
            ("SCMP_CMP_MASKED_EQ", |x, m, d| x & m == d),
        ];
        for (op, holds) in ops {
            for v in edges {
                let two = v & 0xffff_0000_ffff_0001;
                let json = format!(
                    r#"{{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{{"names": ["getpid"], "action": "SCMP_ACT_ALLOW",
                        "args": [{{"index": 3, "value": {v}, "valueTwo": {two}, "op": "{op}"}}]}}]}}"#
                );
                let f = compile_json(&json).unwrap();
                for x in edges
                    .iter()
                    .chain(&[v.wrapping_add(1), v.wrapping_sub(1), v ^ 1 << 32])
                {
                    let want = if holds(*x, v, two) {
                        RET_ALLOW
                    } else {
                        RET_ERRNO | 1
                    };
                    let args = [0, 0, 0, *x, 0, 0];
                    assert_eq!(
                        x86_64(&f, "getpid", args),
                        want,
                        "{op} {v:#x} ({two:#x}) on {x:#x}"
                    );
                }
            }
        }
    }

    #[test]
    fn several_comparisons_in_a_rule_must_all_hold() {
        let json = r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
            "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}, {"index": 1, "value": 9, "op": "SCMP_CMP_EQ"}, {"index": 1, "value": 10, "op": "SCMP_CMP_LT"}]}]}"#;
        let f = compile_json(json).unwrap();
        assert_eq!(x86_64(&f, "kill", [1, 9, 0, 0, 0, 0]), RET_ERRNO | 13);
        assert_eq!(x86_64(&f, "kill", [1, 8, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(x86_64(&f, "kill", [2, 9, 0, 0, 0, 0]), RET_ALLOW);
    }

    #[test]
    fn precedence_among_rules_for_one_call() {
        let rules = |rules: &str| {
            compile_json(&format!(
                r#"{{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38, "syscalls": [{rules}]}}"#
            ))
            .unwrap()
        };
        let errno = |e: u32| format!(r#""action": "SCMP_ACT_ERRNO", "errnoRet": {e}"#);
        let eq5 = r#""args": [{"index": 0, "value": 5, "op": "SCMP_CMP_EQ"}]"#;
        // A rule without arguments decides, before or after narrower rules.
        for f in [
            rules(&format!(
                r#"{{"names": ["kill"], {}, {eq5}}}, {{"names": ["kill"], "action": "SCMP_ACT_ALLOW"}}"#,
                errno(1)
            )),
            rules(&format!(
                r#"{{"names": ["kill"], "action": "SCMP_ACT_ALLOW"}}, {{"names": ["kill"], {}, {eq5}}}"#,
                errno(1)
            )),
        ] {
            assert_eq!(x86_64(&f, "kill", arg0(5)), RET_ALLOW);
            assert_eq!(x86_64(&f, "kill", arg0(6)), RET_ALLOW);
        }
        // The first of two rules without arguments; one with the default action is dropped.
        let f = rules(&format!(
            r#"{{"names": ["kill"], {}}}, {{"names": ["kill"], {}}}, {{"names": ["kill"], "action": "SCMP_ACT_ALLOW"}}"#,
            errno(38),
            errno(2)
        ));
        assert_eq!(x86_64(&f, "kill", NO_ARGS), RET_ERRNO | 2);
        // Rules with arguments: the first that holds.
        let f = rules(&format!(
            r#"{{"names": ["kill"], {}, {eq5}}}, {{"names": ["kill"], "action": "SCMP_ACT_ALLOW", "args": [{{"index": 0, "value": 4, "op": "SCMP_CMP_GT"}}]}}"#,
            errno(7)
        ));
        assert_eq!(x86_64(&f, "kill", arg0(5)), RET_ERRNO | 7);
        assert_eq!(x86_64(&f, "kill", arg0(6)), RET_ALLOW);
        assert_eq!(x86_64(&f, "kill", arg0(4)), RET_ERRNO | 38);
        // Unknown names are skipped; the known ones in the same rule still count.
        let f = rules(
            r#"{"names": ["no_such_call", "chown32", "getpid"], "action": "SCMP_ACT_ALLOW"}"#,
        );
        assert_eq!(x86_64(&f, "getpid", NO_ARGS), RET_ALLOW);
    }

    #[test]
    fn every_action_has_its_return_value() {
        let one = |action: &str| {
            let f = compile_json(&format!(
                r#"{{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{{"names": ["getppid"], {action}}}]}}"#
            ))
            .unwrap();
            x86_64(&f, "getppid", NO_ARGS)
        };
        assert_eq!(one(r#""action": "SCMP_ACT_KILL""#), RET_KILL_THREAD);
        assert_eq!(one(r#""action": "SCMP_ACT_KILL_THREAD""#), RET_KILL_THREAD);
        assert_eq!(
            one(r#""action": "SCMP_ACT_KILL_PROCESS""#),
            RET_KILL_PROCESS
        );
        assert_eq!(one(r#""action": "SCMP_ACT_TRAP""#), RET_TRAP);
        assert_eq!(one(r#""action": "SCMP_ACT_LOG""#), RET_LOG);
        assert_eq!(one(r#""action": "SCMP_ACT_ERRNO""#), RET_ERRNO | 1);
        assert_eq!(
            one(r#""action": "SCMP_ACT_ERRNO", "errnoRet": 4095"#),
            RET_ERRNO | 4095
        );
        assert_eq!(one(r#""action": "SCMP_ACT_TRACE""#), RET_TRACE | 1);
        assert_eq!(
            one(r#""action": "SCMP_ACT_TRACE", "errnoRet": 9"#),
            RET_TRACE | 9
        );
        let f = compile_json(r#"{"defaultAction": "SCMP_ACT_KILL_PROCESS"}"#).unwrap();
        assert_eq!(x86_64(&f, "getpid", NO_ARGS), RET_KILL_PROCESS);
        let f = compile_json(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"], "architectures": ["SCMP_ARCH_AARCH64"], "syscalls": null}"#,
        )
        .unwrap();
        assert_eq!(f.flags, 7);
    }

    #[test]
    fn bad_profiles_are_refused_in_one_line() {
        let cases = [
            (r#"{"defaultAction": "SCMP_ACT_FLY"}"#, "linux.seccomp.defaultAction: unknown action 'SCMP_ACT_FLY'"),
            (r#"{"defaultAction": "SCMP_ACT_NOTIFY"}"#, "linux.seccomp.defaultAction is not supported by flint: SCMP_ACT_NOTIFY needs a seccomp agent on the host (listenerPath)"),
            (r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 4096}"#, "errno 4096 is more than the kernel's largest, 4095"),
            (r#"{"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 1}"#, "an errno is given with SCMP_ACT_ALLOW"),
            (r#"{"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock"}"#, "linux.seccomp.listenerPath is not supported"),
            (r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_VAX"]}"#, "unknown architecture 'SCMP_ARCH_VAX'"),
            (r#"{"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_FAST"]}"#, "unknown flag 'SECCOMP_FILTER_FLAG_FAST'"),
            (r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["kill"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}"#, "linux.seccomp.syscalls[0]: argument index 6"),
            (r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["kill"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_APPROX"}]}]}"#, "unknown operator 'SCMP_CMP_APPROX'"),
            (r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [], "action": "SCMP_ACT_ERRNO"}]}"#, "linux.seccomp.syscalls[0]: no names"),
            (r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": -1}]}"#, "invalid value"),
            (r#"{"defaultAction": "SCMP_ACT_ALLOW", "bogus": 1}"#, "unknown field `bogus`"),
        ];
        for (json, want) in cases {
            let e = compile_json(json).unwrap_err();
            assert!(e.contains(want) && !e.contains('\n'), "{json}: {e}");
        }
        // A profile too big for the kernel: 1000 rules of 2 comparisons on one call.
        let rule = r#"{"names": ["kill"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_LE"}, {"index": 1, "value": 1, "op": "SCMP_CMP_GE"}]}"#;
        let json = format!(
            r#"{{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{}]}}"#,
            vec![rule; 1000].join(",")
        );
        let e = compile_json(&json).unwrap_err();
        assert!(
            e.contains("BPF instructions, more than the kernel's 4096"),
            "{e}"
        );
        // ... while one just under the limit compiles, far jumps and all.
        let json = format!(
            r#"{{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{}]}}"#,
            vec![rule; 250].join(",")
        );
        let f = compile_json(&json).unwrap();
        assert!(f.program.len() > 3000 && f.program.len() <= MAX_INSNS);
        assert_eq!(x86_64(&f, "kill", [0, 2, 0, 0, 0, 0]), RET_ERRNO | 1);
        assert_eq!(x86_64(&f, "kill", [2, 2, 0, 0, 0, 0]), RET_ALLOW);
    }

    /// How a system call ended in a child under a filter.
    #[derive(Debug, PartialEq, Eq)]
    enum Outcome {
        Returned,
        Errno(i32),
        Signal(i32),
    }

    /// Forks a child that installs `f` (with no_new_privs, as an unprivileged process must)
    /// and makes the call `nr` with `args`: the kernel's own verdict on the program.
    fn in_child(f: &SeccompFilter, nr: i64, args: [u64; 6]) -> Outcome {
        let insns: Vec<libc::sock_filter> = f
            .program
            .iter()
            .map(|i| libc::sock_filter {
                code: i.code,
                jt: i.jt,
                jf: i.jf,
                k: i.k,
            })
            .collect();
        let prog = libc::sock_fprog {
            len: u16::try_from(insns.len()).unwrap(),
            filter: insns.as_ptr() as *mut _,
        };
        // SAFETY: the child makes raw system calls only (no allocation, no locks) and ends
        // with _exit; the parent waits for it.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0, "fork");
            if pid == 0 {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                    || libc::syscall(libc::SYS_seccomp, 1, f.flags, &prog as *const _) != 0
                {
                    libc::_exit(250);
                }
                let r = libc::syscall(nr, args[0], args[1], args[2], args[3], args[4], args[5]);
                let e = *libc::__errno_location();
                libc::_exit(if r < 0 { e.clamp(1, 199) } else { 200 });
            }
            let mut status = 0;
            assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
            if libc::WIFSIGNALED(status) {
                return Outcome::Signal(libc::WTERMSIG(status));
            }
            match libc::WEXITSTATUS(status) {
                200 => Outcome::Returned,
                250 => panic!("the kernel refused the filter"),
                e => Outcome::Errno(e),
            }
        }
    }

    #[test]
    fn the_kernel_takes_the_programs_and_applies_them() {
        use libc::{
            SYS_clone, SYS_getpid, SYS_getpriority, SYS_personality, SYS_reboot, SYS_socket,
        };
        let podman = compile_json(PODMAN).unwrap();
        assert_eq!(in_child(&podman, SYS_getpid, NO_ARGS), Outcome::Returned);
        assert_eq!(
            in_child(&podman, SYS_personality, arg0(0xffff_ffff)),
            Outcome::Returned
        );
        assert_eq!(
            in_child(&podman, SYS_personality, arg0(0x1_ffff_ffff)),
            Outcome::Errno(libc::ENOSYS)
        );
        assert_eq!(
            in_child(&podman, SYS_getpriority, NO_ARGS),
            Outcome::Errno(libc::ENOSYS)
        );
        assert_eq!(
            in_child(&podman, libc::SYS_kexec_load, NO_ARGS),
            Outcome::Errno(libc::EPERM)
        );
        assert_eq!(
            in_child(&podman, SYS_socket, [16, 3, 9, 0, 0, 0]),
            Outcome::Errno(libc::EINVAL)
        );
        assert_eq!(
            in_child(&podman, SYS_socket, [1, 1, 0, 0, 0, 0]),
            Outcome::Returned
        );

        let containerd = compile_json(CONTAINERD).unwrap();
        // Unfiltered, these arguments are EINVAL (bad magic; CLONE_SIGHAND without CLONE_VM)
        // or EPERM without privilege: the filter's EPERM comes first either way.
        assert_eq!(
            in_child(&containerd, SYS_reboot, NO_ARGS),
            Outcome::Errno(libc::EPERM)
        );
        let sighand = libc::CLONE_SIGHAND as u64;
        assert_eq!(
            in_child(&containerd, SYS_clone, arg0(sighand)),
            Outcome::Errno(libc::EINVAL)
        );
        let newuser = libc::CLONE_NEWUSER as u64;
        assert_eq!(
            in_child(&containerd, SYS_clone, arg0(sighand | newuser)),
            Outcome::Errno(libc::EPERM)
        );

        let kill = compile_json(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_KILL_PROCESS"}, {"names": ["gettid"], "action": "SCMP_ACT_TRAP"}]}"#,
        )
        .unwrap();
        assert_eq!(
            in_child(&kill, libc::SYS_getppid, NO_ARGS),
            Outcome::Signal(libc::SIGSYS)
        );
        assert_eq!(
            in_child(&kill, libc::SYS_gettid, NO_ARGS),
            Outcome::Signal(libc::SIGSYS)
        );
        assert_eq!(in_child(&kill, SYS_getpid, NO_ARGS), Outcome::Returned);
    }
}
