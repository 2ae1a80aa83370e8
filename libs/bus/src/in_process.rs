//! The in-process bus: the embedded mode's broker and the reference for the conformance suite.
//!
//! It models AMQP closely on purpose (a ready queue per work queue, round-robin dispatch to
//! consumers bounded by prefetch, per-consumer unacknowledged sets that go back to the queue when
//! the consumer goes away), so that code tested against it behaves the same on RabbitMQ.
//! Nothing here is durable: messages live only as long as the process.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::mpsc;

use crate::{
    Bus, BusError, DeadLetter, Delivery, Message, QueueSpec, Settlement, Source, Subscription,
    TOPIC_PREFETCH,
};

/// A message bus that lives inside this process (embedded mode, tests).
pub struct InProcessBus {
    shared: Arc<Shared>,
}

/// State shared by the bus, its subscriptions and their outstanding deliveries.
struct Shared {
    state: Mutex<State>,
}

impl Shared {
    /// Locks the state, recovering from poisoning: every critical section leaves the state
    /// consistent before anything that could panic, and a bus that panics on every later call
    /// would turn one bug into a dead service.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
struct State {
    closed: bool,
    /// Work queues by unprefixed name.
    work: HashMap<String, Queue>,
    /// One private queue per topic subscription (RabbitMQ's exclusive server-named queue).
    private: HashMap<u64, Queue>,
    /// Topic name to the ids of the private queues bound to it.
    topics: HashMap<String, Vec<u64>>,
    next_id: u64,
}

impl State {
    fn queue_mut(&mut self, key: &QueueKey) -> Option<&mut Queue> {
        match key {
            QueueKey::Work(name) => self.work.get_mut(name),
            QueueKey::Private { id, .. } => self.private.get_mut(id),
        }
    }

    fn allocate_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

/// Names the queue a consumer reads from.
#[derive(Clone, Debug)]
enum QueueKey {
    Work(String),
    Private { topic: String, id: u64 },
}

#[derive(Default)]
struct Queue {
    ready: VecDeque<Envelope>,
    dead: VecDeque<DeadLetter>,
    consumers: Vec<Consumer>,
    /// Round-robin position, so competing consumers share the load like they do on RabbitMQ.
    cursor: usize,
}

#[derive(Clone)]
struct Envelope {
    message: Message,
    attempt: u32,
}

struct Consumer {
    id: u64,
    prefetch: usize,
    sender: mpsc::UnboundedSender<Handoff>,
    /// Deliveries handed to this consumer and not yet settled, by delivery tag. Ordered so that a
    /// departing consumer's messages go back to the queue in their original order.
    unacked: BTreeMap<u64, Envelope>,
    next_tag: u64,
}

impl Consumer {
    fn has_capacity(&self) -> bool {
        !self.sender.is_closed() && (self.prefetch == 0 || self.unacked.len() < self.prefetch)
    }
}

/// A delivery on its way from the queue to a subscription.
struct Handoff {
    tag: u64,
    envelope: Envelope,
}

impl Queue {
    /// Hands ready messages to consumers with spare prefetch capacity, round-robin.
    fn dispatch(&mut self) {
        while !self.ready.is_empty() && !self.consumers.is_empty() {
            let n_consumers = self.consumers.len();
            let start = self.cursor % n_consumers;
            let Some(index) = (0..n_consumers)
                .map(|offset| (start + offset) % n_consumers)
                .find(|&index| self.consumers[index].has_capacity())
            else {
                return;
            };
            let Some(envelope) = self.ready.pop_front() else {
                return;
            };
            self.cursor = index + 1;
            let consumer = &mut self.consumers[index];
            let tag = consumer.next_tag;
            consumer.next_tag += 1;
            consumer.unacked.insert(tag, envelope.clone());
            if consumer.sender.send(Handoff { tag, envelope }).is_err() {
                // The receiver went away between the capacity check and now; it is unregistering
                // itself, so put the message back for the next consumer.
                if let Some(envelope) = consumer.unacked.remove(&tag) {
                    self.ready.push_front(envelope);
                }
            }
        }
    }

    /// Puts a departing consumer's unacknowledged messages back at the head of the queue.
    fn remove_consumer(&mut self, consumer_id: u64) {
        let Some(position) = self.consumers.iter().position(|c| c.id == consumer_id) else {
            return;
        };
        let consumer = self.consumers.remove(position);
        for envelope in consumer.unacked.into_values().rev() {
            self.ready.push_front(envelope);
        }
        self.dispatch();
    }
}

/// Settles one in-process delivery; requeues it if dropped unsettled.
pub(crate) struct Pending {
    shared: Arc<Shared>,
    key: QueueKey,
    consumer_id: u64,
    tag: u64,
    /// `None` for broadcast deliveries, which have no retry or dead-letter queue.
    spec: Option<Arc<QueueSpec>>,
    settled: bool,
}

impl Pending {
    /// Removes this delivery from its consumer's unacknowledged set.
    fn take<'state>(
        &self,
        state: &'state mut State,
    ) -> Result<(&'state mut Queue, Envelope), BusError> {
        let queue = state.queue_mut(&self.key).ok_or_else(stale)?;
        let envelope = queue
            .consumers
            .iter_mut()
            .find(|consumer| consumer.id == self.consumer_id)
            .and_then(|consumer| consumer.unacked.remove(&self.tag))
            .ok_or_else(stale)?;
        Ok((queue, envelope))
    }

