//! `startup`: how fast `cuttle server` answers after it is started, and how much memory it holds
//! while idle.
//!
//! Each run starts the server on a fresh data directory (a first start: SQLite file created,
//! migrations applied, installation bootstrapped) and, after stopping it with SIGTERM, starts it
//! again on the same directory (a warm restart: nothing to migrate). Both are timed from the
//! spawn to the first 200 of `GET /api`, then the server is left idle for a while and its
//! resident memory read from `/proc/PID/status`.

use crate::launch::{Proc, free_port, server_env, wait_until_up};
use crate::stats::{Goal, Row};
use cuttle_testkit::{Mode, TestEnv};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a server may take to answer before the run counts as failed.
const START_LIMIT: Duration = Duration::from_secs(30);

/// Settings of one `startup` measurement.
#[derive(Debug, Clone)]
pub struct StartupOptions {
    /// Runs (each one cold start and one warm restart).
    pub runs: usize,
    /// How long the server stays idle before its memory is read.
    pub idle: Duration,
    /// Interval between two attempts of `GET /api`.
    pub poll: Duration,
    /// The `cuttle` binary.
    pub binary: PathBuf,
    /// `telemetry.log_level` of the server.
    pub log_level: String,
}

/// One start of the server.
#[derive(Debug, Clone, Serialize)]
pub struct Start {
    /// Spawn -> first 200 from `GET /api`, ms.
    pub to_first_200_ms: f64,
    /// `VmRSS` after the idle period, MB.
    pub idle_rss_mb: f64,
    /// SIGTERM -> process exited, ms.
    pub stop_ms: f64,
    /// Whether another build or test run was running when the server was spawned or had answered.
    pub overlapped_build: bool,
}

/// One run: a first start and a restart on the same data directory.
#[derive(Debug, Clone, Serialize)]
pub struct StartupRun {
    /// 1-based.
    pub run: usize,
    /// On an empty data directory.
    pub cold: Start,
    /// On the directory the cold start left.
    pub warm: Start,
}

/// Everything one `startup` measurement found; written as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct StartupReport {
    /// Runs requested.
    pub runs: usize,
    /// Idle period before reading memory, ms.
    pub idle_ms: u64,
    /// Server log level.
    pub log_level: String,
    /// `/proc/loadavg` before the first run.
    pub load_before: String,
    /// Summaries, as in the printed table.
    pub rows: Vec<Row>,
    /// Every successful run.
    pub samples: Vec<StartupRun>,
    /// Why runs failed.
    pub failures: Vec<String>,
}

/// Runs the measurement.
pub async fn measure(options: &StartupOptions) -> anyhow::Result<StartupReport> {
    let load_before = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let mut samples = Vec::new();
    let mut failures = Vec::new();
    for run in 1..=options.runs {
        // The test kit gives each run its own temporary data directory and admin key.
        let env = TestEnv::new(Mode::Embedded).await?;
        let cold = start_once(&env, options, "cold").await;
        let warm = match &cold {
            Ok(_) => start_once(&env, options, "warm").await,
            Err(_) => Err(anyhow::anyhow!("skipped: the cold start failed")),
        };
        match (cold, warm) {
            (Ok(cold), Ok(warm)) => samples.push(StartupRun { run, cold, warm }),
            (cold, warm) => {
                for (what, result) in [("cold", cold), ("warm", warm)] {
                    if let Err(err) = result {
                        failures.push(format!("run {run}, {what} start: {err:#}"));
                    }
                }
            }
        }
        env.cleanup().await;
    }
    let pick = |f: fn(&StartupRun) -> f64| samples.iter().map(f).collect::<Vec<_>>();
    let rows = vec![
        Row::new(
            "first start (empty data dir) -> first 200",
            "ms",
            &pick(|r| r.cold.to_first_200_ms),
            Some(Goal { below: 1000.0 }),
        ),
        Row::new(
            "warm restart (existing data dir) -> first 200",
            "ms",
            &pick(|r| r.warm.to_first_200_ms),
            Some(Goal { below: 1000.0 }),
        ),
        Row::new(
            format!(
                "idle RSS after first start (+{} s)",
                options.idle.as_secs_f64()
            ),
            "MB",
            &pick(|r| r.cold.idle_rss_mb),
            Some(Goal { below: 100.0 }),
        ),
        Row::new(
            format!(
                "idle RSS after warm restart (+{} s)",
                options.idle.as_secs_f64()
            ),
            "MB",
            &pick(|r| r.warm.idle_rss_mb),
            Some(Goal { below: 100.0 }),
        ),
        Row::new(
            "graceful stop (SIGTERM -> exit)",
            "ms",
            &pick(|r| r.cold.stop_ms),
            None,
        ),
    ];
    Ok(StartupReport {
        runs: options.runs,
        idle_ms: options.idle.as_millis() as u64,
        log_level: options.log_level.clone(),
        load_before,
        rows,
        samples,
        failures,
    })
}

/// Starts the server on `env`'s data directory, times it, idles, reads its memory, stops it.
async fn start_once(env: &TestEnv, options: &StartupOptions, label: &str) -> anyhow::Result<Start> {
    let listen = format!("127.0.0.1:{}", free_port()?);
    let data_dir = env.config.server.data_dir.display().to_string();
    let vars = server_env(env, &options.log_level);
    let log = env.dir.path().join(format!("server-{label}.log"));
    // A fresh client per start: no pooled connection to a previous server can answer.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let url = format!("http://{listen}/api");

    let builds_before = crate::report::builds_running();
    let spawned_at = Instant::now();
    let mut server = Proc::spawn(
        "server",
        &options.binary,
        &["server", "--listen", &listen, "--data-dir", &data_dir],
        &vars,
        log,
    )?;
    let up = match wait_until_up(&http, &url, spawned_at, START_LIMIT, options.poll).await {
        Ok(up) => up,
        Err(err) => {
            server.ensure_running()?;
            return Err(err.context(tail(&server)));
        }
    };
    let overlapped_build = builds_before + crate::report::builds_running() > 0;
    // Drop the client's idle connection so the server is really idle.
    drop(http);
    tokio::time::sleep(options.idle).await;
    server.ensure_running()?;
    let idle_rss_mb = server.rss_mb()?;
    let stop = server.stop().await?;
    Ok(Start {
        to_first_200_ms: up.as_secs_f64() * 1000.0,
        idle_rss_mb,
        stop_ms: stop.as_secs_f64() * 1000.0,
        overlapped_build,
    })
}

fn tail(server: &Proc) -> String {
    crate::launch::tail(Path::new(&server.log), 20)
}
