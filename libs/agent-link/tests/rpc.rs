//! The handshake, multiplexed requests, chunked uploads and keep-alive, over real loopback TLS.
#![allow(clippy::unwrap_used)]

mod support;

use cuttle_agent_link::frame::{self, Message};
use cuttle_agent_link::messages::{
    JobId, PackageUpload, ScriptState, ScriptSyntax, ScriptTicket, Sha256Digest, StartScript,
};
use cuttle_agent_link::{
    CloseReason, LinkError, LinkOptions, RemoteErrorKind, Request, ScriptEvent, tls,
};
use futures::{SinkExt, StreamExt};
use std::collections::BTreeMap;
use std::time::Duration;
use support::{Ends, TestAgent, listening_pair, noise, test_options, trusting, within};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// A hello as a v1 worker would send it, with chosen versions.
fn client_hello(versions: &[u32]) -> String {
    serde_json::json!({
        "protocol": "cuttle-agent-link",
        "versions": versions,
        "role": "client",
        "capabilities": [],
    })
    .to_string()
}

#[tokio::test]
async fn version_negotiation_picks_the_highest_version_both_sides_speak() {
    let ends = Ends::new();
    let mut listener = ends
        .agent_link(test_options())
        .listen("127.0.0.1:0")
        .await
        .unwrap();
    let address = listener.local_addr().to_string();

    // A newer worker that also speaks versions 2 and 5.
    let newer_worker = async {
        let stream = support::raw_tls_client(
            &address,
            ends.worker.identity(),
            trusting([ends.agent.thumbprint()]),
        )
        .await;
        support::swap_hellos(stream, &client_hello(&[1, 2, 5])).await
    };
    let ((stream, agent_hello), accepted) =
        within(async { tokio::join!(newer_worker, listener.accept()) }).await;

    let incoming = accepted.unwrap();
    assert_eq!(incoming.peer().version, 1);
    let agent_hello: serde_json::Value = serde_json::from_str(&agent_hello).unwrap();
    assert_eq!(agent_hello["versions"], serde_json::json!([1]));
    assert_eq!(agent_hello["role"], "service");
    tokio::spawn(TestAgent::default().serve(incoming));

    // Version 1 frames now flow: a capabilities request by hand gets its answer.
    let mut frames = Framed::new(stream, LengthDelimitedCodec::new());
    let request = Message::Request {
        id: 1,
        request: Request::Capabilities,
    };
    frames.send(frame::encode_message(&request)).await.unwrap();
    let answer = within(async {
        loop {
            let payload = frames.next().await.unwrap().unwrap();
            let message: Message = serde_json::from_slice(&payload[1..]).unwrap();
            if let Message::Response { id, .. } = message {
                break id;
            }
        }
    })
    .await;
    assert_eq!(answer, 1);
}

#[tokio::test]
async fn a_peer_without_a_common_version_is_refused_with_both_version_lists_named() {
    let ends = Ends::new();
    let mut listener = ends
        .agent_link(test_options())
        .listen("127.0.0.1:0")
        .await
        .unwrap();
    let address = listener.local_addr().to_string();

    let future_worker = async {
        let stream = support::raw_tls_client(
            &address,
            ends.worker.identity(),
            trusting([ends.agent.thumbprint()]),
        )
        .await;
        support::swap_hellos(stream, &client_hello(&[2, 3])).await
    };
    let (_, accepted) = within(async { tokio::join!(future_worker, listener.accept()) }).await;

    let err = accepted.unwrap_err();
    assert!(
        matches!(&err, LinkError::VersionMismatch { ours, theirs } if ours == &[1] && theirs == &[2, 3]),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("[1]") && message.contains("[2, 3]"),
        "{message}"
    );
}

#[tokio::test]
async fn many_concurrent_requests_on_one_connection_each_get_their_own_answer() {
    let ends = Ends::new();
    let pair = within(listening_pair(&ends, test_options())).await;
    let n_requests = 200u64;

    // The test agent answers later requests sooner, so answers arrive out of order.
    let calls = (0..n_requests).map(|sequence| {
        let requester = pair.requester.clone();
        async move {
            let ticket = ScriptTicket(format!("ticket-{sequence}"));
            let status = requester
                .get_status(ticket.clone(), sequence)
                .await
                .unwrap();
            (ticket, sequence, status)
        }
    });
    let answers = within(futures::future::join_all(calls)).await;

    assert_eq!(answers.len() as u64, n_requests);
    for (ticket, sequence, status) in answers {
        assert_eq!(status.ticket, ticket);
        assert_eq!(
            status.state,
            ScriptState::Finished {
                exit_code: i32::try_from(sequence).unwrap()
            }
        );
    }
}

