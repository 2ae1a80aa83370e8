//! The official Octopus Deploy TypeScript client (`@octopusdeploy/api-client`, pinned in
//! `tests/e2e-ts/package.json`) pushes a ~20 MB package with build information to the built-in
//! feed and drives a whole deployment against real Cuttle processes: the
//! `cuttle server` binary in embedded mode, and one process per service in distributed mode.
//! The flow itself lives in `tests/e2e-ts/flow.mjs`; this file starts the servers, installs the
//! client with `npm ci` when needed and runs the flow under a time limit.
//!
//! Node.js and npm are required: a machine without them fails these tests (run `infra/node.sh`),
//! because a skipped wire-compatibility test would look like a passing one.

mod common;

use common::Distributed;
use cuttle_testkit::{Client, Mode, TestEnv};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

/// How long one run of the flow may take, server start excluded.
const FLOW_TIMEOUT: Duration = Duration::from_secs(120);

/// How long `npm ci` may take (it downloads the client on a fresh checkout).
const NPM_CI_TIMEOUT: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_typescript_client_deploys_a_bash_step_in_embedded_mode() {
    let project = install_client().await;
    let env = TestEnv::new(Mode::Embedded)
        .await
        .expect("test environment");
    let port = common::free_port();
    let data_dir = env.config.server.data_dir.display().to_string();
    let server = common::spawn_cuttle(
        &env,
        "server",
        &[
            "server",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            &data_dir,
        ],
    );
    let client = Client::new(format!("http://127.0.0.1:{port}"), env.api_key.clone());
    if let Err(err) = client.wait_until_up("/api", Duration::from_secs(20)).await {
        panic!("{err:#}\n{}", common::logs(&env));
    }

    let outcome = run_flow(&project, env.dir.path(), &client.base, &env.api_key).await;
    let logs = common::logs(&env);
    // Dropping the process kills it; the data directory goes with `env`.
    drop(server);
    env.cleanup().await;
    report(outcome, &logs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_typescript_client_deploys_a_bash_step_in_distributed_mode() {
    let project = install_client().await;
    let distributed = Distributed::start().await;

    let outcome = run_flow(
        &project,
        distributed.env.dir.path(),
        &distributed.client.base,
        &distributed.env.api_key,
    )
    .await;
    let logs = common::logs(&distributed.env);
    distributed.stop().await;
    report(outcome, &logs);
}

/// What one run of `node flow.mjs` produced.
struct FlowRun {
    /// Whether node exited with status 0 within the time limit.
    succeeded: bool,
    /// How the run ended, in a sentence.
    ending: String,
    /// The result line and anything else node printed on stdout.
    stdout: String,
    /// The flow's progress (one line per HTTP exchange) and failure messages.
    stderr: String,
    /// Wall-clock time of the run.
    elapsed: Duration,
}

/// Runs the flow against `url` with `api_key`. Output goes to files in `dir` rather than pipes,
/// so a run killed at the time limit still shows how far it got.
async fn run_flow(project: &Path, dir: &Path, url: &str, api_key: &str) -> FlowRun {
    let stdout_path = dir.join("node-flow.stdout.txt");
    let stderr_path = dir.join("node-flow.stderr.txt");
    let stdout = std::fs::File::create(&stdout_path).expect("node stdout file");
    let stderr = std::fs::File::create(&stderr_path).expect("node stderr file");
    let started = Instant::now();
    let mut child = tokio::process::Command::new("node")
        .arg("flow.mjs")
        .current_dir(project)
        .env("CUTTLE_URL", url)
        .env("CUTTLE_API_KEY", api_key)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|err| {
            panic!("cannot start node ({err}); run infra/node.sh to install Node.js and npm")
        });
    let (succeeded, ending) = match tokio::time::timeout(FLOW_TIMEOUT, child.wait()).await {
        Ok(Ok(status)) => (
            status.success(),
            format!("node flow.mjs exited with {status}"),
        ),
        Ok(Err(err)) => panic!("waiting for node failed: {err}"),
        Err(_) => {
            if let Err(err) = child.kill().await {
                eprintln!("could not kill the timed-out node process: {err}");
            }
            (
                false,
                format!("node flow.mjs did not finish within {FLOW_TIMEOUT:?} and was killed"),
            )
        }
    };
    let elapsed = started.elapsed();
    let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    FlowRun {
        succeeded,
        ending,
        stdout,
        stderr,
        elapsed,
    }
}

/// Passes with the flow's result line, or fails with everything needed to see why.
fn report(run: FlowRun, server_logs: &str) {
    let FlowRun {
        succeeded,
        ending,
        stdout,
        stderr,
        elapsed,
    } = run;
    assert!(
        succeeded,
        "{ending} after {elapsed:?}\n--- node stdout ---\n{stdout}\n--- node stderr ---\n{stderr}\n{server_logs}"
    );
    let result: Value = stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("the flow printed no JSON result line\n--- node stdout ---\n{stdout}\n--- node stderr ---\n{stderr}"));
    assert_eq!(
        result["ok"],
        Value::Bool(true),
        "unexpected result line: {result}"
    );
    assert!(
        result["ids"]["package"]
            .as_str()
            .is_some_and(|id| id.starts_with("packages-")),
        "no package id in {result}"
    );
    assert!(
        result["ids"]["task"]
            .as_str()
            .is_some_and(|id| id.starts_with("ServerTasks-")),
        "no task id in {result}"
    );
    println!("flow finished in {elapsed:?}: {result}");
}

