//! One established connection: a reader task and a writer task own the TLS stream, and the
//! handles of the two roles talk to them through channels.
//!
//! RPC direction is fixed by role, not by who dialled (Halibut's key idea): the [`Role::Client`]
//! end gets a [`Requester`], the agent's end ([`Role::Service`] or [`Role::Subscriber`]) gets
//! [`IncomingRequests`].
//!
//! Rules that keep the connection responsive:
//! - The reader never waits on anyone. Everything it hands out goes into unbounded channels,
//!   so a slow consumer cannot stall pings and get the link declared dead. Upload chunks are
//!   bounded by flow-control credit and requests by `max_in_flight`; progress (script output)
//!   is not, so a requester must keep reading a [`ScriptRun`] it started.
//! - The writer drains three queues in priority order: control frames (pong, credit, automatic
//!   error answers), then messages, then upload data. A package upload therefore delays other
//!   requests by at most one chunk per message.
//! - The connection lives while any handle does. When the last [`Requester`], [`Call`],
//!   [`IncomingRequests`] or [`Responder`] is dropped, the message queue closes and the writer
//!   shuts the TLS stream down cleanly.

use crate::error::{CloseReason, LinkError};
use crate::frame::{self, DATA_HEADER_LEN, Frame, Message, RequestId};
use crate::hello::{Role, SubscriptionId};
use crate::identity::Thumbprint;
use crate::link::LinkOptions;
use crate::messages::{
    AgentCapabilities, ExtractPackage, JobId, Note, OutputLine, PackageExtracted, PackageUpload,
    Progress, RemoteError, RemoteErrorKind, Request, Response, RewriteFiles, ScriptStatus,
    ScriptTicket, Sha256Digest, StagePackage, StartScript,
};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use sha2::Digest;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, watch};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

/// Messages queued by handles before they wait for the writer; small, because each may be big.
const MESSAGE_QUEUE: usize = 64;
/// Upload chunks queued before an uploader waits; two keeps the socket busy between reads.
const DATA_QUEUE: usize = 2;
/// How long a clean shutdown may take to flush before the socket is simply dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Who is on the other end of a connection, as established by TLS and the hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The peer's certificate thumbprint, which was in the trusted set.
    pub thumbprint: Thumbprint,
    /// The peer's socket address.
    pub address: SocketAddr,
    /// The role the peer plays.
    pub role: Role,
    /// The polling agent's subscription id, when the peer is a subscriber.
    pub subscription_id: Option<SubscriptionId>,
    /// The capabilities the peer announced.
    pub capabilities: Vec<String>,
    /// The protocol version both sides agreed on.
    pub version: u32,
}

/// What the reader delivers to a pending call.
enum Reply {
    Progress(Progress),
    Credit(u32),
    Final(Response),
}

/// What the reader delivers to an upload being received.
enum DataEvent {
    Chunk(Bytes),
    Abort(String),
}

/// An upload the serving side agreed to receive.
struct InboundUpload {
    chunks: mpsc::UnboundedSender<DataEvent>,
    /// Chunks the sender may still send; a chunk beyond this breaks flow control.
    credit: u32,
}

#[derive(Default)]
struct State {
    closed: bool,
    /// Requester side: calls waiting for their final response.
    pending: HashMap<RequestId, mpsc::UnboundedSender<Reply>>,
    /// Serving side: requests received and not yet answered.
    serving: HashSet<RequestId>,
    /// Serving side: uploads being received.
    uploads: HashMap<RequestId, InboundUpload>,
}

/// State shared by the two tasks and every handle of one connection.
struct Shared {
    peer: Peer,
    local_role: Role,
    options: Arc<LinkOptions>,
    state: Mutex<State>,
    closed: watch::Sender<Option<CloseReason>>,
    cancel: CancellationToken,
    /// Frames that jump the queue; unbounded so the reader and `Drop` impls never wait.
    control: mpsc::UnboundedSender<Bytes>,
    next_request_id: AtomicU64,
    next_ping_nonce: AtomicU64,
}

