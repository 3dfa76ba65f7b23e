//! A bundle's rootfs as an ext4 image, built with `mkfs.ext4 -d` and cached by content.
//!
//! The image's name is the SHA-256 of the tree (paths, types, modes, owners, link targets and
//! file contents), so two bundles with the same rootfs share one image and any change makes a
//! new one. Hashing every file on every run would cost more than the boot on a big rootfs, so a
//! memo keyed by the tree's metadata (sizes, mtimes, ctimes, inode numbers) remembers the
//! content hash; a changed file changes its ctime, which no user can set back.
//!
//! The image is shared read-only between instances; each guest writes to a tmpfs layer.
//!
//! The rootfs may belong to someone else than the caller (root running a user's bundle), who
//! may change it while flint reads it. So the tree is read through file descriptors (never
//! following a symlink, never opening anything but a regular file or a directory), what was
//! hashed is copied into a private staging directory, and `mkfs.ext4` reads only that copy.
//! The cache itself must be the caller's own: what is in it is attached to guests as their
//! root, so anything another user could have written there is refused.

use std::ffi::{CStr, CString, OsStr};
use std::fs::{File, Metadata};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// Bumped when the image layout (mkfs options, hashed fields) changes.
const FORMAT: &str = "flint-rootfs-image-1";

/// The first line of a memo (see [`read_memo`]); bumped when its layout changes.
const MEMO_FORMAT: &str = "flint-memo-2";

/// The most file data (apparent sizes, each inode once) a rootfs may hold. A guest root is
/// programs and libraries; more than this is almost always a mistake or a sparse file, and it
/// would become an image of that size in the cache.
pub const MAX_ROOTFS_BYTES: u64 = 8 << 30;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("reading the rootfs: {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the image cache {dir}")]
    Cache {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    /// Something in the cache that this user did not make, or that others could have changed.
    #[error("{what} {path} {why}")]
    Unsafe {
        what: &'static str,
        path: String,
        why: String,
    },
    #[error("the rootfs holds more than {} GiB of file data (at {path}); flint makes images of at most that: make the rootfs smaller, or put the data on a disk of its own (--disk)", MAX_ROOTFS_BYTES >> 30)]
    TooBig { path: String },
    #[error("{path} changed while flint was reading it; run again once nothing is writing to the rootfs")]
    Changed { path: String },
    #[error("{path}: as a user other than root, flint cannot give this entry its owner, type or attributes in the image (a name with a quote or a control character, or not UTF-8); rename it or run flint as root")]
    Unnamable { path: String },
    #[error("building the rootfs image needs mkfs.ext4, which is not installed (apt-get install e2fsprogs)")]
    NoMkfs,
    #[error("mkfs.ext4 could not build the rootfs image: {0}")]
    Mkfs(String),
    #[error("building the rootfs image as a user other than root needs debugfs (to give files their owners and make device nodes), which is not installed (apt-get install e2fsprogs)")]
    NoDebugfs,
    #[error("debugfs could not set owners and device nodes in the rootfs image: {0}")]
    Debugfs(String),
}

/// One entry of the tree, as walked in a fixed (sorted) order.
#[derive(Clone)]
struct Entry {
    rel: String,
    meta: Metadata,
}

fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Read {
        path: path.display().to_string(),
        source,
    }
}

fn cache_err(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Cache {
        dir: path.display().to_string(),
        source,
    }
}

fn cstring(bytes: &[u8]) -> std::io::Result<CString> {
    CString::new(bytes).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
}

