//! The RabbitMQ bus: the distributed mode's broker, over AMQP 0-9-1 with lapin.
//!
//! Topology for a work queue `name` under prefix `p`:
//! - `p<name>`: the durable work queue consumers read from.
//! - `p<name>.dead`: the durable dead-letter queue, filled by our own confirmed publishes (not by
//!   broker dead-lettering) so that each dead letter carries its reason and attempt count.
//! - `p<name>.retry.<ms>ms`: one durable delay queue per backoff step. Every message in it has
//!   the same TTL, so messages expire in order (a single queue with per-message expirations would
//!   hold short delays behind long ones), then the broker dead-letters them back into `p<name>`.
//!
//! A topic `t` is a durable fanout exchange `p<t>` with one exclusive, auto-delete, server-named
//! queue per subscription.
//!
//! Connections: one for publishing and declaring, which also carries consumer channels (one per
//! subscription) up to the negotiated `channel_max` (2047 on a default broker). Past that,
//! consumer channels go on extra connections, opened as needed, so a worker holding thousands
//! of polling agents' queues is not capped by one connection's channels.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
    BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{
    Acker, BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use tokio::sync::{Mutex, MutexGuard};

use crate::{
    Bus, BusError, DeadLetter, Delivery, Message, QueueSpec, RESERVED_HEADER_PREFIX, Settlement,
    Source, Subscription, TOPIC_PREFETCH,
};

/// Header carrying the delivery attempt number (1 on first delivery).
const ATTEMPT_HEADER: &str = "x-cuttle-attempt";
/// Header carrying the reason given to the last retry or dead-letter.
const REASON_HEADER: &str = "x-cuttle-reason";
/// AMQP delivery mode that makes the broker write the message to disk.
const PERSISTENT: u8 = 2;
/// How long to wait for the TCP and AMQP handshake before calling the broker unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A message bus backed by RabbitMQ (distributed mode).
pub struct RabbitMqBus {
    inner: Arc<Inner>,
}

/// State shared by the bus, its subscriptions and their outstanding deliveries (which publish to
/// delay and dead-letter queues when settled).
struct Inner {
    url: String,
    prefix: String,
    closed: AtomicBool,
    link: Mutex<Link>,
    /// Extra connections for consumer channels once `link`'s connection has no channel left.
    overflow: Mutex<Vec<Connection>>,
}

/// The connection and the publishing channel, replaced together when the connection is lost.
struct Link {
    connection: Connection,
    /// The one confirm-mode channel for publishing and declaring. Publishes only hold the lock
    /// while handing the frame to lapin; confirms are awaited outside it, so publishes pipeline.
    publisher: Channel,
    /// Queues and exchanges declared on this connection, so a hot send is a single publish.
    declared: HashSet<String>,
}

/// Broker objects a publish or consume needs to exist first.
enum Topology<'a> {
    WorkQueue {
        main: &'a str,
        dead: &'a str,
    },
    DelayQueue {
        name: &'a str,
        ttl_ms: u32,
        target: &'a str,
    },
    Exchange(&'a str),
}

impl Topology<'_> {
    fn cache_key(&self) -> String {
        match self {
            Topology::WorkQueue { main, .. } => format!("queue:{main}"),
            Topology::DelayQueue { name, .. } => format!("queue:{name}"),
            Topology::Exchange(name) => format!("exchange:{name}"),
        }
    }
}

