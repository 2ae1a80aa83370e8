//! Dialling and listening for both ends, in both directions.
//!
//! | agent mode | who dials | worker calls | agent calls |
//! |---|---|---|---|
//! | listening (Tentacle's default, port 10933) | worker | [`WorkerLink::dial_agent`] | [`AgentLink::listen`] |
//! | polling (Tentacle's port 10943) | agent | [`WorkerLink::listen`] | [`AgentLink::dial_worker`] |
//!
//! Either way the worker ends up with a [`Requester`] and the agent with [`IncomingRequests`].

use crate::connection::{self, Established, IncomingRequests, Peer, Requester};
use crate::error::{CloseReason, LinkError};
use crate::hello::{Hello, MAX_HELLO_LEN, Role, SubscriptionId};
use crate::identity::{AgentIdentity, Identity, Thumbprint, WorkerIdentity};
use crate::tls::{self, TrustedThumbprints};
use futures::StreamExt;
use rustls::AlertDescription;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};
use tokio_util::codec::{
    FramedRead, FramedWrite, LengthDelimitedCodec, LinesCodec, LinesCodecError,
};

/// Tunables of a link; the defaults suit production, tests shorten the timeouts.
#[derive(Debug, Clone)]
pub struct LinkOptions {
    /// Longest time for TCP connect, TLS and the hellos together (Halibut allows 30 s).
    pub handshake_timeout: Duration,
    /// How often each side pings the other.
    pub keep_alive_interval: Duration,
    /// Silence after which the peer is declared dead and the connection closed.
    pub keep_alive_timeout: Duration,
    /// Largest frame accepted or sent, in bytes; bounds per-connection read memory.
    pub max_frame_len: usize,
    /// Bytes per upload data frame.
    pub chunk_size: usize,
    /// Upload chunks that may be in flight per upload; with `chunk_size`, bounds the memory
    /// an upload takes on the receiving side.
    pub upload_window: u32,
    /// Requests an agent serves at once on one connection; more are answered "busy".
    pub max_in_flight: usize,
    /// Handshakes a listener runs at once; more wait in the kernel's backlog.
    pub max_concurrent_handshakes: usize,
    /// Capabilities announced in this side's hello (see [`crate::hello::capability`]).
    pub capabilities: Vec<String>,
}

impl Default for LinkOptions {
    fn default() -> LinkOptions {
        LinkOptions {
            handshake_timeout: Duration::from_secs(30),
            keep_alive_interval: Duration::from_secs(15),
            keep_alive_timeout: Duration::from_secs(60),
            max_frame_len: 4 * 1024 * 1024,
            chunk_size: 256 * 1024,
            upload_window: 8,
            max_in_flight: 256,
            max_concurrent_handshakes: 64,
            capabilities: Vec::new(),
        }
    }
}

impl LinkOptions {
    fn validate(&self) -> Result<(), LinkError> {
        let invalid = |reason: &str| Err(LinkError::InvalidOptions(reason.to_owned()));
        if self.keep_alive_interval.is_zero() || self.keep_alive_interval >= self.keep_alive_timeout
        {
            return invalid("keep_alive_interval must be above zero and below keep_alive_timeout");
        }
        if self.handshake_timeout.is_zero() {
            return invalid("handshake_timeout must be above zero");
        }
        if self.chunk_size == 0
            || self.chunk_size + crate::frame::DATA_HEADER_LEN > self.max_frame_len
        {
            return invalid(
                "chunk_size must be above zero and fit in max_frame_len with its header",
            );
        }
        if self.max_frame_len < MAX_HELLO_LEN {
            return invalid("max_frame_len must be at least 8 KiB");
        }
        if self.upload_window == 0 || self.max_in_flight == 0 || self.max_concurrent_handshakes == 0
        {
            return invalid(
                "upload_window, max_in_flight and max_concurrent_handshakes must be above zero",
            );
        }
        Ok(())
    }
}

