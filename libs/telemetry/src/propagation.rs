//! W3C trace context carried in message headers, so a trace follows a task across the bus.

use std::collections::BTreeMap;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::{OpenTelemetrySpanExt, SetParentError};

/// Header that carries the trace and parent span ids (W3C Trace Context).
const TRACEPARENT: &str = "traceparent";

/// Writes the W3C trace context of the current `tracing` span into message headers.
///
/// Writes nothing when there is no current span or telemetry is not installed.
pub fn inject_context(headers: &mut BTreeMap<String, String>) {
    let context = tracing::Span::current().context();
    // The W3C propagator is used directly rather than the global one so that the wire format
    // does not depend on whether `init` ran in this process.
    TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(headers));
}

/// Makes `span`'s parent the remote context carried in `headers`; a no-op when absent.
///
/// Call it before the span is first entered: OpenTelemetry fixes a span's parent when it starts.
pub fn set_parent_from_headers(span: &tracing::Span, headers: &BTreeMap<String, String>) {
    let extractor = HeaderExtractor(headers);
    if extractor.get(TRACEPARENT).is_none() {
        return;
    }
    let context = TraceContextPropagator::new().extract(&extractor);
    if !context.span().span_context().is_valid() {
        // A malformed header must not fail message handling; the span simply starts a new trace.
        tracing::debug!(
            traceparent = extractor.get(TRACEPARENT),
            "ignoring an invalid traceparent header"
        );
        return;
    }
    match span.set_parent(context) {
        Ok(()) => {}
        // Expected when telemetry is not installed (unit tests) or the span is filtered out.
        Err(SetParentError::LayerNotFound | SetParentError::SpanDisabled) => {}
        Err(error @ SetParentError::AlreadyStarted) => {
            tracing::warn!(
                error = %error,
                "remote trace context ignored: set the parent before entering the span"
            );
        }
    }
}

/// Lets the propagator write into our header map.
struct HeaderInjector<'a>(&'a mut BTreeMap<String, String>);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

/// Lets the propagator read from our header map.
struct HeaderExtractor<'a>(&'a BTreeMap<String, String>);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        // Brokers and proxies may change the case of header names; W3C names are lowercase.
        self.0.get(key).map(String::as_str).or_else(|| {
            self.0
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(key))
                .map(|(_, value)| value.as_str())
        })
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::layer::SubscriberExt;

    const REMOTE_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const REMOTE_SPAN_ID: &str = "00f067aa0ba902b7";

    /// Runs `body` with a thread-local subscriber that records OpenTelemetry spans.
    fn with_otel_subscriber(body: impl FnOnce()) {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, body);
    }

    fn remote_headers() -> BTreeMap<String, String> {
        BTreeMap::from([(
            TRACEPARENT.to_owned(),
            format!("00-{REMOTE_TRACE_ID}-{REMOTE_SPAN_ID}-01"),
        )])
    }

    fn trace_id_of(traceparent: &str) -> &str {
        traceparent.split('-').nth(1).unwrap()
    }

    #[test]
    fn injected_context_extracts_to_the_same_trace() {
        with_otel_subscriber(|| {
            let producer = tracing::info_span!("publish");
            let produced = producer.in_scope(|| {
                let mut headers = BTreeMap::new();
                inject_context(&mut headers);
                headers
            });
            let traceparent = produced.get(TRACEPARENT).expect("traceparent injected");

            let consumer = tracing::info_span!("consume");
            set_parent_from_headers(&consumer, &produced);
            let forwarded = consumer.in_scope(|| {
                let mut headers = BTreeMap::new();
                inject_context(&mut headers);
                headers
            });
            let forwarded = &forwarded[TRACEPARENT];
            assert_eq!(trace_id_of(forwarded), trace_id_of(traceparent));
            assert_ne!(
                forwarded, traceparent,
                "the consumer is a new span of that trace"
            );
        });
    }

    #[test]
    fn remote_parent_sets_the_trace_id_of_the_span() {
        with_otel_subscriber(|| {
            let span = tracing::info_span!("consume");
            set_parent_from_headers(&span, &remote_headers());
            let mut headers = BTreeMap::new();
            span.in_scope(|| inject_context(&mut headers));
            assert_eq!(trace_id_of(&headers[TRACEPARENT]), REMOTE_TRACE_ID);
            assert!(!headers[TRACEPARENT].contains(REMOTE_SPAN_ID));
        });
    }

    #[test]
    fn header_names_are_matched_without_regard_to_case() {
        with_otel_subscriber(|| {
            let upper_case = BTreeMap::from([(
                "Traceparent".to_owned(),
                format!("00-{REMOTE_TRACE_ID}-{REMOTE_SPAN_ID}-01"),
            )]);
            let span = tracing::info_span!("consume");
            set_parent_from_headers(&span, &upper_case);
            let mut headers = BTreeMap::new();
            span.in_scope(|| inject_context(&mut headers));
            assert_eq!(trace_id_of(&headers[TRACEPARENT]), REMOTE_TRACE_ID);
        });
    }

    #[test]
    fn absent_or_invalid_headers_start_a_new_trace() {
        with_otel_subscriber(|| {
            for incoming in [
                BTreeMap::new(),
                BTreeMap::from([(TRACEPARENT.to_owned(), "garbage".to_owned())]),
            ] {
                let span = tracing::info_span!("consume");
                set_parent_from_headers(&span, &incoming);
                let mut headers = BTreeMap::new();
                span.in_scope(|| inject_context(&mut headers));
                assert_ne!(trace_id_of(&headers[TRACEPARENT]), REMOTE_TRACE_ID);
            }
        });
    }

    #[test]
    fn nothing_is_injected_outside_a_span() {
        with_otel_subscriber(|| {
            let mut headers = BTreeMap::new();
            inject_context(&mut headers);
            assert!(headers.is_empty());
        });
    }
}
