//! Typed, versioned messages between services, and the queues that carry them.
//!
//! Every message kind carries its version in its name (`TaskQueued.v1`); a consumer that meets a
//! kind it does not know dead-letters it instead of guessing. Every handler is idempotent:
//! RabbitMQ delivers at least once.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Queue names. Each is a work queue (competing consumers) unless named a topic.
pub mod queues {
    /// Commands for the orchestrator: a task was queued or a cancel was requested.
    pub const ORCHESTRATOR_COMMANDS: &str = "orchestrator.commands";
    /// Progress reports from workers: started, heartbeat, log lines, finished.
    pub const ORCHESTRATOR_EVENTS: &str = "orchestrator.events";
    /// Step jobs for workers.
    pub const WORKER_JOBS: &str = "worker.jobs";
    /// Broadcast topic every worker subscribes to, to hear about cancellations.
    pub const WORKER_CANCEL_TOPIC: &str = "worker.cancel";

    /// The work queue of one polling agent, named by its `poll://<subscription>/` URI: its jobs
    /// wait here until a worker holding that agent's connection consumes them. `None` for a URI
    /// that is not a polling one.
    pub fn polling_agent(uri: &str) -> Option<String> {
        let subscription = uri.strip_prefix("poll://")?.trim_end_matches('/');
        let safe = !subscription.is_empty()
            && subscription.len() <= 100
            && subscription
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-');
        safe.then(|| format!("agent.{}", subscription.to_ascii_lowercase()))
    }
}

/// Cache key of the [`PollingTrust`] list, written from the database by the api (after every
/// machine change) and the orchestrator (periodically), read by workers.
pub const POLLING_TRUST_KEY: &str = "agents.polling-trust";

/// The polling agents workers accept: each thumbprint may only speak for its own subscription.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PollingTrust {
    /// Every registered polling agent (targets and workers) of every space.
    pub agents: Vec<TrustedPollingAgent>,
}

/// One polling agent's pinned certificate and subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedPollingAgent {
    /// Upper-case hex SHA-1 of the agent's certificate.
    pub thumbprint: String,
    /// `poll://<subscription>/`.
    pub uri: String,
}

/// What the orchestrator is asked to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "Type")]
pub enum OrchestratorCommand {
    /// A task was queued and should be planned and started.
    #[serde(rename = "TaskQueued.v1")]
    TaskQueued {
        /// The task.
        task_id: String,
    },
    /// A user asked to cancel a running task.
    #[serde(rename = "CancelRequested.v1")]
    CancelRequested {
        /// The task.
        task_id: String,
    },
}

impl OrchestratorCommand {
    /// The message kind, for the bus envelope.
    pub fn kind(&self) -> &'static str {
        match self {
            OrchestratorCommand::TaskQueued { .. } => "TaskQueued.v1",
            OrchestratorCommand::CancelRequested { .. } => "CancelRequested.v1",
        }
    }
}

/// A unit of work for a worker: one action of one step of one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepJob {
    /// The task the job belongs to.
    pub task_id: String,
    /// Unique per dispatch; workers claim jobs by this id so a redelivered job never runs twice.
    pub job_id: String,
    /// The space, for logs.
    pub space_id: String,
    /// Step name as the user wrote it.
    pub step_name: String,
    /// Action name as the user wrote it.
    pub action_name: String,
    /// What to run.
    pub work: JobWork,
    /// The deployment target to run it on, through its agent; `None` runs it on the worker.
    #[serde(default)]
    pub target: Option<JobTarget>,
    /// The job's variables, each name with the value whose scope matched the job best, plus
    /// system variables and earlier steps' output variables. The worker substitutes them into
    /// what it runs and gives them to scripts.
    #[serde(default)]
    pub variables: Vec<JobVariable>,
}

/// One variable as a job sees it, not yet evaluated (values may hold `#{...}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobVariable {
    /// Its name, as first defined.
    pub name: String,
    /// The value; sealed with the master key (`cuttle_secrets`) when `sensitive`.
    pub value: String,
    /// A sensitive value: sealed here, opened only by the worker that runs the job, and masked
    /// in every log line.
    #[serde(default)]
    pub sensitive: bool,
}

/// A deployment target a job runs on, with what the worker needs to reach its agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobTarget {
    /// `Machines-N`.
    pub machine_id: String,
    /// The target's name, for the log.
    pub name: String,
    /// `TentaclePassive` (the worker dials `uri`) or `TentacleActive` (the agent polls).
    pub communication_style: String,
    /// `https://host:port/` or `poll://subscription/`.
    pub uri: String,
    /// The agent certificate's SHA-1 thumbprint the worker pins.
    pub thumbprint: String,
}

impl StepJob {
    /// The message kind, for the bus envelope.
    pub const KIND: &'static str = "StepJob.v1";

    /// The deployment target of a stored job message (`task_jobs.payload`), when it runs on one.
    pub fn target_of(payload: &str) -> Option<JobTarget> {
        serde_json::from_str::<StepJob>(payload).ok()?.target
    }

