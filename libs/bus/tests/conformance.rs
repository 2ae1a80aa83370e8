//! One conformance story for the bus port, run against every implementation.
//!
//! Each story is an async fn taking `Arc<dyn Bus>`; the `conformance!` macro turns every story
//! into a test in `mod in_process` and one in `mod rabbitmq`. The RabbitMQ tests need a broker
//! (`CUTTLE_TEST_AMQP_URL`, default `amqp://guest:guest@127.0.0.1:5672/%2f`) and fail, rather
//! than skip, when it is unreachable. Each RabbitMQ test gets a unique name prefix so tests
//! running in parallel never see each other's messages.

// The stories are async fns called from the generated tests, so clippy does not see them as
// test code; a panic is exactly how a story should fail.
#![allow(clippy::unwrap_used, reason = "test code: unwrap is how a story fails")]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use cuttle_bus::{Bus, Delivery, InProcessBus, Message, QueueSpec, RabbitMqBus, Subscription};
use serde::{Deserialize, Serialize};

/// Upper bound for anything that should happen; only reached when an implementation is broken.
const PATIENCE: Duration = Duration::from_secs(15);
/// How long to watch for a message that must not arrive.
const QUIET_PERIOD: Duration = Duration::from_millis(500);

const QUEUE_NAME: &str = "step.jobs";
const TOPIC: &str = "deployments.cancelled";
const RETRY_BASE_DELAY: Duration = Duration::from_millis(50);
const MAX_ATTEMPTS: u32 = 3;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct RunStep {
    deployment_id: String,
    step: u32,
}

fn jobs() -> QueueSpec {
    QueueSpec {
        max_attempts: MAX_ATTEMPTS,
        retry_base_delay: RETRY_BASE_DELAY,
        ..QueueSpec::new(QUEUE_NAME)
    }
}

fn run_step(step: u32) -> Message {
    let payload = RunStep {
        deployment_id: "Deployments-1".to_owned(),
        step,
    };
    Message::json("step.run", &payload)
        .unwrap()
        .with_header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .with_header("space.id", "Spaces-1")
}

async fn next_delivery(subscription: &mut Subscription) -> Delivery {
    tokio::time::timeout(PATIENCE, subscription.next())
        .await
        .expect("timed out waiting for a delivery")
        .expect("subscription ended while waiting for a delivery")
}

async fn assert_nothing_arrives(subscription: &mut Subscription) {
    if let Ok(Some(delivery)) = tokio::time::timeout(QUIET_PERIOD, subscription.next()).await {
        panic!("expected no delivery, got {delivery:?}");
    }
}

/// Drains dead letters until `n_expected` have arrived (the broker may lag a little).
async fn drain_until(
    bus: &dyn Bus,
    queue: &QueueSpec,
    n_expected: usize,
) -> Vec<cuttle_bus::DeadLetter> {
    let mut letters = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        while letters.len() < n_expected {
            letters.extend(
                bus.drain_dead_letters(queue, n_expected - letters.len())
                    .await
                    .unwrap(),
            );
            if letters.len() < n_expected {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    })
    .await
    .expect("timed out waiting for dead letters");
    letters
}

async fn a_sent_message_is_received_once_with_id_kind_payload_and_headers_intact(
    bus: Arc<dyn Bus>,
) {
    let queue = jobs();
    let mut subscription = bus.consume(&queue).await.unwrap();
    let sent = run_step(1);

    bus.send(&queue, sent.clone()).await.unwrap();

    let delivery = next_delivery(&mut subscription).await;
    assert_eq!(delivery.message, sent);
    assert_eq!(delivery.attempt, 1);
    assert_eq!(delivery.message.decode::<RunStep>().unwrap().step, 1);
    delivery.ack().await.unwrap();
    assert_nothing_arrives(&mut subscription).await;
}

