//! The Cuttle agent against a real server, in both modes: `cuttle-agent register` creates the
//! deployment target through the machines API and pins the server's certificate, and an agent
//! started with `cuttle-agent run` serves whoever holds that certificate over mutual TLS, and
//! nobody else.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot unwrap has failed; the panic says where"
)]

mod common;

use common::{InProcess, Proc, free_port};
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
    app.client
        .post("/api/Spaces-1/environments", json!({"Name": "Test"}))
        .await
        .expect(201);
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
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let output = register(
        app,
        home,
        &[
            "--environment",
            env,
            "--role",
            role,
            "--name",
            name,
            "--listen",
            &listen,
        ],
    );
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
    for _ in 0..200 {
        let raw = client
            .get(&format!("/api/Spaces-1/tasks/{task}/raw"))
            .await
            .expect(200);
        if raw.as_str().unwrap().contains("started") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // SIGKILL leaves the script (its own process group) to finish its 20 s on its own; a
    // restarted agent would stop it (services/agent/tests/serve.rs covers that).
    agent.kill();
    let finished = client.wait_for_task(&task, Duration::from_secs(60)).await;
    assert_eq!(finished["State"], "Failed", "{finished}");
    let error = finished["ErrorMessage"].as_str().unwrap();
    assert!(error.contains("web-01"), "{error}");
    app.stop().await;
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
    let env = app
        .client
        .post("/api/Spaces-1/environments", json!({"Name": "Test"}))
        .await
        .expect(201)["Id"]
        .as_str()
        .unwrap()
        .to_owned();
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
    let mut healthy = false;
    for _ in 0..20 {
        if check_health(&app, &env).await["State"] == "Success" {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(healthy, "the restarted agent never became healthy");
    let machine = &app.client.get("/api/Spaces-1/machines").await.expect(200)["Items"][0];
    assert_eq!(machine["HealthStatus"], "Healthy", "{machine}");
    agent.terminate(Duration::from_secs(10)).await;
    app.stop().await;
}