    /// The queue this job travels on: its polling agent's own queue, or the shared worker queue
    /// (work on the worker itself and on listening agents, which any worker can dial).
    pub fn queue(&self) -> String {
        self.target
            .as_ref()
            .filter(|target| target.communication_style == "TentacleActive")
            .and_then(|target| queues::polling_agent(&target.uri))
            .unwrap_or_else(|| queues::WORKER_JOBS.to_owned())
    }
}

/// The kinds of work a worker knows.
///
/// Fields added after a variant first shipped carry `#[serde(default)]`, so a job queued by an
/// older orchestrator still reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "Type")]
pub enum JobWork {
    /// An inline script (`Octopus.Script` with `ScriptSource` Inline).
    Script {
        /// Bash, Python or PowerShell.
        syntax: cuttle_domain::script::ScriptSyntax,
        /// The script text.
        body: String,
        /// Packages the step references; those marked `extract` are extracted into a folder
        /// named after the reference next to the script.
        #[serde(default)]
        packages: Vec<JobPackage>,
        /// Files of the extracted packages to rewrite with the job's variables before the
        /// script runs (paths relative to the script's directory).
        #[serde(default)]
        file_substitution: FileSubstitution,
    },
    /// A script file inside the step's primary package (`Octopus.Script` with `ScriptSource`
    /// Package).
    PackageScript {
        /// Bash, Python or PowerShell, from the file's extension.
        syntax: cuttle_domain::script::ScriptSyntax,
        /// The package holding the script; always extracted.
        package: JobPackage,
        /// Path of the script inside the package, with `/` separators.
        file_name: String,
        /// The command-line arguments (`Octopus.Action.Script.ScriptParameters`), split like a
        /// shell would.
        parameters: Vec<String>,
        /// Other packages the step references.
        #[serde(default)]
        packages: Vec<JobPackage>,
        /// Files to rewrite with the job's variables once the packages are extracted, before
        /// the script runs.
        #[serde(default)]
        file_substitution: FileSubstitution,
    },
    /// Check that a deployment target's agent answers and learn what it runs on (one job per
    /// machine of a `Health` task); the outcome becomes the machine's health.
    HealthCheck,
    /// Deploy a package (`Octopus.TentaclePackage`): extract it into a fresh versioned folder
    /// and run its PreDeploy, Deploy and PostDeploy scripts there.
    DeployPackage {
        /// The package.
        package: JobPackage,
        /// The environment's name: installations live under `Applications/<environment>/`.
        environment_name: String,
        /// Files to rewrite with the job's variables after the PreDeploy scripts, before the
        /// Deploy scripts.
        #[serde(default)]
        file_substitution: FileSubstitution,
    },
}

/// The configuration features of a package step that rewrite extracted files with the job's
/// variables. Each list holds glob patterns relative to the extraction folder, one per line of
/// the step's setting (they may hold `#{...}`, evaluated by the worker); an empty list leaves
/// the feature off. Octopus runs "Substitute Variables in Templates" first, then "Structured
/// Configuration Variables".
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FileSubstitution {
    /// "Substitute Variables in Templates" (`Octopus.Features.SubstituteInFiles`,
    /// `Octopus.Action.SubstituteInFiles.TargetFiles`): each matching file's text is evaluated
    /// as a template.
    #[serde(default)]
    pub substitute_in_files: Vec<String>,
    /// "Structured Configuration Variables" (`Octopus.Features.JsonConfigurationVariables`,
    /// `Octopus.Action.Package.JsonConfigurationVariablesTargets`): in each matching JSON file,
    /// values whose key path (`Logging:LogLevel:Default`) names a variable take its value.
    #[serde(default)]
    pub structured_variables: Vec<String>,
}

impl FileSubstitution {
    /// True when neither feature has a file to work on.
    pub fn is_empty(&self) -> bool {
        self.substitute_in_files.is_empty() && self.structured_variables.is_empty()
    }
}

/// One package a job needs, pinned by the release and located by the orchestrator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobPackage {
    /// The package reference's name in the step; empty for the primary package.
    pub reference_name: String,
    /// The package id as stored.
    pub package_id: String,
    /// The version the release selected, as stored.
    pub version: String,
    /// File extension including the dot (`.zip`, `.tar.gz`, `.nupkg`, ...).
    pub extension: String,
    /// Hex SHA-256 of the file: the worker's cache key, checked after download.
    pub sha256: String,
    /// File size in bytes.
    pub size_bytes: u64,
    /// Where the file is in the feed's blob store; workers read it, never write it.
    pub blob_key: String,
    /// Whether the step wants the package extracted (`Extract` property; true by default).
    pub extract: bool,
}

impl JobPackage {
    /// The file name the package was pushed as: `<PackageId>.<Version><extension>`.
    pub fn file_name(&self) -> String {
        format!("{}.{}{}", self.package_id, self.version, self.extension)
    }
}

/// A log line produced by a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    /// Position in the job's output, from 1; makes redelivered batches idempotent.
    pub seq: i64,
    /// When the line was read.
    pub at: DateTime<Utc>,
    /// Info, Error (stderr), ...
    pub category: cuttle_domain::LogCategory,
    /// The text, without its newline.
    pub text: String,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "Type")]
