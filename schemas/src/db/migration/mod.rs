//! Schema migrations, run by the engine at start-up on SQLite and PostgreSQL alike.
//!
//! Every migration is written with the schema builder, so one definition serves both databases,
//! and runs in a transaction on both, so a crash part-way leaves no half-made schema behind and
//! several engine copies starting together migrate once (see [`Migrator`]).

use sea_orm::{
    ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, SqliteTransactionMode, Statement,
    TransactionOptions, TransactionTrait,
};
use sea_orm_migration::prelude::*;

mod m20261125_000001_initial;
mod m20261125_000002_triggers;
mod m20261125_000003_connections;
mod m20261201_000004_principals;
mod m20261201_000005_audit;
mod m20261201_000006_oauth;
mod m20261201_000007_approvals;
mod m20261202_000008_connection_settings;
mod m20261202_000010_trace_context;

/// Key of the PostgreSQL advisory lock that serializes migrations between engine copies
/// (the bytes of `"swyd.mig"`; any fixed value other software on the server does not use).
const MIGRATION_LOCK_KEY: i64 = i64::from_be_bytes(*b"swyd.mig");

/// Every migration, in order.
///
/// Several engine copies may start at once against a fresh database. Left alone they race:
/// each sees the same migrations pending, and the losers fail, on PostgreSQL creating a table
/// the winner is creating, on either database recording a migration the winner recorded. So
/// [`Migrator::up`] and [`Migrator::down`] first take the database's write lock for migrations
/// (an advisory lock on PostgreSQL, `BEGIN IMMEDIATE` on SQLite), then apply every pending
/// migration inside that one transaction: a copy that loses the race waits, then finds nothing
/// left to do. A future migration that cannot run inside a transaction (such as
/// `CREATE INDEX CONCURRENTLY`) would need this revisited.
///
/// ```no_run
/// # async fn example(db: &sea_orm::DatabaseConnection) -> Result<(), sea_orm::DbErr> {
/// use sea_orm_migration::MigratorTrait;
///
/// schemas::db::migration::Migrator::up(db, None).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Migrator;

/// The same migrations without the lock: what [`Migrator`] runs once it holds it.
struct Unlocked;

fn migrations() -> Vec<Box<dyn MigrationTrait>> {
    vec![
        Box::new(m20261125_000001_initial::Migration),
        Box::new(m20261125_000002_triggers::Migration),
        Box::new(m20261125_000003_connections::Migration),
        Box::new(m20261201_000004_principals::Migration),
        Box::new(m20261201_000005_audit::Migration),
        Box::new(m20261201_000006_oauth::Migration),
        Box::new(m20261201_000007_approvals::Migration),
        Box::new(m20261202_000008_connection_settings::Migration),
        Box::new(m20261202_000010_trace_context::Migration),
    ]
}

#[async_trait::async_trait]
impl MigratorTrait for Unlocked {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        migrations()
    }
}

/// Begins a transaction that holds the migration lock until it ends, however it ends.
async fn locked(db: &SchemaManagerConnection<'_>) -> Result<DatabaseTransaction, DbErr> {
    if db.get_database_backend() == DbBackend::Sqlite {
        // A deferred transaction would read the applied migrations, then fail to upgrade to a
        // writer if another copy got there first; IMMEDIATE waits (up to the busy timeout)
        // for the write lock before reading anything.
        let options = TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..TransactionOptions::default()
        };
        return db.begin_with_options(options).await;
    }
    let transaction = db.begin().await?;
    if db.get_database_backend() == DbBackend::Postgres {
        transaction
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_advisory_xact_lock($1)",
                [MIGRATION_LOCK_KEY.into()],
            ))
            .await?;
    }
    Ok(transaction)
}

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        migrations()
    }

    async fn up<'c, C>(db: C, steps: Option<u32>) -> Result<(), DbErr>
    where
        C: IntoSchemaManagerConnection<'c>,
    {
        let transaction = locked(&db.into_database_executor()).await?;
        Unlocked::up(&transaction, steps).await?;
        transaction.commit().await
    }

    async fn down<'c, C>(db: C, steps: Option<u32>) -> Result<(), DbErr>
    where
        C: IntoSchemaManagerConnection<'c>,
    {
        let transaction = locked(&db.into_database_executor()).await?;
        Unlocked::down(&transaction, steps).await?;
        transaction.commit().await
    }
}

/// An index on `cols` of `table`, created only if missing.
fn index<T, C>(name: &str, table: T, cols: impl IntoIterator<Item = C>) -> IndexCreateStatement
where
    T: IntoTableRef,
    C: IntoIndexColumn,
{
    let mut index = Index::create();
    index.name(name).table(table).if_not_exists();
    for col in cols {
        index.col(col);
    }
    index
}

/// A unique index on `cols` of `table`, created only if missing.
fn unique_index<T, C>(
    name: &str,
    table: T,
    cols: impl IntoIterator<Item = C>,
) -> IndexCreateStatement
where
    T: IntoTableRef,
    C: IntoIndexColumn,
{
    let mut index = index(name, table, cols);
    index.unique();
    index
}
