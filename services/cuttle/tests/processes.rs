//! Cuttle as real processes: the embedded `cuttle server` binary, and distributed mode with each
//! service its own process. Here processes are killed mid-task to prove no task is ever stuck.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot unwrap has failed; the panic says where"
)]

mod common;

use common::{Distributed, cuttle_binary, free_port, logs};
use cuttle_testkit::{Client, flow};
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(40);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cuttle_server_prints_a_key_serves_the_api_and_keeps_data_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let start = || {
        Command::new(cuttle_binary())
            .args([
                "server",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(dir.path())
            .env_remove("CUTTLE_ADMIN_API_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut first = start();
    let client = Client::new(format!("http://127.0.0.1:{port}"), "");
    client
        .wait_until_up("/api", Duration::from_secs(20))
        .await
        .unwrap();
    // The first start prints the URL and the administrator's key.
    let mut stdout = first.stdout.take().unwrap();
    let printed = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut text = String::new();
        let mut buffer = [0u8; 4096];
        while !text.contains("new-api-key") {
            match stdout.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => text.push_str(&String::from_utf8_lossy(&buffer[..n])),
            }
        }
        text
    })
    .await
    .unwrap();
    assert!(
        printed.contains(&format!("http://127.0.0.1:{port}")),
        "{printed}"
    );
    let key = printed
        .split_whitespace()
        .find(|w| w.starts_with("API-"))
        .expect("an API key is printed")
        .to_owned();
    let client = Client::new(client.base.clone(), key.clone());
    flow::project_with_script(&client, "Spaces-1", "Dev", "Persisted", "echo hello").await;
    let task = flow::release_and_deploy(&client, "Spaces-1", "Persisted", "Dev").await;
    assert_eq!(client.wait_for_task(&task, WAIT).await["State"], "Success");
    let raw = client
        .get(&format!("/api/Spaces-1/tasks/{task}/raw"))
        .await
        .expect(200);
    assert!(raw.as_str().unwrap().contains("hello"));

    // SIGTERM stops it gracefully; a second start finds the same data and prints no new key.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::task::spawn_blocking(move || first.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
    let mut second = start();
    client
        .wait_until_up("/api", Duration::from_secs(20))
        .await
        .unwrap();
    let project = client
        .get("/api/Spaces-1/projects/persisted")
        .await
        .expect(200);
    assert_eq!(project["Name"], "Persisted");
    assert_eq!(
        client.get(&format!("/api/tasks/{task}")).await.expect(200)["State"],
        "Success"
    );
    second.kill().unwrap();
    second.wait().unwrap();

    // A new key can be issued offline for the same data directory.
    let output = Command::new(cuttle_binary())
        .args(["admin", "new-api-key", "--data-dir"])
        .arg(dir.path())
        .env_remove("CUTTLE_ADMIN_API_KEY")
        .output()
        .unwrap();
    assert!(output.status.success());
    let new_key = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(new_key.starts_with("API-") && new_key != key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_in_its_own_process_runs_a_deployment() {
    let platform = Distributed::start().await;
    let client = &platform.client;
    flow::project_with_script(client, "Spaces-1", "Dev", "Hello", "echo hello").await;
    let task = flow::release_and_deploy(client, "Spaces-1", "Hello", "Dev").await;
    let finished = client.wait_for_task(&task, WAIT).await;
    assert_eq!(
        finished["State"],
        "Success",
        "{finished}\n{}",
        logs(&platform.env)
    );
    let raw = client
        .get(&format!("/api/Spaces-1/tasks/{task}/raw"))
        .await
        .expect(200);
    assert!(raw.as_str().unwrap().contains("hello"));
    platform.stop().await;
}

async fn wait_for_line(client: &Client, task: &str, needle: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let raw = client
            .get(&format!("/api/Spaces-1/tasks/{task}/raw"))
            .await
            .expect(200);
        if raw.as_str().unwrap_or_default().contains(needle) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "'{needle}' never appeared: {raw}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_script_fails_the_step_with_a_reason_and_a_new_worker_takes_over() {
    let mut platform = Distributed::start().await;
    let client = platform.client.clone();
    flow::project_with_script(
        &client,
        "Spaces-1",
        "Dev",
        "Fragile",
        "echo script-started\nsleep 31.337\necho script-finished",
    )
    .await;
    let task = flow::release_and_deploy(&client, "Spaces-1", "Fragile", "Dev").await;
    wait_for_line(&client, &task, "script-started").await;
    platform.workers[0].kill();
    let finished = client.wait_for_task(&task, WAIT).await;
    assert_eq!(
        finished["State"],
        "Failed",
        "{finished}\n{}",
        logs(&platform.env)
    );
    assert!(
        finished["ErrorMessage"]
            .as_str()
            .unwrap()
            .contains("stopped responding"),
        "{finished}"
    );
    let raw = client
        .get(&format!("/api/Spaces-1/tasks/{task}/raw"))
        .await
        .expect(200);
    assert!(raw.as_str().unwrap().contains("no heartbeat"), "{raw}");

    // A replacement worker stops the script the dead one left running, then runs the next
    // deployment.
    platform.add_worker();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let left = Command::new("pgrep")
            .args(["-f", "sleep 31.337"])
            .output()
            .unwrap();
        if left.stdout.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the orphaned script still runs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    flow::set_script(&client, "Spaces-1", "Projects-1", "echo recovered").await;
    let next = flow::release_and_deploy(&client, "Spaces-1", "Fragile", "Dev").await;
    assert_eq!(
        client.wait_for_task(&next, WAIT).await["State"],
        "Success",
        "{}",
        logs(&platform.env)
    );
    platform.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orchestrator_killed_mid_task_is_replaced_and_the_task_still_finishes() {
    let mut platform = Distributed::start().await;
    let client = platform.client.clone();
    flow::project_with_script(
        &client,
        "Spaces-1",
        "Dev",
        "Steady",
        "echo script-started\nsleep 3\necho script-finished",
    )
    .await;
    let task = flow::release_and_deploy(&client, "Spaces-1", "Steady", "Dev").await;
    wait_for_line(&client, &task, "script-started").await;
    platform.orchestrator.kill();
    // The worker's reports wait in the broker; a new orchestrator picks them up.
    platform.orchestrator = common::spawn_cuttle(
        &platform.env,
        "orchestrator-2",
        &[
            "orchestrator",
            "--ops-listen",
            &format!("127.0.0.1:{}", free_port()),
        ],
    );
    let finished = client.wait_for_task(&task, WAIT).await;
    assert_eq!(
        finished["State"],
        "Success",
        "{finished}\n{}",
        logs(&platform.env)
    );
    let raw = client
        .get(&format!("/api/Spaces-1/tasks/{task}/raw"))
        .await
        .expect(200);
    assert!(raw.as_str().unwrap().contains("script-finished"));
    // And cancel still reaches the worker through the new orchestrator.
    flow::set_script(
        &client,
        "Spaces-1",
        "Projects-1",
        "echo script-started\nsleep 60",
    )
    .await;
    let long = flow::release_and_deploy(&client, "Spaces-1", "Steady", "Dev").await;
    wait_for_line(&client, &long, "script-started").await;
    client
        .post(&format!("/api/tasks/{long}/cancel"), json!({}))
        .await
        .expect(200);
    assert_eq!(
        client.wait_for_task(&long, WAIT).await["State"],
        "Canceled",
        "{}",
        logs(&platform.env)
    );
    platform.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_gracefully_mid_script_fails_its_step_instead_of_letting_later_steps_run()
{
    let mut platform = Distributed::start().await;
    let client = platform.client.clone();
    let project = flow::project_with_script(
        &client,
        "Spaces-1",
        "Dev",
        "Interrupted",
        "echo script-started\nsleep 30",
    )
    .await;
    // A second step that must not run once the first did not complete.
    let path = format!("/api/Spaces-1/projects/{project}/deploymentprocesses");
    let mut process = client.get(&path).await.expect(200);
    let mut second = process["Steps"][0].clone();
    second["Id"] = json!("");
    second["Name"] = json!("Afterwards");
    second["Actions"][0]["Id"] = json!("");
    second["Actions"][0]["Name"] = json!("Afterwards");
    second["Actions"][0]["Properties"]["Octopus.Action.Script.ScriptBody"] =
        json!("echo second-step-ran");
    process["Steps"].as_array_mut().unwrap().push(second);
    client.put(&path, process).await.expect(200);
    let task = flow::release_and_deploy(&client, "Spaces-1", "Interrupted", "Dev").await;
    wait_for_line(&client, &task, "script-started").await;
    // A second worker is ready to take the next step, if there were one to take.
    platform.add_worker();
    let stopped = platform.workers[0].terminate(Duration::from_secs(15)).await;
    assert!(
        stopped.is_some_and(|s| s.success()),
        "the worker exits 0 on SIGTERM"
    );
    let finished = client.wait_for_task(&task, WAIT).await;
    assert_eq!(
        finished["State"],
        "Failed",
        "{finished}\n{}",
        logs(&platform.env)
    );
    assert!(
        finished["ErrorMessage"]
            .as_str()
            .unwrap()
            .contains("shut down"),
        "{finished}"
    );
    let raw = client
        .get(&format!("/api/Spaces-1/tasks/{task}/raw"))
        .await
        .expect(200);
    assert!(!raw.as_str().unwrap().contains("second-step-ran"), "{raw}");
    platform.stop().await;
}
