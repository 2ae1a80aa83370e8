//! Pinned mutual TLS in both dial directions, and the peers it must refuse.
#![allow(clippy::unwrap_used)]

mod support;

use cuttle_agent_link::{
    AgentIdentity, AgentLink, LinkError, Role, SubscriptionId, WorkerIdentity, WorkerLink, tls,
};
use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::sync::Arc;
use support::{Ends, TestAgent, polling_pair, test_options, trusting, within};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test]
async fn a_worker_dialling_a_listening_agent_is_served_over_pinned_mutual_tls() {
    let ends = Ends::new();
    let pair = within(support::listening_pair(&ends, test_options())).await;

    let capabilities = within(pair.requester.capabilities()).await.unwrap();

    assert_eq!(capabilities, support::capabilities());
    let peer = pair.requester.peer();
    assert_eq!(peer.thumbprint, ends.agent.thumbprint());
    assert_eq!(peer.role, Role::Service);
    assert_eq!(peer.version, 1);
}

#[tokio::test]
async fn a_polling_agent_dials_the_worker_and_the_worker_still_sends_the_requests() {
    let ends = Ends::new();
    let (requester, _serve) = within(polling_pair(&ends, "poll://agent-7/")).await;

    let capabilities = within(requester.capabilities()).await.unwrap();

    assert_eq!(capabilities, support::capabilities());
    let peer = requester.peer();
    assert_eq!(peer.thumbprint, ends.agent.thumbprint());
    assert_eq!(peer.role, Role::Subscriber);
    assert_eq!(
        peer.subscription_id,
        Some(SubscriptionId::parse("poll://agent-7/").unwrap())
    );
}

#[tokio::test]
async fn an_unpinned_worker_certificate_is_refused_by_a_listening_agent() {
    let ends = Ends::new();
    let stranger = WorkerIdentity::generate().unwrap();
    let mut listener = ends
        .agent_link(test_options())
        .listen("127.0.0.1:0")
        .await
        .unwrap();
    let address = listener.local_addr().to_string();
    let stranger_link = WorkerLink::new(
        &stranger,
        trusting([ends.agent.thumbprint()]),
        test_options(),
    )
    .unwrap();

    let (dialled, accepted) = within(async {
        tokio::join!(
            stranger_link.dial_agent(&address, ends.agent.thumbprint()),
            listener.accept()
        )
    })
    .await;

    match accepted {
        Err(LinkError::UntrustedPeer { thumbprint }) => {
            assert_eq!(thumbprint, stranger.thumbprint());
        }
        other => panic!("the agent accepted or failed oddly: {other:?}"),
    }
    match dialled {
        Err(LinkError::RefusedByPeer { thumbprint }) => {
            assert_eq!(thumbprint, stranger.thumbprint());
        }
        other => panic!("the stranger was not refused: {other:?}"),
    }
}

