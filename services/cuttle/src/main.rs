//! `cuttle`: one binary for every server process, and the embedded all-in-one server.
//!
//! `cuttle server` runs everything in one process on SQLite, an in-process bus, a local blob
//! directory and a memory cache. `cuttle api|orchestrator|package-feed|worker` run one service
//! each, configured for PostgreSQL, RabbitMQ, S3 and Redis (see `infra/cuttle.example.toml`).
//! `cuttle package pack|push` are client commands (`package_cli.rs`).

mod package_cli;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cuttle_platform::{Config, shutdown_signal};
use package_cli::PackageCommand;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(name = "cuttle", version, about = "Cuttle deployment automation")]
struct Cli {
    /// Configuration file (TOML); CUTTLE_* environment variables override it.
    #[arg(long, global = true, env = "CUTTLE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Everything in one process, embedded mode: the command to try Cuttle.
    Server {
        /// Address to listen on (default 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Where data lives (default ~/.local/share/cuttle).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// The REST API service.
    Api {
        /// Address to listen on (default server.listen).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// The orchestrator service.
    Orchestrator {
        /// Address of its health and metrics endpoints (default server.ops_listen).
        #[arg(long)]
        ops_listen: Option<SocketAddr>,
    },
    /// The package-feed service.
    PackageFeed {
        /// Address to listen on (default server.feed_listen).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// A worker.
    Worker {
        /// Address of its health and metrics endpoints (default server.ops_listen).
        #[arg(long)]
        ops_listen: Option<SocketAddr>,
    },
    /// Applies database migrations, then exits.
    Migrate,
    /// Administration commands.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Master key maintenance for sensitive values.
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
    },
    /// Builds deployment packages and pushes them to a server's built-in feed.
    Package {
        #[command(subcommand)]
        command: PackageCommand,
    },
}

#[derive(Subcommand)]
enum SecretsCommand {
    /// Seals every stored sensitive value again under `secrets.master_key`, so that the keys in
    /// `secrets.retired_keys` can be dropped (the last step of a key rotation).
    Reseal,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Prints a new API key for the administrator.
    NewApiKey {
        /// The server's data directory (embedded mode).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Creates an organisation with its owner and `Default` space, and prints the owner's
    /// first API key (what portal signup does, for operators).
    NewOrganisation {
        /// The organisation's name.
        #[arg(long)]
        name: String,
        /// Its unique slug.
        #[arg(long)]
        slug: String,
        /// The owner's username.
        #[arg(long)]
        owner: String,
        /// The owner's email address.
        #[arg(long)]
        email: Option<String>,
        /// The server's data directory (embedded mode).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("cuttle: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Raises the soft limit on open files to the hard limit: every polling agent a worker holds is
/// a socket, and the usual soft default (1,024) would refuse agents long before memory runs out.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!(from = soft, to = hard, "raised the open-file limit"),
            Err(err) => {
                tracing::warn!(soft, hard, error = %err, "could not raise the open-file limit; each polling agent needs one")
            }
        },
        Ok(_) => {}
        Err(err) => tracing::warn!(error = %err, "could not read the open-file limit"),
    }
}

async fn bind(address: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} ({what})"))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let started = Instant::now();
    // Client commands read no server configuration and start no telemetry, which could write to
    // the standard output they print their results on.
    let command = match cli.command {
        Command::Package { command } => return package_cli::run(command).await,
        command => command,
    };
    let mut config = Config::load(cli.config.as_deref())?;
    let service = match &command {
        Command::Server { .. } => "cuttle-server",
        Command::Api { .. } => "cuttle-api",
        Command::Orchestrator { .. } => "cuttle-orchestrator",
        Command::PackageFeed { .. } => "cuttle-package-feed",
        Command::Worker { .. } => "cuttle-worker",
        Command::Migrate
        | Command::Admin { .. }
        | Command::Secrets { .. }
        | Command::Package { .. } => "cuttle",
    };
    let _telemetry = cuttle_telemetry::init(service, &config.telemetry)?;
    raise_open_file_limit();
    match command {
        Command::Server { listen, data_dir } => {
            if let Some(listen) = listen {
                config.server.listen = listen;
            }
            if let Some(dir) = data_dir {
                config.server.data_dir = dir;
            }
            let listener = bind(config.server.listen, "server.listen").await?;
            let address = listener.local_addr()?;
            let data_dir = config.server.data_dir.clone();
            let fixed_key = config.admin_api_key.is_some();
            let prepared = cuttle::prepare_embedded(config).await?;
            let key = prepared.bootstrap.new_admin_api_key.clone();
            let serving = tokio::spawn(cuttle::serve_all(prepared, listener, shutdown_signal()));
            print_welcome(address, &data_dir, key.as_deref(), fixed_key);
            tracing::info!(address = %address, startup_ms = started.elapsed().as_millis() as u64, "cuttle server started");
            serving.await.context("server task failed")?
        }
        Command::Api { listen } => {
            let listener = bind(listen.unwrap_or(config.server.listen), "server.listen").await?;
            cuttle::run_api(config, listener, shutdown_signal()).await
        }
        Command::Orchestrator { ops_listen } => {
            let listener = bind(
                ops_listen.unwrap_or(config.server.ops_listen),
                "server.ops_listen",
            )
            .await?;
            cuttle::run_orchestrator(config, listener, shutdown_signal()).await
        }
        Command::PackageFeed { listen } => {
            let listener = bind(
                listen.unwrap_or(config.server.feed_listen),
                "server.feed_listen",
            )
            .await?;
            cuttle::run_package_feed(config, listener, shutdown_signal()).await
        }
        Command::Worker { ops_listen } => {
            let listener = bind(
                ops_listen.unwrap_or(config.server.ops_listen),
                "server.ops_listen",
            )
            .await?;
            cuttle::run_worker(config, listener, shutdown_signal()).await
        }
        Command::Migrate => {
            let store = cuttle_platform::connect_store(&config).await?;
            store.migrate().await?;
            println!("database is up to date");
            Ok(())
        }
        Command::Admin {
            command: AdminCommand::NewApiKey { data_dir },
        } => {
            if let Some(dir) = data_dir {
                config.server.data_dir = dir;
            }
            let store = cuttle_platform::connect_store(&config).await?;
            store.migrate().await?;
            let key = cuttle_api::bootstrap::new_admin_api_key(
                &store,
                "Created with cuttle admin new-api-key",
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            println!("{key}");
            Ok(())
        }
        Command::Admin {
            command:
                AdminCommand::NewOrganisation {
                    name,
                    slug,
                    owner,
                    email,
                    data_dir,
                },
        } => {
            if let Some(dir) = data_dir {
                config.server.data_dir = dir;
            }
            let store = cuttle_platform::connect_store(&config).await?;
            store.migrate().await?;
            // The first organisation comes from bootstrap; make sure it exists first.
            cuttle_api::bootstrap::ensure(&store, None)
                .await
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let created = cuttle_api::organisations::create(
                &store,
                cuttle_api::organisations::Signup {
                    name: &name,
                    slug: &slug,
                    username: &owner,
                    email: email.as_deref(),
                    password_hash: None,
                    email_verified: true,
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            eprintln!(
                "organisation {} ({}) created with owner {} and space {}",
                created.organisation.id,
                created.organisation.slug,
                created.owner.id,
                created.space_id
            );
            println!("{}", created.api_key);
            Ok(())
        }
        Command::Secrets {
            command: SecretsCommand::Reseal,
        } => {
            let keyring = cuttle_platform::secrets::keyring(&config)?.ok_or_else(|| {
                anyhow::anyhow!(
                    "no master key: set secrets.master_key (CUTTLE_SECRETS__MASTER_KEY)"
                )
            })?;
            let store = cuttle_platform::connect_store(&config).await?;
            store.migrate().await?;
            let done = cuttle_api::reseal::reseal_all(&store, &keyring).await?;
            println!(
                "{} sensitive values in {} variable sets and snapshots now use master key {}",
                done.values,
                done.documents,
                keyring.key_id()
            );
            Ok(())
        }
        // Returned from above, before the configuration is loaded.
        Command::Package { command } => package_cli::run(command).await,
    }
}

fn print_welcome(
    address: SocketAddr,
    data_dir: &std::path::Path,
    key: Option<&str>,
    fixed_key: bool,
) {
    println!(
        "Cuttle is running at http://{address}  (data: {})",
        data_dir.display()
    );
    match key {
        Some(key) => {
            println!("Administrator API key: {key}");
            println!("  It is shown only this once. Use it in the X-Octopus-ApiKey header.");
        }
        None if fixed_key => println!("Administrator API key: the one set in CUTTLE_ADMIN_API_KEY"),
        None => {}
    }
    println!(
        "  For a new administrator key at any time: cuttle admin new-api-key --data-dir {}",
        data_dir.display()
    );
}
