//! The orchestrator: owns the server-task lifecycle. It plans a queued deployment into jobs,
//! dispatches them to workers one step at a time, records what workers report, stops work on
//! cancel, and fails work whose worker went silent, so no task is ever left Executing.
//!
//! It keeps no state in memory: every decision is a transaction on the task's row (locked on
//! PostgreSQL), so any number of replicas can consume the same queues, and a killed replica's
//! unacknowledged messages simply go to another one.

pub mod execution;
pub mod health_schedule;
pub mod plan;
pub mod reaper;
pub mod variables;

use cuttle_bus::{Bus, Delivery, QueueSpec};
use cuttle_cache::Cache;
use cuttle_contracts::{OrchestratorCommand, WorkerEvent, queues};
use cuttle_platform::OrchestratorConfig;
use cuttle_platform::outbox::RelayWaker;
use cuttle_store::Store;
use futures::FutureExt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// Everything the orchestrator's handlers need.
#[derive(Clone)]
pub struct Orchestrator {
    /// Database.
    pub store: Store,
    /// Bus: commands in, jobs out, worker events in.
    pub bus: Arc<dyn Bus>,
    /// Cache, for cancel markers.
    pub cache: Arc<dyn Cache>,
    /// Supervision settings.
    pub config: OrchestratorConfig,
    /// This node's name, recorded on tasks it starts.
    pub node_name: String,
    /// Wakes this process's outbox relay after a commit.
    pub relay: RelayWaker,
}

impl Orchestrator {
    /// Runs the command and event consumers, the reaper and an outbox relay until `shutdown`.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |rx: tokio::sync::watch::Receiver<bool>| cuttle_platform::wait_for(rx);
        let mut handles = Vec::new();
        handles.push(tokio::spawn(cuttle_platform::outbox::run_relay(
            self.store.clone(),
            self.bus.clone(),
            self.relay.clone(),
            stopped(stop_rx.clone()),
        )));
        let commands = self.clone();
        handles.push(tokio::spawn(consume_loop(
            commands.bus.clone(),
            QueueSpec::new(queues::ORCHESTRATOR_COMMANDS),
            stopped(stop_rx.clone()),
            move |delivery| {
                let orchestrator = commands.clone();
                async move { orchestrator.handle_command(delivery).await }
            },
        )));
        let events = self.clone();
        handles.push(tokio::spawn(
            events.consume_events(stopped(stop_rx.clone())),
        ));
        let reaper = self.clone();
        handles.push(tokio::spawn(async move {
            reaper.run_reaper(stopped(stop_rx)).await
        }));
        tracing::info!(node = %self.node_name, "orchestrator started");
        shutdown.await;
        if stop_tx.send(true).is_err() {
            tracing::debug!("orchestrator loops already stopped");
        }
        for handle in handles {
            if let Err(err) = handle.await {
                tracing::error!(error = %err, "an orchestrator loop ended abnormally");
            }
        }
        tracing::info!("orchestrator stopped");
        Ok(())
    }

    async fn handle_command(&self, delivery: Delivery) {
        let command: OrchestratorCommand = match delivery.message.decode() {
            Ok(command) => command,
            Err(err) => {
                let reason = format!(
                    "unreadable orchestrator command {}: {err}",
                    delivery.message.kind
                );
                settle(delivery.dead_letter(&reason).await, "dead-letter");
                return;
            }
        };
        let span = tracing::info_span!("orchestrator.command", kind = command.kind());
        cuttle_telemetry::set_parent_from_headers(&span, &delivery.message.headers);
        let result = async {
            match &command {
                OrchestratorCommand::TaskQueued { task_id } => self.start_task(task_id).await,
                OrchestratorCommand::CancelRequested { task_id } => self.cancel_task(task_id).await,
            }
        }
        .instrument(span)
        .await;
        finish(delivery, result).await;
    }

    /// Consumes worker events until `stop`, in batches: whatever is already waiting (up to
    /// [`EVENT_BATCH`]) is applied with one transaction per task (`apply_events`), so a fan-out
    /// to many targets is not one commit per event. Re-subscribes after a lost connection.
    async fn consume_events(self, stop: impl Future<Output = ()> + Send) {
        let queue = QueueSpec {
            prefetch: EVENT_BATCH,
            ..QueueSpec::new(queues::ORCHESTRATOR_EVENTS)
        };
        let bus = self.bus.clone();
        consume_batches(bus, queue, usize::from(EVENT_BATCH), stop, move |batch| {
            let orchestrator = self.clone();
            async move { orchestrator.handle_events(batch).await }
        })
        .await;
    }

    /// Applies a batch of worker events, grouped by task in arrival order. A group that fails is
    /// applied again one event at a time, so one bad event retries alone.
    async fn handle_events(&self, batch: Vec<Delivery>) {
        let mut groups: Vec<(String, Vec<(Delivery, WorkerEvent)>)> = Vec::new();
        for delivery in batch {
            let event: WorkerEvent = match delivery.message.decode() {
                Ok(event) => event,
                Err(err) => {
                    let reason =
                        format!("unreadable worker event {}: {err}", delivery.message.kind);
                    settle(delivery.dead_letter(&reason).await, "dead-letter");
                    continue;
                }
            };
            let task_id = event.task_id().to_owned();
            match groups.iter_mut().find(|(id, _)| *id == task_id) {
                Some((_, group)) => group.push((delivery, event)),
                None => groups.push((task_id, vec![(delivery, event)])),
            }
        }
        for (task_id, group) in groups {
            if group.len() == 1 {
                for (delivery, event) in group {
                    self.handle_event(delivery, event).await;
                }
                continue;
            }
            // Info, like the command span: a span disabled by the log filter carries no trace
            // context, and the next step's job is dispatched from inside this one.
            let span = tracing::info_span!("orchestrator.events", task.id = %task_id, events = group.len());
            if let Some((delivery, _)) = group.last() {
                cuttle_telemetry::set_parent_from_headers(&span, &delivery.message.headers);
            }
            let events = group.iter().map(|(_, event)| event.clone()).collect();
            match self.apply_events(&task_id, events).instrument(span).await {
                Ok(()) => {
                    for (delivery, _) in group {
                        settle(delivery.ack().await, "ack");
                    }
                }
                Err(err) => {
                    tracing::info!(
                        error = format!("{err:#}"),
                        "a batch of events failed; applying them one by one"
                    );
                    for (delivery, event) in group {
                        self.handle_event(delivery, event).await;
                    }
                }
            }
        }
    }

    async fn handle_event(&self, delivery: Delivery, event: WorkerEvent) {
        // Info, like the command span: a span disabled by the log filter carries no trace context,
        // and the next step's job is dispatched from inside this one.
        let span = tracing::info_span!("orchestrator.event", kind = event.kind(), task.id = %event.task_id());
        cuttle_telemetry::set_parent_from_headers(&span, &delivery.message.headers);
        let result = self.apply_event(event).instrument(span).await;
        finish(delivery, result).await;
    }
}

