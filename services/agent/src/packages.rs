//! The agent's package cache: `<home>/packages/<sha256>`, one file per distinct content.
//!
//! A package is received into a private temporary file and renamed to its hash only once the
//! link has checked every byte against the declared SHA-256, so a file named by a hash always
//! holds exactly those bytes and a second upload of it is answered without a transfer.

use cuttle_agent_link::messages::{PackageUpload, Sha256Digest};
use cuttle_agent_link::{LinkError, RemoteError, RemoteErrorKind, Responder, Response};
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// Suffix of files still being received.
const PARTIAL_SUFFIX: &str = ".partial";

/// The packages this agent holds.
pub struct PackageCache {
    dir: PathBuf,
}

impl PackageCache {
    /// Uses `dir`, removing uploads a previous agent process left unfinished.
    pub fn open(dir: PathBuf) -> PackageCache {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                let partial = path
                    .file_name()
                    .and_then(|name| name.to_str())
                    .is_some_and(|name| name.ends_with(PARTIAL_SUFFIX));
                if partial && let Err(err) = std::fs::remove_file(&path) {
                    tracing::warn!(package.file = %path.display(), error = %err, "could not remove an unfinished upload");
                }
            }
        }
        PackageCache { dir }
    }

    /// Where a package with this hash is kept.
    fn path_of(&self, upload: &PackageUpload) -> PathBuf {
        self.path_of_hash(&upload.sha256)
    }

    /// Where the package with this SHA-256 is kept, once received.
    pub fn path_of_hash(&self, sha256: &Sha256Digest) -> PathBuf {
        self.dir.join(sha256.to_string())
    }

    /// Answers `upload_package`: at once when the hash is cached, else after receiving it.
    pub async fn serve_upload(&self, upload: PackageUpload, responder: Responder) {
        let path = self.path_of(&upload);
        let cached = tokio::fs::try_exists(&path).await.unwrap_or(false);
        let response = if cached {
            tracing::info!(
                package.id = %upload.package_id,
                package.version = %upload.version,
                package.sha256 = %upload.sha256,
                "package already cached"
            );
            Response::PackageStored {
                sha256: upload.sha256,
                already_cached: true,
            }
        } else {
            match self.receive(&upload, &path, &responder).await {
                Ok(()) => {
                    tracing::info!(
                        package.id = %upload.package_id,
                        package.version = %upload.version,
                        package.sha256 = %upload.sha256,
                        package.size = upload.total_size,
                        "package received"
                    );
                    Response::PackageStored {
                        sha256: upload.sha256,
                        already_cached: false,
                    }
                }
                Err(error) => {
                    tracing::warn!(package.sha256 = %upload.sha256, error = %error, "package upload failed");
                    Response::Error(error)
                }
            }
        };
        if let Err(err) = responder.respond(response).await {
            tracing::debug!(error = %err, "could not answer an upload; the worker is gone");
        }
    }

    /// Receives the bytes into a temporary file and renames it to `path` once verified.
    async fn receive(
        &self,
        upload: &PackageUpload,
        path: &Path,
        responder: &Responder,
    ) -> Result<(), RemoteError> {
        // Unique per upload, so two concurrent uploads of one package do not share a file.
        let temporary = self.dir.join(format!(
            ".{}.{}{PARTIAL_SUFFIX}",
            upload.sha256,
            uuid::Uuid::new_v4().simple()
        ));
        let result = self.receive_into(upload, &temporary, path, responder).await;
        if result.is_err()
            && let Err(err) = tokio::fs::remove_file(&temporary).await
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(package.file = %temporary.display(), error = %err, "could not remove a failed upload");
        }
        result
    }

    async fn receive_into(
        &self,
        upload: &PackageUpload,
        temporary: &Path,
        path: &Path,
        responder: &Responder,
    ) -> Result<(), RemoteError> {
        let disk = |err: std::io::Error| {
            RemoteError::new(
                RemoteErrorKind::Failed,
                format!(
                    "the agent could not write the package into {}: {err}",
                    self.dir.display()
                ),
            )
        };
        let mut file = tokio::fs::File::create(temporary).await.map_err(disk)?;
        let mut receiver = responder
            .receive_upload(upload)
            .await
            .map_err(link_failure)?;
        // `next_chunk` returns the last chunk only after the hash matched, and `None` after it.
        while let Some(chunk) = receiver.next_chunk().await.map_err(link_failure)? {
            file.write_all(&chunk).await.map_err(disk)?;
        }
        file.sync_all().await.map_err(disk)?;
        drop(file);
        tokio::fs::rename(temporary, path).await.map_err(disk)
    }
}

fn link_failure(err: LinkError) -> RemoteError {
    let kind = match err {
        LinkError::Sha256Mismatch { .. } | LinkError::UploadAborted(_) => RemoteErrorKind::Corrupt,
        _ => RemoteErrorKind::Failed,
    };
    RemoteError::new(kind, err.to_string())
}
