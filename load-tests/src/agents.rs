//! Many polling agents against one worker: connection set-up and memory at each count, one
//! script step fanned out to every agent, and a health check of every agent.
//!
//! The agents are simulated in this process, but they speak the real protocol over real mutual
//! TLS connections to the worker's comms port, each with its own subscription and machine
//! registered through the REST API. They share one certificate (the worker's trust list maps
//! that thumbprint to every subscription), which saves generating thousands of keys and changes
//! nothing on the worker's side of each connection. Each answers capabilities and runs a
//! "script" by replying one output line and exit code 0 at once, so the figures are Cuttle's
//! own cost: planning, dispatch, the bus, the link and the task log.

use crate::api::Api;
use crate::launch::{Platform, free_port};
use crate::stats::Summary;
use anyhow::{Context, bail};
use cuttle_agent_link::messages::{
    AgentCapabilities, OutputLine, OutputStream, ScriptSyntax, ScriptTicket,
};
use cuttle_agent_link::{
    AgentIdentity, AgentLink, IncomingRequest, IncomingRequests, LinkOptions, Progress,
    RemoteError, RemoteErrorKind, Request, Response, SubscriptionId, Thumbprint,
    TrustedThumbprints,
};
use cuttle_testkit::{Client, Mode, flow};
use serde::Serialize;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

const SPACE: &str = "Spaces-1";
const ENVIRONMENT: &str = "Agents";
const PROJECT: &str = "Fan-out";
const ROLE: &str = "sim";
/// Registrations and dials in flight at once.
const CONCURRENCY: usize = 32;

/// What to measure.
pub struct AgentsOptions {
    /// Which way Cuttle runs.
    pub mode: Mode,
    /// Agent counts to reach, ascending (e.g. 1,000 then 10,000).
    pub counts: Vec<usize>,
    /// Fan out one script step and run one health check once this many agents are connected
    /// (must be one of `counts`); 0 skips both.
    pub fan_out_at: usize,
    /// The `cuttle` binary.
    pub binary: PathBuf,
    /// `telemetry.log_level` of the server.
    pub log_level: String,
}

/// One agent count reached.
#[derive(Debug, Serialize)]
pub struct Round {
    /// Agents connected to the worker.
    pub agents: usize,
    /// Seconds to register the new agents' machines through the API.
    pub register_secs: f64,
    /// Seconds from the first new dial to the last new agent connected.
    pub connect_secs: f64,
    /// One connection's set-up (TCP, TLS 1.3, hellos), in ms.
    pub setup_ms: Option<Summary>,
    /// Resident memory of the process holding the connections before and after, in MB.
    pub rss_before_mb: f64,
    /// After.
    pub rss_after_mb: f64,
    /// (after - before) / new agents, in KiB.
    pub kib_per_agent: f64,
}

/// One task over every agent.
#[derive(Debug, Serialize)]
pub struct TaskTiming {
    /// Agents (jobs) in the task.
    pub agents: usize,
    /// Seconds from the request to the task's end, as the client saw it.
    pub wall_secs: f64,
    /// The task's own start-to-completion time, from the server's timestamps.
    pub task_secs: f64,
    /// The task's final state.
    pub state: String,
}

/// Everything measured.
#[derive(Debug, Serialize)]
pub struct AgentsReport {
    /// `embedded` or `distributed`.
    pub mode: String,
    /// Which process's memory `Round::rss_*` is.
    pub measured_process: String,
    /// Each count reached.
    pub rounds: Vec<Round>,
    /// One script step on every agent.
    pub fan_out: Option<TaskTiming>,
    /// A health check of every agent.
    pub health: Option<TaskTiming>,
}

/// Runs the measurement.
pub async fn measure(options: &AgentsOptions) -> anyhow::Result<AgentsReport> {
    let comms = format!("127.0.0.1:{}", free_port()?);
    let extra = [("CUTTLE_WORKER__POLLING_LISTEN".to_owned(), comms.clone())];
    let platform =
        Platform::start_with(options.mode, &options.binary, &options.log_level, &extra).await?;
    let outcome = measure_on(&platform, &comms, options).await;
    platform.stop(None).await;
    outcome
}