/// Most worker events applied together.
const EVENT_BATCH: u16 = 64;

/// Acks handled messages; a failed handler retries with backoff (then dead-letters).
async fn finish(delivery: Delivery, result: anyhow::Result<()>) {
    match result {
        Ok(()) => settle(delivery.ack().await, "ack"),
        Err(err) => {
            tracing::warn!(
                error = format!("{err:#}"),
                attempt = delivery.attempt,
                "handling a message failed; it will be retried"
            );
            settle(delivery.retry(&format!("{err:#}")).await, "retry");
        }
    }
}

fn settle(result: Result<(), cuttle_bus::BusError>, what: &str) {
    if let Err(err) = result {
        // The broker redelivers an unsettled message, and handlers are idempotent.
        tracing::warn!(error = %err, "could not {what} a message; it will be redelivered");
    }
}

/// Consumes `queue` until `stop`, calling `handle` for each delivery in order. Re-subscribes
/// after a lost connection.
pub async fn consume_loop<F, Fut>(
    bus: Arc<dyn Bus>,
    queue: QueueSpec,
    stop: impl Future<Output = ()> + Send,
    handle: F,
) where
    F: Fn(Delivery) -> Fut + Send,
    Fut: Future<Output = ()> + Send,
{
    consume_batches(bus, queue, 1, stop, move |batch: Vec<Delivery>| {
        let delivery = batch.into_iter().next();
        let handled = delivery.map(&handle);
        async move {
            if let Some(handled) = handled {
                handled.await;
            }
        }
    })
    .await;
}

/// Consumes `queue` until `stop`, calling `handle` with each delivery plus whatever else has
/// already arrived (at most `most` in all; a batch never waits for more). Re-subscribes after a
/// lost connection.
async fn consume_batches<F, Fut>(
    bus: Arc<dyn Bus>,
    queue: QueueSpec,
    most: usize,
    stop: impl Future<Output = ()> + Send,
    handle: F,
) where
    F: Fn(Vec<Delivery>) -> Fut + Send,
    Fut: Future<Output = ()> + Send,
{
    tokio::pin!(stop);
    loop {
        let mut subscription = match bus.consume(&queue).await {
            Ok(subscription) => subscription,
            Err(err) => {
                tracing::warn!(queue = %queue.name, error = %err, "cannot consume; retrying in 1 s");
                tokio::select! {
                    () = &mut stop => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            let first = tokio::select! {
                () = &mut stop => return,
                next = subscription.next() => match next {
                    Some(delivery) => delivery,
                    None => break,
                },
            };
            let mut batch = vec![first];
            while batch.len() < most {
                match subscription.next().now_or_never() {
                    Some(Some(delivery)) => batch.push(delivery),
                    _ => break,
                }
            }
            handle(batch).await;
        }
        tracing::warn!(queue = %queue.name, "subscription ended; consuming again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
