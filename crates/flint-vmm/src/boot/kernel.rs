//! What kind of kernel image a file is, read from its headers before anything is loaded.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// An ELF executable (`vmlinux`, or a firmware test guest).
    Elf,
    /// A Linux `bzImage` (boot protocol header "HdrS" at 0x202).
    BzImage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelInfo {
    pub format: KernelFormat,
    /// True for Linux kernels: every bzImage, and ELFs carrying a "Linux" ELF note (every
    /// vmlinux since 4.19 has one). Firmware test guests have none.
    pub is_linux: bool,
}

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const BZIMAGE_MAGIC_OFFSET: u64 = 0x202;
const BZIMAGE_MAGIC: &[u8; 4] = b"HdrS";
/// Notes are a few hundred bytes; cap what we read from an untrusted file.
const MAX_NOTE_SEGMENT: u64 = 64 * 1024;
const MAX_PHDRS: u16 = 256;
const PT_NOTE: u32 = 4;
const PT_LOAD: u32 = 1;
/// The loader reads program headers as consecutive 56-byte `Elf64_Phdr`s, whatever
/// `e_phentsize` says; the check reads them the same way.
const PHDR_SIZE: usize = 56;

/// A loadable segment of an ELF kernel that cannot be what it claims.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SegmentError {
    #[error(
        "ELF segment {index}: {size} bytes at file offset {offset:#x} go past the file's end \
         ({file_len} bytes)"
    )]
    BeyondFile {
        index: usize,
        offset: u64,
        size: u64,
        file_len: u64,
    },
    #[error("ELF segment {index}: its file size {filesz} is larger than its memory size {memsz}")]
    FileLargerThanMemory {
        index: usize,
        filesz: u64,
        memsz: u64,
    },
    #[error(
        "ELF segment {index}: {memsz} bytes at {paddr:#x} go past the end of the address space"
    )]
    AddressOverflow {
        index: usize,
        paddr: u64,
        memsz: u64,
    },
    #[error("ELF segment {index} at {paddr:#x} is below 1 MiB, where flint puts the boot data")]
    BelowHighMemory { index: usize, paddr: u64 },
}

/// Checks an ELF kernel's loadable segments with checked arithmetic, before the loader copies
/// them: each one's file range inside the file, its memory range inside the address space and
/// above the boot data. Returns where the highest segment ends in guest memory (segments with
/// no file bytes, such as a bss of its own, included: the loader leaves them out). Headers that
/// cannot be read are left to the loader to report.
pub fn elf_segments_end(file: &mut File, himem_start: u64) -> Result<u64, SegmentError> {
    let Some(phdrs) = read_phdrs(file) else {
        return Ok(0);
    };
    let file_len = file.metadata().map_or(u64::MAX, |m| m.len());
    let mut end = 0u64;
    for (index, ph) in phdrs.chunks_exact(PHDR_SIZE).enumerate() {
        let field = |off| u64_at(ph, off).unwrap_or(0);
        if u32_at(ph, 0) != Some(PT_LOAD) {
            continue;
        }
        let (offset, paddr, filesz, memsz) = (field(8), field(24), field(32), field(40));
        if filesz > 0 && offset.checked_add(filesz).is_none_or(|e| e > file_len) {
            return Err(SegmentError::BeyondFile {
                index,
                offset,
                size: filesz,
                file_len,
            });
        }
        if filesz > memsz {
            return Err(SegmentError::FileLargerThanMemory {
                index,
                filesz,
                memsz,
            });
        }
        let seg_end = paddr
            .checked_add(memsz)
            .ok_or(SegmentError::AddressOverflow {
                index,
                paddr,
                memsz,
            })?;
        if memsz > 0 && paddr < himem_start {
            return Err(SegmentError::BelowHighMemory { index, paddr });
        }
        end = end.max(seg_end);
    }
    Ok(end)
}

/// The program header table as the loader will read it, or None if it cannot be read.
fn read_phdrs(file: &mut File) -> Option<Vec<u8>> {
    let mut ehdr = [0u8; 64];
    file.seek(SeekFrom::Start(0)).ok()?;
    if !read_full(file, &mut ehdr).ok()? {
        return None;
    }
    let phoff = u64_at(&ehdr, 0x20)?;
    // At most 65535 headers of 56 bytes: a few MiB.
    let len = usize::from(u16_at(&ehdr, 0x38)?).checked_mul(PHDR_SIZE)?;
    let mut phdrs = vec![0u8; len];
    file.seek(SeekFrom::Start(phoff)).ok()?;
    read_full(file, &mut phdrs).ok()?.then_some(phdrs)
}

pub fn inspect(file: &mut File) -> std::io::Result<Option<KernelInfo>> {
    let mut magic = [0u8; 4];
    file.seek(SeekFrom::Start(0))?;
    if read_full(file, &mut magic)? && &magic == ELF_MAGIC {
        return Ok(Some(KernelInfo {
            format: KernelFormat::Elf,
            is_linux: elf_has_note(file, b"Linux")?,
        }));
    }
    file.seek(SeekFrom::Start(BZIMAGE_MAGIC_OFFSET))?;
    if read_full(file, &mut magic)? && &magic == BZIMAGE_MAGIC {
        return Ok(Some(KernelInfo {
            format: KernelFormat::BzImage,
            is_linux: true,
        }));
    }
    Ok(None)
}

