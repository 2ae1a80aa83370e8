//! Jobs on deployment targets: the worker dials the target's listening agent over
//! `libs/agent-link` (presenting the server certificate the agent pinned at registration, and
//! pinning the agent's thumbprint from the job), runs the script there and streams its output
//! into the job's log. Cancel asks the agent to stop the script; a lost connection fails the
//! job with the reason.

use crate::polling::PollingAgents;
use crate::script::{self, Ended, JobLog, ScriptContext};
use cuttle_agent_link::messages::{self, JobId, OutputStream, StartScript};
use cuttle_agent_link::{
    LinkOptions, ScriptEvent, Thumbprint, TrustedThumbprints, WorkerIdentity, WorkerLink,
};
use cuttle_contracts::{JobOutcome, JobTarget};
use cuttle_domain::LogCategory;
use cuttle_domain::script::ScriptSyntax;
use std::collections::BTreeMap;
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
) -> Result<cuttle_agent_link::Requester, Ended> {
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

/// Runs an inline script on `target`'s agent.
pub async fn run_script(
    reach: Reach<'_>,
    target: &JobTarget,
    job_id: &str,
    syntax: ScriptSyntax,
    body: &str,
    context: &ScriptContext,
    log: &JobLog,
) -> Ended {
    let requester = match connect(reach, target, context, log).await {
        Ok(requester) => requester,
        Err(ended) => return ended,
    };
    let mut run = match requester
        .start_script(StartScript {
            job_id: JobId(job_id.to_owned()),
            syntax: match syntax {
                ScriptSyntax::Bash => messages::ScriptSyntax::Bash,
                ScriptSyntax::Python => messages::ScriptSyntax::Python,
                ScriptSyntax::PowerShell => messages::ScriptSyntax::PowerShell,
            },
            body: body.to_owned(),
            environment: BTreeMap::new(),
            variables: BTreeMap::new(),
            files: Vec::new(),
        })
        .await
    {
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
