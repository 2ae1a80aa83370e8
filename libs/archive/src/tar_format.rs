//! Tar archives, plain or compressed with gzip or bzip2, read as one stream.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use tar::EntryType;

use crate::walk::{self, GuardedReader, Walker};
use crate::{ArchiveFormat, ExtractError};

pub(crate) fn walk(
    archive: &Path,
    format: ArchiveFormat,
    walker: &mut Walker<'_>,
) -> Result<(), ExtractError> {
    let file = BufReader::new(File::open(archive)?);
    // Multi-member decoders: `pigz` and `pbzip2` write several concatenated members, which
    // are one valid stream.
    let stream: Box<dyn Read> = match format {
        ArchiveFormat::TarGz => Box::new(flate2::read::MultiGzDecoder::new(file)),
        ArchiveFormat::TarBz2 => Box::new(bzip2::read::MultiBzDecoder::new(file)),
        ArchiveFormat::Tar | ArchiveFormat::Zip => Box::new(file),
    };
    let guarded = GuardedReader::new(stream, walker.stream_budget(), walker.max_ratio());
    let mut tar = tar::Archive::new(guarded);
    for entry in tar
        .entries()
        .map_err(|error| walk::archive_read_error(error, ""))?
    {
        let mut entry = entry.map_err(|error| walk::archive_read_error(error, ""))?;
        let name = utf8(&entry.path_bytes(), "name")?;
        let header = entry.header();
        let entry_type = header.entry_type();
        let mode = header.mode().map_err(|error| {
            ExtractError::Corrupt(format!("entry `{name}` has a bad mode: {error}"))
        })?;
        match entry_type {
            EntryType::Regular | EntryType::Continuous => {
                let size = entry.size();
                walker.file(&name, Some(mode), size, Some(size), &mut entry)?;
            }
            EntryType::Directory => walker.directory(&name, Some(mode))?,
            EntryType::Symlink => {
                let target = link_name(&entry, &name)?;
                walker.symlink(&name, &target)?;
            }
            EntryType::Link => {
                let target = link_name(&entry, &name)?;
                walker.hard_link(&name, &target)?;
            }
            EntryType::Char => return Err(walker.refuse_special(&name, "character device")),
            EntryType::Block => return Err(walker.refuse_special(&name, "block device")),
            EntryType::Fifo => return Err(walker.refuse_special(&name, "FIFO")),
            // A pax global header only carries defaults (times, charset) for later entries.
            EntryType::XGlobalHeader => {}
            other => {
                return Err(ExtractError::Unsupported(format!(
                    "entry `{}` is a tar entry of type {:?} ({}); packages may contain only \
                     files, directories and links",
                    crate::name::display_name(&name),
                    other,
                    char::from(other.as_byte()).escape_default()
                )));
            }
        }
    }
    let mut stream = tar.into_inner();
    // The `tar` crate stops quietly when the stream ends between two entries, so a truncated
    // archive would look like a shorter, valid one. A complete archive ends with a zero block,
    // at which the crate stops reading before the stream runs dry.
    if stream.reached_end {
        return Err(ExtractError::Corrupt(
            "the tar archive ends without its end-of-archive marker; it is probably truncated"
                .to_owned(),
        ));
    }
    // Reading the rest (padding) lets gzip and bzip2 check their trailer and checksum, so a
    // compressed stream cut after the end marker is still noticed.
    io::copy(&mut stream, &mut io::sink()).map_err(|error| walk::archive_read_error(error, ""))?;
    Ok(())
}

fn link_name(entry: &tar::Entry<'_, impl Read>, name: &str) -> Result<String, ExtractError> {
    match entry.link_name_bytes() {
        Some(bytes) => utf8(&bytes, "link target"),
        None => Err(ExtractError::Corrupt(format!(
            "link entry `{}` has no target",
            crate::name::display_name(name)
        ))),
    }
}

/// Package names must be UTF-8: a name's bytes are otherwise interpreted differently by each
/// platform and tool, and could not be checked once for all of them.
fn utf8(bytes: &[u8], what: &str) -> Result<String, ExtractError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| {
        ExtractError::Unsupported(format!(
            "an entry {what} is not valid UTF-8 (`{}`)",
            String::from_utf8_lossy(bytes)
        ))
    })
}
