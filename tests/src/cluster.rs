//! A three-node JetStream cluster of real `nats-server` processes on loopback, each started
//! from the production configuration `deploy/nats/nats.conf`, so the tests run what operators
//! deploy.
//!
//! That configuration needs nats-server 2.10 or later (`sync_interval: always`), newer than
//! the distribution's server the other tests use; `scripts/setup.sh` puts one in `.tools/`.
//! `SWITCHYARD_CLUSTER_NATS_SERVER` names another binary instead.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::{free_port, wait_until};

/// The nats-server version `scripts/setup.sh` installs for the cluster.
pub const CLUSTER_NATS_VERSION: &str = "2.15.1";

/// How long the cluster may take to form and elect its JetStream leader.
const FORMED_WITHIN: Duration = Duration::from_secs(90);

/// One node of a [`NatsCluster`].
#[derive(Debug)]
pub struct Node {
    /// Its `server_name` (`nats-0`, `nats-1`, `nats-2`), as JetStream reports leaders.
    pub name: String,
    /// Its client port on 127.0.0.1.
    pub client_port: u16,
    child: Option<Child>,
}

impl Node {
    /// `nats://127.0.0.1:<client port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.client_port)
    }

    /// Kills it with SIGKILL, as the loss of its machine would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Three nodes forming one JetStream cluster, killed when dropped.
#[derive(Debug)]
pub struct NatsCluster {
    /// The nodes, `nats-0` first.
    pub nodes: Vec<Node>,
    dir: TempDir,
}

impl NatsCluster {
    /// Starts three nodes from `deploy/nats/nats.conf` on ephemeral loopback ports and waits
    /// until JetStream answers on every node (the cluster formed and elected a meta leader).
    pub async fn start() -> Result<Self> {
        crate::init();
        let binary = binary()?;
        let config = workspace_root().join("deploy/nats/nats.conf");
        let dir = tempfile::Builder::new().prefix("sy-cluster-").tempdir()?;
        let ports: Vec<(u16, u16, u16)> = (0..3)
            .map(|_| Ok((free_port()?, free_port()?, free_port()?)))
            .collect::<Result<_>>()?;
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, cluster, _)| format!("nats://127.0.0.1:{cluster}"))
            .collect();
        let mut nodes = Vec::new();
        for (i, (client, cluster, monitor)) in ports.iter().enumerate() {
            let name = format!("nats-{i}");
            let store = dir.path().join(&name);
            std::fs::create_dir_all(&store)?;
            let child = Command::new(&binary)
                .arg("-c")
                .arg(&config)
                .arg("--log")
                .arg(dir.path().join(format!("{name}.log")))
                .env("NATS_SERVER_NAME", &name)
                .env("NATS_HOST", "127.0.0.1")
                .env("NATS_CLIENT_PORT", client.to_string())
                .env("NATS_CLUSTER_PORT", cluster.to_string())
                .env("NATS_MONITOR_PORT", monitor.to_string())
                .env("NATS_STORE_DIR", &store)
                .env("NATS_ROUTE_1", &routes[0])
                .env("NATS_ROUTE_2", &routes[1])
                .env("NATS_ROUTE_3", &routes[2])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("starting {}", binary.display()))?;
            nodes.push(Node {
                name,
                client_port: *client,
                child: Some(child),
            });
        }
        let cluster = NatsCluster { nodes, dir };
        cluster.wait_formed().await?;
        Ok(cluster)
    }

    /// Every node's client URL, comma-separated, as `--nats-url` takes a cluster.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(Node::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node called `name`.
    pub fn node(&mut self, name: &str) -> Result<&mut Node> {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .with_context(|| format!("no node {name}"))
    }

    /// A node's log, for diagnosing a failed test.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    async fn wait_formed(&self) -> Result<()> {
        for node in &self.nodes {
            let url = node.url();
            let formed = wait_until(
                || {
                    let url = url.clone();
                    async move {
                        let client = async_nats::connect(url.as_str()).await?;
                        let js = async_nats::jetstream::new(client);
                        js.query_account().await?;
                        Ok::<bool, anyhow::Error>(true)
                    }
                },
                FORMED_WITHIN,
            )
            .await;
            if let Err(e) = formed {
                bail!(
                    "{} did not serve JetStream: {e:#}; its log:\n{}",
                    node.name,
                    self.log(&node.name)
                );
            }
        }
        Ok(())
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The nats-server the cluster runs: `SWITCHYARD_CLUSTER_NATS_SERVER`, else the one
/// `scripts/setup.sh` installed.
fn binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("SWITCHYARD_CLUSTER_NATS_SERVER") {
        return Ok(PathBuf::from(path));
    }
    let installed = workspace_root()
        .join(".tools")
        .join(format!("nats-server-{CLUSTER_NATS_VERSION}"))
        .join("nats-server");
    if !installed.is_file() {
        bail!(
            "{} is missing: the cluster test needs nats-server 2.10 or later; run scripts/setup.sh \
             (or set SWITCHYARD_CLUSTER_NATS_SERVER)",
            installed.display()
        );
    }
    Ok(installed)
}