async fn competing_consumers_each_receive_a_distinct_message(bus: Arc<dyn Bus>) {
    let queue = jobs();
    let mut first = bus.consume(&queue).await.unwrap();
    let mut second = bus.consume(&queue).await.unwrap();
    let sent: Vec<Message> = (0..50).map(run_step).collect();
    for message in &sent {
        bus.send(&queue, message.clone()).await.unwrap();
    }

    let mut received_by_first = Vec::new();
    let mut received_by_second = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        while received_by_first.len() + received_by_second.len() < sent.len() {
            // Both arms are cancel-safe: a losing `next` has not taken a message yet.
            tokio::select! {
                Some(delivery) = first.next() => {
                    received_by_first.push(delivery.message.id.clone());
                    delivery.ack().await.unwrap();
                }
                Some(delivery) = second.next() => {
                    received_by_second.push(delivery.message.id.clone());
                    delivery.ack().await.unwrap();
                }
            }
        }
    })
    .await
    .expect("timed out waiting for all 50 messages");

    assert!(
        !received_by_first.is_empty(),
        "the first consumer got nothing"
    );
    assert!(
        !received_by_second.is_empty(),
        "the second consumer got nothing"
    );
    let all_received: Vec<&String> = received_by_first
        .iter()
        .chain(&received_by_second)
        .collect();
    let distinct: HashSet<&String> = all_received.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        all_received.len(),
        "a message was delivered twice"
    );
    let expected: HashSet<&String> = sent.iter().map(|message| &message.id).collect();
    assert_eq!(distinct, expected);
    assert_nothing_arrives(&mut first).await;
    assert_nothing_arrives(&mut second).await;
}

async fn an_unacked_delivery_is_redelivered_after_its_subscription_is_dropped(bus: Arc<dyn Bus>) {
    let queue = jobs();
    let mut doomed = bus.consume(&queue).await.unwrap();
    let sent = run_step(1);
    bus.send(&queue, sent.clone()).await.unwrap();
    let unacked = next_delivery(&mut doomed).await;

    drop(doomed);
    let mut survivor = bus.consume(&queue).await.unwrap();

    let redelivered = next_delivery(&mut survivor).await;
    assert_eq!(redelivered.message, sent);
    assert!(
        unacked.ack().await.is_err(),
        "a delivery from a dropped subscription must not be ackable: it went back to the queue"
    );
    redelivered.ack().await.unwrap();
    assert_nothing_arrives(&mut survivor).await;
}

async fn a_delivery_dropped_without_settling_is_redelivered(bus: Arc<dyn Bus>) {
    let queue = jobs();
    let mut subscription = bus.consume(&queue).await.unwrap();
    let sent = run_step(1);
    bus.send(&queue, sent.clone()).await.unwrap();

    drop(next_delivery(&mut subscription).await);

    let redelivered = next_delivery(&mut subscription).await;
    assert_eq!(redelivered.message, sent);
    redelivered.ack().await.unwrap();
}

async fn retry_redelivers_with_the_attempt_incremented_then_dead_letters_after_max_attempts(
    bus: Arc<dyn Bus>,
) {
    let queue = jobs();
    let mut subscription = bus.consume(&queue).await.unwrap();
    let sent = run_step(1);
    bus.send(&queue, sent.clone()).await.unwrap();

    for expected_attempt in 1..MAX_ATTEMPTS {
        let delivery = next_delivery(&mut subscription).await;
        assert_eq!(delivery.attempt, expected_attempt);
        assert_eq!(delivery.message, sent);
        delivery.retry("target unreachable").await.unwrap();
    }
    let last = next_delivery(&mut subscription).await;
    assert_eq!(last.attempt, MAX_ATTEMPTS);
    assert_eq!(last.message, sent);
    last.retry("target still unreachable").await.unwrap();

    let letters = drain_until(bus.as_ref(), &queue, 1).await;
    assert_eq!(letters[0].message, sent);
    assert_eq!(letters[0].reason, "target still unreachable");
    assert_eq!(letters[0].attempts, MAX_ATTEMPTS);
    assert_nothing_arrives(&mut subscription).await;
    assert!(bus.drain_dead_letters(&queue, 10).await.unwrap().is_empty());
}

async fn dead_letter_sends_a_message_straight_to_the_dead_letter_queue(bus: Arc<dyn Bus>) {
    let queue = jobs();
    let mut subscription = bus.consume(&queue).await.unwrap();
    let sent: Vec<Message> = (0..3).map(run_step).collect();
    for message in &sent {
        bus.send(&queue, message.clone()).await.unwrap();
    }

    for _ in &sent {
        next_delivery(&mut subscription)
            .await
            .dead_letter("payload does not parse")
            .await
            .unwrap();
    }

    // drain_dead_letters honours `max` and removes what it returns.
    let mut letters = drain_until(bus.as_ref(), &queue, 2).await;
    assert_eq!(letters.len(), 2);
    letters.extend(drain_until(bus.as_ref(), &queue, 1).await);
    assert!(bus.drain_dead_letters(&queue, 10).await.unwrap().is_empty());
    let mut letter_ids: Vec<&String> = letters.iter().map(|letter| &letter.message.id).collect();
    let mut sent_ids: Vec<&String> = sent.iter().map(|message| &message.id).collect();
    letter_ids.sort();
    sent_ids.sort();
    assert_eq!(letter_ids, sent_ids);
    for letter in &letters {
        assert_eq!(letter.reason, "payload does not parse");
        assert_eq!(letter.attempts, 1);
        assert!(
            sent.contains(&letter.message),
            "dead letter lost data: {letter:?}"
        );
    }
    assert_nothing_arrives(&mut subscription).await;
}

