//! Trace context of runs: the W3C `traceparent` of the span that started a run, so every
//! step message of the run, whichever engine copy publishes it and however late (a retry, a
//! republish after a crash), continues the run's one trace.

use sea_orm_migration::prelude::*;

/// Adds `runs.traceparent`.
#[derive(Debug, DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Runs {
    Table,
    Traceparent,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Null for runs started with tracing off, and for runs started before this column.
        manager
            .alter_table(
                Table::alter()
                    .table(Runs::Table)
                    .add_column(ColumnDef::new(Runs::Traceparent).text().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Runs::Table)
                    .drop_column(Runs::Traceparent)
                    .to_owned(),
            )
            .await
    }
}
