//! The package-feed service: the built-in package repository on the blob store.
//!
//! Thin for now: it connects the database and the blob store, proves both are reachable, and
//! serves health, readiness and metrics. Upload, listing, download, build information and
//! retention arrive with the package-feed work; until then the api's fallback answers those
//! routes with a clear 501 (see `services/api/src/fallback.rs`) rather than pretending.

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

    /// The feed's HTTP routes (health, readiness, metrics).
    pub fn router(&self) -> axum::Router {
        let feed = self.clone();
        cuttle_telemetry::ops_router(move || {
            let feed = feed.clone();
            async move { feed.ready().await }
        })
    }

    /// Serves the feed's routes on its own listener (distributed mode) until `shutdown`.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        self.ready()
            .await
            .map_err(|reason| anyhow::anyhow!("package feed is not ready: {reason}"))?;
        tracing::info!(address = %listener.local_addr()?, "package feed started");
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await?;
        Ok(())
    }

    /// Runs inside another process's listener (embedded mode): checks its backends, then waits.
    pub async fn run_embedded(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        self.ready()
            .await
            .map_err(|reason| anyhow::anyhow!("package feed is not ready: {reason}"))?;
        tracing::info!("package feed started (embedded)");
        shutdown.await;
        Ok(())
    }
}
