//! The PostgreSQL server that test databases are created on.
//!
//! `DATABASE_URL`, when set, names a server on which the tests may create and drop databases;
//! `scripts/test.sh` starts one private cluster for the whole run and exports it, so every test
//! process shares it. Without it, the first test in a process that asks for PostgreSQL starts a
//! private cluster for that process: initdb in a temp dir, TCP on 127.0.0.1 plus a unix socket
//! inside the temp dir. Process-wide statics are never dropped, so that cluster is shut down by
//! a watchdog process that waits for this process to close a pipe, which the kernel does however
//! the process ends (normal exit, panic, SIGKILL), then stops the cluster and removes the dir.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};

/// The URL of a database on the server that test databases are created on.
pub(crate) async fn admin_url() -> Result<String> {
    static SERVER: OnceLock<Result<String, String>> = OnceLock::new();
    // Finding the server may mean starting a cluster, which blocks for a second or two; keep
    // that off the test's runtime. The error is kept as text so every test reports the same
    // cause instead of each one trying again.
    let found = tokio::task::spawn_blocking(|| {
        SERVER
            .get_or_init(|| locate().map_err(|error| format!("{error:#}")))
            .clone()
    })
    .await?;
    found.map_err(anyhow::Error::msg)
}

fn locate() -> Result<String> {
    match std::env::var("DATABASE_URL") {
        Ok(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => Ok(url),
        // Not echoed back: it may hold a password.
        Ok(_) => bail!("DATABASE_URL is set but is not a postgres:// URL"),
        Err(_) => start_private_cluster(),
    }
}

/// Creates an empty database and returns its name.
pub(crate) async fn create_database(admin_url: &str) -> Result<String> {
    let name = format!("sy_test_{}", uuid::Uuid::now_v7().simple());
    let admin = connect_admin(admin_url).await?;
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .with_context(|| format!("creating database {name}"))?;
    admin.close().await?;
    Ok(name)
}

/// Drops a database, best effort, waiting a little for it to happen.
///
/// Runs on its own thread and runtime because `Drop` cannot await and the test's runtime may
/// already be shutting down. `WITH (FORCE)` ends the test's own connections, which may still be
/// open in a pool that has not been dropped yet.
pub(crate) fn drop_database(admin_url: String, name: String) {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let drop = async {
            let admin = connect_admin(&admin_url).await?;
            admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await?;
            admin.close().await?;
            anyhow::Ok(())
        };
        if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            let _ = runtime.block_on(drop);
        }
        let _ = done.send(());
    });
    let _ = finished.recv_timeout(Duration::from_secs(10));
}

async fn connect_admin(url: &str) -> Result<DatabaseConnection> {
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(1)
        .connect_timeout(Duration::from_secs(10))
        .sqlx_logging(false);
    Database::connect(options)
        .await
        .context("connecting to the PostgreSQL server for tests")
}

/// `url` pointing at database `name` instead, keeping credentials, host and parameters.
pub(crate) fn with_database(url: &str, name: &str) -> Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority = base.find("://").context("database URL has no scheme")? + 3;
    let path = base[authority..]
        .find('/')
        .map_or(base.len(), |at| authority + at);
    let mut out = format!("{}/{name}", &base[..path]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    Ok(out)
}

/// Settings for a throwaway cluster: durability is pointless for data deleted at exit, and
/// skipping fsync makes `CREATE DATABASE` (once per test) several times faster.
const SERVER_OPTIONS: &str = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off \
                              -c max_connections=300";

/// Waits for this process to close its stdin (it never does so on purpose: the kernel does it
/// when the process ends), then stops the cluster and deletes its directory.
const WATCHDOG: &str = r#"cat >/dev/null; "$@" -D "$SY_PGDATA" -m immediate stop >/dev/null 2>&1; rm -rf "$SY_PGROOT""#;

