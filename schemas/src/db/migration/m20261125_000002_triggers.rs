//! What triggers need: stored secrets (encrypted; the credential vault reuses the table) and
//! each schedule trigger's last fire time.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use super::unique_index;

/// Creates `secrets` and `schedule_states`.
#[derive(Debug, DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Secrets {
    Table,
    Id,
    WorkspaceId,
    Name,
    KeyVersion,
    WrappedKey,
    Ciphertext,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ScheduleStates {
    Table,
    WorkspaceId,
    WorkflowName,
    TriggerKey,
    SettledUntil,
    LastFireAt,
    NextFireAt,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Secrets::Table)
                    .if_not_exists()
                    .col(uuid(Secrets::Id).primary_key())
                    .col(uuid(Secrets::WorkspaceId))
                    .col(string(Secrets::Name))
                    .col(integer(Secrets::KeyVersion))
                    .col(blob(Secrets::WrappedKey))
                    .col(blob(Secrets::Ciphertext))
                    .col(timestamp_with_time_zone(Secrets::CreatedAt))
                    .col(timestamp_with_time_zone(Secrets::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(unique_index(
                "ux_secrets_name",
                Secrets::Table,
                [Secrets::WorkspaceId, Secrets::Name],
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ScheduleStates::Table)
                    .if_not_exists()
                    .col(uuid(ScheduleStates::WorkspaceId))
                    .col(string(ScheduleStates::WorkflowName))
                    .col(string(ScheduleStates::TriggerKey))
                    .col(timestamp_with_time_zone(ScheduleStates::SettledUntil))
                    .col(timestamp_with_time_zone_null(ScheduleStates::LastFireAt))
                    .col(timestamp_with_time_zone_null(ScheduleStates::NextFireAt))
                    .col(timestamp_with_time_zone(ScheduleStates::UpdatedAt))
                    .primary_key(
                        Index::create()
                            .col(ScheduleStates::WorkspaceId)
                            .col(ScheduleStates::WorkflowName)
                            .col(ScheduleStates::TriggerKey),
                    )
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            ScheduleStates::Table.into_iden(),
            Secrets::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
