//! One step message, from delivery to ack: parse, refuse if cancelled, run the action under its
//! timeout while heartbeating, publish the result, and only once JetStream has stored it, ack.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind};
use chrono::Utc;
use schemas::envelope::{ENVELOPE_VERSION, ErrorCode, Outcome, StepError, StepMessage, StepResult};
use schemas::transport;
use serde::Deserialize;
use tracing::Instrument;

use crate::cancel::CancelWatch;
use crate::events;
use crate::runtime::Shared;

/// How often publishing a result is tried before the step is given back to JetStream. A second
/// try rides out a blip (a stream leader moving) without running the action again; the result's
/// `Nats-Msg-Id` makes a repeated publish harmless.
const PUBLISH_ATTEMPTS: u32 = 3;
/// Pause before the first re-publish; doubled before each next one.
const PUBLISH_BACKOFF: Duration = Duration::from_millis(200);
/// When a result could not be published, how soon JetStream may redeliver the step. Not zero,
/// so that a results stream that is down does not turn into a hot loop of re-runs.
const NAK_DELAY: Duration = Duration::from_secs(1);
/// Room left in a NATS message for the headers besides the result's JSON.
const HEADER_ROOM: usize = 1024;

/// Why a step message was terminated rather than run.
///
/// Says where the message is wrong, never what it contains: a payload may hold personal data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// Not JSON at all (or JSON followed by more).
    NotJson {
        /// 1-based line of the problem in the payload.
        line: usize,
        /// 1-based column of the problem in the payload.
        column: usize,
    },
    /// Fields every step message has are absent.
    Missing(Vec<String>),
    /// A field of the wrong type or value, an unknown field, or not an object at all (`.`).
    Invalid {
        /// Where in the message, e.g. `attempt`; `.` for the message itself.
        path: String,
        /// 1-based line of the problem in the payload.
        line: usize,
        /// 1-based column of the problem in the payload.
        column: usize,
    },
    /// An envelope version this worker does not speak.
    UnsupportedVersion(u16),
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::NotJson { line, column } => {
                write!(f, "not JSON (line {line}, column {column})")
            }
            Rejection::Missing(fields) => write!(
                f,
                "not a step message: missing {}",
                fields
                    .iter()
                    .map(|field| format!("`{field}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Rejection::Invalid { path, line, column } => write!(
                f,
                "not a step message: `{path}` is unknown or of the wrong type (line {line}, column {column})"
            ),
            Rejection::UnsupportedVersion(v) => write!(
                f,
                "envelope version {v} is not supported; this worker reads version {ENVELOPE_VERSION}"
            ),
        }
    }
}

/// The fields every [`StepMessage`] has (the rest are optional). A unit test keeps this in step
/// with the envelope.
const REQUIRED_FIELDS: [&str; 10] = [
    "v",
    "workspace_id",
    "run_id",
    "step_id",
    "attempt",
    "action",
    "input",
    "timeout_ms",
    "idempotency_key",
    "dispatched_at",
];