impl Shared {
    // Every critical section below is a few map operations that cannot panic halfway, so a
    // poisoned lock still guards consistent state.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn close_reason(&self) -> CloseReason {
        self.closed.borrow().clone().unwrap_or(CloseReason::Local)
    }

    fn closed_error(&self) -> LinkError {
        LinkError::Closed(self.close_reason())
    }

    /// Ends the connection once; the first reason wins. Pending calls and uploads then see
    /// their channels close and report this reason.
    fn close(&self, reason: CloseReason) {
        let (pending, uploads) = {
            let mut state = self.state();
            if state.closed {
                return;
            }
            state.closed = true;
            (
                std::mem::take(&mut state.pending),
                std::mem::take(&mut state.uploads),
            )
        };
        // The reason is published before the channels close, so whoever wakes reads it.
        self.closed.send_replace(Some(reason.clone()));
        self.cancel.cancel();
        drop((pending, uploads));
        let thumbprint = self.peer.thumbprint;
        let address = self.peer.address;
        match &reason {
            CloseReason::Local => {
                tracing::debug!(peer.thumbprint = %thumbprint, peer.address = %address, "agent link closed by this side");
            }
            CloseReason::PeerClosed => {
                tracing::info!(peer.thumbprint = %thumbprint, peer.address = %address, "agent link closed by the peer");
            }
            _ => {
                tracing::warn!(peer.thumbprint = %thumbprint, peer.address = %address, reason = %reason, "agent link lost");
            }
        }
    }

    /// Queues a control frame. It fails only once the writer is gone, when the connection is
    /// closed and there is nobody left to tell.
    fn send_control(&self, message: &Message) {
        if self.control.send(frame::encode_message(message)).is_err() {
            tracing::debug!("control frame not sent: the connection is closed");
        }
    }

    fn check_size(&self, payload: &Bytes) -> Result<(), LinkError> {
        if payload.len() > self.options.max_frame_len {
            return Err(LinkError::MessageTooLarge {
                size: payload.len(),
                limit: self.options.max_frame_len,
            });
        }
        Ok(())
    }

    fn register_call(&self, id: RequestId) -> Result<mpsc::UnboundedReceiver<Reply>, LinkError> {
        let mut state = self.state();
        if state.closed {
            return Err(LinkError::Closed(
                self.closed.borrow().clone().unwrap_or(CloseReason::Local),
            ));
        }
        let (sender, receiver) = mpsc::unbounded_channel();
        state.pending.insert(id, sender);
        Ok(receiver)
    }

    /// Serving side: a request is answered (or abandoned); it no longer counts as in flight.
    fn finish_serving(&self, id: RequestId) {
        let mut state = self.state();
        state.serving.remove(&id);
        state.uploads.remove(&id);
    }
}

/// The running connection, before it is handed to its role's handle.
pub(crate) enum Established {
    /// This side is the client.
    Requester(Requester),
    /// This side is an agent.
    Service(IncomingRequests),
}

type FramesIn<S> = FramedRead<ReadHalf<S>, LengthDelimitedCodec>;
type FramesOut<S> = FramedWrite<WriteHalf<S>, LengthDelimitedCodec>;

/// Starts the reader and writer tasks on a stream whose hellos have been exchanged.
pub(crate) fn start<S>(
    frames_in: FramesIn<S>,
    frames_out: FramesOut<S>,
    peer: Peer,
    local_role: Role,
    options: Arc<LinkOptions>,
) -> Established
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let (messages_tx, messages_rx) = mpsc::channel(MESSAGE_QUEUE);
    let (data_tx, data_rx) = mpsc::channel(DATA_QUEUE);
    let (closed, _) = watch::channel(None);
    let shared = Arc::new(Shared {
        peer: peer.clone(),
        local_role,
        options,
        state: Mutex::new(State::default()),
        closed,
        cancel: CancellationToken::new(),
        control: control_tx,
        next_request_id: AtomicU64::new(1),
        next_ping_nonce: AtomicU64::new(1),
    });
    tokio::spawn(write_loop(
        frames_out,
        shared.clone(),
        control_rx,
        messages_rx,
        data_rx,
    ));
    match local_role {
        Role::Client => {
            tokio::spawn(read_loop(
                frames_in,
                shared.clone(),
                None,
                messages_tx.downgrade(),
            ));
            Established::Requester(Requester {
                shared,
                messages: messages_tx,
                data: data_tx,
            })
        }
        Role::Service | Role::Subscriber => {
            let (incoming_tx, incoming_rx) = mpsc::unbounded_channel();
            tokio::spawn(read_loop(
                frames_in,
                shared.clone(),
                Some(incoming_tx),
                messages_tx.downgrade(),
            ));
            Established::Service(IncomingRequests {
                shared,
                requests: incoming_rx,
                _keep_open: messages_tx,
            })
        }
    }
}