async fn measure_on(
    platform: &Platform,
    comms: &str,
    options: &AgentsOptions,
) -> anyhow::Result<AgentsReport> {
    let api = Api::new(&platform.api_base, platform.api_key())?;
    let setup = Client::new(platform.api_base.clone(), platform.api_key());
    flow::project_with_script(&setup, SPACE, ENVIRONMENT, PROJECT, "echo fan-out").await;
    let process_path = format!(
        "/api/{SPACE}/projects/{}/deploymentprocesses",
        project_id(&api).await?
    );
    let mut process = setup.get(&process_path).await.expect(200);
    process["Steps"][0]["Properties"] = json!({"Octopus.Action.TargetRoles": ROLE});
    process["Steps"][0]["Actions"][0]["Properties"]["Octopus.Action.RunOnServer"] = json!("false");
    setup.put(&process_path, process).await.expect(200);
    let environment = api
        .get(&format!("/api/{SPACE}/environments?name={ENVIRONMENT}"))
        .await?["Items"][0]["Id"]
        .as_str()
        .context("the environment is missing")?
        .to_owned();
    let server: Thumbprint = {
        let certificate = api.get("/api/certificates/certificate-global").await?;
        Thumbprint::parse(certificate["Thumbprint"].as_str().unwrap_or_default())
            .context("the server certificate has no thumbprint")?
    };
    let home = tempfile::tempdir()?;
    let identity = AgentIdentity::load_or_create(home.path())?;
    let link = AgentLink::new(
        &identity,
        TrustedThumbprints::from_iter([server]),
        LinkOptions::default(),
    )?;
    // The process that holds the agents' connections: the worker, or the whole server.
    let holder = platform
        .procs
        .iter()
        .find(|p| p.name == "worker")
        .or_else(|| platform.procs.first())
        .context("no server process")?;

    let mut rounds = Vec::new();
    let mut held = Vec::new();
    let mut fan_out = None;
    let mut health = None;
    for &count in &options.counts {
        let start = held.len();
        if count <= start {
            continue;
        }
        eprintln!("agents: registering {} more (to {count})", count - start);
        let began = Instant::now();
        register(
            &api,
            &environment,
            &identity.thumbprint().to_string(),
            start..count,
        )
        .await?;
        let register_secs = began.elapsed().as_secs_f64();
        // The worker learns new agents from the trust list it re-reads every 2 s (published at
        // most every 0.5 s); an agent refused before that would only reconnect later.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let rss_before_mb = holder.rss_mb()?;
        eprintln!("agents: connecting {} more", count - start);
        let began = Instant::now();
        let (connections, setup_ms) = connect(&link, comms, start..count).await?;
        let connect_secs = began.elapsed().as_secs_f64();
        for (id, incoming) in connections {
            held.push(tokio::spawn(run_agent(
                link.clone(),
                comms.to_owned(),
                id,
                incoming,
            )));
        }
        // Let the worker subscribe every agent's queue before reading its memory.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let rss_after_mb = holder.rss_mb()?;
        rounds.push(Round {
            agents: count,
            register_secs,
            connect_secs,
            setup_ms: Summary::of(&setup_ms),
            rss_before_mb,
            rss_after_mb,
            kib_per_agent: (rss_after_mb - rss_before_mb) * 1024.0 / (count - start) as f64,
        });
        if count == options.fan_out_at {
            eprintln!("agents: one script step on {count} agents");
            fan_out = Some(deploy(&setup, &api, count).await?);
            eprintln!("agents: health check of {count} agents");
            health = Some(check_health(&api, &environment, count).await?);
        }
    }
    Ok(AgentsReport {
        mode: crate::deploy::mode_name(options.mode).into(),
        measured_process: holder.name.clone(),
        rounds,
        fan_out,
        health,
    })
}

