//! `deploy`: how long one small deployment takes, from the client's POST to the finished task.
//!
//! One project with a single Bash step (`echo hello`) run on the server. Each run creates a
//! release (not timed), then times the deployment: the POST, then polling the task every few
//! milliseconds until it reports `IsCompleted`. The server's own timestamps (`QueueTime`,
//! `StartTime`, `CompletedTime`, and the step's `Started`/`Ended` in the activity log) split the
//! time into phases, which is what points at a bottleneck when a figure misses its goal.

use crate::api::Api;
use crate::launch::Platform;
use crate::stats::{Goal, Row};
use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use cuttle_testkit::{Client, Mode, flow};
use serde::Serialize;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The space every run deploys in (the one first start creates).
const SPACE: &str = "Spaces-1";
const PROJECT: &str = "Load test";
const ENVIRONMENT: &str = "Load";
/// What the step prints; each run's raw log must contain it.
const MARKER: &str = "hello";

/// Settings of one `deploy` measurement.
#[derive(Debug, Clone)]
pub struct DeployOptions {
    /// Embedded (`cuttle server`) or distributed (one process per service).
    pub mode: Mode,
    /// Measured runs.
    pub runs: usize,
    /// Runs made first and left out of the figures (connection pools, caches, queues declared).
    pub warmup: usize,
    /// Interval between two polls of the task.
    pub poll: Duration,
    /// A run that has not completed after this counts as failed.
    pub timeout: Duration,
    /// The `cuttle` binary.
    pub binary: PathBuf,
    /// `telemetry.log_level` of the server processes.
    pub log_level: String,
    /// Where to copy the processes' logs when done (they are deleted otherwise).
    pub keep_logs: Option<PathBuf>,
}

/// Figures of one successful run, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct RunSample {
    /// 1-based run number (warm-up runs are not recorded).
    pub run: usize,
    /// The deployment's server task.
    pub task_id: String,
    /// Client: duration of the deployment POST.
    pub deploy_post_ms: f64,
    /// Client: from sending the deployment POST to reading `IsCompleted: true`.
    pub e2e_client_ms: f64,
    /// Server: `StartTime - QueueTime`.
    pub queued_to_executing_ms: f64,
    /// Server: `CompletedTime - QueueTime`.
    pub e2e_server_ms: f64,
    /// How many task GETs the run made.
    pub polls: u32,
    /// Whether another build or test run (cargo, rustc, a linker) was running at the start or
    /// the end of the run.
    pub overlapped_build: bool,
    /// Phases after the task started, from the activity log; absent if it could not be read.
    pub phases: Option<Phases>,
}

/// Where a run's time went after the orchestrator started the task (server clocks, ms).
#[derive(Debug, Clone, Serialize)]
pub struct Phases {
    /// Wall clock: client sends the POST -> `QueueTime` (request parsing, auth, transaction).
    pub post_to_queued_ms: f64,
    /// `StartTime` -> the step's `Started`: outbox relay, bus, worker claim, `JobStarted` event
    /// back to the orchestrator and its transaction.
    pub executing_to_step_started_ms: f64,
    /// The step's `Started` -> the `hello` line's time (taken by the worker when it read the
    /// line): Bash starting. The worker starts the script without waiting for the orchestrator,
    /// so this can be small or even negative.
    pub step_started_to_output_ms: f64,
    /// The `hello` line -> the step's `Ended`: script exit, log batch flush, `JobLog` and
    /// `JobFinished` events and the orchestrator's transaction.
    pub output_to_step_ended_ms: f64,
    /// The step's `Ended` -> `CompletedTime` (the same transaction: about zero).
    pub step_ended_to_completed_ms: f64,
    /// Wall clock: `CompletedTime` -> the client reading `IsCompleted` (polling interval and the
    /// GET itself).
    pub completed_to_observed_ms: f64,
}

/// A run that did not end in `Success` with the marker in its log.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// 1-based run number, or 0 for a warm-up run.
    pub run: usize,
    /// Why it counts as failed.
    pub reason: String,
}

