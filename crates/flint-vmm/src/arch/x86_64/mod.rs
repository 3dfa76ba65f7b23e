//! x86_64 boot structures: memory map, boot parameters, CPU registers, CPUID, MSRs, MP table,
//! ACPI tables.
pub mod acpi;
pub mod cpuid;
pub mod layout;
pub mod mptable;
pub mod msr;
pub mod regs;