    pub(crate) fn ack(mut self) -> Result<(), BusError> {
        let mut state = self.shared.lock();
        let (queue, _) = self.take(&mut state)?;
        queue.dispatch();
        self.settled = true;
        Ok(())
    }

    pub(crate) fn retry(
        mut self,
        message: Message,
        attempt: u32,
        reason: &str,
    ) -> Result<(), BusError> {
        let Some(spec) = self.spec.clone() else {
            tracing::warn!(
                message.id = %message.id,
                reason,
                "discarding a broadcast message on retry: topics have no retry queue"
            );
            return self.ack();
        };
        if attempt >= spec.max_attempts {
            return self.dead_letter(message, attempt, reason);
        }
        {
            let mut state = self.shared.lock();
            let (queue, _) = self.take(&mut state)?;
            queue.dispatch();
            self.settled = true;
        }
        let delay = spec.retry_delay(attempt);
        let shared = Arc::clone(&self.shared);
        tracing::debug!(
            message.id = %message.id,
            queue.name = %spec.name,
            attempt,
            delay_ms = delay.as_millis(),
            reason,
            "scheduling message retry"
        );
        // A timer task plays the role of RabbitMQ's delay queue.
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let mut state = shared.lock();
            if state.closed {
                tracing::debug!(message.id = %message.id, "dropping retry: the bus was closed");
                return;
            }
            let queue = state.work.entry(spec.name.clone()).or_default();
            queue.ready.push_back(Envelope {
                message,
                attempt: attempt + 1,
            });
            queue.dispatch();
        });
        Ok(())
    }

    pub(crate) fn dead_letter(
        mut self,
        message: Message,
        attempt: u32,
        reason: &str,
    ) -> Result<(), BusError> {
        if self.spec.is_none() {
            tracing::warn!(
                message.id = %message.id,
                reason,
                "discarding a broadcast message: topics have no dead-letter queue"
            );
            return self.ack();
        }
        let mut state = self.shared.lock();
        let (queue, _) = self.take(&mut state)?;
        queue.dead.push_back(DeadLetter {
            message,
            reason: reason.to_owned(),
            attempts: attempt,
        });
        queue.dispatch();
        self.settled = true;
        Ok(())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        // An unsettled delivery means the handler crashed or was cancelled: redeliver, like
        // RabbitMQ does for unacked messages.
        let shared = Arc::clone(&self.shared);
        let mut state = shared.lock();
        if let Ok((queue, envelope)) = self.take(&mut state) {
            queue.ready.push_front(envelope);
            queue.dispatch();
        }
    }
}

fn stale() -> BusError {
    BusError::Other(
        "delivery can no longer be settled: its subscription or the bus was closed, \
         so the message went back to the queue"
            .to_owned(),
    )
}

/// The receiving end of an in-process subscription.
pub(crate) struct Receiver {
    shared: Arc<Shared>,
    key: QueueKey,
    consumer_id: u64,
    spec: Option<Arc<QueueSpec>>,
    inbox: mpsc::UnboundedReceiver<Handoff>,
}

impl Receiver {
    pub(crate) async fn next(&mut self) -> Option<Delivery> {
        loop {
            let handoff = self.inbox.recv().await?;
            // Skip handoffs whose consumer was torn down by close(); they are no longer ours.
            let still_ours = {
                let mut state = self.shared.lock();
                state.queue_mut(&self.key).is_some_and(|queue| {
                    queue.consumers.iter().any(|consumer| {
                        consumer.id == self.consumer_id
                            && consumer.unacked.contains_key(&handoff.tag)
                    })
                })
            };
            if !still_ours {
                continue;
            }
            return Some(Delivery {
                message: handoff.envelope.message,
                attempt: handoff.envelope.attempt,
                settlement: Settlement::InProcess(Pending {
                    shared: Arc::clone(&self.shared),
                    key: self.key.clone(),
                    consumer_id: self.consumer_id,
                    tag: handoff.tag,
                    spec: self.spec.clone(),
                    settled: false,
                }),
            });
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        match &self.key {
            QueueKey::Work(name) => {
                if let Some(queue) = state.work.get_mut(name) {
                    queue.remove_consumer(self.consumer_id);
                }
            }
            // Like an exclusive auto-delete queue: the private queue and its backlog go away.
            QueueKey::Private { topic, id } => {
                state.private.remove(id);
                if let Some(subscribers) = state.topics.get_mut(topic) {
                    subscribers.retain(|subscriber| subscriber != id);
                    if subscribers.is_empty() {
                        state.topics.remove(topic);
                    }
                }
            }
        }
    }
}

impl InProcessBus {
    /// Creates an empty, open bus.
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// Closes the bus: open subscriptions end (`next` returns `None`) and later calls fail.
    ///
    /// Dropping the bus does the same.
    pub fn close(&self) {
        let mut state = self.shared.lock();
        state.closed = true;
        // Dropping the consumers drops their senders, which ends every subscription's stream.
        for queue in state.work.values_mut() {
            queue.consumers.clear();
        }
        state.private.clear();
        state.topics.clear();
    }