/// What both ends share: TLS configs and options.
struct Endpoint {
    own_thumbprint: Thumbprint,
    connector: TlsConnector,
    acceptor: TlsAcceptor,
    options: Arc<LinkOptions>,
}

impl Endpoint {
    fn new(
        identity: &Identity,
        trusted: TrustedThumbprints,
        options: LinkOptions,
        peer_kind: &'static str,
    ) -> Result<Endpoint, LinkError> {
        options.validate()?;
        let client = tls::client_config(identity, trusted.clone(), peer_kind)
            .map_err(LinkError::TlsConfig)?;
        let server =
            tls::server_config(identity, trusted, peer_kind).map_err(LinkError::TlsConfig)?;
        Ok(Endpoint {
            own_thumbprint: identity.thumbprint(),
            connector: TlsConnector::from(client),
            acceptor: TlsAcceptor::from(server),
            options: Arc::new(options),
        })
    }

    fn hello(&self, role: Role, subscription_id: Option<SubscriptionId>) -> Hello {
        Hello::new(role, subscription_id, self.options.capabilities.clone())
    }

    async fn dial(
        &self,
        address: &str,
        local: Hello,
        expected_peer: Role,
        expected_thumbprint: Option<Thumbprint>,
    ) -> Result<Established, LinkError> {
        let timeout = self.options.handshake_timeout;
        let attempt = async {
            let tcp = connect_tcp(address).await?;
            let peer_address = tcp.peer_addr().map_err(|source| LinkError::Connect {
                address: address.to_owned(),
                source,
            })?;
            disable_nagle(&tcp);
            let stream = self
                .connector
                .connect(tls::server_name(), tcp)
                .await
                .map_err(|err| self.tls_error(err))?;
            let stream = TlsStream::Client(stream);
            let thumbprint = peer_thumbprint(&stream)?;
            if let Some(expected) = expected_thumbprint
                && expected != thumbprint
            {
                return Err(LinkError::UnexpectedPeer {
                    expected,
                    actual: thumbprint,
                });
            }
            self.exchange(stream, peer_address, thumbprint, &local, expected_peer)
                .await
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .map_err(|_| LinkError::HandshakeTimeout(timeout))?
    }

    async fn listen<T: Send + 'static>(
        self: &Arc<Self>,
        address: &str,
        local: Hello,
        expected_peer: Role,
        convert: fn(Established) -> Result<T, LinkError>,
    ) -> Result<Listener<T>, LinkError> {
        let listen_error = |source| LinkError::Listen {
            address: address.to_owned(),
            source,
        };
        let listener = TcpListener::bind(address).await.map_err(listen_error)?;
        let local_addr = listener.local_addr().map_err(listen_error)?;
        let (accepted_tx, accepted_rx) = mpsc::channel(1);
        let task = tokio::spawn(accept_loop(
            listener,
            self.clone(),
            local,
            expected_peer,
            convert,
            accepted_tx,
        ));
        Ok(Listener {
            local_addr,
            accepted: accepted_rx,
            task,
        })
    }

