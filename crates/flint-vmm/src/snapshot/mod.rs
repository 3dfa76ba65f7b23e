//! Snapshots: a paused VM written to two files, and a VM made from them in a new process.
//!
//! - `state`: what KVM and flint's devices hold ([`Snapshot`]), as JSON behind a header: the
//!   magic `FLINTSNP`, the format version, the payload's length and its SHA-256. A truncated,
//!   corrupted or other-version file is refused before anything is built from it.
//! - `memory`: guest RAM, each region at its offset, with only the pages that are not all zero
//!   written (the rest are holes: an untouched page costs no disk). A restore maps it
//!   copy-on-write (`MAP_PRIVATE`, [`memory::map`]): nothing is read up front, and clones of
//!   one snapshot share its pages in the host's page cache.
//!
//! Disks are not copied: the guest's disk files are the user's to snapshot beside these.
//! [`create`] takes a snapshot of a running VM (from the control API); the builder's
//! `Vmm::restore` makes a VM from one.

pub mod create;
pub mod memory;

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::devices::legacy::cmos::CmosSnapshot;
use crate::devices::legacy::i8042::I8042Snapshot;
use crate::devices::legacy::serial::SerialSnapshot;
use crate::vstate::vcpu::VcpuState;
use crate::vstate::vm::VmState;

/// The file names in a snapshot directory.
pub const STATE_FILE: &str = "state";
pub const MEMORY_FILE: &str = "memory";

/// The state file format flint writes and reads. A flint that changes [`Snapshot`]
/// incompatibly bumps it.
pub const FORMAT_VERSION: u32 = 1;
const MAGIC: &[u8; 8] = b"FLINTSNP";
/// magic, version (u32 LE), payload length (u64 LE), SHA-256 of the payload.
const HEADER_LEN: usize = 8 + 4 + 8 + 32;
/// A state file is small (tens of KiB per vCPU); a larger one is not flint's.
pub const MAX_STATE: u64 = 64 << 20;

/// The largest file a snapshot of a VM with `memory_mib` of RAM writes (its memory file; the
/// state file is far smaller): what a jailed flint serving the API must be allowed to write.
pub fn largest_file(memory_mib: u64) -> u64 {
    memory_mib.saturating_mul(1 << 20).max(MAX_STATE)
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{0}")]
    Io(&'static str, #[source] std::io::Error),
    #[error("not a flint snapshot state file (no FLINTSNP header)")]
    NotASnapshot,
    #[error("the snapshot is format version {found}; this flint reads version {FORMAT_VERSION}")]
    Version { found: u32 },
    #[error("the state file is truncated ({found} of {expected} bytes)")]
    Truncated { found: u64, expected: u64 },
    #[error("the state file is corrupted (its checksum does not match)")]
    Checksum,
    #[error("the state file cannot be decoded: {0}")]
    Decode(String),
    #[error("the memory file is {found} bytes; the snapshot's memory is {expected} bytes")]
    MemorySize { found: u64, expected: u64 },
    #[error("{0}")]
    Mismatch(String),
}

/// What [`create_files`] could not make or open.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("{0}: cannot make the directory")]
    Dir(std::path::PathBuf, #[source] std::io::Error),
    #[error("cannot open {0} for writing")]
    File(std::path::PathBuf, #[source] std::io::Error),
}

/// Makes `dir` (0700) if it is missing and opens its state and memory files for a snapshot to
/// be written into through their descriptors: 0600, never through a symlink. With `fresh`,
/// files already there are refused instead of reused.
pub fn create_files(dir: &std::path::Path, fresh: bool) -> Result<(File, File), FilesError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| FilesError::Dir(dir.to_path_buf(), e))?;
    let open = |name: &str| {
        let path = dir.join(name);
        let mut o = std::fs::OpenOptions::new();
        o.read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW);
        if fresh {
            o.create_new(true);
        } else {
            o.create(true).truncate(false);
        }
        o.open(&path).map_err(|e| FilesError::File(path, e))
    };
    Ok((open(STATE_FILE)?, open(MEMORY_FILE)?))
}

/// A disk as the snapshotted VM had it; a restore may give another file of the same size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedDisk {
    pub path: std::path::PathBuf,
    pub read_only: bool,
    pub serial: Option<String>,
    pub size: u64,
    /// A read-only disk flint made in memory (a warm OCI guest's spec disk, read once by the
    /// guest): its path means nothing to another process, so a restore that is not given
    /// another disk for it makes one of zeros of its size.
    #[serde(default)]
    pub in_memory: bool,
}

/// A network interface as the snapshotted VM had it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedNet {
    pub tap: String,
    pub mac: [u8; 6],
    /// The MTU the guest's driver was told (kept on restore: the driver read it at probe).
    #[serde(default)]
    pub mtu: Option<u16>,
}

/// The machine a snapshot was taken of: what a restore must build again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    pub vcpus: u8,
    pub memory_mib: u64,
    pub acpi: bool,
    pub boot_timer: bool,
    /// A second UART (an OCI workload's stderr).
    pub serial2: bool,
    pub disks: Vec<SavedDisk>,
    pub nets: Vec<SavedNet>,
}