    fn open_state(&self) -> Result<MutexGuard<'_, State>, BusError> {
        let state = self.shared.lock();
        if state.closed {
            return Err(BusError::Connection(
                "the in-process bus is closed".to_owned(),
            ));
        }
        Ok(state)
    }

    fn register(
        queue: &mut Queue,
        consumer_id: u64,
        prefetch: u16,
    ) -> mpsc::UnboundedReceiver<Handoff> {
        let (sender, inbox) = mpsc::unbounded_channel();
        queue.consumers.push(Consumer {
            id: consumer_id,
            prefetch: usize::from(prefetch),
            sender,
            unacked: BTreeMap::new(),
            next_tag: 1,
        });
        queue.dispatch();
        inbox
    }
}

impl Default for InProcessBus {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for InProcessBus {
    fn drop(&mut self) {
        self.close();
    }
}

impl std::fmt::Debug for InProcessBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessBus").finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Bus for InProcessBus {
    async fn send(&self, queue: &QueueSpec, message: Message) -> Result<(), BusError> {
        let mut state = self.open_state()?;
        let queue = state.work.entry(queue.name.clone()).or_default();
        queue.ready.push_back(Envelope {
            message,
            attempt: 1,
        });
        queue.dispatch();
        Ok(())
    }

    async fn consume(&self, queue: &QueueSpec) -> Result<Subscription, BusError> {
        let mut state = self.open_state()?;
        let consumer_id = state.allocate_id();
        let work_queue = state.work.entry(queue.name.clone()).or_default();
        let inbox = Self::register(work_queue, consumer_id, queue.prefetch);
        Ok(Subscription {
            source: Source::InProcess(Receiver {
                shared: Arc::clone(&self.shared),
                key: QueueKey::Work(queue.name.clone()),
                consumer_id,
                spec: Some(Arc::new(queue.clone())),
                inbox,
            }),
        })
    }

    async fn broadcast(&self, topic: &str, message: Message) -> Result<(), BusError> {
        let mut state = self.open_state()?;
        let subscribers = state.topics.get(topic).cloned().unwrap_or_default();
        for id in subscribers {
            if let Some(queue) = state.private.get_mut(&id) {
                queue.ready.push_back(Envelope {
                    message: message.clone(),
                    attempt: 1,
                });
                queue.dispatch();
            }
        }
        Ok(())
    }

    async fn subscribe(&self, topic: &str) -> Result<Subscription, BusError> {
        let mut state = self.open_state()?;
        let id = state.allocate_id();
        let queue = state.private.entry(id).or_default();
        // The private queue has exactly one consumer, so reuse its id for the consumer.
        let inbox = Self::register(queue, id, TOPIC_PREFETCH);
        state.topics.entry(topic.to_owned()).or_default().push(id);
        Ok(Subscription {
            source: Source::InProcess(Receiver {
                shared: Arc::clone(&self.shared),
                key: QueueKey::Private {
                    topic: topic.to_owned(),
                    id,
                },
                consumer_id: id,
                spec: None,
                inbox,
            }),
        })
    }

    async fn drain_dead_letters(
        &self,
        queue: &QueueSpec,
        max: usize,
    ) -> Result<Vec<DeadLetter>, BusError> {
        let mut state = self.open_state()?;
        let Some(queue) = state.work.get_mut(&queue.name) else {
            return Ok(Vec::new());
        };
        let n_taken = max.min(queue.dead.len());
        Ok(queue.dead.drain(..n_taken).collect())
    }

    async fn delete_queue(&self, queue: &QueueSpec) -> Result<(), BusError> {
        let mut state = self.open_state()?;
        // Dropping the queue drops its consumers' senders, which ends their subscriptions.
        state.work.remove(&queue.name);
        Ok(())
    }

    async fn queue_depth(&self, queue: &QueueSpec) -> Result<u64, BusError> {
        let state = self.open_state()?;
        let depth = state
            .work
            .get(&queue.name)
            .map_or(0, |queue| queue.ready.len());
        Ok(u64::try_from(depth).unwrap_or(u64::MAX))
    }

    async fn health(&self) -> Result<(), BusError> {
        self.open_state().map(drop)
    }
}