/// `openat(dir, name, flags)`, `dir` None for the working directory.
fn openat(dir: Option<&File>, name: &CStr, flags: libc::c_int) -> std::io::Result<File> {
    let dirfd = dir.map_or(libc::AT_FDCWD, AsRawFd::as_raw_fd);
    // SAFETY: `name` is a valid C string and `dirfd` an open descriptor (or AT_FDCWD); the
    // result is checked before it is used.
    let fd = unsafe { libc::openat(dirfd, name.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// The names in the open directory `dir`, sorted by their bytes.
fn list(dir: &File) -> std::io::Result<Vec<Vec<u8>>> {
    // fdopendir takes the descriptor over (closedir closes it): give it a copy.
    let copy = dir.try_clone()?;
    // SAFETY: `copy` is an open directory descriptor; on success the DIR owns it (so `copy` is
    // forgotten, not closed), on failure it is still ours and closed when dropped.
    let d = unsafe { libc::fdopendir(copy.as_raw_fd()) };
    if d.is_null() {
        return Err(std::io::Error::last_os_error());
    }
    std::mem::forget(copy);
    let mut names = Vec::new();
    let result = loop {
        // SAFETY: errno is thread-local; readdir reports an error only through it.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: `d` is a live DIR from fdopendir, used by this thread only.
        let ent = unsafe { libc::readdir(d) };
        if ent.is_null() {
            let e = std::io::Error::last_os_error();
            break if e.raw_os_error() == Some(0) {
                Ok(())
            } else {
                Err(e)
            };
        }
        // SAFETY: readdir returned a valid dirent whose d_name is NUL-terminated, valid until
        // the next readdir on `d`; it is copied at once.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) }.to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    };
    // SAFETY: `d` is live and closed exactly once (this closes the copied descriptor).
    unsafe { libc::closedir(d) };
    result?;
    names.sort();
    Ok(names)
}

/// One entry as the traversal sees it: its parent directory and name (open it relative to
/// those, never by path), and an `O_PATH` descriptor of the entry itself, whose metadata this
/// is, so that a directory is listed and a link read from exactly the inode that was stat'ed.
struct Node<'a> {
    rel: &'a str,
    path: &'a Path,
    parent: Option<&'a File>,
    name: &'a CStr,
    handle: &'a File,
    /// The directory itself, open for reading, if it is one.
    dir: Option<&'a File>,
    meta: &'a Metadata,
}

type Visit<'v> = dyn FnMut(&Node) -> Result<(), ImageError> + 'v;

/// Calls `visit` for every entry under `root` (itself included, as ""), directories before
/// their contents, in byte order of the names. Symlinks are not followed, not even at `root`.
fn traverse(root: &Path, visit: &mut Visit) -> Result<(), ImageError> {
    let name = cstring(root.as_os_str().as_bytes()).map_err(read_err(root))?;
    traverse_entry(root, "", None, &name, visit)
}

fn traverse_entry(
    path: &Path,
    rel: &str,
    parent: Option<&File>,
    name: &CStr,
    visit: &mut Visit,
) -> Result<(), ImageError> {
    let handle = openat(parent, name, libc::O_PATH | libc::O_NOFOLLOW).map_err(read_err(path))?;
    let meta = handle.metadata().map_err(read_err(path))?;
    let dir = if meta.is_dir() {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
        Some(openat(Some(&handle), c".", flags).map_err(read_err(path))?)
    } else {
        None
    };
    visit(&Node {
        rel,
        path,
        parent,
        name,
        handle: &handle,
        dir: dir.as_ref(),
        meta: &meta,
    })?;
    let Some(dir) = dir else {
        return Ok(());
    };
    for child in list(&dir).map_err(read_err(path))? {
        let child_path = path.join(OsStr::from_bytes(&child));
        let child_rel = format!("{rel}/{}", String::from_utf8_lossy(&child));
        let child_name = cstring(&child).map_err(read_err(&child_path))?;
        traverse_entry(&child_path, &child_rel, Some(&dir), &child_name, visit)?;
    }
    Ok(())
}

/// Every entry under `root`, as [`traverse`] visits them; refused if its files hold more than
/// [`MAX_ROOTFS_BYTES`].
fn walk(root: &Path) -> Result<Vec<Entry>, ImageError> {
    let mut out = Vec::new();
    let mut total: u64 = 0;
    let mut seen = std::collections::HashSet::new();
    traverse(root, &mut |n: &Node| {
        // Apparent sizes, so a sparse file counts as what the image would have to hold.
        if n.meta.is_file() && (n.meta.nlink() < 2 || seen.insert((n.meta.dev(), n.meta.ino()))) {
            total = total
                .checked_add(n.meta.size())
                .filter(|t| *t <= MAX_ROOTFS_BYTES)
                .ok_or_else(|| ImageError::TooBig {
                    path: n.path.display().to_string(),
                })?;
        }
        out.push(Entry {
            rel: n.rel.to_string(),
            meta: n.meta.clone(),
        });
        Ok(())
    })?;
    Ok(out)
}

fn file_type(m: &Metadata) -> &'static str {
    let t = m.file_type();
    match () {
        _ if t.is_dir() => "d",
        _ if t.is_symlink() => "l",
        _ if t.is_file() => "f",
        _ if t.is_char_device() => "c",
        _ if t.is_block_device() => "b",
        _ if t.is_fifo() => "p",
        _ => "s",
    }
}

/// The memo key: the tree's metadata, cheap to read.
fn metadata_key(entries: &[Entry]) -> String {
    let mut h = Sha256::new();
    h.update(FORMAT);
    for e in entries {
        let m = &e.meta;
        h.update(format!(
            "{}\0{}\0{}\0{}\0{}\0{}\0{}\0{}.{}\0{}.{}\0{}\0{}\n",
            e.rel,
            file_type(m),
            m.mode(),
            m.uid(),
            m.gid(),
            m.size(),
            m.rdev(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
            m.ino(),
            m.dev()
        ));
    }
    hex(&h.finalize())
}

/// Whether `now` is still the inode `then` described, unchanged (a write changes the ctime).
fn same_inode(then: &Metadata, now: &Metadata) -> bool {
    (then.dev(), then.ino(), then.mode(), then.uid(), then.gid())
        == (now.dev(), now.ino(), now.mode(), now.uid(), now.gid())
        && (then.size(), then.rdev(), then.nlink()) == (now.size(), now.rdev(), now.nlink())
        && (
            then.mtime(),
            then.mtime_nsec(),
            then.ctime(),
            then.ctime_nsec(),
        ) == (now.mtime(), now.mtime_nsec(), now.ctime(), now.ctime_nsec())
}

/// The image's name: the tree's content, read again entry by entry and checked against what
/// [`walk`] saw. With `stage`, what is hashed is also copied there, so the copy is exactly the
/// content the name stands for.
fn content_key(
    root: &Path,
    entries: &[Entry],
    mut stage: Option<&mut Stage>,
) -> Result<String, ImageError> {
    let mut h = Sha256::new();
    h.update(FORMAT);
    let mut first_path_of_inode = std::collections::HashMap::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut next = entries.iter();
    traverse(root, &mut |n: &Node| {
        let m = n.meta;
        let changed = || ImageError::Changed {
            path: n.path.display().to_string(),
        };
        match next.next() {
            Some(e) if e.rel == n.rel && same_inode(&e.meta, m) => {}
            _ => return Err(changed()),
        }
        let copy = stage.as_deref_mut().map(|s| s.path_of(root, n.path));
        h.update(format!(
            "{}\0{}\0{:o}\0{}\0{}\0{}\0",
            n.rel,
            file_type(m),
            m.mode() & 0o7777,
            m.uid(),
            m.gid(),
            m.rdev()
        ));
        if m.is_file() && m.nlink() > 1 {
            // Hard links stay hard links in the image.
            if let Some((first, first_copy)) = first_path_of_inode.get(&(m.dev(), m.ino())) {
                h.update(format!("link\0{first}\n"));
                if let (Some(s), Some(copy)) = (stage.as_deref_mut(), copy) {
                    s.link(first_copy, &copy)?;
                }
                return Ok(());
            }
            first_path_of_inode.insert((m.dev(), m.ino()), (n.rel.to_string(), copy.clone()));
        }
        if m.file_type().is_symlink() {
            let target = read_link(n.handle).map_err(read_err(n.path))?;
            h.update(&target);
            if let (Some(s), Some(copy)) = (stage.as_deref_mut(), &copy) {
                s.symlink(&target, copy, m)?;
            }
        } else if m.is_file() {
            h.update(m.size().to_le_bytes());
            // Never by path and never anything but this regular file: a FIFO or device put in
            // its place is not opened for reading (O_NONBLOCK: not even waited on).
            let parent = n.parent.ok_or_else(changed)?;
            let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;
            let mut f = match openat(Some(parent), n.name, flags) {
                Ok(f) => f,
                Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(changed()),
                Err(e) => return Err(read_err(n.path)(e)),
            };
            let opened = f.metadata().map_err(read_err(n.path))?;
            if !opened.is_file() || !same_inode(m, &opened) {
                return Err(changed());
            }
            let mut out = match (stage.as_deref_mut(), &copy) {
                (Some(s), Some(copy)) => Some(s.create_file(copy)?),
                _ => None,
            };
            let mut read: u64 = 0;
            loop {
                let n_read = f.read(&mut buf).map_err(read_err(n.path))?;
                if n_read == 0 {
                    break;
                }
                let chunk = &buf[..n_read];
                h.update(chunk);
                read = read.saturating_add(u64::try_from(n_read).unwrap_or(u64::MAX));
                if let (Some(out), Some(copy)) = (out.as_mut(), &copy) {
                    write_sparse(out, chunk).map_err(cache_err(copy))?;
                }
                if read > m.size() {
                    return Err(changed());
                }
            }
            let after = f.metadata().map_err(read_err(n.path))?;
            if read != m.size() || !same_inode(m, &after) {
                return Err(changed());
            }
            if let (Some(s), Some(out), Some(copy)) = (stage.as_deref_mut(), out, &copy) {
                let attrs = xattrs(&f).map_err(read_err(n.path))?;
                s.finish_file(out, copy, m, attrs)?;
            }
        } else if let (Some(s), Some(copy)) = (stage.as_deref_mut(), &copy) {
            let attrs = match n.dir {
                Some(dir) => xattrs(dir).map_err(read_err(n.path))?,
                // Links and nodes: their attributes are not copied (they would have to be read
                // by path, which a writer of the rootfs could redirect).
                None => Vec::new(),
            };
            s.other(copy, m, attrs)?;
        }
        h.update(b"\n");
        Ok(())
    })?;
    if next.next().is_some() {
        // Something went away between the walk and the hash.
        return Err(ImageError::Changed {
            path: root.display().to_string(),
        });
    }
    Ok(hex(&h.finalize()))
}

/// The target of the symlink `handle` (an `O_PATH|O_NOFOLLOW` descriptor of it).
fn read_link(handle: &File) -> std::io::Result<Vec<u8>> {
    // PATH_MAX (4096) counts the NUL readlink does not write: a full buffer means longer.
    let mut buf = vec![0u8; 4097];
    // SAFETY: an empty path with an O_PATH descriptor reads that link; `buf` has `buf.len()`
    // writable bytes.
    let n = unsafe {
        libc::readlinkat(
            handle.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).map_err(|_| std::io::Error::last_os_error())?;
    if n >= buf.len() {
        return Err(std::io::ErrorKind::InvalidData.into());
    }
    buf.truncate(n);
    Ok(buf)
}

/// An extended attribute: its name and value.
type Xattr = (CString, Vec<u8>);

/// The extended attributes of the open file or directory `f` (file capabilities, ACLs,
/// security labels), which `mkfs.ext4 -d` puts into the image.
fn xattrs(f: &File) -> std::io::Result<Vec<Xattr>> {
    let fd = f.as_raw_fd();
    // SAFETY: a null buffer of size 0 asks for the size only.
    let size = unsafe { libc::flistxattr(fd, std::ptr::null_mut(), 0) };
    let size = match usize::try_from(size) {
        Ok(0) => return Ok(Vec::new()),
        Ok(n) => n,
        Err(_) => {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENOTSUP) => Ok(Vec::new()),
                _ => Err(e),
            };
        }
    };
    let mut names = vec![0u8; size];
    // SAFETY: `names` has `names.len()` writable bytes.
    let n = unsafe { libc::flistxattr(fd, names.as_mut_ptr().cast(), names.len()) };
    // ERANGE (the list grew since) comes back as an error: the file is being changed.
    names.truncate(usize::try_from(n).map_err(|_| std::io::Error::last_os_error())?);
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = cstring(name)?;
        // SAFETY: as above, a size query.
        let size = unsafe { libc::fgetxattr(fd, name.as_ptr(), std::ptr::null_mut(), 0) };
        let mut value =
            vec![0u8; usize::try_from(size).map_err(|_| std::io::Error::last_os_error())?];
        // SAFETY: `value` has `value.len()` writable bytes.
        let n =
            unsafe { libc::fgetxattr(fd, name.as_ptr(), value.as_mut_ptr().cast(), value.len()) };
        value.truncate(usize::try_from(n).map_err(|_| std::io::Error::last_os_error())?);
        out.push((name, value));
    }
    Ok(out)
}

/// Writes `chunk` at the end of what `out` has so far, as a hole if it is all zeros, so that
/// the staging copy of a sparse file stays sparse.
fn write_sparse(out: &mut File, chunk: &[u8]) -> std::io::Result<()> {
    if chunk.iter().all(|b| *b == 0) {
        let len = i64::try_from(chunk.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        out.seek(SeekFrom::Current(len))?;
        Ok(())
    } else {
        out.write_all(chunk)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A size with room for the tree: data in 4 KiB blocks, an inode per entry, ext4's own
/// metadata and some slack; never below 16 MiB. None only for sizes [`walk`] refuses.
fn image_size(entries: &[Entry]) -> Option<u64> {
    let mut data: u64 = 0;
    for e in entries {
        data = data.checked_add(
            e.meta
                .size()
                .div_ceil(4096)
                .checked_mul(4096)?
                .checked_add(256)?,
        )?;
    }
    Some(
        data.checked_add(data / 4)?
            .checked_add(16 << 20)?
            .div_ceil(1 << 20)
            << 20,
    )
}

fn euid() -> u32 {
    // SAFETY: geteuid has no failure mode.
    unsafe { libc::geteuid() }
}

/// Why a file in the cache with metadata `m` cannot be trusted, if it cannot: it is another
/// user's, or others can write to it.
pub(crate) fn not_private(m: &Metadata) -> Option<String> {
    if m.uid() != euid() {
        return Some(format!(
            "belongs to uid {}, not to you (uid {})",
            m.uid(),
            euid()
        ));
    }
    if m.mode() & 0o022 != 0 {
        return Some(format!(
            "is writable by other users (mode {:04o})",
            m.mode() & 0o7777
        ));
    }
    None
}

/// Makes `dir` (mode 0700) if it is not there, and checks that it is a directory of ours that
/// no one else can write to; returns its resolved path.
fn own_dir(dir: &Path) -> Result<PathBuf, ImageError> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(cache_err(dir))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(cache_err(dir)(e)),
        _ => {}
    }
    let real = std::fs::canonicalize(dir).map_err(cache_err(dir))?;
    let m = std::fs::symlink_metadata(&real).map_err(cache_err(dir))?;
    let unsafe_dir = |why: String| ImageError::Unsafe {
        what: "the image cache",
        path: real.display().to_string(),
        why,
    };
    if !m.is_dir() {
        return Err(unsafe_dir(
            "is not a directory: remove it, or set FLINT_IMAGE_CACHE to a directory of your own"
                .into(),
        ));
    }
    if m.uid() != euid() {
        return Err(unsafe_dir(format!(
            "belongs to uid {}, not to you (uid {}): set FLINT_IMAGE_CACHE to a directory of your own",
            m.uid(),
            euid()
        )));
    }
    if m.mode() & 0o022 != 0 {
        return Err(unsafe_dir(format!(
            "is writable by other users (mode {:04o}): chmod 700 it, or set FLINT_IMAGE_CACHE to a directory of your own",
            m.mode() & 0o7777
        )));
    }
    Ok(real)
}

/// Creates a new file for writing at `path` (mode 0600), never an existing one and never
/// through a symlink: a name someone else prepared is refused, not reused.
fn create_new(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// The name of the `n`th candidate for a temporary file next to `target`.
fn temp_name(target: &Path, n: u32) -> PathBuf {
    let pid = std::process::id();
    match n {
        0 => target.with_extension(format!("tmp{pid}")),
        n => target.with_extension(format!("tmp{pid}-{n}")),
    }
}

/// A new temporary file next to `target`: the first candidate name that does not exist yet.
fn create_temp(target: &Path) -> Result<(PathBuf, File), ImageError> {
    let mut n = 0;
    loop {
        let tmp = temp_name(target, n);
        match create_new(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => n += 1,
            Err(e) => return Err(cache_err(&tmp)(e)),
        }
    }
}

/// The content key `memo` records for the tree whose metadata key is `meta_key`, if it is a
/// memo flint wrote: anything malformed or for other metadata is ignored (the tree is hashed
/// again and the memo rewritten). A memo that is not our own private file is refused.
fn read_memo(memo: &Path, meta_key: &str) -> Result<Option<String>, ImageError> {
    let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;
    let name = cstring(memo.as_os_str().as_bytes()).map_err(cache_err(memo))?;
    let unsafe_memo = |why: String| ImageError::Unsafe {
        what: "the image cache memo",
        path: memo.display().to_string(),
        why,
    };
    let mut f = match openat(None, &name, flags) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(unsafe_memo(
                "is a symlink, which flint never makes: remove it".into(),
            ))
        }
        Err(e) => return Err(cache_err(memo)(e)),
    };
    let m = f.metadata().map_err(cache_err(memo))?;
    if !m.is_file() {
        return Err(unsafe_memo("is not a regular file: remove it".into()));
    }
    if m.uid() != euid() || m.mode() & 0o022 != 0 {
        return Err(unsafe_memo(format!(
            "belongs to uid {} with mode {:04o}; flint makes memos of your own (uid {}), mode 0600: remove it",
            m.uid(),
            m.mode() & 0o7777,
            euid()
        )));
    }
    let mut text = String::new();
    if m.len() > 256 || f.read_to_string(&mut text).is_err() {
        return Ok(None);
    }
    let mut lines = text.split('\n');
    let valid =
        |k: &str| k.len() == 64 && k.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    match (
        lines.next(),
        lines.next(),
        lines.next(),
        lines.next(),
        lines.next(),
    ) {
        (Some(MEMO_FORMAT), Some(meta), Some(key), Some(""), None)
            if meta == meta_key && valid(key) =>
        {
            Ok(Some(key.to_string()))
        }
        _ => Ok(None),
    }
}

/// Writes the memo; only a shortcut, so a failure costs the next run a hash, no more.
fn write_memo(memo: &Path, meta_key: &str, key: &str) {
    if let Ok((tmp, mut f)) = create_temp(memo) {
        if f.write_all(format!("{MEMO_FORMAT}\n{meta_key}\n{key}\n").as_bytes())
            .is_err()
            || std::fs::rename(&tmp, memo).is_err()
        {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

/// Whether `image` can be used: what flint builds for a tree of `size` bytes (see [`build`]),
/// a regular file of ours, mode 0600, that size or twice it, ext4. False if it is not there, or
/// is one of ours that is not such an image (an older flint's, say), to be built again over
/// it. An image that someone else made or could have changed is refused.
fn check_image(image: &Path, size: u64) -> Result<bool, ImageError> {
    let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;
    let name = cstring(image.as_os_str().as_bytes()).map_err(cache_err(image))?;
    let bad = |why: String| ImageError::Unsafe {
        what: "the cached image",
        path: image.display().to_string(),
        why: format!("{why}, not an image flint built: remove it (flint builds it again)"),
    };
    let mut f = match openat(None, &name, flags) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(bad("is a symlink".into())),
        Err(e) => return Err(cache_err(image)(e)),
    };
    let m = f.metadata().map_err(cache_err(image))?;
    if !m.is_file() {
        return Err(bad("is not a regular file".into()));
    }
    if let Some(why) = not_private(&m) {
        return Err(bad(why));
    }
    if m.mode() & 0o7777 != 0o600 || (m.len() != size && Some(m.len()) != size.checked_mul(2)) {
        return Ok(false);
    }
    // The ext4 superblock's magic number.
    let mut magic = [0u8; 2];
    let read = f
        .seek(SeekFrom::Start(1080))
        .and_then(|_| f.read_exact(&mut magic));
    Ok(read.is_ok() && magic == [0x53, 0xef])
}

/// The cached image of `rootfs` in `cache`, built if it is not there yet.
pub fn image_for(rootfs: &Path, cache: &Path) -> Result<PathBuf, ImageError> {
    let cache = own_dir(cache)?;
    let memos = own_dir(&cache.join("by-metadata"))?;
    let entries = walk(rootfs)?;
    let size = image_size(&entries).ok_or_else(|| ImageError::TooBig {
        path: rootfs.display().to_string(),
    })?;
    let meta_key = metadata_key(&entries);
    let memo = memos.join(&meta_key);
    if let Some(key) = read_memo(&memo, &meta_key)? {
        let image = cache.join(format!("{key}.ext4"));
        if check_image(&image, size)? {
            return Ok(image);
        }
    }
    let key = content_key(rootfs, &entries, None)?;
    let image = cache.join(format!("{key}.ext4"));
    if !check_image(&image, size)? {
        let mut stage = Stage::new(&cache)?;
        // The copy is hashed again: it must be the content the image is named by.
        if content_key(rootfs, &entries, Some(&mut stage))? != key {
            return Err(ImageError::Changed {
                path: rootfs.display().to_string(),
            });
        }
        stage.finish()?;
        #[cfg(test)]
        tests::before_mkfs(rootfs);
        build(&stage, entries.len(), size, &image)?;
    }
    write_memo(&memo, &meta_key, &key);
    Ok(image)
}

/// What a staged entry still needs once the image is built, when flint is not root: an owner
/// it could not give the copy, or a device node it could not make.
struct Fixup {
    rel: String,
    path: PathBuf,
    fix: Fix,
}

enum Fix {
    Owner {
        uid: u32,
        gid: u32,
    },
    Device {
        kind: char,
        major: u32,
        minor: u32,
        mode: u32,
    },
    /// An extended attribute, its value in a file of the stage.
    Xattr {
        name: String,
        value: PathBuf,
    },
}

/// A private copy of the rootfs, in a new 0700 directory in the cache, removed when dropped.
struct Stage {
    dir: PathBuf,
    root: PathBuf,
    rootfs: Option<PathBuf>,
    /// Directories, with their metadata and attributes, to finish once filled.
    dirs: Vec<(PathBuf, Metadata, Vec<Xattr>)>,
    /// Directories given their final modes.
    finished: Vec<PathBuf>,
    fixups: Vec<Fixup>,
}

impl Stage {
    fn new(cache: &Path) -> Result<Stage, ImageError> {
        remove_stale_stages(cache);
        let mut n = 0;
        loop {
            let dir = cache.join(format!(".stage-{}-{n}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {
                    return Ok(Stage {
                        root: dir.join("rootfs"),
                        dir,
                        rootfs: None,
                        dirs: Vec::new(),
                        finished: Vec::new(),
                        fixups: Vec::new(),
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => n += 1,
                Err(e) => return Err(cache_err(&dir)(e)),
            }
        }
    }

    /// Where the entry at `path` (under `rootfs`) goes in the copy.
    fn path_of(&mut self, rootfs: &Path, path: &Path) -> PathBuf {
        self.rootfs.get_or_insert_with(|| rootfs.to_path_buf());
        match path.strip_prefix(rootfs) {
            Ok(rel) if !rel.as_os_str().is_empty() => self.root.join(rel),
            _ => self.root.clone(),
        }
    }

    /// Leaves `fix` of `copy` for debugfs to make in the image.
    fn fix(&mut self, copy: &Path, fix: Fix) {
        let rel = copy.strip_prefix(&self.root).unwrap_or(copy);
        self.fixups.push(Fixup {
            rel: format!("/{}", rel.to_string_lossy()),
            path: self.original(copy),
            fix,
        });
    }

    /// Gives `copy` the extended attributes `attrs`; those only root may set (file
    /// capabilities) or that the cache's file system cannot hold are left for debugfs.
    fn set_xattrs(&mut self, copy: &Path, attrs: Vec<Xattr>) -> Result<(), ImageError> {
        let path = cstring(copy.as_os_str().as_bytes()).map_err(Self::err(copy))?;
        for (name, value) in attrs {
            // SAFETY: valid C strings and a buffer of `value.len()` bytes.
            let r = unsafe {
                libc::lsetxattr(
                    path.as_ptr(),
                    name.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    0,
                )
            };
            if r == 0 {
                continue;
            }
            let e = std::io::Error::last_os_error();
            if !matches!(e.raw_os_error(), Some(libc::EPERM | libc::ENOTSUP)) {
                return Err(Self::err(copy)(e));
            }
            let file = self.dir.join(format!("xattr-{}", self.fixups.len()));
            create_new(&file)
                .and_then(|mut f| f.write_all(&value))
                .map_err(Self::err(&file))?;
            let name = name.to_string_lossy().into_owned();
            self.fix(copy, Fix::Xattr { name, value: file });
        }
        Ok(())
    }

    /// The rootfs path `copy` is the copy of, for messages.
    fn original(&self, copy: &Path) -> PathBuf {
        match (&self.rootfs, copy.strip_prefix(&self.root)) {
            (Some(rootfs), Ok(rel)) if !rel.as_os_str().is_empty() => rootfs.join(rel),
            (Some(rootfs), _) => rootfs.clone(),
            (None, _) => copy.to_path_buf(),
        }
    }

    fn err(copy: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
        cache_err(copy)
    }

    fn link(&mut self, first: &Option<PathBuf>, copy: &Path) -> Result<(), ImageError> {
        match first {
            Some(first) => std::fs::hard_link(first, copy).map_err(Self::err(copy)),
            None => Ok(()),
        }
    }

    fn symlink(&mut self, target: &[u8], copy: &Path, m: &Metadata) -> Result<(), ImageError> {
        std::os::unix::fs::symlink(OsStr::from_bytes(target), copy).map_err(Self::err(copy))?;
        self.own(copy, m)?;
        set_times(copy, m).map_err(Self::err(copy))
    }

    fn create_file(&mut self, copy: &Path) -> Result<File, ImageError> {
        create_new(copy).map_err(Self::err(copy))
    }

    fn finish_file(
        &mut self,
        out: File,
        copy: &Path,
        m: &Metadata,
        attrs: Vec<Xattr>,
    ) -> Result<(), ImageError> {
        out.set_len(m.size()).map_err(Self::err(copy))?;
        drop(out);
        self.own(copy, m)?;
        // After chown, which clears set-user-ID bits and file capabilities; attributes while
        // the copy is still writable (the mode agrees with an ACL in them, as in the rootfs).
        self.set_xattrs(copy, attrs)?;
        chmod(copy, m.mode() & 0o7777).map_err(Self::err(copy))?;
        set_times(copy, m).map_err(Self::err(copy))
    }

    /// A directory, FIFO, socket or device node: made as a node, never opened.
    fn other(&mut self, copy: &Path, m: &Metadata, attrs: Vec<Xattr>) -> Result<(), ImageError> {
        let t = m.file_type();
        if t.is_dir() {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(copy)
                .map_err(Self::err(copy))?;
            self.own(copy, m)?;
            self.dirs.push((copy.to_path_buf(), m.clone(), attrs));
            return Ok(());
        }
        let kind = m.mode() & libc::S_IFMT;
        let name = cstring(copy.as_os_str().as_bytes()).map_err(Self::err(copy))?;
        // SAFETY: `name` is a valid C string; mknod only creates a node.
        let r = unsafe { libc::mknod(name.as_ptr(), kind | 0o600, m.rdev()) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            let device = match () {
                _ if t.is_char_device() => 'c',
                _ if t.is_block_device() => 'b',
                _ => return Err(Self::err(copy)(e)),
            };
            if e.raw_os_error() != Some(libc::EPERM) {
                return Err(Self::err(copy)(e));
            }
            // Only root makes device nodes: debugfs puts it into the image afterwards.
            let fix = Fix::Device {
                kind: device,
                major: libc::major(m.rdev()),
                minor: libc::minor(m.rdev()),
                mode: m.mode(),
            };
            self.fix(copy, fix);
            self.fix(
                copy,
                Fix::Owner {
                    uid: m.uid(),
                    gid: m.gid(),
                },
            );
            return Ok(());
        }
        self.own(copy, m)?;
        chmod(copy, m.mode() & 0o7777).map_err(Self::err(copy))?;
        set_times(copy, m).map_err(Self::err(copy))
    }

    /// Gives `copy` the owner in `m`; one that only root could give is left for debugfs.
    fn own(&mut self, copy: &Path, m: &Metadata) -> Result<(), ImageError> {
        match std::os::unix::fs::lchown(copy, Some(m.uid()), Some(m.gid())) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                let fix = Fix::Owner {
                    uid: m.uid(),
                    gid: m.gid(),
                };
                self.fix(copy, fix);
                Ok(())
            }
            Err(e) => Err(Self::err(copy)(e)),
        }
    }

    /// Gives the directories their modes and times, deepest first (a read-only directory can
    /// take no more entries, and each new entry changes its parent's mtime).
    fn finish(&mut self) -> Result<(), ImageError> {
        for (dir, m, attrs) in std::mem::take(&mut self.dirs).into_iter().rev() {
            // Attributes while the copy is still writable (the mode agrees with an ACL in them,
            // as in the rootfs).
            self.set_xattrs(&dir, attrs)?;
            chmod(&dir, m.mode() & 0o7777).map_err(Self::err(&dir))?;
            set_times(&dir, &m).map_err(Self::err(&dir))?;
            self.finished.push(dir);
        }
        Ok(())
    }
}

/// Removes the staging directories of flint runs that were killed: their process is gone.
fn remove_stale_stages(cache: &Path) {
    let Ok(dir) = std::fs::read_dir(cache) else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix(".stage-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<libc::pid_t>().ok())
            .filter(|pid| *pid > 0);
        let Some(pid) = pid else {
            continue;
        };
        // SAFETY: signal 0 only asks whether the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone && e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&e.path());
        }
    }
}

/// Removes `dir` and everything in it, read-only directories included; best effort.
fn remove_tree(dir: &Path) {
    let _ = chmod(dir, 0o700);
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

impl Drop for Stage {
    fn drop(&mut self) {
        // Directories without write permission cannot be emptied by their owner.
        for dir in self.dirs.iter().map(|d| &d.0).chain(&self.finished) {
            let _ = chmod(dir, 0o700);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn chmod(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Gives `path` (not following a symlink) the access and modification times in `m`.
fn set_times(path: &Path, m: &Metadata) -> std::io::Result<()> {
    let name = cstring(path.as_os_str().as_bytes())?;
    let times = [
        libc::timespec {
            tv_sec: m.atime(),
            tv_nsec: m.atime_nsec(),
        },
        libc::timespec {
            tv_sec: m.mtime(),
            tv_nsec: m.mtime_nsec(),
        },
    ];
    // SAFETY: `name` is a valid C string and `times` two timespecs, as utimensat takes.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            name.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Builds the image from the staged copy next to its final name and renames it into place, so
/// a concurrent run never sees half an image.
fn build(stage: &Stage, entries: usize, size: u64, image: &Path) -> Result<(), ImageError> {
    let (tmp, file) = create_temp(image)?;
    // The estimate is generous; if it was not, once more at twice the size.
    let result = match mkfs(&stage.root, entries, &tmp, &file, size) {
        Err(Mkfs::Full(_)) => match size.checked_mul(2) {
            Some(twice) => mkfs(&stage.root, entries, &tmp, &file, twice),
            None => Err(Mkfs::Failed(ImageError::TooBig {
                path: stage.root.display().to_string(),
            })),
        },
        other => other,
    }
    .map_err(|e| match e {
        Mkfs::Full(msg) => ImageError::Mkfs(msg),
        Mkfs::Failed(e) => e,
    })
    .and_then(|()| fix_up(&stage.fixups, &tmp))
    .and_then(|()| {
        // Whatever the umask: the image is private to its owner.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .and_then(|()| std::fs::rename(&tmp, image))
            .map_err(cache_err(image))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// How one `mkfs.ext4` failed: the image was too small (worth a bigger try), or otherwise.
enum Mkfs {
    Full(String),
    Failed(ImageError),
}

/// Makes `path` (open as `file`) a `size`-byte ext4 image of `root` (`entries` files and
/// directories).
fn mkfs(root: &Path, entries: usize, path: &Path, file: &File, size: u64) -> Result<(), Mkfs> {
    file.set_len(size)
        .map_err(|e| Mkfs::Failed(cache_err(path)(e)))?;
    let inodes = entries
        .checked_add(64)
        .ok_or(Mkfs::Failed(ImageError::TooBig {
            path: root.display().to_string(),
        }))?;
    let out = Command::new("mkfs.ext4")
        // No journal: the image is only ever attached read-only. No reserved blocks, an inode
        // for every entry, and no lazy init left for the guest kernel to do.
        .args(["-q", "-F", "-m", "0", "-O", "^has_journal", "-b", "4096"])
        .args(["-E", "lazy_itable_init=0,nodiscard", "-N"])
        .arg(inodes.to_string())
        .arg("-d")
        .arg(root)
        .arg(path)
        .output()
        .map_err(|e| {
            Mkfs::Failed(match e.kind() {
                std::io::ErrorKind::NotFound => ImageError::NoMkfs,
                _ => ImageError::Mkfs(e.to_string()),
            })
        })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let msg: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let msg = msg.join(" / ");
    if stderr.contains("Could not allocate") || stderr.contains("No space left") {
        Err(Mkfs::Full(msg))
    } else {
        Err(Mkfs::Failed(ImageError::Mkfs(msg)))
    }
}

/// Gives the image the owners and device nodes a non-root flint could not give its copy, with
/// debugfs (from e2fsprogs, like mkfs.ext4).
fn fix_up(fixups: &[Fixup], image: &Path) -> Result<(), ImageError> {
    if fixups.is_empty() {
        return Ok(());
    }
    let mut script = String::new();
    // debugfs splits its commands on blanks and takes a double-quoted argument whole.
    let quotable =
        |s: &str| !(s.contains('"') || s.chars().any(char::is_control) || s.contains('\u{fffd}'));
    for f in fixups {
        let p = if f.rel == "/" {
            "/"
        } else {
            f.rel.trim_end_matches('/')
        };
        if !quotable(p) {
            return Err(ImageError::Unnamable {
                path: f.path.display().to_string(),
            });
        }
        match &f.fix {
            Fix::Owner { uid, gid } => {
                script.push_str(&format!("sif \"{p}\" uid {uid}\nsif \"{p}\" gid {gid}\n"));
            }
            Fix::Device {
                kind,
                major,
                minor,
                mode,
            } => {
                // debugfs's mknod takes a name in its working directory, not a path.
                let (dir, name) = p.rsplit_once('/').unwrap_or(("", p));
                let dir = if dir.is_empty() { "/" } else { dir };
                script.push_str(&format!(
                    "cd \"{dir}\"\nmknod \"{name}\" {kind} {major} {minor}\ncd /\nsif \"{p}\" mode 0{mode:o}\n"
                ));
            }
            Fix::Xattr { name, value } => {
                let file = value.to_str().filter(|v| quotable(v));
                match file {
                    Some(file) if quotable(name) => {
                        script.push_str(&format!("ea_set -f \"{file}\" \"{p}\" \"{name}\"\n"))
                    }
                    _ => {
                        return Err(ImageError::Unnamable {
                            path: f.path.display().to_string(),
                        })
                    }
                }
            }
        }
    }
    let mut child = Command::new("debugfs")
        .args(["-w", "-f", "-"])
        .arg(image)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ImageError::NoDebugfs,
            _ => ImageError::Debugfs(e.to_string()),
        })?;
    let written = child
        .stdin
        .take()
        .map(|mut i| i.write_all(script.as_bytes()));
    let out = child
        .wait_with_output()
        .map_err(|e| ImageError::Debugfs(e.to_string()))?;
    // debugfs exits 0 even when a command fails; its only other output is its banner.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("debugfs "))
        .collect();
    match written {
        Some(Ok(())) if out.status.success() && errors.is_empty() => Ok(()),
        _ => Err(ImageError::Debugfs(if errors.is_empty() {
            format!("{}", out.status)
        } else {
            errors.join(" / ")
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Hook = Option<Box<dyn Fn(&Path)>>;

    thread_local! {
        /// Run between hashing and mkfs.ext4, as a rootfs writer racing flint could.
        static BEFORE_MKFS: std::cell::RefCell<Hook> = const { std::cell::RefCell::new(None) };
    }

    pub(super) fn before_mkfs(rootfs: &Path) {
        BEFORE_MKFS.with(|h| {
            if let Some(h) = h.borrow().as_ref() {
                h(rootfs)
            }
        });
    }

    fn tree(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("flint-image-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("bin")).unwrap();
        std::fs::write(d.join("bin/hello"), b"hello").unwrap();
        std::os::unix::fs::symlink("hello", d.join("bin/link")).unwrap();
        d
    }

    fn key(d: &Path) -> String {
        content_key(d, &walk(d).unwrap(), None).unwrap()
    }

    #[test]
    fn the_key_follows_the_content() {
        let a = tree("a");
        let b = tree("b");
        let ka = key(&a);
        assert_eq!(ka, key(&b));
        // Same content written again: metadata changes, the content key does not.
        std::fs::write(b.join("bin/hello"), b"hello").unwrap();
        assert_eq!(ka, key(&b));
        for change in [
            |d: &Path| std::fs::write(d.join("bin/hello"), b"hellO").unwrap(),
            |d: &Path| std::fs::write(d.join("new"), b"").unwrap(),
            |d: &Path| {
                std::fs::remove_file(d.join("bin/link")).unwrap();
                std::os::unix::fs::symlink("other", d.join("bin/link")).unwrap();
            },
            |d: &Path| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(
                    d.join("bin/hello"),
                    std::fs::Permissions::from_mode(0o700),
                )
                .unwrap()
            },
        ] {
            let c = tree("c");
            change(&c);
            assert_ne!(ka, key(&c));
            std::fs::remove_dir_all(&c).unwrap();
        }
        for d in [a, b] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }

    #[test]
    fn the_walk_is_sorted_and_complete() {
        let d = tree("walk");
        std::fs::write(d.join("a"), b"").unwrap();
        let rels: Vec<String> = walk(&d).unwrap().into_iter().map(|e| e.rel).collect();
        assert_eq!(rels, ["", "/a", "/bin", "/bin/hello", "/bin/link"]);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn images_are_built_once_and_shared() {
        if Command::new("mkfs.ext4").arg("-V").output().is_err() {
            eprintln!("skipped: no mkfs.ext4");
            return;
        }
        let d = tree("build");
        let cache = std::env::temp_dir().join(format!("flint-image-cache-{}", std::process::id()));
        let img = image_for(&d, &cache).unwrap();
        assert!(img.metadata().unwrap().len() >= 16 << 20);
        let out = Command::new("debugfs")
            .args(["-R", "cat /bin/hello"])
            .arg(&img)
            .output();
        if let Ok(out) = out {
            assert_eq!(String::from_utf8_lossy(&out.stdout), "hello");
        }
        let mtime = img.metadata().unwrap().modified().unwrap();
        assert_eq!(image_for(&d, &cache).unwrap(), img);
        assert_eq!(
            img.metadata().unwrap().modified().unwrap(),
            mtime,
            "rebuilt"
        );
        // A changed file: a new image.
        std::fs::write(d.join("bin/hello"), b"changed").unwrap();
        assert_ne!(image_for(&d, &cache).unwrap(), img);
        // Unreadable input is an error naming the file (root reads everything: skip then).
        std::fs::remove_dir_all(&d).unwrap();
        assert!(matches!(
            image_for(&d, &cache),
            Err(ImageError::Read { .. })
        ));
        std::fs::remove_dir_all(&cache).unwrap();
    }

    fn have_mkfs() -> bool {
        let ok = Command::new("mkfs.ext4").arg("-V").output().is_ok()
            && Command::new("debugfs").arg("-V").output().is_ok();
        if !ok {
            eprintln!("skipped: no mkfs.ext4 or debugfs (e2fsprogs)");
        }
        ok
    }

    fn debugfs(image: &Path, cmd: &str) -> String {
        let out = Command::new("debugfs")
            .args(["-R", cmd])
            .arg(image)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    fn set_mode(p: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn root() -> bool {
        let root = euid() == 0;
        if !root {
            eprintln!("skipped in part: giving files to another user needs root");
        }
        root
    }

    /// A fresh cache directory path (not created).
    fn cache(name: &str) -> PathBuf {
        let c =
            std::env::temp_dir().join(format!("flint-image-cache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&c);
        c
    }

    fn memo_of(d: &Path, cache: &Path) -> PathBuf {
        cache
            .join("by-metadata")
            .join(metadata_key(&walk(d).unwrap()))
    }

    #[test]
    fn the_cache_is_private_and_ours() {
        if !have_mkfs() {
            return;
        }
        let d = tree("private");
        let c = cache("private");
        let img = image_for(&d, &c).unwrap();
        let memo = memo_of(&d, &c);
        assert_eq!(mode(&c), 0o700);
        assert_eq!(mode(&c.join("by-metadata")), 0o700);
        assert_eq!(mode(&img), 0o600);
        assert_eq!(mode(&memo), 0o600);

        // Writable by others: refused, with the path and what to do.
        set_mode(&c, 0o777);
        let e = image_for(&d, &c).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("the image cache {} is writable by other users (mode 0777): chmod 700 it, or set FLINT_IMAGE_CACHE to a directory of your own", c.display())
        );
        set_mode(&c, 0o700);
        set_mode(&c.join("by-metadata"), 0o770);
        let e = image_for(&d, &c).unwrap_err().to_string();
        assert!(
            e.contains("by-metadata is writable by other users (mode 0770)"),
            "{e}"
        );
        set_mode(&c.join("by-metadata"), 0o700);
        set_mode(&memo, 0o666);
        let e = image_for(&d, &c).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("the image cache memo {} ", memo.display())),
            "{e}"
        );
        assert!(e.ends_with("mode 0600: remove it"), "{e}");
        set_mode(&memo, 0o600);
        assert_eq!(image_for(&d, &c).unwrap(), img);

        if root() {
            // Another user's cache, memo or image.
            std::os::unix::fs::chown(&memo, Some(65534), None).unwrap();
            let e = image_for(&d, &c).unwrap_err().to_string();
            assert!(e.contains("belongs to uid 65534"), "{e}");
            std::os::unix::fs::chown(&memo, Some(0), None).unwrap();
            std::os::unix::fs::chown(&img, Some(65534), None).unwrap();
            let e = image_for(&d, &c).unwrap_err().to_string();
            assert_eq!(
                e,
                format!("the cached image {} belongs to uid 65534, not to you (uid 0), not an image flint built: remove it (flint builds it again)", img.display())
            );
            std::os::unix::fs::chown(&img, Some(0), None).unwrap();
            std::os::unix::fs::chown(&c, Some(65534), None).unwrap();
            let e = image_for(&d, &c).unwrap_err().to_string();
            assert_eq!(
                e,
                format!("the image cache {} belongs to uid 65534, not to you (uid 0): set FLINT_IMAGE_CACHE to a directory of your own", c.display())
            );
        }
        std::fs::remove_dir_all(&c).unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn temporary_files_never_follow_a_planted_symlink() {
        if !have_mkfs() {
            return;
        }
        let d = tree("planted");
        let c = cache("planted");
        std::fs::create_dir_all(c.join("by-metadata")).unwrap();
        set_mode(&c, 0o700);
        set_mode(&c.join("by-metadata"), 0o700);
        let victim = c.with_extension("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let image = c.join(format!("{}.ext4", key(&d)));
        let memo = memo_of(&d, &c);
        for target in [&image, &memo] {
            std::os::unix::fs::symlink(&victim, temp_name(target, 0)).unwrap();
        }
        assert_eq!(image_for(&d, &c).unwrap(), image);
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(std::fs::symlink_metadata(&image).unwrap().is_file());
        assert!(std::fs::symlink_metadata(&memo).unwrap().is_file());
        // Nothing else is left behind but the planted links.
        let mut names: Vec<String> = std::fs::read_dir(&c)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let tmp = temp_name(&image, 0);
        let mut want = vec![
            "by-metadata".to_string(),
            image.file_name().unwrap().to_string_lossy().into_owned(),
            tmp.file_name().unwrap().to_string_lossy().into_owned(),
        ];
        want.sort();
        assert_eq!(names, want);
        std::fs::remove_file(victim).unwrap();
        std::fs::remove_dir_all(&c).unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn memos_are_checked_before_use() {
        if !have_mkfs() {
            return;
        }
        let d = tree("memo");
        let other = tree("memo-other");
        std::fs::write(other.join("bin/hello"), b"other").unwrap();
        let c = cache("memo");
        let img = image_for(&d, &c).unwrap();
        let other_img = image_for(&other, &c).unwrap();
        let memo = memo_of(&d, &c);
        let meta_key = memo.file_name().unwrap().to_str().unwrap().to_string();
        let key = key(&d);
        let other_key = key_of(&other_img);
        // A file outside the cache that a memo could name.
        let outside = c.with_extension("outside.ext4");
        std::fs::copy(&other_img, &outside).unwrap();
        set_mode(&outside, 0o600);
        for forged in [
            // The old format, and a path out of the cache.
            other_key.clone(),
            "../flint-outside".to_string(),
            format!(
                "{MEMO_FORMAT}\n{meta_key}\n../{}\n",
                outside.file_stem().unwrap().to_str().unwrap()
            ),
            // Another tree's metadata.
            format!("{MEMO_FORMAT}\n{}\n{other_key}\n", "0".repeat(64)),
            format!("{MEMO_FORMAT}\n{meta_key}\n{}\n", other_key.to_uppercase()),
            "garbage".repeat(100),
        ] {
            std::fs::write(&memo, &forged).unwrap();
            assert_eq!(image_for(&d, &c).unwrap(), img, "memo {forged:?}");
            // Ignored, and rewritten.
            assert_eq!(
                std::fs::read_to_string(&memo).unwrap(),
                format!("{MEMO_FORMAT}\n{meta_key}\n{key}\n")
            );
        }
        // A memo for an image that is gone: built again.
        std::fs::remove_file(&img).unwrap();
        assert_eq!(image_for(&d, &c).unwrap(), img);
        assert!(img.is_file());
        // A symlink as the memo is refused.
        std::fs::remove_file(&memo).unwrap();
        std::os::unix::fs::symlink(&outside, &memo).unwrap();
        let e = image_for(&d, &c).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "the image cache memo {} is a symlink, which flint never makes: remove it",
                memo.display()
            )
        );
        std::fs::remove_file(outside).unwrap();
        for dir in [c, d, other] {
            std::fs::remove_dir_all(dir).unwrap();
        }
    }

    fn key_of(image: &Path) -> String {
        image.file_stem().unwrap().to_str().unwrap().to_string()
    }

    #[test]
    fn cached_images_are_checked_before_reuse() {
        if !have_mkfs() {
            return;
        }
        let d = tree("reuse");
        let c = cache("reuse");
        let img = image_for(&d, &c).unwrap();
        let good = std::fs::read(&img).unwrap();
        let elsewhere = c.with_extension("elsewhere");
        std::fs::write(&elsewhere, &good).unwrap();
        // Found through the memo, and through the content key.
        let both_ways = |check: &dyn Fn()| {
            check();
            let _ = std::fs::remove_file(memo_of(&d, &c));
            check();
        };
        let refused = |why: &str| {
            both_ways(&|| {
                let e = image_for(&d, &c).unwrap_err().to_string();
                assert_eq!(
                    e,
                    format!("the cached image {} {why}, not an image flint built: remove it (flint builds it again)", img.display())
                );
            });
        };
        let rebuilt = |spoil: &dyn Fn()| {
            both_ways(&|| {
                spoil();
                assert_eq!(image_for(&d, &c).unwrap(), img);
                assert_eq!(mode(&img), 0o600);
                assert_eq!(std::fs::read(&img).unwrap().len(), good.len());
                assert_eq!(debugfs(&img, "cat /bin/hello"), "hello");
            });
        };
        // Someone else's doing: refused.
        std::fs::remove_file(&img).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &img).unwrap();
        refused("is a symlink");
        std::fs::remove_file(&img).unwrap();
        std::fs::write(&img, &good).unwrap();
        set_mode(&img, 0o666);
        refused("is writable by other users (mode 0666)");
        std::fs::remove_file(&img).unwrap();
        std::fs::create_dir(&img).unwrap();
        refused("is not a regular file");
        std::fs::remove_dir(&img).unwrap();
        assert_eq!(image_for(&d, &c).unwrap(), img);
        // Ours, but not what flint builds (an older flint's 0644 image, a truncated or
        // garbled one): built again in its place.
        rebuilt(&|| set_mode(&img, 0o644));
        rebuilt(&|| {
            let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
            f.set_len(4096).unwrap();
        });
        rebuilt(&|| {
            let mut garbled = good.clone();
            garbled[1080] = 0;
            std::fs::write(&img, &garbled).unwrap();
        });
        std::fs::remove_file(elsewhere).unwrap();
        std::fs::remove_dir_all(&c).unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn huge_and_sparse_rootfs_are_refused() {
        let d = tree("huge");
        let c = cache("huge");
        // A sparse 1 TiB file: no disk space, but an image of that size.
        let f = std::fs::File::create(d.join("bin/sparse")).unwrap();
        f.set_len(1 << 40).unwrap();
        let e = image_for(&d, &c).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("the rootfs holds more than 8 GiB of file data (at {}); flint makes images of at most that: make the rootfs smaller, or put the data on a disk of its own (--disk)", d.join("bin/sparse").display())
        );
        // The limit is on the sum; a hard link's data counts once.
        f.set_len(5 << 30).unwrap();
        std::fs::hard_link(d.join("bin/sparse"), d.join("bin/again")).unwrap();
        assert!(walk(&d).is_ok());
        let g = std::fs::File::create(d.join("bin/sparse2")).unwrap();
        g.set_len(4 << 30).unwrap();
        assert!(matches!(walk(&d), Err(ImageError::TooBig { .. })));
        assert_eq!(MAX_ROOTFS_BYTES, 8 << 30);
        let _ = std::fs::remove_dir_all(&c);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_file_swapped_for_a_fifo_is_never_opened() {
        let d = tree("fifo-swap");
        let mut entries = walk(&d).unwrap();
        std::fs::remove_file(d.join("bin/hello")).unwrap();
        let name = CString::new(d.join("bin/hello").as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o644) }, 0);
        // The swap changed /bin too, which would be noticed first: as if it came later.
        let fresh = walk(&d).unwrap();
        entries[..2].clone_from_slice(&fresh[..2]);
        // Without a writer, opening the FIFO for reading would block for ever.
        let e = content_key(&d, &entries, None).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("{} changed while flint was reading it; run again once nothing is writing to the rootfs", d.join("bin/hello").display())
        );
        // And a symlink to a host file in its place.
        std::fs::remove_file(d.join("bin/hello")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.join("bin/hello")).unwrap();
        let fresh = walk(&d).unwrap();
        entries[..2].clone_from_slice(&fresh[..2]);
        assert!(matches!(
            content_key(&d, &entries, None),
            Err(ImageError::Changed { .. })
        ));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn mkfs_reads_only_the_copy_that_was_hashed() {
        if !have_mkfs() {
            return;
        }
        let d = tree("swap");
        std::fs::create_dir(d.join("etc")).unwrap();
        std::fs::write(d.join("etc/motd"), b"hi").unwrap();
        let secret = d.with_extension("secret");
        std::fs::create_dir_all(&secret).unwrap();
        std::fs::write(secret.join("motd"), b"host secret").unwrap();
        let key = key(&d);
        let c = cache("swap");
        // Between hashing and mkfs.ext4, the writer of the rootfs swaps a file and a directory
        // for symlinks to host files.
        let secret_for_hook = secret.clone();
        BEFORE_MKFS.with(|h| {
            *h.borrow_mut() = Some(Box::new(move |rootfs: &Path| {
                std::fs::remove_file(rootfs.join("bin/hello")).unwrap();
                std::os::unix::fs::symlink(secret_for_hook.join("motd"), rootfs.join("bin/hello"))
                    .unwrap();
                std::fs::remove_dir_all(rootfs.join("etc")).unwrap();
                std::os::unix::fs::symlink(&secret_for_hook, rootfs.join("etc")).unwrap();
            }))
        });
        let img = image_for(&d, &c);
        BEFORE_MKFS.with(|h| *h.borrow_mut() = None);
        let img = img.unwrap();
        assert_eq!(key_of(&img), key);
        assert_eq!(debugfs(&img, "cat /bin/hello"), "hello");
        assert_eq!(debugfs(&img, "cat /etc/motd"), "hi");
        // The staging copy is gone.
        let left: Vec<_> = std::fs::read_dir(&c)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with(".stage"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        for dir in [c, d, secret] {
            std::fs::remove_dir_all(dir).unwrap();
        }
    }

    /// A tree with every kind of entry: what mkfs.ext4 -d made of the rootfs itself before.
    fn every_kind(name: &str, devices: bool) -> PathBuf {
        let d = tree(name);
        std::fs::create_dir(d.join("dev")).unwrap();
        std::fs::hard_link(d.join("bin/hello"), d.join("bin/hard")).unwrap();
        let node = |rel: &str, kind: u32, dev: u64| {
            let p = CString::new(d.join(rel).as_os_str().as_bytes()).unwrap();
            // SAFETY: a valid C string; mknod only creates a node.
            let r = unsafe { libc::mknod(p.as_ptr(), kind | 0o640, dev) };
            assert_eq!(r, 0, "{rel}");
        };
        node("dev/fifo", libc::S_IFIFO, 0);
        node("dev/sock", libc::S_IFSOCK, 0);
        if devices {
            node("dev/null", libc::S_IFCHR, libc::makedev(1, 3));
            node("dev/vda", libc::S_IFBLK, libc::makedev(254, 0));
            std::os::unix::fs::chown(d.join("dev/null"), Some(0), Some(0)).unwrap();
            std::os::unix::fs::chown(d.join("bin/hello"), Some(1234), Some(5678)).unwrap();
        }
        std::fs::write(d.join("bin/suid"), b"x").unwrap();
        set_mode(&d.join("bin/suid"), 0o4755);
        std::fs::create_dir(d.join("ro")).unwrap();
        std::fs::write(d.join("ro/file"), b"ro").unwrap();
        // File capabilities (cap_net_raw+ep, as ping has) and a user attribute on a directory.
        let caps = "0100000200200000000000000000000000000000";
        let caps: Vec<u8> = (0..caps.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&caps[i..i + 2], 16).unwrap())
            .collect();
        for (rel, name, value) in [
            ("bin/suid", &c"security.capability", &caps[..]),
            ("ro", &c"user.flint", &b"dir"[..]),
        ] {
            let p = CString::new(d.join(rel).as_os_str().as_bytes()).unwrap();
            // SAFETY: valid C strings and a value of `value.len()` bytes.
            let r = unsafe {
                libc::lsetxattr(
                    p.as_ptr(),
                    name.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    0,
                )
            };
            assert_eq!(r, 0, "{rel}: {}", std::io::Error::last_os_error());
        }
        set_mode(&d.join("ro"), 0o555);
        d
    }

    fn check_every_kind(img: &Path, devices: bool) {
        let stat = |p: &str| debugfs(img, &format!("stat {p}"));
        assert!(
            stat("/dev/fifo").contains("Type: FIFO"),
            "{}",
            stat("/dev/fifo")
        );
        assert!(
            stat("/dev/sock").contains("Type: socket"),
            "{}",
            stat("/dev/sock")
        );
        assert!(
            stat("/bin/hello").contains("Links: 2"),
            "{}",
            stat("/bin/hello")
        );
        assert!(
            stat("/bin/suid").contains("Mode:  04755"),
            "{}",
            stat("/bin/suid")
        );
        assert!(stat("/ro").contains("Mode:  0555"), "{}", stat("/ro"));
        let caps = debugfs(img, "ea_list /bin/suid");
        assert!(
            caps.contains("security.capability (20) = 01 00 00 02 00 20 00 00"),
            "{caps}"
        );
        let user = debugfs(img, "ea_list /ro");
        assert!(user.contains("user.flint (3) = \"dir\""), "{user}");
        assert_eq!(debugfs(img, "cat /ro/file"), "ro");
        assert_eq!(debugfs(img, "cat /bin/hard"), "hello");
        if devices {
            let null = stat("/dev/null");
            assert!(null.contains("Type: character special"), "{null}");
            assert!(null.contains("Mode:  0640"), "{null}");
            assert!(null.contains("Device major/minor number: 01:03"), "{null}");
            let vda = stat("/dev/vda");
            assert!(vda.contains("Type: block special"), "{vda}");
            assert!(vda.contains("Device major/minor number: 254:00"), "{vda}");
            let hello = stat("/bin/hello");
            assert!(hello.contains("User:  1234   Group:  5678"), "{hello}");
        }
    }

    #[test]
    fn special_files_become_nodes_in_the_image() {
        if !have_mkfs() {
            return;
        }
        let devices = root();
        let d = every_kind("kinds", devices);
        let c = cache("kinds");
        let img = image_for(&d, &c).unwrap();
        check_every_kind(&img, devices);
        set_mode(&d.join("ro"), 0o755);
        std::fs::remove_dir_all(&c).unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_killed_run_s_staging_copy_is_removed() {
        if !have_mkfs() {
            return;
        }
        let d = tree("stale");
        let c = own_dir(&cache("stale")).unwrap();
        // A process that has exited: its pid is (for now) free.
        let mut child = Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        let stale = c.join(format!(".stage-{}-0", child.id()));
        std::fs::create_dir_all(stale.join("rootfs/ro")).unwrap();
        std::fs::write(stale.join("rootfs/ro/f"), b"").unwrap();
        set_mode(&stale.join("rootfs/ro"), 0o555);
        // One of a live process (ours) stays.
        let live = c.join(format!(".stage-{}-99", std::process::id()));
        std::fs::create_dir(&live).unwrap();
        image_for(&d, &c).unwrap();
        assert!(!stale.exists());
        assert!(live.exists());
        std::fs::remove_dir_all(&c).unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// Run as `nobody` by [`a_user_builds_images_of_roots_files`].
    #[test]
    fn as_nobody() {
        let (Some(d), Some(c)) = (
            std::env::var_os("FLINT_TEST_AS_NOBODY_ROOTFS"),
            std::env::var_os("FLINT_TEST_AS_NOBODY_CACHE"),
        ) else {
            return;
        };
        let img = image_for(Path::new(&d), Path::new(&c)).unwrap();
        println!("\nIMAGE={}", img.display());
    }

    #[test]
    fn a_user_builds_images_of_roots_files() {
        // Needs root to make the tree and to run a part as another user (nobody).
        if !have_mkfs() || !root() {
            return;
        }
        let d = every_kind("nobody", true);
        let c = cache("nobody");
        let parent = c.with_extension("home");
        std::fs::create_dir_all(&parent).unwrap();
        std::os::unix::fs::chown(&parent, Some(65534), Some(65534)).unwrap();
        let c = parent.join("images");
        use std::os::unix::fs::PermissionsExt;
        use std::os::unix::process::CommandExt;
        // nobody may not be able to reach the checkout (CI clones it wherever it likes): run a
        // copy of this test binary from a directory anyone can read.
        let bin_dir = parent.with_extension("bin");
        std::fs::create_dir_all(&bin_dir).unwrap();
        std::fs::set_permissions(&bin_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = bin_dir.join("flint-oci-tests");
        std::fs::copy(std::env::current_exe().unwrap(), &bin).unwrap();
        let out = Command::new(&bin)
            .args([
                "--exact",
                "image::tests::as_nobody",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("FLINT_TEST_AS_NOBODY_ROOTFS", &d)
            .env("FLINT_TEST_AS_NOBODY_CACHE", &c)
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let img = stdout
            .lines()
            .find_map(|l| l.strip_prefix("IMAGE="))
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("no IMAGE= in {stdout}"));
        // The same name as root's build, and the same owners and nodes.
        assert_eq!(key_of(&img), key(&d));
        assert_eq!(std::fs::metadata(&img).unwrap().uid(), 65534);
        check_every_kind(&img, true);
        set_mode(&d.join("ro"), 0o755);
        std::fs::remove_dir_all(&parent).unwrap();
        std::fs::remove_dir_all(&bin_dir).unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_staging_copy_is_removed_even_with_read_only_directories() {
        let d = every_kind("stage", false);
        let c = cache("stage");
        let c = own_dir(&c).unwrap();
        let mut stage = Stage::new(&c).unwrap();
        let dir = stage.dir.clone();
        let entries = walk(&d).unwrap();
        assert_eq!(
            content_key(&d, &entries, Some(&mut stage)).unwrap(),
            key(&d)
        );
        stage.finish().unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&stage.root.join("ro")), 0o555);
        assert_eq!(
            std::fs::read(stage.root.join("bin/hello")).unwrap(),
            b"hello"
        );
        drop(stage);
        assert!(!dir.exists());
        set_mode(&d.join("ro"), 0o755);
        std::fs::remove_dir_all(&c).unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }
}