    async fn accept_one(
        &self,
        tcp: TcpStream,
        peer_address: SocketAddr,
        local: &Hello,
        expected_peer: Role,
    ) -> Result<Established, LinkError> {
        let timeout = self.options.handshake_timeout;
        let attempt = async {
            disable_nagle(&tcp);
            let stream = self
                .acceptor
                .accept(tcp)
                .await
                .map_err(|err| self.tls_error(err))?;
            let stream = TlsStream::Server(stream);
            let thumbprint = peer_thumbprint(&stream)?;
            self.exchange(stream, peer_address, thumbprint, local, expected_peer)
                .await
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .map_err(|_| LinkError::HandshakeTimeout(timeout))?
    }

    /// Sends our hello, reads the peer's, agrees on a version and starts the connection.
    async fn exchange(
        &self,
        stream: TlsStream<TcpStream>,
        peer_address: SocketAddr,
        thumbprint: Thumbprint,
        local: &Hello,
        expected_peer: Role,
    ) -> Result<Established, LinkError> {
        let (read_half, mut write_half) = tokio::io::split(stream);
        let mut line = serde_json::to_vec(local)
            .map_err(|err| LinkError::BadHello(format!("could not encode our hello: {err}")))?;
        line.push(b'\n');
        // Both sides write before reading; a hello is far smaller than socket buffers, so
        // neither write waits on the other side's read.
        write_half
            .write_all(&line)
            .await
            .map_err(|err| self.stream_error(err))?;
        write_half
            .flush()
            .await
            .map_err(|err| self.stream_error(err))?;
        let mut lines = FramedRead::new(read_half, LinesCodec::new_with_max_length(MAX_HELLO_LEN));
        let peer_line = match lines.next().await {
            Some(Ok(peer_line)) => peer_line,
            Some(Err(LinesCodecError::MaxLineLengthExceeded)) => {
                return Err(LinkError::BadHello(format!(
                    "the hello is longer than {MAX_HELLO_LEN} bytes"
                )));
            }
            Some(Err(LinesCodecError::Io(err))) => return Err(self.stream_error(err)),
            None => {
                return Err(LinkError::BadHello(
                    "the peer closed the connection before sending its hello".to_owned(),
                ));
            }
        };
        let peer_hello: Hello =
            serde_json::from_str(&peer_line).map_err(|err| LinkError::BadHello(err.to_string()))?;
        let version = local.agree(&peer_hello, expected_peer)?;
        // The line reader may already hold the first frames after the hello; swapping the
        // decoder keeps its buffer, so they are not lost.
        let frames_in = lines.map_decoder(|_| self.codec());
        let frames_out = FramedWrite::new(write_half, self.codec());
        let peer = Peer {
            thumbprint,
            address: peer_address,
            role: peer_hello.role,
            subscription_id: peer_hello.subscription_id,
            capabilities: peer_hello.capabilities,
            version,
        };
        tracing::info!(
            peer.thumbprint = %peer.thumbprint,
            peer.address = %peer.address,
            peer.role = %peer.role,
            link.version = version,
            "agent link established"
        );
        Ok(connection::start(
            frames_in,
            frames_out,
            peer,
            local.role,
            self.options.clone(),
        ))
    }

    fn codec(&self) -> LengthDelimitedCodec {
        LengthDelimitedCodec::builder()
            .max_frame_length(self.options.max_frame_len)
            .new_codec()
    }

    /// Classifies a TLS handshake failure so the caller can tell "trust it" from "broken".
    fn tls_error(&self, err: std::io::Error) -> LinkError {
        if let Some(thumbprint) = tls::untrusted_thumbprint(&err) {
            return LinkError::UntrustedPeer { thumbprint };
        }
        self.stream_error(err)
    }

    /// With TLS 1.3 a client finishes its handshake before the server has judged its
    /// certificate, so a refusal arrives as an alert on the first read after it.
    fn stream_error(&self, err: std::io::Error) -> LinkError {
        let refused = err
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .is_some_and(|tls_error| {
                matches!(
                    tls_error,
                    rustls::Error::AlertReceived(
                        AlertDescription::BadCertificate
                            | AlertDescription::CertificateUnknown
                            | AlertDescription::UnsupportedCertificate
                            | AlertDescription::DecryptError
                            | AlertDescription::AccessDenied
                            | AlertDescription::UnknownCA
                    )
                )
            });
        if refused {
            return LinkError::RefusedByPeer {
                thumbprint: self.own_thumbprint,
            };
        }
        LinkError::Tls(err)
    }
}

fn peer_thumbprint(stream: &TlsStream<TcpStream>) -> Result<Thumbprint, LinkError> {
    // The verifiers refuse a handshake without a certificate, so one is always here.
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certificates| certificates.first())
        .map(|certificate| Thumbprint::of_certificate(certificate))
        .ok_or_else(|| LinkError::BadHello("the peer presented no certificate".to_owned()))
}