async fn project_id(api: &Api) -> anyhow::Result<String> {
    let projects = api
        .get(&format!("/api/{SPACE}/projects?name={PROJECT}"))
        .await?;
    projects["Items"][0]["Id"]
        .as_str()
        .map(str::to_owned)
        .context("the project is missing")
}

fn subscription(index: usize) -> String {
    format!("poll://loadagent{index:06}/")
}

/// Registers machines `range` as polling targets, `CONCURRENCY` at a time.
async fn register(
    api: &Api,
    environment: &str,
    thumbprint: &str,
    range: std::ops::Range<usize>,
) -> anyhow::Result<()> {
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    let mut registrations = tokio::task::JoinSet::new();
    for index in range {
        let permit = slots.clone().acquire_owned().await?;
        let api = api.clone();
        let body = json!({
            "Name": format!("load-agent-{index:06}"),
            "EnvironmentIds": [environment],
            "Roles": [ROLE],
            "Endpoint": {
                "CommunicationStyle": "TentacleActive",
                "Uri": subscription(index),
                "Thumbprint": thumbprint,
            },
        });
        registrations.spawn(async move {
            let created = api
                .post(&format!("/api/{SPACE}/machines"), &body, 201)
                .await;
            drop(permit);
            created
        });
    }
    while let Some(created) = registrations.join_next().await {
        created??;
    }
    Ok(())
}

/// Dials agents `range`, `CONCURRENCY` at a time, retrying while the worker's trust list has not
/// caught up with the registrations; returns the connections and each one's set-up time in ms.
async fn connect(
    link: &AgentLink,
    comms: &str,
    range: std::ops::Range<usize>,
) -> anyhow::Result<(Vec<(SubscriptionId, IncomingRequests)>, Vec<f64>)> {
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    let mut dials = tokio::task::JoinSet::new();
    for index in range {
        let permit = slots.clone().acquire_owned().await?;
        let (link, comms) = (link.clone(), comms.to_owned());
        dials.spawn(async move {
            let id = SubscriptionId::parse(&subscription(index))?;
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let began = Instant::now();
                match link.dial_worker(&comms, id.clone()).await {
                    Ok(incoming) => {
                        drop(permit);
                        return Ok::<_, anyhow::Error>((id, incoming, began.elapsed()));
                    }
                    Err(err) if Instant::now() > deadline => {
                        bail!("agent {index} could not connect: {err}")
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            }
        });
    }
    let mut connections = Vec::new();
    let mut setup_ms = Vec::new();
    while let Some(dialled) = dials.join_next().await {
        let (id, incoming, took) = dialled??;
        connections.push((id, incoming));
        setup_ms.push(took.as_secs_f64() * 1000.0);
    }
    Ok((connections, setup_ms))
}

/// One simulated agent: serves its connection and, like `cuttle-agent`, dials again whenever it
/// closes (a worker that refused it before its trust list caught up, or restarted).
async fn run_agent(
    link: AgentLink,
    comms: String,
    id: SubscriptionId,
    mut incoming: IncomingRequests,
) {
    loop {
        serve(incoming).await;
        incoming = loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if let Ok(again) = link.dial_worker(&comms, id.clone()).await {
                break again;
            }
        };
    }
}

/// Answers one connection's requests until it closes.
async fn serve(mut incoming: IncomingRequests) {
    while let Some(IncomingRequest { request, responder }) = incoming.next().await {
        tokio::spawn(async move {
            let response = match request {
                Request::Capabilities => Response::Capabilities(AgentCapabilities {
                    agent_version: "load-test".into(),
                    os: std::env::consts::OS.into(),
                    arch: std::env::consts::ARCH.into(),
                    hostname: "load-test".into(),
                    shells: vec![ScriptSyntax::Bash],
                }),
                Request::StartScript(start) => {
                    let ticket = ScriptTicket(start.job_id.0.clone());
                    let started = Progress::ScriptStarted {
                        ticket: ticket.clone(),
                    };
                    let output = Progress::Output {
                        lines: vec![OutputLine {
                            sequence: 1,
                            at: chrono::Utc::now(),
                            stream: OutputStream::Stdout,
                            text: "fan-out".into(),
                        }],
                    };
                    for progress in [started, output] {
                        if responder.progress(progress).await.is_err() {
                            return;
                        }
                    }
                    Response::ScriptFinished {
                        ticket,
                        exit_code: 0,
                    }
                }
                other => Response::Error(RemoteError::new(
                    RemoteErrorKind::Unsupported,
                    format!("the load-test agent does not do {}", other.kind()),
                )),
            };
            let _ = responder.respond(response).await;
        });
    }
}

