//! `cuttle-agent`: the agent installed on deployment targets and workers, Cuttle's Tentacle.
//!
//! `register` creates the machine on the server and writes `agent.json`; `run` then serves
//! workers over the agent link (`cuttle-agent-link`): listening for them, or polling the server's
//! comms port. Workers start scripts, which run in their own process groups, and upload packages
//! into a content-addressed cache. The crate stays small on purpose: it links no database,
//! broker, blob store or server crate (see ARCHITECTURE.md).

mod home;
mod install;
mod packages;
mod register;
mod script;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Version of this agent build.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Protocol versions this agent can speak with a Cuttle server, newest last.
const PROTOCOL_VERSIONS: &[&str] = &["cuttle-agent/1"];

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
    /// Serve workers as agent.json says, until SIGINT or SIGTERM.
    Run,
    /// Register this agent with a Cuttle server as a deployment target or a worker, and write
    /// agent.json.
    Register(Box<register::RegisterArgs>),
}

fn main() -> ExitCode {
    // Usage errors, including unknown subcommands, exit with code 2 from clap itself.
    let cli = Cli::parse();
    init_logging();
    let home = || match &cli.home {
        Some(home) => Ok(home.clone()),
        None => home::default_home(),
    };
    match cli.command {
        Command::Version => {
            println!("cuttle-agent {VERSION}");
            println!(
                "supported protocol versions: {}",
                PROTOCOL_VERSIONS.join(", ")
            );
            ExitCode::SUCCESS
        }
        Command::Register(args) => match home().and_then(|home| register::register(&home, *args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::FAILURE
            }
        },
        Command::Run => match home().and_then(|home| serve::run(&home)) {
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