/// Summary of the orchestrator's `cuttle_task_dispatch_latency_seconds` histogram.
#[derive(Debug, Clone, Serialize)]
pub struct Histogram {
    /// Observations (warm-up runs included).
    pub count: f64,
    /// Mean of the observations, in ms.
    pub mean_ms: f64,
}

/// Mean server-side time of one route, from `cuttle_http_request_duration_seconds`.
#[derive(Debug, Clone, Serialize)]
pub struct RouteTime {
    /// `GET /api/tasks/{id} 200`.
    pub route: String,
    /// Requests (setup and warm-up included).
    pub count: f64,
    /// Mean duration, ms.
    pub mean_ms: f64,
}

/// Everything one `deploy` measurement found; written as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct DeployReport {
    /// `embedded` or `distributed`.
    pub mode: String,
    /// Measured runs requested.
    pub runs: usize,
    /// Warm-up runs made first.
    pub warmup: usize,
    /// Polling interval, ms.
    pub poll_ms: u64,
    /// Server log level.
    pub log_level: String,
    /// `/proc/loadavg` before the first run: other work on the machine skews the figures.
    pub load_before: String,
    /// Summaries, as in the printed table.
    pub rows: Vec<Row>,
    /// Summaries of the phases.
    pub phase_rows: Vec<Row>,
    /// The orchestrator's own view of queued -> executing.
    pub dispatch_histogram: Option<Histogram>,
    /// Server-side time of each route the runs used, from the api's metrics.
    pub route_times: Vec<RouteTime>,
    /// Resident memory of each process after the runs, MB.
    pub rss_after_mb: Vec<(String, f64)>,
    /// Every successful run.
    pub samples: Vec<RunSample>,
    /// Every failed run.
    pub failures: Vec<Failure>,
}

/// Name of a mode in reports and file names.
pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Embedded => "embedded",
        Mode::Distributed => "distributed",
    }
}

/// Starts the platform, runs the measurement, and stops the platform whatever happened.
pub async fn measure(options: &DeployOptions) -> anyhow::Result<DeployReport> {
    let platform = Platform::start(options.mode, &options.binary, &options.log_level).await?;
    let result = measure_on(&platform, options).await;
    let result = match result {
        Ok(report) => Ok(report),
        Err(err) => Err(anyhow::anyhow!("{err:#}\n{}", platform.logs())),
    };
    platform.stop(options.keep_logs.as_deref()).await;
    result
}

async fn measure_on(platform: &Platform, options: &DeployOptions) -> anyhow::Result<DeployReport> {
    let api = Api::new(&platform.api_base, platform.api_key())?;
    // The test kit's flow creates the environment, the project and its one-step process.
    let setup = Client::new(platform.api_base.clone(), platform.api_key());
    flow::project_with_script(
        &setup,
        SPACE,
        ENVIRONMENT,
        PROJECT,
        &format!("echo {MARKER}"),
    )
    .await;

    let load_before = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let mut samples = Vec::new();
    let mut failures = Vec::new();
    for index in 0..options.warmup + options.runs {
        let run = index.saturating_sub(options.warmup) + 1;
        let warmup = index < options.warmup;
        match one_run(&api, options, run).await {
            Ok(sample) if !warmup => samples.push(sample),
            Ok(_) => {}
            Err(err) => failures.push(Failure {
                run: if warmup { 0 } else { run },
                reason: format!("{err:#}"),
            }),
        }
    }

    let dispatch_histogram = match api.get_url(&platform.metrics_url).await {
        Ok(text) => histogram(&text, "cuttle_task_dispatch_latency_seconds"),
        Err(err) => {
            eprintln!("could not read the orchestrator's metrics: {err:#}");
            None
        }
    };
    let route_times = match api.get_url(&format!("{}/metrics", platform.api_base)).await {
        Ok(text) => route_times(&text),
        Err(err) => {
            eprintln!("could not read the api's metrics: {err:#}");
            Vec::new()
        }
    };
    let rows = summary_rows(options.mode, &samples);
    let phase_rows = phase_rows(&samples);
    Ok(DeployReport {
        mode: mode_name(options.mode).into(),
        runs: options.runs,
        warmup: options.warmup,
        poll_ms: options.poll.as_millis() as u64,
        log_level: options.log_level.clone(),
        load_before,
        rows,
        phase_rows,
        dispatch_histogram,
        route_times,
        rss_after_mb: platform.rss_mb(),
        samples,
        failures,
    })
}

