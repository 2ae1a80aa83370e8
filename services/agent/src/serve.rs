//! `cuttle-agent run`: connects with workers in the configured mode and serves their requests
//! until SIGINT or SIGTERM, then stops every running script before exiting.
//!
//! Listening mode accepts any number of worker connections; polling mode keeps one connection
//! to the server's comms port, redialling with capped exponential backoff whenever it drops.

use crate::home::{self, AgentConfig, Mode};
use crate::install::Installations;
use crate::packages::PackageCache;
use crate::script::{self, Scripts};
use anyhow::Context;
use cuttle_agent_link::hello::capability;
use cuttle_agent_link::messages::{AgentCapabilities, Folder};
use cuttle_agent_link::{
    AgentIdentity, AgentLink, IncomingRequest, IncomingRequests, LinkError, LinkOptions, Listener,
    RemoteError, Request, Responder, Response, SubscriptionId,
};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// First pause before redialling the server in polling mode.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest pause between redials; doubling stops here.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A polling connection that lasted this long was healthy: the next redial starts at once.
const STABLE_CONNECTION: Duration = Duration::from_secs(30);

/// What every connection's requests are served from.
struct Agent {
    scripts: Scripts,
    packages: PackageCache,
    installations: Installations,
}

impl Agent {
    /// Answers one request; runs in its own task so a long script never blocks the others.
    async fn handle(self: Arc<Self>, request: Request, responder: Responder) {
        match request {
            Request::Capabilities => {
                answer(responder, Response::Capabilities(capabilities())).await;
            }
            Request::StartScript(start) => {
                let folder = start.folder.clone();
                let keep_files = start.keep_files;
                let cwd = match &folder {
                    None => None,
                    Some(folder) => match self.installations.resolve(folder).await {
                        Ok(dir) => Some(dir),
                        Err(error) => return answer(responder, Response::Error(error)).await,
                    },
                };
                self.scripts.serve_start(start, cwd, responder).await;
                // A staging folder lives as long as the one script that uses it, or until the
                // worker releases the job when it asked to keep the files.
                if let (false, Some(Folder::Staging { job_id })) = (keep_files, folder) {
                    self.installations.remove_staging(&job_id).await;
                }
            }
            Request::GetStatus {
                ticket,
                after_sequence,
            } => {
                let response = match self.scripts.status(&ticket, after_sequence) {
                    Ok(status) => Response::Status(status),
                    Err(error) => Response::Error(error),
                };
                answer(responder, response).await;
            }
            Request::Cancel { ticket } => {
                let response = match self.scripts.cancel(&ticket) {
                    Ok(was_running) => Response::CancelRequested {
                        ticket,
                        was_running,
                    },
                    Err(error) => Response::Error(error),
                };
                answer(responder, response).await;
            }
            Request::UploadPackage(upload) => self.packages.serve_upload(upload, responder).await,
            Request::ExtractPackage(extract) => {
                self.installations
                    .serve_extract(extract, &self.packages, responder)
                    .await;
            }
            Request::StagePackage(stage) => {
                self.installations
                    .serve_stage(stage, &self.packages, responder)
                    .await;
            }
            Request::ReadFile {
                path,
                offset,
                length,
            } => {
                let response = match read_file(&path, offset, length).await {
                    Ok((data, total_size)) => Response::FileChunk { data, total_size },
                    Err(error) => Response::Error(error),
                };
                answer(responder, response).await;
            }
            Request::ReleaseJob { job_id } => {
                let response = match self.scripts.release(&job_id).await {
                    Ok(()) => {
                        self.installations.remove_staging(&job_id).await;
                        Response::Released
                    }
                    Err(error) => Response::Error(error),
                };
                answer(responder, response).await;
            }
            Request::RewriteFiles(rewrite) => {
                self.installations.serve_rewrite(rewrite, responder).await;
            }
            // The link answers requests it cannot decode itself and never hands them over; if
            // one arrives anyway, dropping the responder answers it with an error.
            Request::Unsupported => {}
        }
    }
}

