//! Per-vCPU CPUID: KVM's supported set, with each vCPU's APIC ID and the VM's topology
//! (one socket, `num_cpus` cores, one thread per core), and the hypervisor bit set.
//!
//! Hardware virtualization (VMX, SVM) is hidden: flint does not offer nested virtualization,
//! whose emulation in the host's KVM is a large attack surface of its own, and a snapshot could
//! not carry a nested guest's state. KVM refuses `EFER.SVME` to a guest whose CPUID lacks SVM.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE_PARAMS: u32 = 0x4;
const LEAF_EXT_TOPOLOGY: u32 = 0xb;
const LEAF_V2_EXT_TOPOLOGY: u32 = 0x1f;
const LEAF_AMD_FEATURES: u32 = 0x8000_0001;
const LEAF_AMD_SIZES: u32 = 0x8000_0008;
const LEAF_AMD_SVM: u32 = 0x8000_000a;
const LEAF_AMD_TOPOLOGY_EXT: u32 = 0x8000_001e;

const ECX_TSC_DEADLINE: u32 = 1 << 24;
const ECX_HYPERVISOR: u32 = 1 << 31;
const ECX_VMX: u32 = 1 << 5;
const ECX_AMD_SVM: u32 = 1 << 2;
const EDX_HTT: u32 = 1 << 28;
const ECX_AMD_CMP_LEGACY: u32 = 1 << 1;

/// Bits of an x2APIC ID that select the core within the package: enough for `num_cpus`.
fn core_id_bits(num_cpus: u8) -> u32 {
    (num_cpus as u32).next_power_of_two().trailing_zeros()
}

/// What the host's KVM can do beyond what `KVM_GET_SUPPORTED_CPUID` reports.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostCaps {
    /// `KVM_CAP_TSC_DEADLINE_TIMER`: the LAPIC's TSC-deadline mode works, but KVM leaves its
    /// CPUID bit for the VMM to set. Without it Linux calibrates the APIC timer against the PIT.
    pub tsc_deadline: bool,
}

/// Adjusts `cpuid` (from `KVM_GET_SUPPORTED_CPUID`) for vCPU `cpu_index` of `num_cpus`.
pub fn filter_cpuid(cpuid: &mut CpuId, cpu_index: u8, num_cpus: u8, caps: HostCaps) {
    let apic_id = cpu_index as u32;
    let cpus = num_cpus as u32;
    for e in cpuid.as_mut_slice() {
        match e.function {
            LEAF_FEATURES => {
                // EBX: [31:24] initial APIC ID, [23:16] logical processors per package, [15:8]
                // CLFLUSH line size in quadwords (8 = 64 bytes).
                e.ebx = (apic_id << 24) | (cpus << 16) | (8 << 8) | (e.ebx & 0xff);
                e.ecx |= ECX_HYPERVISOR;
                e.ecx &= !ECX_VMX;
                if caps.tsc_deadline {
                    e.ecx |= ECX_TSC_DEADLINE;
                }
                if num_cpus > 1 {
                    e.edx |= EDX_HTT;
                } else {
                    e.edx &= !EDX_HTT;
                }
            }
            LEAF_CACHE_PARAMS => {
                // EAX[31:26]: cores per package - 1; [25:14]: logical CPUs sharing the cache - 1.
                // One thread per core, so L1/L2 are private and L3 is shared by all.
                let level = (e.eax >> 5) & 0x7;
                let sharing = if level >= 3 { cpus - 1 } else { 0 };
                e.eax = (e.eax & 0x3fff) | ((cpus - 1) << 26) | (sharing << 14);
            }
            LEAF_EXT_TOPOLOGY | LEAF_V2_EXT_TOPOLOGY => {
                e.edx = apic_id;
                e.ecx = e.index & 0xff;
                match e.index {
                    0 => {
                        // SMT level: one thread per core.
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx |= 1 << 8;
                    }
                    1 => {
                        e.eax = core_id_bits(num_cpus);
                        e.ebx = cpus;
                        e.ecx |= 2 << 8;
                    }
                    _ => {
                        e.eax = 0;
                        e.ebx = 0;
                    }
                }
            }
            LEAF_AMD_SIZES => {
                // ECX[7:0]: cores per package - 1; [15:12]: APIC ID bits for cores.
                e.ecx = (e.ecx & !0xf0ff) | (core_id_bits(num_cpus) << 12) | (cpus - 1);
            }
            LEAF_AMD_TOPOLOGY_EXT => {
                e.eax = apic_id;
                e.ebx = apic_id & 0xff; // core id; threads per core - 1 = 0
                e.ecx = 0; // one node
            }
            LEAF_AMD_FEATURES => {
                e.ecx &= !ECX_AMD_SVM;
                // CmpLegacy tells an AMD-aware kernel that HTT counts cores, not threads.
                if num_cpus > 1 {
                    e.ecx |= ECX_AMD_CMP_LEGACY;
                }
            }
            LEAF_AMD_SVM => {
                // SVM's revision, ASID count and features: meaningless without SVM.
                (e.eax, e.ebx, e.ecx, e.edx) = (0, 0, 0, 0);
            }
            _ => {}
        }
    }
}

/// The entry for `function`/`index`, for tests and diagnostics.
pub fn find(cpuid: &CpuId, function: u32, index: u32) -> Option<&kvm_cpuid_entry2> {
    cpuid
        .as_slice()
        .iter()
        .find(|e| e.function == function && e.index == index)
}

/// The feature leaves a restored guest may have relied on: (leaf, subleaf).
const FEATURE_LEAVES: [(u32, u32); 4] = [
    (LEAF_FEATURES, 0),
    (0x7, 0),
    (LEAF_AMD_FEATURES, 0),
    (0xd, 1),
];

