//! A fresh, empty database per test, on SQLite or PostgreSQL.
//!
//! SQLite databases are files in a temp dir. PostgreSQL databases are `sy_test_<uuid>` on the
//! server named by `DATABASE_URL`, or on a private cluster this process starts when it is unset;
//! either way each test gets its own database, dropped when the [`TestDatabase`] is.

use std::fmt;
use std::future::Future;

use anyhow::{Context, Result};
use sea_orm::{ConnectOptions, Database, DatabaseConnection};
use tempfile::TempDir;

use crate::postgres;

/// The SQL stores the project supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file, as `switchyard dev` uses.
    Sqlite,
    /// A PostgreSQL server, as production uses.
    Postgres,
}

impl Backend {
    /// Every backend, in the order [`for_each_backend`] runs them.
    pub const ALL: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        })
    }
}

/// An empty database of its own for one test, removed on drop.
///
/// ```no_run
/// # async fn example() -> anyhow::Result<()> {
/// let db = switchyard_tests::TestDatabase::sqlite().await?;
/// let conn = db.connect().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    place: Place,
}

#[derive(Debug)]
enum Place {
    Sqlite { _dir: TempDir },
    Postgres { admin_url: String, name: String },
}

impl TestDatabase {
    /// A fresh database on `backend`.
    pub async fn new(backend: Backend) -> Result<Self> {
        crate::init();
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::Builder::new().prefix("sy-sqlite-").tempdir()?;
                let path = dir.path().join("switchyard.db");
                Ok(Self {
                    url: format!("sqlite://{}?mode=rwc", path.display()),
                    place: Place::Sqlite { _dir: dir },
                })
            }
            Backend::Postgres => {
                let admin_url = postgres::admin_url().await?;
                let name = postgres::create_database(&admin_url).await?;
                Ok(Self {
                    url: postgres::with_database(&admin_url, &name)?,
                    place: Place::Postgres { admin_url, name },
                })
            }
        }
    }

    /// A fresh SQLite database file.
    pub async fn sqlite() -> Result<Self> {
        Self::new(Backend::Sqlite).await
    }

    /// A fresh PostgreSQL database.
    pub async fn postgres() -> Result<Self> {
        Self::new(Backend::Postgres).await
    }

    /// Which backend this database is on.
    pub fn backend(&self) -> Backend {
        match self.place {
            Place::Sqlite { .. } => Backend::Sqlite,
            Place::Postgres { .. } => Backend::Postgres,
        }
    }

    /// A URL for this database, as the engine and workers take it in their configuration.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A new connection pool on this database.
    pub async fn connect(&self) -> Result<DatabaseConnection> {
        let mut options = ConnectOptions::new(self.url.as_str());
        options.sqlx_logging(false);
        Database::connect(options)
            .await
            .with_context(|| format!("connecting to the {} test database", self.backend()))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Place::Postgres { admin_url, name } = &self.place {
            postgres::drop_database(admin_url.clone(), name.clone());
        }
    }
}

/// Runs `test` once per [`Backend`], each time on a fresh database, naming the backend in the
/// error if it fails.
///
/// ```no_run
/// # async fn example() -> anyhow::Result<()> {
/// switchyard_tests::for_each_backend(|db| async move {
///     let conn = db.connect().await?;
///     // ... the same assertions on SQLite and on PostgreSQL
///     Ok(())
/// })
/// .await
/// # }
/// ```
pub async fn for_each_backend<F, Fut>(mut test: F) -> Result<()>
where
    F: FnMut(TestDatabase) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    for backend in Backend::ALL {
        let db = TestDatabase::new(backend).await?;
        test(db).await.with_context(|| format!("on {backend}"))?;
    }
    Ok(())
}
