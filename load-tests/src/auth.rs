//! Sign-in cost: a password login (argon2id verification and a new session), and what
//! authenticating one request costs with an API key, a bearer access token and the session
//! cookie, measured as the latency of `GET /api/users/me` against a real server process.

use crate::launch::Platform;
use crate::stats::Summary;
use anyhow::{Context, bail};
use cuttle_testkit::Mode;
use serde::Serialize;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

/// What to measure.
pub struct AuthOptions {
    /// Which way Cuttle runs.
    pub mode: Mode,
    /// Logins to time.
    pub logins: usize,
    /// Authenticated requests to time per method.
    pub requests: usize,
    /// The binary under test.
    pub binary: PathBuf,
    /// The servers' log level.
    pub log_level: String,
}

/// The figures, in milliseconds.
#[derive(Debug, Serialize)]
pub struct AuthReport {
    /// `embedded` or `distributed`.
    pub mode: String,
    /// `POST /api/users/login`, end to end.
    pub login_ms: Summary,
    /// `GET /api/users/me` with `X-Octopus-ApiKey`.
    pub api_key_ms: Summary,
    /// `GET /api/users/me` with `Authorization: Bearer <access token>`.
    pub bearer_ms: Summary,
    /// `GET /api/users/me` with the session cookie.
    pub cookie_ms: Summary,
}

async fn time_requests(
    n: usize,
    request: impl Fn() -> reqwest::RequestBuilder,
) -> anyhow::Result<Summary> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let response = request().send().await?;
        let status = response.status();
        response.bytes().await?;
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
        if !status.is_success() {
            bail!("a measured request answered {status}");
        }
    }
    Summary::of(&samples).context("no samples")
}

/// Starts Cuttle, creates a user with a password, and times logins and authenticated requests.
pub async fn measure(options: &AuthOptions) -> anyhow::Result<AuthReport> {
    let platform = Platform::start(options.mode, &options.binary, &options.log_level).await?;
    let result = run(&platform, options).await;
    platform.stop(None).await;
    result
}

async fn run(platform: &Platform, options: &AuthOptions) -> anyhow::Result<AuthReport> {
    let base = platform.api_base.clone();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()?;
    let password = "measure the login cost";
    let created = http
        .post(format!("{base}/api/users"))
        .header("X-Octopus-ApiKey", platform.api_key())
        .json(&json!({"Username": "measured", "Password": password}))
        .send()
        .await?;
    if created.status() != 201 {
        bail!("creating the user answered {}", created.status());
    }
    let login = || {
        http.post(format!("{base}/api/users/login"))
            .json(&json!({"Username": "measured", "Password": password}))
    };
    // One login to warm up and to keep its session for the request figures.
    let response = login().send().await?;
    let cookies: Vec<String> = response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|line| line.split(';').next())
        .map(str::to_owned)
        .collect();
    let access = cookies
        .iter()
        .find_map(|c| c.strip_prefix("OctopusIdentificationToken="))
        .context("the login set no access cookie")?
        .to_owned();
    let cookie_header = cookies.join("; ");
    let login_ms = time_requests(options.logins, login).await?;
    let me = format!("{base}/api/users/me");
    let api_key_ms = time_requests(options.requests, || {
        http.get(&me).header("X-Octopus-ApiKey", platform.api_key())
    })
    .await?;
    let bearer_ms = time_requests(options.requests, || http.get(&me).bearer_auth(&access)).await?;
    let cookie_ms = time_requests(options.requests, || {
        http.get(&me)
            .header(reqwest::header::COOKIE, &cookie_header)
    })
    .await?;
    Ok(AuthReport {
        mode: crate::deploy::mode_name(options.mode).to_owned(),
        login_ms,
        api_key_ms,
        bearer_ms,
        cookie_ms,
    })
}

/// The report as a markdown table.
pub fn markdown(report: &AuthReport) -> String {
    let mut out = String::from("| request | n | median (ms) | p90 (ms) |\n|---|---|---|---|\n");
    for (what, summary) in [
        (
            "`POST /api/users/login` (argon2id + new session)",
            &report.login_ms,
        ),
        ("`GET /api/users/me`, API key", &report.api_key_ms),
        (
            "`GET /api/users/me`, bearer access token",
            &report.bearer_ms,
        ),
        ("`GET /api/users/me`, session cookie", &report.cookie_ms),
    ] {
        out.push_str(&format!(
            "| {what} | {} | {:.2} | {:.2} |\n",
            summary.n, summary.median, summary.p90
        ));
    }
    out
}
