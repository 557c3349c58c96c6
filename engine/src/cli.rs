//! The `switchyard` command line.

use std::io::{IsTerminal, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use connectors::Registry;
use serde_json::Value;

use crate::client::{Client, ClientError};

/// Switchyard: event-driven workflows over governed integrations.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log line format on standard error: `text` for people, `json` (one object per line,
    /// with the run, step and trace ids of the line's context) for log pipelines.
    #[arg(
        long,
        env = "SWITCHYARD_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: crate::telemetry::LogFormat,
}

/// Where client verbs find the engine.
#[derive(Debug, Clone, clap::Args)]
pub struct Remote {
    /// Engine API URL.
    #[arg(
        long,
        env = "SWITCHYARD_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// Bearer token (`sy_…`). Without one, the token `switchyard dev` wrote to
    /// `.switchyard/admin-token` is used when that file exists.
    #[arg(long, env = "SWITCHYARD_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
}

impl Remote {
    /// A client of the engine, with the caller's token.
    pub fn client(&self) -> Client {
        let token = self.token.clone().or_else(|| {
            std::fs::read_to_string(
                Path::new(crate::dev::DEFAULT_DATA_DIR).join(crate::dev::ADMIN_TOKEN_FILE),
            )
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
        });
        Client::new(&self.url).with_token(token)
    }
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check workflow definitions (YAML or JSON); `-` reads standard input.
    ///
    /// Exit status: 0 when every file is valid, 1 when any is not (every problem is printed as
    /// `file:line:col: path: message`), 2 when a file cannot be read.
    Validate {
        /// Definition files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the JSON Schema of the workflow definition format.
    Schema,
    /// The connector catalog: `list` or `show NAME` (the built-in catalog; `--from-engine`
    /// asks a running engine, whose catalog includes the workspace's custom tools).
    Connectors {
        /// Print the reference page `docs/connectors.md` instead of a plain list.
        #[arg(long)]
        markdown: bool,
        /// `list` (the default) or `show`.
        #[command(subcommand)]
        verb: Option<ConnectorsVerb>,
    },
    /// Run everything locally: a managed nats-server, SQLite in the data dir, the engine API
    /// and workers, until interrupted.
    Dev {
        /// Address of the engine API.
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: SocketAddr,
        /// Where the SQLite file and the NATS store live.
        #[arg(long, default_value = crate::dev::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// In-process workers.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Load every definition in this directory at start-up.
        #[arg(long)]
        apply: Option<PathBuf>,
        /// Internal destinations outbound calls may reach besides loopback and the private
        /// ranges (`10/8`, `172.16/12`, `192.168/16`, `fc00::/7`), which `dev` opens since it
        /// runs on your own machine: a comma-separated list of IP addresses, CIDR ranges and
        /// host names. Link-local addresses and cloud metadata names stay refused unless
        /// listed.
        #[arg(long, env = "SWITCHYARD_ALLOW_OUTBOUND", value_name = "LIST")]
        allow_outbound: Option<connectors::http::OutboundPolicy>,
    },
    /// Run the engine service (production: several copies behind a load balancer).
    Engine {
        /// NATS server URL, or the URLs of a cluster's nodes separated by commas.
        #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
        nats_url: String,
        /// `sqlite://path?mode=rwc` or `postgres://user@host/db`.
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        /// Address of the HTTP API.
        #[arg(long, env = "SWITCHYARD_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// The engine's base URL as browsers and OAuth providers reach it, e.g.
        /// `https://switchyard.example.com`; OAuth's `redirect_uri` is this plus
        /// `/v1/oauth/callback`. Default: `http://{listen}`.
        #[arg(long, env = "SWITCHYARD_PUBLIC_URL")]
        public_url: Option<String>,
        /// Result batches recorded at once on PostgreSQL. One keeps batches largest; more can
        /// help when the database has cores to spare.
        #[arg(long, env = "SWITCHYARD_RESULT_RECORDERS", default_value_t = 1)]
        result_recorders: usize,
        /// Master keys that seal stored secrets: one base64-encoded 32-byte key, or
        /// `v1:<key>,v2:<key>` while rotating (the highest version seals, every one opens).
        /// Without a key, secrets cannot be stored and signed webhooks are refused.
        #[arg(
            long,
            env = "SWITCHYARD_MASTER_KEY",
            hide_env_values = true,
            conflicts_with = "master_key_file"
        )]
        master_key: Option<MasterKeySpec>,
        /// A file holding the master keys, in the same format.
        #[arg(long, env = "SWITCHYARD_MASTER_KEY_FILE")]
        master_key_file: Option<PathBuf>,
        /// Webhook deliveries per second this process admits per workspace (0: no limit).
        #[arg(
            long,
            env = "SWITCHYARD_WEBHOOK_WORKSPACE_RATE",
            default_value_t = 5_000
        )]
        webhook_workspace_rate: u32,
        /// Internal destinations outbound calls may reach: a comma-separated list of IP
        /// addresses, CIDR ranges and host names (`10.0.0.0/8,wiki.corp.example.com`).
        /// Loopback, private, link-local and other internal addresses and cloud metadata
        /// names are refused unless listed; public addresses are always reachable.
        #[arg(long, env = "SWITCHYARD_ALLOW_OUTBOUND", value_name = "LIST")]
        allow_outbound: Option<connectors::http::OutboundPolicy>,
        /// Copies JetStream keeps of each stream: 1 on a single nats-server, 3 on a
        /// three-node cluster (deploy/nats/). Existing streams are scaled to it at start-up.
        #[arg(long, env = "SWITCHYARD_STREAM_REPLICAS", default_value_t = 1,
              value_parser = clap::value_parser!(u8).range(1..=5))]
        stream_replicas: u8,
    },
    /// Run a worker process (stateless; run as many as the load needs).
    Worker {
        /// NATS server URL, or the URLs of a cluster's nodes separated by commas.
        #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
        nats_url: String,
        /// Queues to serve (repeatable).
        #[arg(long = "queue", default_value = "default")]
        queues: Vec<String>,
        /// Steps run at once by this process.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// How long JetStream waits for an ack before redelivering a step to another worker
        /// (applies when the queue's consumer is created).
        #[arg(long, default_value = "30s")]
        ack_wait: schemas::duration::Duration,
        /// Interval of in-progress acks while an action runs; keep it well under `--ack-wait`.
        #[arg(long, default_value = "10s")]
        heartbeat: schemas::duration::Duration,
        /// Name in results and logs (default: a fresh unique name).
        #[arg(long)]
        worker_id: Option<String>,
        /// The engine's database, to read the connections steps name. Without it (and a
        /// master key) steps that name a connection fail, saying so.
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
        /// The engine's master keys, to open connections' credentials (same format as for
        /// `switchyard engine`).
        #[arg(
            long,
            env = "SWITCHYARD_MASTER_KEY",
            hide_env_values = true,
            conflicts_with = "master_key_file"
        )]
        master_key: Option<MasterKeySpec>,
        /// A file holding the master keys.
        #[arg(long, env = "SWITCHYARD_MASTER_KEY_FILE")]
        master_key_file: Option<PathBuf>,
        /// Internal destinations outbound calls may reach: a comma-separated list of IP
        /// addresses, CIDR ranges and host names (`10.0.0.0/8,wiki.corp.example.com`).
        /// Loopback, private, link-local and other internal addresses and cloud metadata
        /// names are refused unless listed; public addresses are always reachable.
        #[arg(long, env = "SWITCHYARD_ALLOW_OUTBOUND", value_name = "LIST")]
        allow_outbound: Option<connectors::http::OutboundPolicy>,
        /// Address to serve `/metrics` (Prometheus), `/healthz` (process alive) and `/readyz`
        /// (connected to NATS, every queue's consumer bound) on, e.g. `0.0.0.0:9090`.
        /// Without it the worker serves no HTTP at all.
        #[arg(long, env = "SWITCHYARD_METRICS_ADDR", value_name = "ADDR")]
        metrics_addr: Option<SocketAddr>,
    },
    /// Measure the engine and print a table: on this machine (nats-server, engine, workers
    /// and a no-op HTTP endpoint, all local), or against a running deployment with
    /// `--engine-url`; with `--soak`, a fixed arrival rate for a bounded time, following the
    /// memory of each process.
    Bench {
        /// Database to use (e.g. a PostgreSQL with durable commits); a temporary SQLite file
        /// when absent.
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
        /// 10-step chains run one at a time for the per-step overhead.
        #[arg(long, default_value_t = 50)]
        chains: usize,
        /// 10-step chains in flight at once for the throughput.
        #[arg(long, default_value_t = 200)]
        runs: usize,
        /// Items of the fan-out.
        #[arg(long, default_value_t = 1000)]
        items: usize,
        /// In-process workers.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Signed webhook deliveries for the accepted-per-second measure.
        #[arg(long, default_value_t = 5000)]
        webhooks: usize,
        /// Measure the deployment whose engine API is here (e.g. one started by
        /// `deploy/local/cluster.sh`) instead of starting one. Its workers must reach
        /// `--noop-url`. The webhook scenarios are local only.
        #[arg(long, value_name = "URL")]
        engine_url: Option<String>,
        /// A token of an author or admin on that engine.
        #[arg(
            long,
            env = "SWITCHYARD_TOKEN",
            hide_env_values = true,
            requires = "engine_url"
        )]
        engine_token: Option<String>,
        /// Where the no-op endpoint the steps call listens, with `--engine-url`.
        #[arg(long, default_value = "127.0.0.1:0", requires = "engine_url")]
        noop_listen: std::net::SocketAddr,
        /// How the deployment's workers reach the no-op endpoint, when not at `--noop-listen`.
        #[arg(long, value_name = "URL", requires = "engine_url")]
        noop_url: Option<String>,
        /// Soak for this long (e.g. `10m`) at `--rate` runs a second instead of the scenarios.
        #[arg(long, value_name = "DURATION")]
        soak: Option<schemas::duration::Duration>,
        /// Runs started per second during the soak.
        #[arg(long, default_value_t = 20.0, requires = "soak")]
        rate: f64,
        /// Steps of each soak run (a chain of no-op calls).
        #[arg(long, default_value_t = 3, requires = "soak")]
        soak_steps: usize,
        /// A process whose memory the soak follows, as NAME=PID; repeatable. Without
        /// `--engine-url` the benchmark's own process and its nats-server are followed too.
        #[arg(long, value_name = "NAME=PID", requires = "soak")]
        watch: Vec<crate::bench::Watch>,
    },
    /// Store a workflow definition on the engine.
    Apply {
        /// Definition file (YAML or JSON).
        file: PathBuf,
        #[command(flatten)]
        remote: Remote,
    },
    /// Start a run.
    Run {
        /// Workflow name.
        workflow: String,
        /// Input as JSON.
        #[arg(long, default_value = "{}")]
        input: String,
        /// Wait for the run to end, showing progress; the exit status reflects the outcome.
        #[arg(long)]
        wait: bool,
        /// Idempotency key: the same key starts the run once.
        #[arg(long)]
        idempotency_key: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// List or show runs.
    Runs {
        /// `list` or `show`.
        #[command(subcommand)]
        verb: RunsVerb,
    },
    /// Cancel a run.
    Cancel {
        /// Run id.
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Who the token belongs to, its role and workspace.
    Whoami {
        #[command(flatten)]
        remote: Remote,
    },
    /// The audit ledger.
    Audit {
        /// `verify`.
        #[command(subcommand)]
        verb: AuditVerb,
    },
    /// Administration with direct access to the engine's database.
    Admin {
        /// `bootstrap` or `rotate-key`.
        #[command(subcommand)]
        verb: AdminVerb,
    },
    /// Store, list or delete secrets (webhook signing keys). Values are never shown.
    Secret {
        /// `set`, `list` or `delete`.
        #[command(subcommand)]
        verb: SecretVerb,
    },
    /// Publish an event; workflows with a matching event trigger start.
    Emit {
        /// Event name, e.g. `lead.created`.
        name: String,
        /// Payload as JSON.
        #[arg(long, default_value = "null")]
        data: String,
        /// Deduplication id: publishing the same id again starts nothing new.
        #[arg(long)]
        id: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
}

/// `switchyard connectors …`.
#[derive(Debug, Subcommand)]
pub enum ConnectorsVerb {
    /// Every connector with its actions, side effects and scopes.
    List {
        /// Only this category: communication, files, crm, data, dev_tools, generic.
        #[arg(long)]
        category: Option<String>,
        /// Print the JSON `GET /v1/connectors` answers.
        #[arg(long)]
        json: bool,
        /// Ask the engine at `--url` instead of printing the built-in catalog.
        #[arg(long)]
        from_engine: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// One connector: auth, base URL, rate limit, and each action's inputs.
    Show {
        /// Connector name, e.g. `slack`.
        name: String,
        /// Print the manifest as JSON, with full input and output schemas.
        #[arg(long)]
        json: bool,
        /// Ask the engine at `--url` instead of the built-in catalog.
        #[arg(long)]
        from_engine: bool,
        #[command(flatten)]
        remote: Remote,
    },
}

/// `switchyard audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditVerb {
    /// Check a workspace's hash chain, reading the database directly: exit 0 when every record
    /// follows from the one before and the chain head names the last, 1 naming the first record
    /// that does not.
    Verify {
        /// The engine's database.
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        /// Workspace name.
        #[arg(long, default_value = "default")]
        workspace: String,
    },
}

/// `switchyard admin …`.
#[derive(Debug, Subcommand)]
pub enum AdminVerb {
    /// Create a workspace and its first admin if they are missing, and print a new token for
    /// that admin. This is how a fresh `switchyard engine` deployment is first entered (there
    /// is no default password), and the way back in when every admin token is lost.
    Bootstrap {
        /// The engine's database.
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        /// Workspace name.
        #[arg(long, default_value = "default")]
        workspace: String,
        /// The admin principal's name.
        #[arg(long, default_value = "admin")]
        name: String,
    },
    /// Re-wrap every stored secret and connection credential sealed under an older master key
    /// version with the current (highest) one, in batches, while engines and workers run.
    /// Configure every engine and worker with both versions first (`v1:<old>,v2:<new>`); once
    /// this reports nothing left, the old version can be dropped. Exits 0 when every row is
    /// under the current version, 1 otherwise, saying why.
    #[command(group(
        clap::ArgGroup::new("keys")
            .required(true)
            .args(["master_key", "master_key_file"])
    ))]
    RotateKey {
        /// The engine's database.
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        /// The master keys, old and new: `v1:<key>,v2:<key>` (the highest version is the one
        /// rows are re-wrapped under).
        #[arg(
            long,
            env = "SWITCHYARD_MASTER_KEY",
            hide_env_values = true,
            conflicts_with = "master_key_file"
        )]
        master_key: Option<MasterKeySpec>,
        /// A file holding the master keys, in the same format.
        #[arg(long, env = "SWITCHYARD_MASTER_KEY_FILE")]
        master_key_file: Option<PathBuf>,
        /// Rows re-wrapped per transaction.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
        batch: u64,
    },
}