fn start_private_cluster() -> Result<String> {
    let bin = bin_dir()?;
    let root = tempfile::Builder::new()
        .prefix("sy-postgres-")
        .tempdir()?
        .keep();
    let data = root.join("data");
    let socket_dir = root.join("socket");
    std::fs::create_dir(&socket_dir)?;
    let as_owner = Owner::detect()?;
    as_owner.chown(&root)?;
    as_owner.chown(&socket_dir)?;

    // Started before the cluster so that every way out of this function below is covered.
    let mut watchdog = Command::new("sh")
        .arg("-c")
        .arg(WATCHDOG)
        .arg("sh")
        .args(as_owner.command_prefix(&bin.join("pg_ctl")))
        .env("SY_PGDATA", &data)
        .env("SY_PGROOT", &root)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group, so a Ctrl-C or a test runner killing our group leaves it alive
        // long enough to clean up after us.
        .process_group(0)
        .spawn()
        .context("starting the cleanup watchdog for the PostgreSQL cluster")?;
    // Deliberately leaked: the write end must stay open exactly as long as this process lives.
    std::mem::forget(watchdog.stdin.take());

    as_owner.run(
        &root,
        &bin.join("initdb"),
        &[
            "-D".as_ref(),
            data.as_os_str(),
            "-U".as_ref(),
            "postgres".as_ref(),
            "--auth=trust".as_ref(),
            "--encoding=UTF8".as_ref(),
            "--locale=C".as_ref(),
            "--no-sync".as_ref(),
        ],
    )?;

    // PostgreSQL cannot pick its own port, so take a free one and retry if someone else takes
    // it before the server binds it.
    let log = root.join("postgres.log");
    let mut last_error = None;
    for _ in 0..5 {
        let port = crate::free_port()?;
        let options = format!(
            "-p {port} -h 127.0.0.1 -k {} {SERVER_OPTIONS}",
            socket_dir.display()
        );
        let started = as_owner.run(
            &root,
            &bin.join("pg_ctl"),
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-o".as_ref(),
                options.as_ref(),
                "-w".as_ref(),
                "-t".as_ref(),
                "60".as_ref(),
                "start".as_ref(),
            ],
        );
        match started {
            Ok(()) => return Ok(format!("postgres://postgres@127.0.0.1:{port}/postgres")),
            Err(error) => last_error = Some(error),
        }
    }
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    Err(last_error
        .unwrap_or_else(|| anyhow::anyhow!("no attempt made"))
        .context(format!("starting PostgreSQL; its log:\n{log}")))
}

/// The newest PostgreSQL under Debian's `/usr/lib/postgresql/<version>/bin`, else `initdb`'s
/// directory on `PATH`.
fn bin_dir() -> Result<PathBuf> {
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version)
        .map(|(_, bin)| bin);
    let on_path = || {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
    };
    newest.or_else(on_path).context(
        "PostgreSQL is not installed (no initdb found); run scripts/setup.sh, \
         or set DATABASE_URL to a server the tests may create databases on",
    )
}

/// Who runs the cluster. PostgreSQL refuses to run as root, so when we are root it runs as the
/// `postgres` user the distribution's package creates; otherwise as ourselves.
enum Owner {
    Myself,
    Postgres { uid: u32, gid: u32 },
}

impl Owner {
    fn detect() -> Result<Self> {
        if id(&["-u"])? != 0 {
            return Ok(Self::Myself);
        }
        let uid = id(&["-u", "postgres"]).context("running as root needs a `postgres` user")?;
        let gid = id(&["-g", "postgres"])?;
        Ok(Self::Postgres { uid, gid })
    }

    fn chown(&self, path: &Path) -> Result<()> {
        match self {
            Self::Myself => Ok(()),
            Self::Postgres { uid, gid } => {
                Ok(std::os::unix::fs::chown(path, Some(*uid), Some(*gid))?)
            }
        }
    }

    fn command_prefix(&self, program: &Path) -> Vec<OsString> {
        let mut prefix: Vec<OsString> = match self {
            Self::Myself => Vec::new(),
            Self::Postgres { .. } => ["runuser", "-u", "postgres", "--"]
                .map(OsString::from)
                .into(),
        };
        prefix.push(program.into());
        prefix
    }

    fn run(&self, cwd: &Path, program: &Path, args: &[&std::ffi::OsStr]) -> Result<()> {
        let prefix = self.command_prefix(program);
        let output = Command::new(&prefix[0])
            .args(&prefix[1..])
            .args(args)
            // The test's working directory may not be readable by the `postgres` user.
            .current_dir(cwd)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", program.display()))?;
        if !output.status.success() {
            bail!(
                "{} failed ({}):\n{}{}",
                program.display(),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }
}

fn id(args: &[&str]) -> Result<u32> {
    let output = Command::new("id").args(args).output()?;
    if !output.status.success() {
        bail!("`id {}` failed", args.join(" "));
    }
    Ok(String::from_utf8(output.stdout)?.trim().parse()?)
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn with_database_replaces_only_the_path() -> anyhow::Result<()> {
        assert_eq!(
            with_database("postgres://u:p@h:5432/postgres?sslmode=disable", "x")?,
            "postgres://u:p@h:5432/x?sslmode=disable"
        );
        assert_eq!(with_database("postgresql://h", "x")?, "postgresql://h/x");
        Ok(())
    }
}