/// Reads part of a regular file (not through a link) for `read_file`.
async fn read_file(path: &str, offset: u64, length: u32) -> Result<(Vec<u8>, u64), RemoteError> {
    use cuttle_agent_link::RemoteErrorKind;
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let path = std::path::Path::new(path);
    let unreadable = |err: std::io::Error| {
        RemoteError::new(
            RemoteErrorKind::NotFound,
            format!("'{}' cannot be read: {err}", path.display()),
        )
    };
    if !path.is_absolute() {
        return Err(RemoteError::new(
            RemoteErrorKind::BadRequest,
            format!("'{}' is not an absolute path", path.display()),
        ));
    }
    let meta = tokio::fs::symlink_metadata(path)
        .await
        .map_err(unreadable)?;
    if !meta.is_file() {
        return Err(RemoteError::new(
            RemoteErrorKind::BadRequest,
            format!("'{}' is not a regular file", path.display()),
        ));
    }
    let mut file = tokio::fs::File::open(path).await.map_err(unreadable)?;
    file.seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(unreadable)?;
    let wanted = length.min(cuttle_agent_link::messages::MAX_FILE_CHUNK);
    let mut data = Vec::with_capacity(usize::try_from(wanted).unwrap_or(0));
    file.take(u64::from(wanted))
        .read_to_end(&mut data)
        .await
        .map_err(unreadable)?;
    Ok((data, meta.len()))
}

async fn answer(responder: Responder, response: Response) {
    if let Err(err) = responder.respond(response).await {
        tracing::debug!(error = %err, "could not answer a request; the worker is gone");
    }
}

/// What this agent is, for `capabilities`.
fn capabilities() -> AgentCapabilities {
    AgentCapabilities {
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        os: std::env::consts::OS.to_owned(),
        arch: std::env::consts::ARCH.to_owned(),
        hostname: home::hostname(),
        shells: script::available_shells(),
    }
}

/// Serves one connection's requests until it closes.
async fn serve_connection(agent: Arc<Agent>, mut incoming: IncomingRequests) {
    let peer = incoming.peer().clone();
    while let Some(IncomingRequest { request, responder }) = incoming.next().await {
        tracing::debug!(
            peer.thumbprint = %peer.thumbprint,
            request.kind = request.kind(),
            "request received"
        );
        tokio::spawn(agent.clone().handle(request, responder));
    }
    let reason = incoming
        .close_reason()
        .map_or_else(|| "closed".to_owned(), |reason| reason.to_string());
    tracing::info!(
        peer.thumbprint = %peer.thumbprint,
        peer.address = %peer.address,
        reason = %reason,
        "worker connection ended"
    );
}

/// Runs the agent in `home` until a shutdown signal.
pub fn run(home: &Path) -> anyhow::Result<()> {
    home::prepare_home(home)?;
    let config = AgentConfig::load(home)?.with_context(|| {
        format!(
            "{} has no {}: register this agent first with `cuttle-agent --home {} register --server URL --api-key KEY ...`",
            home.display(),
            home::CONFIG_FILE,
            home.display()
        )
    })?;
    let identity = AgentIdentity::load_or_create(home)
        .with_context(|| format!("could not load the agent identity in {}", home.display()))?;
    let work_dir = home::private_subdir(home, "work")?;
    let packages_dir = home::private_subdir(home, "packages")?;
    let applications_dir = home::private_subdir(home, home::APPLICATIONS_DIR)?;
    let staging_dir = home::private_subdir(home, "staging")?;
    // Before anything new starts: scripts of an agent that died must not run on unseen.
    let n_orphans = script::stop_orphans(&work_dir);
    if n_orphans > 0 {
        tracing::warn!(
            script.count = n_orphans,
            "stopped scripts left running by a previous agent process"
        );
    }
    // What is left was kept for workers that never released it; no script of this process
    // runs yet, so none of it is in use.
    script::remove_leftovers(&work_dir);
    let agent = Arc::new(Agent {
        scripts: Scripts::new(work_dir, Duration::from_secs(config.kill_grace_secs)),
        packages: PackageCache::open(packages_dir),
        installations: Installations::new(applications_dir, staging_dir),
    });
    let options = LinkOptions {
        capabilities: vec![
            capability::SCRIPT.to_owned(),
            capability::PACKAGE_UPLOAD.to_owned(),
            capability::PACKAGE_INSTALL.to_owned(),
        ],
        ..LinkOptions::default()
    };
    let trusted = config.trusted_thumbprints.iter().copied().collect();
    let link = AgentLink::new(&identity, trusted, options).context("could not set up TLS")?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    runtime.block_on(async {
        let mut signals = ShutdownSignals::install()?;
        // The listener is bound before "agent started", so that a started agent is reachable.
        let connector = match &config.mode {
            Mode::Listening { listen } => {
                let listener = link.listen(listen).await.with_context(|| {
                    format!("could not listen on {listen}; is another process using that port? (agent.json \"listen\")")
                })?;
                tracing::info!(listen.address = %listener.local_addr(), "agent listening for workers");
                Connector::Listening(listener)
            }
            Mode::Polling { server_comms } => Connector::Polling {
                address: server_comms.clone(),
                subscription: config.subscription()?,
            },
        };
        // Logged once the handlers are installed: a supervisor that signals the agent as soon
        // as it reports readiness must get a clean stop, not the default signal action.
        tracing::info!(
            agent.home = %home.display(),
            agent.version = env!("CARGO_PKG_VERSION"),
            agent.thumbprint = %identity.thumbprint(),
            process.pid = std::process::id(),
            "agent started"
        );
        let serving = async {
            match connector {
                Connector::Listening(listener) => serve_listening(listener, agent.clone()).await,
                Connector::Polling {
                    address,
                    subscription,
                } => serve_polling(&link, &address, subscription, agent.clone()).await,
            }
        };
        let outcome = tokio::select! {
            failure = serving => Err(failure),
            signal = signals.recv() => Ok(signal),
        };
        // Whatever ended the agent, its scripts end with it.
        agent.scripts.stop_all().await;
        let signal = outcome?;
        tracing::info!(signal, "agent stopped after receiving {signal}");
        Ok(())
    })
}

