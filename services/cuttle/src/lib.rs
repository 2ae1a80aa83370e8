//! The `cuttle` binary's library: how the services are put together, once per process
//! (`cuttle api`, `cuttle worker`, ...) or all in one (`cuttle server`, embedded mode).
//!
//! Every service follows the same shape: backends from config, then serve or consume until the
//! shutdown future resolves. Tests drive exactly these functions.

use anyhow::Context;
use cuttle_api::AppState;
use cuttle_api::bootstrap::{self, Bootstrap};
use cuttle_orchestrator::Orchestrator;
use cuttle_package_feed::PackageFeed;
use cuttle_platform::outbox::RelayWaker;
use cuttle_platform::{Backends, Config, Secret};
use cuttle_worker::Worker;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Backends connected, database migrated and bootstrapped: ready to serve.
pub struct Prepared {
    /// The configuration.
    pub config: Config,
    /// Connected ports.
    pub backends: Backends,
    /// What first-start bootstrap did (the admin key on a first start).
    pub bootstrap: Bootstrap,
}

/// Connects every port, migrates, and bootstraps the installation (embedded mode).
pub async fn prepare_embedded(config: Config) -> anyhow::Result<Prepared> {
    let backends = Backends::connect(&config, true).await?;
    let fixed_key = config.admin_api_key.as_ref().map(Secret::expose);
    let bootstrap = bootstrap::ensure(&backends.store, fixed_key)
        .await
        .map_err(|e| anyhow::anyhow!("bootstrap failed: {e:?}"))?;
    Ok(Prepared {
        config,
        backends,
        bootstrap,
    })
}

fn api_state(
    config: &Config,
    backends: &Backends,
    bootstrap: &Bootstrap,
    server_thumbprint: String,
) -> anyhow::Result<AppState> {
    Ok(AppState {
        bus: backends.bus.clone(),
        store: backends.store.clone(),
        cache: backends.cache.clone(),
        blob: backends.blob.clone(),
        relay: RelayWaker::new(),
        installation_id: bootstrap.installation_id.clone(),
        node_name: config.node_name(),
        server_thumbprint,
        agent_trust: cuttle_platform::agent_trust::Publisher::spawn(
            backends.store.clone(),
            backends.cache.clone(),
        ),
        keyring: backends.keyring.clone(),
        auth: std::sync::Arc::new(cuttle_api::sessions::Auth::new(
            config.auth.clone(),
            backends.keyring.as_deref(),
            &bootstrap.installation_id,
        )),
        limits: config.limits.clone(),
        mailer: cuttle_api::mail::Mailer::from_config(&config.smtp)?.map(std::sync::Arc::new),
    })
}

/// The certificate workers present to agents (created on first start), from
/// `server.certificate_dir`.
pub fn server_identity(config: &Config) -> anyhow::Result<cuttle_agent_link::WorkerIdentity> {
    let dir = config
        .server
        .certificate_dir
        .clone()
        .unwrap_or_else(|| config.server.data_dir.join("certificates"));
    cuttle_agent_link::WorkerIdentity::load_or_create(&dir).map_err(|err| {
        anyhow::anyhow!(
            "cannot load or create the server certificate in {}: {err}",
            dir.display()
        )
    })
}

/// The directory where this worker writes job scripts.
fn work_dir(config: &Config) -> PathBuf {
    config
        .worker
        .work_dir
        .clone()
        .unwrap_or_else(|| config.server.data_dir.join("work"))
}

fn worker_name(config: &Config) -> String {
    format!("{}:{}", config.node_name(), std::process::id())
}

