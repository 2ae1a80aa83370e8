//! Process-wide Prometheus metrics, shared by all services hosted in the process.

use std::sync::LazyLock;

use prometheus::core::Collector;
use prometheus::{
    Encoder as _, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// Buckets of the dispatch latency, 1 ms to 10 s: a healthy queue hands tasks over in
/// milliseconds, and anything beyond seconds means workers are saturated.
const DISPATCH_LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets of step durations, 100 ms to 1 h: deployment steps run scripts and transfer packages.
const STEP_DURATION_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// The metrics registered once per process, in one registry.
pub struct Metrics {
    /// `cuttle_tasks_queued`: tasks waiting for a worker.
    pub tasks_queued: IntGauge,
    /// `cuttle_tasks_executing`: tasks a worker is running.
    pub tasks_executing: IntGauge,
    /// `cuttle_tasks_finished_total{state}`: tasks that reached a final state.
    pub tasks_finished: IntCounterVec,
    /// `cuttle_task_dispatch_latency_seconds`: time from queued to executing.
    pub dispatch_latency: Histogram,
    /// `cuttle_step_duration_seconds`: time a deployment step took.
    pub step_duration: Histogram,
    /// `cuttle_queue_depth{queue}`: messages waiting in a bus queue.
    pub queue_depth: IntGaugeVec,
    /// `cuttle_http_request_duration_seconds{method,route,status}`: HTTP request durations.
    pub http_requests: HistogramVec,
    /// `cuttle_bus_messages_total{queue,outcome}`: messages handled, by outcome.
    pub bus_messages: IntCounterVec,
    /// The registry the metrics above are registered in, gathered by [`render_metrics`].
    registry: Registry,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::register);

/// The process-wide metrics, registered on first use.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// Renders every metric in the Prometheus text exposition format.
pub fn render_metrics() -> String {
    let families = metrics().registry.gather();
    let mut buffer = Vec::new();
    if let Err(error) = TextEncoder::new().encode(&families, &mut buffer) {
        // Encoding into memory fails only on a malformed family; a scrape with what was written
        // so far is more useful than none, and the error is visible in the logs.
        tracing::error!(error = %error, "could not encode metrics");
    }
    String::from_utf8_lossy(&buffer).into_owned()
}

impl Metrics {
    /// Creates and registers every metric.
    fn register() -> Self {
        let registry = Registry::new();
        Self {
            tasks_queued: register(
                &registry,
                IntGauge::new("cuttle_tasks_queued", "Tasks waiting for a worker."),
            ),
            tasks_executing: register(
                &registry,
                IntGauge::new("cuttle_tasks_executing", "Tasks a worker is running."),
            ),
            tasks_finished: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "cuttle_tasks_finished_total",
                        "Tasks that reached a final state.",
                    ),
                    &["state"],
                ),
            ),
            dispatch_latency: register(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "cuttle_task_dispatch_latency_seconds",
                        "Time from a task being queued to a worker executing it.",
                    )
                    .buckets(DISPATCH_LATENCY_BUCKETS.to_vec()),
                ),
            ),
            step_duration: register(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "cuttle_step_duration_seconds",
                        "Time a deployment step took.",
                    )
                    .buckets(STEP_DURATION_BUCKETS.to_vec()),
                ),
            ),
            queue_depth: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new("cuttle_queue_depth", "Messages waiting in a bus queue."),
                    &["queue"],
                ),
            ),
            http_requests: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "cuttle_http_request_duration_seconds",
                        "Time taken to answer HTTP requests, by route template.",
                    ),
                    &["method", "route", "status"],
                ),
            ),
            bus_messages: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "cuttle_bus_messages_total",
                        "Bus messages handled, by queue and outcome.",
                    ),
                    &["queue", "outcome"],
                ),
            ),
            registry,
        }
    }
}

/// Registers a freshly built metric and returns it.
///
/// Both steps fail only on an invalid name, help text or bucket list, or a duplicate name: all
/// constants of this file, checked by the unit tests. A panic on first use is the honest outcome
/// of such a programming error, so `expect` is used deliberately.
fn register<M>(registry: &Registry, metric: prometheus::Result<M>) -> M
where
    M: Collector + Clone + 'static,
{
    let metric = metric.expect("metric definitions in cuttle-telemetry are valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names in cuttle-telemetry are unique");
    metric
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_metrics_contain_every_metric_name() {
        let metrics = metrics();
        metrics.tasks_queued.inc();
        metrics.tasks_executing.inc();
        metrics.tasks_finished.with_label_values(&["Success"]).inc();
        metrics.dispatch_latency.observe(0.002);
        metrics.step_duration.observe(3.0);
        metrics.queue_depth.with_label_values(&["tasks"]).set(4);
        metrics
            .http_requests
            .with_label_values(&["GET", "/api/projects", "200"])
            .observe(0.01);
        metrics
            .bus_messages
            .with_label_values(&["tasks", "acked"])
            .inc();

        let rendered = render_metrics();
        for name in [
            "cuttle_tasks_queued",
            "cuttle_tasks_executing",
            "cuttle_tasks_finished_total",
            "cuttle_task_dispatch_latency_seconds",
            "cuttle_step_duration_seconds",
            "cuttle_queue_depth",
            "cuttle_http_request_duration_seconds",
            "cuttle_bus_messages_total",
        ] {
            assert!(
                rendered.contains(&format!("# TYPE {name} ")),
                "{name} missing from:\n{rendered}"
            );
        }
    }

    #[test]
    fn dispatch_latency_buckets_span_a_millisecond_to_ten_seconds() {
        metrics().dispatch_latency.observe(0.5);
        let rendered = render_metrics();
        assert!(rendered.contains(r#"cuttle_task_dispatch_latency_seconds_bucket{le="0.001"}"#));
        assert!(rendered.contains(r#"cuttle_task_dispatch_latency_seconds_bucket{le="10"}"#));
    }
}
