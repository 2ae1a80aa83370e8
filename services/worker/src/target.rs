//! Jobs on deployment targets: the worker dials the target's listening agent over
//! `libs/agent-link` (presenting the server certificate the agent pinned at registration, and
//! pinning the agent's thumbprint from the job), runs the script there and streams its output
//! into the job's log. Cancel asks the agent to stop the script; a lost connection fails the
//! job with the reason.

use crate::package::{Installation, PackageJobs};
use crate::polling::PollingAgents;
use crate::script::{self, Ended, JobLog, ScriptContext};
use cuttle_agent_link::messages::{
    self, ExtractPackage, Folder, JobId, NoteLevel, OutputStream, PackageUpload, RelativeFilePath,
    RewriteFiles, Sha256Digest, StagePackage, StartScript,
};
use cuttle_agent_link::{
    LinkError, LinkOptions, RemoteErrorKind, Requester, ScriptEvent, Thumbprint,
    TrustedThumbprints, WorkerIdentity, WorkerLink,
};
use cuttle_contracts::{FileSubstitution, JobOutcome, JobPackage, JobTarget};
use cuttle_domain::LogCategory;
use cuttle_domain::script::ScriptSyntax;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a canceled script's agent may take to report its end before the job is given up.
const CANCEL_WAIT: Duration = Duration::from_secs(30);

/// Output variables a health check sets, read by the orchestrator into the machine.
pub mod health_outputs {
    /// `linux`, `macos`, ...
    pub const OPERATING_SYSTEM: &str = "OperatingSystem";
    /// `x86_64`, `aarch64`, ...
    pub const ARCHITECTURE: &str = "Architecture";
    /// The first script shell the agent has (`bash`, `python`, `power_shell`).
    pub const SHELL_NAME: &str = "ShellName";
    /// The agent's version.
    pub const AGENT_VERSION: &str = "AgentVersion";
}

/// How this worker reaches agents.
#[derive(Clone, Copy)]
pub struct Reach<'a> {
    /// The server certificate listening agents pinned; `None` reaches none of them.
    pub identity: Option<&'a WorkerIdentity>,
    /// The polling agents connected to this worker.
    pub polling: &'a PollingAgents,
}

/// The connection to `target`'s agent: the one a polling agent holds to this worker, or a new
/// one to a listening agent; `Err` is how the job ends instead.
async fn connect(
    reach: Reach<'_>,
    target: &JobTarget,
    context: &ScriptContext,
    log: &JobLog,
) -> Result<Requester, Ended> {
    if target.communication_style == "TentacleActive" {
        // The job came off the agent's own queue, which only the holder of its connection reads.
        return reach.polling.get(&target.uri).ok_or_else(|| {
            script::failed(format!(
                "Deployment target '{}' is a polling agent ({}) whose connection to this worker just ended; it will get its next jobs once it reconnects.",
                target.name, target.uri
            ))
        });
    }
    let Some(identity) = reach.identity else {
        return Err(script::failed(
            "This worker has no server certificate (server.certificate_dir), so it cannot reach deployment targets.".into(),
        ));
    };
    if target.communication_style != "TentaclePassive" {
        return Err(script::failed(format!(
            "Deployment target '{}' has the communication style '{}'; Cuttle reaches TentaclePassive and TentacleActive agents.",
            target.name, target.communication_style
        )));
    }
    let Some(address) = target
        .uri
        .parse::<http::Uri>()
        .ok()
        .and_then(|uri| uri.authority().map(|a| a.as_str().to_owned()))
    else {
        return Err(script::failed(format!(
            "Deployment target '{}' has the endpoint '{}', which is not https://host:port/.",
            target.name, target.uri
        )));
    };
    let thumbprint = Thumbprint::parse(&target.thumbprint).map_err(|err| {
        script::failed(format!(
            "Deployment target '{}' has an invalid thumbprint: {err}",
            target.name
        ))
    })?;
    let trusted = TrustedThumbprints::from_iter([thumbprint]);
    let link = WorkerLink::new(identity, trusted, LinkOptions::default())
        .map_err(|err| script::failed(format!("The worker's TLS setup failed: {err}")))?;
    log.line(
        LogCategory::Verbose,
        format!(
            "Connecting to deployment target {} at {}",
            target.name, target.uri
        ),
    )
    .await;
    tokio::select! {
        connected = link.dial_agent(&address, thumbprint) => connected.map_err(|err| {
            script::failed(format!(
                "The agent on deployment target '{}' ({}) could not be reached: {err}",
                target.name, target.uri
            ))
        }),
        () = context.cancel.cancelled() => Err((JobOutcome::Canceled, None)),
    }
}