/// Runs api, orchestrator, package feed and worker in this process until `shutdown`.
pub async fn serve_all(
    prepared: Prepared,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let Prepared {
        config,
        backends,
        bootstrap,
    } = prepared;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || cuttle_platform::wait_for(stop_rx.clone());
    let orchestrator = Orchestrator {
        store: backends.store.clone(),
        bus: backends.bus.clone(),
        cache: backends.cache.clone(),
        config: config.orchestrator.clone(),
        node_name: config.node_name(),
        relay: RelayWaker::new(),
    };
    // Read once: the api shows its thumbprint, the worker presents it to agents.
    let identity = Arc::new(server_identity(&config)?);
    let worker = Worker::new(
        backends.bus.clone(),
        backends.cache.clone(),
        backends.blob.clone(),
        Some(identity.clone()),
        config.worker.clone(),
        worker_name(&config),
        work_dir(&config),
    )
    .with_keyring(backends.keyring.clone());
    let feed = PackageFeed {
        store: backends.store.clone(),
        blob: backends.blob.clone(),
    };
    let state = api_state(
        &config,
        &backends,
        &bootstrap,
        identity.thumbprint().to_string(),
    )?;
    let mut services = tokio::task::JoinSet::new();
    services.spawn(orchestrator.run(stopped()));
    services.spawn(worker.run(stopped()));
    services.spawn(feed.run_embedded(
        Duration::from_secs(config.feed.retention_interval_secs),
        stopped(),
    ));
    services.spawn(cuttle_api::run(
        state,
        backends.bus.clone(),
        listener,
        stopped(),
    ));
    let mut first_error = None;
    tokio::select! {
        () = shutdown => {}
        Some(result) = services.join_next() => {
            // A service ended on its own: stop the others and report why.
            first_error = Some(flatten(result).err().unwrap_or_else(|| anyhow::anyhow!("a service stopped unexpectedly")));
        }
    }
    if stop_tx.send(true).is_err() {
        tracing::debug!("services already stopped");
    }
    while let Some(result) = services.join_next().await {
        if let Err(err) = flatten(result) {
            tracing::error!(
                error = format!("{err:#}"),
                "a service failed while stopping"
            );
        }
    }
    match first_error {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

fn flatten(result: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    result.map_err(|err| anyhow::anyhow!("service task failed: {err}"))?
}

/// `cuttle api`: the REST API and outbox relay (bootstraps on start; run `cuttle migrate` first).
pub async fn run_api(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store = cuttle_platform::connect_store(&config).await?;
    let bus = cuttle_platform::connect_bus(&config).await?;
    let cache = cuttle_platform::connect_cache(&config).await?;
    // The api serves the package feed's routes (one base URL for clients), so it needs the blob
    // store too.
    let blob = cuttle_platform::connect_blob(&config).await?;
    let fixed_key = config.admin_api_key.as_ref().map(Secret::expose);
    let bootstrap = bootstrap::ensure(&store, fixed_key)
        .await
        .map_err(|e| anyhow::anyhow!("bootstrap failed: {e:?}"))?;
    if let Some(key) = &bootstrap.new_admin_api_key {
        println!("Administrator API key (shown once): {key}");
    }
    let keyring = cuttle_platform::secrets::keyring(&config)?;
    let state = AppState {
        bus: bus.clone(),
        agent_trust: cuttle_platform::agent_trust::Publisher::spawn(store.clone(), cache.clone()),
        store,
        cache,
        blob,
        relay: RelayWaker::new(),
        installation_id: bootstrap.installation_id.clone(),
        node_name: config.node_name(),
        server_thumbprint: server_identity(&config)?.thumbprint().to_string(),
        auth: std::sync::Arc::new(cuttle_api::sessions::Auth::new(
            config.auth.clone(),
            keyring.as_deref(),
            &bootstrap.installation_id,
        )),
        keyring,
        limits: config.limits.clone(),
        mailer: cuttle_api::mail::Mailer::from_config(&config.smtp)?.map(std::sync::Arc::new),
    };
    tracing::info!(address = %listener.local_addr()?, "api started");
    cuttle_api::run(state, bus, listener, shutdown).await
}

/// Serves `/health/*` and `/metrics` for a service without its own HTTP API.
async fn serve_ops<F, Fut>(
    listener: TcpListener,
    ready: F,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()>
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    axum::serve(listener, cuttle_telemetry::ops_router(ready))
        .with_graceful_shutdown(stop)
        .await?;
    Ok(())
}

/// `cuttle orchestrator`.
pub async fn run_orchestrator(
    config: Config,
    ops: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store = cuttle_platform::connect_store(&config).await?;
    let orchestrator = Orchestrator {
        store: store.clone(),
        bus: cuttle_platform::connect_bus(&config).await?,
        cache: cuttle_platform::connect_cache(&config).await?,
        config: config.orchestrator.clone(),
        node_name: config.node_name(),
        relay: RelayWaker::new(),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let bus = orchestrator.bus.clone();
    let ops = tokio::spawn(serve_ops(
        ops,
        move || {
            let (store, bus) = (store.clone(), bus.clone());
            async move {
                store.health().await.map_err(|e| format!("database: {e}"))?;
                bus.health().await.map_err(|e| format!("bus: {e}"))
            }
        },
        cuttle_platform::wait_for(stop_rx.clone()),
    ));
    let result = orchestrator.run(shutdown).await;
    if stop_tx.send(true).is_err() {
        tracing::debug!("ops listener already stopped");
    }
    ops.await.context("ops listener task failed")??;
    result
}

/// `cuttle worker`.
pub async fn run_worker(
    config: Config,
    ops: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let bus = cuttle_platform::connect_bus(&config).await?;
    let cache = cuttle_platform::connect_cache(&config).await?;
    // A stable directory (not per process): a worker that starts after one died finds and stops
    // the scripts the dead one left running.
    let dir = work_dir(&config);
    // Read only: package files the jobs name, by the key and hash the orchestrator put in them.
    let blob = cuttle_platform::connect_blob(&config).await?;
    let worker = Worker::new(
        bus.clone(),
        cache.clone(),
        blob,
        Some(Arc::new(server_identity(&config)?)),
        config.worker.clone(),
        worker_name(&config),
        dir,
    )
    .with_keyring(cuttle_platform::secrets::keyring(&config)?);
    let (stop_tx, stop_rx) = watch::channel(false);
    let ops = tokio::spawn(serve_ops(
        ops,
        move || {
            let (bus, cache) = (bus.clone(), cache.clone());
            async move {
                bus.health().await.map_err(|e| format!("bus: {e}"))?;
                cache.health().await.map_err(|e| format!("cache: {e}"))
            }
        },
        cuttle_platform::wait_for(stop_rx.clone()),
    ));
    let result = worker.run(shutdown).await;
    if stop_tx.send(true).is_err() {
        tracing::debug!("ops listener already stopped");
    }
    ops.await.context("ops listener task failed")??;
    result
}

/// `cuttle package-feed`.
pub async fn run_package_feed(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let feed = PackageFeed {
        store: cuttle_platform::connect_store(&config).await?,
        blob: cuttle_platform::connect_blob(&config).await?,
    };
    feed.serve(
        listener,
        Duration::from_secs(config.feed.retention_interval_secs),
        shutdown,
    )
    .await
}