#[tokio::test]
async fn an_unpinned_agent_certificate_is_refused_by_the_dialling_worker() {
    let ends = Ends::new();
    let impostor = AgentIdentity::generate().unwrap();
    // The impostor trusts the worker, so only the worker's pin can stop this connection.
    let impostor_link = AgentLink::new(
        &impostor,
        trusting([ends.worker.thumbprint()]),
        test_options(),
    )
    .unwrap();
    let mut listener = impostor_link.listen("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().to_string();

    let worker = ends.worker_link(test_options());

    let (dialled, accepted) = within(async {
        tokio::join!(
            worker.dial_agent(&address, ends.agent.thumbprint()),
            listener.accept()
        )
    })
    .await;

    match dialled {
        Err(LinkError::UntrustedPeer { thumbprint }) => {
            assert_eq!(thumbprint, impostor.thumbprint());
        }
        other => panic!("the worker accepted the impostor: {other:?}"),
    }
    assert!(accepted.is_err());
}

#[tokio::test]
async fn an_unpinned_polling_agent_is_refused_by_the_worker_it_dials() {
    let ends = Ends::new();
    let stranger = AgentIdentity::generate().unwrap();
    let mut listener = ends
        .worker_link(test_options())
        .listen("127.0.0.1:0")
        .await
        .unwrap();
    let address = listener.local_addr().to_string();
    let stranger_link = AgentLink::new(
        &stranger,
        trusting([ends.worker.thumbprint()]),
        test_options(),
    )
    .unwrap();
    let subscription = SubscriptionId::parse("poll://stranger/").unwrap();

    let (dialled, accepted) = within(async {
        tokio::join!(
            stranger_link.dial_worker(&address, subscription),
            listener.accept()
        )
    })
    .await;

    assert!(
        matches!(accepted, Err(LinkError::UntrustedPeer { thumbprint }) if thumbprint == stranger.thumbprint())
    );
    assert!(dialled.is_err());
}

#[tokio::test]
async fn a_trusted_agent_answering_at_another_agents_address_is_refused() {
    let ends = Ends::new();
    let other = AgentIdentity::generate().unwrap();
    let other_link =
        AgentLink::new(&other, trusting([ends.worker.thumbprint()]), test_options()).unwrap();
    let mut listener = other_link.listen("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().to_string();
    tokio::spawn(async move {
        while let Ok(incoming) = listener.accept().await {
            tokio::spawn(TestAgent::default().serve(incoming));
        }
    });
    let worker = WorkerLink::new(
        &ends.worker,
        trusting([ends.agent.thumbprint(), other.thumbprint()]),
        test_options(),
    )
    .unwrap();

    let dialled = within(worker.dial_agent(&address, ends.agent.thumbprint())).await;

    match dialled {
        Err(LinkError::UnexpectedPeer { expected, actual }) => {
            assert_eq!(expected, ends.agent.thumbprint());
            assert_eq!(actual, other.thumbprint());
        }
        other => panic!("the wrong agent was accepted: {other:?}"),
    }
}

#[tokio::test]
async fn a_forged_worker_certificate_with_the_same_subject_but_another_key_is_refused() {
    let ends = Ends::new();
    // Same subject ("Cuttle Worker"), same file layout, different key: a different thumbprint.
    let forger_dir = tempfile::tempdir().unwrap();
    let forger = WorkerIdentity::load_or_create(forger_dir.path()).unwrap();
    assert_ne!(forger.thumbprint(), ends.worker.thumbprint());
    let mut listener = ends
        .agent_link(test_options())
        .listen("127.0.0.1:0")
        .await
        .unwrap();
    let address = listener.local_addr().to_string();
    let forger_link =
        WorkerLink::new(&forger, trusting([ends.agent.thumbprint()]), test_options()).unwrap();

    let (dialled, accepted) = within(async {
        tokio::join!(
            forger_link.dial_agent(&address, ends.agent.thumbprint()),
            listener.accept()
        )
    })
    .await;

    assert!(
        matches!(accepted, Err(LinkError::UntrustedPeer { thumbprint }) if thumbprint == forger.thumbprint())
    );
    assert!(dialled.is_err());
}

#[tokio::test]
async fn a_copied_worker_certificate_presented_without_its_key_is_refused() {
    let ends = Ends::new();
    // The forger holds the genuine, pinned certificate but signs with its own key.
    let forger_dir = tempfile::tempdir().unwrap();
    WorkerIdentity::load_or_create(forger_dir.path()).unwrap();
    let forged = forged_key(
        ends.worker.identity().certificate_der().clone(),
        &forger_dir.path().join("worker-key.pem"),
    );
    let mut listener = ends
        .agent_link(test_options())
        .listen("127.0.0.1:0")
        .await
        .unwrap();
    let address = listener.local_addr().to_string();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(tls::provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer))
        .with_client_cert_resolver(Arc::new(Forged(forged)));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));

    let forger_side = async {
        let tcp = TcpStream::connect(&address).await.unwrap();
        let name = ServerName::try_from(tls::SERVER_NAME).unwrap();
        match connector.connect(name, tcp).await {
            // TLS 1.3 lets the client finish first; the refusal then arrives on the first read.
            Ok(stream) => {
                let (_, hello) = support::swap_hellos_fallible(stream, "{}").await;
                hello
            }
            Err(err) => Err(err),
        }
    };
    let (forger_result, accepted) =
        within(async { tokio::join!(forger_side, listener.accept()) }).await;

    let err = accepted.expect_err("a certificate without its key was accepted");
    assert!(
        matches!(err, LinkError::Tls(_)),
        "expected a signature failure, got {err:?}"
    );
    assert!(forger_result.is_err());
}

