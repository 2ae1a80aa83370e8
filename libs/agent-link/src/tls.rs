//! Mutual TLS where trust is a pinned certificate thumbprint, not a certificate authority.
//!
//! Both verifiers accept a peer only when the SHA-1 thumbprint of its end-entity certificate is
//! in a shared [`TrustedThumbprints`] set, and still check the handshake signature against that
//! certificate's public key, so presenting a copied certificate without its key fails. Names,
//! dates and chains are ignored: as in Octopus, the pin is the whole of trust (spec D.17).

use crate::identity::{Identity, Thumbprint};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    ServerConfig, SignatureScheme,
};
use std::collections::HashSet;
use std::sync::{Arc, PoisonError, RwLock};

/// The name a dialling side puts in its TLS state; never sent (SNI is off) and never checked.
pub const SERVER_NAME: &str = "cuttle-agent-link";

/// The ring crypto provider. Both ring and aws-lc-rs are compiled into this workspace, so the
/// process-default provider is ambiguous; every config names its provider explicitly.
pub fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The set of peer thumbprints this side trusts, shared and updatable while connections run.
///
/// Changes apply to handshakes that start afterwards; a connection already established is not
/// closed when its peer's thumbprint is removed.
#[derive(Clone, Default)]
pub struct TrustedThumbprints(Arc<RwLock<HashSet<Thumbprint>>>);

impl TrustedThumbprints {
    /// An empty set: every peer is refused until one is trusted.
    pub fn new() -> TrustedThumbprints {
        TrustedThumbprints::default()
    }

    /// Trusts a peer; returns false when it was already trusted.
    pub fn insert(&self, thumbprint: Thumbprint) -> bool {
        self.write().insert(thumbprint)
    }

    /// Stops trusting a peer for new connections; returns false when it was not trusted.
    pub fn remove(&self, thumbprint: &Thumbprint) -> bool {
        self.write().remove(thumbprint)
    }

    /// Replaces the whole set, e.g. after reloading the targets from the server.
    pub fn replace(&self, thumbprints: impl IntoIterator<Item = Thumbprint>) {
        *self.write() = thumbprints.into_iter().collect();
    }

    /// Whether a peer is trusted.
    pub fn contains(&self, thumbprint: &Thumbprint) -> bool {
        self.read().contains(thumbprint)
    }

    /// The trusted thumbprints, in no particular order.
    pub fn to_vec(&self) -> Vec<Thumbprint> {
        self.read().iter().copied().collect()
    }

    // A panic while holding the lock cannot leave a HashSet half-updated in a way that matters
    // here (insert and remove are all-or-nothing), so a poisoned lock is still usable.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashSet<Thumbprint>> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashSet<Thumbprint>> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl FromIterator<Thumbprint> for TrustedThumbprints {
    fn from_iter<I: IntoIterator<Item = Thumbprint>>(iter: I) -> TrustedThumbprints {
        TrustedThumbprints(Arc::new(RwLock::new(iter.into_iter().collect())))
    }
}

impl std::fmt::Debug for TrustedThumbprints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.read().iter()).finish()
    }
}

/// The reason a handshake was refused because the peer's certificate is not pinned.
///
/// It travels inside the rustls error so the refusing side can report the offered thumbprint
/// as [`crate::LinkError::UntrustedPeer`].
#[derive(Debug, thiserror::Error)]
#[error("certificate {thumbprint} is not trusted")]
pub struct UntrustedCertificate {
    /// The thumbprint the peer offered.
    pub thumbprint: Thumbprint,
}

/// Checks a presented certificate against the pinned set, the one decision both verifiers share.
#[derive(Debug)]
struct Pins {
    trusted: TrustedThumbprints,
    algorithms: WebPkiSupportedAlgorithms,
    /// "agent" or "worker": the kind of peer being verified, for the log line.
    peer_kind: &'static str,
    /// Discovery: every certificate is recorded here and refused without a warning, ending the
    /// handshake as soon as the peer has shown it.
    seen: Option<Arc<std::sync::Mutex<Option<Thumbprint>>>>,
}