/// Reads exactly `buf.len()` bytes; false if the file ends first.
fn read_full(file: &mut File, buf: &mut [u8]) -> std::io::Result<bool> {
    match file.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

/// Whether a 64-bit little-endian ELF has a note whose owner name is `name` in a PT_NOTE segment.
/// Anything malformed simply means "no".
fn elf_has_note(file: &mut File, name: &[u8]) -> std::io::Result<bool> {
    let mut ehdr = [0u8; 64];
    file.seek(SeekFrom::Start(0))?;
    if !read_full(file, &mut ehdr)? || ehdr[4] != 2 || ehdr[5] != 1 {
        return Ok(false);
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (
        u64_at(&ehdr, 0x20),
        u16_at(&ehdr, 0x36),
        u16_at(&ehdr, 0x38),
    ) else {
        return Ok(false);
    };
    if phentsize < 56 || phnum > MAX_PHDRS {
        return Ok(false);
    }
    for i in 0..phnum as u64 {
        let mut ph = [0u8; 56];
        let Some(at) = phoff.checked_add(i * phentsize as u64) else {
            return Ok(false);
        };
        file.seek(SeekFrom::Start(at))?;
        if !read_full(file, &mut ph)? || u32_at(&ph, 0) != Some(PT_NOTE) {
            continue;
        }
        let (Some(off), Some(size)) = (u64_at(&ph, 8), u64_at(&ph, 32)) else {
            continue;
        };
        let mut seg = vec![0u8; size.min(MAX_NOTE_SEGMENT) as usize];
        file.seek(SeekFrom::Start(off))?;
        if read_full(file, &mut seg)? && notes_contain(&seg, name) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Walks ELF notes (namesz, descsz, type, name, desc; 4-byte aligned).
fn notes_contain(mut seg: &[u8], name: &[u8]) -> bool {
    let align4 = |n: usize| n.checked_add(3).map(|v| v & !3);
    while seg.len() >= 12 {
        let (Some(namesz), Some(descsz)) = (u32_at(seg, 0), u32_at(seg, 4)) else {
            return false;
        };
        let (namesz, descsz) = (namesz as usize, descsz as usize);
        let Some(note_name) = seg.get(12..12usize.saturating_add(namesz)) else {
            return false;
        };
        // The name is NUL-terminated inside namesz.
        if note_name.strip_suffix(&[0]).unwrap_or(note_name) == name {
            return true;
        }
        let next = align4(namesz)
            .zip(align4(descsz))
            .and_then(|(n, d)| 12usize.checked_add(n)?.checked_add(d));
        match next {
            Some(n) if n <= seg.len() => seg = &seg[n..],
            _ => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(name: &[u8], desc: &[u8]) -> Vec<u8> {
        let mut n = vec![];
        n.extend(u32::try_from(name.len() + 1).unwrap().to_le_bytes());
        n.extend(u32::try_from(desc.len()).unwrap().to_le_bytes());
        n.extend(1u32.to_le_bytes());
        n.extend(name);
        n.push(0);
        while n.len() % 4 != 0 {
            n.push(0);
        }
        n.extend(desc);
        while n.len() % 4 != 0 {
            n.push(0);
        }
        n
    }

    #[test]
    fn finds_notes_by_owner() {
        let mut seg = note(b"GNU", &[1, 2, 3, 4, 5]);
        seg.extend(note(b"Linux", &[0; 4]));
        assert!(notes_contain(&seg, b"Linux"));
        assert!(notes_contain(&seg, b"GNU"));
        assert!(!notes_contain(&seg, b"Xen"));
    }

    #[test]
    fn malformed_notes_are_not_a_panic() {
        let mut seg = note(b"GNU", &[]);
        seg[0] = 0xff; // name size beyond the segment
        assert!(!notes_contain(&seg, b"GNU"));
        let mut seg = note(b"GNU", &[]);
        seg[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        seg.extend(note(b"Linux", &[]));
        assert!(!notes_contain(&seg, b"Linux"));
        assert!(!notes_contain(&[0u8; 11], b""));
    }

    fn tmpfile(bytes: &[u8]) -> File {
        use std::io::Write;
        let path = std::env::temp_dir().join(format!(
            "flint-kernel-test-{}-{}",
            std::process::id(),
            bytes.len()
        ));
        let mut f = File::create(&path).unwrap();
        f.write_all(bytes).unwrap();
        let f = File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }

    #[test]
    fn detects_formats() {
        let mut bz = vec![0u8; 0x300];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        let info = inspect(&mut tmpfile(&bz)).unwrap().unwrap();
        assert_eq!(info.format, KernelFormat::BzImage);
        assert!(info.is_linux);
        assert_eq!(
            inspect(&mut tmpfile(b"#!/bin/sh\necho hi\n")).unwrap(),
            None
        );
        assert_eq!(inspect(&mut tmpfile(b"")).unwrap(), None);
        // A truncated ELF header is an ELF that is not Linux, left for the loader to reject.
        let info = inspect(&mut tmpfile(b"\x7fELF\x02\x01")).unwrap().unwrap();
        assert_eq!((info.format, info.is_linux), (KernelFormat::Elf, false));
    }
}
