//! The polling agents workers may accept, published from the database into the cache.
//!
//! Workers keep no database connection, yet must refuse any certificate no machine pins. The
//! api asks its [`Publisher`] to rewrite the list after every machine or worker change (a burst
//! of registrations costs one rewrite per [`PUBLISH_GAP`]), and the orchestrator rewrites it
//! periodically, so a flushed cache heals on its own; workers re-read it every few seconds.

use cuttle_cache::Cache;
use cuttle_contracts::{POLLING_TRUST_KEY, PollingTrust, TrustedPollingAgent};
use cuttle_store::{ConnectionTrait, Store, documents};
use std::sync::Arc;
use std::time::Duration;

/// Shortest time between two rewrites by one [`Publisher`]: registering thousands of agents
/// reads the machines once per gap, not once per registration.
pub const PUBLISH_GAP: Duration = Duration::from_millis(500);

/// Document kinds that carry agent endpoints.
const AGENT_KINDS: [&str; 2] = ["Machine", "Worker"];

/// Every enabled polling agent of every space, from the database.
pub async fn load(conn: &impl ConnectionTrait) -> anyhow::Result<PollingTrust> {
    let mut agents = Vec::new();
    for kind in AGENT_KINDS {
        for doc in documents::list_in_all_spaces(conn, kind).await? {
            let data: serde_json::Value = serde_json::from_str(&doc.data)?;
            let text = |value: &serde_json::Value| value.as_str().unwrap_or_default().to_owned();
            let endpoint = &data["Endpoint"];
            if text(&endpoint["CommunicationStyle"]) != "TentacleActive"
                || data["IsDisabled"].as_bool().unwrap_or(false)
            {
                continue;
            }
            agents.push(TrustedPollingAgent {
                thumbprint: text(&endpoint["Thumbprint"]).to_ascii_uppercase(),
                uri: text(&endpoint["Uri"]),
            });
        }
    }
    agents.sort_by(|a, b| (&a.thumbprint, &a.uri).cmp(&(&b.thumbprint, &b.uri)));
    agents.dedup();
    Ok(PollingTrust { agents })
}

/// Loads the list and writes it to the cache (no expiry: it is rewritten, never left to lapse).
pub async fn publish(conn: &impl ConnectionTrait, cache: &dyn Cache) -> anyhow::Result<usize> {
    let trust = load(conn).await?;
    cache
        .set(POLLING_TRUST_KEY, &serde_json::to_vec(&trust)?, None)
        .await?;
    Ok(trust.agents.len())
}

/// The list as last published; empty when nothing was published yet.
pub async fn read(cache: &dyn Cache) -> anyhow::Result<PollingTrust> {
    match cache.get(POLLING_TRUST_KEY).await? {
        Some(bytes) => Ok(serde_json::from_slice(&bytes)?),
        None => Ok(PollingTrust::default()),
    }
}

/// Rewrites the list in the background when asked, coalescing requests that arrive while a
/// rewrite runs. The task ends when the last clone is dropped.
#[derive(Clone)]
pub struct Publisher {
    wake: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Publisher {
    /// Starts the background task (needs a Tokio runtime).
    pub fn spawn(store: Store, cache: Arc<dyn Cache>) -> Publisher {
        let (wake, mut requests) = tokio::sync::watch::channel(0u64);
        tokio::spawn(async move {
            while requests.changed().await.is_ok() {
                requests.mark_unchanged();
                if let Err(err) = publish(store.conn(), cache.as_ref()).await {
                    tracing::warn!(
                        error = format!("{err:#}"),
                        "could not publish the polling agents' trust list; the orchestrator's next refresh will"
                    );
                }
                tokio::time::sleep(PUBLISH_GAP).await;
            }
        });
        Publisher {
            wake: Arc::new(wake),
        }
    }

    /// Asks for a rewrite soon (after the current one, if one runs).
    pub fn request(&self) {
        self.wake.send_modify(|n| *n = n.wrapping_add(1));
    }
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}
