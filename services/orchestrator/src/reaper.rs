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

impl Orchestrator {
    /// Sweeps every `reaper_interval_ms` until `stop`.
    pub async fn run_reaper(&self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let interval = Duration::from_millis(self.config.reaper_interval_ms.max(100));
        loop {
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
        let unclaimed = tasks::stale_jobs(
            conn,
            job_status::DISPATCHED,
            task_job::Column::DispatchedAt,
            now - ChronoDuration::seconds(start_timeout),
            100,
        )
        .await?;
        for job in unclaimed {
            let reason = format!(
                "No worker started this step within {start_timeout} seconds. Check that a worker is running and connected."
            );
            self.isolated(
                &job.job_id,
                self.fail_stale_job(&job.job_id, job_status::DISPATCHED, &reason),
            )
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
            cuttle_platform::outbox::enqueue(
                &txn,
                queues::ORCHESTRATOR_COMMANDS,
                command.kind(),
                &command,
            )
            .await?;
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
