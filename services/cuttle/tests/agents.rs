//! The Cuttle agent against a real server, in both modes: `cuttle-agent register` creates the
//! deployment target through the machines API and pins the server's certificate, and an agent
//! started with `cuttle-agent run` serves whoever holds that certificate over mutual TLS, and
//! nobody else.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot unwrap has failed; the panic says where"
)]

mod common;

use common::{InProcess, Proc, free_port, push, zip_bytes};
use cuttle_agent_link::messages::{JobId, ScriptSyntax, StartScript};
use cuttle_agent_link::{
    AgentIdentity, LinkOptions, Requester, ScriptEvent, TrustedThumbprints, WorkerIdentity,
    WorkerLink,
};
use cuttle_testkit::Mode;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

both_modes!(
    a_registered_listening_agent_serves_the_server_certificate_and_refuses_others,
    a_registration_with_an_unknown_environment_fails_naming_it,
    a_step_for_a_role_runs_on_the_listening_agent_and_a_killed_agent_fails_it_with_a_reason,
    health_checks_record_healthy_and_unavailable_targets,
    a_step_runs_on_a_listening_and_a_polling_agent_side_by_side_and_a_killed_one_fails_its_part,
    a_polling_agent_with_a_certificate_nobody_registered_is_refused,
    a_rolling_window_of_one_runs_targets_in_turn_and_stops_at_the_first_failure,
    the_machine_policy_interval_runs_health_checks_on_its_own,
    a_polling_agent_that_is_gone_becomes_unavailable_and_healthy_when_back,
    discovery_reads_a_listening_agents_thumbprint_and_leaves_it_working,
    a_step_on_a_worker_runs_on_an_agent_registered_in_the_worker_pool,
    a_package_step_installs_on_a_listening_and_a_polling_agent_and_the_agents_cache_spares_a_resend,
    script_steps_with_packages_run_on_agents_and_their_artifacts_come_back,
    deleting_a_polling_machine_deletes_its_queue_and_its_agent_can_register_again,
);

/// The agent binary, built beside the test binaries by `cargo nextest run --workspace`.
fn agent_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/agents-<hash> -> target/debug/cuttle-agent
    let path = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("cuttle-agent");
    assert!(
        path.exists(),
        "{} is missing: build the workspace (cargo build --workspace) first",
        path.display()
    );
    path
}

fn register(app: &InProcess, home: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(agent_binary())
        .arg("--home")
        .arg(home)
        .args(["register", "--server", &app.client.base, "--api-key"])
        .arg(&app.client.api_key)
        .args(extra)
        .output()
        .unwrap()
}

async fn dial(
    identity: &WorkerIdentity,
    agent: &AgentIdentity,
    port: u16,
) -> Result<Requester, cuttle_agent_link::LinkError> {
    let trusted = TrustedThumbprints::from_iter([agent.thumbprint()]);
    let link = WorkerLink::new(identity, trusted, LinkOptions::default())?;
    link.dial_agent(&format!("127.0.0.1:{port}"), agent.thumbprint())
        .await
}