async fn write_loop<S: AsyncWrite>(
    mut frames_out: FramesOut<S>,
    shared: Arc<Shared>,
    mut control: mpsc::UnboundedReceiver<Bytes>,
    mut messages: mpsc::Receiver<Bytes>,
    mut data: mpsc::Receiver<Bytes>,
) {
    let mut ping = tokio::time::interval(shared.options.keep_alive_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; the hello has just proven the peer alive.
    ping.tick().await;
    let reason = loop {
        let payload = tokio::select! {
            biased;
            () = shared.cancel.cancelled() => return,
            Some(payload) = control.recv() => payload,
            payload = messages.recv() => match payload {
                Some(payload) => payload,
                None => break CloseReason::Local,
            },
            Some(payload) = data.recv() => payload,
            _ = ping.tick() => {
                let nonce = shared.next_ping_nonce.fetch_add(1, Ordering::Relaxed);
                frame::encode_message(&Message::Ping { nonce })
            }
        };
        tokio::select! {
            () = shared.cancel.cancelled() => return,
            sent = frames_out.send(payload) => {
                if let Err(err) = sent {
                    break CloseReason::Io(err.to_string());
                }
            }
        }
    };
    if reason == CloseReason::Local {
        // Every handle is gone: say goodbye with a TLS close_notify so the peer sees a clean
        // end rather than a reset. A peer that does not read cannot hold this side open.
        match tokio::time::timeout(SHUTDOWN_GRACE, SinkExt::<Bytes>::close(&mut frames_out)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::debug!(error = %err, "agent link shutdown was not clean"),
            Err(_) => tracing::debug!("agent link shutdown timed out"),
        }
    }
    shared.close(reason);
}

async fn read_loop<S: AsyncRead>(
    mut frames_in: FramesIn<S>,
    shared: Arc<Shared>,
    incoming: Option<mpsc::UnboundedSender<IncomingRequest>>,
    messages: mpsc::WeakSender<Bytes>,
) {
    let timeout = shared.options.keep_alive_timeout;
    let reason = loop {
        let next = tokio::select! {
            () = shared.cancel.cancelled() => return,
            next = tokio::time::timeout(timeout, frames_in.next()) => next,
        };
        let payload = match next {
            // The peer pings every interval and answers our pings, so silence this long means
            // the peer or the path to it is gone, even though TCP has not noticed.
            Err(_elapsed) => break CloseReason::KeepAliveTimeout,
            Ok(None) => break CloseReason::PeerClosed,
            Ok(Some(Err(err))) => break CloseReason::Io(err.to_string()),
            Ok(Some(Ok(payload))) => payload.freeze(),
        };
        let handled = match frame::decode(payload) {
            Ok(Frame::Message(message)) => {
                handle_message(&shared, message, incoming.as_ref(), &messages)
            }
            Ok(Frame::Data { id, bytes }) => handle_data(&shared, id, bytes),
            Err(reason) => Err(reason),
        };
        if let Err(violation) = handled {
            break CloseReason::Protocol(violation);
        }
    };
    shared.close(reason);
}

/// Routes one message; an `Err` is a protocol violation that ends the connection.
fn handle_message(
    shared: &Arc<Shared>,
    message: Message,
    incoming: Option<&mpsc::UnboundedSender<IncomingRequest>>,
    messages: &mpsc::WeakSender<Bytes>,
) -> Result<(), String> {
    let serving = shared.local_role != Role::Client;
    match message {
        Message::Ping { nonce } => shared.send_control(&Message::Pong { nonce }),
        Message::Pong { .. } => {}
        Message::Request { id, request } if serving => {
            accept_request(shared, id, request, incoming, messages)?;
        }
        Message::AbortUpload { id, reason } if serving => {
            if let Some(upload) = shared.state().uploads.remove(&id) {
                // The receiver may already be gone; then nobody is waiting for the bytes.
                let _unheard = upload.chunks.send(DataEvent::Abort(reason));
            }
        }
        Message::Progress { id, progress } if !serving => {
            deliver(shared, id, Reply::Progress(progress))
        }
        Message::Credit { id, chunks } if !serving => deliver(shared, id, Reply::Credit(chunks)),
        Message::Response { id, response } if !serving => {
            let pending = shared.state().pending.remove(&id);
            match pending {
                // A send error means the caller stopped waiting; the answer is not needed.
                Some(call) => {
                    let _unheard = call.send(Reply::Final(response));
                }
                None => tracing::debug!(request.id = id, "response for a call nobody awaits"),
            }
        }
        other => {
            return Err(format!(
                "a {} may not receive {}",
                shared.local_role,
                message_kind(&other)
            ));
        }
    }
    Ok(())
}

fn message_kind(message: &Message) -> &'static str {
    match message {
        Message::Request { .. } => "requests",
        Message::Progress { .. } => "progress",
        Message::Response { .. } => "responses",
        Message::Credit { .. } => "upload credit",
        Message::AbortUpload { .. } => "upload aborts",
        Message::Ping { .. } => "pings",
        Message::Pong { .. } => "pongs",
    }
}