/// `switchyard secret …`.
#[derive(Debug, Subcommand)]
pub enum SecretVerb {
    /// Store a secret, reading its value from standard input (so it stays out of shell
    /// history and process lists); a trailing newline is dropped.
    Set {
        /// Secret name.
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// List secret names and when they changed.
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Delete a secret.
    Delete {
        /// Secret name.
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
}

/// `switchyard runs …`.
#[derive(Debug, Subcommand)]
pub enum RunsVerb {
    /// Newest runs first.
    List {
        /// Only this workflow.
        #[arg(long)]
        workflow: Option<String>,
        /// Only this status.
        #[arg(long)]
        status: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u64,
        #[command(flatten)]
        remote: Remote,
    },
    /// One run with every step, as JSON.
    Show {
        /// Run id.
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
}

/// Exit status for invalid definitions and failed runs.
const FAILED: u8 = 1;
/// Exit status for usage errors (clap uses the same for bad arguments).
const USAGE: u8 = 2;

/// Runs one invocation and returns the process exit status.
pub fn run(cli: Cli) -> ExitCode {
    let log_format = cli.log_format;
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    match cli.command {
        Command::Validate { files } => validate(&files, &mut stdout.lock(), &mut stderr.lock()),
        Command::Schema => {
            let _ = stdout
                .lock()
                .write_all(schemas::json_schema::workflow_schema_pretty().as_bytes());
            ExitCode::SUCCESS
        }
        Command::Connectors { markdown: true, .. } => {
            let _ = stdout
                .lock()
                .write_all(connectors::registry::markdown(&Registry::builtin()).as_bytes());
            ExitCode::SUCCESS
        }
        Command::Connectors { verb: None, .. } => print_catalog(local_catalog(None), false),
        Command::Connectors {
            verb:
                Some(ConnectorsVerb::List {
                    category,
                    json,
                    from_engine: false,
                    ..
                }),
            ..
        } => print_catalog(local_catalog(category.as_deref()), json),
        Command::Connectors {
            verb:
                Some(ConnectorsVerb::Show {
                    name,
                    json,
                    from_engine: false,
                    ..
                }),
            ..
        } => print_connector(
            Registry::builtin()
                .get(&name)
                .map(|m| serde_json::to_value(m).unwrap_or(Value::Null))
                .ok_or_else(|| format!("no built-in connector `{name}`")),
            json,
        ),
        other => async_main(other, log_format),
    }
}

fn async_main(command: Command, log_format: crate::telemetry::LogFormat) -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("switchyard: cannot start the async runtime: {e}");
            return ExitCode::from(USAGE);
        }
    };
    let service = match &command {
        Command::Engine { .. } => "switchyard-engine",
        Command::Worker { .. } => "switchyard-worker",
        _ => "switchyard",
    };
    let telemetry = crate::telemetry::init(log_format, service, runtime.handle());
    let code = runtime.block_on(async move {
        match command {
            Command::Dev { addr, data_dir, workers, apply, allow_outbound } => {
                let options = crate::dev::DevOptions {
                    addr,
                    data_dir: data_dir.clone(),
                    workers,
                    apply,
                    allow_outbound: allow_outbound.unwrap_or_default(),
                };
                let (tx, rx) = tokio::sync::oneshot::channel();
                tokio::spawn(async move {
                    if let Ok(addr) = rx.await {
                        eprintln!("switchyard dev: engine API on http://{addr} (data in {}); Ctrl-C stops everything", data_dir.display());
                    }
                });
                match crate::dev::run(options, shutdown_signal(), Some(tx)).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("switchyard dev: {e}");
                        ExitCode::from(FAILED)
                    }
                }
            }
            Command::Engine { nats_url, database_url, listen, public_url, result_recorders, master_key, master_key_file, webhook_workspace_rate, allow_outbound, stream_replicas } => {
                let keyring = match load_keyring(master_key, master_key_file.as_deref()) {
                    Ok(k) => k,
                    Err(e) => {
                        eprintln!("switchyard engine: {e}");
                        return ExitCode::from(USAGE);
                    }
                };
                if keyring.is_none() {
                    eprintln!("switchyard engine: no master key (SWITCHYARD_MASTER_KEY or --master-key-file): secrets cannot be stored and signed webhooks are refused");
                }
                let config = crate::service::EngineConfig {
                    nats_url,
                    database_url,
                    listen,
                    public_url,
                    result_recorders,
                    keyring: keyring.map(std::sync::Arc::new),
                    webhook_workspace_rate: (webhook_workspace_rate > 0).then_some(crate::triggers::limit::Rate {
                        requests: webhook_workspace_rate,
                        per: Duration::from_secs(1),
                    }),
                    allow_outbound: allow_outbound.unwrap_or_default(),
                    stream_replicas: usize::from(stream_replicas),
                    ..Default::default()
                };
                match crate::service::run(config, shutdown_signal(), None).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("switchyard engine: {e}");
                        ExitCode::from(FAILED)
                    }
                }
            }
            Command::Worker { nats_url, queues, concurrency, ack_wait, heartbeat, worker_id, database_url, master_key, master_key_file, allow_outbound, metrics_addr } => {
                let mut config = workers::WorkerConfig {
                    nats_url,
                    queues,
                    concurrency,
                    ack_wait: ack_wait.get(),
                    heartbeat: heartbeat.get(),
                    allow_outbound: allow_outbound.unwrap_or_default(),
                    metrics_addr,
                    ..Default::default()
                };
                if let Some(id) = worker_id {
                    config.worker_id = id;
                }
                let keyring = match load_keyring(master_key, master_key_file.as_deref()) {
                    Ok(k) => k,
                    Err(e) => {
                        eprintln!("switchyard worker: {e}");
                        return ExitCode::from(USAGE);
                    }
                };
                let access = match (database_url, keyring) {
                    (Some(url), Some(keyring)) => match workers::ConnectionAccess::connect(&url, std::sync::Arc::new(keyring)).await {
                        Ok(a) => Some(a),
                        Err(e) => {
                            eprintln!("switchyard worker: database: {e}");
                            return ExitCode::from(FAILED);
                        }
                    },
                    _ => {
                        eprintln!("switchyard worker: no database URL and master key, so steps that name a connection will fail");
                        None
                    }
                };
                match workers::run_with(config, access, shutdown_signal()).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("switchyard worker: {e}");
                        ExitCode::from(FAILED)
                    }
                }
            }
            Command::Bench {
                database_url, chains, runs, items, workers, webhooks, engine_url, engine_token,
                noop_listen, noop_url, soak, rate, soak_steps, watch,
            } => {
                let remote = engine_url.map(|engine_url| crate::bench::RemoteOptions {
                    engine_url,
                    token: engine_token,
                    noop_listen,
                    noop_url,
                });
                let soak = soak.map(|d| crate::bench::SoakOptions {
                    duration: d.0,
                    rate,
                    steps: soak_steps,
                    watch,
                });
                let options = crate::bench::BenchOptions {
                    database_url, chains, runs, items, workers, webhooks, remote, soak,
                };
                match crate::bench::run(options).await {
                    Ok(rows) => {
                        print!("{}", crate::bench::table(&rows));
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("switchyard bench: {e}");
                        ExitCode::from(FAILED)
                    }
                }
            }
            Command::Apply { file, remote } => client_verb(apply(&remote, &file).await),
            Command::Run { workflow, input, wait, idempotency_key, remote } => {
                client_verb(start(&remote, &workflow, &input, wait, idempotency_key.as_deref()).await)
            }
            Command::Runs { verb: RunsVerb::List { workflow, status, limit, remote } } => {
                client_verb(list(&remote, workflow.as_deref(), status.as_deref(), limit).await)
            }
            Command::Runs { verb: RunsVerb::Show { id, remote } } => client_verb(show(&remote, &id).await),
            Command::Cancel { id, remote } => client_verb(
                remote.client()
                    .post_json(&format!("/v1/runs/{id}/cancel"), &Value::Null, None)
                    .await
                    .map(|_| {
                        println!("run {id} cancelled");
                        ExitCode::SUCCESS
                    }),
            ),
            Command::Secret { verb } => client_verb(secret(verb).await),
            Command::Audit { verb: AuditVerb::Verify { database_url, workspace } } => {
                match verify_audit(&database_url, &workspace).await {
                    Ok(code) => code,
                    Err(e) => {
                        eprintln!("switchyard audit verify: {e}");
                        ExitCode::from(USAGE)
                    }
                }
            }
            Command::Whoami { remote } => client_verb(whoami(&remote).await),
            Command::Connectors {
                verb: Some(ConnectorsVerb::List { category, json, remote, .. }),
                ..
            } => {
                let path = match &category {
                    Some(c) => format!("/v1/connectors?category={c}"),
                    None => "/v1/connectors".to_owned(),
                };
                match remote.client().get(&path).await {
                    Ok(answer) => print_catalog(Ok(answer), json),
                    Err(e) => client_verb(Err(e)),
                }
            }
            Command::Connectors { verb: Some(ConnectorsVerb::Show { name, json, remote, .. }), .. } => {
                match remote.client().get(&format!("/v1/connectors/{name}")).await {
                    Ok(answer) => print_connector(Ok(answer), json),
                    Err(e) => client_verb(Err(e)),
                }
            }
            Command::Admin { verb: AdminVerb::Bootstrap { database_url, workspace, name } } => {
                match bootstrap(&database_url, &workspace, &name).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("switchyard admin bootstrap: {e}");
                        ExitCode::from(FAILED)
                    }
                }
            }
            Command::Admin { verb: AdminVerb::RotateKey { database_url, master_key, master_key_file, batch } } => {
                let keyring = match load_keyring(master_key, master_key_file.as_deref()) {
                    Ok(Some(k)) => k,
                    Ok(None) => {
                        eprintln!("switchyard admin rotate-key: give the master keys with --master-key or --master-key-file");
                        return ExitCode::from(USAGE);
                    }
                    Err(e) => {
                        eprintln!("switchyard admin rotate-key: {e}");
                        return ExitCode::from(USAGE);
                    }
                };
                match rotate_key(&database_url, &keyring, batch).await {
                    Ok(code) => code,
                    Err(e) => {
                        eprintln!("switchyard admin rotate-key: {e}");
                        ExitCode::from(FAILED)
                    }
                }
            }
            Command::Emit { name, data, id, remote } => client_verb(emit(&remote, &name, &data, id).await),
            Command::Validate { .. } | Command::Schema | Command::Connectors { .. } => ExitCode::from(USAGE),
        }
    });
    // After the engine or worker stopped (SIGTERM drains them first), while the runtime the
    // exporter sends on still exists.
    telemetry.shutdown();
    code
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn client_verb(result: Result<ExitCode, ClientError>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("switchyard: {e}");
            ExitCode::from(FAILED)
        }
    }
}