fn disable_nagle(tcp: &TcpStream) {
    // Small requests and pongs should not wait for more data; failing only costs latency.
    if let Err(err) = tcp.set_nodelay(true) {
        tracing::debug!(error = %err, "could not disable Nagle's algorithm on an agent link");
    }
}

async fn accept_loop<T: Send + 'static>(
    listener: TcpListener,
    endpoint: Arc<Endpoint>,
    local: Hello,
    expected_peer: Role,
    convert: fn(Established) -> Result<T, LinkError>,
    accepted: mpsc::Sender<Result<T, LinkError>>,
) {
    let handshakes = Arc::new(Semaphore::new(endpoint.options.max_concurrent_handshakes));
    let local = Arc::new(local);
    loop {
        // Waiting for a slot before accepting leaves excess connections in the kernel backlog
        // rather than holding sockets we cannot serve yet.
        let Ok(slot) = handshakes.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer_address) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Usually out of file descriptors; pausing lets connections close meanwhile.
                tracing::warn!(error = %err, "accepting an agent link connection failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let endpoint = endpoint.clone();
        let local = local.clone();
        let accepted = accepted.clone();
        tokio::spawn(async move {
            let result = endpoint
                .accept_one(tcp, peer_address, &local, expected_peer)
                .await
                .and_then(convert);
            drop(slot);
            if accepted.send(result).await.is_err() {
                tracing::debug!(peer.address = %peer_address, "listener dropped; connection discarded");
            }
        });
    }
}

/// Accepts connections on a port; each [`Listener::accept`] yields one handshaken connection.
pub struct Listener<T> {
    local_addr: SocketAddr,
    accepted: mpsc::Receiver<Result<T, LinkError>>,
    task: JoinHandle<()>,
}

impl<T> Listener<T> {
    /// The bound address (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The next connection. An `Err` is one refused or failed connection (untrusted
    /// certificate, version mismatch, timeout); keep accepting after it.
    pub async fn accept(&mut self) -> Result<T, LinkError> {
        self.accepted
            .recv()
            .await
            .unwrap_or(Err(LinkError::Closed(CloseReason::Local)))
    }
}

impl<T> Drop for Listener<T> {
    fn drop(&mut self) {
        // Stops accepting; connections already handed out live on.
        self.task.abort();
    }
}

impl<T> std::fmt::Debug for Listener<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

fn into_requester(established: Established) -> Result<Requester, LinkError> {
    match established {
        Established::Requester(requester) => Ok(requester),
        Established::Service(incoming) => Err(LinkError::RoleMismatch {
            ours: Role::Client,
            theirs: incoming.peer().role,
        }),
    }
}

fn into_incoming(established: Established) -> Result<IncomingRequests, LinkError> {
    match established {
        Established::Service(incoming) => Ok(incoming),
        Established::Requester(requester) => Err(LinkError::RoleMismatch {
            ours: Role::Service,
            theirs: requester.peer().role,
        }),
    }
}

/// The worker's end of the link: it always sends the requests.
#[derive(Clone)]
pub struct WorkerLink {
    endpoint: Arc<Endpoint>,
}

impl WorkerLink {
    /// Prepares TLS with the worker's identity, trusting only `trusted_agents`.
    pub fn new(
        identity: &WorkerIdentity,
        trusted_agents: TrustedThumbprints,
        options: LinkOptions,
    ) -> Result<WorkerLink, LinkError> {
        let endpoint = Endpoint::new(identity.identity(), trusted_agents, options, "agent")?;
        Ok(WorkerLink {
            endpoint: Arc::new(endpoint),
        })
    }

    /// Dials a listening agent at `address` (`host:port`) and insists on its thumbprint, so a
    /// different trusted agent answering at that address is refused.
    pub async fn dial_agent(
        &self,
        address: &str,
        agent: Thumbprint,
    ) -> Result<Requester, LinkError> {
        let local = self.endpoint.hello(Role::Client, None);
        let established = self
            .endpoint
            .dial(address, local, Role::Service, Some(agent))
            .await?;
        into_requester(established)
    }