/// Creates a release, deploys it, and follows the task to its end.
async fn one_run(api: &Api, options: &DeployOptions, run: usize) -> anyhow::Result<RunSample> {
    let release = api
        .post(
            &format!("/api/{SPACE}/releases/create/v1"),
            &json!({"spaceIdOrName": SPACE, "ProjectName": PROJECT}),
            201,
        )
        .await?;
    let version = release["ReleaseVersion"]
        .as_str()
        .context("the release has no ReleaseVersion")?
        .to_owned();
    let body = json!({"spaceIdOrName": SPACE, "ProjectName": PROJECT, "ReleaseVersion": version, "EnvironmentNames": [ENVIRONMENT]});

    let builds_before = crate::report::builds_running();
    let posted_at = Utc::now();
    let started = Instant::now();
    let deployed = api
        .post(
            &format!("/api/{SPACE}/deployments/create/untenanted/v1"),
            &body,
            201,
        )
        .await?;
    let deploy_post = started.elapsed();
    let task_id = deployed["DeploymentServerTasks"][0]["ServerTaskId"]
        .as_str()
        .context("the deployment has no server task")?
        .to_owned();

    let mut polls = 0u32;
    let (task, e2e_client, observed_at) = loop {
        let task = api.get(&format!("/api/tasks/{task_id}")).await?;
        polls += 1;
        if task["IsCompleted"] == Value::Bool(true) {
            break (task, started.elapsed(), Utc::now());
        }
        if started.elapsed() >= options.timeout {
            bail!(
                "task {task_id} was still {} after {:?}",
                task["State"],
                options.timeout
            );
        }
        tokio::time::sleep(options.poll).await;
    };

    let overlapped_build = builds_before + crate::report::builds_running() > 0;

    // Not timed: checks that the run did what it should.
    let state = task["State"].as_str().unwrap_or_default();
    if state != "Success" {
        bail!("task {task_id} ended {state}: {}", task["ErrorMessage"]);
    }
    let raw = api.get_text(&format!("/api/tasks/{task_id}/raw")).await?;
    if !raw.lines().any(|line| line.trim_end().ends_with(MARKER)) {
        bail!("the raw log of task {task_id} does not contain '{MARKER}':\n{raw}");
    }

    let queued = date(&task, "QueueTime")?;
    let executing = date(&task, "StartTime")?;
    let completed = date(&task, "CompletedTime")?;
    let phases = match api
        .get(&format!("/api/tasks/{task_id}/details?verbose=true"))
        .await
    {
        Ok(details) => phases(
            &details,
            posted_at,
            queued,
            executing,
            completed,
            observed_at,
        ),
        Err(err) => {
            eprintln!("run {run}: no phases, the activity log could not be read: {err:#}");
            None
        }
    };
    Ok(RunSample {
        run,
        task_id,
        deploy_post_ms: ms(deploy_post),
        e2e_client_ms: ms(e2e_client),
        queued_to_executing_ms: between(queued, executing),
        e2e_server_ms: between(queued, completed),
        polls,
        overlapped_build,
        phases,
    })
}