pub enum JobOutcome {
    /// Exit code 0.
    Succeeded,
    /// A non-zero exit code or a failure to start; `reason` says which.
    Failed {
        /// A sentence for the task log.
        reason: String,
    },
    /// Stopped because the task was canceled.
    Canceled,
}

/// Reports from a worker about one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "Type")]
pub enum WorkerEvent {
    /// The worker claimed the job and started it.
    #[serde(rename = "JobStarted.v1")]
    JobStarted {
        /// Task.
        task_id: String,
        /// Job.
        job_id: String,
        /// The worker's name, for the log.
        worker: String,
    },
    /// The job is still running; missing heartbeats mean the worker died.
    #[serde(rename = "JobHeartbeat.v1")]
    JobHeartbeat {
        /// Task.
        task_id: String,
        /// Job.
        job_id: String,
    },
    /// A batch of output lines.
    #[serde(rename = "JobLog.v1")]
    JobLog {
        /// Task.
        task_id: String,
        /// Job.
        job_id: String,
        /// Lines in order.
        lines: Vec<LogLine>,
    },
    /// The job ended.
    #[serde(rename = "JobFinished.v1")]
    JobFinished {
        /// Task.
        task_id: String,
        /// Job.
        job_id: String,
        /// How it ended.
        outcome: JobOutcome,
        /// The script's exit code when it ran.
        exit_code: Option<i32>,
        /// Output variables the job set (`Package.InstallationDirectoryPath`, ...), by name
        /// without the `Octopus.Action[Step].Output.` prefix. Sensitive ones are sealed with the
        /// master key (their values start with `cuttle_secrets::SEALED_PREFIX`).
        #[serde(default)]
        output_variables: std::collections::BTreeMap<String, String>,
        /// Files the job's scripts published with `new_octopusartifact`, already in the blob
        /// store.
        #[serde(default)]
        artifacts: Vec<JobArtifact>,
    },
}

/// A file a job published as an artifact of its task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobArtifact {
    /// The name it is listed under.
    pub name: String,
    /// Where the worker stored it: `artifacts/<space>/<task>/<uuid>-<name>`.
    pub blob_key: String,
    /// Its size in bytes.
    pub size_bytes: u64,
}

impl WorkerEvent {
    /// The message kind, for the bus envelope.
    pub fn kind(&self) -> &'static str {
        match self {
            WorkerEvent::JobStarted { .. } => "JobStarted.v1",
            WorkerEvent::JobHeartbeat { .. } => "JobHeartbeat.v1",
            WorkerEvent::JobLog { .. } => "JobLog.v1",
            WorkerEvent::JobFinished { .. } => "JobFinished.v1",
        }
    }

    /// The task the event is about.
    pub fn task_id(&self) -> &str {
        match self {
            WorkerEvent::JobStarted { task_id, .. }
            | WorkerEvent::JobHeartbeat { task_id, .. }
            | WorkerEvent::JobLog { task_id, .. }
            | WorkerEvent::JobFinished { task_id, .. } => task_id,
        }
    }
}

/// Broadcast to all workers: stop every job of this task, or only one of its jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelTask {
    /// Task.
    pub task_id: String,
    /// When set, only this job is stopped (a job that started after the orchestrator had
    /// already ended it); the rest of the task goes on.
    #[serde(default)]
    pub job_id: Option<String>,
}

impl CancelTask {
    /// The message kind, for the bus envelope.
    pub const KIND: &'static str = "CancelTask.v1";
}

/// Cache key a worker checks before starting a job, so a job queued before a cancel never runs.
pub fn cancel_marker_key(task_id: &str) -> String {
    format!("task-canceled:{task_id}")
}

/// Cache key by which exactly one worker claims a job.
pub fn job_claim_key(job_id: &str) -> String {
    format!("job-claim:{job_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_their_versioned_kind_on_the_wire() {
        let command = OrchestratorCommand::TaskQueued {
            task_id: "ServerTasks-1".into(),
        };
        let json = serde_json::to_value(&command).unwrap();
        assert_eq!(json["Type"], "TaskQueued.v1");
        assert_eq!(json["Type"], command.kind());
        let back: OrchestratorCommand = serde_json::from_value(json).unwrap();
        assert_eq!(back, command);
        let unknown = serde_json::json!({"Type": "TaskQueued.v9", "task_id": "x"});
        assert!(serde_json::from_value::<OrchestratorCommand>(unknown).is_err());
    }

    #[test]
    fn a_package_job_queued_before_file_substitution_existed_still_reads() {
        let older = serde_json::json!({
            "Type": "DeployPackage",
            "package": {"reference_name": "", "package_id": "Acme.Web", "version": "1.0.0",
                        "extension": ".zip", "sha256": "ab", "size_bytes": 1,
                        "blob_key": "k", "extract": true},
            "environment_name": "Test"
        });
        let work: JobWork = serde_json::from_value(older).unwrap();
        let JobWork::DeployPackage {
            file_substitution, ..
        } = work
        else {
            panic!("not a package deployment: {work:?}");
        };
        assert!(file_substitution.is_empty());
    }
}