/// The npm project at `tests/e2e-ts`, with its dependencies installed.
///
/// nextest runs each test in its own process, so two tests can get here at once on a fresh
/// checkout. A lock file created with `create_new` makes one of them run `npm ci` while the
/// others wait; each checks again under the lock, so `npm ci` runs at most once.
async fn install_client() -> PathBuf {
    let project = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/e2e-ts");
    let project = project
        .canonicalize()
        .unwrap_or_else(|err| panic!("{}: {err}", project.display()));
    require_tool("node");
    require_tool("npm");
    if is_installed(&project) {
        return project;
    }
    let _lock = InstallLock::acquire(&project.join(".npm-ci.lock")).await;
    if !is_installed(&project) {
        let install = tokio::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&project)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(NPM_CI_TIMEOUT, install).await {
            Ok(Ok(output)) => assert!(
                output.status.success(),
                "npm ci in {} failed ({})\n{}\n{}",
                project.display(),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
            Ok(Err(err)) => {
                panic!("cannot run npm ci ({err}); run infra/node.sh to install Node.js and npm")
            }
            Err(_) => panic!(
                "npm ci in {} did not finish within {NPM_CI_TIMEOUT:?}",
                project.display()
            ),
        }
        assert!(
            is_installed(&project),
            "npm ci succeeded but {} has no installed client",
            project.display()
        );
    }
    project
}

/// Whether `npm ci` completed: npm writes `node_modules/.package-lock.json` last, so a partial
/// install (interrupted, or still running elsewhere) does not count.
fn is_installed(project: &Path) -> bool {
    let modules = project.join("node_modules");
    modules.join(".package-lock.json").is_file()
        && modules
            .join("@octopusdeploy/api-client/package.json")
            .is_file()
}

/// Fails the test unless `tool --version` runs.
fn require_tool(tool: &str) {
    let found = std::process::Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(
        found.is_ok_and(|status| status.success()),
        "`{tool}` is not available: these tests drive Cuttle with the official TypeScript client and need Node.js and npm; run infra/node.sh"
    );
}

/// A lock file held for the duration of `npm ci`, removed on drop.
struct InstallLock {
    path: PathBuf,
}

impl InstallLock {
    /// Lock files older than this are left over from a killed run and are taken over.
    const STALE_AFTER: Duration = Duration::from_secs(600);

    /// Creates the lock file, waiting while another process holds it.
    async fn acquire(path: &Path) -> InstallLock {
        let deadline = Instant::now() + NPM_CI_TIMEOUT + Duration::from_secs(30);
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
            {
                Ok(_) => {
                    return InstallLock {
                        path: path.to_owned(),
                    };
                }
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                    if Self::is_stale(path) {
                        // Another waiter may remove it first; either way the next attempt decides.
                        if let Err(err) = std::fs::remove_file(path) {
                            eprintln!("could not remove stale lock {}: {err}", path.display());
                        }
                        continue;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{} is still held; is another npm ci stuck?",
                        path.display()
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(err) => panic!("cannot create {}: {err}", path.display()),
            }
        }
    }

    fn is_stale(path: &Path) -> bool {
        let modified = std::fs::metadata(path).and_then(|m| m.modified());
        modified.is_ok_and(|time| {
            SystemTime::now().duration_since(time).unwrap_or_default() > Self::STALE_AFTER
        })
    }
}

impl Drop for InstallLock {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_file(&self.path) {
            eprintln!("could not remove lock {}: {err}", self.path.display());
        }
    }
}