fn deliver(shared: &Shared, id: RequestId, reply: Reply) {
    let pending = shared.state().pending.get(&id).cloned();
    match pending {
        // The caller may have dropped its handle; its replies are then of no interest.
        Some(call) => {
            let _unheard = call.send(reply);
        }
        None => tracing::debug!(request.id = id, "reply for a call nobody awaits"),
    }
}

fn accept_request(
    shared: &Arc<Shared>,
    id: RequestId,
    request: Request,
    incoming: Option<&mpsc::UnboundedSender<IncomingRequest>>,
    messages: &mpsc::WeakSender<Bytes>,
) -> Result<(), String> {
    let refuse = |kind: RemoteErrorKind, text: &str| {
        let response = Response::Error(RemoteError::new(kind, text));
        shared.send_control(&Message::Response { id, response });
    };
    if request == Request::Unsupported {
        refuse(
            RemoteErrorKind::Unsupported,
            "this agent does not know that request; upgrade it",
        );
        return Ok(());
    }
    {
        let mut state = shared.state();
        if state.serving.contains(&id) {
            return Err(format!("request id {id} is already in flight"));
        }
        if state.serving.len() >= shared.options.max_in_flight {
            drop(state);
            refuse(
                RemoteErrorKind::Busy,
                "too many requests are in flight on this connection; retry later",
            );
            return Ok(());
        }
        state.serving.insert(id);
    }
    // Upgrading fails only when every handle is gone and the connection is closing.
    let (Some(incoming), Some(messages)) = (incoming, messages.upgrade()) else {
        shared.finish_serving(id);
        return Ok(());
    };
    let kind = request.kind();
    let responder = Responder {
        id,
        shared: shared.clone(),
        messages,
        answered: false,
    };
    if incoming
        .send(IncomingRequest { request, responder })
        .is_err()
    {
        // Nobody takes requests any more; dropping the request here answers it with an error.
        tracing::debug!(
            request.id = id,
            request.kind = kind,
            "request refused: the agent stopped accepting"
        );
    }
    Ok(())
}

fn handle_data(shared: &Shared, id: RequestId, bytes: Bytes) -> Result<(), String> {
    if shared.local_role == Role::Client {
        return Err("a client may not receive upload data".to_owned());
    }
    let mut state = shared.state();
    let Some(upload) = state.uploads.get_mut(&id) else {
        // The receiver gave up (and answered with an error); chunks already in flight are
        // expected and harmless.
        tracing::debug!(request.id = id, "upload data for an upload nobody receives");
        return Ok(());
    };
    if upload.credit == 0 {
        // Fail this upload only: the rest of the connection is unaffected.
        if let Some(upload) = state.uploads.remove(&id) {
            let _unheard = upload.chunks.send(DataEvent::Abort(
                "the sender exceeded its flow-control window".to_owned(),
            ));
        }
        return Ok(());
    }
    upload.credit -= 1;
    // A send error means the receiver was dropped a moment ago; its Drop cleans up.
    let _unheard = upload.chunks.send(DataEvent::Chunk(bytes));
    Ok(())
}

/// The requesting (worker's) handle on a connection; cheap to clone and share between tasks.
#[derive(Clone)]
pub struct Requester {
    shared: Arc<Shared>,
    messages: mpsc::Sender<Bytes>,
    data: mpsc::Sender<Bytes>,
}

impl std::fmt::Debug for Requester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requester")
            .field("peer", &self.shared.peer)
            .finish_non_exhaustive()
    }
}

/// An event of a call started with [`Requester::start`].
#[derive(Debug, Clone, PartialEq)]
pub enum CallEvent {
    /// An intermediate message; more follow.
    Progress(Progress),
    /// The final answer; nothing follows.
    Final(Response),
}

/// A request in flight; dropping it stops listening for the answer.
pub struct Call {
    id: RequestId,
    replies: mpsc::UnboundedReceiver<Reply>,
    shared: Arc<Shared>,
    /// Keeps the connection open while the answer is awaited, even with no `Requester` left.
    _keep_open: mpsc::Sender<Bytes>,
}