async fn broadcast_reaches_every_subscriber(bus: Arc<dyn Bus>) {
    let mut first = bus.subscribe(TOPIC).await.unwrap();
    let mut second = bus.subscribe(TOPIC).await.unwrap();
    let sent = run_step(1);

    bus.broadcast(TOPIC, sent.clone()).await.unwrap();

    for subscription in [&mut first, &mut second] {
        let delivery = next_delivery(subscription).await;
        assert_eq!(delivery.message, sent);
        delivery.ack().await.unwrap();
        assert_nothing_arrives(subscription).await;
    }
}

async fn a_broadcast_without_subscribers_is_dropped(bus: Arc<dyn Bus>) {
    let unheard = run_step(1);
    bus.broadcast(TOPIC, unheard).await.unwrap();
    let mut subscription = bus.subscribe(TOPIC).await.unwrap();
    let heard = run_step(2);

    bus.broadcast(TOPIC, heard.clone()).await.unwrap();

    let delivery = next_delivery(&mut subscription).await;
    assert_eq!(delivery.message, heard);
    delivery.ack().await.unwrap();
    assert_nothing_arrives(&mut subscription).await;
}

async fn queue_depth_counts_ready_messages(bus: Arc<dyn Bus>) {
    let queue = QueueSpec {
        prefetch: 1,
        ..jobs()
    };
    assert_eq!(bus.queue_depth(&queue).await.unwrap(), 0);
    for step in 0..3 {
        bus.send(&queue, run_step(step)).await.unwrap();
    }
    assert_eq!(bus.queue_depth(&queue).await.unwrap(), 3);

    // With prefetch 1, exactly one message leaves the ready set once it is delivered.
    let mut subscription = bus.consume(&queue).await.unwrap();
    let delivery = next_delivery(&mut subscription).await;
    assert_eq!(bus.queue_depth(&queue).await.unwrap(), 2);
    delivery.ack().await.unwrap();
}

async fn a_deleted_queue_loses_its_messages_ends_its_consumers_and_comes_back_empty(
    bus: Arc<dyn Bus>,
) {
    let mut consumer = bus.consume(&jobs()).await.unwrap();
    bus.send(&jobs(), run_step(1)).await.unwrap();
    let delivery = next_delivery(&mut consumer).await;
    delivery.ack().await.unwrap();
    // Two left waiting when the queue goes.
    drop(consumer);
    bus.send(&jobs(), run_step(2)).await.unwrap();
    bus.send(&jobs(), run_step(3)).await.unwrap();
    let mut watcher = bus
        .consume(&QueueSpec {
            prefetch: 1,
            ..jobs()
        })
        .await
        .unwrap();
    bus.delete_queue(&jobs()).await.unwrap();
    let ended = tokio::time::timeout(PATIENCE, async {
        // The one delivery it may hold when the queue goes is of no further use.
        while watcher.next().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "a consumer of a deleted queue kept waiting");
    assert_eq!(bus.queue_depth(&jobs()).await.unwrap(), 0);
    // Deleting again is fine, and the queue works afresh.
    bus.delete_queue(&jobs()).await.unwrap();
    bus.send(&jobs(), run_step(4)).await.unwrap();
    let mut consumer = bus.consume(&jobs()).await.unwrap();
    let delivery = next_delivery(&mut consumer).await;
    assert_eq!(delivery.message.decode::<RunStep>().unwrap().step, 4);
    delivery.ack().await.unwrap();
}

async fn health_reports_a_live_bus(bus: Arc<dyn Bus>) {
    bus.health().await.unwrap();
}

/// Consumers past one connection's channels go on extra connections: with `channel_max` 4 (one
/// channel publishes), ten subscriptions each still get their own messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_beyond_one_connections_channels_use_more_connections() {
    let (namespace, _) = RabbitNamespace::connect().await;
    let separator = if namespace.url.contains('?') {
        '&'
    } else {
        '?'
    };
    let url = format!("{}{separator}channel_max=4", namespace.url);
    let bus = RabbitMqBus::connect(&url, &namespace.prefix).await.unwrap();
    let mut subscriptions = Vec::new();
    for _ in 0..10 {
        subscriptions.push(bus.subscribe(TOPIC).await.unwrap());
    }
    let mut consumer = bus.consume(&jobs()).await.unwrap();
    bus.broadcast(TOPIC, run_step(1)).await.unwrap();
    for subscription in &mut subscriptions {
        let delivery = next_delivery(subscription).await;
        assert_eq!(delivery.message.decode::<RunStep>().unwrap().step, 1);
        delivery.ack().await.unwrap();
    }
    bus.send(&jobs(), run_step(2)).await.unwrap();
    let delivery = next_delivery(&mut consumer).await;
    assert_eq!(delivery.message.decode::<RunStep>().unwrap().step, 2);
    delivery.ack().await.unwrap();
    bus.close().await.unwrap();
}

