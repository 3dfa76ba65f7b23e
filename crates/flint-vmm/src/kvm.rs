//! Opening `/dev/kvm`, checking what flint needs from it, and telling whether it can boot a kernel.

use std::path::Path;

use kvm_ioctls::{Cap, Kvm};

#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    #[error(
        "cannot open /dev/kvm (is KVM enabled, the kvm_intel/kvm_amd module loaded, and are you \
         in the kvm group?)"
    )]
    Open(#[source] kvm_ioctls::Error),
    #[error("KVM API version is {0}, flint needs 12")]
    ApiVersion(i32),
    #[error("this KVM lacks the capability {0:?}, which flint needs")]
    MissingCap(Cap),
    #[error(
        "this /dev/kvm cannot boot a Linux kernel: it is {0}, which emulates guest kernel code \
         instruction by instruction and fails on instructions Linux uses. Boot Linux guests on a \
         host with hardware virtualization (VT-x/AMD-V), or inside the lab: \
         resources/lab/run -- flint run ..."
    )]
    CannotBootLinux(String),
}

/// Capabilities every flint VM relies on. (irqfd and ioeventfd are used where present, with a
/// slower fallback where not.)
const REQUIRED_CAPS: &[Cap] = &[
    Cap::Irqchip,
    Cap::Pit2,
    Cap::UserMemory,
    Cap::SetTssAddr,
    Cap::ImmediateExit,
    Cap::ExtCpuid,
    Cap::MpState,
];

pub fn open() -> Result<Kvm, KvmError> {
    let kvm = Kvm::new().map_err(KvmError::Open)?;
    let version = kvm.get_api_version();
    if version != kvm_bindings::KVM_API_VERSION as i32 {
        return Err(KvmError::ApiVersion(version));
    }
    for cap in REQUIRED_CAPS {
        if !kvm.check_extension(*cap) {
            return Err(KvmError::MissingCap(*cap));
        }
    }
    Ok(kvm)
}

/// What kind of hypervisor backs `/dev/kvm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvmFlavor {
    /// Hardware-assisted KVM (kvm_intel / kvm_amd): runs any guest.
    Hardware,
    /// A software or paravirtual backend that cannot run a stock Linux kernel; the string names it.
    CannotBootLinux(String),
}

/// Classifies the `/dev/kvm` of this host from sysfs (a few file reads, no guest run).
///
/// The nested PVM hypervisor (module `kvm_pvm`) runs guest kernel code by emulating it, and its
/// emulator faults on `cmpxchg16b`, `xrstor`, `int3` and SSE: Linux dies a minute into boot. Tiny
/// bare-metal guests (our firmware tests) still run on it, so this is checked only for Linux
/// kernels.
pub fn flavor() -> KvmFlavor {
    flavor_from(Path::new("/sys/module"))
}

fn flavor_from(sys_module: &Path) -> KvmFlavor {
    if sys_module.join("kvm_pvm").exists() {
        return KvmFlavor::CannotBootLinux("the nested PVM hypervisor (module kvm_pvm)".into());
    }
    KvmFlavor::Hardware
}

/// Fails early, in one line, where a Linux kernel cannot boot. `FLINT_SKIP_KVM_CHECK=1` skips it
/// for whoever wants to watch the failure happen.
pub fn check_can_boot_linux() -> Result<(), KvmError> {
    if std::env::var_os("FLINT_SKIP_KVM_CHECK").is_some_and(|v| v == "1") {
        return Ok(());
    }
    match flavor() {
        KvmFlavor::Hardware => Ok(()),
        KvmFlavor::CannotBootLinux(what) => Err(KvmError::CannotBootLinux(what)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvm_module_means_cannot_boot_linux() {
        let dir = std::env::temp_dir().join(format!("flint-kvm-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("kvm")).unwrap();
        std::fs::create_dir_all(dir.join("kvm_amd")).unwrap();
        assert_eq!(flavor_from(&dir), KvmFlavor::Hardware);
        std::fs::create_dir_all(dir.join("kvm_pvm")).unwrap();
        assert!(
            matches!(flavor_from(&dir), KvmFlavor::CannotBootLinux(s) if s.contains("kvm_pvm"))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