/// Splits the run using the step's `Started`/`Ended` and the time of the marker line.
fn phases(
    details: &Value,
    posted_at: DateTime<Utc>,
    queued: DateTime<Utc>,
    executing: DateTime<Utc>,
    completed: DateTime<Utc>,
    observed_at: DateTime<Utc>,
) -> Option<Phases> {
    // Task -> step -> action: the action element carries the job's times and its log.
    let action = &details["ActivityLogs"][0]["Children"][0]["Children"][0];
    let step_started = parse_date(&action["Started"])?;
    let step_ended = parse_date(&action["Ended"])?;
    let output = action["LogElements"]
        .as_array()?
        .iter()
        .find(|line| {
            line["MessageText"]
                .as_str()
                .is_some_and(|m| m.trim() == MARKER)
        })
        .and_then(|line| parse_date(&line["OccurredAt"]))?;
    Some(Phases {
        post_to_queued_ms: between(posted_at, queued),
        executing_to_step_started_ms: between(executing, step_started),
        step_started_to_output_ms: between(step_started, output),
        output_to_step_ended_ms: between(output, step_ended),
        step_ended_to_completed_ms: between(step_ended, completed),
        completed_to_observed_ms: between(completed, observed_at),
    })
}

fn summary_rows(mode: Mode, samples: &[RunSample]) -> Vec<Row> {
    let pick = |f: fn(&RunSample) -> f64| samples.iter().map(f).collect::<Vec<_>>();
    let e2e_goal = match mode {
        Mode::Embedded => 100.0,
        Mode::Distributed => 250.0,
    };
    vec![
        Row::new(
            "queued -> executing (server)",
            "ms",
            &pick(|s| s.queued_to_executing_ms),
            Some(Goal { below: 20.0 }),
        ),
        Row::new(
            "end-to-end, client (POST -> IsCompleted seen)",
            "ms",
            &pick(|s| s.e2e_client_ms),
            Some(Goal { below: e2e_goal }),
        ),
        Row::new(
            "end-to-end, server (CompletedTime - QueueTime)",
            "ms",
            &pick(|s| s.e2e_server_ms),
            Some(Goal { below: e2e_goal }),
        ),
        Row::new(
            "deployment POST (client)",
            "ms",
            &pick(|s| s.deploy_post_ms),
            None,
        ),
    ]
}

fn phase_rows(samples: &[RunSample]) -> Vec<Row> {
    let phases: Vec<&Phases> = samples.iter().filter_map(|s| s.phases.as_ref()).collect();
    let pick = |f: fn(&Phases) -> f64| phases.iter().map(|p| f(p)).collect::<Vec<_>>();
    vec![
        Row::new(
            "POST sent -> QueueTime",
            "ms",
            &pick(|p| p.post_to_queued_ms),
            None,
        ),
        Row::new(
            "StartTime -> step Started (relay, bus, worker claim, JobStarted)",
            "ms",
            &pick(|p| p.executing_to_step_started_ms),
            None,
        ),
        Row::new(
            "step Started -> 'hello' read by worker",
            "ms",
            &pick(|p| p.step_started_to_output_ms),
            None,
        ),
        Row::new(
            "'hello' -> step Ended (exit, log flush, JobFinished)",
            "ms",
            &pick(|p| p.output_to_step_ended_ms),
            None,
        ),
        Row::new(
            "step Ended -> CompletedTime",
            "ms",
            &pick(|p| p.step_ended_to_completed_ms),
            None,
        ),
        Row::new(
            "CompletedTime -> client sees IsCompleted",
            "ms",
            &pick(|p| p.completed_to_observed_ms),
            None,
        ),
    ]
}

