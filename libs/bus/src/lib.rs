//! The message-bus port: typed JSON messages between Cuttle's services.
//!
//! Two implementations sit behind the [`Bus`] trait: [`InProcessBus`] for the embedded,
//! single-process mode and tests, and [`RabbitMqBus`] for the distributed mode. Both are held to
//! the same behaviour by one conformance suite (`tests/conformance.rs`), so a service written and
//! tested against one runs unchanged on the other.
//!
//! Delivery is at-least-once: a handler must be safe to run twice for the same [`Message::id`].

mod in_process;
mod rabbitmq;

use std::collections::BTreeMap;
use std::time::Duration;

pub use in_process::InProcessBus;
pub use rabbitmq::RabbitMqBus;

/// Header prefix reserved for the bus's own bookkeeping (attempt count, dead-letter reason).
///
/// The RabbitMQ implementation strips headers with this prefix from received messages, so
/// applications must not use it for their own headers.
pub(crate) const RESERVED_HEADER_PREFIX: &str = "x-cuttle-";

/// Prefetch for topic subscriptions, which have no [`QueueSpec`] to carry one.
pub(crate) const TOPIC_PREFETCH: u16 = 16;

/// Why a bus operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The broker could not be reached, or the connection or channel failed mid-operation.
    #[error("message bus connection failed: {0}")]
    Connection(String),
    /// The broker refused to take responsibility for a published message (publisher confirm nack
    /// or an unroutable message).
    #[error("message bus did not confirm the publish: {0}")]
    NotConfirmed(String),
    /// Anything else, e.g. an invalid name or a delivery that can no longer be settled.
    #[error("message bus error: {0}")]
    Other(String),
}

/// One message on the bus: an opaque payload (usually JSON) plus routing metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// Unique id (a UUID v4 unless set otherwise), for idempotent handling and log correlation.
    pub id: String,
    /// What the payload is, e.g. `deployment.requested`; lets one queue carry several types.
    pub kind: String,
    /// The body, opaque to the bus.
    pub payload: Vec<u8>,
    /// String headers that travel with the message, e.g. W3C `traceparent`.
    pub headers: BTreeMap<String, String>,
}

impl Message {
    /// Creates a message with a fresh UUID v4 id and no headers.
    pub fn new(kind: impl Into<String>, payload: Vec<u8>) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            kind: kind.into(),
            payload,
            headers: BTreeMap::new(),
        }
    }

    /// Creates a message whose payload is `value` serialized as JSON.
    pub fn json<T: serde::Serialize>(
        kind: impl Into<String>,
        value: &T,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self::new(kind, serde_json::to_vec(value)?))
    }

    /// Deserializes the JSON payload.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.payload)
    }

    /// Adds (or replaces) a header; keys starting with `x-cuttle-` are reserved for the bus.
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(key.into(), value.into());
        self
    }
}

/// A work queue and its delivery policy.
///
/// Consumers and senders of one queue should agree on the spec; the consumer's copy decides
/// retries and prefetch.
#[derive(Clone, Debug)]
pub struct QueueSpec {
    /// Queue name without the bus prefix, e.g. `step.jobs`.
    pub name: String,
    /// Deliveries before [`Delivery::retry`] dead-letters instead of retrying (counting the first).
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles for each attempt after that.
    pub retry_base_delay: Duration,
    /// Unacknowledged deliveries one subscription may hold at once (0 means unlimited).
    pub prefetch: u16,
}

impl QueueSpec {
    /// A spec with the defaults: 5 attempts, 1 s base retry delay, prefetch 16.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            max_attempts: 5,
            retry_base_delay: Duration::from_secs(1),
            prefetch: 16,
        }
    }

    /// Backoff before redelivering a message whose attempt number `attempt` failed.
    pub(crate) fn retry_delay(&self, attempt: u32) -> Duration {
        // Saturate instead of overflowing: with absurd attempt counts the delay is just "long".
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.retry_base_delay.saturating_mul(factor)
    }
}

/// A message handed to one consumer, waiting to be settled.
///
/// Settle it with [`ack`](Self::ack), [`retry`](Self::retry) or
/// [`dead_letter`](Self::dead_letter). A delivery dropped unsettled is redelivered, so a
/// crashed or cancelled handler never loses a message.
pub struct Delivery {
    /// The message as sent.
    pub message: Message,
    /// Which delivery attempt this is: 1 the first time, incremented by each [`Delivery::retry`].
    pub attempt: u32,
    settlement: Settlement,
}

/// The implementation-specific handle that settles a delivery (and requeues it on drop).
enum Settlement {
    InProcess(in_process::Pending),
    RabbitMq(rabbitmq::Pending),
}

impl Delivery {
    /// Confirms the message was handled; the bus forgets it.
    pub async fn ack(self) -> Result<(), BusError> {
        match self.settlement {
            Settlement::InProcess(pending) => pending.ack(),
            Settlement::RabbitMq(pending) => pending.ack().await,
        }
    }

