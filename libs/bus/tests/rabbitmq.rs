//! RabbitMQ-only behaviour that has no in-process counterpart: recovering from broker refusals.
//!
//! Needs a broker (`CUTTLE_TEST_AMQP_URL`, default `amqp://guest:guest@127.0.0.1:5672/%2f`) and
//! fails, rather than skips, when it is unreachable.

#![allow(clippy::unwrap_used, reason = "test code: unwrap is how a test fails")]

use std::time::Duration;

use cuttle_bus::{Bus, Message, QueueSpec, RabbitMqBus};
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;

const PATIENCE: Duration = Duration::from_secs(15);

fn amqp_url() -> String {
    std::env::var("CUTTLE_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_recovers_the_publishing_channel_after_the_broker_refused_a_declaration() {
    let prefix = format!("cuttle-test-{}.", uuid::Uuid::new_v4());
    let queue = QueueSpec::new("step.jobs");
    let queue_name = format!("{prefix}step.jobs");
    let dead_name = format!("{queue_name}.dead");
    let bus = RabbitMqBus::connect(&amqp_url(), &prefix)
        .await
        .unwrap_or_else(|error| panic!("this test needs RabbitMQ (CUTTLE_TEST_AMQP_URL): {error}"));
    // Someone else owns a transient queue under our name, so our durable declaration is refused
    // and the broker closes the publishing channel.
    let intruder = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let intruder_channel = intruder.create_channel().await.unwrap();
    intruder_channel
        .queue_declare(
            queue_name.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    let refused = bus.send(&queue, Message::new("step.run", Vec::new())).await;
    assert!(
        refused.is_err(),
        "declaring over a transient queue must fail"
    );

    intruder_channel
        .queue_delete(queue_name.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    let sent = Message::new("step.run", b"after recovery".to_vec());
    bus.send(&queue, sent.clone()).await.unwrap();
    let mut subscription = bus.consume(&queue).await.unwrap();
    let delivery = tokio::time::timeout(PATIENCE, subscription.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(delivery.message, sent);
    delivery.ack().await.unwrap();
    bus.health().await.unwrap();

    drop(subscription);
    bus.close().await.unwrap();
    // Cleanup only: a broker busy with the rest of the suite may refuse it, and that is not
    // what this test is about.
    for name in [queue_name, dead_name] {
        if let Err(err) = intruder_channel
            .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
            .await
        {
            eprintln!("could not delete test queue {name}: {err}");
        }
    }
    if let Err(err) = intruder.close(200, "done".into()).await {
        eprintln!("could not close the test connection: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_bus_ends_its_subscriptions_and_refuses_later_calls() {
    let prefix = format!("cuttle-test-{}.", uuid::Uuid::new_v4());
    let bus = RabbitMqBus::connect(&amqp_url(), &prefix)
        .await
        .unwrap_or_else(|error| panic!("this test needs RabbitMQ (CUTTLE_TEST_AMQP_URL): {error}"));
    let mut subscription = bus.subscribe("deployments.cancelled").await.unwrap();

    bus.close().await.unwrap();

    let ended = tokio::time::timeout(PATIENCE, subscription.next())
        .await
        .unwrap();
    assert!(ended.is_none());
    assert!(bus.health().await.is_err());
    // The fanout exchange is durable; remove it so test runs leave nothing behind.
    let cleaner = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = cleaner.create_channel().await.unwrap();
    channel
        .exchange_delete(
            format!("{prefix}deployments.cancelled").as_str().into(),
            lapin::options::ExchangeDeleteOptions::default(),
        )
        .await
        .unwrap();
    cleaner.close(200, "done".into()).await.unwrap();
}