/// Reads a step message, refusing other envelope versions.
pub(crate) fn parse(payload: &[u8]) -> Result<StepMessage, Rejection> {
    // The version first, leniently: a message from a newer engine may not parse as this
    // version's envelope at all, and "wrong version" is the more useful thing to say.
    #[derive(Deserialize)]
    struct Versioned {
        v: u16,
    }
    if let Ok(Versioned { v }) = serde_json::from_slice::<Versioned>(payload)
        && v != ENVELOPE_VERSION
    {
        return Err(Rejection::UnsupportedVersion(v));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(payload);
    let parsed: Result<StepMessage, _> = serde_path_to_error::deserialize(&mut deserializer);
    let step = match parsed {
        Ok(step) => step,
        Err(error) => {
            let path = error.path().to_string();
            let error = error.into_inner();
            let (line, column) = (error.line(), error.column());
            if !error.is_data() {
                return Err(Rejection::NotJson { line, column });
            }
            // serde names a missing field only in its message, next to values from the
            // payload in other messages; so look for missing fields here instead.
            if let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice(payload) {
                let missing: Vec<String> = REQUIRED_FIELDS
                    .iter()
                    .filter(|name| !fields.contains_key(**name))
                    .map(|name| (*name).to_owned())
                    .collect();
                if !missing.is_empty() {
                    return Err(Rejection::Missing(missing));
                }
            }
            return Err(Rejection::Invalid { path, line, column });
        }
    };
    deserializer.end().map_err(|error| Rejection::NotJson {
        line: error.line(),
        column: error.column(),
    })?;
    Ok(step)
}

/// The trace id of a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`), for logs.
pub(crate) fn trace_id(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.trim().split('-');
    let (_version, trace) = (parts.next()?, parts.next()?);
    (trace.len() == 32 && trace.bytes().all(|b| b.is_ascii_hexdigit())).then_some(trace)
}

/// Handles one delivered step message to the end: on return it has been acked, nak'ed or
/// terminated, unless the future is dropped first (shutdown), which leaves it to redelivery.
pub(crate) async fn handle(shared: &Shared, msg: jetstream::Message, heartbeat: Duration) {
    let step = match parse(&msg.payload) {
        Ok(step) => step,
        Err(rejection) => return reject(&msg, &rejection).await,
    };
    let received = header(&msg, transport::TRACEPARENT_HEADER).map(str::to_owned);
    let (connector, action) = step
        .action
        .split_once('.')
        .unwrap_or((step.action.as_str(), ""));
    let span = tracing::info_span!(
        "step.execute",
        run_id = %step.run_id,
        step_id = %step.step_id,
        item_index = step.item_index,
        attempt = step.attempt,
        workflow = header(&msg, transport::WORKFLOW_HEADER),
        connector,
        action,
        trace_id = tracing::field::Empty,
    );
    crate::telemetry::set_parent(&span, received.as_deref());
    // With tracing on, outbound calls and the result carry this execution's context; with it
    // off, the context the engine sent passes through unchanged.
    let traceparent = crate::telemetry::traceparent_of(&span).or(received);
    if let Some(id) = traceparent.as_deref().and_then(trace_id) {
        span.record("trace_id", id);
    }
    run_step(shared, &msg, step, traceparent, heartbeat)
        .instrument(span)
        .await;
}

async fn reject(msg: &jetstream::Message, rejection: &Rejection) {
    // Terminated, not nak'ed: redelivering a message that cannot be read only fails again.
    let terminated = msg.double_ack_with(AckKind::Term).await.is_ok();
    events::StepRejected {
        subject: msg.subject.as_str(),
        msg_id: header(msg, transport::MSG_ID_HEADER),
        stream_sequence: msg.info().ok().map(|info| info.stream_sequence),
        reason: rejection,
        terminated,
    }
    .emit();
}

async fn run_step(
    shared: &Shared,
    msg: &jetstream::Message,
    mut step: StepMessage,
    traceparent: Option<String>,
    heartbeat: Duration,
) {
    let started = Instant::now();
    let started_at = Utc::now();
    let connector = step
        .action
        .split_once('.')
        .map_or(step.action.as_str(), |(c, _)| c)
        .to_owned();
    let action = step
        .action
        .split_once('.')
        .map_or("", |(_, a)| a)
        .to_owned();
    let mut cancel = shared.cancellations.watch(step.run_id);
    // Computed before the call: the input is handed to the action and not kept.
    let hold_subject = crate::holds::subject(&step);
    if !cancel.is_cancelled()
        && let Some(subject) = &hold_subject
        && let Some(wait) = shared.holds.remaining(subject)
    {
        // The provider told another worker to slow down: give the step back to JetStream for
        // the rest of the hold instead of calling. No attempt is used up and this slot is free.
        let _ = msg.ack_with(AckKind::Nak(Some(wait))).await;
        events::RateLimitHold {
            connection: step.connection_id,
            wait,
            set: false,
            metrics: &shared.metrics,
        }
        .emit();
        return;
    }
    // After the hold check: a step given back for a hold has not started.
    events::StepStarted {
        queued: (started_at - step.dispatched_at)
            .to_std()
            .unwrap_or_default(),
        attempt: step.attempt,
        connector: &connector,
        metrics: &shared.metrics,
    }
    .emit();
    let outcome = if cancel.is_cancelled() {
        failed(
            ErrorCode::Cancelled,
            "the run was cancelled before this step started".into(),
            None,
        )
    } else {
        match execute(
            shared,
            msg,
            &mut step,
            traceparent.clone(),
            heartbeat,
            &mut cancel,
        )
        .await
        {
            Ok(outcome) => outcome,
            Err(wait) => {
                // The connection's budget had no slot soon and nothing was sent: back to
                // JetStream for about that long, no attempt used, this slot free meanwhile.
                let _ = msg.ack_with(AckKind::Nak(Some(wait))).await;
                tracing::debug!(
                    wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    "waiting for the connection's request budget"
                );
                return;
            }
        }
    };
    if let Outcome::Failed { error } = &outcome
        && error.code == ErrorCode::RateLimited
        && let Some(ms) = error.retry_after_ms
        && let Some(subject) = &hold_subject
    {
        shared.holds.hold(subject, Duration::from_millis(ms)).await;
        events::RateLimitHold {
            connection: step.connection_id,
            wait: Duration::from_millis(ms),
            set: true,
            metrics: &shared.metrics,
        }
        .emit();
    }
    let result = StepResult {
        v: ENVELOPE_VERSION,
        run_id: step.run_id,
        step_id: step.step_id.clone(),
        item_index: step.item_index,
        attempt: step.attempt,
        worker_id: shared.config.worker_id.clone(),
        outcome,
        started_at,
        finished_at: Utc::now(),
    };
    let publishing = publish(shared, &step, result, traceparent.as_deref());
    match with_heartbeat(msg, heartbeat, publishing).await {
        Ok(outcome) => {
            // A plain ack: waiting for JetStream to confirm it would cost a round trip per
            // step and change nothing, since a lost ack only means a redelivery, whose result
            // the engine fences out as a duplicate.
            if let Err(error) = msg.ack().await {
                events::AckFailed { error: &error }.emit();
            }
            events::StepFinished {
                outcome: &outcome,
                elapsed: started.elapsed(),
                connector: &connector,
                action: &action,
                metrics: &shared.metrics,
            }
            .emit();
        }
        Err(error) => {
            // Not stored, so not acked: the step is redelivered and its outcome is not lost.
            let nak_sent = msg.ack_with(AckKind::Nak(Some(NAK_DELAY))).await.is_ok();
            events::ResultNotPublished {
                error: &error,
                nak_sent,
            }
            .emit();
        }
    }
}

/// Runs the action under the step's timeout, heartbeating, until it ends or its run is
/// cancelled. A failure is reported, never retried here: the engine schedules retries.
/// `Err(wait)`: the connection's budget refused the step's first request, so nothing was
/// sent and the step should come back after `wait`.
async fn execute(
    shared: &Shared,
    msg: &jetstream::Message,
    step: &mut StepMessage,
    traceparent: Option<String>,
    heartbeat: Duration,
    cancel: &mut CancelWatch,
) -> Result<Outcome, Duration> {
    let Some((connector, action)) = step.action.split_once('.') else {
        return Ok(failed(
            ErrorCode::InvalidInput,
            format!("action `{}` is not `connector.action`", step.action),
            None,
        ));
    };
    let timeout = Duration::from_millis(step.timeout_ms);
    let connection = match shared.connections.resolve(step).await {
        Ok(c) => c,
        Err((code, message)) => return Ok(failed(code, message, None)),
    };
    let credential = connection.as_ref().map(|c| c.credential.clone());
    let gate = connection.as_ref().and_then(|c| {
        c.rate_limit.map(|limit| {
            Arc::new(crate::budget::Gate::new(
                shared.budgets.clone(),
                c.id,
                limit,
                shared.holds.clone(),
                crate::holds::subject(step),
            ))
        })
    });
    let ctx = connectors::ActionContext {
        timeout,
        idempotency_key: Some(step.idempotency_key.clone()),
        traceparent,
        max_response_bytes: shared.config.max_response_bytes,
        http: shared.http.clone(),
        credential: credential.clone(),
        base_url: connection.as_ref().and_then(|c| c.base_url.clone()),
        gate: gate
            .clone()
            .map(|g| g as Arc<dyn connectors::sdk::RequestGate>),
    };
    // The input is not needed after the call; the result does not repeat it.
    let input = std::mem::take(&mut step.input);
    // A custom tool's definition travels in the step message; built-ins keep their names.
    let tool = step.tool.take().filter(|t| {
        t.name == connector && connectors::Registry::builtin().get(connector).is_none()
    });
    let run = async {
        match &tool {
            Some(tool) => connectors::custom::execute(&ctx, tool, action, input).await,
            None => connectors::execute(&ctx, connector, action, input).await,
        }
    };
    let call = tokio::time::timeout(timeout, run);
    let work = async {
        tokio::select! {
            out = call => Some(out),
            () = cancel.cancelled() => None,
        }
    };
    // A provider may echo the request back: nothing the connection holds leaves in a result.
    let secrets = credential
        .as_deref()
        .map(connectors::Credential::secret_values)
        .unwrap_or_default();
    let outcome = match with_heartbeat(msg, heartbeat, work).await {
        Some(Ok(Err(error)))
            if error.code == ErrorCode::RateLimited
                && gate.as_ref().is_some_and(|g| g.refused_before_sending()) =>
        {
            // Back when the slot is within reach (a slot is reserved at most
            // `MAX_SLOT_WAIT` ahead).
            let wait = error.retry_after.unwrap_or(crate::budget::MAX_SLOT_WAIT);
            return Err(wait
                .saturating_sub(crate::budget::MAX_SLOT_WAIT / 2)
                .max(Duration::from_millis(10)));
        }
        Some(Ok(Ok(mut output))) => {
            connectors::credential::scrub(&mut output, &secrets);
            Outcome::Succeeded { output }
        }
        Some(Ok(Err(error))) => {
            let mut outcome = failed(
                error.code,
                connectors::credential::scrub_text(&error.message, &secrets),
                error.retry_after,
            );
            if let Outcome::Failed { error: e } = &mut outcome {
                e.http_status = error.status;
            }
            outcome
        }
        Some(Err(_elapsed)) => failed(
            ErrorCode::Timeout,
            format!(
                "the action ran longer than the step's {}ms timeout",
                step.timeout_ms
            ),
            None,
        ),
        // The call was dropped mid-flight, so whether it took effect is unknown; the run is
        // cancelled either way.
        None => failed(
            ErrorCode::Cancelled,
            "the run was cancelled while this step ran; the call was abandoned".into(),
            None,
        ),
    };
    Ok(outcome)
}

/// Drives `work` to its end, sending an in-progress ack every `every` so JetStream does not
/// redeliver the step to another worker meanwhile.
async fn with_heartbeat<T>(
    msg: &jetstream::Message,
    every: Duration,
    work: impl Future<Output = T>,
) -> T {
    tokio::pin!(work);
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            out = &mut work => return out,
            _ = beat.tick() => {
                if let Err(error) = msg.ack_with(AckKind::Progress).await {
                    events::HeartbeatFailed { error: &error }.emit();
                }
            }
        }
    }
}

