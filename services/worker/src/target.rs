//! Jobs on deployment targets: the worker dials the target's listening agent over
//! `libs/agent-link` (presenting the server certificate the agent pinned at registration, and
//! pinning the agent's thumbprint from the job), runs the script there and streams its output
//! into the job's log. Cancel asks the agent to stop the script; a lost connection fails the
//! job with the reason.

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

/// Runs an inline script on `target`'s agent.
pub async fn run_script(
    identity: Option<&WorkerIdentity>,
    target: &JobTarget,
    job_id: &str,
    syntax: ScriptSyntax,
    body: &str,
    context: &ScriptContext,
    log: &JobLog,
) -> Ended {
    let Some(identity) = identity else {
        return script::failed(
            "This worker has no server certificate (server.certificate_dir), so it cannot reach deployment targets.".into(),
        );
    };
    if target.communication_style != "TentaclePassive" {
        return script::failed(format!(
            "Deployment target '{}' is a polling agent ({}); workers do not accept polling agents in this version of Cuttle yet.",
            target.name, target.communication_style
        ));
    }
    let address = match target
        .uri
        .parse::<http::Uri>()
        .ok()
        .and_then(|uri| uri.authority().map(|a| a.as_str().to_owned()))
    {
        Some(address) => address,
        None => {
            return script::failed(format!(
                "Deployment target '{}' has the endpoint '{}', which is not https://host:port/.",
                target.name, target.uri
            ));
        }
    };
    let thumbprint = match Thumbprint::parse(&target.thumbprint) {
        Ok(thumbprint) => thumbprint,
        Err(err) => {
            return script::failed(format!(
                "Deployment target '{}' has an invalid thumbprint: {err}",
                target.name
            ));
        }
    };
    let trusted = TrustedThumbprints::from_iter([thumbprint]);
    let link = match WorkerLink::new(identity, trusted, LinkOptions::default()) {
        Ok(link) => link,
        Err(err) => return script::failed(format!("The worker's TLS setup failed: {err}")),
    };
    log.line(
        LogCategory::Verbose,
        format!(
            "Connecting to deployment target {} at {}",
            target.name, target.uri
        ),
    )
    .await;
    let requester = tokio::select! {
        connected = link.dial_agent(&address, thumbprint) => match connected {
            Ok(requester) => requester,
            Err(err) => {
                return script::failed(format!(
                    "The agent on deployment target '{}' ({}) could not be reached: {err}",
                    target.name, target.uri
                ));
            }
        },
        () = context.cancel.cancelled() => return (JobOutcome::Canceled, None),
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