/// A health check: the agent answers with what it runs on, or the target is unavailable.
pub async fn health_check(
    reach: Reach<'_>,
    target: &JobTarget,
    context: &ScriptContext,
    log: &JobLog,
) -> (Ended, BTreeMap<String, String>) {
    let requester = match connect(reach, target, context, log).await {
        Ok(requester) => requester,
        Err(ended) => return (ended, BTreeMap::new()),
    };
    match requester.capabilities().await {
        Ok(capabilities) => {
            let shell = capabilities
                .shells
                .first()
                .map(|s| format!("{s:?}"))
                .unwrap_or_default();
            log.line(
                LogCategory::Info,
                format!(
                    "{} is healthy: cuttle-agent {} on {} {} (host {}), shells {:?}",
                    target.name,
                    capabilities.agent_version,
                    capabilities.os,
                    capabilities.arch,
                    capabilities.hostname,
                    capabilities.shells
                ),
            )
            .await;
            let outputs = BTreeMap::from([
                (health_outputs::OPERATING_SYSTEM.to_owned(), capabilities.os),
                (health_outputs::ARCHITECTURE.to_owned(), capabilities.arch),
                (health_outputs::SHELL_NAME.to_owned(), shell),
                (
                    health_outputs::AGENT_VERSION.to_owned(),
                    capabilities.agent_version,
                ),
            ]);
            ((JobOutcome::Succeeded, Some(0)), outputs)
        }
        Err(err) => (
            script::failed(format!(
                "The agent on deployment target '{}' did not answer: {err}",
                target.name
            )),
            BTreeMap::new(),
        ),
    }
}

fn link_syntax(syntax: ScriptSyntax) -> messages::ScriptSyntax {
    match syntax {
        ScriptSyntax::Bash => messages::ScriptSyntax::Bash,
        ScriptSyntax::Python => messages::ScriptSyntax::Python,
        ScriptSyntax::PowerShell => messages::ScriptSyntax::PowerShell,
    }
}

/// Starts `start` on the agent and follows it to its end, streaming its output into the log.
async fn run_on_agent(
    requester: &Requester,
    target: &JobTarget,
    start: StartScript,
    context: &ScriptContext,
    log: &JobLog,
) -> Ended {
    let mut run = match requester.start_script(start).await {
        Ok(run) => run,
        Err(err) => {
            return script::failed(format!(
                "The agent on deployment target '{}' did not start the script: {err}",
                target.name
            ));
        }
    };
    log.line(
        LogCategory::Verbose,
        format!("Running on deployment target {}", target.name),
    )
    .await;
    let mut canceled = false;
    loop {
        let event = if canceled {
            match tokio::time::timeout(CANCEL_WAIT, run.next()).await {
                Ok(event) => event,
                Err(_) => return (JobOutcome::Canceled, None),
            }
        } else {
            tokio::select! {
                event = run.next() => event,
                () = context.cancel.cancelled() => {
                    canceled = true;
                    if let Err(err) = requester.cancel_script(run.ticket().clone()).await {
                        tracing::warn!(target.name = %target.name, error = %err, "could not ask the agent to stop the script");
                        return (JobOutcome::Canceled, None);
                    }
                    continue;
                }
            }
        };
        match event {
            Some(Ok(ScriptEvent::Output(lines))) => {
                for line in lines {
                    let category = match line.stream {
                        OutputStream::Stdout => LogCategory::Info,
                        OutputStream::Stderr => LogCategory::Error,
                    };
                    log.line(category, line.text).await;
                }
            }
            Some(Ok(ScriptEvent::Finished { exit_code })) => {
                return match (canceled, exit_code) {
                    (true, code) => (JobOutcome::Canceled, Some(code)),
                    (false, 0) => (JobOutcome::Succeeded, Some(0)),
                    (false, code) => (
                        JobOutcome::Failed {
                            reason: format!(
                                "The script on deployment target '{}' returned exit code {code}",
                                target.name
                            ),
                        },
                        Some(code),
                    ),
                };
            }
            Some(Err(err)) => {
                return script::failed(format!(
                    "The connection to the agent on deployment target '{}' was lost while the script ran: {err}",
                    target.name
                ));
            }
            None => {
                return script::failed(format!(
                    "The agent on deployment target '{}' stopped reporting before the script ended.",
                    target.name
                ));
            }
        }
    }
}

/// An open connection to a deployment target's agent, for a package step's several requests.
pub struct AgentSession<'a> {
    requester: Requester,
    target: &'a JobTarget,
    shells: Vec<messages::ScriptSyntax>,
}

