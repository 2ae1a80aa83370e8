//! [`BlobStore`] on a local directory, for the embedded single-node mode and for tests.
//!
//! Layout under the root: `objects/<key>` holds the objects and `tmp/` holds uploads in progress.
//! Both live on the same file system, so publishing an upload is one atomic `rename`; keeping
//! temporary files out of `objects/` means a listing never has to guess what is unfinished.

use std::io::{ErrorKind, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use tokio::fs;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufWriter};
use tokio_util::io::ReaderStream;

use crate::{BlobError, BlobReader, BlobStore, ByteStream, ObjectInfo};

/// How many times a put retries publishing when a concurrent delete pruned the parent directory
/// between our `create_dir_all` and `rename`.
const PUBLISH_ATTEMPTS: usize = 3;

/// Write buffer for uploads (see `put`).
const WRITE_BUFFER: usize = 256 * 1024;

/// Read buffer for downloads; large enough to keep syscalls cheap, small enough per reader.
const READ_CHUNK: usize = 64 * 1024;

/// A [`BlobStore`] that keeps each object as a file below a root directory.
#[derive(Debug, Clone)]
pub struct LocalBlobStore {
    objects: PathBuf,
    tmp: PathBuf,
}

impl LocalBlobStore {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, BlobError> {
        let root = root.into();
        let objects = root.join("objects");
        let tmp = root.join("tmp");
        for directory in [&objects, &tmp] {
            std::fs::create_dir_all(directory)
                .map_err(|error| io_error(&format!("creating {}", directory.display()), error))?;
        }
        Ok(Self { objects, tmp })
    }

    /// The file that holds `key`; only call with a validated key, which cannot escape `objects`.
    fn object_path(&self, key: &str) -> Result<PathBuf, BlobError> {
        crate::validate_key(key)?;
        Ok(self.objects.join(key))
    }

    /// Moves a finished temporary file to its final place.
    async fn publish(&self, temporary: &Path, destination: &Path) -> Result<(), BlobError> {
        let mut attempt = 1;
        loop {
            if let Some(parent) = destination.parent() {
                fs::create_dir_all(parent)
                    .await
                    .map_err(|error| io_error(&format!("creating {}", parent.display()), error))?;
            }
            match fs::rename(temporary, destination).await {
                Ok(()) => return Ok(()),
                // A concurrent delete may have pruned the freshly created parent; recreate it.
                Err(error) if error.kind() == ErrorKind::NotFound && attempt < PUBLISH_ATTEMPTS => {
                    attempt += 1;
                }
                Err(error) => {
                    return Err(io_error(
                        &format!("moving the upload to {}", destination.display()),
                        error,
                    ));
                }
            }
        }
    }

    /// Removes now-empty directories between `path`'s parent and `objects`, so that deleted
    /// prefixes do not leave a growing tree of empty directories for listings to walk.
    async fn prune_empty_parents(&self, path: &Path) {
        let mut current = path.parent();
        while let Some(directory) = current {
            if directory == self.objects || !directory.starts_with(&self.objects) {
                break;
            }
            // Failing here is the normal way to stop: the directory still has entries
            // (another object, or a concurrent put) or someone else already removed it.
            if fs::remove_dir(directory).await.is_err() {
                break;
            }
            current = directory.parent();
        }
    }
}

/// Deletes an unfinished upload's temporary file unless the upload was published, including when
/// the put future is dropped midway (client disconnect, timeout), which no `?` path would cover.
struct TemporaryFile {
    path: PathBuf,
    published: bool,
}

impl Drop for TemporaryFile {
    fn drop(&mut self) {
        if self.published {
            return;
        }
        // A blocking unlink in drop is acceptable: it is one quick metadata operation, and drop
        // cannot await.
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(error) if error.kind() == ErrorKind::NotFound => {}
            Err(error) => tracing::warn!(
                blob.temp_path = %self.path.display(),
                error = %error,
                "could not remove an abandoned upload's temporary file"
            ),
        }
    }
}

