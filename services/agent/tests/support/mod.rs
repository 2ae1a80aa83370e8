//! Shared harness: a real `cuttle-agent run` child process in its own home, its log, and a
//! worker identity it trusts.
// clippy's allow-unwrap-in-tests covers #[test] functions only, not the helpers beside them.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use cuttle_agent_link::messages::{JobId, ScriptSyntax, StartScript};
use cuttle_agent_link::{
    AgentIdentity, LinkOptions, Requester, ScriptEvent, Thumbprint, TrustedThumbprints,
    WorkerIdentity, WorkerLink,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The built agent binary.
pub const AGENT: &str = env!("CARGO_BIN_EXE_cuttle-agent");

/// Fails a test that hangs instead of letting it run forever; never a timing assertion.
pub async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), future)
        .await
        .expect("the test hung")
}

/// Waits until `condition` holds, checking every 20 ms; hangs (and fails via `within`) if never.
pub async fn eventually(mut condition: impl FnMut() -> bool) {
    within(async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// An agent home with an identity, and the worker identity it will trust.
pub struct AgentHome {
    pub dir: tempfile::TempDir,
    pub agent: AgentIdentity,
    pub worker: WorkerIdentity,
}

impl AgentHome {
    pub fn new() -> AgentHome {
        let dir = tempfile::tempdir().unwrap();
        // Private, as the agent wants its home (it warns otherwise).
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        // Created here, before the agent starts, so the test knows the thumbprint to pin; the
        // agent loads the same files.
        let agent = AgentIdentity::load_or_create(dir.path()).unwrap();
        AgentHome {
            dir,
            agent,
            worker: WorkerIdentity::generate().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `agent.json` for listening on a free loopback port.
    pub fn listening(&self) -> &AgentHome {
        self.write_config(json!({
            "mode": "listening",
            "listen": "127.0.0.1:0",
            "subscription_id": "abcdefghijabcdefghij",
            "trusted_thumbprints": [self.worker.thumbprint().to_string()],
            "kill_grace_secs": 5,
        }));
        self
    }

    /// Writes `agent.json` for polling `address` with `subscription_id`.
    pub fn polling(&self, address: &str, subscription_id: &str) -> &AgentHome {
        self.write_config(json!({
            "mode": "polling",
            "server_comms": address,
            "subscription_id": subscription_id,
            "trusted_thumbprints": [self.worker.thumbprint().to_string()],
            "kill_grace_secs": 5,
        }));
        self
    }

    pub fn write_config(&self, config: Value) {
        std::fs::write(
            self.path().join("agent.json"),
            serde_json::to_string_pretty(&config).unwrap(),
        )
        .unwrap();
    }

    /// A worker link holding the trusted worker identity.
    pub fn worker_link(&self) -> WorkerLink {
        worker_link(&self.worker, self.agent.thumbprint())
    }

    /// Starts a listening agent and dials it as the worker it trusts: the agent, its address
    /// and the connection.
    pub async fn start_listening_and_dial(&self) -> (AgentProcess, String, Requester) {
        let agent = self.listening().start();
        let address = agent.listening_address().await;
        let requester = within(
            self.worker_link()
                .dial_agent(&address, self.agent.thumbprint()),
        )
        .await
        .unwrap();
        (agent, address, requester)
    }

    /// Starts `cuttle-agent run` in this home.
    pub fn start(&self) -> AgentProcess {
        self.start_with(|_| {})
    }

    /// Starts `cuttle-agent run` after `customize` adjusted the command (environment, PATH).
    pub fn start_with(&self, customize: impl FnOnce(&mut Command)) -> AgentProcess {
        let mut command = Command::new(AGENT);
        command
            .arg("--home")
            .arg(self.path())
            .arg("run")
            .env_remove("CUTTLE_AGENT_HOME")
            .env("RUST_LOG", "info,cuttle_agent_link=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        customize(&mut command);
        AgentProcess::spawn(command)
    }
}

/// A worker link trusting one agent thumbprint.
pub fn worker_link(worker: &WorkerIdentity, agent: Thumbprint) -> WorkerLink {
    let trusted: TrustedThumbprints = [agent].into_iter().collect();
    let options = LinkOptions {
        handshake_timeout: Duration::from_secs(10),
        ..LinkOptions::default()
    };
    WorkerLink::new(worker, trusted, options).unwrap()
}

/// A running agent process; stopped with SIGKILL when dropped, if still running.
pub struct AgentProcess {
    pub child: Child,
    log: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl AgentProcess {
    fn spawn(mut command: Command) -> AgentProcess {
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        // Read continuously, so the agent never blocks on a full pipe; echoed so that a failing
        // test shows what the agent said.
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                eprintln!("[agent] {line}");
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        AgentProcess {
            child,
            log,
            reader: Some(reader),
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    /// Everything the agent logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `text`.
    pub async fn wait_for_log(&self, text: &str) {
        let log = self.log.clone();
        let text = text.to_owned();
        within(async {
            while !log.lock().unwrap().contains(&text) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }

    /// Waits for "agent started" and returns the address it listens on.
    pub async fn listening_address(&self) -> String {
        self.wait_for_log("agent started").await;
        let log = self.log();
        let marker = "listen.address=";
        let start = log
            .find(marker)
            .expect("the agent logged no listen.address")
            + marker.len();
        log[start..].split_whitespace().next().unwrap().to_owned()
    }

    /// Sends `signal` and waits for the process to exit; returns its status and full log.
    pub async fn stop_with(mut self, signal: nix::sys::signal::Signal) -> (ExitStatus, String) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).unwrap();
        let mut child = std::mem::replace(&mut self.child, dummy_child());
        let status = within(tokio::task::spawn_blocking(move || child.wait().unwrap()))
            .await
            .unwrap();
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        (status, self.log())
    }
}

/// A process that has already exited, to leave behind in a consumed `AgentProcess`.
fn dummy_child() -> Child {
    let mut child = Command::new("true").spawn().unwrap();
    child.wait().unwrap();
    child
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // The test is over either way; a failure here only leaves a process to note.
            if let Err(err) = self.child.kill().and_then(|()| self.child.wait().map(drop)) {
                eprintln!("could not stop the agent {}: {err}", self.child.id());
            }
        }
    }
}

/// A bash script request for `job_id`.
pub fn bash(job_id: &str, body: &str) -> StartScript {
    StartScript {
        job_id: JobId(job_id.to_owned()),
        syntax: ScriptSyntax::Bash,
        body: body.to_owned(),
        environment: BTreeMap::new(),
        variables: BTreeMap::new(),
        files: Vec::new(),
        folder: None,
        args: Vec::new(),
        keep_files: false,
    }
}

/// What a script run produced, read to its end.
pub struct Finished {
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
    pub sequences: Vec<u64>,
    pub n_batches: usize,
    pub exit_code: i32,
}

/// Runs `script` through `requester` and collects everything it reports.
pub async fn run_script(requester: &Requester, script: StartScript) -> Finished {
    let run = requester.start_script(script).await.unwrap();
    read_to_end(run).await
}

/// Reads a started script's events until it finishes.
pub async fn read_to_end(mut run: cuttle_agent_link::ScriptRun) -> Finished {
    use cuttle_agent_link::messages::OutputStream;
    let mut finished = Finished {
        stdout: Vec::new(),
        stderr: Vec::new(),
        sequences: Vec::new(),
        n_batches: 0,
        exit_code: i32::MIN,
    };
    while let Some(event) = within(run.next()).await {
        match event.unwrap() {
            ScriptEvent::Output(lines) => {
                finished.n_batches += 1;
                for line in lines {
                    finished.sequences.push(line.sequence);
                    match line.stream {
                        OutputStream::Stdout => finished.stdout.push(line.text),
                        OutputStream::Stderr => finished.stderr.push(line.text),
                    }
                }
            }
            ScriptEvent::Finished { exit_code } => finished.exit_code = exit_code,
        }
    }
    finished
}

/// Whether a process is gone: no such pid, or a zombie nobody reaped yet.
pub fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the parenthesised command name: "123 (sleep) Z ...".
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// A free loopback port: bound, then released.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The home path as text.
pub fn display(path: &Path) -> String {
    path.display().to_string()
}

/// A path under the home.
pub fn under(home: &Path, parts: &[&str]) -> PathBuf {
    parts
        .iter()
        .fold(home.to_path_buf(), |path, part| path.join(part))
}
