//! `cuttle-load-tests`: measures Cuttle on this machine and reports the figures next to their
//! goals. It drives the built `cuttle` binary as real processes (never the services in-process),
//! prints markdown tables, and writes JSON under `load-tests/results/`; `all` also writes
//! `load-tests/RESULTS.md`. See `load-tests/README.md` for what each figure means.

mod agents;
mod api;
mod auth;
mod deploy;
mod launch;
mod report;
mod startup;
mod stats;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use cuttle_testkit::Mode;
use deploy::{DeployOptions, mode_name};
use report::{Machine, Section};
use startup::StartupOptions;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "cuttle-load-tests",
    about = "Measures Cuttle's deployment latency, startup time and idle memory on this machine"
)]
struct Cli {
    /// The `cuttle` binary [default: $CARGO_TARGET_DIR/debug/cuttle, else target/debug/cuttle].
    #[arg(long, global = true)]
    cuttle: Option<PathBuf>,
    /// Where JSON results are written.
    #[arg(long, global = true, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results"))]
    results_dir: PathBuf,
    /// `telemetry.log_level` of the measured servers (`info` is the shipped default).
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    /// Copy the servers' logs of `deploy` into DIR/<mode>/ (they are deleted otherwise).
    #[arg(long, global = true)]
    keep_logs: Option<PathBuf>,
    /// Before each measurement, wait up to this many seconds for other builds and test runs to
    /// finish (other builds share the cores and skew the figures).
    #[arg(long, global = true, default_value_t = 0)]
    quiet_wait_secs: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Deployment latency: queued -> executing and end to end, over N deployments.
    Deploy {
        /// Which way Cuttle runs.
        #[arg(long, value_enum)]
        mode: ModeArg,
        #[command(flatten)]
        deploy: DeployArgs,
    },
    /// Polling agents held by one worker (memory, set-up), one step fanned out to them, and a
    /// health check of them.
    Agents {
        /// Which way Cuttle runs.
        #[arg(long, value_enum)]
        mode: ModeArg,
        /// Agent counts to reach, ascending, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
        counts: Vec<usize>,
        /// At which count to fan a script step out and run a health check (0: never).
        #[arg(long, default_value_t = 1000)]
        fan_out_at: usize,
    },
    /// Sign-in cost: password logins, and authenticating a request by API key, bearer access
    /// token and session cookie.
    Auth {
        /// Which way Cuttle runs.
        #[arg(long, value_enum)]
        mode: ModeArg,
        /// Logins to time.
        #[arg(long, default_value_t = 30)]
        logins: usize,
        /// Requests to time per way of authenticating.
        #[arg(long, default_value_t = 300)]
        requests: usize,
    },
    /// Time from spawning `cuttle server` to its first 200, and idle memory.
    Startup {
        #[command(flatten)]
        startup: StartupArgs,
    },
    /// Everything (both modes' deployments, then startup), and writes load-tests/RESULTS.md.
    All {
        #[command(flatten)]
        deploy: DeployArgs,
        /// Server starts to measure (each a first start and a warm restart).
        #[arg(long, default_value_t = 20)]
        startup_runs: usize,
        /// How long the server stays idle before its memory is read, in ms.
        #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(0..=60_000))]
        idle_ms: u64,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    /// `cuttle server`: SQLite, in-process bus, memory cache, local blobs.
    Embedded,
    /// api, orchestrator, package-feed and a worker as separate processes on PostgreSQL,
    /// RabbitMQ, Redis and S3.
    Distributed,
}

impl From<ModeArg> for Mode {
    fn from(mode: ModeArg) -> Mode {
        match mode {
            ModeArg::Embedded => Mode::Embedded,
            ModeArg::Distributed => Mode::Distributed,
        }
    }
}

#[derive(clap::Args, Clone)]
struct DeployArgs {
    /// Measured deployments per mode.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Deployments made first and left out of the figures.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Interval between two polls of the task, in ms (bounds the client-side resolution).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=1000))]
    poll_ms: u64,
    /// A deployment not completed after this many seconds counts as failed.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
    timeout_secs: u64,
}

#[derive(clap::Args, Clone)]
struct StartupArgs {
    /// Server starts to measure (each a first start and a warm restart).
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// How long the server stays idle before its memory is read, in ms.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    idle_ms: u64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("cuttle-load-tests: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let binary = match cli.cuttle.clone() {
        Some(path) => path,
        None => default_binary(),
    };
    if !binary.is_file() {
        bail!(
            "no cuttle binary at {}; build it with `cargo build -p cuttle` or pass --cuttle",
            binary.display()
        );
    }
    let binary = binary
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", binary.display()))?;
    let machine = Machine::describe(&binary);
    // Other sessions rebuild the shared target directory while we measure; a private copy keeps
    // one binary under test for the whole session (a rebuild replaces the file mid-run).
    let snapshot = BinarySnapshot::take(&binary)?;
    let binary = snapshot.path.clone();
    eprintln!(
        "measuring {} ({} build) on {} cores",
        machine.binary, machine.profile, machine.nproc
    );
    match &cli.command {
        Command::Deploy { mode, deploy } => {
            let section = run_deploy(&cli, &machine, &binary, (*mode).into(), deploy).await?;
            println!("## {}\n\n{}", section.title, section.body);
        }
        Command::Startup { startup } => {
            let section = run_startup(&cli, &machine, &binary, startup).await?;
            println!("## {}\n\n{}", section.title, section.body);
        }
        Command::Auth {
            mode,
            logins,
            requests,
        } => {
            let options = auth::AuthOptions {
                mode: (*mode).into(),
                logins: *logins,
                requests: *requests,
                binary: binary.clone(),
                log_level: cli.log_level.clone(),
            };
            let report = auth::measure(&options).await?;
            let path = report::write_json(
                &cli.results_dir,
                &format!("auth-{}", report.mode),
                &machine,
                &report,
            )?;
            println!("{}", auth::markdown(&report));
            eprintln!("wrote {}", path.display());
        }
        Command::Agents {
            mode,
            counts,
            fan_out_at,
        } => {
            let options = agents::AgentsOptions {
                mode: (*mode).into(),
                counts: counts.clone(),
                fan_out_at: *fan_out_at,
                binary: binary.clone(),
                log_level: cli.log_level.clone(),
            };
            let report = agents::measure(&options).await?;
            let path = report::write_json(
                &cli.results_dir,
                &format!("agents-{}", report.mode),
                &machine,
                &report,
            )?;
            println!("{}", agents::markdown(&report));
            eprintln!("wrote {}", path.display());
        }
        Command::All {
            deploy,
            startup_runs,
            idle_ms,
        } => {
            let startup = &StartupArgs {
                runs: *startup_runs,
                idle_ms: *idle_ms,
            };
            let mut sections = Vec::new();
            for mode in [Mode::Embedded, Mode::Distributed] {
                // One measurement failing (say, RabbitMQ is down) must not lose the others.
                let section = match run_deploy(&cli, &machine, &binary, mode, deploy).await {
                    Ok(section) => section,
                    Err(err) => Section {
                        title: deploy_title(mode),
                        body: format!("Could not run: {err:#}\n"),
                    },
                };
                println!("## {}\n\n{}", section.title, section.body);
                sections.push(section);
            }
            let section = match run_startup(&cli, &machine, &binary, startup).await {
                Ok(section) => section,
                Err(err) => Section {
                    title: STARTUP_TITLE.into(),
                    body: format!("Could not run: {err:#}\n"),
                },
            };
            println!("## {}\n\n{}", section.title, section.body);
            sections.push(section);
            let command = format!(
                "cargo run -p cuttle-load-tests{} --{} all --runs {} --warmup {} --poll-ms {} --startup-runs {} --idle-ms {}",
                if cfg!(debug_assertions) {
                    ""
                } else {
                    " --release"
                },
                if cli.quiet_wait_secs > 0 {
                    format!(" --quiet-wait-secs {}", cli.quiet_wait_secs)
                } else {
                    String::new()
                },
                deploy.runs,
                deploy.warmup,
                deploy.poll_ms,
                startup.runs,
                startup.idle_ms,
            );
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("RESULTS.md");
            std::fs::write(
                &path,
                report::results_markdown(&machine, &command, &sections),
            )?;
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(())
}

const STARTUP_TITLE: &str = "Startup and idle memory (`cuttle server`)";

fn deploy_title(mode: Mode) -> String {
    match mode {
        Mode::Embedded => "Deployment latency, embedded (`cuttle server`)".into(),
        Mode::Distributed => {
            "Deployment latency, distributed (api, orchestrator, package-feed, worker)".into()
        }
    }
}

async fn run_deploy(
    cli: &Cli,
    machine: &Machine,
    binary: &Path,
    mode: Mode,
    args: &DeployArgs,
) -> anyhow::Result<Section> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let options = DeployOptions {
        mode,
        runs: args.runs,
        warmup: args.warmup,
        poll: Duration::from_millis(args.poll_ms),
        timeout: Duration::from_secs(args.timeout_secs),
        binary: binary.to_owned(),
        log_level: cli.log_level.clone(),
        keep_logs: cli.keep_logs.as_ref().map(|dir| dir.join(mode_name(mode))),
    };
    eprintln!(
        "deploy, {} mode: {} runs after {} warm-up",
        mode_name(mode),
        args.runs,
        args.warmup
    );
    report::wait_for_quiet(Duration::from_secs(cli.quiet_wait_secs)).await;
    warn_if_busy();
    let report = deploy::measure(&options).await?;
    let path = report::write_json(
        &cli.results_dir,
        &format!("deploy-{}", mode_name(mode)),
        machine,
        &report,
    )?;
    eprintln!("wrote {}", path.display());
    Ok(Section {
        title: deploy_title(mode),
        body: report::deploy_markdown(&report),
    })
}

async fn run_startup(
    cli: &Cli,
    machine: &Machine,
    binary: &Path,
    args: &StartupArgs,
) -> anyhow::Result<Section> {
    if args.runs == 0 {
        bail!("--startup-runs must be at least 1");
    }
    let options = StartupOptions {
        runs: args.runs,
        idle: Duration::from_millis(args.idle_ms),
        poll: Duration::from_millis(2),
        binary: binary.to_owned(),
        log_level: cli.log_level.clone(),
    };
    eprintln!("startup: {} runs", args.runs);
    report::wait_for_quiet(Duration::from_secs(cli.quiet_wait_secs)).await;
    warn_if_busy();
    let report = startup::measure(&options).await?;
    let path = report::write_json(&cli.results_dir, "startup", machine, &report)?;
    eprintln!("wrote {}", path.display());
    Ok(Section {
        title: STARTUP_TITLE.into(),
        body: report::startup_markdown(&report),
    })
}

/// A private copy of the measured binary, removed when dropped.
struct BinarySnapshot {
    dir: PathBuf,
    path: PathBuf,
}

impl BinarySnapshot {
    fn take(binary: &Path) -> anyhow::Result<BinarySnapshot> {
        let dir = std::env::temp_dir().join(format!("cuttle-load-tests-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("cuttle");
        std::fs::copy(binary, &path)
            .with_context(|| format!("cannot copy {} to {}", binary.display(), path.display()))?;
        Ok(BinarySnapshot { dir, path })
    }
}

impl Drop for BinarySnapshot {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("could not remove {}: {err}", self.dir.display());
        }
    }
}

/// `$CARGO_TARGET_DIR/debug/cuttle`, else the workspace's `target/debug/cuttle`.
fn default_binary() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("debug").join("cuttle"),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("target")
            .join("debug")
            .join("cuttle"),
    }
}

/// Warns when other builds run next to the measurement: on two cores they skew every figure.
fn warn_if_busy() {
    let builds = report::builds_running();
    if builds > 0 {
        eprintln!(
            "warning: {builds} build or test processes are running; the figures will be slower than on an idle machine"
        );
    }
}