/// A feature a saved vCPU's CPUID has that this host would not give it: `(leaf, subleaf,
/// register name, missing bits)`. `here` is what flint gives that vCPU on this host.
pub fn missing_features(
    saved: &[kvm_cpuid_entry2],
    here: &CpuId,
) -> Option<(u32, u32, &'static str, u32)> {
    for (leaf, sub) in FEATURE_LEAVES {
        let find = |entries: &[kvm_cpuid_entry2]| {
            entries
                .iter()
                .find(|e| {
                    // KVM leaves `index` unset where the subleaf does not matter.
                    let indexed = e.flags & kvm_bindings::KVM_CPUID_FLAG_SIGNIFCANT_INDEX != 0;
                    e.function == leaf && (!indexed || e.index == sub)
                })
                .copied()
        };
        let Some(old) = find(saved) else { continue };
        let new = find(here.as_slice()).unwrap_or_default();
        for (name, a, b) in [
            ("EBX", old.ebx, new.ebx),
            ("ECX", old.ecx, new.ecx),
            ("EDX", old.edx, new.edx),
        ] {
            // Leaf 1 EBX is the APIC ID and counts, not features.
            if leaf == LEAF_FEATURES && name == "EBX" {
                continue;
            }
            if a & !b != 0 {
                return Some((leaf, sub, name, a & !b));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_feature_this_host_lacks_is_named() {
        let entry = |function, ecx| kvm_cpuid_entry2 {
            function,
            ecx,
            ..Default::default()
        };
        let here = CpuId::from_entries(&[entry(1, 0b0110), entry(7, 0)]).unwrap();
        assert_eq!(missing_features(&[entry(1, 0b0100)], &here), None);
        assert_eq!(
            missing_features(&[entry(1, 0b1100)], &here),
            Some((1, 0, "ECX", 0b1000))
        );
        // A leaf this host lacks entirely.
        assert_eq!(
            missing_features(&[entry(0x8000_0001, 1)], &here),
            Some((0x8000_0001, 0, "ECX", 1))
        );
    }

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ..Default::default()
        }
    }

    fn sample() -> CpuId {
        CpuId::from_entries(&[
            entry(1, 0),
            kvm_cpuid_entry2 {
                eax: (1 << 5) | 0x1, // L1 data cache
                ..entry(4, 0)
            },
            kvm_cpuid_entry2 {
                eax: (3 << 5) | 0x3, // L3 unified
                ..entry(4, 3)
            },
            entry(0xb, 0),
            entry(0xb, 1),
            entry(0xb, 2),
            entry(0x8000_0008, 0),
            kvm_cpuid_entry2 {
                ecx: ECX_AMD_SVM | 1, // SVM and LAHF/SAHF
                ..entry(0x8000_0001, 0)
            },
            kvm_cpuid_entry2 {
                eax: 1,
                ebx: 8,
                edx: 0x1ff,
                ..entry(0x8000_000a, 0)
            },
        ])
        .unwrap()
    }

    #[test]
    fn apic_id_topology_and_hypervisor_bit() {
        let mut c = sample();
        filter_cpuid(&mut c, 2, 3, HostCaps { tsc_deadline: true });
        let l1 = find(&c, 1, 0).unwrap();
        assert_eq!(l1.ebx >> 24, 2);
        assert_eq!((l1.ebx >> 16) & 0xff, 3);
        assert_ne!(l1.ecx & ECX_HYPERVISOR, 0);
        assert_ne!(l1.ecx & ECX_TSC_DEADLINE, 0);
        assert_ne!(l1.edx & EDX_HTT, 0);
        let core = find(&c, 0xb, 1).unwrap();
        assert_eq!((core.eax, core.ebx, core.edx, core.ecx >> 8), (2, 3, 2, 2));
        assert_eq!(find(&c, 0xb, 2).unwrap().ebx, 0);
        assert_eq!(find(&c, 4, 0).unwrap().eax >> 26, 2);
        assert_eq!((find(&c, 4, 3).unwrap().eax >> 14) & 0xfff, 2);
        assert_eq!((find(&c, 4, 0).unwrap().eax >> 14) & 0xfff, 0);
        assert_eq!(find(&c, 0x8000_0008, 0).unwrap().ecx & 0xff, 2);
    }

    #[test]
    fn hardware_virtualization_is_hidden() {
        let mut c = sample();
        c.as_mut_slice()[0].ecx = ECX_VMX | 1;
        filter_cpuid(&mut c, 0, 2, HostCaps::default());
        assert_eq!(find(&c, 1, 0).unwrap().ecx & (ECX_VMX | 1), 1);
        let ext = find(&c, 0x8000_0001, 0).unwrap();
        assert_eq!(ext.ecx, 1 | ECX_AMD_CMP_LEGACY);
        let svm = find(&c, 0x8000_000a, 0).unwrap();
        assert_eq!((svm.eax, svm.ebx, svm.ecx, svm.edx), (0, 0, 0, 0));
        filter_cpuid(&mut c, 0, 1, HostCaps::default());
        assert_eq!(find(&c, 0x8000_0001, 0).unwrap().ecx & ECX_AMD_SVM, 0);
    }

    #[test]
    fn single_cpu_has_no_htt() {
        let mut c = sample();
        c.as_mut_slice()[0].edx = EDX_HTT;
        filter_cpuid(&mut c, 0, 1, HostCaps::default());
        assert_eq!(find(&c, 1, 0).unwrap().edx & EDX_HTT, 0);
        assert_eq!(find(&c, 1, 0).unwrap().ecx & ECX_TSC_DEADLINE, 0);
        assert_eq!(find(&c, 0xb, 1).unwrap().eax, 0);
    }
}
