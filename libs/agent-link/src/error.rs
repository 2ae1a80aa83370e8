//! Errors of the link and of identity files.

use crate::hello::Role;
use crate::identity::Thumbprint;
use crate::messages::{RemoteError, Sha256Digest};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Why a connection ended; every pending request fails with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// This side closed it: every handle on it was dropped.
    Local,
    /// The peer closed it.
    PeerClosed,
    /// Nothing arrived from the peer within the keep-alive timeout: it is dead or unreachable.
    KeepAliveTimeout,
    /// The peer broke the protocol.
    Protocol(String),
    /// Reading or writing the socket failed.
    Io(String),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Local => f.write_str("closed by this side"),
            CloseReason::PeerClosed => f.write_str("closed by the peer"),
            CloseReason::KeepAliveTimeout => {
                f.write_str("the peer stopped answering keep-alive pings")
            }
            CloseReason::Protocol(reason) => write!(f, "protocol violation: {reason}"),
            CloseReason::Io(reason) => write!(f, "socket error: {reason}"),
        }
    }
}

/// Everything that can go wrong on the link.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The TCP connection could not be made.
    #[error("could not connect to {address}")]
    Connect {
        /// Where.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Binding or accepting on a listening socket failed.
    #[error("could not listen on {address}")]
    Listen {
        /// Where.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The peer presented a certificate whose thumbprint is not trusted here.
    #[error(
        "the peer's certificate {thumbprint} is not trusted; trust that thumbprint to allow it"
    )]
    UntrustedPeer {
        /// The thumbprint it offered.
        thumbprint: Thumbprint,
    },
    /// The peer refused this side's certificate.
    #[error("the peer refused this side's certificate {thumbprint}; the peer must trust it")]
    RefusedByPeer {
        /// This side's thumbprint, which the peer must add to its trusted set.
        thumbprint: Thumbprint,
    },
    /// A trusted peer answered, but not the one that was dialled.
    #[error("expected the peer with thumbprint {expected}, but {actual} answered")]
    UnexpectedPeer {
        /// The thumbprint asked for.
        expected: Thumbprint,
        /// The thumbprint that answered.
        actual: Thumbprint,
    },
    /// TLS failed for another reason.
    #[error("TLS handshake failed")]
    Tls(#[source] std::io::Error),
    /// The TLS handshake and hellos did not finish in time.
    #[error("the handshake did not finish within {0:?}")]
    HandshakeTimeout(Duration),
    /// No protocol version in common.
    #[error(
        "no common protocol version: this side supports {ours:?}, the peer supports {theirs:?}"
    )]
    VersionMismatch {
        /// Ours.
        ours: Vec<u32>,
        /// The peer's.
        theirs: Vec<u32>,
    },
    /// The peer is not speaking this protocol.
    #[error("the peer speaks '{0}', not cuttle-agent-link")]
    WrongProtocol(String),
    /// The peer plays a role that cannot pair with ours on this connection.
    #[error("a {ours} cannot talk to a {theirs} on this connection")]
    RoleMismatch {
        /// Our role.
        ours: Role,
        /// The peer's role.
        theirs: Role,
    },
    /// The peer's hello could not be read or makes no sense.
    #[error("invalid hello from the peer: {0}")]
    BadHello(String),
    /// The connection is closed.
    #[error("the connection is closed: {0}")]
    Closed(CloseReason),
    /// A message is bigger than a frame may be.
    #[error("a message of {size} bytes exceeds the {limit}-byte frame limit")]
    MessageTooLarge {
        /// Its encoded size.
        size: usize,
        /// The frame limit.
        limit: usize,
    },
    /// The agent answered with an error.
    #[error("the agent reported an error")]
    Remote(#[source] RemoteError),
    /// The peer answered with something that does not answer the request.
    #[error("unexpected reply to {request}: {reply}")]
    UnexpectedReply {
        /// The request kind.
        request: &'static str,
        /// What came back.
        reply: String,
    },
    /// Reading the package to upload failed, or it was not the declared size.
    #[error("could not read the package to upload: {0}")]
    UploadSource(String),
    /// The uploaded bytes did not hash to the declared SHA-256.
    #[error("the package's SHA-256 is {actual}, but {expected} was declared")]
    Sha256Mismatch {
        /// Declared.
        expected: Sha256Digest,
        /// Received.
        actual: Sha256Digest,
    },
    /// The upload was abandoned by the sender, or sent more than it declared.
    #[error("the upload was aborted: {0}")]
    UploadAborted(String),
    /// The options make no sense.
    #[error("invalid link options: {0}")]
    InvalidOptions(String),
    /// Building the TLS configuration failed.
    #[error("could not configure TLS")]
    TlsConfig(#[source] rustls::Error),
}

/// Problems with the identity files.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A file or directory could not be read or written.
    #[error("could not access {path}")]
    Io {
        /// Which.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Key or certificate generation failed.
    #[error("could not generate a key or certificate")]
    Generate(#[source] rcgen::Error),
    /// The PEM text is not a certificate or PKCS#8 key.
    #[error("invalid PEM: {0}")]
    InvalidPem(String),
    /// The key does not belong to the certificate.
    #[error("the private key does not match the certificate: {0}")]
    KeyMismatch(String),
    /// An identity file on disk is unusable.
    #[error("the link identity at {path} is unusable: {reason}")]
    File {
        /// Which file or directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The certificate exists but its key does not.
    #[error(
        "{path} is missing but its certificate exists; restore the key, or delete the certificate to create a new identity that every peer must then trust again"
    )]
    MissingKey {
        /// The missing key file.
        path: PathBuf,
    },
}
