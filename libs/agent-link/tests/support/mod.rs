//! Shared test harness: real identities on disk, a tiny agent service and raw TLS peers.
#![allow(dead_code, clippy::unwrap_used)]

use cuttle_agent_link::messages::{
    AgentCapabilities, OutputLine, OutputStream, ScriptState, ScriptStatus, ScriptSyntax,
    ScriptTicket, Sha256Digest,
};
use cuttle_agent_link::{
    AgentIdentity, AgentLink, Identity, IncomingRequest, IncomingRequests, LinkOptions, Progress,
    RemoteError, RemoteErrorKind, Request, Requester, Responder, Response, SubscriptionId,
    Thumbprint, TrustedThumbprints, WorkerIdentity, WorkerLink, tls,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
}

/// A worker and an agent identity, each in its own directory as in production.
pub struct Ends {
    pub worker: WorkerIdentity,
    pub agent: AgentIdentity,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Ends {
    pub fn new() -> Ends {
        init_tracing();
        let worker_dir = tempfile::tempdir().unwrap();
        let agent_dir = tempfile::tempdir().unwrap();
        Ends {
            worker: WorkerIdentity::load_or_create(worker_dir.path()).unwrap(),
            agent: AgentIdentity::load_or_create(agent_dir.path()).unwrap(),
            _dirs: (worker_dir, agent_dir),
        }
    }

    /// A worker link that trusts this agent.
    pub fn worker_link(&self, options: LinkOptions) -> WorkerLink {
        WorkerLink::new(&self.worker, trusting([self.agent.thumbprint()]), options).unwrap()
    }

    /// An agent link that trusts this worker.
    pub fn agent_link(&self, options: LinkOptions) -> AgentLink {
        AgentLink::new(&self.agent, trusting([self.worker.thumbprint()]), options).unwrap()
    }
}

pub fn trusting(thumbprints: impl IntoIterator<Item = Thumbprint>) -> TrustedThumbprints {
    thumbprints.into_iter().collect()
}

/// Options with a handshake timeout short enough that a broken test fails fast.
pub fn test_options() -> LinkOptions {
    LinkOptions {
        handshake_timeout: Duration::from_secs(10),
        ..LinkOptions::default()
    }
}

/// A minimal agent: answers every v1 request from memory, one task per request.
#[derive(Clone, Default)]
pub struct TestAgent {
    pub packages: Arc<Mutex<HashMap<Sha256Digest, Vec<u8>>>>,
}

impl TestAgent {
    pub async fn serve(self, mut incoming: IncomingRequests) {
        while let Some(IncomingRequest { request, responder }) = incoming.next().await {
            let agent = self.clone();
            tokio::spawn(async move { agent.handle(request, responder).await });
        }
    }

