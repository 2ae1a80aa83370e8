//! The worker: consumes step jobs, runs them, and reports back over the bus. It keeps no
//! database connection: everything it knows arrives in the job, and everything it learns leaves
//! as an event (started, heartbeat, log lines, finished). Package files are read from the
//! feed's blob store by the key and hash the job carries (see [`package`]).
//!
//! A job is claimed in the cache before it runs, so a redelivered job never runs twice; the job
//! message is acknowledged once the orchestrator has been told it started. Cancellation arrives
//! by broadcast, and as a cache marker checked before start and at every heartbeat.

pub mod artifacts;
pub mod package;
pub mod polling;
pub mod script;
pub mod service_messages;
pub mod target;
pub mod variables;

use cuttle_blob::BlobStore;
use cuttle_bus::{Bus, Delivery, Message, QueueSpec};
use cuttle_cache::Cache;
use cuttle_contracts::{
    CancelTask, JobOutcome, JobWork, StepJob, WorkerEvent, cancel_marker_key, job_claim_key, queues,
};
use cuttle_platform::WorkerConfig;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Cancel tokens of running jobs: task id to (job id, token).
type RunningJobs = HashMap<String, Vec<(String, CancellationToken)>>;

/// A worker process (or the worker part of `cuttle server`).
#[derive(Clone)]
pub struct Worker {
    /// Bus: jobs in, events out.
    pub bus: Arc<dyn Bus>,
    /// Cache: job claims and cancel markers.
    pub cache: Arc<dyn Cache>,
    /// The package feed's blob store, read to fetch packages.
    pub blob: Arc<dyn BlobStore>,
    /// The server certificate presented to agents (the one they pinned at registration).
    pub identity: Option<Arc<cuttle_agent_link::WorkerIdentity>>,
    /// Settings.
    pub config: WorkerConfig,
    /// Name in task logs.
    pub name: String,
    /// Where job directories are created.
    pub work_dir: PathBuf,
    /// Polling agents connected to this worker.
    pub polling: polling::PollingAgents,
    /// Opens jobs' sensitive variables and seals sensitive output variables; `None` without a
    /// master key (jobs with sensitive values then fail with that reason).
    pub keyring: Option<Arc<cuttle_secrets::Keyring>>,
    running: Arc<Mutex<RunningJobs>>,
}

impl Worker {
    /// A worker named `name` writing scripts under `work_dir`.
    pub fn new(
        bus: Arc<dyn Bus>,
        cache: Arc<dyn Cache>,
        blob: Arc<dyn BlobStore>,
        identity: Option<Arc<cuttle_agent_link::WorkerIdentity>>,
        config: WorkerConfig,
        name: String,
        work_dir: PathBuf,
    ) -> Self {
        Worker {
            bus,
            cache,
            blob,
            identity,
            config,
            name,
            work_dir,
            polling: polling::PollingAgents::default(),
            keyring: None,
            running: Arc::default(),
        }
    }

    /// The same worker with the master key for sensitive values.
    pub fn with_keyring(mut self, keyring: Option<Arc<cuttle_secrets::Keyring>>) -> Self {
        self.keyring = keyring;
        self
    }