impl Call {
    /// The request's id on this connection.
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// The next progress message or the final response.
    pub async fn next(&mut self) -> Result<CallEvent, LinkError> {
        loop {
            match self.next_reply().await? {
                Reply::Progress(progress) => return Ok(CallEvent::Progress(progress)),
                Reply::Final(response) => return Ok(CallEvent::Final(response)),
                // Credit only matters to `upload_package`, which reads replies itself.
                Reply::Credit(_) => {}
            }
        }
    }

    async fn next_reply(&mut self) -> Result<Reply, LinkError> {
        self.replies
            .recv()
            .await
            .ok_or_else(|| self.shared.closed_error())
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.shared.state().pending.remove(&self.id);
    }
}

/// The result of [`Requester::upload_package`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadOutcome {
    /// True when the agent already had the package, so no bytes were sent.
    pub already_cached: bool,
}

/// A script started by [`Requester::start_script`].
pub struct ScriptRun {
    ticket: ScriptTicket,
    call: Option<Call>,
}

/// What a running script reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptEvent {
    /// Output lines, in order.
    Output(Vec<OutputLine>),
    /// The script exited; nothing follows.
    Finished {
        /// Its exit code.
        exit_code: i32,
    },
}

impl ScriptRun {
    /// The agent's ticket for this script.
    pub fn ticket(&self) -> &ScriptTicket {
        &self.ticket
    }

    /// The next event, or `None` after [`ScriptEvent::Finished`] or an error.
    ///
    /// If the connection drops, the script keeps running on the agent: reconnect and use
    /// [`Requester::get_status`] with the last sequence number seen.
    pub async fn next(&mut self) -> Option<Result<ScriptEvent, LinkError>> {
        let call = self.call.as_mut()?;
        let event = match call.next().await {
            Ok(CallEvent::Progress(Progress::Output { lines })) => Ok(ScriptEvent::Output(lines)),
            Ok(CallEvent::Final(Response::ScriptFinished { exit_code, .. })) => {
                Ok(ScriptEvent::Finished { exit_code })
            }
            Ok(CallEvent::Final(Response::Error(error))) => Err(LinkError::Remote(error)),
            Ok(other) => Err(unexpected("start_script", &other)),
            Err(err) => Err(err),
        };
        if !matches!(event, Ok(ScriptEvent::Output(_))) {
            self.call = None;
        }
        Some(event)
    }
}

fn unexpected(request: &'static str, reply: &impl std::fmt::Debug) -> LinkError {
    LinkError::UnexpectedReply {
        request,
        reply: format!("{reply:?}"),
    }
}

impl Requester {
    /// Who is on the other end.
    pub fn peer(&self) -> &Peer {
        &self.shared.peer
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.borrow().is_some()
    }

