//! The api service: Octopus-compatible REST API under `/api`, the outbox relay, and first-start
//! bootstrap (default space, administrator, API key).
//!
//! Handlers read top to bottom: extract (principal, space, params, body), load, change inside
//! one transaction (with the outbox message that change causes), map to the response. Each area
//! has its own module and `routes()`.

pub mod artifacts;
pub mod authz;
pub mod bootstrap;
pub mod error;
pub mod events;
pub mod extract;
pub mod fallback;
pub mod invitations;
pub mod library_sets;
pub mod links;
pub mod machines;
pub mod mail;
pub mod organisations;
pub mod packages;
pub mod portal;
pub mod projects;
pub mod release_packages;
pub mod releases;
pub mod reseal;
pub mod resources;
pub mod root;
pub mod sessions;
pub mod spaces;
pub mod sso;
pub mod tasks;
pub mod teams;
pub mod tenant_values;
pub mod tenants;
pub mod users;
pub mod variable_access;
pub mod variable_preview;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use cuttle_blob::BlobStore;
use cuttle_bus::Bus;
use cuttle_cache::Cache;
use cuttle_platform::outbox::RelayWaker;
use cuttle_store::Store;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// Bus, for the few things the api does on it directly (deleting a deleted polling agent's
    /// queue); everything else goes through the outbox.
    pub bus: Arc<dyn Bus>,
    /// Database.
    pub store: Store,
    /// Cache (cancel markers, later rate limits).
    pub cache: Arc<dyn Cache>,
    /// Blob store (the built-in feed's package files).
    pub blob: Arc<dyn BlobStore>,
    /// Wakes the outbox relay after a commit that wrote outbox rows.
    pub relay: RelayWaker,
    /// `InstallationId` of the root document.
    pub installation_id: String,
    /// This node's name.
    pub node_name: String,
    /// SHA-1 thumbprint of the certificate workers present to agents (what agents pin).
    pub server_thumbprint: String,
    /// Rewrites the polling agents' trust list for workers after machine changes.
    pub agent_trust: cuttle_platform::agent_trust::Publisher,
    /// Seals sensitive variable values; `None` when no master key is configured, and then
    /// sensitive values are refused.
    pub keyring: Option<Arc<cuttle_secrets::Keyring>>,
    /// Password sign-in and sessions.
    pub auth: Arc<sessions::Auth>,
    /// Per-organisation request rate and quotas.
    pub limits: cuttle_platform::LimitsConfig,
    /// Outgoing mail; `None` when `[smtp]` names no host.
    pub mailer: Option<Arc<mail::Mailer>>,
}

/// Every route of the api: `/api/...` plus health and metrics.
pub fn router(state: AppState) -> Router {
    let ready_store = state.store.clone();
    let api = Router::new()
        .merge(root::routes())
        .merge(spaces::routes())
        .merge(tasks::global_routes())
        .merge(machines::global_routes())
        .merge(teams::routes())
        .merge(users::routes())
        .merge(sessions::routes())
        .merge(portal::routes())
        .merge(sso::routes())
        .merge(events::routes())
        .merge(invitations::routes())
        .merge(space_scoped_routes("/api/{space_id}"))
        .merge(space_scoped_routes("/api/spaces/{space_id}"))
        .merge(space_scoped_routes("/api"))
        .fallback(fallback::fallback)
        // Every matched route passes its permission rule before its handler runs (authz.rs).
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authz::authorize,
        ))
        .with_state(state)
        // JSON bodies are read whole: 64 MiB is far above any real resource (processes with long
        // scripts, variable sets) and bounds the memory one request can take. Package uploads
        // stream and lift the limit on their own route.
        .layer(DefaultBodyLimit::max(64 * 1024 * 1024))
        .layer(axum::middleware::from_fn(cuttle_telemetry::track_http))
        // The request span is where a deployment's trace starts: the outbox messages a handler
        // writes carry its context. tower-http makes it at DEBUG by default, which the default
        // `info` filter disables, and a disabled span has no context to carry.
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(
                tower_http::trace::DefaultMakeSpan::new().level(tracing::Level::INFO),
            ),
        )
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            axum::response::IntoResponse::into_response(error::ApiError::internal(
                "a request handler panicked",
            ))
        }));
    api.merge(cuttle_telemetry::ops_router(move || {
        let store = ready_store.clone();
        async move {
            store
                .health()
                .await
                .map_err(|err| format!("database: {err}"))
        }
    }))
}

/// Routes that exist once per space, mounted under the three prefixes Octopus accepts:
/// `/api/{spaceId}/x`, `/api/spaces/{spaceId}/x` and `/api/x` (the default space).
fn space_scoped_routes(prefix: &str) -> Router<AppState> {
    Router::new()
        .merge(resources::routes(prefix))
        .merge(projects::routes(prefix))
        .merge(library_sets::routes(prefix))
        .merge(artifacts::routes(prefix))
        .merge(variable_preview::routes(prefix))
        .merge(releases::routes(prefix))
        .merge(tasks::space_routes(prefix))
        .merge(packages::routes(prefix))
        .merge(machines::routes(prefix))
        .merge(tenants::routes(prefix))
}

/// Serves the api on `listener` until `shutdown` resolves, with the outbox relay beside it.
pub async fn run(
    state: AppState,
    bus: Arc<dyn Bus>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let relay = tokio::spawn(cuttle_platform::outbox::run_relay(
        state.store.clone(),
        bus,
        state.relay.clone(),
        cuttle_platform::wait_for(stop_rx.clone()),
    ));
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            if stop_tx.send(true).is_err() {
                tracing::debug!("outbox relay already stopped");
            }
        })
        .await;
    if let Err(err) = relay.await {
        tracing::error!(error = %err, "outbox relay task ended abnormally");
    }
    served.map_err(Into::into)
}
