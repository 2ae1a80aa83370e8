//! Zip archives (and nupkg, jar, war, ear), read through the central directory.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use zip::read::ZipReadOptions;
use zip::result::ZipError;

use crate::ExtractError;
use crate::walk::{self, MAX_LINK_TARGET_BYTES, Walker};

// The file type bits of a Unix mode, as zip's "external attributes" carry them.
const TYPE_MASK: u32 = 0o170_000;
const TYPE_FIFO: u32 = 0o010_000;
const TYPE_CHARACTER_DEVICE: u32 = 0o020_000;
const TYPE_DIRECTORY: u32 = 0o040_000;
const TYPE_BLOCK_DEVICE: u32 = 0o060_000;
const TYPE_FILE: u32 = 0o100_000;
const TYPE_SYMLINK: u32 = 0o120_000;
const TYPE_SOCKET: u32 = 0o140_000;

pub(crate) fn walk(archive: &Path, walker: &mut Walker<'_>) -> Result<(), ExtractError> {
    let file = File::open(archive)?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file)).map_err(zip_error)?;
    if zip.len() as u64 > walker.max_entries() {
        return Err(ExtractError::LimitExceeded {
            what: format!(
                "the archive has {} entries, more than the limit of {}",
                zip.len(),
                walker.max_entries()
            ),
        });
    }
    // The zip crate keeps one entry per name, so a repeated name would silently hide one of
    // them; a reader elsewhere (the feed's validation, another tool) could pick the other.
    if zip.has_duplicate_names() {
        return Err(ExtractError::Unsafe {
            entry: "(central directory)".to_owned(),
            reason: "the archive contains the same entry name more than once".to_owned(),
        });
    }
    for index in 0..zip.len() {
        // Header consistency: the local header must agree with the central directory, so a
        // streaming reader and this one cannot be shown different names or sizes.
        let options = ZipReadOptions::new().enforce_header_consistency(true);
        let mut entry = zip
            .by_index_with_options(index, options)
            .map_err(zip_error)?;
        let name = entry
            .name()
            .map_err(|error| {
                ExtractError::Corrupt(format!("entry {index} has an unreadable name: {error}"))
            })?
            .into_owned();
        if entry.encrypted() {
            return Err(ExtractError::Unsupported(format!(
                "entry `{name}` is encrypted; packages must not be password-protected"
            )));
        }
        let unix_mode = entry.unix_mode();
        match unix_mode.map(|mode| mode & TYPE_MASK) {
            Some(TYPE_SYMLINK) => {
                let target = read_link_target(&mut entry, &name)?;
                walker.symlink(&name, &target)?;
            }
            Some(TYPE_CHARACTER_DEVICE) => {
                return Err(walker.refuse_special(&name, "character device"));
            }
            Some(TYPE_BLOCK_DEVICE) => return Err(walker.refuse_special(&name, "block device")),
            Some(TYPE_FIFO) => return Err(walker.refuse_special(&name, "FIFO")),
            Some(TYPE_SOCKET) => return Err(walker.refuse_special(&name, "socket")),
            Some(TYPE_DIRECTORY) => walker.directory(&name, unix_mode)?,
            // No type bits (archives made on Windows) or a regular file: the name decides.
            Some(0 | TYPE_FILE) | None if entry.is_dir() => walker.directory(&name, unix_mode)?,
            Some(0 | TYPE_FILE) | None => {
                let declared_size = entry.size();
                walker.file(&name, unix_mode, declared_size, None, &mut entry)?;
            }
            Some(other) => {
                return Err(
                    walker.refuse_special(&name, &format!("file of unknown type {other:o}"))
                );
            }
        }
    }
    Ok(())
}

/// A zip symlink stores its target as the entry's content.
fn read_link_target(entry: &mut dyn Read, name: &str) -> Result<String, ExtractError> {
    let mut target = Vec::new();
    entry
        .take(MAX_LINK_TARGET_BYTES + 1)
        .read_to_end(&mut target)
        .map_err(|error| walk::archive_read_error(error, name))?;
    if target.len() as u64 > MAX_LINK_TARGET_BYTES {
        return Err(ExtractError::Unsafe {
            entry: crate::name::display_name(name),
            reason: format!(
                "its symbolic link target is longer than {MAX_LINK_TARGET_BYTES} bytes"
            ),
        });
    }
    String::from_utf8(target).map_err(|_| {
        ExtractError::Unsupported(format!(
            "entry `{name}` links to a target that is not UTF-8"
        ))
    })
}

fn zip_error(error: ZipError) -> ExtractError {
    match error {
        ZipError::Io(error) => walk::archive_read_error(error, ""),
        ZipError::UnsupportedArchive(what) => ExtractError::Unsupported(format!("zip: {what}")),
        ZipError::CompressionMethodNotSupported(method) => ExtractError::Unsupported(format!(
            "zip compression method {method}; packages may use only stored or deflated entries"
        )),
        other => ExtractError::Corrupt(format!("zip: {other}")),
    }
}