/// Opens a connection named `name` (so operators can tell which deployment it serves).
async fn open_connection(url: &str, name: String) -> Result<Connection, BusError> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(url, properties)).await {
        Ok(Ok(connection)) => Ok(connection),
        // The URL is deliberately left out of these messages: it may hold a password.
        Ok(Err(error)) => Err(BusError::Connection(format!(
            "could not connect to RabbitMQ: {error}"
        ))),
        Err(_) => Err(BusError::Connection(format!(
            "timed out after {}s connecting to RabbitMQ",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

fn is_channel_limit(error: &lapin::Error) -> bool {
    matches!(error.kind(), lapin::ErrorKind::ChannelsLimitReached)
}

impl Link {
    async fn open(url: &str, prefix: &str) -> Result<Self, BusError> {
        let connection = open_connection(url, format!("cuttle-bus {prefix}")).await?;
        let publisher = open_publisher(&connection).await?;
        Ok(Self {
            connection,
            publisher,
            declared: HashSet::new(),
        })
    }

    /// Declares `topology` unless this connection already did.
    async fn ensure(&mut self, topology: &Topology<'_>) -> Result<(), BusError> {
        let key = topology.cache_key();
        if self.declared.contains(&key) {
            return Ok(());
        }
        match topology {
            Topology::WorkQueue { main, dead } => {
                declare_durable_queue(&self.publisher, main, FieldTable::default()).await?;
                declare_durable_queue(&self.publisher, dead, FieldTable::default()).await?;
            }
            Topology::DelayQueue {
                name,
                ttl_ms,
                target,
            } => {
                let mut arguments = FieldTable::default();
                arguments.insert(
                    "x-message-ttl".into(),
                    AMQPValue::LongLongInt(i64::from(*ttl_ms)),
                );
                // The default exchange routes by queue name, so expired messages go straight
                // back to the work queue.
                arguments.insert(
                    "x-dead-letter-exchange".into(),
                    AMQPValue::LongString("".into()),
                );
                arguments.insert(
                    "x-dead-letter-routing-key".into(),
                    AMQPValue::LongString((*target).into()),
                );
                declare_durable_queue(&self.publisher, name, arguments).await?;
            }
            Topology::Exchange(name) => {
                // Durable and never auto-deleted: publishing to a missing exchange is a channel
                // error, and an auto-delete exchange vanishes whenever its last subscriber leaves.
                self.publisher
                    .exchange_declare(
                        short(name)?,
                        ExchangeKind::Fanout,
                        ExchangeDeclareOptions {
                            durable: true,
                            ..ExchangeDeclareOptions::default()
                        },
                        FieldTable::default(),
                    )
                    .await
                    .map_err(|error| broker_error("could not declare exchange", error))?;
            }
        }
        self.declared.insert(key);
        Ok(())
    }
}

async fn open_publisher(connection: &Connection) -> Result<Channel, BusError> {
    let channel = connection
        .create_channel()
        .await
        .map_err(|error| broker_error("could not open the publishing channel", error))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|error| broker_error("could not enable publisher confirms", error))?;
    Ok(channel)
}

async fn declare_durable_queue(
    channel: &Channel,
    name: &str,
    arguments: FieldTable,
) -> Result<lapin::Queue, BusError> {
    channel
        .queue_declare(short(name)?, QueueDeclareOptions::durable(), arguments)
        .await
        .map_err(|error| broker_error(&format!("could not declare queue {name}"), error))
}

/// One message to publish, with the topology it needs.
struct Outgoing<'a> {
    exchange: &'a str,
    routing_key: &'a str,
    /// Set for queue publishes so a missing queue is reported instead of silently dropping.
    mandatory: bool,
    payload: &'a [u8],
    properties: BasicProperties,
    topology: Vec<Topology<'a>>,
}

/// How one publish attempt failed, which decides whether a second attempt makes sense.
enum PublishFailure {
    /// The channel or connection broke; the next attempt reconnects first.
    Transient(BusError),
    /// Mandatory publish with no queue behind it: our declaration cache is stale.
    Unroutable(String),
    /// Retrying will not help.
    Final(BusError),
}

impl Inner {
    /// Locks the link, first reopening whatever part of it has died.
    async fn link(&self) -> Result<MutexGuard<'_, Link>, BusError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(BusError::Connection(
                "the RabbitMQ bus is closed".to_owned(),
            ));
        }
        let mut link = self.link.lock().await;
        if !link.connection.status().connected() {
            let status = link.connection.status();
            tracing::warn!(
                connection.errored = status.errored(),
                connection.closed = status.closed(),
                "RabbitMQ connection lost; reconnecting"
            );
            *link = Link::open(&self.url, &self.prefix).await?;
            tracing::info!("reconnected to RabbitMQ");
        } else if !link.publisher.status().connected() {
            // A channel dies on its own after a channel-level error (e.g. a declaration that
            // conflicts with an existing queue); the connection is still fine.
            tracing::warn!("RabbitMQ publishing channel closed; opening a new one");
            link.publisher = open_publisher(&link.connection).await?;
        }
        Ok(link)
    }

    fn queue_name(&self, spec: &QueueSpec) -> String {
        format!("{}{}", self.prefix, spec.name)
    }

    fn dead_queue_name(&self, spec: &QueueSpec) -> String {
        format!("{}{}.dead", self.prefix, spec.name)
    }

    /// Publishes and awaits the broker's confirm, reconnecting (or redeclaring) once on failure.
    async fn publish(&self, outgoing: &Outgoing<'_>) -> Result<(), BusError> {
        let failure = match self.publish_once(outgoing).await {
            Ok(()) => return Ok(()),
            Err(failure) => failure,
        };
        match failure {
            PublishFailure::Transient(error) => {
                tracing::warn!(
                    error = %error,
                    exchange = outgoing.exchange,
                    routing_key = outgoing.routing_key,
                    "publish to RabbitMQ failed; reconnecting and trying once more"
                );
                // The failure may be a channel error about a deleted exchange or queue, so
                // declare again rather than trust the cache.
                self.forget(&outgoing.topology).await;
            }
            PublishFailure::Unroutable(reply) => {
                // Someone deleted the queue behind our back; declare it again and retry.
                tracing::warn!(
                    reply,
                    routing_key = outgoing.routing_key,
                    "published message was unroutable; redeclaring its queue and trying once more"
                );
                self.forget(&outgoing.topology).await;
            }
            PublishFailure::Final(error) => return Err(error),
        }
        match self.publish_once(outgoing).await {
            Ok(()) => Ok(()),
            Err(PublishFailure::Transient(error) | PublishFailure::Final(error)) => Err(error),
            Err(PublishFailure::Unroutable(reply)) => Err(BusError::NotConfirmed(format!(
                "message to {} was returned as unroutable: {reply}",
                outgoing.routing_key
            ))),
        }
    }

    /// Drops `topology` from the declaration cache so the next use declares it again.
    async fn forget(&self, topology: &[Topology<'_>]) {
        let mut link = self.link.lock().await;
        for topology in topology {
            link.declared.remove(&topology.cache_key());
        }
    }

    async fn publish_once(&self, outgoing: &Outgoing<'_>) -> Result<(), PublishFailure> {
        let exchange = short(outgoing.exchange).map_err(PublishFailure::Final)?;
        let routing_key = short(outgoing.routing_key).map_err(PublishFailure::Final)?;
        let confirm = {
            let mut link = self.link().await.map_err(PublishFailure::Final)?;
            for topology in &outgoing.topology {
                link.ensure(topology)
                    .await
                    .map_err(PublishFailure::Transient)?;
            }
            link.publisher
                .basic_publish(
                    exchange,
                    routing_key,
                    BasicPublishOptions {
                        mandatory: outgoing.mandatory,
                        immediate: false,
                    },
                    outgoing.payload,
                    outgoing.properties.clone(),
                )
                .await
                .map_err(|error| {
                    PublishFailure::Transient(broker_error("could not publish", error))
                })?
        };
        let confirmation = confirm.await.map_err(|error| {
            PublishFailure::Transient(broker_error("publish was not confirmed", error))
        })?;
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(returned)) => {
                Err(PublishFailure::Unroutable(returned.reply_text.to_string()))
            }
            Confirmation::Nack(_) => Err(PublishFailure::Final(BusError::NotConfirmed(format!(
                "broker nacked the message to {}",
                outgoing.routing_key
            )))),
            Confirmation::NotRequested => Err(PublishFailure::Final(BusError::Other(
                "publisher confirms are not enabled on the publishing channel".to_owned(),
            ))),
        }
    }

    /// Opens a channel for a consumer after making sure `topology` exists.
    async fn consumer_channel(
        &self,
        topology: &Topology<'_>,
        prefetch: u16,
    ) -> Result<Channel, BusError> {
        let channel = {
            let mut link = self.link().await?;
            link.ensure(topology).await?;
            link.connection.create_channel().await
        };
        let channel = match channel {
            Ok(channel) => channel,
            Err(error) if is_channel_limit(&error) => self.overflow_channel().await?,
            Err(error) => return Err(broker_error("could not open a consumer channel", error)),
        };
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(|error| broker_error("could not set prefetch", error))?;
        Ok(channel)
    }
}

