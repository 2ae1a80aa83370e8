//! Builders for the archives the tests feed to `cuttle-archive`, hostile ones included. Names go
//! into tar headers as raw bytes because the `tar` crate refuses to write `..` or absolute paths,
//! which is exactly what these tests need.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use cuttle_archive::{ArchiveFormat, ExtractError, Extracted, Limits};
use zip::write::SimpleFileOptions;

/// A scratch directory holding the archive, with the target path beside it.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn target(&self) -> PathBuf {
        self.dir.path().join("Deploy-1.0.0")
    }

    pub fn write_archive(&self, file_name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join(file_name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Writes `bytes` as `file_name` and extracts it into [`Scratch::target`].
    pub fn extract(
        &self,
        file_name: &str,
        bytes: &[u8],
        format: ArchiveFormat,
        limits: &Limits,
    ) -> Result<Extracted, ExtractError> {
        let archive = self.write_archive(file_name, bytes);
        cuttle_archive::extract(&archive, format, &self.target(), limits)
    }

    /// The all-or-nothing check: no target, and nothing but the archive in its directory
    /// (no staging directory left behind).
    pub fn assert_nothing_left(&self) {
        assert!(
            !self.target().exists(),
            "the target exists after a failed extraction"
        );
        let leftovers: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| !is_archive_name(name))
            .collect();
        assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    }
}

fn is_archive_name(name: &str) -> bool {
    ArchiveFormat::from_file_name(name).is_some()
}

/// One entry of a test zip.
pub enum ZipItem<'a> {
    File {
        name: &'a str,
        mode: u32,
        data: &'a [u8],
    },
    Directory {
        name: &'a str,
    },
    Symlink {
        name: &'a str,
        target: &'a str,
    },
}

pub fn zip_bytes(items: &[ZipItem<'_>]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for item in items {
        match item {
            ZipItem::File { name, mode, data } => {
                let options = SimpleFileOptions::default()
                    .compression_method(zip::CompressionMethod::Deflated)
                    .unix_permissions(*mode)
                    .large_file(data.len() > u32::MAX as usize);
                writer.start_file(*name, options).unwrap();
                writer.write_all(data).unwrap();
            }
            ZipItem::Directory { name } => {
                writer
                    .add_directory(*name, SimpleFileOptions::default().unix_permissions(0o755))
                    .unwrap();
            }
            ZipItem::Symlink { name, target } => {
                writer
                    .add_symlink(*name, *target, SimpleFileOptions::default())
                    .unwrap();
            }
        }
    }
    writer.finish().unwrap().into_inner()
}

/// A zip with one deflated file per `(name, data)`.
pub fn zip_files(files: &[(&str, &[u8])]) -> Vec<u8> {
    let items: Vec<ZipItem<'_>> = files
        .iter()
        .map(|(name, data)| ZipItem::File {
            name,
            mode: 0o644,
            data,
        })
        .collect();
    zip_bytes(&items)
}

/// Replaces every occurrence of `from` by `to` (same length): how the tests give zip entries
/// names the writer refuses, in both the local and the central headers.
pub fn replace_bytes(bytes: &mut [u8], from: &[u8], to: &[u8]) -> usize {
    assert_eq!(from.len(), to.len());
    let mut n_replaced = 0;
    let mut index = 0;
    while index + from.len() <= bytes.len() {
        if &bytes[index..index + from.len()] == from {
            bytes[index..index + from.len()].copy_from_slice(to);
            n_replaced += 1;
            index += from.len();
        } else {
            index += 1;
        }
    }
    n_replaced
}

/// Sets the Unix mode (type and permission bits) of every central directory entry: the zip
/// writer masks modes to `0o777`, so setuid bits and special file types need surgery.
pub fn set_zip_unix_modes(bytes: &mut [u8], mode: u32) {
    let mut index = 0;
    let mut n_patched = 0;
    while index + 46 <= bytes.len() {
        if bytes[index..index + 4] == *b"PK\x01\x02" {
            // "Version made by": high byte 3 is Unix; external attributes at offset 38 carry
            // the Unix mode in their high 16 bits.
            bytes[index + 5] = 3;
            let attributes = (mode << 16).to_le_bytes();
            bytes[index + 38..index + 42].copy_from_slice(&attributes);
            n_patched += 1;
        }
        index += 1;
    }
    assert!(n_patched > 0, "no central directory entry found");
}

/// One entry of a test tar, written with raw name bytes.
pub struct TarItem<'a> {
    pub name: &'a [u8],
    pub kind: tar::EntryType,
    pub mode: u32,
    pub link: &'a [u8],
    pub data: &'a [u8],
}

pub fn tar_file<'a>(name: &'a str, data: &'a [u8]) -> TarItem<'a> {
    TarItem {
        name: name.as_bytes(),
        kind: tar::EntryType::Regular,
        mode: 0o644,
        link: b"",
        data,
    }
}

pub fn tar_directory(name: &str) -> TarItem<'_> {
    TarItem {
        name: name.as_bytes(),
        kind: tar::EntryType::Directory,
        mode: 0o755,
        link: b"",
        data: b"",
    }
}

pub fn tar_symlink<'a>(name: &'a str, target: &'a str) -> TarItem<'a> {
    TarItem {
        name: name.as_bytes(),
        kind: tar::EntryType::Symlink,
        mode: 0o777,
        link: target.as_bytes(),
        data: b"",
    }
}

pub fn tar_hard_link<'a>(name: &'a str, target: &'a str) -> TarItem<'a> {
    TarItem {
        name: name.as_bytes(),
        kind: tar::EntryType::Link,
        mode: 0o644,
        link: target.as_bytes(),
        data: b"",
    }
}

pub fn tar_bytes(items: &[TarItem<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for item in items {
        let mut header = tar::Header::new_ustar();
        let old = header.as_old_mut();
        assert!(item.name.len() <= old.name.len() && item.link.len() <= old.linkname.len());
        old.name[..item.name.len()].copy_from_slice(item.name);
        old.linkname[..item.link.len()].copy_from_slice(item.link);
        header.set_entry_type(item.kind);
        header.set_mode(item.mode);
        header.set_size(item.data.len() as u64);
        header.set_cksum();
        builder.append(&header, item.data).unwrap();
    }
    builder.into_inner().unwrap()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

pub fn bzip2(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// The permission bits of `path`, without following a link.
pub fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

/// Asserts `result` is `Unsafe` and returns its reason, for messages.
#[track_caller]
pub fn assert_unsafe(result: Result<Extracted, ExtractError>) -> String {
    match result {
        Err(ExtractError::Unsafe { entry, reason }) => format!("{entry}: {reason}"),
        other => panic!("expected Unsafe, got {other:?}"),
    }
}

#[track_caller]
pub fn assert_limit(result: Result<Extracted, ExtractError>) -> String {
    match result {
        Err(ExtractError::LimitExceeded { what }) => what,
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
}

#[track_caller]
pub fn assert_corrupt(result: Result<Extracted, ExtractError>) -> String {
    match result {
        Err(ExtractError::Corrupt(message)) => message,
        other => panic!("expected Corrupt, got {other:?}"),
    }
}
