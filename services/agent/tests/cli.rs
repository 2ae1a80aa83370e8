//! Runs the built `cuttle-agent` binary the way an operator would.

#![allow(clippy::unwrap_used)]

mod support;

use nix::sys::signal::Signal;
use std::process::{Command, Output};
use support::{AGENT, AgentHome};

/// Runs the agent to completion with `args`.
fn agent(args: &[&str]) -> Output {
    Command::new(AGENT)
        .args(args)
        .env_remove("CUTTLE_AGENT_HOME")
        .output()
        .unwrap()
}

#[test]
fn version_prints_the_agent_and_protocol_versions() {
    let output = agent(&["version"]);
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        stdout,
        format!(
            "cuttle-agent {}\nsupported protocol versions: cuttle-agent/1\n",
            env!("CARGO_PKG_VERSION")
        )
    );
}

#[test]
fn unknown_commands_are_usage_errors_with_exit_code_2() {
    let output = agent(&["listen"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8(output.stderr).unwrap().contains("listen"));
}

#[test]
fn register_without_a_communication_mode_is_a_usage_error() {
    let output = agent(&[
        "register",
        "--server",
        "https://cuttle.example",
        "--api-key",
        "API-X",
    ]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("--listen") && stderr.contains("--polling"),
        "{stderr}"
    );
}

#[test]
fn run_before_register_says_to_register_first() {
    let home = tempfile::tempdir().unwrap();
    let output = agent(&["--home", &home.path().display().to_string(), "run"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("cuttle-agent") && stderr.contains("register"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_stops_cleanly_on_sigterm() {
    let home = AgentHome::new();
    let agent = home.listening().start();
    agent.wait_for_log("agent started").await;
    let (status, log) = agent.stop_with(Signal::SIGTERM).await;
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains(&home.path().display().to_string()), "{log}");
    assert!(
        log.contains("agent stopped after receiving SIGTERM"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_stops_cleanly_on_sigint() {
    let home = AgentHome::new();
    let agent = home.listening().start();
    agent.wait_for_log("agent started").await;
    let (status, log) = agent.stop_with(Signal::SIGINT).await;
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        log.contains("agent stopped after receiving SIGINT"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polling_agent_keeps_retrying_while_the_server_is_unreachable() {
    let home = AgentHome::new();
    let address = format!("127.0.0.1:{}", support::free_port());
    let agent = home.polling(&address, "retryingagentaaaaaaa").start();
    // Three attempts prove the loop goes on after failures; the delays double between them.
    agent.wait_for_log("connect.attempt=3").await;
    assert!(agent.log().contains("could not connect to the server"));
    let (status, log) = agent.stop_with(Signal::SIGTERM).await;
    assert_eq!(status.code(), Some(0), "{log}");
}