impl Inner {
    /// A consumer channel on an extra connection: the first one with a channel left, or a new
    /// one. Connections that died are dropped from the list; their consumers have ended.
    async fn overflow_channel(&self) -> Result<Channel, BusError> {
        let mut overflow = self.overflow.lock().await;
        overflow.retain(|connection| connection.status().connected());
        for connection in overflow.iter() {
            match connection.create_channel().await {
                Ok(channel) => return Ok(channel),
                Err(error) if is_channel_limit(&error) => continue,
                Err(error) => {
                    return Err(broker_error("could not open a consumer channel", error));
                }
            }
        }
        let name = format!(
            "cuttle-bus {} consumers {}",
            self.prefix,
            overflow.len() + 1
        );
        let connection = open_connection(&self.url, name).await?;
        tracing::info!(
            connections = overflow.len() + 2,
            "the RabbitMQ connection has no channel left for consumers; opened another"
        );
        let channel = connection
            .create_channel()
            .await
            .map_err(|error| broker_error("could not open a consumer channel", error))?;
        overflow.push(connection);
        Ok(channel)
    }

    /// Closes the extra consumer connections.
    async fn close_overflow(&self, reason: &str) {
        let connections = std::mem::take(&mut *self.overflow.lock().await);
        for connection in connections {
            if connection.status().connected()
                && let Err(error) = connection.close(200, reason.into()).await
            {
                tracing::debug!(error = %error, "an extra RabbitMQ connection was already closing");
            }
        }
    }
}

