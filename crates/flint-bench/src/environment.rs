//! Where a benchmark ran: host kernel, CPU, KVM flavour, and the date. Timings from software
//! emulation (the lab) and from hardware are not comparable, so every report says which.

use std::ffi::CStr;
use std::time::{SystemTime, UNIX_EPOCH};

use flint_vmm::devices::legacy::cmos::DateTime;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    /// Free text from `--label`.
    pub label: Option<String>,
    /// `uname -r`.
    pub kernel_release: String,
    /// The first `model name` of /proc/cpuinfo.
    pub cpu_model: String,
    /// Which KVM implementation is loaded: kvm_intel, kvm_amd or kvm_pvm.
    pub kvm_module: Option<String>,
    /// One sentence: what kind of virtualization the numbers come from.
    pub virtualization: String,
}

/// The KVM implementation modules, as named in /sys/module.
const KVM_MODULES: &[&str] = &["kvm_intel", "kvm_amd", "kvm_pvm"];

impl Environment {
    /// Reads this host's record. `$FLINT_LAB`, set by the lab, describes the virtualization
    /// (e.g. "software emulation: QEMU TCG lab, nested kvm-amd").
    pub fn detect(label: Option<String>) -> Environment {
        let kvm_module = KVM_MODULES
            .iter()
            .find(|m| std::path::Path::new("/sys/module").join(m).exists())
            .map(|m| m.to_string());
        let lab = std::env::var("FLINT_LAB").ok().filter(|v| !v.is_empty());
        Environment {
            label,
            kernel_release: kernel_release(),
            cpu_model: std::fs::read_to_string("/proc/cpuinfo")
                .ok()
                .and_then(|t| cpu_model(&t))
                .unwrap_or_else(|| "unknown".into()),
            virtualization: virtualization(lab, kvm_module.as_deref()),
            kvm_module,
        }
    }

    /// "virtualization; label" for report headers.
    pub fn summary(&self) -> String {
        match &self.label {
            Some(l) => format!("{}; {l}", self.virtualization),
            None => self.virtualization.clone(),
        }
    }
}

fn kernel_release() -> String {
    // SAFETY: utsname is plain data, for which all zeros is a valid value.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid utsname for uname to fill with NUL-terminated strings.
    if unsafe { libc::uname(&mut u) } != 0 {
        return "unknown".into();
    }
    // SAFETY: the kernel NUL-terminates each field within its array.
    unsafe { CStr::from_ptr(u.release.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|l| {
        let (key, value) = l.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_string())
    })
}

fn virtualization(lab: Option<String>, kvm_module: Option<&str>) -> String {
    if let Some(lab) = lab {
        return lab;
    }
    match kvm_module {
        // PVM runs guests without hardware virtualization support: say so.
        Some("kvm_pvm") => "KVM PVM: paravirtualized, no hardware virtualization (kvm_pvm)".into(),
        Some(m) => format!("hardware virtualization ({m})"),
        None => "no KVM module loaded (kvm_intel, kvm_amd, kvm_pvm)".into(),
    }
}

/// `t` as UTC ISO-8601 to the second, e.g. `2026-11-22T14:03:09Z`.
pub fn iso8601_utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let d = DateTime::from_unix(secs);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        d.year, d.month, d.day, d.hour, d.minute, d.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> String {
        iso8601_utc(UNIX_EPOCH + Duration::from_secs(secs))
    }

    #[test]
    fn dates_are_utc_iso8601() {
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59Z");
        assert_eq!(at(4_107_542_400), "2100-03-01T00:00:00Z");
    }

    #[test]
    fn the_lab_variable_wins_over_the_module() {
        assert_eq!(
            virtualization(
                Some("software emulation: QEMU TCG lab".into()),
                Some("kvm_amd")
            ),
            "software emulation: QEMU TCG lab"
        );
        assert_eq!(
            virtualization(None, Some("kvm_intel")),
            "hardware virtualization (kvm_intel)"
        );
        assert!(virtualization(None, Some("kvm_pvm")).contains("no hardware virtualization"));
    }

    #[test]
    fn cpu_model_is_the_first_model_name() {
        let text =
            "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nprocessor\t: 1\nmodel name\t: other\n";
        assert_eq!(cpu_model(text).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(cpu_model("processor : 0\n"), None);
    }

    #[test]
    fn this_host_has_a_record() {
        let e = Environment::detect(Some("unit test".into()));
        assert!(!e.kernel_release.is_empty());
        assert!(e.summary().ends_with("; unit test"));
    }
}
