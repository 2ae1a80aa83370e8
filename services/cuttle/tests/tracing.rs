//! Distributed tracing as an operator sees it: every service of distributed mode runs as its own
//! process and exports spans over OTLP/HTTP to a collector, and one deployment must read as one
//! trace, from the api request that created it, through the orchestrator, to the worker running
//! each step and back.
//!
//! The collector is a tiny fake served by the test: it accepts `POST /v1/traces` in protobuf and
//! keeps the spans. Processes are stopped with SIGTERM so that their exporters flush.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot unwrap has failed; the panic says where"
)]

mod common;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use common::{Distributed, logs};
use cuttle_testkit::{Client, flow};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use prost::Message as _;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SPACE: &str = "Spaces-1";
/// Upper bound for the deployment; only reached when something is broken.
const WAIT: Duration = Duration::from_secs(60);
/// How long each process may take to exit after SIGTERM (and flush its spans): a bound that only
/// a hang reaches, generous because the whole suite shares 2 cores.
const EXIT_LIMIT: Duration = Duration::from_secs(60);

/// One span as the collector received it.
#[derive(Debug, Clone)]
struct ExportedSpan {
    /// The `service.name` resource attribute of the process that exported it.
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    /// Empty for a root span.
    parent_span_id: String,
    /// String attributes (`task.id`, `uri`...).
    attributes: BTreeMap<String, String>,
}

/// Spans received so far.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<ExportedSpan>>>,
}

impl Collector {
    /// Serves `POST /v1/traces` on a free loopback port; returns the base URL to configure.
    async fn start() -> (String, Collector) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let collector = Collector::default();
        let app = Router::new()
            .route("/v1/traces", post(receive_traces))
            .with_state(collector.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{address}"), collector)
    }

    fn spans(&self) -> Vec<ExportedSpan> {
        self.spans
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn string_attributes(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .filter_map(|attribute| match &attribute.value.as_ref()?.value {
            Some(any_value::Value::StringValue(value)) => {
                Some((attribute.key.clone(), value.clone()))
            }
            _ => None,
        })
        .collect()
}

/// Accepts one OTLP/HTTP protobuf export, as a collector does.
async fn receive_traces(State(collector): State<Collector>, body: Bytes) -> Response {
    let request = match ExportTraceServiceRequest::decode(body) {
        Ok(request) => request,
        Err(err) => return (StatusCode::BAD_REQUEST, err.to_string()).into_response(),
    };
    let mut received = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = resource_spans
            .resource
            .map(|resource| string_attributes(&resource.attributes))
            .unwrap_or_default();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for span in resource_spans
            .scope_spans
            .into_iter()
            .flat_map(|scope| scope.spans)
        {
            received.push(ExportedSpan {
                service: service.clone(),
                name: span.name,
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent_span_id: hex(&span.parent_span_id),
                attributes: string_attributes(&span.attributes),
            });
        }
    }
    collector
        .spans
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .extend(received);
    (
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

/// Replaces the project's process with two bash steps run on the server. Two steps, because the
/// second job is dispatched while the orchestrator handles the first job's end: only then does
/// the trace have to cross worker -> orchestrator -> worker.
async fn set_two_echo_steps(client: &Client, project_id: &str) {
    flow::set_steps(
        client,
        SPACE,
        project_id,
        vec![
            flow::script_step("First echo", "Bash", "echo first step; sleep 1.5"),
            flow::script_step("Second echo", "Bash", "echo second step"),
        ],
    )
    .await;
}

fn describe(spans: &[&ExportedSpan]) -> String {
    spans
        .iter()
        .map(|span| {
            format!(
                "{} {} trace={} span={} parent={} {:?}",
                span.service,
                span.name,
                span.trace_id,
                span.span_id,
                span.parent_span_id,
                span.attributes
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_deployment_is_one_trace_across_api_orchestrator_and_worker() {
    let (endpoint, collector) = Collector::start().await;
    let mut cuttle =
        Distributed::start_with(&[("CUTTLE_TELEMETRY__OTLP_ENDPOINT", &endpoint)]).await;
    let client = cuttle.client.clone();
    let project_id =
        flow::project_with_script(&client, SPACE, "Traced", "Traced", "echo placeholder").await;
    set_two_echo_steps(&client, &project_id).await;

    let task_id = flow::release_and_deploy(&client, SPACE, "Traced", "Traced").await;
    let task = client.wait_for_task(&task_id, WAIT).await;
    assert_eq!(
        task["State"],
        "Success",
        "task: {task}\n{}",
        logs(&cuttle.env)
    );

    // Exporters send what they buffered when their process shuts down gracefully.
    for (name, status) in cuttle.terminate(EXIT_LIMIT).await {
        assert!(
            status.is_some_and(|status| status.success()),
            "{name} did not stop cleanly after SIGTERM ({status:?}); its spans may be lost\n{}",
            logs(&cuttle.env)
        );
    }
    let spans = collector.spans();

    // Every span about this deployment's task (the worker's jobs, the orchestrator's handling of
    // each of their events) is in one trace.
    let task_spans: Vec<&ExportedSpan> = spans
        .iter()
        .filter(|span| span.attributes.get("task.id") == Some(&task_id))
        .collect();
    let worker_jobs = task_spans
        .iter()
        .filter(|span| span.service == "cuttle-worker" && span.name == "worker.job")
        .count();
    assert_eq!(
        worker_jobs,
        2,
        "one worker.job span per step\n{}",
        describe(&task_spans)
    );
    let trace_ids: BTreeSet<&str> = task_spans
        .iter()
        .map(|span| span.trace_id.as_str())
        .collect();
    assert_eq!(
        trace_ids.len(),
        1,
        "the task's spans are spread over several traces:\n{}",
        describe(&task_spans)
    );
    let trace_id = trace_ids.into_iter().next().unwrap();

    let trace: Vec<&ExportedSpan> = spans
        .iter()
        .filter(|span| span.trace_id == trace_id)
        .collect();
    let services: BTreeSet<&str> = trace.iter().map(|span| span.service.as_str()).collect();
    assert_eq!(
        services,
        BTreeSet::from(["cuttle-api", "cuttle-orchestrator", "cuttle-worker"]),
        "{}",
        describe(&trace)
    );
    for (service, name) in [
        ("cuttle-orchestrator", "orchestrator.command"),
        ("cuttle-orchestrator", "orchestrator.event"),
        ("cuttle-worker", "worker.job"),
    ] {
        assert!(
            trace
                .iter()
                .any(|span| span.service == service && span.name == name),
            "no {name} span of {service} in the trace:\n{}",
            describe(&trace)
        );
    }

    // The trace starts at the api request that created the deployment, and every other span
    // hangs off a span of the same trace: no hop started over.
    let roots: Vec<&&ExportedSpan> = trace
        .iter()
        .filter(|span| span.parent_span_id.is_empty())
        .collect();
    assert_eq!(roots.len(), 1, "one root span:\n{}", describe(&trace));
    assert_eq!(roots[0].service, "cuttle-api");
    assert!(
        roots[0]
            .attributes
            .get("uri")
            .is_some_and(|uri| uri.contains("/deployments/create/")),
        "the root is the request that created the deployment: {:?}",
        roots[0]
    );
    let span_ids: BTreeSet<&str> = trace.iter().map(|span| span.span_id.as_str()).collect();
    for span in &trace {
        assert!(
            span.parent_span_id.is_empty() || span_ids.contains(span.parent_span_id.as_str()),
            "the parent of {} ({}) was not exported in this trace:\n{}",
            span.name,
            span.service,
            describe(&trace)
        );
    }

    cuttle.stop().await;
}