impl RabbitMqBus {
    /// Connects to the broker at `url`; every queue and exchange name gets `prefix` prepended.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, BusError> {
        let link = Link::open(url, prefix).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                url: url.to_owned(),
                prefix: prefix.to_owned(),
                closed: AtomicBool::new(false),
                link: Mutex::new(link),
                overflow: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Closes the connection: open subscriptions end (`next` returns `None`), unacknowledged
    /// deliveries go back to their queues, and later calls fail.
    ///
    /// Dropping the bus does the same, without waiting for the broker's reply.
    pub async fn close(&self) -> Result<(), BusError> {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.close_overflow("closed by cuttle-bus").await;
        let link = self.inner.link.lock().await;
        if !link.connection.status().connected() {
            return Ok(());
        }
        link.connection
            .close(200, "closed by cuttle-bus".into())
            .await
            .map_err(|error| broker_error("could not close the RabbitMQ connection", error))
    }
}

impl Drop for RabbitMqBus {
    fn drop(&mut self) {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        // Deliveries and subscriptions keep `Inner` (and so the connection) alive, so close the
        // connection explicitly rather than waiting for the last of them to go.
        let inner = Arc::clone(&self.inner);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::debug!(
                "RabbitMQ bus dropped outside a runtime; the connection closes with the process"
            );
            return;
        };
        runtime.spawn(async move {
            inner.close_overflow("bus dropped").await;
            let link = inner.link.lock().await;
            if let Err(error) = link.connection.close(200, "bus dropped".into()).await {
                tracing::debug!(error = %error, "RabbitMQ connection was already closing when the bus was dropped");
            }
        });
    }
}

