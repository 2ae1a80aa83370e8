//! The built-in package feed: its logic as a library, and the `package-feed` service.
//!
//! The library holds the rules of a push and a download as plain functions and types: parsing
//! `<PackageId>.<Version>.<ext>` ([`file_name`]), spooling and hashing an upload ([`spool`])
//! while relaying it to the blob store ([`relay`]),
//! checking the archive ([`archive`]), overwrite rules ([`overwrite`]), blob keys
//! ([`blob_key`]) and byte ranges ([`range`]). Its HTTP surface is served by the api process
//! (`services/api/src/packages.rs`) so that clients keep one base URL.
//!
//! The service itself only connects the database and the blob store and serves health,
//! readiness and metrics; retention will run there.

pub mod archive;
pub mod file_name;
pub mod overwrite;
pub mod range;
pub mod relay;
pub mod retention;
pub mod spool;

pub use archive::PackageMetadata;
pub use file_name::{PackageFileName, PackageFormat};
pub use overwrite::{OverwriteMode, PushDecision};
pub use range::{RangeRequest, parse_range};
pub use relay::{RelaySender, StoreStopped, relay};
pub use spool::{Spool, Spooled};

use cuttle_domain::SpaceId;
use cuttle_domain::package::{PackageId, PackageVersion};

/// Why a pushed file was refused; every variant is the client's to fix (400) except `Io`.
#[derive(Debug, thiserror::Error)]
pub enum InvalidPackage {
    /// The file name is not `<PackageId>.<Version>.<ext>` with a known extension.
    #[error("The file name '{name}' is not a valid package file name: {reason}")]
    FileName {
        /// The name as sent.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The upload was empty.
    #[error("The package file is empty.")]
    Empty,
    /// The content is not a valid archive of the kind its extension names.
    #[error("The file is not a valid {extension} package: {reason}")]
    Archive {
        /// The extension the name promised.
        extension: String,
        /// What is wrong.
        reason: String,
    },
    /// A nupkg's `.nuspec` is missing, malformed, or disagrees with the file name.
    #[error("The NuGet package's .nuspec is not valid: {reason}")]
    Nuspec {
        /// What is wrong.
        reason: String,
    },
    /// Reading the spooled file failed: the server's problem, not the client's.
    #[error("reading the uploaded package failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The blob key of one stored file: `packages/<space>/<upload>`, a fresh random name per push.
///
/// The key is scoped by space and short and bounded whatever the package: ids (up to 100
/// characters) and versions (up to 349) are not in it, since object stores limit key length
/// (and s3s-fs, the test S3 server, a file name derived from it to 255 bytes); the row maps
/// id and version to the key. Nor is the file's hash, which is only known once the whole upload
/// has arrived, after the blob store has started receiving it. Every upload gets its own key,
/// so two pushes of the same version racing each other, or an overwrite racing a download,
/// never write or delete the same object: the row decides which object is current, and only
/// objects no row points to are deleted.
pub fn blob_key(space: &SpaceId) -> String {
    let upload = uuid::Uuid::new_v4().simple();
    format!("packages/{}/{upload}", space.as_str())
}

/// The Octopus id of a package version: `packages-<PackageId>.<Version>`.
pub fn octopus_package_id(package_id: &str, version: &str) -> String {
    format!("packages-{package_id}.{version}")
}

/// Splits an Octopus package id `packages-<PackageId>.<Version>` (the `packages-` prefix is
/// optional, and case-insensitive).
pub fn parse_octopus_package_id(id: &str) -> Option<(PackageId, PackageVersion)> {
    let stem = match id.get(..9) {
        Some(prefix) if prefix.eq_ignore_ascii_case("packages-") => &id[9..],
        _ => id,
    };
    cuttle_domain::package::split_id_and_version(stem)
}

use cuttle_blob::BlobStore;
use cuttle_store::Store;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// The feed's dependencies.
#[derive(Clone)]
pub struct PackageFeed {
    /// Database (package metadata).
    pub store: Store,
    /// Blob store (package files).
    pub blob: Arc<dyn BlobStore>,
}

impl PackageFeed {
    /// Checks both backends answer.
    pub async fn ready(&self) -> Result<(), String> {
        self.store
            .health()
            .await
            .map_err(|err| format!("database: {err}"))?;
        self.blob
            .health()
            .await
            .map_err(|err| format!("blob store: {err}"))?;
        Ok(())
    }

    /// The feed service's own HTTP routes (health, readiness, metrics); the package routes are
    /// the api's.
    pub fn router(&self) -> axum::Router {
        let feed = self.clone();
        cuttle_telemetry::ops_router(move || {
            let feed = feed.clone();
            async move { feed.ready().await }
        })
    }

    /// Serves the feed's routes on its own listener (distributed mode) until `shutdown`, with
    /// retention rounds every `retention_every` (none when zero).
    pub async fn serve(
        self,
        listener: TcpListener,
        retention_every: std::time::Duration,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        self.ready()
            .await
            .map_err(|reason| anyhow::anyhow!("package feed is not ready: {reason}"))?;
        tracing::info!(address = %listener.local_addr()?, "package feed started");
        let stop = tokio_util::sync::CancellationToken::new();
        let retention = self.spawn_retention(retention_every, stop.clone());
        let served = axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await;
        stop.cancel();
        if let Some(retention) = retention
            && let Err(err) = retention.await
        {
            tracing::error!(error = %err, "the retention loop ended abnormally");
        }
        Ok(served?)
    }

    /// Runs inside another process's listener (embedded mode): checks its backends, then runs
    /// retention rounds until `shutdown`.
    pub async fn run_embedded(
        self,
        retention_every: std::time::Duration,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        self.ready()
            .await
            .map_err(|reason| anyhow::anyhow!("package feed is not ready: {reason}"))?;
        tracing::info!("package feed started (embedded)");
        let stop = tokio_util::sync::CancellationToken::new();
        let retention = self.spawn_retention(retention_every, stop.clone());
        shutdown.await;
        stop.cancel();
        if let Some(retention) = retention
            && let Err(err) = retention.await
        {
            tracing::error!(error = %err, "the retention loop ended abnormally");
        }
        Ok(())
    }

    fn spawn_retention(
        &self,
        every: std::time::Duration,
        stop: tokio_util::sync::CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        (!every.is_zero()).then(|| tokio::spawn(self.clone().run_retention_loop(every, stop)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octopus_package_ids_round_trip() {
        let id = octopus_package_id("My.Pkg", "1.2.3-beta.4+meta");
        assert_eq!(id, "packages-My.Pkg.1.2.3-beta.4+meta");
        let (package_id, version) = parse_octopus_package_id(&id).unwrap();
        assert_eq!(package_id.as_str(), "My.Pkg");
        assert_eq!(version.as_str(), "1.2.3-beta.4+meta");
        assert!(parse_octopus_package_id("packages-nothing").is_none());
    }

    #[test]
    fn blob_keys_are_scoped_by_space_short_and_unique_per_upload() {
        let space = SpaceId::parse("Spaces-2").unwrap();
        let key = blob_key(&space);
        assert!(key.starts_with("packages/Spaces-2/"), "{key}");
        assert!(key.len() <= 100, "{key}");
        assert_ne!(key, blob_key(&space));
    }
}
