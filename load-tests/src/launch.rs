//! Starts Cuttle as real child processes, the way an operator runs it, and stops it again.
//!
//! The measurements run the built `cuttle` binary rather than the services in-process, so that
//! the figures include what a user sees: process start, config loading, migrations, logging to a
//! file, and (distributed) every hop through RabbitMQ, Redis and PostgreSQL.

use anyhow::{Context, bail};
use cuttle_testkit::{Mode, TestEnv};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// How long a stopped process gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// One `cuttle` child process; killed if dropped while running.
pub struct Proc {
    /// Name for messages (`server`, `api`, `worker`, ...).
    pub name: String,
    /// The file that receives its stdout and stderr.
    pub log: PathBuf,
    child: Child,
    pid: u32,
}

impl Proc {
    /// Starts `binary args` with `envs`; output goes to `log`.
    pub fn spawn(
        name: &str,
        binary: &Path,
        args: &[&str],
        envs: &[(String, String)],
        log: PathBuf,
    ) -> anyhow::Result<Proc> {
        let out = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let err = out.try_clone()?;
        let child = Command::new(binary)
            .args(args)
            // Only the variables given here configure the server, whatever the caller's shell has.
            .env_remove("RUST_LOG")
            .env_remove("CUTTLE_CONFIG")
            .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {} {}", binary.display(), args.join(" ")))?;
        let pid = child
            .id()
            .context("the child exited before its pid was read")?;
        Ok(Proc {
            name: name.to_owned(),
            log,
            child,
            pid,
        })
    }

    /// Resident memory (`VmRSS` of `/proc/PID/status`), in MB.
    pub fn rss_mb(&self) -> anyhow::Result<f64> {
        rss_mb(self.pid)
    }

    /// Fails if the process has already exited (it crashed or refused its config).
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited with {status}; its log:\n{}",
                self.name,
                tail(&self.log, 30)
            );
        }
        Ok(())
    }

    /// Stops the process with SIGTERM, as an operator or orchestrator would, and waits for it;
    /// kills it if it outlives [`STOP_GRACE`]. Returns how long the graceful stop took.
    pub async fn stop(mut self) -> anyhow::Result<Duration> {
        if self.child.try_wait()?.is_some() {
            return Ok(Duration::ZERO);
        }
        let started = Instant::now();
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid)?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
            .with_context(|| format!("cannot signal {}", self.name))?;
        match tokio::time::timeout(STOP_GRACE, self.child.wait()).await {
            Ok(status) => {
                status?;
                Ok(started.elapsed())
            }
            Err(_) => {
                self.child.kill().await?;
                bail!(
                    "{} did not stop within {STOP_GRACE:?} of SIGTERM and was killed",
                    self.name
                )
            }
        }
    }
}

/// Resident memory of process `pid`, in MB (1 MB = 1024 kB, as `VmRSS` counts in kB).
pub fn rss_mb(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS line in /proc/PID/status")?;
    let kb: f64 = line
        .split_whitespace()
        .nth(1)
        .context("VmRSS has no value")?
        .parse()?;
    Ok(kb / 1024.0)
}

/// The last `n` lines of a log file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(err) => format!("(cannot read {}: {err})", path.display()),
    }
}

/// A free loopback port (another process could take it before the server binds it; on this
/// machine, with nothing else allocating ports, that race has not been seen).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The `CUTTLE_*` variables of `env`, with the supervision timings left at their documented
/// defaults: the test kit shortens heartbeats and the reaper for fast tests, which would make
/// the measured server busier than a real one.
pub fn server_env(env: &TestEnv, log_level: &str) -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = env
        .env_vars()
        .into_iter()
        .filter(|(key, _)| {
            !key.starts_with("CUTTLE_ORCHESTRATOR__") && !key.starts_with("CUTTLE_WORKER__")
        })
        .collect();
    // Keeps job directories inside the run's temporary directory rather than in /tmp.
    vars.push((
        "CUTTLE_WORKER__WORK_DIR".into(),
        env.dir.path().join("work").display().to_string(),
    ));
    vars.push(("CUTTLE_TELEMETRY__LOG_LEVEL".into(), log_level.to_owned()));
    // The load generator is one organisation making thousands of requests a minute on purpose
    // (registering 10,000 agents): the per-organisation rate limit would measure itself.
    vars.push(("CUTTLE_LIMITS__REQUESTS_PER_MINUTE".into(), "0".into()));
    vars
}

/// Polls `url` every `poll` until it answers 2xx; returns the time since `since`.
pub async fn wait_until_up(
    http: &reqwest::Client,
    url: &str,
    since: Instant,
    limit: Duration,
    poll: Duration,
) -> anyhow::Result<Duration> {
    loop {
        if let Ok(response) = http.get(url).send().await
            && response.status().is_success()
        {
            return Ok(since.elapsed());
        }
        if since.elapsed() >= limit {
            bail!("{url} did not answer 200 within {limit:?}");
        }
        tokio::time::sleep(poll).await;
    }
}

/// Cuttle running as real processes in one mode, with its isolated environment.
pub struct Platform {
    /// Config, data directory, database: dropped with the platform.
    pub env: TestEnv,
    /// `http://127.0.0.1:PORT` of the REST API.
    pub api_base: String,
    /// Where the orchestrator's Prometheus metrics are served.
    pub metrics_url: String,
    /// The processes, api (or the all-in-one server) first.
    pub procs: Vec<Proc>,
}