impl std::fmt::Debug for RabbitMqBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL stays out: it may carry credentials.
        f.debug_struct("RabbitMqBus")
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Bus for RabbitMqBus {
    async fn send(&self, queue: &QueueSpec, message: Message) -> Result<(), BusError> {
        let main = self.inner.queue_name(queue);
        let dead = self.inner.dead_queue_name(queue);
        self.inner
            .publish(&Outgoing {
                exchange: "",
                routing_key: &main,
                mandatory: true,
                payload: &message.payload,
                properties: outgoing_properties(&message, &[])?,
                topology: vec![Topology::WorkQueue {
                    main: &main,
                    dead: &dead,
                }],
            })
            .await
    }

    async fn consume(&self, queue: &QueueSpec) -> Result<Subscription, BusError> {
        let main = self.inner.queue_name(queue);
        let dead = self.inner.dead_queue_name(queue);
        let topology = Topology::WorkQueue {
            main: &main,
            dead: &dead,
        };
        let channel = self
            .inner
            .consumer_channel(&topology, queue.prefetch)
            .await?;
        let consumer = channel
            .basic_consume(
                short(&main)?,
                // An empty tag asks the broker to generate a unique one.
                ShortString::default(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|error| broker_error("could not start consuming", error))?;
        Ok(Subscription {
            source: Source::RabbitMq(Box::new(Receiver {
                inner: Arc::clone(&self.inner),
                consumer,
                _channel: channel,
                spec: Some(Arc::new(queue.clone())),
                finished: false,
            })),
        })
    }

    async fn broadcast(&self, topic: &str, message: Message) -> Result<(), BusError> {
        let exchange = format!("{}{topic}", self.inner.prefix);
        self.inner
            .publish(&Outgoing {
                exchange: &exchange,
                routing_key: "",
                // No subscribers means nobody cares; that is not an error for a broadcast.
                mandatory: false,
                payload: &message.payload,
                properties: outgoing_properties(&message, &[])?,
                topology: vec![Topology::Exchange(&exchange)],
            })
            .await
    }

    async fn subscribe(&self, topic: &str) -> Result<Subscription, BusError> {
        let exchange = format!("{}{topic}", self.inner.prefix);
        let channel = self
            .inner
            .consumer_channel(&Topology::Exchange(&exchange), TOPIC_PREFETCH)
            .await?;
        // Server-named, exclusive and auto-delete: the queue lives exactly as long as this
        // subscription, so broadcasts reach only subscriptions open at publish time.
        let queue = channel
            .queue_declare(
                ShortString::default(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|error| broker_error("could not declare a subscription queue", error))?;
        channel
            .queue_bind(
                queue.name().clone(),
                short(&exchange)?,
                ShortString::default(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|error| broker_error("could not bind the subscription queue", error))?;
        let consumer = channel
            .basic_consume(
                queue.name().clone(),
                ShortString::default(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|error| broker_error("could not start the subscription", error))?;
        Ok(Subscription {
            source: Source::RabbitMq(Box::new(Receiver {
                inner: Arc::clone(&self.inner),
                consumer,
                _channel: channel,
                spec: None,
                finished: false,
            })),
        })
    }

    async fn drain_dead_letters(
        &self,
        queue: &QueueSpec,
        max: usize,
    ) -> Result<Vec<DeadLetter>, BusError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let main = self.inner.queue_name(queue);
        let dead = self.inner.dead_queue_name(queue);
        let topology = Topology::WorkQueue {
            main: &main,
            dead: &dead,
        };
        // A throwaway channel: basic.get round trips should not hold up publishers, and if we
        // fail halfway its closing hands the fetched messages back to the queue.
        let channel = self.inner.consumer_channel(&topology, 0).await?;
        let mut letters = Vec::new();
        let mut last_acker = None;
        while letters.len() < max {
            let fetched = channel
                .basic_get(short(&dead)?, BasicGetOptions { no_ack: false })
                .await
                .map_err(|error| broker_error("could not fetch a dead letter", error))?;
            let Some(fetched) = fetched else {
                break;
            };
            let delivery = fetched.delivery;
            let incoming = Incoming::parse(&delivery.properties, delivery.data);
            letters.push(DeadLetter {
                message: incoming.message,
                reason: incoming.reason.unwrap_or_default(),
                attempts: incoming.attempt,
            });
            last_acker = Some(delivery.acker);
        }
        if let Some(acker) = last_acker {
            // One ack with `multiple` settles every message fetched on this channel.
            acker
                .ack(BasicAckOptions { multiple: true })
                .await
                .map_err(|error| broker_error("could not remove the dead letters", error))?;
        }
        if let Err(error) = channel.close(200, "dead letters drained".into()).await {
            // Everything is acked already; the channel dies with the connection at worst.
            tracing::debug!(error = %error, "could not close the dead-letter channel");
        }
        Ok(letters)
    }

    async fn delete_queue(&self, queue: &QueueSpec) -> Result<(), BusError> {
        let main = self.inner.queue_name(queue);
        let dead = self.inner.dead_queue_name(queue);
        let mut names = vec![main.clone(), dead.clone()];
        for attempt in 1..queue.max_attempts {
            let ttl_ms = u32::try_from(queue.retry_delay(attempt).as_millis()).unwrap_or(u32::MAX);
            names.push(format!("{main}.retry.{ttl_ms}ms"));
        }
        let mut link = self.inner.link().await?;
        for name in &names {
            // A channel of its own: a failed delete closes the channel it ran on.
            let channel = link.connection.create_channel().await.map_err(|error| {
                broker_error("could not open a channel to delete a queue", error)
            })?;
            channel
                .queue_delete(short(name)?, QueueDeleteOptions::default())
                .await
                .map_err(|error| broker_error("could not delete a queue", error))?;
            if let Err(error) = channel.close(200, "queue deleted".into()).await {
                tracing::debug!(error = %error, "the channel of a queue deletion was already closing");
            }
            link.declared.remove(&format!("queue:{name}"));
        }
        Ok(())
    }

    async fn queue_depth(&self, queue: &QueueSpec) -> Result<u64, BusError> {
        let main = self.inner.queue_name(queue);
        let dead = self.inner.dead_queue_name(queue);
        let mut link = self.inner.link().await?;
        link.ensure(&Topology::WorkQueue {
            main: &main,
            dead: &dead,
        })
        .await?;
        // Redeclaring an existing queue is a no-op that reports its ready-message count.
        let declared = declare_durable_queue(&link.publisher, &main, FieldTable::default()).await?;
        Ok(u64::from(declared.message_count()))
    }

    async fn health(&self) -> Result<(), BusError> {
        self.inner.link().await.map(drop)
    }
}

/// The receiving end of a RabbitMQ subscription: a consumer on its own channel.
pub(crate) struct Receiver {
    inner: Arc<Inner>,
    consumer: lapin::Consumer,
    /// Held so the channel, and with it every unacked delivery, is released when the
    /// subscription is dropped: closing the channel makes the broker requeue them.
    _channel: Channel,
    /// `None` for topic subscriptions.
    spec: Option<Arc<QueueSpec>>,
    finished: bool,
}

impl Receiver {
    pub(crate) async fn next(&mut self) -> Option<Delivery> {
        while !self.finished {
            match self.consumer.next().await {
                Some(Ok(delivery)) => {
                    if delivery.acker.poisoned() {
                        // Buffered before the channel died: the broker has already requeued it,
                        // so handing it out would only make a handler do work it cannot ack.
                        tracing::debug!("skipping a delivery whose channel has closed");
                        continue;
                    }
                    let incoming = Incoming::parse(&delivery.properties, delivery.data);
                    return Some(Delivery {
                        message: incoming.message,
                        attempt: incoming.attempt,
                        settlement: Settlement::RabbitMq(Pending {
                            inner: Arc::clone(&self.inner),
                            acker: delivery.acker,
                            spec: self.spec.clone(),
                            settled: false,
                        }),
                    });
                }
                Some(Err(error)) => {
                    // lapin ends the stream after an error; callers see the subscription end
                    // and consume again, which reconnects.
                    tracing::warn!(error = %error, "RabbitMQ consumer failed; ending the subscription");
                    self.finished = true;
                }
                None => self.finished = true,
            }
        }
        None
    }
}

/// Settles one RabbitMQ delivery; requeues it (nack) if dropped unsettled.
pub(crate) struct Pending {
    inner: Arc<Inner>,
    acker: Acker,
    /// `None` for broadcast deliveries, which have no retry or dead-letter queue.
    spec: Option<Arc<QueueSpec>>,
    settled: bool,
}

impl Pending {
    pub(crate) async fn ack(mut self) -> Result<(), BusError> {
        let acked = self
            .acker
            .ack(BasicAckOptions::default())
            .await
            .map_err(|error| broker_error("could not acknowledge the delivery", error))?;
        self.settled = true;
        if acked {
            Ok(())
        } else {
            Err(BusError::Other(
                "delivery can no longer be settled: its channel closed, so the broker will \
                 redeliver it"
                    .to_owned(),
            ))
        }
    }

    pub(crate) async fn retry(
        self,
        message: &Message,
        attempt: u32,
        reason: &str,
    ) -> Result<(), BusError> {
        let Some(spec) = self.spec.clone() else {
            tracing::warn!(
                message.id = %message.id,
                reason,
                "discarding a broadcast message on retry: topics have no retry queue"
            );
            return self.ack().await;
        };
        if attempt >= spec.max_attempts {
            return self.dead_letter(message, attempt, reason).await;
        }
        let delay = spec.retry_delay(attempt);
        // RabbitMQ caps TTLs at 2^32-1 ms (about 50 days); clamping keeps absurd backoffs valid.
        let ttl_ms = u32::try_from(delay.as_millis()).unwrap_or(u32::MAX);
        let main = self.inner.queue_name(&spec);
        let dead = self.inner.dead_queue_name(&spec);
        let delay_queue = format!("{main}.retry.{ttl_ms}ms");
        let next_attempt = attempt.saturating_add(1);
        tracing::debug!(
            message.id = %message.id,
            queue.name = %spec.name,
            attempt,
            delay_ms = ttl_ms,
            reason,
            "scheduling message retry"
        );
        // Publish the next attempt before acking this one: a crash in between duplicates the
        // message (handlers are idempotent) instead of losing it.
        self.inner
            .publish(&Outgoing {
                exchange: "",
                routing_key: &delay_queue,
                mandatory: true,
                payload: &message.payload,
                properties: outgoing_properties(
                    message,
                    &[
                        (
                            ATTEMPT_HEADER,
                            AMQPValue::LongLongInt(i64::from(next_attempt)),
                        ),
                        (REASON_HEADER, AMQPValue::LongString(reason.into())),
                    ],
                )?,
                topology: vec![
                    Topology::WorkQueue {
                        main: &main,
                        dead: &dead,
                    },
                    Topology::DelayQueue {
                        name: &delay_queue,
                        ttl_ms,
                        target: &main,
                    },
                ],
            })
            .await?;
        self.ack().await
    }

    pub(crate) async fn dead_letter(
        self,
        message: &Message,
        attempt: u32,
        reason: &str,
    ) -> Result<(), BusError> {
        let Some(spec) = self.spec.clone() else {
            tracing::warn!(
                message.id = %message.id,
                reason,
                "discarding a broadcast message: topics have no dead-letter queue"
            );
            return self.ack().await;
        };
        let main = self.inner.queue_name(&spec);
        let dead = self.inner.dead_queue_name(&spec);
        tracing::warn!(
            message.id = %message.id,
            message.kind = %message.kind,
            queue.name = %spec.name,
            attempt,
            reason,
            "dead-lettering message"
        );
        self.inner
            .publish(&Outgoing {
                exchange: "",
                routing_key: &dead,
                mandatory: true,
                payload: &message.payload,
                properties: outgoing_properties(
                    message,
                    &[
                        (ATTEMPT_HEADER, AMQPValue::LongLongInt(i64::from(attempt))),
                        (REASON_HEADER, AMQPValue::LongString(reason.into())),
                    ],
                )?,
                topology: vec![Topology::WorkQueue {
                    main: &main,
                    dead: &dead,
                }],
            })
            .await?;
        self.ack().await
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        // The broker would only requeue an unacked message once the whole channel closes; nack
        // it now so a dropped delivery comes back promptly, as it does in-process. lapin's
        // acker is single-use, so this is a no-op if an ack already went out.
        let acker = self.acker.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::debug!(
                "delivery dropped outside a runtime; it is requeued when its channel closes"
            );
            return;
        };
        runtime.spawn(async move {
            let requeue = BasicNackOptions {
                multiple: false,
                requeue: true,
            };
            if let Err(error) = acker.nack(requeue).await {
                tracing::debug!(
                    error = %error,
                    "could not requeue a dropped delivery; the broker requeues it when its channel closes"
                );
            }
        });
    }
}

/// A received message with the bus's bookkeeping headers taken out.
struct Incoming {
    message: Message,
    attempt: u32,
    reason: Option<String>,
}

impl Incoming {
    fn parse(properties: &BasicProperties, payload: Vec<u8>) -> Self {
        let mut headers = BTreeMap::new();
        let mut attempt = 1;
        let mut reason = None;
        if let Some(table) = properties.headers() {
            for (key, value) in table {
                let key = key.as_str();
                if key == ATTEMPT_HEADER {
                    attempt = integer(value)
                        .and_then(|n| u32::try_from(n).ok())
                        .unwrap_or(1)
                        .max(1);
                } else if key == REASON_HEADER {
                    reason = text(value);
                } else if key.starts_with(RESERVED_HEADER_PREFIX) || is_broker_header(key) {
                    // Bookkeeping, not part of the message the sender built.
                } else if let Some(value) = text(value) {
                    headers.insert(key.to_owned(), value);
                }
            }
        }
        let id = match properties.message_id() {
            Some(id) => id.to_string(),
            None => {
                // Only a publisher other than this crate omits the id; give the message one so
                // handlers can still log and deduplicate within this delivery.
                let id = uuid::Uuid::new_v4().to_string();
                tracing::warn!(message.id = %id, "received a message without message_id; assigned one");
                id
            }
        };
        let kind = properties
            .kind()
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        Self {
            message: Message {
                id,
                kind,
                payload,
                headers,
            },
            attempt,
            reason,
        }
    }
}

/// Headers RabbitMQ adds when it dead-letters a message out of a delay queue.
fn is_broker_header(key: &str) -> bool {
    key == "x-death" || key.starts_with("x-first-death-") || key.starts_with("x-last-death-")
}

fn text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(text) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
        AMQPValue::ShortString(text) => Some(text.to_string()),
        _ => None,
    }
}