    async fn handle(&self, request: Request, responder: Responder) {
        let answered = match request {
            Request::Capabilities => {
                responder
                    .respond(Response::Capabilities(capabilities()))
                    .await
            }
            Request::GetStatus {
                ticket,
                after_sequence,
            } => {
                // Later requests answer sooner, so answers arrive out of order.
                tokio::time::sleep(Duration::from_millis(20 - after_sequence % 20)).await;
                let status = ScriptStatus {
                    ticket,
                    state: ScriptState::Finished {
                        exit_code: i32::try_from(after_sequence).unwrap(),
                    },
                    lines: vec![],
                };
                responder.respond(Response::Status(status)).await
            }
            Request::StartScript(start) => {
                let ticket = ScriptTicket(format!("ticket-{}", start.job_id.0));
                responder
                    .progress(Progress::ScriptStarted {
                        ticket: ticket.clone(),
                    })
                    .await
                    .unwrap();
                // The "script" echoes its body, one output line per body line.
                for (index, text) in start.body.lines().enumerate() {
                    let line = OutputLine {
                        sequence: index as u64 + 1,
                        at: chrono::Utc::now(),
                        stream: OutputStream::Stdout,
                        text: text.to_owned(),
                    };
                    let lines = vec![line];
                    responder
                        .progress(Progress::Output { lines })
                        .await
                        .unwrap();
                }
                responder
                    .respond(Response::ScriptFinished {
                        ticket,
                        exit_code: 0,
                    })
                    .await
            }
            Request::Cancel { ticket } => {
                responder
                    .respond(Response::CancelRequested {
                        ticket,
                        was_running: false,
                    })
                    .await
            }
            Request::UploadPackage(upload) => {
                let cached = self.packages.lock().unwrap().contains_key(&upload.sha256);
                if cached {
                    responder
                        .respond(Response::PackageStored {
                            sha256: upload.sha256,
                            already_cached: true,
                        })
                        .await
                } else {
                    let mut receiver = responder.receive_upload(&upload).await.unwrap();
                    let mut bytes = Vec::new();
                    let outcome = loop {
                        match receiver.next_chunk().await {
                            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
                            Ok(None) => break Ok(()),
                            Err(err) => break Err(err),
                        }
                    };
                    match outcome {
                        Ok(()) => {
                            self.packages.lock().unwrap().insert(upload.sha256, bytes);
                            responder
                                .respond(Response::PackageStored {
                                    sha256: upload.sha256,
                                    already_cached: false,
                                })
                                .await
                        }
                        Err(err) => {
                            let error = RemoteError::new(RemoteErrorKind::Corrupt, err.to_string());
                            responder.respond(Response::Error(error)).await
                        }
                    }
                }
            }
            // The link's own behaviour is what these tests check; installations are the real
            // agent's (services/agent), so this one refuses them like an older agent would.
            Request::ExtractPackage(_)
            | Request::RewriteFiles(_)
            | Request::StagePackage(_)
            | Request::ReadFile { .. }
            | Request::ReleaseJob { .. } => {
                let error = RemoteError::new(
                    RemoteErrorKind::Unsupported,
                    "the test agent does not install packages",
                );
                responder.respond(Response::Error(error)).await
            }
            Request::Unsupported => unreachable!("the link answers unknown requests itself"),
        };
        // The worker may have gone away in tests that close connections on purpose.
        if let Err(err) = answered {
            tracing::debug!(error = %err, "test agent could not answer");
        }
    }
}

pub fn capabilities() -> AgentCapabilities {
    AgentCapabilities {
        agent_version: "0.1.0-test".to_owned(),
        os: std::env::consts::OS.to_owned(),
        arch: std::env::consts::ARCH.to_owned(),
        hostname: "test-host".to_owned(),
        shells: vec![ScriptSyntax::Bash, ScriptSyntax::Python],
    }
}

/// A listening agent serving `TestAgent` on loopback, and a worker connected to it.
pub struct ListeningPair {
    pub requester: Requester,
    pub agent: TestAgent,
    pub server: JoinHandle<()>,
}

pub async fn listening_pair(ends: &Ends, worker_options: LinkOptions) -> ListeningPair {
    let agent = TestAgent::default();
    let mut listener = ends
        .agent_link(test_options())
        .listen("127.0.0.1:0")
        .await
        .unwrap();
    let address = listener.local_addr().to_string();
    let serving = agent.clone();
    let server = tokio::spawn(async move {
        while let Ok(incoming) = listener.accept().await {
            tokio::spawn(serving.clone().serve(incoming));
        }
    });
    let requester = ends
        .worker_link(worker_options)
        .dial_agent(&address, ends.agent.thumbprint())
        .await
        .unwrap();
    ListeningPair {
        requester,
        agent,
        server,
    }
}

/// A worker listening for polling agents, and an agent that dialled it and serves `TestAgent`.
pub async fn polling_pair(ends: &Ends, subscription: &str) -> (Requester, JoinHandle<()>) {
    let mut listener = ends
        .worker_link(test_options())
        .listen("127.0.0.1:0")
        .await
        .unwrap();
    let address = listener.local_addr().to_string();
    let agent_link = ends.agent_link(test_options());
    let subscription = SubscriptionId::parse(subscription).unwrap();
    let (incoming, requester) = tokio::join!(
        agent_link.dial_worker(&address, subscription),
        listener.accept()
    );
    let serve = tokio::spawn(TestAgent::default().serve(incoming.unwrap()));
    (requester.unwrap(), serve)
}

/// A raw TLS client speaking the hello by hand, to play peers this crate would never be.
pub async fn raw_tls_client(
    address: &str,
    identity: &Identity,
    trusted: TrustedThumbprints,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let config = tls::client_config(identity, trusted, "test peer").unwrap();
    let tcp = TcpStream::connect(address).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(tls::SERVER_NAME).unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap()
}

/// Writes `hello` as a line and reads the peer's hello line back.
pub async fn swap_hellos<S>(stream: S, hello: &str) -> (BufReader<S>, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (stream, line) = swap_hellos_fallible(stream, hello).await;
    (stream, line.unwrap())
}

/// Like `swap_hellos`, returning the error when the peer refuses or closes instead.
pub async fn swap_hellos_fallible<S>(
    stream: S,
    hello: &str,
) -> (BufReader<S>, std::io::Result<String>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut stream = BufReader::new(stream);
    let line = async {
        let writer = stream.get_mut();
        writer.write_all(format!("{hello}\n").as_bytes()).await?;
        writer.flush().await?;
        let mut line = String::new();
        if stream.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(line)
    }
    .await;
    (stream, line)
}

/// Deterministic pseudo-random bytes (xorshift), so a corrupted byte cannot hide in a pattern.
pub fn noise(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Fails a test that hangs instead of letting it run forever; never a timing assertion.
pub async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), future)
        .await
        .expect("the test hung")
}
