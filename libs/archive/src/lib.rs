//! Safe extraction of deployment packages.
//!
//! Workers deploy a package by extracting it into a fresh, versioned directory. This crate owns
//! the invariant that **an archive is never extracted outside its target directory**: no entry
//! name climbs out (`..`, absolute, drive and UNC prefixes), no link points out, nothing is ever
//! written through a link, and device files are never created. It also caps what an archive may
//! cost (bytes, entries, compression ratio) while streaming, and it is all-or-nothing: the archive
//! is extracted into a hidden staging directory next to the target, which is renamed into place
//! only once every entry was written.
//!
//! Formats: zip (also nupkg, jar, war, ear), tar, tar.gz and tar.bz2. [`inspect`] runs exactly
//! the same checks without writing, so the package feed can refuse a package at upload time for
//! the same reasons a worker would refuse to extract it.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

mod extract;
mod name;
mod tar_format;
mod walk;
mod zip_format;

pub use extract::extract;

/// The archive formats a deployment package can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArchiveFormat {
    /// A zip archive; NuGet packages (`.nupkg`) and Java archives (`.jar`, `.war`, `.ear`) are zips.
    Zip,
    /// An uncompressed tar archive.
    Tar,
    /// A gzip-compressed tar archive (`.tar.gz`, `.tgz`).
    TarGz,
    /// A bzip2-compressed tar archive (`.tar.bz2`, `.tbz2`, `.tbz`).
    TarBz2,
}

impl ArchiveFormat {
    /// Guesses the format from a file name's extension, case-insensitively.
    pub fn from_file_name(name: &str) -> Option<ArchiveFormat> {
        let lower = name.to_ascii_lowercase();
        let ends_with_any =
            |suffixes: &[&str]| suffixes.iter().any(|suffix| lower.ends_with(suffix));
        if ends_with_any(&[".zip", ".nupkg", ".jar", ".war", ".ear"]) {
            Some(ArchiveFormat::Zip)
        } else if ends_with_any(&[".tar.gz", ".tgz"]) {
            Some(ArchiveFormat::TarGz)
        } else if ends_with_any(&[".tar.bz2", ".tbz2", ".tbz"]) {
            Some(ArchiveFormat::TarBz2)
        } else if ends_with_any(&[".tar"]) {
            Some(ArchiveFormat::Tar)
        } else {
            None
        }
    }

    /// Recognizes the format from the first bytes of a file (at least 262 are needed to see a
    /// tar's `ustar` magic). A gzip or bzip2 stream is assumed to hold a tar archive, because
    /// that is the only compressed format a package can be.
    pub fn sniff(first_bytes: &[u8]) -> Option<ArchiveFormat> {
        // "PK\3\4" starts a zip's first entry; "PK\5\6" is the end record of an empty zip.
        if first_bytes.starts_with(b"PK\x03\x04") || first_bytes.starts_with(b"PK\x05\x06") {
            return Some(ArchiveFormat::Zip);
        }
        if first_bytes.starts_with(&[0x1f, 0x8b]) {
            return Some(ArchiveFormat::TarGz);
        }
        if first_bytes.len() >= 4
            && first_bytes.starts_with(b"BZh")
            && (b'1'..=b'9').contains(&first_bytes[3])
        {
            return Some(ArchiveFormat::TarBz2);
        }
        // POSIX ("ustar\0") and GNU ("ustar ") tar headers carry this magic at offset 257.
        // Pre-POSIX (v7) tars have no magic at all and are not recognized here.
        if first_bytes.get(257..262) == Some(b"ustar".as_slice()) {
            return Some(ArchiveFormat::Tar);
        }
        None
    }
}

impl fmt::Display for ArchiveFormat {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            ArchiveFormat::Zip => "zip",
            ArchiveFormat::Tar => "tar",
            ArchiveFormat::TarGz => "tar.gz",
            ArchiveFormat::TarBz2 => "tar.bz2",
        })
    }
}

/// What one archive may cost. Every cap is enforced on the bytes actually produced while
/// streaming; sizes an archive declares are only used to fail early.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The most bytes all file contents together may take (default 4 GiB).
    pub max_total_bytes: u64,
    /// The most entries the archive may create, counting files, directories (including ones
    /// implied by a path) and links (default 100 000).
    pub max_files: u64,
    /// The most bytes one file may take (default 4 GiB, the same as the total: lower it to
    /// refuse single huge files).
    pub max_file_bytes: u64,
    /// The most uncompressed bytes per byte of archive (default 200), the zip-bomb guard. It is
    /// measured against the archive's size, but never less than 64 KiB of it, so that tiny
    /// archives holding a few padded files are not refused.
    pub max_ratio: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_total_bytes: 4 << 30,
            max_files: 100_000,
            max_file_bytes: 4 << 30,
            max_ratio: 200,
        }
    }
}

impl Limits {
    /// Below this archive size the ratio is measured against this size instead.
    const RATIO_FLOOR_BYTES: u64 = 64 << 10;

    /// The most uncompressed bytes an archive of `archive_bytes` may produce under `max_ratio`.
    pub(crate) fn ratio_budget(&self, archive_bytes: u64) -> u64 {
        archive_bytes
            .max(Self::RATIO_FLOOR_BYTES)
            .saturating_mul(self.max_ratio)
    }
}