impl<'a> AgentSession<'a> {
    /// Connects to `target`'s agent and, when `learn` is set, learns what it runs (package
    /// steps choose between a package's scripts by it; a plain script needs no extra round trip).
    pub async fn open(
        reach: Reach<'_>,
        target: &'a JobTarget,
        context: &ScriptContext,
        log: &JobLog,
        learn: bool,
    ) -> Result<AgentSession<'a>, Ended> {
        let requester = connect(reach, target, context, log).await?;
        let shells = if learn {
            let capabilities = requester.capabilities().await.map_err(|err| {
                script::failed(format!(
                    "The agent on deployment target '{}' did not answer: {err}",
                    target.name
                ))
            })?;
            capabilities.shells
        } else {
            Vec::new()
        };
        Ok(AgentSession {
            requester,
            target,
            shells,
        })
    }

    /// Reads part of a file on the agent: the bytes and the file's size.
    pub async fn read_file(
        &self,
        path: &str,
        offset: u64,
        length: u32,
    ) -> Result<(Vec<u8>, u64), String> {
        self.requester
            .read_file(path, offset, length)
            .await
            .map_err(|err| match err {
                LinkError::Remote(remote) => remote.message,
                other => other.to_string(),
            })
    }

    /// The connection, for streams that outlive a borrow of the session.
    pub fn requester(&self) -> Requester {
        self.requester.clone()
    }

    /// Lets the agent remove what it kept of the job (its folder and staging folder).
    pub async fn release(&self, jobs: &PackageJobs<'_>) {
        if let Err(err) = self
            .requester
            .release_job(JobId(jobs.job_id.to_owned()))
            .await
        {
            tracing::warn!(target.name = %self.target.name, error = %err, "the agent did not release the job's files; it removes them when it restarts");
        }
    }

    /// Whether the agent can run PowerShell.
    pub fn has_pwsh(&self) -> bool {
        self.shells.contains(&messages::ScriptSyntax::PowerShell)
    }

    /// Sends the package unless the agent holds its hash; returns the hash.
    async fn send(
        &self,
        jobs: &PackageJobs<'_>,
        package: &JobPackage,
    ) -> Result<Sha256Digest, String> {
        let name = &self.target.name;
        let file = jobs.acquire(package).await?;
        let sha256 = Sha256Digest::parse(&package.sha256).map_err(|err| {
            format!(
                "The package {} {} has no valid SHA-256 in the job: {err}",
                package.package_id, package.version
            )
        })?;
        let source = tokio::fs::File::open(&file).await.map_err(|err| {
            format!(
                "The worker could not read its cached copy of {} {}: {err}",
                package.package_id, package.version
            )
        })?;
        let upload = PackageUpload {
            package_id: package.package_id.clone(),
            version: package.version.clone(),
            sha256,
            total_size: package.size_bytes,
        };
        let uploaded = tokio::select! {
            uploaded = self.requester.upload_package(upload, source) => uploaded,
            () = jobs.context.cancel.cancelled() => return Err("canceled".into()),
        };
        let outcome = uploaded.map_err(|err| {
            format!(
                "The package {} {} could not be sent to deployment target '{name}': {err}",
                package.package_id, package.version
            )
        })?;
        let line = if outcome.already_cached {
            format!(
                "Package {} {} was found in the cache of deployment target {name}; no need to send it.",
                package.package_id, package.version
            )
        } else {
            format!(
                "Sent package {} {} ({} bytes) to deployment target {name}",
                package.package_id, package.version, package.size_bytes
            )
        };
        jobs.log.line(LogCategory::Info, line).await;
        Ok(sha256)
    }

    /// The reason for a refused package request, naming an agent too old to know it.
    fn refusal(&self, err: LinkError, package: &JobPackage, doing: &str) -> String {
        let name = &self.target.name;
        match err {
            LinkError::Remote(remote) if remote.kind == RemoteErrorKind::Unsupported => format!(
                "The agent on deployment target '{name}' cannot install packages: upgrade it to cuttle-agent {} or later.",
                env!("CARGO_PKG_VERSION")
            ),
            LinkError::Remote(remote) if remote.kind == RemoteErrorKind::BadRequest => {
                remote.message
            }
            other => format!(
                "The package {} {} could not be {doing} on deployment target '{name}': {other}",
                package.package_id, package.version
            ),
        }
    }

    /// Sends the package (unless the agent holds its hash) and has the agent extract it into a
    /// fresh folder.
    pub async fn install(
        &self,
        jobs: &PackageJobs<'_>,
        package: &JobPackage,
        environment_name: &str,
    ) -> Result<Installation, String> {
        let sha256 = self.send(jobs, package).await?;
        let extract = ExtractPackage {
            sha256,
            package_id: package.package_id.clone(),
            version: package.version.clone(),
            extension: package.extension.clone(),
            environment_name: environment_name.to_owned(),
        };
        let extracted = tokio::select! {
            extracted = self.requester.extract_package(extract) => extracted,
            () = jobs.context.cancel.cancelled() => return Err("canceled".into()),
        };
        let extracted = extracted.map_err(|err| self.refusal(err, package, "extracted"))?;
        jobs.log
            .line(
                LogCategory::Info,
                format!(
                    "Extracted package {} {} to {} on {} ({} files, {} bytes)",
                    package.package_id,
                    package.version,
                    extracted.path,
                    self.target.name,
                    extracted.files,
                    extracted.bytes
                ),
            )
            .await;
        Ok(Installation {
            path: PathBuf::from(extracted.path),
            folder: Some(Folder::Installation {
                directory: extracted.directory,
            }),
            top_level_files: extracted.top_level_files,
        })
    }

    /// Sends the package (unless the agent holds its hash) and has the agent place it in the
    /// job's staging folder: extracted into `name` (the folder itself when `None`), or as the
    /// file `name`. Returns the staging folder's path on the agent.
    pub async fn stage(
        &self,
        jobs: &PackageJobs<'_>,
        package: &JobPackage,
        name: Option<&str>,
        expect_file: Option<&str>,
    ) -> Result<PathBuf, String> {
        let sha256 = self.send(jobs, package).await?;
        let path = |text: &str| {
            RelativeFilePath::parse(text).map_err(|err| {
                format!(
                    "The package {} {} cannot be placed on deployment target '{}': {err}",
                    package.package_id, package.version, self.target.name
                )
            })
        };
        let stage = StagePackage {
            job_id: JobId(jobs.job_id.to_owned()),
            sha256,
            package_id: package.package_id.clone(),
            version: package.version.clone(),
            extension: package.extension.clone(),
            name: name.map(path).transpose()?,
            extract: package.extract || name.is_none(),
            expect_file: expect_file.map(path).transpose()?,
        };
        let staged = tokio::select! {
            staged = self.requester.stage_package(stage) => staged,
            () = jobs.context.cancel.cancelled() => return Err("canceled".into()),
        };
        let staged = staged.map_err(|err| self.refusal(err, package, "placed"))?;
        jobs.log
            .line(
                LogCategory::Info,
                format!(
                    "Placed package {} {} in {staged} on {}",
                    package.package_id, package.version, self.target.name
                ),
            )
            .await;
        Ok(PathBuf::from(staged))
    }

    /// The job's staging folder on the agent.
    pub fn staging(&self, jobs: &PackageJobs<'_>) -> Folder {
        Folder::Staging {
            job_id: JobId(jobs.job_id.to_owned()),
        }
    }

    /// Has the agent run the file features on `folder`.
    pub async fn rewrite(
        &self,
        jobs: &PackageJobs<'_>,
        folder: Folder,
        files: &FileSubstitution,
    ) -> Result<(), String> {
        if files.is_empty() {
            return Ok(());
        }
        let rewrite = RewriteFiles {
            folder,
            substitute_in_files: files.substitute_in_files.clone(),
            structured_variables: files.structured_variables.clone(),
            variables: jobs.variables.as_conventions().raw(),
        };
        let (notes, failure) = self.requester.rewrite_files(rewrite).await.map_err(|err| {
            format!(
                "The files could not be rewritten on deployment target '{}': {err}",
                self.target.name
            )
        })?;
        for note in notes {
            let category = match note.level {
                NoteLevel::Verbose => LogCategory::Verbose,
                NoteLevel::Warning => LogCategory::Warning,
                NoteLevel::Error => LogCategory::Error,
                NoteLevel::Info | NoteLevel::Other => LogCategory::Info,
            };
            jobs.log.line(category, note.text).await;
        }
        failure.map_or(Ok(()), Err)
    }

    /// Runs the script file at `path` on the agent in `folder`, with the helpers.
    pub async fn run_file(
        &self,
        jobs: &PackageJobs<'_>,
        folder: Folder,
        syntax: ScriptSyntax,
        path: &Path,
        args: &[String],
    ) -> Ended {
        let body = jobs.variables.bootstrap(syntax, path);
        self.run_body(jobs, Some(folder), syntax, body, args).await
    }

    /// Runs a script's text (already substituted and with its helpers) on the agent in
    /// `folder`, or in a fresh working directory. The agent keeps the files until
    /// [`AgentSession::release`], so the artifacts the script published can be read.
    pub async fn run_body(
        &self,
        jobs: &PackageJobs<'_>,
        folder: Option<Folder>,
        syntax: ScriptSyntax,
        body: String,
        args: &[String],
    ) -> Ended {
        let start = StartScript {
            job_id: JobId(jobs.job_id.to_owned()),
            syntax: link_syntax(syntax),
            body,
            environment: BTreeMap::new(),
            variables: BTreeMap::new(),
            files: Vec::new(),
            folder,
            args: args.to_vec(),
            keep_files: true,
        };
        run_on_agent(&self.requester, self.target, start, jobs.context, jobs.log).await
    }
}
