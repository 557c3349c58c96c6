//! `switchyard dev`: one command, one process tree — a managed nats-server child, an embedded
//! SQLite file, the engine API and in-process workers.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::service::{self, EngineConfig};

/// Where `switchyard dev` keeps its files unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = ".switchyard";
/// The file in the data dir holding the admin token `switchyard dev` made (mode 0600).
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// Options of `switchyard dev`.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// Address of the engine API.
    pub addr: SocketAddr,
    /// Where the SQLite file and the NATS store live.
    pub data_dir: PathBuf,
    /// In-process workers (each with its own concurrency).
    pub workers: usize,
    /// Definitions to load at start-up.
    pub apply: Option<PathBuf>,
    /// Internal destinations opened besides what dev opens anyway
    /// ([`connectors::http::OutboundPolicy::local_development`]: loopback and the private
    /// ranges).
    pub allow_outbound: connectors::http::OutboundPolicy,
}

/// Why `switchyard dev` could not start.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// nats-server is not installed.
    #[error(
        "nats-server was not found on PATH (nor in /usr/sbin). Install it with `./scripts/setup.sh`, \
         or `sudo apt-get install nats-server` on Debian and Ubuntu"
    )]
    NatsMissing,
    /// Files in the data dir could not be created.
    #[error("data dir {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// nats-server did not come up.
    #[error("nats-server did not start: {0}")]
    NatsStart(String),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] service::EngineError),
    /// A definition in `--apply` was invalid or could not be stored.
    #[error("{0}")]
    Apply(String),
    /// The data dir's master key file is unusable.
    #[error("master key {path}: {why}")]
    MasterKey {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// The data dir's master key: read from `master.key`, or generated and written there (mode
/// 0600) on first start, so secrets stored in one session open in the next.
pub fn dev_keyring(data_dir: &Path) -> Result<crate::vault::Keyring, DevError> {
    let path = data_dir.join("master.key");
    let fail = |why: String| DevError::MasterKey {
        path: path.clone(),
        why,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let text = zeroize::Zeroizing::new(text);
            crate::vault::Keyring::parse(text.trim()).map_err(|e| fail(e.to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let (keyring, spec) =
                crate::vault::Keyring::generate().map_err(|e| fail(e.to_string()))?;
            let spec = zeroize::Zeroizing::new(spec);
            write_private(&path, spec.as_bytes()).map_err(|e| fail(e.to_string()))?;
            Ok(keyring)
        }
        Err(e) => Err(fail(e.to_string())),
    }
}

/// Makes sure `path` holds a valid admin token of the `default` workspace: keeps the one there,
/// or bootstraps a new one and writes it (mode 0600). Returns whether a new one was written.
async fn dev_admin_token(db: &sea_orm::DatabaseConnection, path: &Path) -> Result<bool, DevError> {
    let fail = |why: String| DevError::DataDir {
        path: path.to_owned(),
        source: std::io::Error::other(why),
    };
    if let Ok(text) = std::fs::read_to_string(path) {
        let text = zeroize::Zeroizing::new(text);
        if crate::auth::authenticate(db, text.trim(), chrono::Utc::now())
            .await
            .is_ok()
        {
            return Ok(false);
        }
        std::fs::remove_file(path).map_err(|e| fail(e.to_string()))?;
    }
    let (_, issued) = crate::auth::bootstrap(db, "default", "admin")
        .await
        .map_err(|e| fail(e.to_string()))?;
    write_private(path, issued.token.as_bytes()).map_err(|e| fail(e.to_string()))?;
    Ok(true)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Finds `nats-server`, also where Debian puts it outside an ordinary user's PATH.
pub fn find_nats_server() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

/// A nats-server child process, killed when dropped.
#[derive(Debug)]
pub struct NatsChild {
    child: Child,
    /// Its client URL.
    pub url: String,
}

impl NatsChild {
    /// Starts `nats-server -js` on a port of its choosing with its store under `dir`.
    pub async fn start(dir: &Path) -> Result<NatsChild, DevError> {
        let binary = find_nats_server().ok_or(DevError::NatsMissing)?;
        let store = dir.join("nats");
        let ports = dir.join("nats-ports");
        for d in [&store, &ports] {
            std::fs::create_dir_all(d).map_err(|source| DevError::DataDir {
                path: d.clone(),
                source,
            })?;
        }
        let child = Command::new(binary)
            .args(["-js", "-a", "127.0.0.1", "-p", "-1", "--store_dir"])
            .arg(&store)
            .arg("--ports_file_dir")
            .arg(&ports)
            .arg("--log")
            .arg(dir.join("nats.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| DevError::NatsStart(e.to_string()))?;
        let pid = child.id().unwrap_or_default();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(port) = read_ports_file(&ports, pid) {
                return Ok(NatsChild {
                    child,
                    url: format!("nats://127.0.0.1:{port}"),
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(DevError::NatsStart(format!(
                    "no port reported within 15s; see {}",
                    dir.join("nats.log").display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Stops the server, letting it flush its store.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SIGTERM via the server's own signal flag: no libc needed.
            if let Some(binary) = find_nats_server() {
                let _ = Command::new(binary)
                    .arg("--signal")
                    .arg(format!("term={pid}"))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .await;
            }
            if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
                .await
                .is_err()
            {
                let _ = self.child.kill().await;
            }
        }
    }
}

fn read_ports_file(dir: &Path, pid: u32) -> Option<u16> {
    let suffix = format!("_{pid}.ports");
    let path = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(&suffix))
        })?;
    let ports: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    ports
        .get("nats")?
        .get(0)?
        .as_str()?
        .rsplit(':')
        .next()?
        .parse()
        .ok()
}

/// Runs the whole local stack until `shutdown` resolves.
pub async fn run(
    options: DevOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
    bound: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> Result<(), DevError> {
    std::fs::create_dir_all(&options.data_dir).map_err(|source| DevError::DataDir {
        path: options.data_dir.clone(),
        source,
    })?;
    let data_dir =
        std::fs::canonicalize(&options.data_dir).map_err(|source| DevError::DataDir {
            path: options.data_dir.clone(),
            source,
        })?;
    let keyring = dev_keyring(&data_dir)?;
    let nats = NatsChild::start(&data_dir).await?;
    tracing::info!(url = %nats.url, "nats-server started");
    let database_url = format!(
        "sqlite://{}?mode=rwc",
        data_dir.join("switchyard.db").display()
    );

    if let Some(dir) = &options.apply {
        apply_dir(&database_url, dir).await?;
    }

    let keyring = std::sync::Arc::new(keyring);
    // The workers read connections from the same database (migrated here, before they start).
    let access = workers::ConnectionAccess {
        db: service::connect_db(&database_url)
            .await
            .map_err(|e| DevError::Engine(service::EngineError::Db(e)))?,
        keyring: keyring.clone(),
    };
    let token_path = data_dir.join(ADMIN_TOKEN_FILE);
    if dev_admin_token(&access.db, &token_path).await? {
        let token =
            zeroize::Zeroizing::new(std::fs::read_to_string(&token_path).unwrap_or_default());
        eprintln!(
            "switchyard dev: admin token of the `default` workspace: {}\n  (written to {}; client \
             verbs run from this directory read it, elsewhere set SWITCHYARD_TOKEN)",
            token.as_str(),
            token_path.display()
        );
    }
    // dev runs on a person's machine, next to the services they try it with.
    let outbound =
        connectors::http::OutboundPolicy::local_development().union(&options.allow_outbound);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut workers = Vec::new();
    for i in 0..options.workers {
        let config = workers::WorkerConfig {
            nats_url: nats.url.clone(),
            worker_id: format!("dev-worker-{i}"),
            allow_outbound: outbound.clone(),
            ..Default::default()
        };
        let mut rx = stop_rx.clone();
        let access = access.clone();
        workers.push(tokio::spawn(async move {
            let stop = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Err(e) = workers::run_with(config, Some(access), stop).await {
                tracing::error!(error = %e, "worker stopped");
            }
        }));
    }
    let mut engine_stop = stop_rx.clone();
    let engine = service::run(
        EngineConfig {
            nats_url: nats.url.clone(),
            database_url,
            listen: options.addr,
            keyring: Some(keyring),
            allow_outbound: outbound,
            ..Default::default()
        },
        async move {
            let _ = engine_stop.wait_for(|s| *s).await;
        },
        bound,
    );
    let engine = tokio::spawn(engine);
    shutdown.await;
    let _ = stop_tx.send(true);
    let result = engine.await;
    for w in workers {
        let _ = w.await;
    }
    nats.stop().await;
    match result {
        Ok(r) => r.map_err(DevError::from),
        Err(e) => Err(DevError::Apply(format!("engine task: {e}"))),
    }
}

/// Validates and stores every `.yaml`, `.yml` and `.json` definition in `dir`.
async fn apply_dir(database_url: &str, dir: &Path) -> Result<(), DevError> {
    let db = service::connect_db(database_url)
        .await
        .map_err(|e| DevError::Apply(format!("database: {e}")))?;
    let registry = connectors::Registry::builtin();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| DevError::DataDir {
            path: dir.to_owned(),
            source,
        })?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        })
        .collect();
    entries.sort();
    for path in entries {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| DevError::Apply(format!("{}: {e}", path.display())))?;
        let workflow = schemas::validate::validate(&text, &registry).map_err(|p| {
            DevError::Apply(
                p.0.iter()
                    .map(|p| format!("{}:{p}", path.display()))
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
        })?;
        let (version, _) =
            crate::store::put_workflow(&db, crate::store::default_workspace(), &workflow, &text)
                .await
                .map_err(|e| DevError::Apply(format!("{}: {e}", path.display())))?;
        tracing::info!(workflow = %workflow.name, version, "applied");
    }
    let _ = db.close().await;
    Ok(())
}
