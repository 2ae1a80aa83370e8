//! Spans reach an OTLP/HTTP collector when `otlp_endpoint` is set.
//!
//! This lives in its own test binary because `init` installs process-wide state once.

// clippy's allow-unwrap-in-tests covers #[test] functions only, not the helpers beside them.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use cuttle_telemetry::{LogFormat, TelemetryConfig, init};

/// What the fake collector saw of one request.
struct Received {
    request_line: String,
    content_type: String,
    body: Vec<u8>,
}

/// Accepts one HTTP request on `listener`, answers 200 and reports what it received.
fn serve_one_request(listener: TcpListener, report: mpsc::Sender<Received>) {
    let (stream, _) = listener.accept().unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    reader.read_line(&mut request_line).unwrap();
    let (mut content_type, mut content_length) = (String::new(), 0);
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap();
        match name.to_ascii_lowercase().as_str() {
            "content-type" => content_type = value.trim().to_owned(),
            "content-length" => content_length = value.trim().parse().unwrap(),
            _ => {}
        }
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body).unwrap();
    let mut stream = stream;
    stream
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .unwrap();
    report
        .send(Received {
            request_line: request_line.trim_end().to_owned(),
            content_type,
            body,
        })
        .unwrap();
}

// A current-thread runtime is the hardest case: the guard is dropped on the only runtime thread.
#[tokio::test]
async fn spans_are_exported_over_otlp_http_protobuf_when_the_guard_drops() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let (report, received) = mpsc::channel();
    thread::spawn(move || serve_one_request(listener, report));

    let config = TelemetryConfig {
        log_format: LogFormat::Json,
        log_level: "info".to_owned(),
        otlp_endpoint: Some(format!("http://{address}")),
    };
    let guard = init("cuttle-export-test", &config).unwrap();
    // error level, so that a restrictive RUST_LOG in the developer's shell cannot filter it out.
    tracing::error_span!("otlp-export-test").in_scope(|| tracing::info!("inside the span"));
    drop(guard);

    // A bound on waiting, not a timing assertion: without it a broken exporter hangs the suite.
    let received = received.recv_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(received.request_line, "POST /v1/traces HTTP/1.1");
    assert_eq!(received.content_type, "application/x-protobuf");
    let body = String::from_utf8_lossy(&received.body);
    assert!(body.contains("otlp-export-test"), "span name missing");
    assert!(body.contains("cuttle-export-test"), "service.name missing");
}