/// What [`extract`] wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extracted {
    /// Regular files written, hard links included.
    pub files: u64,
    /// File content bytes written.
    pub bytes: u64,
    /// Directories created, including ones only implied by an entry's path.
    pub directories: u64,
    /// Symbolic links created.
    pub symlinks: u64,
}

/// One entry of an archive, as [`inspect`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The normalized relative path, `/`-separated, without `.` components.
    pub path: String,
    /// What the entry is.
    pub kind: EntryKind,
    /// Content bytes actually read (not the size the archive declares); 0 for non-files.
    pub size: u64,
    /// The permission bits extraction would give the entry (see [`extract`]); 0 for links.
    pub mode: u32,
}

/// The kinds of entries a package may contain; anything else (devices, FIFOs, sockets) is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link to a path inside the package, relative to the link's directory.
    Symlink {
        /// The normalized link target.
        target: String,
    },
    /// A tar hard link to a file earlier in the same archive.
    HardLink {
        /// The normalized path of the file it links to.
        target: String,
    },
}

/// Why an archive was not extracted. On every error the target path is left as it was found:
/// absent, or an empty directory.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// An entry would escape the target directory or is of a kind that is never extracted.
    #[error("the package contains an unsafe entry `{entry}`: {reason}")]
    Unsafe {
        /// The entry's name as the archive spells it, with control characters escaped.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The archive would exceed one of the [`Limits`].
    #[error("the package exceeds a limit: {what}")]
    LimitExceeded {
        /// Which limit, and by which entry when one is to blame.
        what: String,
    },
    /// The archive is truncated, damaged or not in the format it claims to be.
    #[error("the package is not a valid archive: {0}")]
    Corrupt(String),
    /// The archive uses a feature this crate deliberately does not handle (encryption, exotic
    /// compression methods, sparse or multi-volume tar entries, non-UTF-8 names).
    #[error("the package uses an unsupported feature: {0}")]
    Unsupported(String),
    /// The target exists and is not an empty directory; packages go into fresh directories.
    #[error(
        "the target {} already exists and is not an empty directory; extract into a fresh directory",
        .0.display()
    )]
    TargetNotEmpty(PathBuf),
    /// Reading the archive file or writing the target failed.
    #[error("I/O error while extracting the package: {0}")]
    Io(#[from] std::io::Error),
}

/// Lists the entries of `archive` without extracting it, applying every check [`extract`] applies
/// (names, links, duplicates, special files, limits, checksums). Meant for validation at upload
/// time: a package `inspect` accepts is one `extract` will accept, disk errors aside.
pub fn inspect(
    archive: &Path,
    format: ArchiveFormat,
    limits: &Limits,
) -> Result<Vec<Entry>, ExtractError> {
    let mut walker = walk::Walker::new(limits, archive_len(archive)?, None);
    read_archive(archive, format, &mut walker)?;
    Ok(walker.finish()?.1)
}

/// Feeds every entry of `archive` to `walker`, after checking the file looks like `format`.
fn read_archive(
    archive: &Path,
    format: ArchiveFormat,
    walker: &mut walk::Walker<'_>,
) -> Result<(), ExtractError> {
    check_magic(archive, format)?;
    match format {
        ArchiveFormat::Zip => zip_format::walk(archive, walker),
        ArchiveFormat::Tar | ArchiveFormat::TarGz | ArchiveFormat::TarBz2 => {
            tar_format::walk(archive, format, walker)
        }
    }
}

fn archive_len(archive: &Path) -> Result<u64, ExtractError> {
    let metadata = std::fs::metadata(archive).map_err(|error| {
        std::io::Error::new(
            error.kind(),
            format!("cannot read package {}: {error}", archive.display()),
        )
    })?;
    Ok(metadata.len())
}

/// Refuses a file whose first bytes say it is not a `format` archive, so that a text file named
/// `.zip` gets a clear message rather than a parser's complaint about a missing end record.
fn check_magic(archive: &Path, format: ArchiveFormat) -> Result<(), ExtractError> {
    let mut first_bytes = Vec::with_capacity(512);
    File::open(archive)?
        .take(512)
        .read_to_end(&mut first_bytes)?;
    if first_bytes.is_empty() {
        return Err(ExtractError::Corrupt(format!(
            "the file is empty, not a {format} archive"
        )));
    }
    let sniffed = ArchiveFormat::sniff(&first_bytes);
    match (format, sniffed) {
        (_, Some(found)) if found == format => Ok(()),
        (_, Some(found)) => Err(ExtractError::Corrupt(format!(
            "the file is a {found} archive, not a {format} archive as its name or feed says"
        ))),
        // A plain tar may lack the `ustar` magic (v7 format); its header checksums are checked
        // while reading instead. Anything shorter than one header block is not a tar, though.
        (ArchiveFormat::Tar, None) if first_bytes.len() < 512 => Err(ExtractError::Corrupt(
            "the file is shorter than one tar header block (is it a text or HTML file?)".to_owned(),
        )),
        (ArchiveFormat::Tar, None) => Ok(()),
        (_, None) => Err(ExtractError::Corrupt(format!(
            "the file does not start like a {format} archive (is it a text or HTML file?)"
        ))),
    }
}