async fn a_registered_listening_agent_serves_the_server_certificate_and_refuses_others(mode: Mode) {
    let app = InProcess::start(mode).await;
    test_environment(&app).await;
    let home = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let output = register(
        &app,
        home.path(),
        &[
            "--environment",
            "Test",
            "--role",
            "web-server",
            "--name",
            "web-01",
            "--listen",
            &listen,
        ],
    );
    assert!(
        output.status.success(),
        "register failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let agent = AgentIdentity::load_or_create(home.path()).unwrap();
    let machines = app
        .client
        .get("/api/Spaces-1/machines?roles=web-server")
        .await
        .expect(200);
    assert_eq!(machines["TotalResults"], 1, "{machines}");
    let machine = &machines["Items"][0];
    assert_eq!(machine["Name"], "web-01");
    assert_eq!(machine["Endpoint"]["CommunicationStyle"], "TentaclePassive");
    assert_eq!(machine["Uri"], format!("https://127.0.0.1:{port}/"));
    assert_eq!(machine["Thumbprint"], agent.thumbprint().to_string());

    let mut running = start_agent("agent", home.path());
    let server = cuttle::server_identity(app.config()).unwrap();
    let mut requester = None;
    for _ in 0..100 {
        match dial(&server, &agent, port).await {
            Ok(connected) => {
                requester = Some(connected);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let requester = requester.expect("the agent never accepted the server's certificate");
    let capabilities = requester.capabilities().await.unwrap();
    assert!(!capabilities.agent_version.is_empty());
    let mut run = requester
        .start_script(StartScript {
            job_id: JobId("e2e-1".into()),
            syntax: ScriptSyntax::Bash,
            body: "echo \"hello from $(basename \"$PWD\")\"".into(),
            environment: BTreeMap::new(),
            variables: BTreeMap::new(),
            files: Vec::new(),
            folder: None,
            args: Vec::new(),
            keep_files: false,
        })
        .await
        .unwrap();
    let mut lines = Vec::new();
    let exit_code = loop {
        match run.next().await.unwrap().unwrap() {
            ScriptEvent::Output(batch) => lines.extend(batch.into_iter().map(|l| l.text)),
            ScriptEvent::Finished { exit_code } => break exit_code,
        }
    };
    assert_eq!(exit_code, 0);
    assert_eq!(lines, ["hello from e2e-1"]);

    // A certificate the agent was not told to trust gets nowhere.
    let stranger_home = tempfile::tempdir().unwrap();
    let stranger = WorkerIdentity::load_or_create(stranger_home.path()).unwrap();
    let refused = match dial(&stranger, &agent, port).await {
        Ok(requester) => requester.capabilities().await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "an unknown worker certificate was served");
    running.terminate(Duration::from_secs(10)).await;
    app.stop().await;
}

async fn a_registration_with_an_unknown_environment_fails_naming_it(mode: Mode) {
    let app = InProcess::start(mode).await;
    let home = tempfile::tempdir().unwrap();
    let output = register(
        &app,
        home.path(),
        &[
            "--environment",
            "Nowhere",
            "--role",
            "web",
            "--listen",
            "127.0.0.1:10933",
        ],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Nowhere"), "{stderr}");
    assert!(
        !stderr.contains(&app.client.api_key),
        "the key leaked: {stderr}"
    );
    let machines = app.client.get("/api/Spaces-1/machines").await.expect(200);
    assert_eq!(machines["TotalResults"], 0);
    app.stop().await;
}

/// Creates the environment `Test`; returns its id.
async fn test_environment(app: &InProcess) -> String {
    app.client
        .post("/api/Spaces-1/environments", json!({"Name": "Test"}))
        .await
        .expect(201)["Id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Starts `cuttle-agent run` in `home`.
fn start_agent(name: &str, home: &Path) -> Proc {
    Proc {
        name: name.into(),
        child: Command::new(agent_binary())
            .arg("--home")
            .arg(home)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    }
}

/// Registers a listening agent for `role` in `env` and starts it; returns the running agent.
async fn running_agent(app: &InProcess, home: &Path, env: &str, role: &str, name: &str) -> Proc {
    listening_agent(app, home, name, &["--environment", env, "--role", role]).await
}

/// Registers a listening agent placed by `placement` (environment and role, or worker pool)
/// and starts it; returns it once it accepts connections.
async fn listening_agent(app: &InProcess, home: &Path, name: &str, placement: &[&str]) -> Proc {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = placement.to_vec();
    args.extend(["--name", name, "--listen", &listen]);
    let output = register(app, home, &args);
    assert!(
        output.status.success(),
        "register failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let agent = start_agent(name, home);
    // Ready when it accepts TCP connections.
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(&listen).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    agent
}

async fn a_step_for_a_role_runs_on_the_listening_agent_and_a_killed_agent_fails_it_with_a_reason(
    mode: Mode,
) {
    let app = InProcess::start(mode).await;
    let client = &app.client;
    let project = cuttle_testkit::flow::project_with_script(
        client,
        "Spaces-1",
        "Test",
        "Web",
        "echo \"on $(basename \"$(dirname \"$PWD\")\") as job\"; sleep ${SLEEP:-0}",
    )
    .await;
    // Target the role instead of the server.
    let path = format!("/api/Spaces-1/projects/{project}/deploymentprocesses");
    let mut process = client.get(&path).await.expect(200);
    process["Steps"][0]["Properties"] = json!({"Octopus.Action.TargetRoles": "web-server"});
    process["Steps"][0]["Actions"][0]["Properties"]["Octopus.Action.RunOnServer"] = json!("false");
    client.put(&path, process.clone()).await.expect(200);

    let home = tempfile::tempdir().unwrap();
    let mut agent = running_agent(&app, home.path(), "Test", "web-server", "web-01").await;
    let task = cuttle_testkit::flow::release_and_deploy(client, "Spaces-1", "Web", "Test").await;
    let finished = client.wait_for_task(&task, Duration::from_secs(60)).await;
    let raw = client
        .get(&format!("/api/Spaces-1/tasks/{task}/raw"))
        .await
        .expect(200);
    let raw = raw.as_str().unwrap().to_owned();
    assert_eq!(finished["State"], "Success", "{raw}");
    assert!(raw.contains("Running on deployment target web-01"), "{raw}");
    // The agent runs scripts under its own home's work directory.
    assert!(raw.contains("on work as job"), "{raw}");

    // Killed mid-script: the step fails with the reason, and the task ends.
    let mut process = client.get(&path).await.expect(200);
    process["Steps"][0]["Actions"][0]["Properties"]["Octopus.Action.Script.ScriptBody"] =
        json!("echo started; sleep 20");
    client.put(&path, process).await.expect(200);
    let task = cuttle_testkit::flow::release_and_deploy(client, "Spaces-1", "Web", "Test").await;
    wait_for_log(client, &task, "started", 1).await;
    // SIGKILL leaves the script (its own process group) to finish its 20 s on its own; a
    // restarted agent would stop it (services/agent/tests/serve.rs covers that).
    agent.kill();
    let finished = client.wait_for_task(&task, Duration::from_secs(60)).await;
    assert_eq!(finished["State"], "Failed", "{finished}");
    let error = finished["ErrorMessage"].as_str().unwrap();
    assert!(error.contains("web-01"), "{error}");
    app.stop().await;
}

/// Waits (up to 20 s) until the task's log holds `text` at least `times` times.
async fn wait_for_log(client: &cuttle_testkit::Client, task: &str, text: &str, times: usize) {
    for _ in 0..400 {
        let raw = client
            .get(&format!("/api/Spaces-1/tasks/{task}/raw"))
            .await
            .expect(200);
        if raw.as_str().unwrap().matches(text).count() >= times {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks `env` until a check succeeds (true) or 40 checks failed (false).
async fn becomes_healthy(app: &InProcess, env: &str) -> bool {
    for _ in 0..40 {
        if check_health(app, env).await["State"] == "Success" {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

/// Runs a health check of `env` and returns the finished task.
async fn check_health(app: &InProcess, env: &str) -> serde_json::Value {
    let task = app
        .client
        .post(
            "/api/Spaces-1/tasks",
            json!({"Name": "Health", "Arguments": {"EnvironmentId": env}}),
        )
        .await
        .expect(201);
    assert_eq!(task["Name"], "Health");
    app.client
        .wait_for_task(task["Id"].as_str().unwrap(), Duration::from_secs(60))
        .await
}

async fn health_checks_record_healthy_and_unavailable_targets(mode: Mode) {
    let app = InProcess::start(mode).await;
    let env = test_environment(&app).await;
    let reply = app
        .client
        .post(
            "/api/Spaces-1/tasks",
            json!({"Name": "Health", "Arguments": {"MachineIds": ["Machines-999"]}}),
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(reply.body.to_string().contains("Arguments.MachineIds[0]"));

    let home = tempfile::tempdir().unwrap();
    let mut agent = running_agent(&app, home.path(), "Test", "web", "web-01").await;
    let task = check_health(&app, &env).await;
    assert_eq!(task["State"], "Success", "{task}");
    let machine = &app.client.get("/api/Spaces-1/machines").await.expect(200)["Items"][0];
    assert_eq!(machine["HealthStatus"], "Healthy", "{machine}");
    assert_eq!(machine["OperatingSystem"], std::env::consts::OS);
    assert!(
        !machine["Endpoint"]["TentacleVersionDetails"]["Version"]
            .as_str()
            .unwrap()
            .is_empty(),
        "{machine}"
    );

    agent.kill();
    let task = check_health(&app, &env).await;
    assert_eq!(task["State"], "Failed", "{task}");
    let machine = &app.client.get("/api/Spaces-1/machines").await.expect(200)["Items"][0];
    assert_eq!(machine["HealthStatus"], "Unavailable", "{machine}");
    let unavailable = app
        .client
        .get("/api/Spaces-1/machines?healthStatuses=Unavailable")
        .await
        .expect(200);
    assert_eq!(unavailable["TotalResults"], 1);

    // Back again: healthy on the next check.
    let mut agent = start_agent("web-01 again", home.path());
    assert!(
        becomes_healthy(&app, &env).await,
        "the restarted agent never became healthy"
    );
    let machine = &app.client.get("/api/Spaces-1/machines").await.expect(200)["Items"][0];
    assert_eq!(machine["HealthStatus"], "Healthy", "{machine}");
    agent.terminate(Duration::from_secs(10)).await;
    app.stop().await;
}

/// Starts Cuttle with a comms port for polling agents; returns it with the port's address.
async fn start_with_polling(mode: Mode) -> (InProcess, String) {
    let comms = format!("127.0.0.1:{}", free_port());
    let listen = comms.clone();
    let app = InProcess::start_with(mode, move |config| {
        config.worker.polling_listen = Some(listen);
        // A step for an agent that is not connected fails quickly.
        config.orchestrator.polling_pickup_timeout_secs = 2;
    })
    .await;
    (app, comms)
}

/// Registers a polling agent for `role` in `env` against `comms` and starts it.
fn polling_agent(app: &InProcess, home: &Path, comms: &str, role: &str, name: &str) -> Proc {
    let output = register(
        app,
        home,
        &[
            "--environment",
            "Test",
            "--role",
            role,
            "--name",
            name,
            "--polling",
            "--server-comms",
            comms,
        ],
    );
    assert!(
        output.status.success(),
        "register failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    start_agent(name, home)
}

/// Points the project's only step at `role`, with `body` as its script.
async fn target_role(client: &cuttle_testkit::Client, project: &str, role: &str, body: &str) {
    let path = format!("/api/Spaces-1/projects/{project}/deploymentprocesses");
    let mut process = client.get(&path).await.expect(200);
    process["Steps"][0]["Properties"] = json!({"Octopus.Action.TargetRoles": role});
    let action = &mut process["Steps"][0]["Actions"][0]["Properties"];
    action["Octopus.Action.RunOnServer"] = json!("false");
    action["Octopus.Action.Script.ScriptBody"] = json!(body);
    client.put(&path, process).await.expect(200);
}

async fn a_step_runs_on_a_listening_and_a_polling_agent_side_by_side_and_a_killed_one_fails_its_part(
    mode: Mode,
) {
    let (app, comms) = start_with_polling(mode).await;
    let client = &app.client;
    let project =
        cuttle_testkit::flow::project_with_script(client, "Spaces-1", "Test", "Web", "true").await;
    // Each agent prints its own home, so the log shows where each part ran, and a variable
    // scoped to one machine shows that each target gets its own values.
    target_role(
        client,
        &project,
        "web-server",
        "echo \"ran in $PWD\"; echo \"#{Greeting} on #{Octopus.Machine.Name}\"",
    )
    .await;
    let listening_home = tempfile::tempdir().unwrap();
    let polling_home = tempfile::tempdir().unwrap();
    let mut listening =
        running_agent(&app, listening_home.path(), "Test", "web-server", "web-01").await;
    let mut polling = polling_agent(&app, polling_home.path(), &comms, "web-server", "web-02");
    let machines = client
        .get("/api/Spaces-1/machines?commStyles=TentacleActive")
        .await
        .expect(200);
    assert_eq!(machines["Items"][0]["Name"], "web-02", "{machines}");
    let polling_id = machines["Items"][0]["Id"].as_str().unwrap().to_owned();
    set_variables(
        client,
        &project,
        json!([
            {"Name": "Greeting", "Value": "hello from anywhere"},
            {"Name": "Greeting", "Value": "hello from polling", "Scope": {"Machine": [polling_id]}},
        ]),
    )
    .await;

    // Connected before the deployment: its steps would otherwise wait on its queue for at most
    // the (test's short) pickup timeout.
    agents_in_test_become_healthy(&app).await;
    let (task, finished, raw) = deploy_web_to_test(client).await;
    assert_eq!(finished["State"], "Success", "{raw}");
    for home in [&listening_home, &polling_home] {
        let marker = format!("ran in {}", home.path().canonicalize().unwrap().display());
        assert!(raw.contains(&marker), "no '{marker}' in {raw}");
    }
    assert!(raw.contains("hello from anywhere on web-01"), "{raw}");
    assert!(raw.contains("hello from polling on web-02"), "{raw}");
    // One child per target under the step, each with its own output.
    let details = client
        .get(&format!("/api/Spaces-1/tasks/{task}/details"))
        .await
        .expect(200);
    let step = &details["ActivityLogs"][0]["Children"][0];
    let children: Vec<&str> = step["Children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["Name"].as_str().unwrap())
        .collect();
    assert_eq!(
        children,
        ["Run script on web-01", "Run script on web-02"],
        "{step}"
    );
    for child in step["Children"].as_array().unwrap() {
        let text = child["LogElements"].to_string();
        assert!(text.contains("ran in"), "{child}");
        assert_eq!(child["Status"], "Success", "{child}");
    }

    // The polling agent killed mid-script: its part fails with the reason, the listening one
    // finishes, and the task ends.
    let polling_name = polling_home
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    target_role(
        client,
        &project,
        "web-server",
        &format!("echo started; case \"$PWD\" in *{polling_name}*) sleep 30;; esac; echo done"),
    )
    .await;
    let task = cuttle_testkit::flow::release_and_deploy(client, "Spaces-1", "Web", "Test").await;
    wait_for_log(client, &task, "started", 2).await;
    polling.kill();
    let finished = client.wait_for_task(&task, Duration::from_secs(90)).await;
    assert_eq!(finished["State"], "Failed", "{finished}");
    let error = finished["ErrorMessage"].as_str().unwrap();
    assert!(error.contains("web-02"), "{error}");
    let parts = target_parts(client, &task).await;
    assert_eq!(parts[0]["Status"], "Success", "{parts:?}");
    assert_eq!(parts[1]["Status"], "Failed", "{parts:?}");
    listening.terminate(Duration::from_secs(10)).await;
    app.stop().await;
}

async fn a_polling_agent_with_a_certificate_nobody_registered_is_refused(mode: Mode) {
    let (app, comms) = start_with_polling(mode).await;
    let env = test_environment(&app).await;
    let home = tempfile::tempdir().unwrap();
    let mut agent = polling_agent(&app, home.path(), &comms, "web", "web-01");
    let registered = AgentIdentity::load_or_create(home.path()).unwrap();
    let server = cuttle::server_identity(app.config()).unwrap();
    let subscription =
        app.client.get("/api/Spaces-1/machines").await.expect(200)["Items"][0]["Endpoint"]["Uri"]
            .as_str()
            .unwrap()
            .to_owned();
    // Wait until the worker trusts the registered agent: its health check succeeds.
    assert!(
        becomes_healthy(&app, &env).await,
        "the registered polling agent never became healthy"
    );

    // A forger with its own certificate claims the registered agent's subscription.
    let forger_home = tempfile::tempdir().unwrap();
    let forger = AgentIdentity::load_or_create(forger_home.path()).unwrap();
    assert_ne!(forger.thumbprint(), registered.thumbprint());
    assert!(
        !served(&forger, &server, &comms, &subscription).await,
        "a forged polling agent was served"
    );
    // A registered agent may only speak for its own subscription.
    assert!(
        !served(&registered, &server, &comms, "poll://someoneelse/").await,
        "an agent was served under another agent's subscription"
    );
    agent.terminate(Duration::from_secs(10)).await;
    app.stop().await;
}

/// Whether the worker at `comms` serves `agent` dialling in as `subscription`: a refusal is a
/// failed dial or, since TLS 1.3 clients may finish before the server rejects their
/// certificate, a connection that closes without a single request arriving.
async fn served(
    agent: &AgentIdentity,
    server: &WorkerIdentity,
    comms: &str,
    subscription: &str,
) -> bool {
    let link = cuttle_agent_link::AgentLink::new(
        agent,
        TrustedThumbprints::from_iter([server.thumbprint()]),
        LinkOptions::default(),
    )
    .unwrap();
    let subscription = cuttle_agent_link::SubscriptionId::parse(subscription).unwrap();
    match link.dial_worker(comms, subscription).await {
        Err(_) => false,
        Ok(mut incoming) => tokio::time::timeout(Duration::from_secs(10), incoming.next())
            .await
            .map(|request| request.is_some())
            .unwrap_or(true),
    }
}

async fn a_rolling_window_of_one_runs_targets_in_turn_and_stops_at_the_first_failure(mode: Mode) {
    let app = InProcess::start(mode).await;
    let client = &app.client;
    let project =
        cuttle_testkit::flow::project_with_script(client, "Spaces-1", "Test", "Web", "true").await;
    let first_home = tempfile::tempdir().unwrap();
    let second_home = tempfile::tempdir().unwrap();
    let mut first = running_agent(&app, first_home.path(), "Test", "web", "web-01").await;
    let mut second = running_agent(&app, second_home.path(), "Test", "web", "web-02").await;
    let first_name = first_home
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    rolling(client, &project, "sleep 0.3; echo turn").await;
    let task = cuttle_testkit::flow::release_and_deploy(client, "Spaces-1", "Web", "Test").await;
    let finished = client.wait_for_task(&task, Duration::from_secs(60)).await;
    assert_eq!(finished["State"], "Success", "{finished}");
    let parts = target_parts(client, &task).await;
    let time = |part: &serde_json::Value, field: &str| {
        chrono::DateTime::parse_from_rfc3339(part[field].as_str().unwrap()).unwrap()
    };
    assert!(
        time(&parts[0], "Ended") <= time(&parts[1], "Started"),
        "web-02 started before web-01 ended: {parts:?}"
    );

    // web-01 (first in name order) fails: web-02 never starts, and says why.
    let fail_first =
        format!("case \"$PWD\" in *{first_name}*) echo failing; exit 3;; esac; echo ran");
    rolling(client, &project, &fail_first).await;
    let task = cuttle_testkit::flow::release_and_deploy(client, "Spaces-1", "Web", "Test").await;
    let finished = client.wait_for_task(&task, Duration::from_secs(60)).await;
    assert_eq!(finished["State"], "Failed", "{finished}");
    let parts = target_parts(client, &task).await;
    assert_eq!(parts[0]["Status"], "Failed", "{parts:?}");
    assert_eq!(parts[1]["Status"], "Skipped", "{parts:?}");
    let skipped = parts[1]["LogElements"].to_string();
    assert!(
        skipped.contains("on web-02 was skipped because a previous step failed"),
        "{skipped}"
    );
    first.terminate(Duration::from_secs(10)).await;
    second.terminate(Duration::from_secs(10)).await;
    app.stop().await;
}

/// Points the project's step at role `web`, one target at a time, running `body`.
async fn rolling(client: &cuttle_testkit::Client, project: &str, body: &str) {
    target_role(client, project, "web", body).await;
    let path = format!("/api/Spaces-1/projects/{project}/deploymentprocesses");
    let mut process = client.get(&path).await.expect(200);
    process["Steps"][0]["Properties"]["Octopus.Action.MaxParallelism"] = json!("1");
    client.put(&path, process).await.expect(200);
}

/// The per-target children of the task's first step.
async fn target_parts(client: &cuttle_testkit::Client, task: &str) -> Vec<serde_json::Value> {
    let details = client
        .get(&format!("/api/Spaces-1/tasks/{task}/details"))
        .await
        .expect(200);
    details["ActivityLogs"][0]["Children"][0]["Children"]
        .as_array()
        .unwrap()
        .clone()
}

async fn the_machine_policy_interval_runs_health_checks_on_its_own(mode: Mode) {
    let app = InProcess::start(mode).await;
    let client = &app.client;
    test_environment(&app).await;
    let home = tempfile::tempdir().unwrap();
    let mut agent = running_agent(&app, home.path(), "Test", "web", "web-01").await;
    let policies = client
        .get("/api/Spaces-1/machinepolicies")
        .await
        .expect(200);
    let mut policy = policies["Items"][0].clone();
    assert_eq!(policy["IsDefault"], true, "{policy}");
    assert_eq!(
        policy["MachineHealthCheckPolicy"]["HealthCheckInterval"], "01:00:00",
        "{policy}"
    );
    policy["MachineHealthCheckPolicy"]["HealthCheckInterval"] = json!("00:00:02");
    let path = format!(
        "/api/Spaces-1/machinepolicies/{}",
        policy["Id"].as_str().unwrap()
    );
    client.put(&path, policy).await.expect(200);

    // Nobody asks for a check: the policy's interval queues one.
    let mut checked = None;
    for _ in 0..120 {
        let tasks = client
            .get("/api/Spaces-1/tasks?name=Health")
            .await
            .expect(200);
        if let Some(done) = tasks["Items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["IsCompleted"] == true)
        {
            checked = Some(done.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let checked = checked.expect("no health check ran on the policy's interval");
    assert_eq!(checked["State"], "Success", "{checked}");
    assert!(
        checked["Description"]
            .as_str()
            .unwrap()
            .contains("machine policy"),
        "{checked}"
    );
    let machine = &client.get("/api/Spaces-1/machines").await.expect(200)["Items"][0];
    assert_eq!(machine["HealthStatus"], "Healthy", "{machine}");
    agent.terminate(Duration::from_secs(10)).await;
    app.stop().await;
}

async fn a_polling_agent_that_is_gone_becomes_unavailable_and_healthy_when_back(mode: Mode) {
    let (app, comms) = start_with_polling(mode).await;
    let env = test_environment(&app).await;
    let home = tempfile::tempdir().unwrap();
    let mut agent = polling_agent(&app, home.path(), &comms, "web", "web-01");
    assert!(
        becomes_healthy(&app, &env).await,
        "the polling agent never became healthy"
    );

    agent.kill();
    // Its check waits on its queue for the pickup timeout, then fails and marks it unavailable.
    let task = check_health(&app, &env).await;
    assert_eq!(task["State"], "Failed", "{task}");
    assert!(
        task["ErrorMessage"]
            .as_str()
            .unwrap()
            .contains("did not connect to a worker"),
        "{task}"
    );
    let machine = &app.client.get("/api/Spaces-1/machines").await.expect(200)["Items"][0];
    assert_eq!(machine["HealthStatus"], "Unavailable", "{machine}");

    // Back again: the stale check left on its queue is dropped, and the next check passes.
    let mut agent = start_agent("web-01 again", home.path());
    assert!(
        becomes_healthy(&app, &env).await,
        "the returning polling agent never became healthy"
    );
    let machine = &app.client.get("/api/Spaces-1/machines").await.expect(200)["Items"][0];
    assert_eq!(machine["HealthStatus"], "Healthy", "{machine}");
    agent.terminate(Duration::from_secs(10)).await;
    app.stop().await;
}

async fn discovery_reads_a_listening_agents_thumbprint_and_leaves_it_working(mode: Mode) {
    let app = InProcess::start(mode).await;
    let env = test_environment(&app).await;
    let home = tempfile::tempdir().unwrap();
    let mut agent = running_agent(&app, home.path(), "Test", "web", "web-01").await;
    let machine = &app.client.get("/api/Spaces-1/machines").await.expect(200)["Items"][0];
    let uri = machine["Endpoint"]["Uri"].as_str().unwrap().to_owned();
    let port = uri
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();

    let found = app
        .client
        .get(&format!(
            "/api/Spaces-1/machines/discover?host=127.0.0.1&port={port}&type=TentaclePassive"
        ))
        .await
        .expect(200);
    assert_eq!(
        found["Endpoint"]["Thumbprint"], machine["Endpoint"]["Thumbprint"],
        "{found}"
    );
    assert_eq!(found["Endpoint"]["Uri"], uri.as_str(), "{found}");
    assert_eq!(found["Endpoint"]["CommunicationStyle"], "TentaclePassive");
    assert!(
        found["Id"].as_str().unwrap_or_default().is_empty(),
        "{found}"
    );
    // The same for workers.
    let as_worker = app
        .client
        .get(&format!(
            "/api/Spaces-1/workers/discover?host=127.0.0.1&port={port}"
        ))
        .await
        .expect(200);
    assert_eq!(as_worker["Thumbprint"], machine["Endpoint"]["Thumbprint"]);

    // Nothing there, a polling style, a bad host: 400s that say why.
    let nothing = app
        .client
        .get(&format!(
            "/api/Spaces-1/machines/discover?host=127.0.0.1&port={}",
            common::free_port()
        ))
        .await
        .expect(400);
    assert!(
        nothing.to_string().contains("No agent could be discovered"),
        "{nothing}"
    );
    let polling = app
        .client
        .get("/api/Spaces-1/machines/discover?host=127.0.0.1&type=TentacleActive")
        .await
        .expect(400);
    assert!(polling.to_string().contains("type"), "{polling}");
    app.client
        .get("/api/Spaces-1/machines/discover?host=a/b")
        .await
        .expect(400);

    // Discovery left the agent serving the server as before.
    assert!(
        becomes_healthy(&app, &env).await,
        "the agent stopped answering after discovery"
    );
    agent.terminate(Duration::from_secs(10)).await;
    app.stop().await;
}

/// Deploys a new release of "Builds" to Test, checks it succeeded, returns its raw log.
async fn deploy_builds(client: &cuttle_testkit::Client) -> String {
    let task = cuttle_testkit::flow::release_and_deploy(client, "Spaces-1", "Builds", "Test").await;
    let done = client.wait_for_task(&task, Duration::from_secs(60)).await;
    assert_eq!(done["State"], "Success", "{done}");
    let raw = client
        .get(&format!("/api/Spaces-1/tasks/{task}/raw"))
        .await
        .expect(200);
    raw.as_str().unwrap_or_default().to_owned()
}

async fn a_step_on_a_worker_runs_on_an_agent_registered_in_the_worker_pool(mode: Mode) {
    let app = InProcess::start(mode).await;
    let client = &app.client;
    // Without worker agents, a step that runs on a worker runs on Cuttle's own worker.
    cuttle_testkit::flow::project_with_script(
        client,
        "Spaces-1",
        "Test",
        "Builds",
        "echo \"building in $PWD\"",
    )
    .await;
    let raw = deploy_builds(client).await;
    assert!(!raw.contains("build-agent"), "{raw}");

    // An agent registered in the default worker pool takes it from then on.
    let home = tempfile::tempdir().unwrap();
    let mut agent = listening_agent(
        &app,
        home.path(),
        "build-agent",
        &["--worker-pool", "Default Worker Pool"],
    )
    .await;
    // A health check of the pool reaches the worker agent and records it Healthy.
    let pool = &client.get("/api/Spaces-1/workerpools").await.expect(200)["Items"][0];
    let queued = client
        .post(
            "/api/Spaces-1/tasks",
            json!({"Name": "Health", "Arguments": {"WorkerPoolId": pool["Id"]}}),
        )
        .await
        .expect(201);
    let checked = client
        .wait_for_task(queued["Id"].as_str().unwrap(), Duration::from_secs(60))
        .await;
    assert_eq!(checked["State"], "Success", "{checked}");
    let worker = &client.get("/api/Spaces-1/workers").await.expect(200)["Items"][0];
    assert_eq!(worker["HealthStatus"], "Healthy", "{worker}");
    client
        .post(
            "/api/Spaces-1/tasks",
            json!({"Name": "Health", "Arguments": {"WorkerPoolId": "WorkerPools-999"}}),
        )
        .await
        .expect(400);

    let raw = deploy_builds(client).await;
    assert!(raw.contains("build-agent"), "{raw}");
    // The script ran in the agent's home, not in the server's work directory.
    let home_text = home.path().display().to_string();
    assert!(
        raw.lines()
            .any(|line| line.contains("building in") && line.contains(&home_text)),
        "{raw}"
    );

    // A disabled worker agent takes nothing.
    let workers = client.get("/api/Spaces-1/workers").await.expect(200);
    let mut worker = workers["Items"][0].clone();
    worker["IsDisabled"] = json!(true);
    client
        .put(
            &format!("/api/Spaces-1/workers/{}", worker["Id"].as_str().unwrap()),
            worker,
        )
        .await
        .expect(200);
    let raw = deploy_builds(client).await;
    assert!(!raw.contains(&home_text), "{raw}");
    agent.terminate(Duration::from_secs(10)).await;
    app.stop().await;
}

/// A package for the targets: convention scripts that show where they run, a file to
/// substitute (with a secret in it) and a JSON file for structured replacement.
fn target_package() -> Vec<u8> {
    zip_bytes(&[
        ("PreDeploy.sh", b"echo \"predeploy in $PWD sees $(cat config/app.conf)\"\n"),
        (
            "Deploy.sh",
            b"echo \"deploy sees $(cat config/app.conf)\"\ncat appsettings.json\necho \"greeting: $(get_octopusvariable Greeting)\"\n",
        ),
        ("PostDeploy.py", b"print('postdeploy in python')\n"),
        ("config/app.conf", b"name=#{AppName} key=#{ApiKey}"),
        ("appsettings.json", br#"{"Mode":"dev"}"#),
    ])
}

async fn a_package_step_installs_on_a_listening_and_a_polling_agent_and_the_agents_cache_spares_a_resend(
    mode: Mode,
) {
    let (app, comms) = start_with_polling(mode).await;
    let client = &app.client;
    push(client, "Spaces-1", "Acme.Web.1.0.0.zip", target_package())
        .await
        .expect(201);
    let project =
        cuttle_testkit::flow::project_with_script(client, "Spaces-1", "Test", "Web", "true").await;
    let process_path = format!("/api/Spaces-1/projects/{project}/deploymentprocesses");
    let mut process = client.get(&process_path).await.expect(200);
    process["Steps"] = json!([{
        "Name": "Deploy web",
        "Properties": {"Octopus.Action.TargetRoles": "web-server"},
        "Actions": [{
            "Name": "Deploy web", "ActionType": "Octopus.TentaclePackage",
            "Properties": {
                "Octopus.Action.Package.PackageId": "Acme.Web",
                "Octopus.Action.Package.FeedId": "feeds-builtin",
                "Octopus.Action.EnabledFeatures":
                    "Octopus.Features.SubstituteInFiles,Octopus.Features.JsonConfigurationVariables",
                "Octopus.Action.SubstituteInFiles.TargetFiles": "config/*.conf",
                "Octopus.Action.Package.JsonConfigurationVariablesTargets": "appsettings.json"
            },
            "Packages": [{"Name": "", "PackageId": "Acme.Web", "FeedId": "feeds-builtin",
                          "AcquisitionLocation": "Server", "Properties": {}}]
        }]
    }]);
    client.put(&process_path, process).await.expect(200);
    set_variables(
        client,
        &project,
        json!([
            {"Name": "AppName", "Value": "shop"},
            {"Name": "ApiKey", "Value": "k3y-never-shown", "IsSensitive": true},
            {"Name": "Mode", "Value": "prod"},
            {"Name": "Greeting", "Value": "hello #{Octopus.Machine.Name}"},
        ]),
    )
    .await;

    let (listening_home, polling_home, mut listening, mut polling) = web_agents(&app, &comms).await;

    let (task, finished, raw) = deploy_web_to_test(client).await;
    assert_eq!(finished["State"], "Success", "{raw}");
    for (home, name) in [(&listening_home, "web-01"), (&polling_home, "web-02")] {
        let installed = home
            .path()
            .canonicalize()
            .unwrap()
            .join("Applications/Test/Acme.Web/1.0.0");
        // PreDeploy runs in the installation before the files are rewritten; Deploy after.
        let marker = format!(
            "predeploy in {} sees name=#{{AppName}} key=#{{ApiKey}}",
            installed.display()
        );
        assert!(raw.contains(&marker), "no '{marker}' in {raw}");
        let sent = raw.lines().any(|line| {
            line.contains("Sent package Acme.Web 1.0.0 (")
                && line.ends_with(&format!("bytes) to deployment target {name}"))
        });
        assert!(sent, "{raw}");
        assert!(raw.contains(&format!("greeting: hello {name}")), "{raw}");
        // The files on the target hold the values; the log never shows the secret.
        let conf = std::fs::read_to_string(installed.join("config/app.conf")).unwrap();
        assert_eq!(conf, "name=shop key=k3y-never-shown");
        let settings = std::fs::read_to_string(installed.join("appsettings.json")).unwrap();
        assert!(settings.contains("\"Mode\": \"prod\""), "{settings}");
        // The package sits in the agent's cache under its hash.
        let cached: Vec<_> = std::fs::read_dir(home.path().join("packages"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(cached.len(), 1, "{cached:?}");
        assert_eq!(cached[0].len(), 64, "{cached:?}");
    }
    assert_eq!(
        raw.matches("deploy sees name=shop key=********").count(),
        2,
        "{raw}"
    );
    assert_eq!(raw.matches("postdeploy in python").count(), 2, "{raw}");
    assert!(!raw.contains("k3y-never-shown"), "{raw}");
    let parts = target_parts(client, &task).await;
    assert_eq!(parts.len(), 2, "{parts:?}");

    // Again: a fresh folder on each target, and no bytes sent.
    let (_, finished, raw) = deploy_web_to_test(client).await;
    assert_eq!(finished["State"], "Success", "{raw}");
    for name in ["web-01", "web-02"] {
        let line =
            format!("Package Acme.Web 1.0.0 was found in the cache of deployment target {name}");
        assert!(raw.contains(&line), "no '{line}' in {raw}");
    }
    assert!(!raw.contains("Sent package"), "{raw}");
    assert!(raw.matches("Acme.Web/1.0.0_1").count() >= 2, "{raw}");
    listening.terminate(Duration::from_secs(10)).await;
    polling.terminate(Duration::from_secs(10)).await;
    app.stop().await;
}

/// Waits until a health check of the `Test` environment finds every agent there healthy.
async fn agents_in_test_become_healthy(app: &InProcess) {
    let env = app
        .client
        .get("/api/Spaces-1/environments?name=Test")
        .await
        .expect(200)["Items"][0]["Id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        becomes_healthy(app, &env).await,
        "the agents never became healthy"
    );
}

/// Releases and deploys `Web` to `Test`; the task id, the finished task and its raw log.
async fn deploy_web_to_test(
    client: &cuttle_testkit::Client,
) -> (String, serde_json::Value, String) {
    let task = cuttle_testkit::flow::release_and_deploy(client, "Spaces-1", "Web", "Test").await;
    let finished = client.wait_for_task(&task, Duration::from_secs(90)).await;
    let raw = client
        .get(&format!("/api/Spaces-1/tasks/{task}/raw"))
        .await
        .expect(200);
    (task, finished, raw.as_str().unwrap().to_owned())
}

async fn script_steps_with_packages_run_on_agents_and_their_artifacts_come_back(mode: Mode) {
    let (app, comms) = start_with_polling(mode).await;
    let client = &app.client;
    let tools = zip_bytes(&[
        (
            "tools/run.sh",
            b"echo \"tool got '$1' in $(basename \"$PWD\") and reads $(cat settings.conf)\"\n",
        ),
        ("settings.conf", b"region=#{Region}"),
    ]);
    push(client, "Spaces-1", "Acme.Tools.1.0.0.zip", tools)
        .await
        .expect(201);
    let project =
        cuttle_testkit::flow::project_with_script(client, "Spaces-1", "Test", "Web", "true").await;
    let process_path = format!("/api/Spaces-1/projects/{project}/deploymentprocesses");
    let mut process = client.get(&process_path).await.expect(200);
    let package = |name: &str, extract: &str| {
        json!({"Name": name, "PackageId": "Acme.Tools", "FeedId": "feeds-builtin",
               "AcquisitionLocation": "Server", "Properties": {"Extract": extract}})
    };
    process["Steps"] = json!([
        {
            "Name": "Inline",
            "Properties": {"Octopus.Action.TargetRoles": "web-server"},
            "Actions": [{
                "Name": "Inline", "ActionType": "Octopus.Script",
                "Properties": {
                    "Octopus.Action.Script.ScriptSource": "Inline",
                    "Octopus.Action.Script.Syntax": "Bash",
                    "Octopus.Action.Script.ScriptBody":
                        "echo \"inline on #{Octopus.Machine.Name} reads $(cat Tools/settings.conf), has $(ls *.zip)\"\necho \"made on #{Octopus.Machine.Name}\" > note.txt\nnew_octopusartifact \"$PWD/note.txt\" \"note-#{Octopus.Machine.Name}.txt\"",
                    "Octopus.Action.EnabledFeatures": "Octopus.Features.SubstituteInFiles",
                    "Octopus.Action.SubstituteInFiles.TargetFiles": "Tools/*.conf"
                },
                "Packages": [package("Tools", "True"), package("Raw", "False")]
            }]
        },
        {
            "Name": "From package",
            "Properties": {"Octopus.Action.TargetRoles": "web-server"},
            "Actions": [{
                "Name": "From package", "ActionType": "Octopus.Script",
                "Properties": {
                    "Octopus.Action.Script.ScriptSource": "Package",
                    "Octopus.Action.Script.ScriptFileName": "tools/run.sh",
                    "Octopus.Action.Script.ScriptParameters": "'#{Region} now'",
                    "Octopus.Action.EnabledFeatures": "Octopus.Features.SubstituteInFiles",
                    "Octopus.Action.SubstituteInFiles.TargetFiles": "settings.conf"
                },
                "Packages": [package("", "True")]
            }]
        }
    ]);
    client.put(&process_path, process).await.expect(200);
    set_variables(
        client,
        &project,
        json!([{"Name": "Region", "Value": "eu-west"}]),
    )
    .await;

    let (listening_home, polling_home, mut listening, mut polling) = web_agents(&app, &comms).await;

    let (task, finished, raw) = deploy_web_to_test(client).await;
    assert_eq!(finished["State"], "Success", "{raw}");
    for name in ["web-01", "web-02"] {
        let line = format!("inline on {name} reads region=eu-west, has Acme.Tools.1.0.0.zip");
        assert!(raw.contains(&line), "no '{line}' in {raw}");
    }
    // The script inside the package runs in the job's staging folder, named after the job.
    assert_eq!(
        raw.matches("tool got 'eu-west now' in ").count(),
        2,
        "{raw}"
    );
    assert_eq!(raw.matches("and reads region=eu-west").count(), 2, "{raw}");
    // The artifact each script published on its agent is collected through the link.
    let artifacts = client
        .get(&format!("/api/Spaces-1/artifacts?regarding={task}"))
        .await
        .expect(200);
    assert_eq!(artifacts["TotalResults"], 2, "{artifacts}");
    for name in ["web-01", "web-02"] {
        let artifact = artifacts["Items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["Filename"] == format!("note-{name}.txt"))
            .unwrap_or_else(|| panic!("no artifact of {name} in {artifacts}"));
        let content = reqwest::Client::new()
            .get(format!(
                "{}/api/Spaces-1/artifacts/{}/content",
                client.base,
                artifact["Id"].as_str().unwrap()
            ))
            .header("X-Octopus-ApiKey", &client.api_key)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(content, format!("made on {name}\n"));
    }
    for home in [&listening_home, &polling_home] {
        // Staging and working folders go once the worker has what it needs; the package stays
        // cached.
        let staging = std::fs::read_dir(home.path().join("staging"))
            .unwrap()
            .count();
        assert_eq!(staging, 0);
        let work = std::fs::read_dir(home.path().join("work")).unwrap().count();
        assert_eq!(work, 0);
        let cached = std::fs::read_dir(home.path().join("packages"))
            .unwrap()
            .count();
        assert_eq!(cached, 1);
    }
    listening.terminate(Duration::from_secs(10)).await;
    polling.terminate(Duration::from_secs(10)).await;
    app.stop().await;
}

/// A listening agent `web-01` and a polling agent `web-02` in `Test` with the role
/// `web-server`, both healthy: their homes and processes.
async fn web_agents(
    app: &InProcess,
    comms: &str,
) -> (tempfile::TempDir, tempfile::TempDir, Proc, Proc) {
    let listening_home = tempfile::tempdir().unwrap();
    let polling_home = tempfile::tempdir().unwrap();
    let listening = running_agent(app, listening_home.path(), "Test", "web-server", "web-01").await;
    let polling = polling_agent(app, polling_home.path(), comms, "web-server", "web-02");
    agents_in_test_become_healthy(app).await;
    (listening_home, polling_home, listening, polling)
}

/// Replaces the project's variables with `variables`.
async fn set_variables(
    client: &cuttle_testkit::Client,
    project: &str,
    variables: serde_json::Value,
) {
    let path = format!("/api/Spaces-1/projects/{project}/variables");
    let mut set = client.get(&path).await.expect(200);
    set["Variables"] = variables;
    client.put(&path, set).await.expect(200);
}

async fn deleting_a_polling_machine_deletes_its_queue_and_its_agent_can_register_again(mode: Mode) {
    let (app, comms) = start_with_polling(mode).await;
    let env = test_environment(&app).await;
    let home = tempfile::tempdir().unwrap();
    let args = [
        "--environment",
        "Test",
        "--role",
        "web",
        "--name",
        "poller",
        "--polling",
        "--server-comms",
        &comms,
    ];
    assert!(register(&app, home.path(), &args).status.success());
    // Registered but not running: a health check leaves its job on the agent's queue.
    let task = check_health(&app, &env).await;
    assert_eq!(task["State"], "Failed", "{task}");
    let machine = app.client.get("/api/Spaces-1/machines").await.expect(200)["Items"][0].clone();
    let uri = machine["Endpoint"]["Uri"].as_str().unwrap();
    let queue = cuttle_bus::QueueSpec::new(cuttle_contracts::queues::polling_agent(uri).unwrap());
    // Only the distributed broker can be looked at from here: embedded mode's bus lives inside
    // the server.
    let broker = match mode {
        Mode::Distributed => Some(cuttle_platform::connect_bus(app.config()).await.unwrap()),
        Mode::Embedded => None,
    };
    if let Some(bus) = &broker {
        assert_eq!(bus.queue_depth(&queue).await.unwrap(), 1);
    }
    let id = machine["Id"].as_str().unwrap();
    app.client
        .delete(&format!("/api/Spaces-1/machines/{id}"))
        .await
        .expect(200);
    if let Some(bus) = &broker {
        // Gone with its job (asking for the depth declares it again, empty).
        assert_eq!(bus.queue_depth(&queue).await.unwrap(), 0);
    }

    // The same agent registers again (same subscription), runs, and is healthy.
    assert!(register(&app, home.path(), &args).status.success());
    let mut agent = start_agent("poller", home.path());
    assert!(
        becomes_healthy(&app, &env).await,
        "the agent registered again never became healthy"
    );
    agent.terminate(Duration::from_secs(10)).await;
    app.stop().await;
}