#[tokio::test]
async fn a_copied_agent_certificate_presented_without_its_key_is_refused() {
    let ends = Ends::new();
    let forger_dir = tempfile::tempdir().unwrap();
    AgentIdentity::load_or_create(forger_dir.path()).unwrap();
    let forged = forged_key(
        ends.agent.identity().certificate_der().clone(),
        &forger_dir.path().join("agent-key.pem"),
    );
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(tls::provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Forged(forged)));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let tcp_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = tcp_listener.local_addr().unwrap().to_string();
    // The forger behaves like a real agent from then on, so the signature is the only tell.
    let forger = tokio::spawn(async move {
        let (tcp, _) = tcp_listener.accept().await.unwrap();
        if let Ok(stream) = acceptor.accept(tcp).await {
            let hello = r#"{"protocol":"cuttle-agent-link","versions":[1],"role":"service"}"#;
            let (_stream, _) = support::swap_hellos_fallible(stream, hello).await;
            std::future::pending::<()>().await;
        }
    });

    let dialled = within(
        ends.worker_link(test_options())
            .dial_agent(&address, ends.agent.thumbprint()),
    )
    .await;

    let err = dialled.expect_err("a certificate without its key was accepted");
    assert!(
        matches!(err, LinkError::Tls(_)),
        "expected a signature failure, got {err:?}"
    );
    forger.abort();
}

#[tokio::test]
async fn trusting_a_thumbprint_later_lets_a_refused_worker_in_on_its_next_attempt() {
    let ends = Ends::new();
    let trusted = trusting([]);
    let agent = AgentLink::new(&ends.agent, trusted.clone(), test_options()).unwrap();
    let mut listener = agent.listen("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().to_string();
    let worker = ends.worker_link(test_options());

    let (first, refused) = within(async {
        tokio::join!(
            worker.dial_agent(&address, ends.agent.thumbprint()),
            listener.accept()
        )
    })
    .await;
    assert!(first.is_err() && refused.is_err());

    trusted.insert(ends.worker.thumbprint());
    let (second, accepted) = within(async {
        tokio::join!(
            worker.dial_agent(&address, ends.agent.thumbprint()),
            listener.accept()
        )
    })
    .await;
    let requester = second.unwrap();
    tokio::spawn(TestAgent::default().serve(accepted.unwrap()));
    assert!(within(requester.capabilities()).await.is_ok());
}

/// The genuine certificate paired with a key that does not belong to it. `CertifiedKey::new`
/// skips the consistency check that rustls's config builders would make.
fn forged_key(
    certificate: CertificateDer<'static>,
    key_path: &std::path::Path,
) -> Arc<CertifiedKey> {
    let key = PrivateKeyDer::from_pem_file(key_path).unwrap();
    let signing_key = tls::provider().key_provider.load_private_key(key).unwrap();
    Arc::new(CertifiedKey::new(vec![certificate], signing_key))
}

#[derive(Debug)]
struct Forged(Arc<CertifiedKey>);

impl ResolvesServerCert for Forged {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl ResolvesClientCert for Forged {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The forger does not care whom it talks to.
#[derive(Debug)]
struct AcceptAnyServer;

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        tls::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