impl Platform {
    /// Starts `cuttle server` (embedded), or `cuttle migrate` then api, orchestrator,
    /// package-feed and one worker (distributed), and waits until they are ready. On failure
    /// every started process is stopped and the database dropped.
    pub async fn start(mode: Mode, binary: &Path, log_level: &str) -> anyhow::Result<Platform> {
        Platform::start_with(mode, binary, log_level, &[]).await
    }

    /// [`Platform::start`] with extra variables for every process (e.g. a worker's comms port).
    pub async fn start_with(
        mode: Mode,
        binary: &Path,
        log_level: &str,
        extra: &[(String, String)],
    ) -> anyhow::Result<Platform> {
        let env = TestEnv::new(mode)
            .await
            .context("cannot prepare the environment (for distributed mode, run infra/up.sh)")?;
        let mut platform = Platform {
            env,
            api_base: String::new(),
            metrics_url: String::new(),
            procs: Vec::new(),
        };
        match platform.launch(mode, binary, log_level, extra).await {
            Ok(()) => Ok(platform),
            Err(err) => {
                let err = anyhow::anyhow!("{err:#}\n{}", platform.logs());
                platform.stop(None).await;
                Err(err)
            }
        }
    }

    async fn launch(
        &mut self,
        mode: Mode,
        binary: &Path,
        log_level: &str,
        extra: &[(String, String)],
    ) -> anyhow::Result<()> {
        let mut vars = server_env(&self.env, log_level);
        vars.extend(extra.iter().cloned());
        let dir = self.env.dir.path().to_owned();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let limit = Duration::from_secs(30);
        let poll = Duration::from_millis(20);
        match mode {
            Mode::Embedded => {
                let listen = format!("127.0.0.1:{}", free_port()?);
                let data_dir = self.env.config.server.data_dir.display().to_string();
                self.procs.push(Proc::spawn(
                    "server",
                    binary,
                    &["server", "--listen", &listen, "--data-dir", &data_dir],
                    &vars,
                    dir.join("server.log"),
                )?);
                self.api_base = format!("http://{listen}");
                // In embedded mode the server's own router serves /metrics.
                self.metrics_url = format!("{}/metrics", self.api_base);
            }
            Mode::Distributed => {
                let migrate = Command::new(binary)
                    .arg("migrate")
                    .env_remove("RUST_LOG")
                    .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                    .output()
                    .await
                    .context("cannot run cuttle migrate")?;
                if !migrate.status.success() {
                    bail!(
                        "cuttle migrate failed ({}): {}",
                        migrate.status,
                        String::from_utf8_lossy(&migrate.stderr)
                    );
                }
                let api_listen = format!("127.0.0.1:{}", free_port()?);
                let orchestrator_ops = format!("127.0.0.1:{}", free_port()?);
                let feed_listen = format!("127.0.0.1:{}", free_port()?);
                let worker_ops = format!("127.0.0.1:{}", free_port()?);
                let services: [(&str, [&str; 3]); 4] = [
                    ("api", ["api", "--listen", &api_listen]),
                    (
                        "orchestrator",
                        ["orchestrator", "--ops-listen", &orchestrator_ops],
                    ),
                    ("package-feed", ["package-feed", "--listen", &feed_listen]),
                    ("worker", ["worker", "--ops-listen", &worker_ops]),
                ];
                for (name, args) in services {
                    let log = dir.join(format!("{name}.log"));
                    self.procs
                        .push(Proc::spawn(name, binary, &args, &vars, log)?);
                }
                self.api_base = format!("http://{api_listen}");
                self.metrics_url = format!("http://{orchestrator_ops}/metrics");
                // The first deployment must not wait for consumers still connecting.
                for ops in [&orchestrator_ops, &worker_ops] {
                    let url = format!("http://{ops}/health/ready");
                    wait_until_up(&http, &url, Instant::now(), limit, poll).await?;
                }
            }
        }
        let url = format!("{}/api", self.api_base);
        wait_until_up(&http, &url, Instant::now(), limit, poll).await?;
        for proc in &mut self.procs {
            proc.ensure_running()?;
        }
        Ok(())
    }

    /// The administrator key the environment fixed.
    pub fn api_key(&self) -> &str {
        &self.env.api_key
    }

    /// Resident memory of every process, in MB.
    pub fn rss_mb(&self) -> Vec<(String, f64)> {
        self.procs
            .iter()
            .filter_map(|p| p.rss_mb().ok().map(|mb| (p.name.clone(), mb)))
            .collect()
    }

    /// The tail of every process's log, for failure messages.
    pub fn logs(&self) -> String {
        self.procs
            .iter()
            .map(|p| format!("--- {} ---\n{}\n", p.name, tail(&p.log, 30)))
            .collect()
    }

    /// Stops every process (workers and orchestrator before the api), copies their logs into
    /// `keep_logs` if given, and drops the database.
    pub async fn stop(self, keep_logs: Option<&Path>) {
        let Platform { env, procs, .. } = self;
        let mut logs = Vec::new();
        for proc in procs.into_iter().rev() {
            let name = proc.name.clone();
            logs.push(proc.log.clone());
            if let Err(err) = proc.stop().await {
                eprintln!("stopping {name}: {err:#}");
            }
        }
        if let Some(dir) = keep_logs {
            for log in logs {
                if let Err(err) = copy_into(&log, dir) {
                    eprintln!("could not keep {}: {err:#}", log.display());
                }
            }
        }
        env.cleanup().await;
    }
}

/// Copies `file` into `dir` (created if needed), keeping its name.
fn copy_into(file: &Path, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let name = file.file_name().context("a log file without a name")?;
    std::fs::copy(file, dir.join(name))?;
    Ok(())
}
