//! A minimal writer of `newc` cpio archives, the format the kernel unpacks
//! as an initramfs. Enough for regular files, directories and symlinks.

use std::io::{self, Write};

/// An archive being written; call [`Cpio::finish`] to write the trailer.
pub struct Cpio<W: Write> {
    out: W,
    inode: u32,
}

impl<W: Write> Cpio<W> {
    pub fn new(out: W) -> Self {
        Self { out, inode: 1 }
    }

    pub fn dir(&mut self, path: &str) -> io::Result<()> {
        self.entry(path, 0o040_755, &[])
    }

    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        self.entry(path, 0o100_000 | (mode & 0o7777), data)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        self.entry(path, 0o120_777, target.as_bytes())
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.entry("TRAILER!!!", 0, &[])?;
        Ok(self.out)
    }

    fn entry(&mut self, path: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        let name = path.trim_start_matches('/');
        let name_len = name.len() + 1;
        let size = u32::try_from(data.len())
            .map_err(|_| io::Error::other(format!("{path} is over 4 GiB")))?;
        let nlink = if mode & 0o170_000 == 0o040_000 { 2 } else { 1 };
        let fields = [
            self.inode,
            mode,
            0,
            0,
            nlink,
            0,
            size,
            0,
            0,
            0,
            0,
            name_len as u32,
            0,
        ];
        self.inode += 1;
        write!(self.out, "070701")?;
        for field in fields {
            write!(self.out, "{field:08x}")?;
        }
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.pad(6 + 13 * 8 + name_len)?;
        self.out.write_all(data)?;
        self.pad(data.len())
    }

    fn pad(&mut self, written: usize) -> io::Result<()> {
        let pad = (4 - written % 4) % 4;
        self.out.write_all(&[0u8; 3][..pad])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_newc_with_four_byte_alignment() {
        let mut cpio = Cpio::new(Vec::new());
        cpio.dir("/bin").expect("dir");
        cpio.file("/init", 0o755, b"#!/bin/sh\n").expect("file");
        let bytes = cpio.finish().expect("finish");
        assert!(bytes.starts_with(b"070701"));
        // header (110) + "bin\0" (4) = 114, padded to 116; then the next header.
        assert_eq!(&bytes[116..122], b"070701");
        assert!(bytes.windows(10).any(|w| w == b"TRAILER!!!"));
        assert_eq!(bytes.len() % 4, 0);
    }
}
