//! Polling agents: the worker's comms port (Octopus's 10943). A polling agent dials it and
//! holds one multiplexed connection; while this worker holds it, the worker consumes that
//! agent's own job queue (`queues::polling_agent`) and runs each job over the connection. When
//! the connection ends the subscription is dropped, so jobs not yet started go back to the
//! queue for whichever worker the agent reaches next: nothing is lost.
//!
//! Trust: workers keep no database connection, so the agents they accept come from the list the
//! api and orchestrator publish in the cache (`cuttle_platform::agent_trust`), re-read every
//! [`TRUST_REFRESH`]. A certificate nobody pinned is refused during the TLS handshake; a pinned
//! agent that claims another agent's subscription is refused after the hello. Both are logged.

use crate::Worker;
use cuttle_agent_link::{
    LinkOptions, Listener, Requester, Thumbprint, TrustedThumbprints, WorkerIdentity, WorkerLink,
};
use cuttle_bus::QueueSpec;
use cuttle_contracts::queues;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the trust list is re-read from the cache.
pub const TRUST_REFRESH: Duration = Duration::from_secs(2);
/// Jobs of one agent this worker takes from its queue before finishing earlier ones.
const JOBS_PER_AGENT: u16 = 8;

/// The polling agents connected to this worker, by `poll://` URI.
#[derive(Clone, Default)]
pub struct PollingAgents {
    connected: Arc<Mutex<HashMap<String, Requester>>>,
}

impl PollingAgents {
    /// The live connection of the agent with this URI, when it is connected here.
    pub fn get(&self, uri: &str) -> Option<Requester> {
        let connected = self
            .connected
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        connected
            .get(&uri.to_ascii_lowercase())
            .filter(|requester| !requester.is_closed())
            .cloned()
    }

    fn insert(&self, uri: &str, requester: Requester) {
        let mut connected = self
            .connected
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        connected.insert(uri.to_ascii_lowercase(), requester);
    }

    /// Forgets `requester` unless a newer connection of the same agent replaced it.
    fn remove(&self, uri: &str, requester: &Requester) {
        let mut connected = self
            .connected
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let key = uri.to_ascii_lowercase();
        if connected
            .get(&key)
            .is_some_and(|current| current.peer() == requester.peer())
        {
            connected.remove(&key);
        }
    }
}

/// Which subscriptions each trusted thumbprint may speak for.
type Subscriptions = Arc<Mutex<HashMap<Thumbprint, HashSet<String>>>>;

/// Loads the published trust list into the TLS trust set and the subscription map; the number
/// of agents, or why it could not be read.
async fn refresh_trust(
    cache: &dyn cuttle_cache::Cache,
    trusted: &TrustedThumbprints,
    subscriptions: &Subscriptions,
) -> anyhow::Result<usize> {
    let trust = cuttle_platform::agent_trust::read(cache).await?;
    let mut map: HashMap<Thumbprint, HashSet<String>> = HashMap::new();
    for agent in &trust.agents {
        match Thumbprint::parse(&agent.thumbprint) {
            Ok(thumbprint) => {
                map.entry(thumbprint)
                    .or_default()
                    .insert(agent.uri.to_ascii_lowercase());
            }
            Err(err) => {
                tracing::warn!(agent.uri = %agent.uri, error = %err, "ignoring a polling agent with an invalid thumbprint")
            }
        }
    }
    trusted.replace(map.keys().copied());
    let count = map.len();
    *subscriptions.lock().unwrap_or_else(PoisonError::into_inner) = map;
    Ok(count)
}

impl Worker {
    /// Binds the comms port for polling agents; `None` when none is configured.
    pub(crate) async fn bind_polling(
        &self,
    ) -> anyhow::Result<Option<(Listener<Requester>, TrustedThumbprints, Subscriptions)>> {
        let Some(address) = self.config.polling_listen.as_deref() else {
            return Ok(None);
        };
        let Some(identity) = self.identity.as_deref() else {
            anyhow::bail!(
                "worker.polling_listen is set, but this worker has no server certificate (server.certificate_dir)"
            );
        };
        let trusted = TrustedThumbprints::new();
        let subscriptions = Subscriptions::default();
        if let Err(err) = refresh_trust(self.cache.as_ref(), &trusted, &subscriptions).await {
            tracing::warn!(
                error = format!("{err:#}"),
                "could not read the polling agents' trust list yet; retrying"
            );
        }
        let link = polling_link(identity, trusted.clone())?;
        let listener = link.listen(address).await.map_err(|err| {
            anyhow::anyhow!(
                "could not listen for polling agents on {address} (worker.polling_listen): {err}"
            )
        })?;
        tracing::info!(listen.address = %listener.local_addr(), "accepting polling agents");
        Ok(Some((listener, trusted, subscriptions)))
    }