#[async_trait::async_trait]
impl BlobStore for LocalBlobStore {
    async fn put(&self, key: &str, mut body: ByteStream) -> Result<ObjectInfo, BlobError> {
        let destination = self.object_path(key)?;
        let mut temporary = TemporaryFile {
            path: self
                .tmp
                .join(format!("{}.part", uuid::Uuid::new_v4().simple())),
            published: false,
        };
        let file = fs::File::create(&temporary.path)
            .await
            .map_err(|error| io_error("creating the upload's temporary file", error))?;
        // tokio runs every file write on the blocking pool; coalescing the small chunks an HTTP
        // body arrives in keeps that to one hop per WRITE_BUFFER bytes.
        let mut file = BufWriter::with_capacity(WRITE_BUFFER, file);
        let mut size: u64 = 0;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|error| io_error("reading the upload body", error))?;
            file.write_all(&chunk)
                .await
                .map_err(|error| io_error("writing the upload", error))?;
            size += chunk.len() as u64;
        }
        file.flush()
            .await
            .map_err(|error| io_error("writing the upload", error))?;
        let file = file.into_inner();
        // Flush to disk before the rename, or a crash could publish an empty or torn file.
        file.sync_all()
            .await
            .map_err(|error| io_error("syncing the upload", error))?;
        drop(file);
        self.publish(&temporary.path, &destination).await?;
        temporary.published = true;
        Ok(ObjectInfo {
            key: key.to_owned(),
            size,
        })
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<BlobReader, BlobError> {
        let path = self.object_path(key)?;
        let mut file = match fs::File::open(&path).await {
            Ok(file) => file,
            Err(error) if is_missing(&error) => return Err(BlobError::NotFound(key.to_owned())),
            Err(error) => return Err(io_error(&format!("opening {key}"), error)),
        };
        let metadata = file
            .metadata()
            .await
            .map_err(|error| io_error(&format!("reading metadata of {key}"), error))?;
        // A key that names a directory is a prefix of other keys, not an object.
        if !metadata.is_file() {
            return Err(BlobError::NotFound(key.to_owned()));
        }
        let total_size = metadata.len();
        let wanted = match range {
            Some(range) => crate::clamp_range(&range, total_size),
            None => 0..total_size,
        };
        if wanted.start > 0 {
            file.seek(SeekFrom::Start(wanted.start))
                .await
                .map_err(|error| io_error(&format!("seeking in {key}"), error))?;
        }
        let size = wanted.end - wanted.start;
        // The file was opened before any later overwrite renamed a new one into place, so this
        // reader keeps seeing the old, complete content; `take` stops exactly at the range end.
        let stream = ReaderStream::with_capacity(file.take(size), READ_CHUNK);
        Ok(BlobReader {
            size,
            total_size,
            stream: Box::pin(stream),
        })
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, BlobError> {
        let path = self.object_path(key)?;
        match fs::metadata(&path).await {
            Ok(metadata) if metadata.is_file() => Ok(Some(ObjectInfo {
                key: key.to_owned(),
                size: metadata.len(),
            })),
            Ok(_directory) => Ok(None),
            Err(error) if is_missing(&error) => Ok(None),
            Err(error) => Err(io_error(&format!("reading metadata of {key}"), error)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        let path = self.object_path(key)?;
        match fs::remove_file(&path).await {
            Ok(()) => {
                self.prune_empty_parents(&path).await;
                Ok(())
            }
            Err(error) if is_missing(&error) => Ok(()),
            Err(error) => Err(io_error(&format!("deleting {key}"), error)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BlobError> {
        crate::validate_prefix(prefix)?;
        // Start the walk at the deepest directory the prefix names instead of the whole tree.
        let (start_directory, start_key) = match prefix.rsplit_once('/') {
            Some((directory, _partial)) => (self.objects.join(directory), format!("{directory}/")),
            None => (self.objects.clone(), String::new()),
        };
        let mut objects = Vec::new();
        let mut pending = vec![(start_directory, start_key)];
        while let Some((directory, key_prefix)) = pending.pop() {
            let mut entries = match fs::read_dir(&directory).await {
                Ok(entries) => entries,
                Err(error) if is_missing(&error) => continue,
                Err(error) => {
                    return Err(io_error(&format!("listing {}", directory.display()), error));
                }
            };
            while let Some(entry) = entries
                .next_entry()
                .await
                .map_err(|error| io_error(&format!("listing {}", directory.display()), error))?
            {
                // Keys are UTF-8; a foreign file with another name cannot be a blob of ours.
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                let key = format!("{key_prefix}{name}");
                // file_type() does not follow symlinks, so a link cannot lead the walk outside.
                let file_type = entry
                    .file_type()
                    .await
                    .map_err(|error| io_error(&format!("inspecting {key}"), error))?;
                if file_type.is_dir() {
                    // Descend only where keys can still match the prefix.
                    let directory_key = format!("{key}/");
                    if directory_key.starts_with(prefix) || prefix.starts_with(&directory_key) {
                        pending.push((entry.path(), directory_key));
                    }
                } else if file_type.is_file() && key.starts_with(prefix) {
                    let metadata = match entry.metadata().await {
                        Ok(metadata) => metadata,
                        // Deleted between read_dir and now: it is simply no longer listed.
                        Err(error) if is_missing(&error) => continue,
                        Err(error) => return Err(io_error(&format!("inspecting {key}"), error)),
                    };
                    objects.push(ObjectInfo {
                        key,
                        size: metadata.len(),
                    });
                }
            }
        }
        objects.sort_by(|left, right| left.key.cmp(&right.key));
        Ok(objects)
    }

    async fn health(&self) -> Result<(), BlobError> {
        // Writing and removing a file proves more than a stat: a full or read-only disk fails.
        let probe = self
            .tmp
            .join(format!("health-{}", uuid::Uuid::new_v4().simple()));
        fs::write(&probe, b"ok")
            .await
            .map_err(|error| io_error("writing the health probe", error))?;
        fs::remove_file(&probe)
            .await
            .map_err(|error| io_error("removing the health probe", error))?;
        Ok(())
    }
}

/// True when the path or one of its parents does not exist (a parent that is a file counts too,
/// since then no object can live below it).
fn is_missing(error: &std::io::Error) -> bool {
    matches!(error.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory)
}

fn io_error(context: &str, error: std::io::Error) -> BlobError {
    BlobError::Io(format!("{context}: {error}"))
}