async fn secret(verb: SecretVerb) -> Result<ExitCode, ClientError> {
    match verb {
        SecretVerb::Set { name, remote } => {
            let mut value = zeroize::Zeroizing::new(String::new());
            std::io::stdin()
                .read_to_string(&mut value)
                .map_err(|e| ClientError::Usage(format!("reading the secret from stdin: {e}")))?;
            let trimmed = value.strip_suffix('\n').unwrap_or(&value);
            let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
            if trimmed.is_empty() {
                return Err(ClientError::Usage(
                    "no secret on standard input; e.g. `printf %s \"$SECRET\" | switchyard secret set NAME`".into(),
                ));
            }
            let body = serde_json::json!({ "value": trimmed });
            let stored = remote
                .client()
                .put_json(&format!("/v1/secrets/{name}"), &body)
                .await?;
            println!(
                "secret {name} stored (key version {})",
                stored["key_version"]
            );
        }
        SecretVerb::List { remote } => {
            let list = remote.client().get("/v1/secrets").await?;
            for s in list["secrets"].as_array().into_iter().flatten() {
                println!(
                    "{}\tupdated {}",
                    s["name"].as_str().unwrap_or_default(),
                    s["updated_at"].as_str().unwrap_or_default()
                );
            }
        }
        SecretVerb::Delete { name, remote } => {
            remote
                .client()
                .delete(&format!("/v1/secrets/{name}"))
                .await?;
            println!("secret {name} deleted");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn emit(
    remote: &Remote,
    name: &str,
    data: &str,
    id: Option<String>,
) -> Result<ExitCode, ClientError> {
    let data: Value = serde_json::from_str(data)
        .map_err(|e| ClientError::Usage(format!("--data is not JSON: {e}")))?;
    let mut body = serde_json::json!({ "data": data });
    if let Some(id) = id {
        body["id"] = Value::String(id);
    }
    let answer = remote
        .client()
        .post_json(&format!("/v1/events/{name}"), &body, None)
        .await?;
    let duplicate = if answer["duplicate"] == true {
        " (already published; nothing new starts)"
    } else {
        ""
    };
    println!(
        "event {name} {}{duplicate}",
        answer["id"].as_str().unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

async fn verify_audit(database_url: &str, workspace: &str) -> anyhow::Result<ExitCode> {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let db = crate::service::connect_db(database_url).await?;
    let ws = schemas::db::entities::workspace::Entity::find()
        .filter(schemas::db::entities::workspace::Column::Name.eq(workspace))
        .one(&db)
        .await?
        .ok_or_else(|| anyhow::anyhow!("there is no workspace `{workspace}`"))?;
    Ok(match crate::audit::verify(&db, ws.id).await? {
        crate::audit::Verdict::Intact { records } => {
            println!("workspace `{workspace}`: {records} records, chain intact");
            ExitCode::SUCCESS
        }
        crate::audit::Verdict::Broken { seq, why } => {
            println!("workspace `{workspace}`: chain broken at record {seq}: {why}");
            ExitCode::from(FAILED)
        }
    })
}

/// The built-in catalog as `GET /v1/connectors` answers it.
fn local_catalog(category: Option<&str>) -> Result<Value, String> {
    let wanted = match category {
        None => None,
        Some(name) => Some(connectors::manifest::Category::parse(name).ok_or_else(|| {
            format!(
                "category `{name}` is not one of {}",
                connectors::manifest::Category::ALL
                    .map(connectors::manifest::Category::as_str)
                    .join(", ")
            )
        })?),
    };
    let list: Vec<Value> = Registry::builtin()
        .manifests()
        .filter(|m| wanted.is_none_or(|c| m.category == c))
        .map(crate::api::catalog::summary)
        .collect();
    Ok(serde_json::json!({ "connectors": list }))
}

/// Prints a catalog (`{"connectors": [summary, ..]}`) as JSON or one line per action.
fn print_catalog(catalog: Result<Value, String>, json: bool) -> ExitCode {
    let catalog = match catalog {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchyard connectors: {e}");
            return ExitCode::from(USAGE);
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&catalog).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    let mut out = std::io::stdout().lock();
    for c in catalog["connectors"].as_array().into_iter().flatten() {
        let name = c["name"].as_str().unwrap_or("?");
        let _ = writeln!(
            out,
            "{name} — {} ({}; auth {})",
            c["title"].as_str().unwrap_or("?"),
            c["category"].as_str().unwrap_or("?"),
            words(&c["auth"], ", "),
        );
        for a in c["actions"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "  {:<36} {:<11} {}",
                format!("{name}.{}", a["name"].as_str().unwrap_or("?")),
                a["side_effect"].as_str().unwrap_or("?"),
                a["summary"].as_str().unwrap_or(""),
            );
        }
    }
    ExitCode::SUCCESS
}

/// Prints one manifest as JSON or as a page for people.
fn print_connector(manifest: Result<Value, String>, json: bool) -> ExitCode {
    let m = match manifest {
        Ok(m) => m,
        Err(e) => {
            eprintln!("switchyard connectors show: {e}");
            return ExitCode::from(FAILED);
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&m).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    let mut out = std::io::stdout().lock();
    let name = m["name"].as_str().unwrap_or("?");
    let _ = writeln!(
        out,
        "{} (`{name}`), {}",
        m["title"].as_str().unwrap_or("?"),
        m["category"].as_str().unwrap_or("?")
    );
    if let Some(docs) = m["docs_url"].as_str().filter(|d| !d.is_empty()) {
        let _ = writeln!(out, "API reference: {docs}");
    }
    let _ = writeln!(out, "Auth: {}", words(&m["auth"], ", "));
    if let Some(base) = m["default_base_url"].as_str().filter(|b| !b.is_empty()) {
        let _ = writeln!(
            out,
            "Base URL: {base} (a connection's base_url overrides it)"
        );
    }
    if let Some(limit) = m["rate_limit"].as_object() {
        let _ = writeln!(
            out,
            "Rate limit per connection: {} requests per {} s (burst {})",
            limit.get("requests").unwrap_or(&Value::Null),
            limit.get("per_seconds").unwrap_or(&Value::Null),
            limit.get("burst").unwrap_or(&Value::Null),
        );
    }
    for a in m["actions"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "\n{name}.{} — {}",
            a["name"].as_str().unwrap_or("?"),
            a["summary"].as_str().unwrap_or("")
        );
        let repeat = match a["idempotency"]["kind"].as_str() {
            Some("natural") => "yes".to_owned(),
            Some("key") => format!(
                "with key header {}",
                a["idempotency"]["header"].as_str().unwrap_or("?")
            ),
            _ => "no".to_owned(),
        };
        let scopes = words(&a["scopes"], " ");
        let _ = writeln!(
            out,
            "  side effect: {}; repeat-safe: {repeat}; scopes: {}",
            a["side_effect"].as_str().unwrap_or("?"),
            if scopes.is_empty() {
                "none"
            } else {
                scopes.as_str()
            }
        );
        if let Some(p) = a["pagination"].as_object() {
            let _ = writeln!(
                out,
                "  pages by {} (limit default {}, at most {})",
                p.get("style").and_then(Value::as_str).unwrap_or("?"),
                p.get("default_limit").unwrap_or(&Value::Null),
                p.get("max_limit").unwrap_or(&Value::Null),
            );
        }
        let schema = &a["input_schema"];
        let required: Vec<&str> = schema["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if let Some(props) = schema["properties"].as_object() {
            let _ = writeln!(out, "  inputs (* required):");
            for (field, p) in props {
                let kind = match &p["type"] {
                    Value::String(t) => t.clone(),
                    Value::Array(ts) => ts
                        .iter()
                        .filter_map(Value::as_str)
                        .filter(|t| *t != "null")
                        .collect::<Vec<_>>()
                        .join("|"),
                    _ => "any".to_owned(),
                };
                let mark = if required.contains(&field.as_str()) {
                    "*"
                } else {
                    ""
                };
                let description = p["description"].as_str().unwrap_or("").replace('\n', " ");
                let _ = writeln!(
                    out,
                    "    {:<28} {:<8} {description}",
                    format!("{field}{mark}"),
                    kind
                );
            }
        }
    }
    ExitCode::SUCCESS
}

/// The strings of a JSON array, joined.
fn words(list: &Value, sep: &str) -> String {
    list.as_array()
        .map(|l| {
            l.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(sep)
        })
        .unwrap_or_default()
}

async fn whoami(remote: &Remote) -> Result<ExitCode, ClientError> {
    let me = remote.client().get("/v1/whoami").await?;
    println!(
        "{} ({}) is `{}` in workspace {}",
        me["principal"].as_str().unwrap_or("?"),
        me["kind"].as_str().unwrap_or("?"),
        me["role"].as_str().unwrap_or("?"),
        me["workspace_id"].as_str().unwrap_or("?"),
    );
    Ok(ExitCode::SUCCESS)
}

/// Migrates the database if needed, then bootstraps and prints the token on standard output
/// (alone, so `SWITCHYARD_TOKEN=$(switchyard admin bootstrap)` works).
async fn bootstrap(database_url: &str, workspace: &str, name: &str) -> anyhow::Result<()> {
    let db = crate::service::connect_db(database_url).await?;
    let (ws, issued) = crate::auth::bootstrap(&db, workspace, name).await?;
    eprintln!(
        "token {} for admin `{name}` of workspace `{}` ({}); it is shown only now",
        issued.row.prefix, ws.name, ws.id
    );
    println!("{}", issued.token.as_str());
    Ok(())
}

/// Migrates the database if needed, re-wraps every row under an older key version and says
/// what it did; exit 1 when a row is still under an older version afterwards.
async fn rotate_key(
    database_url: &str,
    keyring: &crate::vault::Keyring,
    batch: u64,
) -> anyhow::Result<ExitCode> {
    let db = crate::service::connect_db(database_url).await?;
    let done = crate::keys::rotate(&db, keyring, batch).await?;
    let v = done.to_version;
    if done.nothing_to_rotate() {
        println!(
            "nothing to rotate: no secret or connection is sealed under a version other than v{v}"
        );
    } else {
        println!(
            "re-wrapped {} secret(s) and {} connection(s) under v{v} in {} workspace(s); {} skipped because they changed meanwhile",
            done.secrets, done.connections, done.workspaces, done.skipped
        );
    }
    if done.remaining > 0 {
        println!(
            "{} row(s) are still sealed under another version: something wrote them during the run with a keyring whose current version is not v{v}; give every engine and worker the same keys and run this again",
            done.remaining
        );
        return Ok(ExitCode::from(FAILED));
    }
    let older: Vec<String> = keyring
        .versions()
        .into_iter()
        .filter(|version| *version != v)
        .map(|version| format!("v{version}"))
        .collect();
    if !older.is_empty() {
        println!(
            "nothing is left under {}: it can be removed from the keyring of every engine and worker",
            older.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn apply(remote: &Remote, file: &PathBuf) -> Result<ExitCode, ClientError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| ClientError::Usage(format!("{}: {e}", file.display())))?;
    // Validate locally first so problems are reported against the file name, against the
    // engine's catalog: the built-ins and the workspace's custom tools.
    let catalog = engine_catalog(remote).await?;
    let wf = match schemas::validate::validate(&text, &catalog) {
        Ok(wf) => wf,
        Err(problems) => {
            for p in &problems.0 {
                println!("{}:{p}", file.display());
            }
            return Ok(ExitCode::from(FAILED));
        }
    };
    let answer = remote
        .client()
        .put_text(&format!("/v1/workflows/{}", wf.name), text)
        .await?;
    println!(
        "{} version {}",
        wf.name,
        answer.get("version").cloned().unwrap_or(Value::Null)
    );
    Ok(ExitCode::SUCCESS)
}

async fn start(
    remote: &Remote,
    workflow: &str,
    input: &str,
    wait: bool,
    key: Option<&str>,
) -> Result<ExitCode, ClientError> {
    let input: Value = serde_json::from_str(input)
        .map_err(|e| ClientError::Usage(format!("--input is not JSON: {e}")))?;
    let client = remote.client();
    let answer = client
        .post_json(&format!("/v1/workflows/{workflow}/runs"), &input, key)
        .await?;
    let run_id = answer
        .get("run_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if !wait {
        println!("{run_id}");
        return Ok(ExitCode::SUCCESS);
    }
    let mut display = crate::progress::Display::new(std::io::stdout().is_terminal());
    loop {
        let run = client.get(&format!("/v1/runs/{run_id}")).await?;
        // A closed stdout is no reason to stop following the run: its outcome is the exit code.
        let _ = display.update(&run, &mut std::io::stdout().lock());
        let status = run["status"].as_str().unwrap_or("?");
        if matches!(status, "succeeded" | "failed" | "cancelled" | "timed_out") {
            println!("run {run_id} {status}");
            if status == "succeeded" {
                if let Some(outputs) = run.get("outputs").filter(|o| !o.is_null()) {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(outputs).unwrap_or_default()
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            if let Some(err) = run.get("error").filter(|e| !e.is_null()) {
                println!("{err}");
            }
            return Ok(ExitCode::from(FAILED));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn list(
    remote: &Remote,
    workflow: Option<&str>,
    status: Option<&str>,
    limit: u64,
) -> Result<ExitCode, ClientError> {
    let mut path = format!("/v1/runs?limit={limit}");
    if let Some(w) = workflow {
        path.push_str(&format!("&workflow={w}"));
    }
    if let Some(s) = status {
        path.push_str(&format!("&status={s}"));
    }
    let answer = remote.client().get(&path).await?;
    for r in answer
        .get("runs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        println!(
            "{}  {:<24} v{:<3} {:<10} {}",
            r["id"].as_str().unwrap_or("?"),
            r["workflow"].as_str().unwrap_or("?"),
            r["version"],
            r["status"].as_str().unwrap_or("?"),
            r["created_at"].as_str().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn show(remote: &Remote, id: &str) -> Result<ExitCode, ClientError> {
    let run = remote.client().get(&format!("/v1/runs/{id}")).await?;
    println!("{}", serde_json::to_string_pretty(&run).unwrap_or_default());
    Ok(ExitCode::SUCCESS)
}

/// The connectors a running engine offers the caller's workspace (`GET /v1/connectors`),
/// custom tools included, as the validator reads them.
async fn engine_catalog(remote: &Remote) -> Result<schemas::catalog::StaticCatalog, ClientError> {
    use schemas::catalog::{ActionInfo, ConnectorInfo, SideEffect};
    let answer = remote.client().get("/v1/connectors").await?;
    let list = answer["connectors"].as_array().cloned().unwrap_or_default();
    let connectors = list
        .iter()
        .filter_map(|c| {
            Some(ConnectorInfo {
                name: c["name"].as_str()?.to_owned(),
                requires_connection: c["requires_connection"].as_bool().unwrap_or(true),
                actions: c["actions"]
                    .as_array()?
                    .iter()
                    .filter_map(|a| {
                        Some(ActionInfo {
                            name: a["name"].as_str()?.to_owned(),
                            side_effect: serde_json::from_value::<SideEffect>(
                                a["side_effect"].clone(),
                            )
                            .ok()?,
                        })
                    })
                    .collect(),
            })
        })
        .collect();
    Ok(schemas::catalog::StaticCatalog(connectors))
}

/// Validates each file, printing problems to `out` and read failures to `err`.
pub fn validate(files: &[PathBuf], out: &mut dyn Write, err: &mut dyn Write) -> ExitCode {
    let registry = Registry::builtin();
    let mut worst = 0u8;
    for file in files {
        let name = file.display().to_string();
        let text = if name == "-" {
            let mut buf = String::new();
            std::io::stdin().read_to_string(&mut buf).map(|_| buf)
        } else {
            std::fs::read_to_string(file)
        };
        let text = match text {
            Ok(t) => t,
            Err(e) => {
                let _ = writeln!(err, "{name}: cannot read: {e}");
                worst = worst.max(USAGE);
                continue;
            }
        };
        match schemas::validate::validate(&text, &registry) {
            Ok(wf) => {
                let _ = writeln!(out, "{name}: ok ({}, {} steps)", wf.name, wf.steps.len());
            }
            Err(problems) => {
                for p in &problems.0 {
                    let _ = writeln!(out, "{name}:{p}");
                }
                worst = worst.max(FAILED);
            }
        }
    }
    ExitCode::from(worst)
}

/// A master key spec from the command line or the environment; never printed.
#[derive(Clone)]
pub struct MasterKeySpec(String);

impl std::fmt::Debug for MasterKeySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKeySpec(<redacted>)")
    }
}

impl std::str::FromStr for MasterKeySpec {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(MasterKeySpec(s.to_owned()))
    }
}

/// The keyring from `--master-key` or `--master-key-file`, if either is given.
fn load_keyring(
    spec: Option<MasterKeySpec>,
    file: Option<&std::path::Path>,
) -> Result<Option<crate::vault::Keyring>, String> {
    let text = match (spec, file) {
        (Some(MasterKeySpec(text)), _) => zeroize::Zeroizing::new(text),
        (None, Some(path)) => zeroize::Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| format!("reading the master key file {}: {e}", path.display()))?,
        ),
        (None, None) => return Ok(None),
    };
    crate::vault::Keyring::parse(text.trim())
        .map(Some)
        .map_err(|e| format!("master key: {e}"))
}