/// How the agent reaches workers, ready to serve.
enum Connector {
    /// Bound and accepting.
    Listening(Listener<IncomingRequests>),
    /// Dials this address with this subscription.
    Polling {
        /// The server's comms `host:port`.
        address: String,
        /// The `poll://<id>/` the agent announces.
        subscription: SubscriptionId,
    },
}

/// Listening mode: accepts trusted workers and serves each connection; returns only if the
/// listener fails.
async fn serve_listening(
    mut listener: Listener<IncomingRequests>,
    agent: Arc<Agent>,
) -> anyhow::Error {
    loop {
        match listener.accept().await {
            Ok(incoming) => {
                let peer = incoming.peer();
                tracing::info!(
                    peer.thumbprint = %peer.thumbprint,
                    peer.address = %peer.address,
                    "worker connected"
                );
                tokio::spawn(serve_connection(agent.clone(), incoming));
            }
            Err(LinkError::Closed(reason)) => {
                return anyhow::anyhow!(
                    "the listener on {} stopped: {reason}",
                    listener.local_addr()
                );
            }
            Err(err) => log_refused(&err, "refused a worker connection"),
        }
    }
}

/// Polling mode: keeps a connection to the server's comms port, redialling when it drops;
/// never returns.
async fn serve_polling(
    link: &AgentLink,
    address: &str,
    subscription: SubscriptionId,
    agent: Arc<Agent>,
) -> anyhow::Error {
    let mut backoff = FIRST_BACKOFF;
    let mut attempt: u64 = 0;
    loop {
        attempt += 1;
        tracing::info!(
            server.address = %address,
            connect.attempt = attempt,
            "connecting to the server"
        );
        match link.dial_worker(address, subscription.clone()).await {
            Ok(incoming) => {
                let peer = incoming.peer();
                tracing::info!(
                    peer.thumbprint = %peer.thumbprint,
                    peer.address = %peer.address,
                    subscription.id = %subscription,
                    "connected to the server; serving its requests"
                );
                let connected_at = tokio::time::Instant::now();
                serve_connection(agent.clone(), incoming).await;
                attempt = 0;
                // A server that accepts and then drops the agent at once (it does not know the
                // subscription, say) must not be redialled in a tight loop: only a connection
                // that lasted resets the backoff.
                if connected_at.elapsed() >= STABLE_CONNECTION {
                    backoff = FIRST_BACKOFF;
                    continue;
                }
            }
            Err(err) => log_refused(&err, "could not connect to the server"),
        }
        tracing::info!(
            retry.delay_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
            "reconnecting after a pause"
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Logs a failed or refused handshake with what would fix it.
fn log_refused(err: &LinkError, what: &str) {
    match err {
        LinkError::UntrustedPeer { thumbprint } => tracing::warn!(
            peer.thumbprint = %thumbprint,
            "{what}: its certificate is not trusted by this agent (agent.json \"trusted_thumbprints\")"
        ),
        LinkError::RefusedByPeer { thumbprint } => tracing::warn!(
            agent.thumbprint = %thumbprint,
            "{what}: the peer does not trust this agent's certificate; register the agent again"
        ),
        other => tracing::warn!(error = %error_chain(other), "{what}"),
    }
}

/// An error and its causes on one line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The signals that stop the agent.
struct ShutdownSignals {
    /// SIGINT, sent by Ctrl-C.
    interrupt: tokio::signal::unix::Signal,
    /// SIGTERM, sent by service managers and `kill`.
    terminate: tokio::signal::unix::Signal,
}

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
