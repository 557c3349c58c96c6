//! Creates the JetStream streams and the engine's consumer, idempotently, at start-up.
//!
//! Every engine copy runs this; creating what already exists with the same configuration is a
//! no-op, so start-up order between copies does not matter. Only features that the NATS server
//! shipped by Debian (2.9) supports are used.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use schemas::transport;

/// How long JetStream remembers a `Nats-Msg-Id`. The outbox relay republishes rows left unsent
/// by a crash well within this window, so a republish is always recognised as a duplicate.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(20 * 60);

/// How long a result may stay unacknowledged before another engine copy gets it.
pub const RESULTS_ACK_WAIT: Duration = Duration::from_secs(30);

/// Why the topology could not be created.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// A stream could not be created or read.
    #[error("stream {name}: {source}")]
    Stream {
        /// Stream name.
        name: &'static str,
        /// The server's answer.
        #[source]
        source: jetstream::context::CreateStreamError,
    },
    /// The results consumer could not be created.
    #[error("consumer {name}: {source}")]
    Consumer {
        /// Consumer name.
        name: &'static str,
        /// The server's answer.
        #[source]
        source: jetstream::stream::ConsumerError,
    },
}

impl TopologyError {
    /// Whether asking again may succeed: the server did not answer in time, or JetStream was
    /// not available yet (a cluster still electing its meta leader, a node still starting).
    pub fn is_transient(&self) -> bool {
        use jetstream::context::CreateStreamErrorKind as S;
        use jetstream::stream::ConsumerErrorKind as C;
        match self {
            TopologyError::Stream { source, .. } => {
                matches!(source.kind(), S::TimedOut | S::JetStreamUnavailable)
            }
            TopologyError::Consumer { source, .. } => {
                matches!(source.kind(), C::TimedOut | C::Request)
            }
        }
    }
}