fn integer(value: &AMQPValue) -> Option<i64> {
    match *value {
        AMQPValue::ShortShortInt(n) => Some(i64::from(n)),
        AMQPValue::ShortShortUInt(n) => Some(i64::from(n)),
        AMQPValue::ShortInt(n) => Some(i64::from(n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(n)),
        AMQPValue::LongInt(n) => Some(i64::from(n)),
        AMQPValue::LongUInt(n) => Some(i64::from(n)),
        AMQPValue::LongLongInt(n) => Some(n),
        _ => None,
    }
}

/// AMQP properties for `message`: persistent, id and kind in their standard properties, headers
/// as strings, plus the bus's own `extra` headers.
fn outgoing_properties(
    message: &Message,
    extra: &[(&str, AMQPValue)],
) -> Result<BasicProperties, BusError> {
    let mut headers = FieldTable::default();
    for (key, value) in &message.headers {
        headers.insert(
            short(key)?,
            AMQPValue::LongString(LongString::from(value.as_str())),
        );
    }
    for (key, value) in extra {
        headers.insert(short(key)?, value.clone());
    }
    Ok(BasicProperties::default()
        .with_message_id(short(&message.id)?)
        .with_type(short(&message.kind)?)
        .with_delivery_mode(PERSISTENT)
        .with_headers(headers))
}

/// AMQP short strings (names, ids, header keys) hold at most 255 bytes; lapin's `From` panics
/// beyond that, so check first.
fn short(text: &str) -> Result<ShortString, BusError> {
    ShortString::try_new(text).map_err(|error| BusError::Other(format!("{error}: {text:.64}...")))
}

/// Maps a lapin error, telling channel-level refusals (a real problem with the request) apart
/// from connection trouble.
fn broker_error(context: &str, error: lapin::Error) -> BusError {
    if error.is_amqp_soft_error() {
        BusError::Other(format!("{context}: {error}"))
    } else {
        BusError::Connection(format!("{context}: {error}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bookkeeping_and_broker_headers_are_stripped_from_received_messages() {
        let sent = Message::new("step.run", b"{}".to_vec()).with_header("traceparent", "00-abc-01");
        let mut properties = outgoing_properties(
            &sent,
            &[
                (ATTEMPT_HEADER, AMQPValue::LongLongInt(3)),
                (REASON_HEADER, AMQPValue::LongString("flaky".into())),
            ],
        )
        .unwrap();
        // What RabbitMQ adds when a delay queue dead-letters the message back.
        let mut headers = properties.headers().clone().unwrap_or_default();
        headers.insert(
            "x-death".into(),
            AMQPValue::FieldTable(FieldTable::default()),
        );
        headers.insert(
            "x-first-death-reason".into(),
            AMQPValue::LongString("expired".into()),
        );
        properties = properties.with_headers(headers);

        let incoming = Incoming::parse(&properties, sent.payload.clone());

        assert_eq!(incoming.message, sent);
        assert_eq!(incoming.attempt, 3);
        assert_eq!(incoming.reason.as_deref(), Some("flaky"));
    }

    #[test]
    fn names_longer_than_an_amqp_short_string_are_an_error_not_a_panic() {
        let message = Message::new("k".repeat(300), Vec::new());
        assert!(matches!(
            outgoing_properties(&message, &[]),
            Err(BusError::Other(_))
        ));
    }
}
