//! Extraction into a staging directory that is renamed into place only when complete.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::walk::Walker;
use crate::{ArchiveFormat, ExtractError, Extracted, Limits};

/// Tells apart the staging directories of concurrent extractions in one process.
static STAGING_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Extracts `archive` into `target`, which must not exist yet or be an empty directory: a fresh,
/// versioned directory. Its parent is created if needed.
///
/// All-or-nothing: entries are written into a hidden sibling, `.<target>.partial-…`, which is
/// renamed to `target` only after the last entry; on any error it is removed and `target` is left
/// as it was found. (A crash mid-way can leave such a sibling behind, never a half-filled target.)
///
/// Files keep their owner's execute bit from the archive and get at most `0o755` and at least
/// `0o600`; directories get at most `0o755` and at least `0o700`. Setuid, setgid, sticky and group
/// or world write bits are dropped. Owners and timestamps are not restored.
pub fn extract(
    archive: &Path,
    format: ArchiveFormat,
    target: &Path,
    limits: &Limits,
) -> Result<Extracted, ExtractError> {
    check_target(target)?;
    let file_name = target.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("target {} does not name a directory", target.display()),
        )
    })?;
    let parent = match target.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent)?;
    let staging = create_staging(&parent, &file_name.to_string_lossy())?;

    let result = extract_into(archive, format, &staging, limits)
        .and_then(|extracted| publish(&staging, target).map(|()| extracted));
    if result.is_err() {
        remove_staging(&staging);
    }
    result
}

fn extract_into(
    archive: &Path,
    format: ArchiveFormat,
    staging: &Path,
    limits: &Limits,
) -> Result<Extracted, ExtractError> {
    let mut walker = Walker::new(
        limits,
        crate::archive_len(archive)?,
        Some(staging.to_path_buf()),
    );
    crate::read_archive(archive, format, &mut walker)?;
    let (extracted, _) = walker.finish()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // The staging directory was private while being filled; the result is an ordinary one.
        fs::set_permissions(staging, fs::Permissions::from_mode(0o755))?;
    }
    Ok(extracted)
}

/// The target may be absent or an empty directory (not a link to one).
fn check_target(target: &Path) -> Result<(), ExtractError> {
    match fs::symlink_metadata(target) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error.into()),
        Ok(metadata) if metadata.is_dir() && fs::read_dir(target)?.next().is_none() => Ok(()),
        Ok(_) => Err(ExtractError::TargetNotEmpty(target.to_path_buf())),
    }
}

/// Creates the private staging directory next to the target, on the same file system so the
/// final rename is atomic.
fn create_staging(parent: &Path, target_name: &str) -> Result<PathBuf, ExtractError> {
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        // Private while being filled: other users cannot look at or race with a half-written
        // package.
        builder.mode(0o700);
    }
    loop {
        let attempt = STAGING_COUNTER.fetch_add(1, Ordering::Relaxed);
        let staging = parent.join(format!(
            ".{target_name}.partial-{}-{attempt}",
            std::process::id()
        ));
        match builder.create(&staging) {
            Ok(()) => return Ok(staging),
            // Left behind by a crashed process that had the same id; try the next name.
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists && attempt < 1_000_000 => {}
            Err(error) => return Err(error.into()),
        }
    }
}

/// Moves the finished staging directory to `target`.
fn publish(staging: &Path, target: &Path) -> Result<(), ExtractError> {
    // On Unix, `rename(2)` atomically replaces an empty directory, and fails if it is no
    // longer empty. Elsewhere the empty target has to go first.
    if !cfg!(unix) && target.exists() {
        fs::remove_dir(target)?;
    }
    fs::rename(staging, target).map_err(|error| {
        if error.kind() == io::ErrorKind::DirectoryNotEmpty {
            ExtractError::TargetNotEmpty(target.to_path_buf())
        } else {
            error.into()
        }
    })
}

fn remove_staging(staging: &Path) {
    // `remove_dir_all` does not follow symbolic links, so links the archive made are removed,
    // not what they point at.
    if let Err(error) = fs::remove_dir_all(staging) {
        // The extraction error is what the caller must see; a leftover hidden directory only
        // costs disk space, and its name says what it is.
        tracing::warn!(
            staging.path = %staging.display(),
            error = %error,
            "could not remove the staging directory of a failed package extraction"
        );
    }
}