#[tokio::test]
async fn a_script_streams_its_output_and_then_its_exit_code() {
    let ends = Ends::new();
    let pair = within(listening_pair(&ends, test_options())).await;
    let start = StartScript {
        job_id: JobId("job-1".to_owned()),
        syntax: ScriptSyntax::Bash,
        body: "first\nsecond\nthird".to_owned(),
        environment: BTreeMap::new(),
        variables: BTreeMap::new(),
        files: vec![],
        folder: None,
        args: Vec::new(),
        keep_files: false,
    };

    let mut run = within(pair.requester.start_script(start)).await.unwrap();
    let mut texts = Vec::new();
    let mut exit_code = None;
    while let Some(event) = within(run.next()).await {
        match event.unwrap() {
            ScriptEvent::Output(lines) => texts.extend(lines.into_iter().map(|line| line.text)),
            ScriptEvent::Finished { exit_code: code } => exit_code = Some(code),
        }
    }

    assert_eq!(run.ticket(), &ScriptTicket("ticket-job-1".to_owned()));
    assert_eq!(texts, ["first", "second", "third"]);
    assert_eq!(exit_code, Some(0));
}

#[tokio::test]
async fn a_twenty_megabyte_package_arrives_intact_in_chunks_and_is_not_sent_twice() {
    let ends = Ends::new();
    let pair = within(listening_pair(&ends, test_options())).await;
    let package = noise(20 * 1024 * 1024);
    let sha256 = Sha256Digest::of(&package);
    let upload = PackageUpload {
        package_id: "Acme.Web".to_owned(),
        version: "1.0.0".to_owned(),
        sha256,
        total_size: package.len() as u64,
    };

    // A small request during the upload is answered too: chunks interleave with messages.
    let (first, capabilities) = within(async {
        tokio::join!(
            pair.requester.upload_package(upload.clone(), &package[..]),
            pair.requester.capabilities()
        )
    })
    .await;
    let second = within(pair.requester.upload_package(upload, &package[..])).await;

    assert!(!first.unwrap().already_cached);
    assert!(capabilities.is_ok());
    assert!(second.unwrap().already_cached);
    let stored = pair.agent.packages.lock().unwrap().get(&sha256).cloned();
    assert!(
        stored.as_deref() == Some(&package[..]),
        "the stored bytes differ"
    );
}

#[tokio::test]
async fn a_package_whose_bytes_do_not_match_the_declared_sha256_is_rejected() {
    let ends = Ends::new();
    let pair = within(listening_pair(&ends, test_options())).await;
    let package = noise(1024 * 1024 + 17);
    let upload = PackageUpload {
        package_id: "Acme.Web".to_owned(),
        version: "1.0.1".to_owned(),
        sha256: Sha256Digest::of(b"something else"),
        total_size: package.len() as u64,
    };

    let result = within(pair.requester.upload_package(upload, &package[..])).await;

    match result {
        Err(LinkError::Remote(error)) => assert_eq!(error.kind, RemoteErrorKind::Corrupt),
        other => panic!("a corrupt upload was accepted: {other:?}"),
    }
    assert!(pair.agent.packages.lock().unwrap().is_empty());
    // The connection survives a failed upload.
    assert!(within(pair.requester.capabilities()).await.is_ok());
}

#[tokio::test]
async fn a_package_source_shorter_than_declared_aborts_the_upload_on_both_sides() {
    let ends = Ends::new();
    let pair = within(listening_pair(&ends, test_options())).await;
    let package = noise(600 * 1024);
    let upload = PackageUpload {
        package_id: "Acme.Web".to_owned(),
        version: "1.0.2".to_owned(),
        sha256: Sha256Digest::of(&package),
        total_size: package.len() as u64 + 1,
    };

    let result = within(pair.requester.upload_package(upload, &package[..])).await;

    assert!(
        matches!(result, Err(LinkError::UploadSource(_))),
        "{result:?}"
    );
    assert!(pair.agent.packages.lock().unwrap().is_empty());
    assert!(within(pair.requester.capabilities()).await.is_ok());
}