    /// Listens for polling agents; each accepted connection is a [`Requester`] whose
    /// [`Peer::subscription_id`] says which agent it is.
    pub async fn listen(&self, address: &str) -> Result<Listener<Requester>, LinkError> {
        let local = self.endpoint.hello(Role::Client, None);
        self.endpoint
            .listen(address, local, Role::Subscriber, into_requester)
            .await
    }
}

impl std::fmt::Debug for WorkerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerLink")
            .field("thumbprint", &self.endpoint.own_thumbprint)
            .finish_non_exhaustive()
    }
}

/// A TCP connection to `address`, or why not.
async fn connect_tcp(address: &str) -> Result<TcpStream, LinkError> {
    TcpStream::connect(address)
        .await
        .map_err(|source| LinkError::Connect {
            address: address.to_owned(),
            source,
        })
}

/// Octopus's "discover": connects to a listening agent at `address` only to learn its
/// certificate's thumbprint, which an operator then pins. Nothing but a TLS handshake that this
/// side abandons reaches the agent; no certificate of ours is shown.
pub async fn discover_thumbprint(
    address: &str,
    timeout: Duration,
) -> Result<Thumbprint, LinkError> {
    let seen = Arc::new(std::sync::Mutex::new(None));
    let config = tls::discovery_config(seen.clone())
        .map_err(|err| LinkError::Tls(std::io::Error::other(err)))?;
    let attempt = async {
        let tcp = connect_tcp(address).await?;
        // The handshake fails by design once the certificate is seen; any other failure
        // (nothing listening with TLS there) leaves `seen` empty.
        let outcome = TlsConnector::from(config)
            .connect(tls::server_name(), tcp)
            .await;
        let thumbprint = seen.lock().ok().and_then(|mut seen| seen.take());
        match (thumbprint, outcome) {
            (Some(thumbprint), _) => Ok(thumbprint),
            (None, Err(err)) => Err(LinkError::Tls(err)),
            (None, Ok(_)) => Err(LinkError::Tls(std::io::Error::other(
                "the peer completed a handshake without presenting a certificate",
            ))),
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| LinkError::HandshakeTimeout(timeout))?
}

/// The agent's end of the link: it always answers requests.
#[derive(Clone)]
pub struct AgentLink {
    endpoint: Arc<Endpoint>,
}

impl AgentLink {
    /// Prepares TLS with the agent's identity, trusting only `trusted_workers`.
    pub fn new(
        identity: &AgentIdentity,
        trusted_workers: TrustedThumbprints,
        options: LinkOptions,
    ) -> Result<AgentLink, LinkError> {
        let endpoint = Endpoint::new(identity.identity(), trusted_workers, options, "worker")?;
        Ok(AgentLink {
            endpoint: Arc::new(endpoint),
        })
    }

    /// Listening mode: accepts workers that dial in and serves their requests.
    pub async fn listen(&self, address: &str) -> Result<Listener<IncomingRequests>, LinkError> {
        let local = self.endpoint.hello(Role::Service, None);
        self.endpoint
            .listen(address, local, Role::Client, into_incoming)
            .await
    }

    /// Polling mode: dials the worker at `address` and serves its requests on that connection.
    /// Reconnecting after it closes is the caller's loop (with backoff).
    pub async fn dial_worker(
        &self,
        address: &str,
        subscription_id: SubscriptionId,
    ) -> Result<IncomingRequests, LinkError> {
        let local = self.endpoint.hello(Role::Subscriber, Some(subscription_id));
        let established = self
            .endpoint
            .dial(address, local, Role::Client, None)
            .await?;
        into_incoming(established)
    }
}

impl std::fmt::Debug for AgentLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentLink")
            .field("thumbprint", &self.endpoint.own_thumbprint)
            .finish_non_exhaustive()
    }
}