impl Pins {
    fn check(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let thumbprint = Thumbprint::of_certificate(end_entity);
        if let Some(seen) = &self.seen {
            if let Ok(mut seen) = seen.lock() {
                *seen = Some(thumbprint);
            }
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(UntrustedCertificate { thumbprint })),
            )));
        }
        if self.trusted.contains(&thumbprint) {
            return Ok(());
        }
        // This line is how an operator learns which thumbprint to trust, so it names it plainly.
        tracing::warn!(
            peer.thumbprint = %thumbprint,
            peer.kind = self.peer_kind,
            "refused a TLS peer whose certificate thumbprint is not trusted"
        );
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            OtherError(Arc::new(UntrustedCertificate { thumbprint })),
        )))
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Verifies the listening side's certificate on the dialling side.
#[derive(Debug)]
struct PinnedServerVerifier(Pins);

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0.check(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.schemes()
    }
}

/// Verifies the dialling side's certificate on the listening side; a certificate is mandatory.
#[derive(Debug)]
struct PinnedClientVerifier(Pins);

impl ClientCertVerifier for PinnedClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No CA names to hint: the client has exactly one certificate to offer.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0.check(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.schemes()
    }
}

/// A client config that presents no certificate and records the server's thumbprint into
/// `seen` (see [`crate::link::discover_thumbprint`]).
pub(crate) fn discovery_config(
    seen: Arc<std::sync::Mutex<Option<Thumbprint>>>,
) -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = Arc::new(provider());
    let verifier = PinnedServerVerifier(Pins {
        trusted: TrustedThumbprints::new(),
        algorithms: provider.signature_verification_algorithms,
        peer_kind: "agent",
        seen: Some(seen),
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.enable_sni = false;
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// Both ends are Cuttle, so only TLS 1.3: the client certificate travels encrypted (agent
/// identities are not visible on the wire) and rustls is built without TLS 1.2 to keep the
/// agent small.
const VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// A client (dialling side) config that presents `identity` and trusts only pinned servers.
///
/// `peer_kind` names what is being dialled ("agent" or "worker") in refusal logs.
pub fn client_config(
    identity: &Identity,
    trusted: TrustedThumbprints,
    peer_kind: &'static str,
) -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = Arc::new(provider());
    let verifier = PinnedServerVerifier(Pins {
        trusted,
        algorithms: provider.signature_verification_algorithms,
        peer_kind,
        seen: None,
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(
            vec![identity.certificate_der().clone()],
            identity.private_key(),
        )?;
    // Trust is the pin, not a name, so there is nothing to tell the server.
    config.enable_sni = false;
    // A resumed session skips certificate verification, so a thumbprint removed from the
    // trusted set would keep working through resumption; every connection verifies afresh.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// A server (listening side) config that presents `identity` and requires a pinned client.
///
/// `peer_kind` names who is expected to dial in ("agent" or "worker") in refusal logs.
pub fn server_config(
    identity: &Identity,
    trusted: TrustedThumbprints,
    peer_kind: &'static str,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let provider = Arc::new(provider());
    let verifier = PinnedClientVerifier(Pins {
        trusted,
        algorithms: provider.signature_verification_algorithms,
        peer_kind,
        seen: None,
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(
            vec![identity.certificate_der().clone()],
            identity.private_key(),
        )?;
    // See `client_config`: no resumption, so every connection is checked against the pins.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The rustls name a dialler connects with; fixed because certificates are not matched by name.
pub(crate) fn server_name() -> ServerName<'static> {
    ServerName::DnsName(
        rustls::pki_types::DnsName::try_from(SERVER_NAME)
            .map(|name| name.to_owned())
            .unwrap_or_else(|_| unreachable!("SERVER_NAME is a valid DNS name")),
    )
}

/// Finds the thumbprint a verifier refused inside an I/O error from tokio-rustls, if any.
pub(crate) fn untrusted_thumbprint(err: &std::io::Error) -> Option<Thumbprint> {
    let rustls_error = err.get_ref()?.downcast_ref::<rustls::Error>()?;
    match rustls_error {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => inner
            .downcast_ref::<UntrustedCertificate>()
            .map(|untrusted| untrusted.thumbprint),
        _ => None,
    }
}
