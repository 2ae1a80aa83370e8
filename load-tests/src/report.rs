//! Facts about the machine and the binary, the JSON result files, and `RESULTS.md`.

use crate::deploy::DeployReport;
use crate::startup::StartupReport;
use crate::stats::markdown_table;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the figures depend on besides Cuttle's code.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// When the measurement started (UTC, RFC 3339).
    pub measured_at: String,
    /// Cores available to this process.
    pub nproc: usize,
    /// CPU model from `/proc/cpuinfo`.
    pub cpu: String,
    /// Total memory from `/proc/meminfo`, GB.
    pub memory_gb: f64,
    /// Kernel release.
    pub kernel: String,
    /// `rustc -V`.
    pub rustc: String,
    /// The measured binary.
    pub binary: String,
    /// `debug` or `release`, from the binary's target directory.
    pub profile: String,
    /// `cuttle --version`.
    pub binary_version: String,
    /// The binary's modification time: which build was measured.
    pub binary_built: String,
    /// `git rev-parse --short HEAD` of the workspace (uncommitted changes are not detected).
    pub commit: String,
}

impl Machine {
    /// Reads the facts; anything unreadable reads as `unknown`.
    pub fn describe(binary: &Path) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, model)| model.trim().to_owned())
            .unwrap_or_else(unknown);
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kb: f64 = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let path = binary.display().to_string();
        let profile = if path.contains("/release/") {
            "release"
        } else if path.contains("/debug/") {
            "debug"
        } else {
            "unknown"
        };
        let binary_built = std::fs::metadata(binary)
            .and_then(|m| m.modified())
            .map(|at| {
                chrono::DateTime::<chrono::Utc>::from(at)
                    .format("%Y-%m-%d %H:%M:%S UTC")
                    .to_string()
            })
            .unwrap_or_else(|_| unknown());
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        Machine {
            measured_at: chrono::Utc::now()
                .format("%Y-%m-%d %H:%M:%S UTC")
                .to_string(),
            nproc: std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(0),
            cpu,
            memory_gb: (memory_kb / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| unknown()),
            rustc: command_output("rustc", &["-V"], None),
            binary: path,
            profile: profile.into(),
            binary_version: command_output(&binary.display().to_string(), &["--version"], None),
            binary_built,
            commit: command_output("git", &["rev-parse", "--short", "HEAD"], Some(&workspace)),
        }
    }

    /// The facts as a markdown table.
    pub fn markdown(&self) -> String {
        let mut out = String::from("| fact | value |\n|---|---|\n");
        let facts = [
            ("date", self.measured_at.clone()),
            ("cores (nproc)", self.nproc.to_string()),
            ("CPU", self.cpu.clone()),
            ("memory", format!("{} GB", self.memory_gb)),
            ("kernel", self.kernel.clone()),
            ("rustc", self.rustc.clone()),
            (
                "cuttle binary",
                format!(
                    "`{}` ({} build, {})",
                    self.binary, self.profile, self.binary_version
                ),
            ),
            ("binary built", self.binary_built.clone()),
            ("workspace commit", self.commit.clone()),
        ];
        for (fact, value) in facts {
            writeln(&mut out, format!("| {fact} | {value} |"));
        }
        out
    }
}

/// How many build or test processes of other commands run on the machine right now: cargo
/// (build, clippy, nextest), compilers and linkers. Our own ancestors (`cargo run` of this tool)
/// do not count.
pub fn builds_running() -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let ancestors = ancestors();
    entries
        .flatten()
        .filter(|entry| {
            let pid = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok());
            pid.is_some_and(|pid| !ancestors.contains(&pid))
        })
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("comm")).ok())
        .filter(|comm| {
            matches!(
                comm.trim(),
                "cargo"
                    | "cargo-nextest"
                    | "rustc"
                    | "cc"
                    | "cc1"
                    | "ld"
                    | "rust-lld"
                    | "build-script-b"
            )
        })
        .count()
}

/// This process and its parents, up to init.
fn ancestors() -> Vec<u32> {
    let mut chain = vec![std::process::id()];
    while let Some(&pid) = chain.last() {
        let parent = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            // The command name in parentheses may contain spaces: fields follow its `)`.
            .and_then(|stat| stat.rsplit_once(')').map(|(_, rest)| rest.to_owned()))
            .and_then(|rest| {
                rest.split_whitespace()
                    .nth(1)
                    .and_then(|p| p.parse::<u32>().ok())
            });
        match parent {
            Some(parent) if parent > 1 && !chain.contains(&parent) => chain.push(parent),
            _ => break,
        }
    }
    chain
}