    /// Redeliver after backoff retry_base_delay * 2^(attempt-1); once attempt == max_attempts, dead-letter instead.
    ///
    /// Broadcast deliveries have no retry machinery (topics have no queue of their own to come
    /// back to), so for them this discards the message with a warning.
    pub async fn retry(self, reason: &str) -> Result<(), BusError> {
        let Delivery {
            message,
            attempt,
            settlement,
        } = self;
        match settlement {
            Settlement::InProcess(pending) => pending.retry(message, attempt, reason),
            Settlement::RabbitMq(pending) => pending.retry(&message, attempt, reason).await,
        }
    }

    /// Straight to the dead-letter queue of this queue.
    ///
    /// Broadcast deliveries have no dead-letter queue, so for them this discards the message
    /// with a warning.
    pub async fn dead_letter(self, reason: &str) -> Result<(), BusError> {
        let Delivery {
            message,
            attempt,
            settlement,
        } = self;
        match settlement {
            Settlement::InProcess(pending) => pending.dead_letter(message, attempt, reason),
            Settlement::RabbitMq(pending) => pending.dead_letter(&message, attempt, reason).await,
        }
    }
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("message", &self.message)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

/// A stream of deliveries from a work queue ([`Bus::consume`]) or a topic ([`Bus::subscribe`]).
///
/// Dropping it hands its unacknowledged deliveries back to the queue for other consumers.
pub struct Subscription {
    source: Source,
}

/// The implementation-specific receiving end of a subscription.
enum Source {
    InProcess(in_process::Receiver),
    // Boxed because lapin's consumer and channel are large next to the in-process receiver.
    RabbitMq(Box<rabbitmq::Receiver>),
}

impl Subscription {
    /// Waits for the next delivery; `None` once the bus (or its connection) is closed.
    pub async fn next(&mut self) -> Option<Delivery> {
        match &mut self.source {
            Source::InProcess(receiver) => receiver.next().await,
            Source::RabbitMq(receiver) => receiver.next().await,
        }
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let implementation = match self.source {
            Source::InProcess(_) => "in-process",
            Source::RabbitMq(_) => "rabbitmq",
        };
        f.debug_struct("Subscription")
            .field("implementation", &implementation)
            .finish_non_exhaustive()
    }
}

/// A message that gave up: retried [`QueueSpec::max_attempts`] times or dead-lettered directly.
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetter {
    /// The message as last delivered.
    pub message: Message,
    /// The reason given to the final [`Delivery::retry`] or [`Delivery::dead_letter`].
    pub reason: String,
    /// The attempt number of the delivery that was dead-lettered.
    pub attempts: u32,
}

/// The message-bus port shared by every Cuttle service.
#[async_trait::async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publish to a work queue (declaring it if needed). Returns only after the broker confirmed it (publisher confirms).
    async fn send(&self, queue: &QueueSpec, message: Message) -> Result<(), BusError>;
    /// Competing consumers: each message goes to exactly one live consumer. Manual acks.
    async fn consume(&self, queue: &QueueSpec) -> Result<Subscription, BusError>;
    /// Fan-out: every subscription open at publish time gets its own copy; no subscribers = dropped.
    async fn broadcast(&self, topic: &str, message: Message) -> Result<(), BusError>;
    /// Opens a subscription that receives a copy of every later broadcast on `topic`.
    async fn subscribe(&self, topic: &str) -> Result<Subscription, BusError>;
    /// Removes and returns up to `max` messages from the queue's dead-letter queue (operators, tests).
    async fn drain_dead_letters(
        &self,
        queue: &QueueSpec,
        max: usize,
    ) -> Result<Vec<DeadLetter>, BusError>;
    /// Deletes a work queue with its dead-letter and retry queues, and the messages in them;
    /// its consumers' subscriptions end. A later send or consume declares it afresh. Deleting a
    /// queue that does not exist succeeds.
    async fn delete_queue(&self, queue: &QueueSpec) -> Result<(), BusError>;
    /// Ready (not yet delivered) messages in the queue, for the queue-depth metric.
    async fn queue_depth(&self, queue: &QueueSpec) -> Result<u64, BusError>;
    /// Cheap liveness check for readiness endpoints.
    async fn health(&self) -> Result<(), BusError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_per_attempt_and_saturates() {
        let spec = QueueSpec {
            retry_base_delay: Duration::from_millis(50),
            ..QueueSpec::new("jobs")
        };
        assert_eq!(spec.retry_delay(1), Duration::from_millis(50));
        assert_eq!(spec.retry_delay(2), Duration::from_millis(100));
        assert_eq!(spec.retry_delay(3), Duration::from_millis(200));
        assert_eq!(spec.retry_delay(200), Duration::from_millis(50) * u32::MAX);
    }

    #[test]
    fn json_messages_round_trip_and_get_distinct_ids() {
        let first = Message::json("greeting", &vec!["hello"]).unwrap();
        let second = Message::json("greeting", &vec!["hello"]).unwrap();
        assert_ne!(first.id, second.id);
        assert_eq!(first.decode::<Vec<String>>().unwrap(), vec!["hello"]);
    }
}
