//! A bundle's rootfs as an ext4 image, built with `mkfs.ext4 -d` and cached by content.
//!
//! The image's name is the SHA-256 of the tree (paths, types, modes, owners, link targets and
//! file contents), so two bundles with the same rootfs share one image and any change makes a
//! new one. Hashing every file on every run would cost more than the boot on a big rootfs, so a
//! memo keyed by the tree's metadata (sizes, mtimes, ctimes, inode numbers) remembers the
//! content hash; a changed file changes its ctime, which no user can set back.
//!
//! The image is shared read-only between instances; each guest writes to a tmpfs layer.

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// Bumped when the image layout (mkfs options, hashed fields) changes.
const FORMAT: &str = "flint-rootfs-image-1";

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
    #[error("building the rootfs image needs mkfs.ext4, which is not installed (apt-get install e2fsprogs)")]
    NoMkfs,
    #[error("mkfs.ext4 could not build the rootfs image: {0}")]
    Mkfs(String),
}

/// One entry of the tree, as walked in a fixed (sorted) order.
struct Entry {
    rel: String,
    path: PathBuf,
    meta: std::fs::Metadata,
}

fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Read {
        path: path.display().to_string(),
        source,
    }
}

/// Every entry under `root` (itself included, as ""), directories before their contents, in
/// byte order of the names. Symlinks are not followed.
fn walk(root: &Path) -> Result<Vec<Entry>, ImageError> {
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), root.to_path_buf())];
    while let Some((rel, path)) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).map_err(read_err(&path))?;
        if meta.is_dir() {
            let mut children: Vec<_> = std::fs::read_dir(&path)
                .map_err(read_err(&path))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()
                .map_err(read_err(&path))?;
            children.sort();
            for name in children.into_iter().rev() {
                let name_str = name.to_string_lossy();
                stack.push((format!("{rel}/{name_str}"), path.join(&name)));
            }
        }
        out.push(Entry { rel, path, meta });
    }
    Ok(out)
}

fn file_type(m: &std::fs::Metadata) -> &'static str {
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

/// The image's name: the tree's content.
fn content_key(entries: &[Entry]) -> Result<String, ImageError> {
    let mut h = Sha256::new();
    h.update(FORMAT);
    let mut first_path_of_inode = std::collections::HashMap::new();
    let mut buf = vec![0u8; 1 << 16];
    for e in entries {
        let m = &e.meta;
        h.update(format!(
            "{}\0{}\0{:o}\0{}\0{}\0{}\0",
            e.rel,
            file_type(m),
            m.mode() & 0o7777,
            m.uid(),
            m.gid(),
            m.rdev()
        ));
        if m.is_file() && m.nlink() > 1 {
            // Hard links stay hard links in the image.
            if let Some(first) = first_path_of_inode.get(&(m.dev(), m.ino())) {
                h.update(format!("link\0{first}\n"));
                continue;
            }
            first_path_of_inode.insert((m.dev(), m.ino()), e.rel.clone());
        }
        if m.file_type().is_symlink() {
            let target = std::fs::read_link(&e.path).map_err(read_err(&e.path))?;
            h.update(target.as_os_str().as_encoded_bytes());
        } else if m.is_file() {
            h.update(m.size().to_le_bytes());
            let mut f = std::fs::File::open(&e.path).map_err(read_err(&e.path))?;
            loop {
                let n = f.read(&mut buf).map_err(read_err(&e.path))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
        }
        h.update(b"\n");
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A size with room for the tree: data in 4 KiB blocks, an inode per entry, ext4's own
/// metadata and some slack; never below 16 MiB.
fn image_size(entries: &[Entry]) -> u64 {
    let data: u64 = entries
        .iter()
        .map(|e| e.meta.size().div_ceil(4096) * 4096 + 256)
        .sum();
    (data + data / 4 + (16 << 20)).div_ceil(1 << 20) << 20
}

/// The cached image of `rootfs` in `cache`, built if it is not there yet.
pub fn image_for(rootfs: &Path, cache: &Path) -> Result<PathBuf, ImageError> {
    let cache_err = |source| ImageError::Cache {
        dir: cache.display().to_string(),
        source,
    };
    std::fs::create_dir_all(cache.join("by-metadata")).map_err(cache_err)?;
    let entries = walk(rootfs)?;
    let memo = cache.join("by-metadata").join(metadata_key(&entries));
    if let Ok(key) = std::fs::read_to_string(&memo) {
        let image = cache.join(format!("{}.ext4", key.trim()));
        if image.is_file() {
            return Ok(image);
        }
    }
    let key = content_key(&entries)?;
    let image = cache.join(format!("{key}.ext4"));
    if !image.is_file() {
        build(rootfs, &entries, &image)?;
    }
    // The memo is only a shortcut: a failure to write it costs the next run a hash, no more.
    let tmp = memo.with_extension(format!("tmp{}", std::process::id()));
    if std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(key.as_bytes()))
        .is_ok()
    {
        let _ = std::fs::rename(&tmp, &memo);
    }
    Ok(image)
}

/// Builds the image next to its final name and renames it into place, so a concurrent run
/// never sees half an image.
fn build(rootfs: &Path, entries: &[Entry], image: &Path) -> Result<(), ImageError> {
    let tmp = image.with_extension(format!("tmp{}", std::process::id()));
    let size = image_size(entries);
    // The estimate is generous; if it was not, once more at twice the size.
    let result = match mkfs(rootfs, entries.len(), &tmp, size) {
        Err(Mkfs::Full(_)) => mkfs(rootfs, entries.len(), &tmp, size * 2),
        other => other,
    }
    .map_err(|e| match e {
        Mkfs::Full(msg) => ImageError::Mkfs(msg),
        Mkfs::Failed(e) => e,
    })
    .and_then(|()| {
        std::fs::rename(&tmp, image).map_err(|source| ImageError::Cache {
            dir: image.display().to_string(),
            source,
        })
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

/// Makes `path` a `size`-byte ext4 image of `rootfs` (`entries` files and directories).
fn mkfs(rootfs: &Path, entries: usize, path: &Path, size: u64) -> Result<(), Mkfs> {
    let cache_err = |source| {
        Mkfs::Failed(ImageError::Cache {
            dir: path.display().to_string(),
            source,
        })
    };
    std::fs::File::create(path)
        .and_then(|f| f.set_len(size))
        .map_err(cache_err)?;
    let out = Command::new("mkfs.ext4")
        // No journal: the image is only ever attached read-only. No reserved blocks, an inode
        // for every entry, and no lazy init left for the guest kernel to do.
        .args(["-q", "-F", "-m", "0", "-O", "^has_journal", "-b", "4096"])
        .args(["-E", "lazy_itable_init=0,nodiscard", "-N"])
        .arg((entries + 64).to_string())
        .arg("-d")
        .arg(rootfs)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("flint-image-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("bin")).unwrap();
        std::fs::write(d.join("bin/hello"), b"hello").unwrap();
        std::os::unix::fs::symlink("hello", d.join("bin/link")).unwrap();
        d
    }

    #[test]
    fn the_key_follows_the_content() {
        let a = tree("a");
        let b = tree("b");
        let ka = content_key(&walk(&a).unwrap()).unwrap();
        assert_eq!(ka, content_key(&walk(&b).unwrap()).unwrap());
        // Same content written again: metadata changes, the content key does not.
        std::fs::write(b.join("bin/hello"), b"hello").unwrap();
        assert_eq!(ka, content_key(&walk(&b).unwrap()).unwrap());
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
            assert_ne!(ka, content_key(&walk(&c).unwrap()).unwrap());
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
}