    /// Waits until the connection ends and says why.
    pub async fn closed(&self) -> CloseReason {
        let mut closed = self.shared.closed.subscribe();
        match closed.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or(CloseReason::Local),
            // The sender lives in `shared`, which this handle keeps alive.
            Err(_) => CloseReason::Local,
        }
    }

    /// Sends a request and returns its call, to read progress and the final response.
    pub async fn start(&self, request: Request) -> Result<Call, LinkError> {
        let id = self.shared.next_request_id.fetch_add(1, Ordering::Relaxed);
        let payload = frame::encode_message(&Message::Request { id, request });
        self.shared.check_size(&payload)?;
        // Registered before sending, so an instant answer finds its caller.
        let replies = self.shared.register_call(id)?;
        let call = Call {
            id,
            replies,
            shared: self.shared.clone(),
            _keep_open: self.messages.clone(),
        };
        self.messages
            .send(payload)
            .await
            .map_err(|_| self.shared.closed_error())?;
        Ok(call)
    }

    /// Sends a request and waits for its final response, ignoring progress; an error response
    /// becomes [`LinkError::Remote`].
    pub async fn call(&self, request: Request) -> Result<Response, LinkError> {
        let mut call = self.start(request).await?;
        loop {
            match call.next().await? {
                CallEvent::Progress(progress) => {
                    tracing::debug!(
                        request.id = call.id,
                        ?progress,
                        "ignored progress on a unary call"
                    );
                }
                CallEvent::Final(Response::Error(error)) => return Err(LinkError::Remote(error)),
                CallEvent::Final(response) => return Ok(response),
            }
        }
    }

    /// Asks what the agent is and can run.
    pub async fn capabilities(&self) -> Result<AgentCapabilities, LinkError> {
        match self.call(Request::Capabilities).await? {
            Response::Capabilities(capabilities) => Ok(capabilities),
            other => Err(unexpected("capabilities", &other)),
        }
    }

    /// Starts a script and returns once the agent has given it a ticket.
    pub async fn start_script(&self, script: StartScript) -> Result<ScriptRun, LinkError> {
        let mut call = self.start(Request::StartScript(script)).await?;
        match call.next().await? {
            CallEvent::Progress(Progress::ScriptStarted { ticket }) => Ok(ScriptRun {
                ticket,
                call: Some(call),
            }),
            CallEvent::Final(Response::Error(error)) => Err(LinkError::Remote(error)),
            other => Err(unexpected("start_script", &other)),
        }
    }

    /// Reads a script's state and its output after `after_sequence`.
    pub async fn get_status(
        &self,
        ticket: ScriptTicket,
        after_sequence: u64,
    ) -> Result<ScriptStatus, LinkError> {
        let request = Request::GetStatus {
            ticket,
            after_sequence,
        };
        match self.call(request).await? {
            Response::Status(status) => Ok(status),
            other => Err(unexpected("get_status", &other)),
        }
    }

    /// Asks the agent to stop a script; returns whether it was still running.
    pub async fn cancel_script(&self, ticket: ScriptTicket) -> Result<bool, LinkError> {
        match self.call(Request::Cancel { ticket }).await? {
            Response::CancelRequested { was_running, .. } => Ok(was_running),
            other => Err(unexpected("cancel", &other)),
        }
    }

    /// Installs a package the agent holds into a fresh folder.
    pub async fn extract_package(
        &self,
        extract: ExtractPackage,
    ) -> Result<PackageExtracted, LinkError> {
        match self.call(Request::ExtractPackage(extract)).await? {
            Response::PackageExtracted(extracted) => Ok(extracted),
            other => Err(unexpected("extract_package", &other)),
        }
    }

    /// Places a package the agent holds into a job's staging folder; returns the folder's path.
    pub async fn stage_package(&self, stage: StagePackage) -> Result<String, LinkError> {
        match self.call(Request::StagePackage(stage)).await? {
            Response::PackageStaged { path } => Ok(path),
            other => Err(unexpected("stage_package", &other)),
        }
    }

    /// Reads up to `length` bytes of the agent's file `path` from `offset`; returns them and the
    /// file's size.
    pub async fn read_file(
        &self,
        path: &str,
        offset: u64,
        length: u32,
    ) -> Result<(Vec<u8>, u64), LinkError> {
        let request = Request::ReadFile {
            path: path.to_owned(),
            offset,
            length,
        };
        match self.call(request).await? {
            Response::FileChunk { data, total_size } => Ok((data, total_size)),
            other => Err(unexpected("read_file", &other)),
        }
    }

    /// Lets the agent remove what it kept of a job.
    pub async fn release_job(&self, job_id: JobId) -> Result<(), LinkError> {
        match self.call(Request::ReleaseJob { job_id }).await? {
            Response::Released => Ok(()),
            other => Err(unexpected("release_job", &other)),
        }
    }

    /// Runs the file features on an installed package; returns the notes and, when the
    /// features failed, why.
    pub async fn rewrite_files(
        &self,
        rewrite: RewriteFiles,
    ) -> Result<(Vec<Note>, Option<String>), LinkError> {
        match self.call(Request::RewriteFiles(rewrite)).await? {
            Response::FilesRewritten { notes, failure } => Ok((notes, failure)),
            other => Err(unexpected("rewrite_files", &other)),
        }
    }

    /// Offers a package and, unless the agent has its hash cached, streams exactly
    /// `upload.total_size` bytes from `source` in chunks, within the agent's flow-control
    /// window. The agent checks the SHA-256 before it answers.
    pub async fn upload_package<R>(
        &self,
        upload: PackageUpload,
        mut source: R,
    ) -> Result<UploadOutcome, LinkError>
    where
        R: AsyncRead + Unpin,
    {
        let total = upload.total_size;
        let declared = upload.sha256;
        let mut call = self.start(Request::UploadPackage(upload)).await?;
        let mut credit: u64 = 0;
        let mut go_ahead = false;
        while !go_ahead {
            match call.next_reply().await? {
                Reply::Final(response) => return upload_outcome(response, declared),
                Reply::Progress(Progress::SendPackage { window }) => {
                    credit += u64::from(window);
                    go_ahead = true;
                }
                Reply::Credit(chunks) => credit += u64::from(chunks),
                Reply::Progress(other) => return Err(unexpected("upload_package", &other)),
            }
        }
        let chunk_size = self.shared.options.chunk_size as u64;
        let mut sent: u64 = 0;
        while sent < total {
            while credit == 0 {
                match call.next_reply().await? {
                    Reply::Credit(chunks) => credit += u64::from(chunks),
                    // The agent gave up early (disk full, say); its answer says why.
                    Reply::Final(response) => return upload_outcome(response, declared),
                    Reply::Progress(other) => return Err(unexpected("upload_package", &other)),
                }
            }
            let len = chunk_size.min(total - sent);
            // `len` is at most `chunk_size`, a usize.
            let len_usize = usize::try_from(len).unwrap_or(usize::MAX);
            let mut payload = frame::data_frame(call.id, len_usize);
            payload.resize(DATA_HEADER_LEN + len_usize, 0);
            if let Err(err) = source.read_exact(&mut payload[DATA_HEADER_LEN..]).await {
                let reason = format!("the source failed after {sent} of {total} bytes: {err}");
                self.abort_upload(call.id, &reason).await;
                return Err(LinkError::UploadSource(reason));
            }
            self.data
                .send(payload.freeze())
                .await
                .map_err(|_| self.shared.closed_error())?;
            sent += len;
            credit -= 1;
        }
        // A longer source means the declared size or hash is wrong for what the caller holds.
        let mut probe = [0u8; 1];
        match source.read(&mut probe).await {
            Ok(0) => {}
            Ok(_) => {
                let reason = format!("the source is longer than the declared {total} bytes");
                self.abort_upload(call.id, &reason).await;
                return Err(LinkError::UploadSource(reason));
            }
            Err(err) => {
                let reason = format!("the source failed after {total} bytes: {err}");
                self.abort_upload(call.id, &reason).await;
                return Err(LinkError::UploadSource(reason));
            }
        }
        loop {
            match call.next_reply().await? {
                Reply::Final(response) => return upload_outcome(response, declared),
                Reply::Credit(_) => {}
                Reply::Progress(other) => return Err(unexpected("upload_package", &other)),
            }
        }
    }

    async fn abort_upload(&self, id: RequestId, reason: &str) {
        let payload = frame::encode_message(&Message::AbortUpload {
            id,
            reason: reason.to_owned(),
        });
        // If the connection is gone the agent's receiver fails anyway; the caller gets the
        // source error either way.
        if self.messages.send(payload).await.is_err() {
            tracing::debug!(
                request.id = id,
                "upload abort not sent: the connection is closed"
            );
        }
    }
}

