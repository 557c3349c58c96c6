//! Schema migrations, run by the engine at start-up on SQLite and PostgreSQL alike.

use sea_orm_migration::prelude::*;

mod m20261125_000001_initial;

/// Every migration, in order.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(m20261125_000001_initial::Migration)]
    }
}
