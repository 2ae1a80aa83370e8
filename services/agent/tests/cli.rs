//! Runs the built `cuttle-agent` binary the way an operator would.

// clippy's allow-unwrap-in-tests covers #[test] functions only, not the helpers beside them.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

const AGENT: &str = env!("CARGO_BIN_EXE_cuttle-agent");

/// Runs the agent to completion with `args`.
fn agent(args: &[&str]) -> Output {
    Command::new(AGENT).args(args).output().unwrap()
}

/// A directory unique to one test, removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(test: &str) -> Self {
        let path = std::env::temp_dir().join(format!("cuttle-agent-{test}-{}", std::process::id()));
        // A leftover from an interrupted run would hide whether the agent creates the directory.
        if path.exists() {
            std::fs::remove_dir_all(&path).unwrap();
        }
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // Best effort: a leftover scratch directory in /tmp harms nothing.
        if let Err(error) = std::fs::remove_dir_all(&self.0) {
            eprintln!("could not remove {}: {error}", self.0.display());
        }
    }
}

/// Kills `child` if the test has not finished within a minute, so a hung agent fails the test
/// instead of hanging the suite; dropping the returned sender disarms it.
fn watchdog(child: &Child) -> mpsc::Sender<()> {
    let (done, finished) = mpsc::channel::<()>();
    let pid = child.id().to_string();
    thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = finished.recv_timeout(Duration::from_secs(60))
        {
            let killed = Command::new("kill").args(["-KILL", &pid]).status();
            eprintln!("watchdog killed the agent {pid}: {killed:?}");
        }
    });
    done
}

/// Starts `agent run`, waits for it to report that it started, sends `signal` and returns the
/// exit status and everything the agent wrote to standard error.
fn run_until_signalled(command: &mut Command, signal: &str) -> (std::process::ExitStatus, String) {
    let mut child = command
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let disarm = watchdog(&child);
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    while !log.contains("agent started") {
        let read = stderr.read_line(&mut log).unwrap();
        assert_ne!(read, 0, "agent exited before starting:\n{log}");
    }
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    stderr.read_to_string(&mut log).unwrap();
    let status = child.wait().unwrap();
    drop(disarm);
    (status, log)
}

#[cfg(unix)]
fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
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
fn register_is_refused_with_exit_code_2() {
    for args in [
        &["register"][..],
        &[
            "register",
            "--server",
            "https://cuttle.example",
            "--api-key",
            "API-X",
        ][..],
    ] {
        let output = agent(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(
            stderr
                .contains("registration with a Cuttle server is not available yet in this version"),
            "{stderr}"
        );
    }
}

#[test]
fn unknown_commands_are_usage_errors_with_exit_code_2() {
    let output = agent(&["listen"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8(output.stderr).unwrap().contains("listen"));
}

#[cfg(unix)]
#[test]
fn run_creates_a_private_home_and_stops_cleanly_on_sigterm() {
    let scratch = ScratchDir::new("sigterm");
    let home = scratch.0.join("nested").join("home");
    let mut command = Command::new(AGENT);
    command.arg("--home").arg(&home).env("RUST_LOG", "info");
    let (status, log) = run_until_signalled(&mut command, "TERM");
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains(&home.display().to_string()), "{log}");
    assert!(
        log.contains("agent stopped after receiving SIGTERM"),
        "{log}"
    );
    assert_eq!(mode_of(&home), 0o700);
}

#[cfg(unix)]
#[test]
fn run_defaults_its_home_to_the_xdg_data_directory_and_stops_on_sigint() {
    let scratch = ScratchDir::new("sigint");
    let mut command = Command::new(AGENT);
    command
        .env_remove("CUTTLE_AGENT_HOME")
        .env("XDG_DATA_HOME", &scratch.0)
        .env("RUST_LOG", "info");
    let (status, log) = run_until_signalled(&mut command, "INT");
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        log.contains("agent stopped after receiving SIGINT"),
        "{log}"
    );
    assert_eq!(mode_of(&scratch.0.join("cuttle-agent")), 0o700);
}
