//! Shared harness of the integration tests: starts Cuttle in-process (all services in one
//! process, on either mode's backends) or as real processes (`cuttle server`, or one process per
//! service on the distributed backends), and tears it down.
#![allow(dead_code)]

use cuttle_testkit::{Client, Mode, TestEnv};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Generates one `#[tokio::test]` per mode from an `async fn(Mode)`.
#[macro_export]
macro_rules! both_modes {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name(cuttle_testkit::Mode::Embedded).await }
            )*
        }
        mod distributed {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name(cuttle_testkit::Mode::Distributed).await }
            )*
        }
    };
}

/// Cuttle running inside the test process.
pub struct InProcess {
    /// Authenticated client.
    pub client: Client,
    env: Option<TestEnv>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl InProcess {
    /// Starts every service in this process on `mode`'s backends.
    pub async fn start(mode: Mode) -> InProcess {
        InProcess::start_with(mode, |_| {}).await
    }

    /// [`InProcess::start`] with settings changed by `configure` (e.g. a polling port).
    pub async fn start_with(
        mode: Mode,
        configure: impl FnOnce(&mut cuttle_platform::Config),
    ) -> InProcess {
        let mut env = TestEnv::new(mode).await.expect("test environment");
        configure(&mut env.config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let prepared = cuttle::prepare_embedded(env.config.clone())
            .await
            .expect("backends must be reachable (run infra/up.sh)");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(cuttle::serve_all(prepared, listener, async move {
            let _ = stopped.await;
        }));
        let client = Client::new(format!("http://{address}"), env.api_key.clone());
        client
            .wait_until_up("/api", Duration::from_secs(10))
            .await
            .expect("api up");
        InProcess {
            client,
            env: Some(env),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The configuration the services run with.
    pub fn config(&self) -> &cuttle_platform::Config {
        &self.env.as_ref().expect("running").config
    }

    /// Stops the services and drops the test's database.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            match tokio::time::timeout(Duration::from_secs(15), task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(err))) => panic!("server ended with an error: {err:#}"),
                Ok(Err(err)) => panic!("server task panicked: {err}"),
                Err(_) => panic!("server did not stop within 15 s"),
            }
        }
        if let Some(env) = self.env.take() {
            env.cleanup().await;
        }
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The built `cuttle` binary.
pub fn cuttle_binary() -> &'static str {
    env!("CARGO_BIN_EXE_cuttle")
}

/// One child process, killed on drop.
pub struct Proc {
    /// Name for messages.
    pub name: String,
    /// The child.
    pub child: Child,
}

impl Proc {
    /// Kills the process with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM, as an orchestrator stopping a container would, and waits up to `limit` for
    /// the process to exit on its own (flushing what it buffers); kills it after that. Returns
    /// the exit status, `None` when it had to be killed.
    pub async fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        if let Err(err) = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM) {
            eprintln!("could not send SIGTERM to {}: {err}", self.name);
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(None) | Err(_) => {
                    eprintln!(
                        "{} did not exit within {limit:?} of SIGTERM; killing it",
                        self.name
                    );
                    self.kill();
                    return None;
                }
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `cuttle <args>` with the environment's variables; output goes to files in the test
/// directory (printed when a test fails via `logs`).
pub fn spawn_cuttle(env: &TestEnv, name: &str, args: &[&str]) -> Proc {
    spawn_cuttle_with(env, name, args, &[])
}

/// [`spawn_cuttle`] with extra environment variables, set after (so overriding) the
/// environment's own.
pub fn spawn_cuttle_with(
    env: &TestEnv,
    name: &str,
    args: &[&str],
    extra_env: &[(String, String)],
) -> Proc {
    let log = std::fs::File::create(env.dir.path().join(format!("{name}.log"))).expect("log file");
    let err = log.try_clone().expect("log file");
    let child = Command::new(cuttle_binary())
        .args(args)
        .envs(env.env_vars())
        .envs(extra_env.iter().map(|(key, value)| (key, value)))
        .env(
            "RUST_LOG",
            std::env::var("CUTTLE_TEST_CHILD_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err))
        .spawn()
        .expect("spawn cuttle");
    Proc {
        name: name.to_owned(),
        child,
    }
}

/// The logs of every process of a test, for failure messages.
pub fn logs(env: &TestEnv) -> String {
    let mut out = String::new();
    if let Ok(entries) = std::fs::read_dir(env.dir.path()) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let keep = std::env::var("CUTTLE_TEST_LOG_LINES")
                    .ok()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(40);
                let tail: Vec<&str> = text.lines().rev().take(keep).collect();
                out.push_str(&format!(
                    "--- {} ---\n{}\n",
                    path.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ));
            }
        }
    }
    out
}

/// Distributed mode as real processes: migrate, then api, orchestrator, package-feed, worker.
pub struct Distributed {
    /// Authenticated client of the api process.
    pub client: Client,
    /// The environment (config, data dir, database).
    pub env: TestEnv,
    /// The api process.
    pub api: Proc,
    /// The orchestrator process.
    pub orchestrator: Proc,
    /// The package-feed process.
    pub feed: Proc,
    /// Worker processes.
    pub workers: Vec<Proc>,
    /// Variables every process gets on top of the environment's (see [`Distributed::start_with`]).
    extra_env: Vec<(String, String)>,
}

impl Distributed {
    /// Starts each service as its own process on PostgreSQL, RabbitMQ, Redis and S3.
    pub async fn start() -> Distributed {
        Distributed::start_with(&[]).await
    }

    /// [`Distributed::start`] with extra environment variables for every process (including
    /// workers added later), e.g. `CUTTLE_TELEMETRY__OTLP_ENDPOINT`.
    pub async fn start_with(extra_env: &[(&str, &str)]) -> Distributed {
        let extra_env: Vec<(String, String)> = extra_env
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        let env = TestEnv::new(Mode::Distributed)
            .await
            .expect("test environment");
        let status = Command::new(cuttle_binary())
            .arg("migrate")
            .envs(env.env_vars())
            .status()
            .expect("migrate");
        assert!(status.success(), "cuttle migrate failed");
        let api_port = free_port();
        let api = spawn_cuttle_with(
            &env,
            "api",
            &["api", "--listen", &format!("127.0.0.1:{api_port}")],
            &extra_env,
        );
        let orchestrator = spawn_cuttle_with(
            &env,
            "orchestrator",
            &[
                "orchestrator",
                "--ops-listen",
                &format!("127.0.0.1:{}", free_port()),
            ],
            &extra_env,
        );
        let feed = spawn_cuttle_with(
            &env,
            "package-feed",
            &[
                "package-feed",
                "--listen",
                &format!("127.0.0.1:{}", free_port()),
            ],
            &extra_env,
        );
        let client = Client::new(format!("http://127.0.0.1:{api_port}"), env.api_key.clone());
        if let Err(err) = client.wait_until_up("/api", Duration::from_secs(20)).await {
            panic!("{err:#}\n{}", logs(&env));
        }
        let mut distributed = Distributed {
            client,
            env,
            api,
            orchestrator,
            feed,
            workers: Vec::new(),
            extra_env,
        };
        distributed.add_worker();
        distributed
    }

    /// Starts one more worker process.
    pub fn add_worker(&mut self) -> usize {
        let name = format!("worker-{}", self.workers.len() + 1);
        let proc = spawn_cuttle_with(
            &self.env,
            &name,
            &[
                "worker",
                "--ops-listen",
                &format!("127.0.0.1:{}", free_port()),
            ],
            &self.extra_env,
        );
        self.workers.push(proc);
        self.workers.len() - 1
    }

    /// Stops every process gracefully with SIGTERM (api first, so nothing new arrives), waiting
    /// up to `limit` for each; returns each process's name and exit status (`None`: killed).
    /// The processes stay in place, already exited, until [`Distributed::stop`].
    pub async fn terminate(
        &mut self,
        limit: Duration,
    ) -> Vec<(String, Option<std::process::ExitStatus>)> {
        let mut statuses = Vec::new();
        let processes = [&mut self.api, &mut self.orchestrator, &mut self.feed]
            .into_iter()
            .chain(self.workers.iter_mut());
        for proc in processes {
            let status = proc.terminate(limit).await;
            statuses.push((proc.name.clone(), status));
        }
        statuses
    }

    /// Stops every process and drops the database.
    pub async fn stop(self) {
        let Distributed {
            env,
            api,
            orchestrator,
            feed,
            workers,
            ..
        } = self;
        drop((api, orchestrator, feed, workers));
        env.cleanup().await;
    }
}

/// A zip holding `files`, stored (not compressed) so its bytes are predictable.
pub fn zip_bytes(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, content) in files {
        writer
            .start_file(*name, options)
            .expect("a zip entry starts in memory");
        std::io::Write::write_all(&mut writer, content).expect("a zip entry is written in memory");
    }
    writer
        .finish()
        .expect("a zip finishes in memory")
        .into_inner()
}

/// Pushes one file as multipart under `field` (clients differ), with an optional query.
pub async fn push_as(
    client: &cuttle_testkit::Client,
    space: &str,
    field: &str,
    file_name: &str,
    bytes: Vec<u8>,
    query: &str,
) -> cuttle_testkit::Reply {
    let part = reqwest::multipart::Part::bytes(bytes).file_name(file_name.to_owned());
    let form = reqwest::multipart::Form::new()
        .text("comment", "ignored: not a file")
        .part(field.to_owned(), part);
    let response = reqwest::Client::new()
        .post(format!("{}/api/{space}/packages/raw{query}", client.base))
        .header("X-Octopus-ApiKey", &client.api_key)
        .multipart(form)
        .send()
        .await
        .expect("the push reaches the server");
    let status = response.status().as_u16();
    let text = response.text().await.expect("the push answer is read");
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    cuttle_testkit::Reply { status, body }
}

pub async fn push(
    client: &cuttle_testkit::Client,
    space: &str,
    file_name: &str,
    bytes: Vec<u8>,
) -> cuttle_testkit::Reply {
    push_as(client, space, "fileToUpload", file_name, bytes, "").await
}

/// Every log line of a task as (category, text).
pub async fn log_lines(client: &Client, space: &str, task: &str) -> Vec<(String, String)> {
    fn walk(node: &serde_json::Value, out: &mut Vec<(String, String)>) {
        for element in node["LogElements"].as_array().into_iter().flatten() {
            out.push((
                element["Category"].as_str().unwrap_or_default().to_owned(),
                element["MessageText"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ));
        }
        for child in node["Children"].as_array().into_iter().flatten() {
            walk(child, out);
        }
    }
    let details = client
        .get(&format!("/api/{space}/tasks/{task}/details"))
        .await
        .expect(200);
    let mut out = Vec::new();
    for root in details["ActivityLogs"].as_array().into_iter().flatten() {
        walk(root, &mut out);
    }
    out
}
