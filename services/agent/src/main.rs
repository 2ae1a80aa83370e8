//! `cuttle-agent`: the agent installed on deployment targets.
//!
//! This release only knows its home directory and how to start and stop cleanly. Mutual TLS and
//! the listening and polling modes arrive with the agent protocol; until then the commands that
//! need them refuse plainly instead of pretending to work. The crate stays small on purpose: it
//! links no database, broker or cloud SDK (see the build guide).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Version of this agent build.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Protocol versions this agent can speak with a Cuttle server, newest last.
const PROTOCOL_VERSIONS: &[&str] = &["cuttle-agent/1"];

/// Exit code of a command that exists but is not available in this version; 2 matches the
/// code clap uses for usage errors, so scripts see "this cannot work" rather than "it failed".
const EXIT_NOT_AVAILABLE: u8 = 2;

/// Directory name of the agent's home under the XDG data directory.
const HOME_DIR_NAME: &str = "cuttle-agent";

/// Command line of `cuttle-agent`.
#[derive(Debug, Parser)]
#[command(
    name = "cuttle-agent",
    version,
    about = "Cuttle deployment-target agent"
)]
struct Cli {
    /// Home directory of the agent [default: $XDG_DATA_HOME/cuttle-agent or
    /// ~/.local/share/cuttle-agent]
    #[arg(long, global = true, env = "CUTTLE_AGENT_HOME", value_name = "DIR")]
    home: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// Subcommands of `cuttle-agent`.
#[derive(Debug, Subcommand)]
enum Command {
    /// Print the agent version and the protocol versions it supports.
    Version,
    /// Run the agent until SIGINT or SIGTERM.
    Run,
    /// Register this agent with a Cuttle server (not available yet).
    Register {
        /// Accepted and ignored, so that any registration command line gets the same answer.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    // Usage errors, including unknown subcommands, exit with code 2 from clap itself.
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Version => {
            println!("cuttle-agent {VERSION}");
            println!(
                "supported protocol versions: {}",
                PROTOCOL_VERSIONS.join(", ")
            );
            ExitCode::SUCCESS
        }
        Command::Register { .. } => {
            eprintln!(
                "error: registration with a Cuttle server is not available yet in this version"
            );
            ExitCode::from(EXIT_NOT_AVAILABLE)
        }
        Command::Run => match run(cli.home) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(error = format!("{error:#}"), "agent failed");
                ExitCode::FAILURE
            }
        },
    }
}

/// Logs human-readable lines to standard error, filtered by `RUST_LOG` (default `info`).
fn init_logging() {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Prepares the home directory, then waits for a shutdown signal.
fn run(home: Option<PathBuf>) -> anyhow::Result<()> {
    let home = match home {
        Some(home) => home,
        None => default_home()?,
    };
    prepare_home(&home)?;
    // One thread is plenty while the agent only waits for signals.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    runtime.block_on(async {
        let mut signals = ShutdownSignals::install()?;
        // Logged only once the handlers are installed: a supervisor that signals the agent as
        // soon as it reports readiness must get a clean stop, not the default signal action.
        tracing::info!(
            agent.home = %home.display(),
            agent.version = VERSION,
            process.pid = std::process::id(),
            "agent started"
        );
        let signal = signals.recv().await;
        tracing::info!(signal, "agent stopped after receiving {signal}");
        Ok(())
    })
}

/// `$XDG_DATA_HOME/cuttle-agent`, else `~/.local/share/cuttle-agent`.
fn default_home() -> anyhow::Result<PathBuf> {
    // The XDG specification says relative paths in XDG_DATA_HOME are invalid and to be ignored.
    let xdg_data_home = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|path| path.is_absolute());
    if let Some(data_home) = xdg_data_home {
        return Ok(data_home.join(HOME_DIR_NAME));
    }
    match std::env::var_os("HOME").filter(|home| !home.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".local/share").join(HOME_DIR_NAME)),
        None => {
            bail!("cannot choose a home directory: pass --home DIR or set XDG_DATA_HOME or HOME")
        }
    }
}

/// Creates the home directory readable by its owner only; it will hold the agent's private key.
#[cfg(unix)]
fn prepare_home(home: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};

    match std::fs::metadata(home) {
        Ok(metadata) if metadata.is_dir() => {
            let mode = metadata.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                // Not changed behind the operator's back: --home may point at a shared folder.
                tracing::warn!(
                    agent.home = %home.display(),
                    mode = format!("{mode:o}"),
                    "agent home is accessible to other users; restrict it with chmod 700"
                );
            }
            Ok(())
        }
        Ok(_) => bail!(
            "agent home {} exists but is not a directory",
            home.display()
        ),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(home)
                .with_context(|| format!("could not create agent home {}", home.display()))?;
            // The umask may have removed bits from the mode above; set it exactly.
            std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700)).with_context(
                || {
                    format!(
                        "could not restrict agent home {} to mode 700",
                        home.display()
                    )
                },
            )?;
            tracing::info!(agent.home = %home.display(), "created agent home");
            Ok(())
        }
        Err(error) => {
            Err(error).with_context(|| format!("could not inspect agent home {}", home.display()))
        }
    }
}

/// Creates the home directory; other platforms have no Unix mode bits to set.
#[cfg(not(unix))]
fn prepare_home(home: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(home)
        .with_context(|| format!("could not create agent home {}", home.display()))
}

/// The signals that stop the agent.
#[cfg(unix)]
struct ShutdownSignals {
    /// SIGINT, sent by Ctrl-C.
    interrupt: tokio::signal::unix::Signal,
    /// SIGTERM, sent by service managers and `kill`.
    terminate: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl ShutdownSignals {
    /// Installs the handlers, replacing the default action (terminate without cleanup).
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("could not handle SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("could not handle SIGTERM")?,
        })
    }

    /// Waits for the first signal and returns its name.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}

/// The signal that stops the agent where there is no SIGTERM.
#[cfg(not(unix))]
struct ShutdownSignals;

#[cfg(not(unix))]
impl ShutdownSignals {
    /// Nothing to install ahead: Ctrl-C is observed when waited for.
    fn install() -> anyhow::Result<Self> {
        Ok(Self)
    }

    /// Waits for Ctrl-C and returns its name.
    async fn recv(&mut self) -> &'static str {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %error, "cannot wait for Ctrl-C; stopping now");
        }
        "Ctrl-C"
    }
}
