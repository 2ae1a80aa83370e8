//! The link between Cuttle workers and Cuttle agents (deployment targets): identity, trust,
//! transport and the v1 messages, in the manner of Octopus's Tentacle and Halibut (spec D.17).
//!
//! Layers, bottom up:
//! 1. [`identity`]: each end has a self-signed certificate kept as PEM files; its SHA-1
//!    [`Thumbprint`] is what the other end pins.
//! 2. [`tls`]: mutual TLS 1.3 (ring) where a peer is accepted only if its thumbprint is in a
//!    shared, updatable [`TrustedThumbprints`] set. No names, no CAs.
//! 3. [`hello`]: each side sends one JSON line naming protocol, versions, role, subscription id
//!    and capabilities; both pick the highest common version.
//! 4. [`frame`]: length-delimited frames carrying JSON [`frame::Message`]s and raw upload
//!    chunks, multiplexed by request id, with ping/pong keep-alive.
//! 5. [`messages`]: what a worker asks an agent (capabilities, scripts, packages).
//!
//! RPC direction is independent of who dials: the worker always gets a [`Requester`] and the
//! agent always gets [`IncomingRequests`], whether the agent listens ([`WorkerLink::dial_agent`]
//! / [`AgentLink::listen`]) or polls ([`AgentLink::dial_worker`] / [`WorkerLink::listen`]).
//!
//! Invariant: this crate links no database, bus, cloud SDK or server crate; `cuttle-agent`
//! depends on it and must stay small.

pub mod connection;
pub mod error;
pub mod frame;
pub mod hello;
pub mod identity;
pub mod link;
pub mod messages;
pub mod tls;

pub use connection::{
    Call, CallEvent, IncomingRequest, IncomingRequests, Peer, Requester, Responder, ScriptEvent,
    ScriptRun, UploadOutcome, UploadReceiver,
};
pub use error::{CloseReason, IdentityError, LinkError};
pub use hello::{Role, SubscriptionId};
pub use identity::{AgentIdentity, Identity, Thumbprint, WorkerIdentity};
pub use link::{AgentLink, LinkOptions, Listener, WorkerLink, discover_thumbprint};
pub use messages::{Progress, RemoteError, RemoteErrorKind, Request, Response};
pub use tls::TrustedThumbprints;