/// Waits until no build has run for five seconds in a row, or `limit` passed.
pub async fn wait_for_quiet(limit: Duration) {
    if limit.is_zero() {
        return;
    }
    let started = std::time::Instant::now();
    let mut quiet_since = None;
    while started.elapsed() < limit {
        if builds_running() > 0 {
            quiet_since = None;
        } else if quiet_since
            .get_or_insert_with(std::time::Instant::now)
            .elapsed()
            >= Duration::from_secs(5)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("the machine did not become quiet within {limit:?}; measuring anyway");
}

/// Appends `line` and a newline.
fn writeln(out: &mut String, line: String) {
    out.push_str(&line);
    out.push('\n');
}

fn unknown() -> String {
    "unknown".into()
}

fn command_output(program: &str, args: &[&str], dir: Option<&Path>) -> String {
    let mut command = std::process::Command::new(program);
    command.args(args);
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    match command.output() {
        Ok(output) if output.status.success() => {
            String::from_utf8_lossy(&output.stdout).trim().to_owned()
        }
        _ => unknown(),
    }
}

/// Writes `value` with the machine facts to `dir/name.json`; returns the path.
pub fn write_json<T: Serialize>(
    dir: &Path,
    name: &str,
    machine: &Machine,
    value: &T,
) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{name}.json"));
    let document = serde_json::json!({ "machine": machine, "result": value });
    std::fs::write(&path, serde_json::to_string_pretty(&document)? + "\n")?;
    Ok(path)
}

/// The printed section of one deployment measurement.
pub fn deploy_markdown(report: &DeployReport) -> String {
    let mut out = markdown_table(&report.rows);
    writeln(
        &mut out,
        format!(
            "\nRuns: {} measured after {} warm-up, {} failed; task polled every {} ms; server log level `{}`; load average before: {}.",
            report.runs,
            report.warmup,
            report.failures.len(),
            report.poll_ms,
            report.log_level,
            report.load_before,
        ),
    );
    let overlapped = report.samples.iter().filter(|s| s.overlapped_build).count();
    if overlapped > 0 {
        writeln(
            &mut out,
            format!(
                "{overlapped} of {} measured runs overlapped another build or test run on the machine (cargo, rustc, a linker).",
                report.samples.len()
            ),
        );
    }
    if let Some(histogram) = &report.dispatch_histogram {
        writeln(
            &mut out,
            format!(
                "Orchestrator's `cuttle_task_dispatch_latency_seconds`: {} observations, mean {:.1} ms.",
                histogram.count, histogram.mean_ms
            ),
        );
    }
    if !report.rss_after_mb.is_empty() {
        let rss: Vec<String> = report
            .rss_after_mb
            .iter()
            .map(|(name, mb)| format!("{name} {mb:.0} MB"))
            .collect();
        writeln(
            &mut out,
            format!("Resident memory after the runs: {}.", rss.join(", ")),
        );
    }
    writeln(
        &mut out,
        "\nWhere the time goes (server timestamps have millisecond resolution):\n".to_owned(),
    );
    out.push_str(&markdown_table(&report.phase_rows));
    if !report.route_times.is_empty() {
        writeln(
            &mut out,
            "\nServer-side time per request (mean of `cuttle_http_request_duration_seconds`, setup and warm-up included):\n".to_owned(),
        );
        writeln(
            &mut out,
            "| request | count | mean |\n|---|---:|---:|".to_owned(),
        );
        for route in &report.route_times {
            writeln(
                &mut out,
                format!(
                    "| `{}` | {} | {:.1} ms |",
                    route.route, route.count, route.mean_ms
                ),
            );
        }
    }
    for failure in report.failures.iter().take(5) {
        let run = if failure.run == 0 {
            "warm-up".to_owned()
        } else {
            format!("run {}", failure.run)
        };
        let first_line = failure.reason.lines().next().unwrap_or_default();
        writeln(&mut out, format!("\n- failed {run}: {first_line}"));
    }
    out
}

/// The printed section of the startup measurement.
pub fn startup_markdown(report: &StartupReport) -> String {
    let mut out = markdown_table(&report.rows);
    writeln(
        &mut out,
        format!(
            "\nRuns: {} (each a first start and a warm restart), {} failed starts; server log level `{}`; load average before: {}.",
            report.runs,
            report.failures.len(),
            report.log_level,
            report.load_before,
        ),
    );
    let overlapped = report
        .samples
        .iter()
        .filter(|r| r.cold.overlapped_build || r.warm.overlapped_build)
        .count();
    if overlapped > 0 {
        writeln(
            &mut out,
            format!(
                "{overlapped} of {} runs overlapped another build or test run on the machine (cargo, rustc, a linker).",
                report.samples.len()
            ),
        );
    }
    for failure in report.failures.iter().take(5) {
        writeln(
            &mut out,
            format!("\n- {}", failure.lines().next().unwrap_or_default()),
        );
    }
    out
}

/// One section of `RESULTS.md`: a measurement's table, or why it could not run.
pub struct Section {
    /// Heading.
    pub title: String,
    /// Markdown body.
    pub body: String,
}

/// Renders `RESULTS.md`.
pub fn results_markdown(machine: &Machine, command: &str, sections: &[Section]) -> String {
    let mut out = String::from("# Cuttle measurements\n\n");
    writeln(
        &mut out,
        format!(
            "Generated by `{command}` on {}, with a **{}** build of `cuttle`. Regenerate rather than edit: \
         see [README.md](README.md) for what each figure means. Goals are targets to compare with, \
         never assertions; the verdict looks at the median and the p90.\n",
            machine.measured_at, machine.profile,
        ),
    );
    writeln(&mut out, format!("## Machine\n\n{}", machine.markdown()));
    for section in sections {
        writeln(
            &mut out,
            format!("## {}\n\n{}", section.title, section.body),
        );
    }
    out
}
