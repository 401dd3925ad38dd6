//! A writer for the `newc` cpio format, the format of Linux initramfs archives.

/// An in-memory newc cpio archive.
#[derive(Debug, Default)]
pub(crate) struct CpioWriter {
    out: Vec<u8>,
    next_ino: u32,
}

impl CpioWriter {
    pub(crate) fn new() -> Self {
        Self { out: Vec::new(), next_ino: 1 }
    }

    /// A directory with permission bits `perm`.
    pub(crate) fn dir(&mut self, path: &str, perm: u32) {
        self.entry(path, 0o040000 | perm, 2, b"");
    }

    /// A regular file with permission bits `perm`.
    pub(crate) fn file(&mut self, path: &str, perm: u32, data: &[u8]) {
        self.entry(path, 0o100000 | perm, 1, data);
    }

    /// A symbolic link to `target`.
    pub(crate) fn symlink(&mut self, path: &str, target: &str) {
        self.entry(path, 0o120777, 1, target.as_bytes());
    }

    /// Adds the trailer and returns the archive.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.header("TRAILER!!!", 0, 0, 1, 0);
        self.out
    }

    fn entry(&mut self, path: &str, mode: u32, nlink: u32, data: &[u8]) {
        let ino = self.next_ino;
        self.next_ino += 1;
        let name = path.trim_start_matches('/');
        self.header(name, ino, mode, nlink, data.len());
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn header(&mut self, name: &str, ino: u32, mode: u32, nlink: u32, size: usize) {
        let namesize = name.len() + 1;
        let fields = [ino as usize, mode as usize, 0, 0, nlink as usize, 0, size, 0, 0, 0, 0, namesize, 0];
        self.out.extend_from_slice(b"070701");
        for field in fields {
            self.out.extend_from_slice(format!("{field:08X}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The archive unpacks with GNU cpio (Debian package `cpio`).
    #[test]
    fn gnu_cpio_extracts_what_was_written() {
        let mut cpio = CpioWriter::new();
        cpio.dir("/bin", 0o755);
        cpio.file("/bin/hello", 0o755, b"#!/bin/sh\necho hi\n");
        cpio.symlink("/bin/hi", "hello");
        cpio.file("/odd", 0o600, b"abc");
        let archive = cpio.finish();
        assert_eq!(archive.len() % 4, 0);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = std::process::Command::new("cpio")
            .args(["-idm", "--quiet", "--no-absolute-filenames"])
            .current_dir(dir.path())
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("GNU cpio must be installed (Debian package `cpio`) for this test");
        std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), &archive).expect("write");
        assert!(child.wait().expect("wait").success());
        assert_eq!(std::fs::read(dir.path().join("bin/hello")).expect("file"), b"#!/bin/sh\necho hi\n");
        assert_eq!(std::fs::read_link(dir.path().join("bin/hi")).expect("link"), std::path::Path::new("hello"));
        assert_eq!(std::fs::read(dir.path().join("odd")).expect("file"), b"abc");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("bin/hello")).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
    }
}
