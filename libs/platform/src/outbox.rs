//! Relays outbox rows to the bus. Runs in every process that writes outbox rows (api,
//! orchestrator). Rows are deleted only after the broker confirmed them, so a crash at any point
//! republishes rather than loses; consumers are idempotent, so a republish is harmless.

use cuttle_bus::{Bus, Message, QueueSpec};
use cuttle_store::{Store, StoreError, TransactionTrait, outbox};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Handle to wake the relay right after a commit, so dispatch does not wait for the next poll.
#[derive(Clone, Default)]
pub struct RelayWaker(Arc<Notify>);

impl RelayWaker {
    /// A new waker.
    pub fn new() -> Self {
        RelayWaker(Arc::new(Notify::new()))
    }

    /// Wakes the relay (cheap; coalesces).
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

/// Records a command for the orchestrator (`TaskQueued`, `CancelRequested`) in the outbox,
/// inside the caller's transaction.
pub async fn enqueue_command(
    conn: &impl cuttle_store::ConnectionTrait,
    command: &cuttle_contracts::OrchestratorCommand,
) -> Result<(), StoreError> {
    enqueue(
        conn,
        cuttle_contracts::queues::ORCHESTRATOR_COMMANDS,
        command.kind(),
        command,
    )
    .await
}

/// Records a message in the outbox, inside the caller's transaction, with the current trace
/// context in its headers.
pub async fn enqueue<T: serde::Serialize>(
    conn: &impl cuttle_store::ConnectionTrait,
    queue: &str,
    kind: &str,
    value: &T,
) -> Result<(), StoreError> {
    let message = Message::json(kind, value).map_err(|err| StoreError::Corrupt {
        id: kind.to_owned(),
        reason: err.to_string(),
    })?;
    let mut headers = BTreeMap::new();
    cuttle_telemetry::inject_context(&mut headers);
    outbox::enqueue(
        conn,
        queue,
        &message.id,
        &message.kind,
        &message.payload,
        &headers,
    )
    .await
}

/// Publishes pending outbox rows until `shutdown` resolves.
pub async fn run_relay(
    store: Store,
    bus: Arc<dyn Bus>,
    waker: RelayWaker,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        match relay_once(&store, bus.as_ref()).await {
            // A full batch: there may be more, go again at once.
            Ok(n) if n >= BATCH => continue,
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(error = %err, "outbox relay failed; the rows stay and are retried");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        tokio::select! {
            () = &mut shutdown => return,
            () = waker.0.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

const BATCH: u64 = 100;

/// Publishes one batch; returns how many rows were relayed.
pub async fn relay_once(store: &Store, bus: &dyn Bus) -> Result<u64, anyhow::Error> {
    let txn = store.conn().begin().await?;
    let rows = outbox::claim_batch(&txn, BATCH).await?;
    let mut done = Vec::with_capacity(rows.len());
    let mut failure = None;
    for row in rows {
        let headers: BTreeMap<String, String> =
            serde_json::from_str(&row.headers).unwrap_or_default();
        let message = Message {
            id: row.message_id.clone(),
            kind: row.kind.clone(),
            payload: row.payload.clone().into_bytes(),
            headers,
        };
        match bus.send(&QueueSpec::new(row.queue.clone()), message).await {
            Ok(()) => done.push(row.id),
            Err(err) => {
                failure = Some(err);
                break;
            }
        }
    }
    let n = done.len() as u64;
    outbox::remove(&txn, done).await?;
    txn.commit().await?;
    match failure {
        Some(err) => Err(anyhow::anyhow!(
            "publishing an outbox message failed: {err}"
        )),
        None => Ok(n),
    }
}
