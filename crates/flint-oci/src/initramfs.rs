//! A small cpio archive (the "newc" format the kernel unpacks into its initramfs), built in
//! memory: flint's guest init and the run spec need no file on the host.

/// What an archive entry is.
pub enum Node<'a> {
    Dir,
    File(&'a [u8]),
    /// A character device (major, minor).
    CharDev(u32, u32),
}

/// An entry the newc format cannot hold: its fields are 32 bits.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0} is too large for an initramfs entry (4 GiB at most)")]
pub struct TooLarge(pub String);

/// Builds a newc archive. Entries are added in order; parents before children.
#[derive(Default)]
pub struct Cpio {
    buf: Vec<u8>,
    ino: u32,
}

impl Cpio {
    pub fn new() -> Cpio {
        Cpio::default()
    }

    /// Adds `path` (relative, no leading slash) with permission bits `mode`.
    pub fn add(&mut self, path: &str, mode: u32, node: Node) -> Result<&mut Self, TooLarge> {
        let (kind, data, (major, minor)) = match node {
            Node::Dir => (libc::S_IFDIR, &[][..], (0, 0)),
            Node::File(d) => (libc::S_IFREG, d, (0, 0)),
            Node::CharDev(ma, mi) => (libc::S_IFCHR, &[][..], (ma, mi)),
        };
        self.ino += 1;
        self.entry(path, kind | (mode & 0o7777), data, major, minor, self.ino)?;
        Ok(self)
    }

    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        data: &[u8],
        rmajor: u32,
        rminor: u32,
        ino: u32,
    ) -> Result<(), TooLarge> {
        let nlink = if mode & libc::S_IFMT == libc::S_IFDIR {
            2
        } else {
            1
        };
        let too_large = || TooLarge(name.to_string());
        let filesize = u32::try_from(data.len()).map_err(|_| too_large())?;
        // The name's size counts its NUL.
        let namesize = u32::try_from(name.len())
            .ok()
            .and_then(|n| n.checked_add(1))
            .ok_or_else(too_large)?;
        let fields = [
            ino, mode, 0, // uid
            0, // gid
            nlink, 0, // mtime
            filesize, 0, // dev major
            0, // dev minor
            rmajor, rminor, namesize, 0, // check
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
        Ok(())
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    /// The archive, with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        // A short name and no data: always fits.
        let _ = self.entry("TRAILER!!!", 0, &[], 0, 0, 0);
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_lists_what_was_added() {
        let mut c = Cpio::new();
        c.add("dev", 0o755, Node::Dir)
            .and_then(|c| c.add("dev/console", 0o600, Node::CharDev(5, 1)))
            .and_then(|c| c.add("init", 0o755, Node::File(b"#!/bin/sh\necho hi\n")))
            .and_then(|c| c.add("odd", 0o644, Node::File(b"abc")))
            .unwrap();
        let archive = c.finish();
        assert_eq!(archive.len() % 4, 0);
        let dir = std::env::temp_dir().join(format!("flint-cpio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.cpio"), &archive).unwrap();
        // The system's cpio is the reference reader, where there is one.
        match std::process::Command::new("cpio")
            .args(["-t", "-v", "-F"])
            .arg(dir.join("a.cpio"))
            .output()
        {
            Ok(out) => {
                let list = String::from_utf8_lossy(&out.stdout);
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let lines: Vec<&str> = list.lines().collect();
                assert_eq!(lines.len(), 4, "{list}");
                assert!(lines[0].starts_with("drwxr-xr-x") && lines[0].ends_with(" dev"));
                assert!(lines[1].starts_with("crw-------") && lines[1].contains("5,"));
                assert!(lines[2].starts_with("-rwxr-xr-x") && lines[2].ends_with(" init"));
                assert!(
                    lines[3].contains(" 3 ") && lines[3].ends_with(" odd"),
                    "{list}"
                );
            }
            Err(_) => eprintln!("no cpio to check the archive with"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