/// Why a result was not stored.
#[derive(Debug, thiserror::Error)]
enum PublishError {
    #[error("publishing the result: {0}")]
    Publish(#[from] jetstream::context::PublishError),
    #[error("encoding the result: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Publishes `result` and waits until JetStream has stored it; returns the outcome as stored
/// (a result too large for NATS is stored as a failure saying so).
async fn publish(
    shared: &Shared,
    step: &StepMessage,
    mut result: StepResult,
    traceparent: Option<&str>,
) -> Result<Outcome, PublishError> {
    let max_payload = shared.client.server_info().max_payload;
    let payload = encode(&mut result, max_payload)?;
    let mut headers = HeaderMap::new();
    // Redelivered and re-run, an attempt publishes under the same id, and JetStream keeps one.
    headers.insert(
        transport::MSG_ID_HEADER,
        format!("result.{}", step.msg_id()).as_str(),
    );
    if let Some(traceparent) = traceparent {
        headers.insert(transport::TRACEPARENT_HEADER, traceparent);
    }
    let mut backoff = PUBLISH_BACKOFF;
    let mut attempt = 1;
    loop {
        let stored = async {
            shared
                .js
                .publish_with_headers(
                    transport::RESULTS_SUBJECT,
                    headers.clone(),
                    payload.clone().into(),
                )
                .await?
                .await
        };
        match stored.await {
            Ok(_ack) => return Ok(result.outcome),
            Err(error) if attempt >= PUBLISH_ATTEMPTS => return Err(error.into()),
            Err(error) => {
                tracing::debug!(%error, attempt, "publishing the result failed; trying again");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
                attempt += 1;
            }
        }
    }
}

/// The result as JSON, replaced by a failure that says so when it would not fit in one NATS
/// message: re-running the step could never publish it, so it must not go back to the queue.
fn encode(result: &mut StepResult, max_payload: usize) -> Result<Vec<u8>, serde_json::Error> {
    let limit = max_payload.saturating_sub(HEADER_ROOM);
    let json = serde_json::to_vec(result)?;
    // 0: not connected yet when the server was asked, so its limit is unknown; let it judge.
    if max_payload == 0 || json.len() <= limit {
        return Ok(json);
    }
    result.outcome = failed(
        ErrorCode::InvalidInput,
        format!(
            "the step's output makes a {}-byte result, more than the {limit} bytes a NATS message \
             may carry here; select less with the step's inputs or lower max_response_bytes",
            json.len()
        ),
        None,
    );
    serde_json::to_vec(result)
}

fn failed(code: ErrorCode, message: String, retry_after: Option<Duration>) -> Outcome {
    Outcome::Failed {
        error: StepError {
            http_status: None,
            code,
            message,
            retry_after_ms: retry_after.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        },
    }
}

fn header<'a>(msg: &'a jetstream::Message, name: &str) -> Option<&'a str> {
    msg.headers
        .as_ref()
        .and_then(|headers| headers.get(name))
        .map(|value| value.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use uuid::Uuid;

    fn step() -> StepMessage {
        StepMessage {
            v: ENVELOPE_VERSION,
            workspace_id: Uuid::nil(),
            run_id: Uuid::now_v7(),
            step_id: "fetch".into(),
            item_index: Some(3),
            attempt: 2,
            action: "http.request".into(),
            connection_id: None,
            input: json!({ "url": "https://example.com" }),
            timeout_ms: 1_000,
            idempotency_key: "k".into(),
            dispatched_at: Utc::now(),
            tool: None,
        }
    }

    fn result(output: serde_json::Value) -> StepResult {
        StepResult {
            v: ENVELOPE_VERSION,
            run_id: Uuid::now_v7(),
            step_id: "fetch".into(),
            item_index: None,
            attempt: 1,
            worker_id: "w".into(),
            outcome: Outcome::Succeeded { output },
            started_at: Utc::now(),
            finished_at: Utc::now(),
        }
    }

    #[test]
    fn a_step_message_parses() {
        let step = step();
        let bytes = serde_json::to_vec(&step).unwrap();
        assert_eq!(parse(&bytes), Ok(step));
    }

    #[test]
    fn an_unreadable_payload_is_rejected_naming_where_not_what() {
        let secret = "alice@example.com";
        let mut wrong_type = serde_json::to_value(step()).unwrap();
        wrong_type["attempt"] = json!(secret);
        let rejection = parse(&serde_json::to_vec(&wrong_type).unwrap()).unwrap_err();
        assert!(
            matches!(&rejection, Rejection::Invalid { path, .. } if path == "attempt"),
            "{rejection:?}"
        );
        assert!(!rejection.to_string().contains(secret));

        let mut missing = serde_json::to_value(step()).unwrap();
        let fields = missing.as_object_mut().unwrap();
        fields.remove("run_id");
        fields.remove("timeout_ms");
        assert_eq!(
            parse(&serde_json::to_vec(&missing).unwrap()),
            Err(Rejection::Missing(vec![
                "run_id".into(),
                "timeout_ms".into()
            ]))
        );

        assert!(matches!(
            parse(b"{ not json"),
            Err(Rejection::NotJson { line: 1, .. })
        ));
        let mut trailing = serde_json::to_vec(&step()).unwrap();
        trailing.extend_from_slice(b" {}");
        assert!(matches!(parse(&trailing), Err(Rejection::NotJson { .. })));
        assert!(matches!(
            parse(format!("[\"{secret}\"]").as_bytes()),
            Err(Rejection::Invalid { .. })
        ));
    }

    #[test]
    fn the_required_fields_are_those_of_the_envelope() {
        let mut step = step();
        step.item_index = None;
        step.connection_id = None;
        let value = serde_json::to_value(step).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, REQUIRED_FIELDS);
    }