#[tokio::test]
async fn a_dead_peer_that_never_closed_its_socket_is_detected_by_the_keep_alive_timeout() {
    let ends = Ends::new();
    // A fake agent that completes TLS and the hello, then freezes with its socket open.
    let config = tls::server_config(
        ends.agent.identity(),
        trusting([ends.worker.thumbprint()]),
        "worker",
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let tcp_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = tcp_listener.local_addr().unwrap().to_string();
    let frozen = tokio::spawn(async move {
        let (tcp, _) = tcp_listener.accept().await.unwrap();
        let stream = acceptor.accept(tcp).await.unwrap();
        let hello = r#"{"protocol":"cuttle-agent-link","versions":[1],"role":"service"}"#;
        let (stream, _) = support::swap_hellos(stream, hello).await;
        // Holding the stream without reading or writing is a hung machine or a dead path.
        std::future::pending::<()>().await;
        drop(stream);
    });
    let options = LinkOptions {
        keep_alive_interval: Duration::from_millis(50),
        keep_alive_timeout: Duration::from_millis(400),
        ..test_options()
    };
    let requester = within(
        ends.worker_link(options)
            .dial_agent(&address, ends.agent.thumbprint()),
    )
    .await
    .unwrap();

    let (answer, reason) =
        within(async { tokio::join!(requester.capabilities(), requester.closed()) }).await;

    assert_eq!(reason, CloseReason::KeepAliveTimeout);
    assert!(
        matches!(
            answer,
            Err(LinkError::Closed(CloseReason::KeepAliveTimeout))
        ),
        "{answer:?}"
    );
    assert!(requester.is_closed());
    frozen.abort();
}

#[tokio::test]
async fn a_live_idle_connection_outlasts_many_keep_alive_timeouts() {
    let ends = Ends::new();
    // Both ends ping and answer pings, so quiet time alone never closes the link.
    let options = LinkOptions {
        keep_alive_interval: Duration::from_millis(100),
        keep_alive_timeout: Duration::from_secs(1),
        ..test_options()
    };
    let pair = within(listening_pair(&ends, options)).await;

    tokio::time::sleep(Duration::from_secs(3)).await;

    assert!(!pair.requester.is_closed());
    assert!(within(pair.requester.capabilities()).await.is_ok());
}

#[tokio::test]
async fn a_request_kind_the_agent_does_not_know_is_answered_as_unsupported() {
    let ends = Ends::new();
    let pair = within(listening_pair(&ends, test_options())).await;

    let result = within(pair.requester.call(Request::Unsupported)).await;

    match result {
        Err(LinkError::Remote(error)) => assert_eq!(error.kind, RemoteErrorKind::Unsupported),
        other => panic!("expected an unsupported error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_request_the_agent_drops_unanswered_fails_instead_of_hanging() {
    let ends = Ends::new();
    let (requester, mut incoming) = within(async {
        let mut listener = ends
            .agent_link(test_options())
            .listen("127.0.0.1:0")
            .await
            .unwrap();
        let address = listener.local_addr().to_string();
        let worker = ends.worker_link(test_options());
        let (requester, incoming) = tokio::join!(
            worker.dial_agent(&address, ends.agent.thumbprint()),
            listener.accept()
        );
        (requester.unwrap(), incoming.unwrap())
    })
    .await;
    let dropper = tokio::spawn(async move {
        let request = incoming.next().await.unwrap();
        drop(request);
        incoming
    });

    let result = within(requester.capabilities()).await;

    assert!(
        matches!(&result, Err(LinkError::Remote(error)) if error.kind == RemoteErrorKind::Failed),
        "{result:?}"
    );
    drop(dropper);
}

#[tokio::test]
async fn dropping_every_worker_handle_closes_the_connection_cleanly_for_the_agent() {
    let ends = Ends::new();
    let (requester, mut incoming) = within(async {
        let mut listener = ends
            .agent_link(test_options())
            .listen("127.0.0.1:0")
            .await
            .unwrap();
        let address = listener.local_addr().to_string();
        let worker = ends.worker_link(test_options());
        let (requester, incoming) = tokio::join!(
            worker.dial_agent(&address, ends.agent.thumbprint()),
            listener.accept()
        );
        (requester.unwrap(), incoming.unwrap())
    })
    .await;

    drop(requester);
    let next = within(incoming.next()).await;

    assert!(next.is_none());
    assert_eq!(incoming.close_reason(), Some(CloseReason::PeerClosed));
}