    /// Consumes jobs until `shutdown`; running jobs are canceled on shutdown.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.work_dir)?;
        let orphans = script::stop_orphans(&self.work_dir);
        if orphans > 0 {
            tracing::warn!(
                count = orphans,
                "stopped scripts left running by workers that died"
            );
        }
        let polling = self.bind_polling().await?;
        let stop = CancellationToken::new();
        let listener = tokio::spawn(self.clone().listen_for_cancels(stop.clone()));
        let consumer = tokio::spawn(self.clone().consume(stop.clone()));
        let mut handles = vec![listener, consumer];
        if let Some((comms, trusted, subscriptions)) = polling {
            handles.push(tokio::spawn(self.clone().serve_polling(
                comms,
                trusted,
                subscriptions,
                stop.clone(),
            )));
        }
        tracing::info!(worker = %self.name, work_dir = %self.work_dir.display(), "worker started");
        shutdown.await;
        stop.cancel();
        for handle in handles {
            if let Err(err) = handle.await {
                tracing::error!(error = %err, "a worker loop ended abnormally");
            }
        }
        tracing::info!(worker = %self.name, "worker stopped");
        Ok(())
    }

    async fn consume(self, stop: CancellationToken) {
        let queue = QueueSpec::new(queues::WORKER_JOBS);
        let slots = Arc::new(Semaphore::new(usize::from(self.config.concurrency)));
        let mut in_flight = tokio::task::JoinSet::new();
        'outer: loop {
            let mut subscription = match self.bus.consume(&queue).await {
                Ok(subscription) => subscription,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot consume jobs; retrying in 1 s");
                    tokio::select! {
                        () = stop.cancelled() => break 'outer,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            loop {
                let permit = tokio::select! {
                    () = stop.cancelled() => break 'outer,
                    permit = slots.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break 'outer,
                    },
                };
                let delivery = tokio::select! {
                    () = stop.cancelled() => break 'outer,
                    next = subscription.next() => match next {
                        Some(delivery) => delivery,
                        None => break,
                    },
                };
                let worker = self.clone();
                let stop = stop.clone();
                in_flight.spawn(async move {
                    worker.handle(delivery, stop).await;
                    drop(permit);
                });
                while in_flight.try_join_next().is_some() {}
            }
            tracing::warn!("job subscription ended; consuming again");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Running scripts were told to stop through `stop`; wait for them to report.
        while in_flight.join_next().await.is_some() {}
    }

    async fn listen_for_cancels(self, stop: CancellationToken) {
        loop {
            let mut subscription = match self.bus.subscribe(queues::WORKER_CANCEL_TOPIC).await {
                Ok(subscription) => subscription,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot subscribe to cancellations; retrying in 1 s");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            loop {
                let delivery = tokio::select! {
                    () = stop.cancelled() => return,
                    next = subscription.next() => match next { Some(d) => d, None => break },
                };
                match delivery.message.decode::<CancelTask>() {
                    Ok(cancel) => self.cancel_local(&cancel.task_id, cancel.job_id.as_deref()),
                    Err(err) => {
                        tracing::warn!(error = %err, "ignoring an unreadable cancel message")
                    }
                }
                if let Err(err) = delivery.ack().await {
                    tracing::debug!(error = %err, "could not ack a cancel broadcast");
                }
            }
        }
    }

    fn cancel_local(&self, task_id: &str, job_id: Option<&str>) {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        for (job, token) in running.get(task_id).into_iter().flatten() {
            if job_id.is_none_or(|only| only == job) {
                token.cancel();
            }
        }
    }

    async fn handle(&self, delivery: Delivery, stop: CancellationToken) {
        let job: StepJob = match delivery.message.decode() {
            Ok(job) => job,
            Err(err) => {
                let reason = format!("unreadable step job: {err}");
                if let Err(err) = delivery.dead_letter(&reason).await {
                    tracing::warn!(error = %err, "could not dead-letter an unreadable job");
                }
                return;
            }
        };
        let span = tracing::info_span!("worker.job", task.id = %job.task_id, job.id = %job.job_id, step = %job.step_name);
        cuttle_telemetry::set_parent_from_headers(&span, &delivery.message.headers);
        self.run_job(job, delivery, stop).instrument(span).await;
    }

    async fn run_job(&self, job: StepJob, delivery: Delivery, stop: CancellationToken) {
        match self.cache.get(&cancel_marker_key(&job.task_id)).await {
            Ok(Some(_)) => {
                // Canceled while queued: the orchestrator already marked the job canceled.
                settle(delivery.ack().await);
                return;
            }
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the cancel marker; running the job")
            }
        }
        match self
            .cache
            .set_if_absent(
                &job_claim_key(&job.job_id),
                self.name.as_bytes(),
                Some(Duration::from_secs(86_400)),
            )
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!("job already claimed by another worker; dropping this delivery");
                settle(delivery.ack().await);
                return;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot claim the job; it will be retried");
                settle(
                    delivery
                        .retry("the cache was unavailable to claim the job")
                        .await,
                );
                return;
            }
        }
        let started = WorkerEvent::JobStarted {
            task_id: job.task_id.clone(),
            job_id: job.job_id.clone(),
            worker: self.name.clone(),
        };
        if let Err(err) = self.report(&started).await {
            tracing::warn!(error = %err, "cannot report the job start; releasing it for a retry");
            if let Err(err) = self.cache.delete(&job_claim_key(&job.job_id)).await {
                tracing::warn!(error = %err, "could not release the job claim; the orchestrator's start timeout will fail the job");
            }
            settle(
                delivery
                    .retry("the start of the job could not be reported")
                    .await,
            );
            return;
        }
        // The orchestrator now owns the outcome: from here a lost worker is caught by heartbeats.
        settle(delivery.ack().await);

        let cancel = stop.child_token();
        self.register(&job.task_id, &job.job_id, cancel.clone());
        // In the job's span, so heartbeats carry the deployment's trace context like every other
        // event of the job.
        let heartbeat = tokio::spawn(
            self.clone()
                .heartbeat(job.task_id.clone(), job.job_id.clone(), cancel.clone())
                .in_current_span(),
        );
        let (((outcome, exit_code), output_variables), artifacts) =
            self.execute(&job, cancel.clone()).await;
        heartbeat.abort();
        self.unregister(&job.task_id, &job.job_id);
        // Stopped because this worker is shutting down, not because the task was canceled: the
        // step did not complete, so it failed (a Canceled step would let later steps run).
        let outcome = match outcome {
            JobOutcome::Canceled if stop.is_cancelled() => JobOutcome::Failed {
                reason: format!(
                    "The worker '{}' shut down while this step was running.",
                    self.name
                ),
            },
            other => other,
        };
        let finished = WorkerEvent::JobFinished {
            task_id: job.task_id.clone(),
            job_id: job.job_id.clone(),
            outcome,
            exit_code,
            output_variables,
            artifacts,
        };
        for attempt in 1..=5u32 {
            match self.report(&finished).await {
                Ok(()) => return,
                Err(err) => {
                    tracing::warn!(error = %err, attempt, "cannot report the job's end; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
            }
        }
        tracing::error!(
            "gave up reporting the job's end; the orchestrator will fail it when heartbeats stop"
        );
    }

    /// Runs the job's work in its own directory (removed afterwards), streaming its output.
    async fn execute(
        &self,
        job: &StepJob,
        cancel: CancellationToken,
    ) -> (package::JobEnd, Vec<cuttle_contracts::JobArtifact>) {
        let sink = script::BusLogSink {
            bus: self.bus.clone(),
            task_id: job.task_id.clone(),
            job_id: job.job_id.clone(),
        };
        let variables = match variables::JobVariables::open(&job.variables, self.keyring.as_deref())
        {
            Ok(variables) => variables,
            Err(reason) => {
                let log = script::JobLog::start(sink);
                log.line(cuttle_domain::LogCategory::Error, reason.clone())
                    .await;
                log.finish().await;
                return ((script::failed(reason), BTreeMap::new()), Vec::new());
            }
        };
        let log = script::JobLog::start_filtered(
            sink,
            service_messages::LogFilter::new(variables.sensitive_values()),
        );
        let context = script::ScriptContext {
            worker_name: self.name.clone(),
            kill_grace: Duration::from_secs(self.config.kill_grace_secs),
            cancel,
        };
        let job_dir = self.work_dir.join(&job.job_id);
        let jobs = package::PackageJobs {
            blob: self.blob.as_ref(),
            work_dir: &self.work_dir,
            job_dir: &job_dir,
            job_id: &job.job_id,
            context: &context,
            log: &log,
            variables: &variables,
        };
        let no_outputs = BTreeMap::new;
        let mut session = None;
        let end = match (&job.work, &job.target) {
            (JobWork::HealthCheck, Some(target)) => {
                target::health_check(self.reach(), target, &context, &log).await
            }
            (work, Some(target)) => {
                let plain = matches!(work, JobWork::Script { packages, .. } if packages.is_empty());
                let opened =
                    target::AgentSession::open(self.reach(), target, &context, &log, !plain).await;
                match opened {
                    Ok(opened) => {
                        let agent: &target::AgentSession<'_> = session.insert(opened);
                        match work {
                            JobWork::Script { syntax, body, .. } if plain => (
                                agent
                                    .run_body(
                                        &jobs,
                                        None,
                                        *syntax,
                                        variables.inline_script(*syntax, body),
                                        &[],
                                    )
                                    .await,
                                no_outputs(),
                            ),
                            _ => {
                                self.execute_on(&package::Host::Agent(agent), work, &jobs)
                                    .await
                            }
                        }
                    }
                    Err(ended) => (ended, no_outputs()),
                }
            }
            (work, None) => self.execute_on(&package::Host::Here, work, &jobs).await,
        };
        // Before the job directory goes: the files may be in it. On an agent, its files stay
        // until the job is released.
        let requests = log.artifacts().await;
        let artifacts = match &session {
            Some(agent) => {
                let stored =
                    artifacts::collect_from_agent(self.blob.as_ref(), job, requests, &log, agent)
                        .await;
                agent.release(&jobs).await;
                stored
            }
            None => artifacts::collect(self.blob.as_ref(), job, requests, &log).await,
        };
        let said = log.finish().await;
        script::remove_job_dir(&job_dir).await;
        (self.with_said(end, said), artifacts)
    }

    /// Adds what the scripts said to the job's end: their output variables (sensitive ones
    /// sealed, so they are never stored or sent in clear text) and `fail_step`'s message.
    fn with_said(&self, end: package::JobEnd, said: service_messages::Said) -> package::JobEnd {
        let ((mut outcome, code), mut outputs) = end;
        if let (JobOutcome::Failed { reason }, Some(message)) = (&mut outcome, said.result_message)
        {
            *reason = message;
        }
        for (name, output) in said.outputs {
            // A plain value that looks sealed is sealed too, so nothing reads it as sealed.
            let seal = output.sensitive || cuttle_secrets::Keyring::is_sealed(&output.value);
            let value = if seal {
                let sealed = self
                    .keyring
                    .as_deref()
                    .ok_or("this worker has no master key (secrets.master_key) to protect it")
                    .and_then(|keyring| {
                        keyring
                            .seal(&output.value)
                            .map_err(|_| "it could not be encrypted")
                    });
                match sealed {
                    Ok(sealed) => sealed,
                    Err(why) => {
                        let reason = format!(
                            "The script set the sensitive output variable '{name}', and {why}."
                        );
                        return ((JobOutcome::Failed { reason }, code), outputs);
                    }
                }
            } else {
                output.value
            };
            outputs.insert(name, value);
        }
        ((outcome, code), outputs)
    }

    /// Runs work on `host`: this worker itself, or an agent (health checks and scripts without
    /// packages on agents are handled before).
    async fn execute_on(
        &self,
        host: &package::Host<'_>,
        work: &JobWork,
        jobs: &package::PackageJobs<'_>,
    ) -> package::JobEnd {
        let no_outputs = BTreeMap::new;
        match work {
            JobWork::Script {
                syntax,
                body,
                packages,
                file_substitution,
            } => (
                jobs.inline_script(host, *syntax, body, packages, file_substitution)
                    .await,
                no_outputs(),
            ),
            JobWork::PackageScript {
                syntax,
                package,
                file_name,
                parameters,
                packages,
                file_substitution,
            } => (
                jobs.package_script(
                    host,
                    *syntax,
                    package,
                    file_name,
                    parameters,
                    packages,
                    file_substitution,
                )
                .await,
                no_outputs(),
            ),
            JobWork::DeployPackage {
                package,
                environment_name,
                file_substitution,
            } => {
                jobs.deploy(host, package, environment_name, file_substitution)
                    .await
            }
            JobWork::HealthCheck => (
                script::failed("A health check needs a deployment target.".into()),
                no_outputs(),
            ),
        }
    }

    /// How this worker reaches agents.
    fn reach(&self) -> target::Reach<'_> {
        target::Reach {
            identity: self.identity.as_deref(),
            polling: &self.polling,
        }
    }

    fn register(&self, task_id: &str, job_id: &str, token: CancellationToken) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running
            .entry(task_id.to_owned())
            .or_default()
            .push((job_id.to_owned(), token));
    }

    fn unregister(&self, task_id: &str, job_id: &str) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(jobs) = running.get_mut(task_id) {
            jobs.retain(|(job, _)| job != job_id);
            if jobs.is_empty() {
                running.remove(task_id);
            }
        }
    }

    /// Jobs running now, for tests and metrics.
    pub fn running_jobs(&self) -> usize {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(Vec::len)
            .sum()
    }

    async fn heartbeat(self, task_id: String, job_id: String, cancel: CancellationToken) {
        let period = Duration::from_millis(self.config.heartbeat_interval_ms.max(100));
        loop {
            tokio::time::sleep(period).await;
            let beat = WorkerEvent::JobHeartbeat {
                task_id: task_id.clone(),
                job_id: job_id.clone(),
            };
            if let Err(err) = self.report(&beat).await {
                tracing::warn!(error = %err, "heartbeat not delivered");
            }
            if let Ok(Some(_)) = self.cache.get(&cancel_marker_key(&task_id)).await {
                cancel.cancel();
            }
        }
    }

    async fn report(&self, event: &WorkerEvent) -> Result<(), cuttle_bus::BusError> {
        report(self.bus.as_ref(), event).await
    }
}

/// Sends one event to the orchestrator, with the current trace context.
pub async fn report(bus: &dyn Bus, event: &WorkerEvent) -> Result<(), cuttle_bus::BusError> {
    let mut message = Message::json(event.kind(), event)
        .map_err(|e| cuttle_bus::BusError::Other(e.to_string()))?;
    cuttle_telemetry::inject_context(&mut message.headers);
    bus.send(&QueueSpec::new(queues::ORCHESTRATOR_EVENTS), message)
        .await
}

fn settle(result: Result<(), cuttle_bus::BusError>) {
    if let Err(err) = result {
        tracing::warn!(error = %err, "could not settle a job message; the broker will redeliver it and the claim prevents a second run");
    }
}