fn upload_outcome(response: Response, declared: Sha256Digest) -> Result<UploadOutcome, LinkError> {
    match response {
        Response::PackageStored {
            sha256,
            already_cached,
        } if sha256 == declared => Ok(UploadOutcome { already_cached }),
        Response::Error(error) => Err(LinkError::Remote(error)),
        other => Err(unexpected("upload_package", &other)),
    }
}

/// The serving (agent's) end of a connection: the requests the worker sends, in arrival order.
pub struct IncomingRequests {
    shared: Arc<Shared>,
    requests: mpsc::UnboundedReceiver<IncomingRequest>,
    /// Keeps the connection open while the agent still takes requests.
    _keep_open: mpsc::Sender<Bytes>,
}

impl std::fmt::Debug for IncomingRequests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingRequests")
            .field("peer", &self.shared.peer)
            .finish_non_exhaustive()
    }
}

impl IncomingRequests {
    /// The next request, or `None` once the connection has ended.
    pub async fn next(&mut self) -> Option<IncomingRequest> {
        self.requests.recv().await
    }

    /// Who is on the other end.
    pub fn peer(&self) -> &Peer {
        &self.shared.peer
    }

    /// Why the connection ended, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.shared.closed.borrow().clone()
    }
}

/// One request to answer. Answer every request: a dropped [`Responder`] answers with an error.
#[derive(Debug)]
pub struct IncomingRequest {
    /// What the worker asks.
    pub request: Request,
    /// Sends progress and the final response.
    pub responder: Responder,
}

/// Answers one request.
pub struct Responder {
    id: RequestId,
    shared: Arc<Shared>,
    messages: mpsc::Sender<Bytes>,
    answered: bool,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder").field("id", &self.id).finish()
    }
}

impl Responder {
    /// The request's id on this connection.
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// Sends an intermediate message (a script's ticket, output lines).
    pub async fn progress(&self, progress: Progress) -> Result<(), LinkError> {
        self.send(&Message::Progress {
            id: self.id,
            progress,
        })
        .await
    }

