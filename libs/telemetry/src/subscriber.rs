//! Installation of the process-wide `tracing` subscriber and OpenTelemetry tracer provider.

use std::io::IsTerminal;
use std::sync::{Mutex, PoisonError};

use anyhow::{Context, bail};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{KeyValue, global};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, TelemetryConfig};

/// OTLP/HTTP path of the traces signal, appended to the configured base endpoint.
const TRACES_PATH: &str = "/v1/traces";

/// Whether [`init`] already installed the subscriber; a mutex (not a flag) so that two threads
/// calling `init` at once cannot both build a pipeline.
static INSTALLED: Mutex<bool> = Mutex::new(false);

/// Keeps the tracer provider alive; dropping it flushes buffered spans and stops the exporter.
#[must_use = "dropping the guard shuts the tracer provider down at once"]
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// A guard owning nothing, returned when telemetry was already installed.
    fn noop() -> Self {
        Self { provider: None }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            // Spans still buffered are lost; shutdown goes on because the process is ending.
            tracing::warn!(error = %error, "could not flush traces while shutting down telemetry");
        }
    }
}

/// Installs the global subscriber once per process; later calls return a no-op guard.
///
/// The configuration is validated on every call, so a bad `log_level` or `otlp_endpoint` fails
/// the same way whether or not another service of the process initialised telemetry first.
pub fn init(service_name: &str, config: &TelemetryConfig) -> anyhow::Result<TelemetryGuard> {
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = env_filter(rust_log.as_deref(), &config.log_level)?;
    let traces_endpoint = config
        .otlp_endpoint
        .as_deref()
        .map(traces_endpoint)
        .transpose()?;

    // A poisoned lock only means another `init` panicked; the flag itself is still meaningful.
    let mut installed = INSTALLED.lock().unwrap_or_else(PoisonError::into_inner);
    if *installed {
        return Ok(TelemetryGuard::noop());
    }
    if tracing::dispatcher::has_been_set() {
        // Someone else (typically a test harness) owns the global subscriber: keep theirs.
        tracing::warn!(
            service.name = service_name,
            "a tracing subscriber is already installed; Cuttle telemetry was not installed"
        );
        *installed = true;
        return Ok(TelemetryGuard::noop());
    }

    let provider = tracer_provider(service_name, traces_endpoint.as_deref())?;
    // Spans are recorded even without an exporter so that trace ids still flow through message
    // headers to services that do export.
    let otel_layer =
        tracing_opentelemetry::layer().with_tracer(provider.tracer(env!("CARGO_PKG_NAME")));
    let json = match config.log_format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    // Logs go to standard error so that standard output stays free for command output.
    let fmt_layer = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        // The single-line format rather than `.pretty()`: one event per line keeps grep useful.
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed()
    };
    let init_result = tracing_subscriber::registry()
        .with(filter)
        .with(otel_layer)
        .with(fmt_layer)
        .try_init();

    global::set_text_map_propagator(TraceContextPropagator::new());
    global::set_tracer_provider(provider.clone());
    *installed = true;
    if let Err(error) = init_result {
        // The pre-check above rules out a foreign subscriber, so this is the `log` bridge failing
        // because another `log` logger exists; `tracing` events are still recorded.
        tracing::warn!(error = %error, "records of the `log` crate will not reach Cuttle logs");
    }
    tracing::debug!(
        service.name = service_name,
        otlp.endpoint = traces_endpoint.as_deref(),
        "telemetry installed"
    );
    Ok(TelemetryGuard {
        provider: Some(provider),
    })
}

/// Builds the log filter from `RUST_LOG` when set (it wins), else from the configured level.
fn env_filter(rust_log: Option<&str>, log_level: &str) -> anyhow::Result<EnvFilter> {
    match rust_log.filter(|value| !value.trim().is_empty()) {
        Some(directives) => EnvFilter::try_new(directives)
            .with_context(|| format!("RUST_LOG is not a valid log filter: {directives:?}")),
        None => EnvFilter::try_new(log_level).with_context(|| {
            format!("telemetry.log_level is not a valid log filter: {log_level:?}")
        }),
    }
}

