//! The reaper: the periodic sweep that keeps the "never stuck" promise. It fails jobs whose
//! worker stopped sending heartbeats (killed, partitioned) or that no worker started, re-sends
//! `TaskQueued` for tasks still queued (a space's queue restarted, a message dead-lettered), ends
//! cancelling tasks with nothing left running, and refreshes the task gauges.

use crate::Orchestrator;
use chrono::{Duration as ChronoDuration, Utc};
use cuttle_contracts::{OrchestratorCommand, queues};
use cuttle_domain::TaskState;
use cuttle_store::TransactionTrait;
use cuttle_store::entities::task_job;
use cuttle_store::tasks::{self, job_status};
use std::future::Future;
use std::time::Duration;

/// How long a task may sit in Queued or Cancelling before the reaper nudges it.
const NUDGE_AFTER_SECS: i64 = 10;
/// How often the polling agents' trust list is rewritten from the database (the api also
/// writes it after every machine change; this heals a flushed cache).
const TRUST_REFRESH: Duration = Duration::from_secs(30);

impl Orchestrator {
    /// Sweeps every `reaper_interval_ms` until `stop`.
    pub async fn run_reaper(&self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let interval = Duration::from_millis(self.config.reaper_interval_ms.max(100));
        let mut trust_published: Option<std::time::Instant> = None;
        let mut health_swept: Option<std::time::Instant> = None;
        loop {
            if health_swept.is_none_or(|at| at.elapsed() >= crate::health_schedule::SWEEP_EVERY) {
                health_swept = Some(std::time::Instant::now());
                match self.schedule_health_checks().await {
                    Ok(0) => {}
                    Ok(queued) => tracing::info!(tasks = queued, "queued periodic health checks"),
                    Err(err) => tracing::warn!(
                        error = format!("{err:#}"),
                        "could not schedule periodic health checks; trying again shortly"
                    ),
                }
            }
            if trust_published.is_none_or(|at| at.elapsed() >= TRUST_REFRESH) {
                match cuttle_platform::agent_trust::publish(self.store.conn(), self.cache.as_ref())
                    .await
                {
                    Ok(_) => trust_published = Some(std::time::Instant::now()),
                    Err(err) => {
                        tracing::warn!(
                            error = format!("{err:#}"),
                            "could not publish the polling agents' trust list"
                        )
                    }
                }
            }
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(interval) => {}
            }
            if let Err(err) = self.sweep().await {
                tracing::warn!(
                    error = format!("{err:#}"),
                    "reaper sweep failed; it runs again at the next interval"
                );
            }
        }
    }

    /// One sweep.
    pub async fn sweep(&self) -> anyhow::Result<()> {
        let now = Utc::now();
        let conn = self.store.conn();
        let heartbeat_timeout = self.config.heartbeat_timeout_secs as i64;
        let silent = tasks::stale_jobs(
            conn,
            job_status::RUNNING,
            task_job::Column::HeartbeatAt,
            now - ChronoDuration::seconds(heartbeat_timeout),
            100,
        )
        .await?;
        for job in silent {
            let worker = job.worker.clone().unwrap_or_else(|| "unknown".into());
            let reason = format!(
                "The worker '{worker}' running this step stopped responding: no heartbeat for {heartbeat_timeout} seconds. The step was failed; it may have been killed or lost its connection."
            );
            self.isolated(
                &job.job_id,
                self.fail_stale_job(&job.job_id, job_status::RUNNING, &reason),
            )
            .await;
        }
        let start_timeout = self.config.start_timeout_secs as i64;
        let pickup_timeout = self.config.polling_pickup_timeout_secs as i64;
        let unclaimed = tasks::stale_jobs(
            conn,
            job_status::DISPATCHED,
            task_job::Column::DispatchedAt,
            now - ChronoDuration::seconds(start_timeout.min(pickup_timeout)),
            100,
        )
        .await?;
        for job in unclaimed {
            let polling_target = cuttle_contracts::StepJob::target_of(&job.payload)
                .filter(|target| target.communication_style == "TentacleActive");
            let (timeout, reason) = match polling_target {
                Some(target) => (
                    pickup_timeout,
                    format!(
                        "The polling agent of deployment target '{}' did not connect to a worker within {pickup_timeout} seconds, so this step never started. Check that its cuttle-agent is running and can reach the server's polling port.",
                        target.name
                    ),
                ),
                None => (
                    start_timeout,
                    format!(
                        "No worker started this step within {start_timeout} seconds. Check that a worker is running and connected."
                    ),
                ),
            };
            if job
                .dispatched_at
                .is_some_and(|at| at > now - ChronoDuration::seconds(timeout))
            {
                continue;
            }
            self.isolated(&job.job_id, self.fail_unclaimed_job(&job.job_id, &reason))
                .await;
        }
        let nudge_before = now - ChronoDuration::seconds(NUDGE_AFTER_SECS);
        for task in tasks::tasks_in_state_since(conn, TaskState::Queued, nudge_before, 100).await? {
            self.isolated(&task.id, self.nudge_queued(&task.id)).await;
        }
        for task in
            tasks::tasks_in_state_since(conn, TaskState::Cancelling, nudge_before, 100).await?
        {
            self.isolated(&task.id, self.finish_cancelling(&task.id))
                .await;
        }
        let metrics = cuttle_telemetry::metrics();
        metrics
            .tasks_queued
            .set(tasks::count_in_state(conn, TaskState::Queued).await? as i64);
        metrics
            .tasks_executing
            .set(tasks::count_in_state(conn, TaskState::Executing).await? as i64);
        for queue in [
            queues::WORKER_JOBS,
            queues::ORCHESTRATOR_COMMANDS,
            queues::ORCHESTRATOR_EVENTS,
        ] {
            match self
                .bus
                .queue_depth(&cuttle_bus::QueueSpec::new(queue))
                .await
            {
                Ok(depth) => metrics
                    .queue_depth
                    .with_label_values(&[queue])
                    .set(depth as i64),
                Err(err) => tracing::debug!(queue, error = %err, "queue depth unavailable"),
            }
        }
        Ok(())
    }

    /// Runs one item of a sweep; its failure is logged and does not stop the other items.
    /// Fails a job nobody started, after claiming it in the cache as a worker would: the job's
    /// message may still wait on a queue (a polling agent's, until it reconnects), and the claim
    /// makes the worker that finally receives it drop it instead of running a step the task has
    /// given up on. A job a worker claimed first is left alone: its start is on the way.
    async fn fail_unclaimed_job(&self, job_id: &str, reason: &str) -> anyhow::Result<()> {
        let claimed = self
            .cache
            .set_if_absent(
                &cuttle_contracts::job_claim_key(job_id),
                b"orchestrator: not started in time",
                Some(Duration::from_secs(86_400)),
            )
            .await?;
        if !claimed {
            return Ok(());
        }
        self.fail_stale_job(job_id, job_status::DISPATCHED, reason)
            .await
    }

    async fn isolated(&self, id: &str, work: impl Future<Output = anyhow::Result<()>>) {
        if let Err(err) = work.await {
            tracing::warn!(
                item = id,
                error = format!("{err:#}"),
                "reaper could not handle an item; it is retried at the next sweep"
            );
        }
    }

    /// Re-sends `TaskQueued` for a task still queued (its message was dead-lettered, or its
    /// space's queue was stopped and started again).
    async fn nudge_queued(&self, task_id: &str) -> anyhow::Result<()> {
        let txn = self.store.conn().begin().await?;
        if let Some(task) = tasks::lock_task(&txn, task_id)
            .await?
            .filter(|t| t.state == TaskState::Queued.as_str())
        {
            let command = OrchestratorCommand::TaskQueued {
                task_id: task.id.clone(),
            };
            cuttle_platform::outbox::enqueue_command(&txn, &command).await?;
            tasks::save_task(&txn, &task).await?;
        }
        txn.commit().await?;
        self.relay.wake();
        Ok(())
    }

    /// Ends a cancelling task whose jobs have all stopped, and repeats the cancel broadcast for
    /// workers that missed it.
    async fn finish_cancelling(&self, task_id: &str) -> anyhow::Result<()> {
        let txn = self.store.conn().begin().await?;
        let Some(mut task) = tasks::lock_task(&txn, task_id)
            .await?
            .filter(|t| t.state == TaskState::Cancelling.as_str())
        else {
            txn.commit().await?;
            return Ok(());
        };
        let after = self.advance(&txn, &mut task).await?;
        tasks::save_task(&txn, &task).await?;
        txn.commit().await?;
        // Nothing to dispatch while cancelling; the broadcast is what matters here.
        drop(after);
        self.broadcast_cancel(task_id).await;
        Ok(())
    }
}