    /// Sends the final response.
    pub async fn respond(mut self, response: Response) -> Result<(), LinkError> {
        self.send(&Message::Response {
            id: self.id,
            response,
        })
        .await?;
        self.answered = true;
        self.shared.finish_serving(self.id);
        Ok(())
    }

    /// Accepts an upload: tells the worker to send, and returns the bytes as they arrive.
    ///
    /// Call it only for a [`Request::UploadPackage`], after checking the cache; when the hash
    /// is already there, [`Responder::respond`] with `already_cached: true` instead.
    pub async fn receive_upload(
        &self,
        upload: &PackageUpload,
    ) -> Result<UploadReceiver, LinkError> {
        let window = self.shared.options.upload_window;
        let (chunks_tx, chunks_rx) = mpsc::unbounded_channel();
        {
            let mut state = self.shared.state();
            if state.closed {
                return Err(self.shared.closed_error());
            }
            // Registered before the go-ahead, so the first chunk finds its receiver.
            state.uploads.insert(
                self.id,
                InboundUpload {
                    chunks: chunks_tx,
                    credit: window,
                },
            );
        }
        self.progress(Progress::SendPackage { window }).await?;
        Ok(UploadReceiver {
            id: self.id,
            shared: self.shared.clone(),
            chunks: chunks_rx,
            expected: upload.sha256,
            total: upload.total_size,
            received: 0,
            hasher: sha2::Sha256::new(),
            verified: false,
        })
    }

    async fn send(&self, message: &Message) -> Result<(), LinkError> {
        let payload = frame::encode_message(message);
        self.shared.check_size(&payload)?;
        self.messages
            .send(payload)
            .await
            .map_err(|_| self.shared.closed_error())
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        // A request must never hang on the worker because an agent task failed or forgot.
        let response = Response::Error(RemoteError::new(
            RemoteErrorKind::Failed,
            "the agent stopped handling the request without answering",
        ));
        self.shared.send_control(&Message::Response {
            id: self.id,
            response,
        });
        self.shared.finish_serving(self.id);
    }
}

/// The bytes of an upload, checked against the declared size and SHA-256 as they arrive.
pub struct UploadReceiver {
    id: RequestId,
    shared: Arc<Shared>,
    chunks: mpsc::UnboundedReceiver<DataEvent>,
    expected: Sha256Digest,
    total: u64,
    received: u64,
    hasher: sha2::Sha256,
    verified: bool,
}

impl UploadReceiver {
    /// The next chunk, or `None` when all declared bytes arrived and their SHA-256 matched.
    ///
    /// The last chunk is returned only after the hash checks out, so a caller that stops at
    /// the first error never keeps a corrupt package.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, LinkError> {
        if self.received == self.total {
            self.verify()?;
            return Ok(None);
        }
        let bytes = match self.chunks.recv().await {
            Some(DataEvent::Chunk(bytes)) => bytes,
            Some(DataEvent::Abort(reason)) => return Err(LinkError::UploadAborted(reason)),
            None => return Err(self.shared.closed_error()),
        };
        let len = bytes.len() as u64;
        if len == 0 || self.received + len > self.total {
            return Err(LinkError::UploadAborted(format!(
                "the sender sent more than the declared {} bytes",
                self.total
            )));
        }
        self.hasher.update(&bytes);
        self.received += len;
        if self.received == self.total {
            self.verify()?;
        } else {
            self.grant_one();
        }
        Ok(Some(bytes))
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    fn verify(&mut self) -> Result<(), LinkError> {
        if self.verified {
            return Ok(());
        }
        let actual = Sha256Digest::from_bytes(self.hasher.clone().finalize().into());
        if actual != self.expected {
            return Err(LinkError::Sha256Mismatch {
                expected: self.expected,
                actual,
            });
        }
        self.verified = true;
        Ok(())
    }

    /// One chunk was consumed, so one more may be in flight.
    fn grant_one(&self) {
        {
            let mut state = self.shared.state();
            match state.uploads.get_mut(&self.id) {
                Some(upload) => upload.credit += 1,
                None => return,
            }
        }
        self.shared.send_control(&Message::Credit {
            id: self.id,
            chunks: 1,
        });
    }
}

impl Drop for UploadReceiver {
    fn drop(&mut self) {
        self.shared.state().uploads.remove(&self.id);
    }
}

impl std::fmt::Debug for UploadReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadReceiver")
            .field("id", &self.id)
            .field("received", &self.received)
            .field("total", &self.total)
            .finish()
    }
}