/// Turns the configured collector base URL into the URL of its traces endpoint.
///
/// The OTLP exporter uses a programmatic endpoint verbatim, so the signal path is added here,
/// matching what `OTEL_EXPORTER_OTLP_ENDPOINT` does for the environment variable.
fn traces_endpoint(base: &str) -> anyhow::Result<String> {
    let base = base.trim();
    if base.starts_with("https://") {
        // The exporter is built without TLS (see the root Cargo.toml); refusing here beats
        // failing on every export later.
        bail!(
            "telemetry.otlp_endpoint {base:?}: https is not supported yet, \
             send traces to a collector over plain http (e.g. http://127.0.0.1:4318)"
        );
    }
    if !base.starts_with("http://") || base.len() == "http://".len() {
        bail!(
            "telemetry.otlp_endpoint {base:?} must be an http:// URL such as http://127.0.0.1:4318"
        );
    }
    let base = base.trim_end_matches('/');
    if base.ends_with(TRACES_PATH) {
        Ok(base.to_owned())
    } else {
        Ok(format!("{base}{TRACES_PATH}"))
    }
}

/// Builds the tracer provider, exporting in batches over OTLP/HTTP protobuf when configured.
fn tracer_provider(
    service_name: &str,
    traces_endpoint: Option<&str>,
) -> anyhow::Result<SdkTracerProvider> {
    let resource = Resource::builder()
        .with_service_name(service_name.to_owned())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if let Some(endpoint) = traces_endpoint {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .build()
            .with_context(|| format!("could not build the OTLP trace exporter for {endpoint}"))?;
        // The batch processor exports from its own thread with the blocking reqwest client, so
        // it works the same whether or not the caller runs inside a Tokio runtime.
        builder = builder.with_batch_exporter(exporter);
    }
    Ok(builder.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_wins_over_the_configured_level() {
        let filter = env_filter(Some("warn,cuttle=trace"), "not a [valid directive").unwrap();
        assert_eq!(filter.to_string(), "cuttle=trace,warn");
    }

    #[test]
    fn configured_level_is_used_when_rust_log_is_unset_or_blank() {
        assert_eq!(env_filter(None, "debug").unwrap().to_string(), "debug");
        assert_eq!(env_filter(Some("  "), "info").unwrap().to_string(), "info");
    }

    #[test]
    fn invalid_level_is_reported_with_the_field_name() {
        let error = env_filter(None, "info,[").unwrap_err();
        assert!(error.to_string().contains("telemetry.log_level"), "{error}");
    }

    #[test]
    fn traces_path_is_appended_to_the_collector_base_url() {
        let expected = "http://127.0.0.1:4318/v1/traces";
        assert_eq!(traces_endpoint("http://127.0.0.1:4318").unwrap(), expected);
        assert_eq!(traces_endpoint("http://127.0.0.1:4318/").unwrap(), expected);
        assert_eq!(traces_endpoint(expected).unwrap(), expected);
        assert_eq!(
            traces_endpoint("http://collector/otlp").unwrap(),
            "http://collector/otlp/v1/traces"
        );
    }

    #[test]
    fn endpoints_without_plain_http_are_refused() {
        for endpoint in ["https://collector:4318", "127.0.0.1:4318", "http://", ""] {
            let error = traces_endpoint(endpoint).unwrap_err();
            assert!(
                error.to_string().contains("telemetry.otlp_endpoint"),
                "{error}"
            );
        }
    }

    #[test]
    fn init_can_be_called_more_than_once() {
        let config = TelemetryConfig {
            log_format: LogFormat::Json,
            ..TelemetryConfig::default()
        };
        let first = init("cuttle-test", &config).unwrap();
        let second = init("cuttle-test", &config).unwrap();
        assert!(second.provider.is_none());
        drop((first, second));
    }

    #[test]
    fn exporter_is_built_for_a_configured_collector() {
        // Nothing listens there; building must not connect, and shutdown must not hang on it.
        let provider =
            tracer_provider("cuttle-test", Some("http://127.0.0.1:9/v1/traces")).unwrap();
        provider.shutdown().unwrap();
    }
}
