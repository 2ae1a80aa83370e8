//! Spooling an upload to a temporary file while hashing it.
//!
//! Why spool at all: a zip (and so a nupkg or jar) can only be validated from its central
//! directory at the end of the file, which needs random access, and a package must be validated
//! before it is published. Tar formats could be validated while streaming, but one path for
//! every format is simpler, and the cost is one sequential write of the file to local disk
//! (the page cache, mostly: the file lives only as long as the request, so it is never synced).
//! The blob store receives the same chunks at the same time through a [`crate::relay`]. Memory
//! stays bounded: one body chunk at a time here.

use sha2::{Digest, Sha256};
use std::path::Path;
use tokio::io::AsyncWriteExt;

/// Bytes collected before each write to the file (tokio hands every write to a blocking thread).
const WRITE_BUFFER_BYTES: usize = 256 * 1024;

/// An upload being written to a temporary file.
pub struct Spool {
    temp: tempfile::TempPath,
    file: tokio::io::BufWriter<tokio::fs::File>,
    hasher: Sha256,
    size: u64,
}

/// A complete upload on disk, with its size and SHA-256. The file is removed on drop.
pub struct Spooled {
    temp: tempfile::TempPath,
    /// Bytes received.
    pub size: u64,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
}

impl Spool {
    /// Creates an empty temporary file in the system's temporary directory.
    pub fn new() -> std::io::Result<Spool> {
        let (file, temp) = tempfile::Builder::new()
            .prefix("cuttle-upload-")
            .tempfile()?
            .into_parts();
        Ok(Spool {
            temp,
            file: tokio::io::BufWriter::with_capacity(
                WRITE_BUFFER_BYTES,
                tokio::fs::File::from_std(file),
            ),
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Appends one chunk.
    pub async fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.hasher.update(chunk);
        self.size += chunk.len() as u64;
        self.file.write_all(chunk).await
    }

    /// Flushes the file and returns it with its size and hash.
    pub async fn finish(mut self) -> std::io::Result<Spooled> {
        self.file.flush().await?;
        Ok(Spooled {
            temp: self.temp,
            size: self.size,
            sha256: hex::encode(self.hasher.finalize()),
        })
    }
}

impl Spooled {
    /// Where the file is, for validation.
    pub fn path(&self) -> &Path {
        &self.temp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_spooled_upload_has_its_size_hash_and_bytes() {
        let mut spool = Spool::new().unwrap();
        spool.write(b"hello ").await.unwrap();
        spool.write(b"world").await.unwrap();
        let spooled = spool.finish().await.unwrap();
        assert_eq!(spooled.size, 11);
        assert_eq!(
            spooled.sha256,
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        let path = spooled.path().to_owned();
        assert_eq!(std::fs::read(&path).unwrap(), b"hello world");
        drop(spooled);
        assert!(!path.exists(), "the temporary file outlived the push");
    }
}