/// [`ensure`], asked again with backoff (250 ms doubling to 5 s) while its failure is
/// transient, for up to `within`: engines started together against a cluster that is still
/// forming see JetStream requests time out, and should wait for it rather than exit.
pub async fn ensure_patiently(
    js: &jetstream::Context,
    replicas: usize,
    within: Duration,
) -> Result<Topology, TopologyError> {
    let deadline = tokio::time::Instant::now() + within;
    let mut delay = Duration::from_millis(250);
    loop {
        match ensure(js, replicas).await {
            Err(e) if e.is_transient() && tokio::time::Instant::now() + delay < deadline => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64,
                    "declaring the JetStream streams failed; asking again");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

/// The streams and the shared results consumer.
#[derive(Debug)]
pub struct Topology {
    /// Pull consumer on the results stream, shared by every engine copy.
    pub results: consumer::Consumer<consumer::pull::Config>,
    /// Pull consumer on the events stream, shared by every engine copy: each event is
    /// handled by one engine at a time.
    pub events: consumer::Consumer<consumer::pull::Config>,
}

/// Creates (or finds) the step, result and event streams and the engine's results consumer.
///
/// Every stream gets `replicas` copies (1 on a single server, 3 on a three-node cluster; see
/// `deploy/nats/`). A stream that exists with another number of replicas is scaled to it;
/// nothing else of an existing stream is changed. Consumers inherit their stream's replicas.
pub async fn ensure(js: &jetstream::Context, replicas: usize) -> Result<Topology, TopologyError> {
    let replicas = replicas.max(1);
    let work_queue = |name: &str, subject: &str| stream::Config {
        name: name.to_owned(),
        subjects: vec![subject.to_owned()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: replicas,
        ..Default::default()
    };
    declare(
        js,
        work_queue(transport::STEPS_STREAM, transport::STEPS_SUBJECTS),
    )
    .await
    .map_err(|source| TopologyError::Stream {
        name: transport::STEPS_STREAM,
        source,
    })?;
    let results = declare(
        js,
        work_queue(transport::RESULTS_STREAM, transport::RESULTS_SUBJECT),
    )
    .await
    .map_err(|source| TopologyError::Stream {
        name: transport::RESULTS_STREAM,
        source,
    })?;
    let events = declare(
        js,
        stream::Config {
            name: transport::EVENTS_STREAM.to_owned(),
            subjects: vec![transport::EVENTS_SUBJECTS.to_owned()],
            storage: stream::StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            max_age: Duration::from_secs(7 * 86_400),
            num_replicas: replicas,
            ..Default::default()
        },
    )
    .await
    .map_err(|source| TopologyError::Stream {
        name: transport::EVENTS_STREAM,
        source,
    })?;
    declare(
        js,
        stream::Config {
            name: transport::HOLDS_STREAM.to_owned(),
            subjects: vec![transport::HOLDS_SUBJECTS.to_owned()],
            storage: stream::StorageType::File,
            // Only the newest hold per connection or host matters.
            max_messages_per_subject: 1,
            max_age: Duration::from_secs(3_600),
            num_replicas: replicas,
            ..Default::default()
        },
    )
    .await
    .map_err(|source| TopologyError::Stream {
        name: transport::HOLDS_STREAM,
        source,
    })?;
    // Request budgets: one key per connection, only its newest value matters. In memory:
    // losing them on a restart only forgets the last second of spending. The bucket's stream
    // is declared here as a key-value store lays it out, rather than through
    // `create_key_value`, whose account-info request fails to parse on nats-server 2.9.
    declare(
        js,
        stream::Config {
            name: transport::BUDGETS_STREAM.to_owned(),
            subjects: vec![format!("$KV.{}.>", transport::BUDGETS_BUCKET)],
            max_messages_per_subject: 1,
            max_age: Duration::from_secs(86_400),
            storage: stream::StorageType::Memory,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            num_replicas: replicas,
            ..Default::default()
        },
    )
    .await
    .map_err(|source| TopologyError::Stream {
        name: transport::BUDGETS_STREAM,
        source,
    })?;
    let results = results
        .get_or_create_consumer(
            transport::ENGINE_RESULTS_CONSUMER,
            consumer::pull::Config {
                durable_name: Some(transport::ENGINE_RESULTS_CONSUMER.to_owned()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: RESULTS_ACK_WAIT,
                max_ack_pending: 10_000,
                ..Default::default()
            },
        )
        .await
        .map_err(|source| TopologyError::Consumer {
            name: transport::ENGINE_RESULTS_CONSUMER,
            source,
        })?;
    let events = events
        .get_or_create_consumer(
            transport::ENGINE_EVENTS_CONSUMER,
            consumer::pull::Config {
                durable_name: Some(transport::ENGINE_EVENTS_CONSUMER.to_owned()),
                // Events published before any engine consumed the stream (by a build without
                // event triggers) start nothing; from then on every event is delivered.
                deliver_policy: consumer::DeliverPolicy::New,
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: RESULTS_ACK_WAIT,
                max_ack_pending: 1_000,
                ..Default::default()
            },
        )
        .await
        .map_err(|source| TopologyError::Consumer {
            name: transport::ENGINE_EVENTS_CONSUMER,
            source,
        })?;
    Ok(Topology { results, events })
}

/// Creates the stream `config` describes, or finds it; one found with another number of
/// replicas is scaled to `config`'s (JetStream copies the data over; the stream stays
/// available).
async fn declare(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<stream::Stream, jetstream::context::CreateStreamError> {
    let replicas = config.num_replicas;
    let found = js.get_or_create_stream(config).await?;
    let current = &found.cached_info().config;
    if current.num_replicas != replicas {
        tracing::info!(
            stream = %current.name,
            from = current.num_replicas,
            to = replicas,
            "scaling stream replicas"
        );
        let mut scaled = current.clone();
        scaled.num_replicas = replicas;
        js.update_stream(scaled).await?;
    }
    Ok(found)
}
