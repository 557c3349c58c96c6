//! Trace context across processes: how one run becomes one trace.
//!
//! The engine's `run.start` span is the root. Its W3C `traceparent` is stored on the run row,
//! so whichever engine copy publishes a step message (now, or after a crash) makes the
//! `step.dispatch` span a child of it and puts the dispatch span's `traceparent` in the
//! message's NATS headers. The worker's `step.execute` span is a child of that; outbound
//! calls (`http.request` spans) forward the execution's `traceparent` to the provider, and the
//! result message carries it back, so the engine's `step.result` span joins the same trace.
//!
//! These helpers are no-ops while no OpenTelemetry layer is installed (tracing off): then a
//! span has no trace context, [`traceparent_of`] is `None`, and callers pass on the context
//! they received unchanged.

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The W3C `traceparent` of `span`, when tracing is on and the span is sampled into a trace.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = std::collections::HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

/// The trace id of `span` (32 hex digits), when tracing is on.
pub fn trace_id_of(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// Makes `span` a child of the remote span `traceparent` names. A missing or malformed
/// `traceparent` leaves `span` where it is (a root, or under the current span).
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    let carrier =
        std::collections::HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// Records `span`'s trace id in its `trace_id` field (declared `Empty`), for log lines.
pub fn record_trace_id(span: &tracing::Span) {
    if let Some(id) = trace_id_of(span) {
        span.record("trace_id", id.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn without_tracing_there_is_no_context_to_pass_on() {
        let span = tracing::info_span!("step.execute");
        set_parent(&span, Some(PARENT));
        assert_eq!(traceparent_of(&span), None);
        assert_eq!(trace_id_of(&span), None);
    }

    #[test]
    fn a_child_span_continues_the_remote_trace() {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("step.execute");
            set_parent(&span, Some(PARENT));
            let child = traceparent_of(&span).expect("a traceparent");
            assert!(
                child.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
                "{child}"
            );
            assert!(
                !child.contains("00f067aa0ba902b7"),
                "a new span id: {child}"
            );
            assert_eq!(
                trace_id_of(&span).as_deref(),
                Some("4bf92f3577b34da6a3ce929d0e0e4736")
            );

            let root = tracing::info_span!("run.start");
            set_parent(&root, Some("not a traceparent"));
            assert!(traceparent_of(&root).is_some());
        });
    }
}