/// The legacy devices' state.
#[derive(Serialize, Deserialize)]
pub struct LegacyStates {
    pub serial: SerialSnapshot,
    pub serial2: Option<SerialSnapshot>,
    pub i8042: I8042Snapshot,
    pub cmos: CmosSnapshot,
}

/// One guest RAM region and where its bytes are in the memory file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryRange {
    pub guest_addr: u64,
    pub len: u64,
    pub file_offset: u64,
}

/// Everything in a snapshot's state file.
#[derive(Serialize, Deserialize)]
pub struct Snapshot {
    pub flint_version: String,
    pub machine: Machine,
    /// The host CPU's vendor (CPUID leaf 0): a snapshot restores on the same kind of CPU.
    pub cpu_vendor: String,
    pub vcpus: Vec<VcpuState>,
    pub vm: VmState,
    pub legacy: LegacyStates,
    /// Each virtio device (disks first, then network interfaces), in the machine's order.
    pub virtio: Vec<crate::devices::virtio::mmio::TransportState>,
    pub memory: Vec<MemoryRange>,
}

/// Writes `snapshot` to `file` (from its start, truncating) and makes it durable.
pub fn write_state(file: &File, snapshot: &Snapshot) -> Result<u64, SnapshotError> {
    let payload = serde_json::to_vec(snapshot)
        .map_err(|e| SnapshotError::Decode(format!("cannot encode: {e}")))?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(&payload));
    out.extend_from_slice(&payload);
    let io = |what| move |e| SnapshotError::Io(what, e);
    file.set_len(0).map_err(io("truncating the state file"))?;
    file.write_all_at(&out, 0)
        .map_err(io("writing the state file"))?;
    file.sync_all().map_err(io("syncing the state file"))?;
    Ok(out.len() as u64)
}

/// Reads and checks a state file.
pub fn read_state(file: &mut File) -> Result<Snapshot, SnapshotError> {
    let mut bytes = Vec::new();
    file.take(MAX_STATE)
        .read_to_end(&mut bytes)
        .map_err(|e| SnapshotError::Io("reading the state file", e))?;
    decode_state(&bytes)
}

/// Checks the header and checksum, then decodes.
pub fn decode_state(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(SnapshotError::NotASnapshot);
    }
    if bytes.len() < HEADER_LEN {
        return Err(SnapshotError::Truncated {
            found: bytes.len() as u64,
            expected: HEADER_LEN as u64,
        });
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != FORMAT_VERSION {
        return Err(SnapshotError::Version { found: version });
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[12..20]);
    let len = u64::from_le_bytes(len);
    let expected = (HEADER_LEN as u64).saturating_add(len);
    if (bytes.len() as u64) < expected {
        return Err(SnapshotError::Truncated {
            found: bytes.len() as u64,
            expected,
        });
    }
    let payload = &bytes[HEADER_LEN..];
    // Checked above: the payload is at least `len` bytes, and `len` fits in memory.
    let payload = &payload[..payload
        .len()
        .min(usize::try_from(len).unwrap_or(usize::MAX))];
    if Sha256::digest(payload).as_slice() != &bytes[20..52] {
        return Err(SnapshotError::Checksum);
    }
    serde_json::from_slice(payload).map_err(|e| SnapshotError::Decode(e.to_string()))
}

/// This host CPU's vendor string (CPUID leaf 0), e.g. `AuthenticAMD`.
pub fn host_cpu_vendor() -> String {
    let r = std::arch::x86_64::__cpuid(0);
    let mut v = Vec::with_capacity(12);
    for reg in [r.ebx, r.edx, r.ecx] {
        v.extend_from_slice(&reg.to_le_bytes());
    }
    String::from_utf8_lossy(&v).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header in front of `payload` as `write_state` makes it.
    fn framed(payload: &[u8], version: u32) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&version.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(&Sha256::digest(payload));
        out.extend_from_slice(payload);
        out
    }

    fn err(bytes: &[u8]) -> String {
        match decode_state(bytes) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("decoded"),
        }
    }

    #[test]
    fn bad_state_files_are_refused_with_what_is_wrong() {
        assert!(err(b"").contains("not a flint snapshot"));
        assert!(err(b"ELF\x7f....").contains("not a flint snapshot"));
        let good = framed(b"{}", FORMAT_VERSION);
        assert!(
            err(&good[..30]).contains("truncated"),
            "{}",
            err(&good[..30])
        );
        assert!(err(&good[..good.len() - 1]).contains("truncated"));
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(err(&flipped).contains("checksum"));
        assert!(err(&framed(b"{}", 99)).contains("format version 99"));
        // Framed well, but not a snapshot's JSON.
        assert!(err(&good).contains("cannot be decoded"));
    }

    #[test]
    fn the_vendor_is_a_known_one() {
        let v = host_cpu_vendor();
        assert!(
            ["AuthenticAMD", "GenuineIntel", "HygonGenuine"].contains(&v.as_str()),
            "{v}"
        );
    }
}