/// Deploys the fan-out project and follows the task to its end.
async fn deploy(setup: &Client, api: &Api, agents: usize) -> anyhow::Result<TaskTiming> {
    let began = Instant::now();
    let task = flow::release_and_deploy(setup, SPACE, PROJECT, ENVIRONMENT).await;
    follow(api, &task, agents, began).await
}

/// Runs a health check of the environment and follows it to its end.
async fn check_health(api: &Api, environment: &str, agents: usize) -> anyhow::Result<TaskTiming> {
    let began = Instant::now();
    let task = api
        .post(
            &format!("/api/{SPACE}/tasks"),
            &json!({"Name": "Health", "Arguments": {"EnvironmentId": environment}}),
            201,
        )
        .await?;
    let id = task["Id"]
        .as_str()
        .context("the task has no id")?
        .to_owned();
    follow(api, &id, agents, began).await
}

async fn follow(
    api: &Api,
    task: &str,
    agents: usize,
    began: Instant,
) -> anyhow::Result<TaskTiming> {
    let deadline = began + Duration::from_secs(600);
    loop {
        let current = api.get(&format!("/api/tasks/{task}")).await?;
        if current["IsCompleted"] == Value::Bool(true) {
            let wall_secs = began.elapsed().as_secs_f64();
            let seconds = |field: &str| {
                current[field]
                    .as_str()
                    .and_then(|text| chrono::DateTime::parse_from_rfc3339(text).ok())
            };
            let task_secs = match (seconds("StartTime"), seconds("CompletedTime")) {
                (Some(start), Some(end)) => (end - start).num_milliseconds() as f64 / 1000.0,
                _ => f64::NAN,
            };
            let state = current["State"].as_str().unwrap_or_default().to_owned();
            if state != "Success" {
                eprintln!(
                    "task {task} ended {state}: {}",
                    current["ErrorMessage"].as_str().unwrap_or_default()
                );
            }
            return Ok(TaskTiming {
                agents,
                wall_secs,
                task_secs,
                state,
            });
        }
        if Instant::now() > deadline {
            bail!("task {task} did not finish within 600 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The printed section.
pub fn markdown(report: &AgentsReport) -> String {
    let mut out = format!(
        "Memory is the resident set of the `{}` process. Agents are simulated in the load generator over real mutual-TLS connections (one shared certificate, one subscription and machine each).\n\n| agents | register (s) | connect all (s) | set-up per connection | RSS before → after (MB) | per agent (KiB) |\n|---|---|---|---|---|---|\n",
        report.measured_process
    );
    for round in &report.rounds {
        out.push_str(&format!(
            "| {} | {:.1} | {:.1} | {} | {:.0} → {:.0} | {:.1} |\n",
            round.agents,
            round.register_secs,
            round.connect_secs,
            round
                .setup_ms
                .as_ref()
                .map(|s| format!("median {:.1} ms, p90 {:.1} ms", s.median, s.p90))
                .unwrap_or_else(|| "-".into()),
            round.rss_before_mb,
            round.rss_after_mb,
            round.kib_per_agent
        ));
    }
    for (what, timing) in [
        ("One script step fanned out", &report.fan_out),
        ("Health check", &report.health),
    ] {
        if let Some(timing) = timing {
            out.push_str(&format!(
                "\n{what} to {} agents: {:.1} s as the client saw it, {:.1} s from the task's start to its end ({}).\n",
                timing.agents, timing.wall_secs, timing.task_secs, timing.state
            ));
        }
    }
    out
}