    /// Accepts polling agents until `stop`, keeping the trust list fresh.
    pub(crate) async fn serve_polling(
        self,
        mut listener: Listener<Requester>,
        trusted: TrustedThumbprints,
        subscriptions: Subscriptions,
        stop: CancellationToken,
    ) {
        let refresher = {
            let (cache, trusted, subscriptions, stop) = (
                self.cache.clone(),
                trusted.clone(),
                subscriptions.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let mut known = None;
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(TRUST_REFRESH) => {}
                    }
                    match refresh_trust(cache.as_ref(), &trusted, &subscriptions).await {
                        Ok(count) if known != Some(count) => {
                            tracing::info!(agents = count, "polling agents' trust list loaded");
                            known = Some(count);
                        }
                        Ok(_) => {}
                        Err(err) => {
                            tracing::warn!(
                                error = format!("{err:#}"),
                                "could not refresh the polling agents' trust list"
                            )
                        }
                    }
                }
            })
        };
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let requester = match accepted {
                Ok(requester) => requester,
                Err(err) => {
                    // An unpinned or wrong certificate, an old protocol, a timeout.
                    tracing::warn!(error = %err, "refused a polling agent connection");
                    continue;
                }
            };
            let peer = requester.peer().clone();
            let Some(uri) = peer.subscription_id.as_ref().map(|s| s.as_str().to_owned()) else {
                tracing::warn!(peer.thumbprint = %peer.thumbprint, peer.address = %peer.address, "refused a polling agent that sent no subscription id");
                continue;
            };
            let allowed = is_allowed(&subscriptions, &peer.thumbprint, &uri);
            let queue = queues::polling_agent(&uri);
            let (true, Some(queue)) = (allowed, queue) else {
                tracing::warn!(
                    peer.thumbprint = %peer.thumbprint,
                    peer.address = %peer.address,
                    agent.subscription = %uri,
                    "refused a polling agent: its certificate is not the one registered for that subscription"
                );
                continue;
            };
            tokio::spawn(self.clone().hold_agent(
                uri,
                queue,
                requester,
                subscriptions.clone(),
                stop.clone(),
            ));
        }
        refresher.abort();
    }

    /// Consumes one connected agent's queue for as long as its connection lives and the agent
    /// stays registered (a deleted machine's agent is let go, and its queue is not declared
    /// again).
    async fn hold_agent(
        self,
        uri: String,
        queue: String,
        requester: Requester,
        subscriptions: Subscriptions,
        stop: CancellationToken,
    ) {
        let peer = requester.peer().clone();
        tracing::info!(agent.subscription = %uri, peer.address = %peer.address, peer.thumbprint = %peer.thumbprint, "polling agent connected");
        self.polling.insert(&uri, requester.clone());
        let spec = QueueSpec {
            prefetch: JOBS_PER_AGENT,
            ..QueueSpec::new(queue)
        };
        let mut jobs = tokio::task::JoinSet::new();
        let mut check = tokio::time::interval(TRUST_REFRESH);
        let unregistered = "its machine is no longer registered".to_owned();
        let reason = 'held: loop {
            if !is_allowed(&subscriptions, &peer.thumbprint, &uri) {
                break 'held unregistered;
            }
            let mut subscription = match self.bus.consume(&spec).await {
                Ok(subscription) => subscription,
                Err(err) => {
                    tracing::warn!(agent.subscription = %uri, error = %err, "cannot consume the agent's jobs; retrying in 1 s");
                    tokio::select! {
                        () = stop.cancelled() => break 'held "the worker is stopping".to_owned(),
                        reason = requester.closed() => break 'held reason.to_string(),
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            loop {
                tokio::select! {
                    () = stop.cancelled() => break 'held "the worker is stopping".to_owned(),
                    reason = requester.closed() => break 'held reason.to_string(),
                    _ = check.tick() => if !is_allowed(&subscriptions, &peer.thumbprint, &uri) {
                        break 'held unregistered;
                    },
                    next = subscription.next() => match next {
                        Some(delivery) => {
                            let worker = self.clone();
                            let stop = stop.clone();
                            jobs.spawn(async move { worker.handle(delivery, stop).await });
                            while jobs.try_join_next().is_some() {}
                        }
                        None => break,
                    },
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        // Dropping the subscription (above) returned every job not yet started to the queue.
        self.polling.remove(&uri, &requester);
        tracing::info!(agent.subscription = %uri, reason = %reason, "polling agent disconnected");
        while jobs.join_next().await.is_some() {}
    }
}

/// Whether the agent with `thumbprint` may speak for the subscription `uri`.
fn is_allowed(subscriptions: &Subscriptions, thumbprint: &Thumbprint, uri: &str) -> bool {
    subscriptions
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(thumbprint)
        .is_some_and(|uris| uris.contains(&uri.to_ascii_lowercase()))
}

/// The worker's end of polling connections, trusting only the agents in `trusted`.
fn polling_link(
    identity: &WorkerIdentity,
    trusted: TrustedThumbprints,
) -> anyhow::Result<WorkerLink> {
    WorkerLink::new(identity, trusted, LinkOptions::default())
        .map_err(|err| anyhow::anyhow!("the worker's TLS setup failed: {err}"))
}
