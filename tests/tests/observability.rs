//! Observability across real processes: a run of three steps, started on an engine process and
//! executed by a worker process, is one trace in the OTLP export (received by a small
//! collector over HTTP here), with the span tree the docs describe and no secret in any span;
//! the engine's and the worker's `/metrics` count it; and a worker's JSON log lines carry the
//! run, step and trace ids.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, ensure};
use axum::body::Bytes;
use axum::routing::post;
use common::{Api, Logs, WAIT, spawn_engine_process_with, spawn_worker_process_with, start_fake};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message as _;
use serde_json::{Value, json};
use switchyard_tests::{Backend, NatsServer, TestDatabase, wait_until};

/// A bearer token planted in the steps' connection: it must reach the provider and no span.
const SECRET: &str = "sy-secret-7c1d9e04-never-in-a-span";

/// One span as received, with what the assertions need.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_id: String,
    attributes: HashMap<String, String>,
}

/// An OTLP/HTTP trace receiver: `POST /v1/traces` with a protobuf `ExportTraceServiceRequest`.
async fn start_collector() -> Result<(String, Arc<Mutex<Vec<Received>>>)> {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let sink = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                let Ok(request) = ExportTraceServiceRequest::decode(body) else {
                    return (axum::http::StatusCode::BAD_REQUEST, Vec::new());
                };
                let mut all = sink.lock().unwrap_or_else(|e| e.into_inner());
                for resource in request.resource_spans {
                    let service = resource
                        .resource
                        .iter()
                        .flat_map(|r| r.attributes.iter())
                        .find(|kv| kv.key == "service.name")
                        .map(|kv| text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
                        .unwrap_or_default();
                    for scope in resource.scope_spans {
                        for span in scope.spans {
                            all.push(Received {
                                service: service.clone(),
                                name: span.name,
                                trace_id: hex::encode(&span.trace_id),
                                span_id: hex::encode(&span.span_id),
                                parent_id: hex::encode(&span.parent_span_id),
                                attributes: span
                                    .attributes
                                    .iter()
                                    .map(|kv| {
                                        (
                                            kv.key.clone(),
                                            text(kv.value.as_ref().and_then(|v| v.value.as_ref())),
                                        )
                                    })
                                    .collect(),
                            });
                        }
                    }
                }
                // An empty `ExportTraceServiceResponse`: every span accepted.
                (axum::http::StatusCode::OK, Vec::new())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((format!("http://{addr}"), spans))
}

fn text(value: Option<&AnyValue>) -> String {
    match value {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// An engine process and a worker process exporting traces to `collector`, the worker also
/// serving metrics and logging in `worker_log_format`.
struct Stack {
    _nats: NatsServer,
    _db: TestDatabase,
    _engine: tokio::process::Child,
    _worker: tokio::process::Child,
    api: Api,
    worker_logs: Logs,
    fake: Arc<common::Fake>,
    fake_addr: std::net::SocketAddr,
}

const THREE_STEPS: &str = "name: traced
steps:
  - { id: one, action: http.request, connection: api, with: { url: \"http://FAKE/traced\" } }
  - { id: two, needs: [one], action: http.request, connection: api, with: { url: \"http://FAKE/traced\" } }
  - { id: three, needs: [two], action: http.request, connection: api, with: { url: \"http://FAKE/traced\" } }
";

impl Stack {
    async fn start(collector: &str, worker_log_format: &str) -> Result<Stack> {
        let (fake_addr, fake) = start_fake().await?;
        let nats = NatsServer::start().await?;
        let db = TestDatabase::new(Backend::Postgres).await?;
        let (_, key) = engine::vault::Keyring::generate()?;
        let env = [
            ("SWITCHYARD_MASTER_KEY", key.as_str()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ];
        let (engine, url, _) = spawn_engine_process_with(&nats.url(), db.url(), &env).await?;
        let (worker, worker_logs) = spawn_worker_process_with(
            &nats.url(),
            "traced-worker",
            &[
                "--database-url",
                db.url(),
                "--metrics-addr",
                "127.0.0.1:0",
                "--log-format",
                worker_log_format,
            ],
            &env,
        )?;
        let api = Api::new(url.clone(), db.url()).await?;
        let created = api
            .http
            .post(format!("{url}/v1/connections"))
            .json(&json!({ "name": "api", "connector": "http", "auth": { "type": "bearer", "token": SECRET } }))
            .send()
            .await?;
        ensure!(created.status().is_success(), "{}", created.text().await?);
        api.apply(&THREE_STEPS.replace("FAKE", &fake_addr.to_string()))
            .await?;
        Ok(Stack {
            _nats: nats,
            _db: db,
            _engine: engine,
            _worker: worker,
            api,
            worker_logs,
            fake,
            fake_addr,
        })
    }

    /// Runs the workflow to success and returns the run's id.
    async fn run(&self) -> Result<String> {
        let (_, run_id) = self.api.start_run("traced", json!({}), None).await?;
        let run = self.api.finished(&run_id, WAIT).await?;
        ensure!(run["status"] == "succeeded", "{run:#}");
        Ok(run_id)
    }

    /// The worker's metrics listener, from the line it logs once bound.
    async fn worker_metrics_url(&self) -> Result<String> {
        let mut found = String::new();
        wait_until(
            || {
                let addr = address_in(&self.worker_logs, "worker metrics listening");
                if let Some(a) = &addr {
                    found.clone_from(a);
                }
                async move { Ok::<bool, anyhow::Error>(addr.is_some()) }
            },
            WAIT,
        )
        .await
        .context("the worker did not log its metrics address")?;
        Ok(format!("http://{found}"))
    }
}

/// The `addr` of the first log line (text or JSON) containing `marker`.
fn address_in(logs: &Logs, marker: &str) -> Option<String> {
    let logs = logs.lock().unwrap_or_else(|e| e.into_inner());
    let line = logs.lines().find(|l| l.contains(marker))?;
    if let Ok(json) = serde_json::from_str::<Value>(line) {
        return json["fields"]["addr"].as_str().map(str::to_owned);
    }
    line.split("addr=")
        .nth(1)?
        .split_whitespace()
        .next()
        .map(str::to_owned)
}

/// The spans of run `run_id`'s trace, once `expected` of them have arrived.
async fn trace_of(
    spans: &Arc<Mutex<Vec<Received>>>,
    run_id: &str,
    expected: usize,
) -> Result<Vec<Received>> {
    let select = || {
        let all = spans.lock().unwrap_or_else(|e| e.into_inner());
        let root = all
            .iter()
            .find(|s| {
                s.name == "run.start"
                    && s.attributes.get("run_id").map(String::as_str) == Some(run_id)
            })
            .cloned();
        root.map(|root| {
            all.iter()
                .filter(|s| s.trace_id == root.trace_id)
                .cloned()
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
    };
    let outcome = wait_until(
        || {
            let n = select().len();
            async move { Ok::<bool, anyhow::Error>(n >= expected) }
        },
        WAIT,
    )
    .await;
    let trace = select();
    outcome.with_context(|| {
        format!(
            "expected {expected} spans of the run's trace, got {}: {:#?}",
            trace.len(),
            trace.iter().map(|s| &s.name).collect::<Vec<_>>()
        )
    })?;
    Ok(trace)
}

fn attr<'a>(span: &'a Received, key: &str) -> &'a str {
    span.attributes.get(key).map_or("", String::as_str)
}

#[tokio::test]
async fn a_run_is_one_trace_across_the_engine_and_a_worker() -> Result<()> {
    let (collector, spans) = start_collector().await?;
    let stack = Stack::start(&collector, "text").await?;
    let run_id = stack.run().await?;

    // run.start + 3 × (step.dispatch, step.execute, http.request, step.result)
    let trace = trace_of(&spans, &run_id, 13).await?;
    let named = |name: &str| trace.iter().filter(|s| s.name == name).collect::<Vec<_>>();
    let root = named("run.start");
    assert_eq!(root.len(), 1, "{trace:#?}");
    let root = root[0];
    assert_eq!(root.service, "switchyard-engine");
    assert_eq!(attr(root, "workflow"), "traced");
    assert_eq!(attr(root, "trigger"), "api");

    // Every span that names the run is in this one trace.
    let all = spans.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for span in all.iter().filter(|s| attr(s, "run_id") == run_id) {
        assert_eq!(span.trace_id, root.trace_id, "{span:#?}");
    }

    let dispatches = named("step.dispatch");
    let executions = named("step.execute");
    let calls = named("http.request");
    let results = named("step.result");
    assert_eq!(
        (
            dispatches.len(),
            executions.len(),
            calls.len(),
            results.len()
        ),
        (3, 3, 3, 3),
        "{trace:#?}"
    );
    for step in ["one", "two", "three"] {
        let dispatch = dispatches
            .iter()
            .find(|s| attr(s, "step_id") == step)
            .with_context(|| format!("no dispatch span of {step}"))?;
        assert_eq!(dispatch.parent_id, root.span_id, "{dispatch:#?}");
        assert_eq!(dispatch.service, "switchyard-engine");

        let execution = executions
            .iter()
            .find(|s| attr(s, "step_id") == step)
            .with_context(|| format!("no execution span of {step}"))?;
        assert_eq!(execution.parent_id, dispatch.span_id, "{execution:#?}");
        assert_eq!(execution.service, "switchyard-worker");
        assert_eq!(attr(execution, "run_id"), run_id);
        assert_eq!(attr(execution, "workflow"), "traced");
        assert_eq!(attr(execution, "connector"), "http");
        assert_eq!(attr(execution, "action"), "request");
        assert_eq!(attr(execution, "attempt"), "1");

        let call = calls
            .iter()
            .find(|s| s.parent_id == execution.span_id)
            .with_context(|| format!("no http.request span under {step}'s execution"))?;
        assert_eq!(attr(call, "method"), "GET");
        assert_eq!(attr(call, "host"), "127.0.0.1");
        assert_eq!(attr(call, "status"), "200");

        let result = results
            .iter()
            .find(|s| attr(s, "step_id") == step)
            .with_context(|| format!("no result span of {step}"))?;
        assert_eq!(result.parent_id, execution.span_id, "{result:#?}");
        assert_eq!(result.service, "switchyard-engine");
        assert_eq!(attr(result, "status"), "succeeded");
    }

    // The provider was handed the trace: each call's traceparent is in the run's trace.
    let sent = stack
        .fake
        .traceparents
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    assert_eq!(sent.len(), 3, "{sent:?}");
    for traceparent in &sent {
        assert!(
            traceparent.starts_with(&format!("00-{}-", root.trace_id)),
            "{traceparent} is not in trace {}",
            root.trace_id
        );
    }

    // No span of either process holds the connection's secret, nor a URL with a path.
    for span in &all {
        for (key, value) in &span.attributes {
            assert!(
                !value.contains(SECRET),
                "{key} of {} holds the secret",
                span.name
            );
            assert!(
                !value.contains("/traced"),
                "{key} of {} holds the called URL",
                span.name
            );
        }
    }
    let _ = stack.fake_addr;
    Ok(())
}

/// The value of the sample `line` (name and labels exactly) in a metrics text.
fn sample(metrics: &str, line: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(line)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

#[tokio::test]
async fn metrics_of_the_engine_and_the_worker_count_the_run() -> Result<()> {
    let (collector, _spans) = start_collector().await?;
    let stack = Stack::start(&collector, "text").await?;
    let worker = stack.worker_metrics_url().await?;
    let http = reqwest::Client::new();
    // Ready once connected to NATS with its queue's consumer bound (the engine made the
    // stream); alive from the start.
    assert!(
        http.get(format!("{worker}/healthz"))
            .send()
            .await?
            .status()
            .is_success()
    );
    wait_until(
        || {
            let request = http.get(format!("{worker}/readyz")).send();
            async move { Ok::<bool, anyhow::Error>(request.await?.status().is_success()) }
        },
        WAIT,
    )
    .await
    .context("the worker never became ready")?;

    stack.run().await?;

    let engine = stack
        .api
        .http
        .get(format!("{}/metrics", stack.api.url))
        .send()
        .await?
        .text()
        .await?;
    for (line, value) in [
        (
            "switchyard_runs_started_total{workflow=\"traced\",trigger=\"api\"}",
            1.0,
        ),
        ("switchyard_runs_finished_total{status=\"succeeded\"}", 1.0),
        (
            "switchyard_steps_finished_total{status=\"succeeded\",connector=\"http\"}",
            3.0,
        ),
        ("switchyard_outbox_backlog", 0.0),
        (
            "switchyard_consumer_ack_pending{consumer=\"workers-default\"}",
            0.0,
        ),
        (
            "switchyard_consumer_pending{consumer=\"workers-default\"}",
            0.0,
        ),
        (
            "switchyard_webhook_deliveries_total{outcome=\"accepted\"}",
            0.0,
        ),
    ] {
        assert_eq!(sample(&engine, line), Some(value), "{line} in\n{engine}");
    }

    // The worker counts a step once its result is stored, just before the engine records it.
    let text = http
        .get(format!("{worker}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    for (line, value) in [
        (
            "switchyard_step_duration_seconds_count{connector=\"http\",action=\"request\",outcome=\"succeeded\"}",
            3.0,
        ),
        ("switchyard_step_schedule_delay_seconds_count", 3.0),
        ("switchyard_steps_in_flight", 0.0),
    ] {
        assert_eq!(sample(&text, line), Some(value), "{line} in\n{text}");
    }
    assert!(
        !text.contains("run_id") && !engine.contains("run_id"),
        "no per-run labels"
    );
    Ok(())
}

#[tokio::test]
async fn a_worker_s_json_log_lines_carry_run_step_and_trace_ids() -> Result<()> {
    let (collector, spans) = start_collector().await?;
    let stack = Stack::start(&collector, "json").await?;
    let run_id = stack.run().await?;
    let trace = trace_of(&spans, &run_id, 1).await?;
    let trace_id = trace[0].trace_id.clone();

    let logs = stack
        .worker_logs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut finished = Vec::new();
    for line in logs.lines() {
        let json: Value =
            serde_json::from_str(line).with_context(|| format!("not a JSON log line: {line}"))?;
        for key in ["timestamp", "level", "target", "message"] {
            ensure!(json.get(key).is_some(), "no {key}: {line}");
        }
        if json["message"] == "step finished" {
            finished.push(json);
        }
    }
    assert_eq!(finished.len(), 3, "{logs}");
    let mut steps: Vec<&str> = finished
        .iter()
        .map(|l| l["step_id"].as_str().unwrap_or_default())
        .collect();
    steps.sort_unstable();
    assert_eq!(steps, ["one", "three", "two"]);
    for line in &finished {
        assert_eq!(line["run_id"], run_id.as_str(), "{line}");
        assert_eq!(line["trace_id"], trace_id.as_str(), "{line}");
        assert_eq!(line["fields"]["status"], "succeeded", "{line}");
    }
    assert!(!logs.contains(SECRET));
    Ok(())
}