    #[test]
    fn another_envelope_version_is_rejected_as_such() {
        let mut step = serde_json::to_value(step()).unwrap();
        step["v"] = json!(2);
        step["new_field"] = json!(true);
        let bytes = serde_json::to_vec(&step).unwrap();
        assert_eq!(parse(&bytes), Err(Rejection::UnsupportedVersion(2)));
    }

    #[test]
    fn trace_ids_come_from_well_formed_traceparents_only() {
        assert_eq!(
            trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(trace_id("00-nothex-00f067aa0ba902b7-01"), None);
        assert_eq!(trace_id(""), None);
    }

    #[test]
    fn a_result_too_large_for_nats_becomes_a_failure_that_fits() {
        let mut big = result(json!({ "body": "x".repeat(4096) }));
        let bytes = encode(&mut big, 2048).unwrap();
        assert!(bytes.len() <= 2048);
        let Outcome::Failed { error } = &big.outcome else {
            panic!("{:?}", big.outcome)
        };
        assert_eq!(error.code, ErrorCode::InvalidInput);
        assert_eq!(serde_json::from_slice::<StepResult>(&bytes).unwrap(), big);

        let mut small = result(json!({ "body": "x" }));
        encode(&mut small, 2048).unwrap();
        assert!(matches!(small.outcome, Outcome::Succeeded { .. }));
    }
}