/// A uniquely prefixed RabbitMqBus, whose broker objects are deleted when the test ends
/// (passing or not).
struct RabbitNamespace {
    url: String,
    prefix: String,
}

impl RabbitNamespace {
    async fn connect() -> (Self, Arc<dyn Bus>) {
        let url = std::env::var("CUTTLE_TEST_AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
        let prefix = format!("cuttle-test-{}.", uuid::Uuid::new_v4());
        let bus = RabbitMqBus::connect(&url, &prefix)
            .await
            .unwrap_or_else(|error| {
                panic!(
                    "these tests need RabbitMQ (set CUTTLE_TEST_AMQP_URL to point at one): {error}"
                )
            });
        (Self { url, prefix }, Arc::new(bus))
    }
}

/// Every durable object the stories can create under `prefix`. Delay-queue names mirror the
/// implementation's `<queue>.retry.<ms>ms` scheme; a mismatch would only leave litter behind.
fn durable_objects(prefix: &str) -> (Vec<String>, Vec<String>) {
    let main = format!("{prefix}{QUEUE_NAME}");
    let mut queues = vec![format!("{main}.dead"), main.clone()];
    for attempt in 1..MAX_ATTEMPTS {
        let delay = RETRY_BASE_DELAY * 2u32.pow(attempt - 1);
        queues.push(format!("{main}.retry.{}ms", delay.as_millis()));
    }
    (queues, vec![format!("{prefix}{TOPIC}")])
}

async fn delete_durable_objects(url: &str, prefix: &str) -> Result<(), lapin::Error> {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    let connection =
        lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await?;
    let (queues, exchanges) = durable_objects(prefix);
    // A fresh channel per deletion: a failed delete closes its channel.
    for queue in queues {
        let channel = connection.create_channel().await?;
        if let Err(error) = channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await
        {
            eprintln!("could not delete test queue {queue}: {error}");
        }
    }
    for exchange in exchanges {
        let channel = connection.create_channel().await?;
        if let Err(error) = channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await
        {
            eprintln!("could not delete test exchange {exchange}: {error}");
        }
    }
    connection.close(200, "test cleanup done".into()).await
}

impl Drop for RabbitNamespace {
    fn drop(&mut self) {
        // Drop cannot await, and may run while a panicking test unwinds its runtime, so clean
        // up on a thread with a runtime of its own.
        let url = self.url.clone();
        let prefix = self.prefix.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            if let Err(error) = runtime.block_on(delete_durable_objects(&url, &prefix)) {
                eprintln!("could not clean up RabbitMQ test objects: {error}");
            }
        });
        if cleanup.join().is_err() {
            eprintln!("RabbitMQ test cleanup panicked");
        }
    }
}

macro_rules! conformance {
    ($($story:ident),* $(,)?) => {
        mod in_process {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $story() {
                    super::$story(Arc::new(InProcessBus::new())).await;
                }
            )*
        }

        mod rabbitmq {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $story() {
                    let (_namespace, bus) = RabbitNamespace::connect().await;
                    super::$story(bus).await;
                }
            )*
        }
    };
}

conformance!(
    a_sent_message_is_received_once_with_id_kind_payload_and_headers_intact,
    competing_consumers_each_receive_a_distinct_message,
    an_unacked_delivery_is_redelivered_after_its_subscription_is_dropped,
    a_delivery_dropped_without_settling_is_redelivered,
    retry_redelivers_with_the_attempt_incremented_then_dead_letters_after_max_attempts,
    dead_letter_sends_a_message_straight_to_the_dead_letter_queue,
    broadcast_reaches_every_subscriber,
    a_broadcast_without_subscribers_is_dropped,
    queue_depth_counts_ready_messages,
    a_deleted_queue_loses_its_messages_ends_its_consumers_and_comes_back_empty,
    health_reports_a_live_bus,
);
