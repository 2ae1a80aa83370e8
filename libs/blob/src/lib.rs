//! Blob storage port for Cuttle: package files, task logs and artifacts.
//!
//! Two adapters implement [`BlobStore`]: [`LocalBlobStore`] (a directory, for the embedded
//! single-node mode) and [`S3BlobStore`] (any S3-compatible service, for the distributed mode).
//! Both are held to the same behaviour by `tests/conformance.rs`, which runs one set of stories
//! against each.
//!
//! Invariant: a put is all-or-nothing. Readers see either the previous object or the complete new
//! one, and a body that fails (or a put future that is dropped) leaves nothing behind.

#![warn(missing_docs)]

use std::ops::Range;
use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;

mod local;
mod s3;

pub use local::LocalBlobStore;
pub use s3::{
    DEFAULT_DOWNLOAD_CONCURRENCY, DEFAULT_PART_SIZE, DEFAULT_UPLOAD_CONCURRENCY, MIN_PART_SIZE,
    S3BlobStore, S3Config,
};

/// Why a blob operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The key names no object.
    #[error("blob not found: {0}")]
    NotFound(String),
    /// The key (or list prefix) is not a safe relative '/'-separated path.
    #[error("invalid blob key: {0}")]
    InvalidKey(String),
    /// Local file-system I/O failed, or the upload body stream returned an error.
    #[error("blob I/O error: {0}")]
    Io(String),
    /// The storage service failed or rejected the request (also used for bad configuration).
    #[error("blob backend error: {0}")]
    Backend(String),
}

/// A stream of body chunks, used both for uploads and downloads.
pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// A stored object's key and size in bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectInfo {
    /// The object's key, as given to [`BlobStore::put`].
    pub key: String,
    /// The object's total size in bytes.
    pub size: u64,
}

/// An object body being downloaded.
pub struct BlobReader {
    /// Number of bytes this response will yield (the range length when a range was asked for).
    pub size: u64,
    /// Size of the whole object, whatever the range.
    pub total_size: u64,
    /// The body; yields exactly `size` bytes unless the backend fails midway.
    pub stream: ByteStream,
}

impl std::fmt::Debug for BlobReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobReader")
            .field("size", &self.size)
            .field("total_size", &self.total_size)
            .finish_non_exhaustive()
    }
}

/// A place to keep immutable-ish binary objects addressed by '/'-separated keys.
///
/// Keys are relative paths such as `packages/Spaces-1/acme.web.1.2.3.zip`: not empty, no leading
/// '/', no empty, `.` or `..` segments, no backslash and no NUL. Other keys fail with
/// [`BlobError::InvalidKey`] so that a key can never escape the local store's root directory.
#[async_trait::async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Streams `body` into `key`; all-or-nothing: readers never see a partial object, and a
    /// failed/aborted body leaves nothing behind (S3: multipart upload aborted; local: temp file
    /// removed). Overwrites existing.
    async fn put(&self, key: &str, body: ByteStream) -> Result<ObjectInfo, BlobError>;

    /// Reads `key`, or only `range` of it (start inclusive, end exclusive); NotFound if absent.
    ///
    /// Like HTTP ranges, the range is clamped to the object: an end past the object stops at its
    /// end, and an empty range or one starting at or past the end yields an empty body.
    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<BlobReader, BlobError>;

    /// Returns the object's key and size, or None if absent.
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, BlobError>;

    /// Deletes `key`; deleting a missing key is Ok.
    async fn delete(&self, key: &str) -> Result<(), BlobError>;

    /// Lists all objects whose key starts with `prefix` (a plain string prefix, not only whole
    /// segments), sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BlobError>;

    /// Checks that the store is reachable and usable (readiness probes).
    async fn health(&self) -> Result<(), BlobError>;
}

/// Wraps one in-memory buffer as a single-chunk [`ByteStream`].
pub fn bytes_stream(data: Bytes) -> ByteStream {
    Box::pin(futures::stream::once(async move { Ok(data) }))
}

/// Checks that `key` is a safe relative object key (see [`BlobStore`] for the rules).
pub(crate) fn validate_key(key: &str) -> Result<(), BlobError> {
    if key.is_empty() {
        return Err(BlobError::InvalidKey("key is empty".to_owned()));
    }
    check_characters(key)?;
    for segment in key.split('/') {
        check_segment(key, segment)?;
    }
    Ok(())
}

/// Checks a list prefix: the same rules as a key, except that it may be empty and its last
/// segment may be empty or partial (`builds/` and `builds/pkg-1` are both fine).
pub(crate) fn validate_prefix(prefix: &str) -> Result<(), BlobError> {
    if prefix.is_empty() {
        return Ok(());
    }
    check_characters(prefix)?;
    if let Some((directory, _partial)) = prefix.rsplit_once('/') {
        for segment in directory.split('/') {
            check_segment(prefix, segment)?;
        }
    }
    Ok(())
}

fn check_characters(key: &str) -> Result<(), BlobError> {
    if key.starts_with('/') {
        return Err(BlobError::InvalidKey(format!(
            "{key:?} is an absolute path"
        )));
    }
    if key.contains('\\') {
        return Err(BlobError::InvalidKey(format!(
            "{key:?} contains a backslash"
        )));
    }
    if key.contains('\0') {
        return Err(BlobError::InvalidKey(format!("{key:?} contains NUL")));
    }
    Ok(())
}

fn check_segment(key: &str, segment: &str) -> Result<(), BlobError> {
    match segment {
        "" => Err(BlobError::InvalidKey(format!(
            "{key:?} has an empty path segment"
        ))),
        "." | ".." => Err(BlobError::InvalidKey(format!(
            "{key:?} has a {segment:?} path segment"
        ))),
        _ => Ok(()),
    }
}

/// Clamps a requested range to an object of `total` bytes, HTTP-style (see [`BlobStore::get`]).
pub(crate) fn clamp_range(range: &Range<u64>, total: u64) -> Range<u64> {
    let end = range.end.min(total);
    let start = range.start.min(end);
    start..end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_keys_are_accepted() {
        for key in [
            "a",
            "a/b.zip",
            "packages/Spaces-1/x.1.0.0.nupkg",
            "a/.hidden",
            "a..b",
        ] {
            assert!(validate_key(key).is_ok(), "{key}");
        }
    }

    #[test]
    fn hostile_keys_are_rejected() {
        for key in [
            "",
            "/abs",
            "../x",
            "a/../../b",
            "a/..",
            "./a",
            "a//b",
            "a/",
            "a\\b",
            "a\0b",
        ] {
            assert!(
                matches!(validate_key(key), Err(BlobError::InvalidKey(_))),
                "{key:?}"
            );
        }
    }

    #[test]
    fn prefixes_may_be_empty_or_partial_but_not_escape() {
        for prefix in ["", "a", "a/", "a/b", "a/b/", "a/.."] {
            assert!(validate_prefix(prefix).is_ok(), "{prefix:?}");
        }
        for prefix in ["/", "/a", "../", "a/../b", "a//", "a\\"] {
            assert!(validate_prefix(prefix).is_err(), "{prefix:?}");
        }
    }

    #[test]
    fn ranges_are_clamped_to_the_object() {
        assert_eq!(clamp_range(&(2..5), 10), 2..5);
        assert_eq!(clamp_range(&(2..50), 10), 2..10);
        assert_eq!(clamp_range(&(20..50), 10), 10..10);
        let (start, end) = (5, 2);
        assert_eq!(clamp_range(&(start..end), 10), 2..2);
    }
}