/// Count and mean of a Prometheus histogram in the text exposition format.
pub fn histogram(text: &str, name: &str) -> Option<Histogram> {
    let value = |suffix: &str| {
        let metric = format!("{name}{suffix} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&metric))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    let count = value("_count")?;
    let sum = value("_sum")?;
    Some(Histogram {
        count,
        mean_ms: if count > 0.0 {
            sum / count * 1000.0
        } else {
            0.0
        },
    })
}

/// Mean duration per method, route and status of `cuttle_http_request_duration_seconds`.
pub fn route_times(text: &str) -> Vec<RouteTime> {
    const NAME: &str = "cuttle_http_request_duration_seconds";
    let series = |suffix: &str| {
        let prefix = format!("{NAME}{suffix}{{");
        text.lines()
            .filter_map(move |line| {
                let (labels, value) = line.strip_prefix(&prefix)?.rsplit_once("} ")?;
                Some((labels.to_owned(), value.trim().parse::<f64>().ok()?))
            })
            .collect::<Vec<_>>()
    };
    let counts = series("_count");
    let mut times: Vec<RouteTime> = series("_sum")
        .into_iter()
        .filter_map(|(labels, sum)| {
            let count = counts.iter().find(|(l, _)| *l == labels)?.1;
            let label = |key: &str| {
                let start = labels.find(&format!("{key}=\""))? + key.len() + 2;
                labels[start..].split('"').next().map(str::to_owned)
            };
            let route = format!(
                "{} {} {}",
                label("method")?,
                label("route")?,
                label("status")?
            );
            (count > 0.0).then(|| RouteTime {
                route,
                count,
                mean_ms: sum / count * 1000.0,
            })
        })
        .collect();
    times.sort_by(|a, b| b.count.total_cmp(&a.count));
    times
}

fn date(task: &Value, field: &str) -> anyhow::Result<DateTime<Utc>> {
    parse_date(&task[field]).with_context(|| {
        format!(
            "the task's {field} is missing or not a date: {}",
            task[field]
        )
    })
}

fn parse_date(value: &Value) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(value.as_str()?)
        .ok()
        .map(|at| at.with_timezone(&Utc))
}

fn between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_mean_comes_from_sum_and_count() {
        let text = "# TYPE cuttle_task_dispatch_latency_seconds histogram\n\
                    cuttle_task_dispatch_latency_seconds_bucket{le=\"0.005\"} 1\n\
                    cuttle_task_dispatch_latency_seconds_sum 0.03\n\
                    cuttle_task_dispatch_latency_seconds_count 3\n";
        let histogram = histogram(text, "cuttle_task_dispatch_latency_seconds").unwrap();
        assert_eq!(histogram.count, 3.0);
        assert!((histogram.mean_ms - 10.0).abs() < 1e-9);
    }

    #[test]
    fn route_times_pair_sums_with_counts_by_labels() {
        let text = "cuttle_http_request_duration_seconds_sum{method=\"GET\",route=\"/api/tasks/{id}\",status=\"200\"} 0.5\n\
                    cuttle_http_request_duration_seconds_count{method=\"GET\",route=\"/api/tasks/{id}\",status=\"200\"} 100\n\
                    cuttle_http_request_duration_seconds_sum{method=\"GET\",route=\"/api\",status=\"200\"} 0.002\n\
                    cuttle_http_request_duration_seconds_count{method=\"GET\",route=\"/api\",status=\"200\"} 1\n";
        let times = route_times(text);
        assert_eq!(times.len(), 2);
        assert_eq!(times[0].route, "GET /api/tasks/{id} 200");
        assert!((times[0].mean_ms - 5.0).abs() < 1e-9);
        assert!((times[1].mean_ms - 2.0).abs() < 1e-9);
    }

    #[test]
    fn phases_are_read_from_the_action_element() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let details = json!({"ActivityLogs": [{"Children": [{"Children": [{
            "Started": "2026-01-01T00:00:00.010+00:00",
            "Ended": "2026-01-01T00:00:00.050+00:00",
            "LogElements": [{"MessageText": "hello", "OccurredAt": "2026-01-01T00:00:00.020+00:00"}]
        }]}]}]});
        let phases = phases(
            &details,
            at("2025-12-31T23:59:59.990+00:00"),
            at("2026-01-01T00:00:00.000+00:00"),
            at("2026-01-01T00:00:00.005+00:00"),
            at("2026-01-01T00:00:00.051+00:00"),
            at("2026-01-01T00:00:00.060+00:00"),
        )
        .unwrap();
        assert_eq!(phases.post_to_queued_ms, 10.0);
        assert_eq!(phases.executing_to_step_started_ms, 5.0);
        assert_eq!(phases.step_started_to_output_ms, 10.0);
        assert_eq!(phases.output_to_step_ended_ms, 30.0);
        assert_eq!(phases.step_ended_to_completed_ms, 1.0);
        assert_eq!(phases.completed_to_observed_ms, 9.0);
    }
}
