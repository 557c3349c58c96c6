//! A private `nats-server` with JetStream enabled, one per test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

/// How long a server may take to start or stop before the test fails.
const DEADLINE: Duration = Duration::from_secs(15);

/// A running `nats-server -js` listening on 127.0.0.1, killed when dropped.
///
/// The server picks its own port the first time (`-p -1`) and reports it in a ports file, so
/// there is no window in which another process could take it. [`restart`](Self::restart) comes
/// back on the same port with the same store directory, so connected clients reconnect on their
/// own and JetStream state survives, as it would in production.
///
/// ```no_run
/// # async fn example() -> anyhow::Result<()> {
/// let mut nats = switchyard_tests::NatsServer::start().await?;
/// let js = async_nats::jetstream::new(nats.client().await?);
/// nats.kill(); // a crash: no chance to flush or say goodbye
/// nats.restart().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
}

impl NatsServer {
    /// Starts a server on an ephemeral port with a fresh store directory.
    pub async fn start() -> Result<Self> {
        crate::init();
        let dir = tempfile::Builder::new().prefix("sy-nats-").tempdir()?;
        let mut server = Self {
            child: None,
            port: 0,
            dir,
        };
        server.spawn().await?;
        Ok(server)
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port; stays the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where JetStream keeps its data; stays the same across restarts.
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// The server's log, for diagnosing a failed test.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// A client connected to this server. It reconnects quickly after a restart, because the
    /// library's default back-off would make restart tests needlessly slow.
    pub async fn client(&self) -> Result<async_nats::Client> {
        async_nats::ConnectOptions::new()
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis(50 * attempts.min(10) as u64)
            })
            .connect(self.url())
            .await
            .with_context(|| format!("connecting to nats-server at {}", self.url()))
    }

    /// A JetStream context on a fresh [`client`](Self::client).
    pub async fn jetstream(&self) -> Result<async_nats::jetstream::Context> {
        Ok(async_nats::jetstream::new(self.client().await?))
    }

    /// Whether the server process is running (it may have been stopped or killed).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Kills the server with SIGKILL, as a crash would. Does nothing if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Shuts the server down gracefully (SIGTERM), killing it if it has not exited in time.
    pub async fn stop(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        // The server binary can signal its own processes, which spares us both `unsafe` and a
        // dependency on whichever `kill` the machine has.
        let status = Command::new(binary())
            .arg("--signal")
            .arg(format!("term={}", child.id()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if status.success() {
            let deadline = tokio::time::Instant::now() + DEADLINE;
            while child.try_wait()?.is_none() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        self.kill();
        Ok(())
    }

    /// Starts the server again on the same port and store directory, stopping it first if it is
    /// still running.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        self.spawn().await
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    async fn spawn(&mut self) -> Result<()> {
        let ports_dir = self.dir.path().join("ports");
        // A ports file left by the previous run names the old pid, so it can't be mistaken for
        // this one's, but removing it keeps the directory easy to read.
        let _ = std::fs::remove_dir_all(&ports_dir);
        std::fs::create_dir_all(&ports_dir)?;
        let port = if self.port == 0 {
            "-1".to_owned()
        } else {
            self.port.to_string()
        };
        let mut child = Command::new(binary())
            .args(["-js", "-a", "127.0.0.1", "-p", &port])
            // A fixed name: JetStream ties stored state to the server's name, and a restarted
            // server must own what the previous run stored.
            .args(["--server_name", "switchyard-test"])
            .arg("--store_dir")
            .arg(self.store_dir())
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .arg("--log")
            .arg(self.log_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (install it with scripts/setup.sh)",
                    binary().display()
                )
            })?;

        let deadline = tokio::time::Instant::now() + DEADLINE;
        let reported = loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "nats-server exited with {status} before it was ready; its log:\n{}",
                    self.log()
                );
            }
            if let Some(port) = read_ports_file(&ports_dir, child.id()) {
                break port;
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "nats-server did not report its port within {DEADLINE:?}; its log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        self.port = reported;
        self.child = Some(child);
        Ok(())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `nats-server` from `PATH`, falling back to where Debian installs it: `/usr/sbin` is not on an
/// ordinary user's `PATH`.
fn binary() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nats-server"))
            .find(|candidate| candidate.is_file())
    });
    on_path.unwrap_or_else(|| PathBuf::from("/usr/sbin/nats-server"))
}

/// The client port from the ports file the server writes once it accepts connections. The file
/// is written non-atomically, so a partial read just means "not yet".
fn read_ports_file(dir: &Path, pid: u32) -> Option<u16> {
    let suffix = format!("_{pid}.ports");
    let path = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.ends_with(&suffix))
        })?;
    let ports: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let url = ports.get("nats")?.get(0)?.as_str()?;
    url.rsplit(':').next()?.parse().ok()
}
