//! The initial schema. Written with the schema builder, not raw SQL, so one definition serves
//! SQLite and PostgreSQL.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use super::{index, unique_index};
use crate::db::DEFAULT_WORKSPACE_ID;

/// Creates every table of the first release and the `default` workspace.
#[derive(Debug, DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Workspaces {
    Table,
    Id,
    Name,
    CreatedAt,
}

#[derive(DeriveIden)]
enum WorkflowVersions {
    Table,
    Id,
    WorkspaceId,
    Name,
    Version,
    Definition,
    Source,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Runs {
    Table,
    Id,
    WorkspaceId,
    WorkflowName,
    WorkflowVersion,
    Status,
    Input,
    Outputs,
    Error,
    IdempotencyKey,
    Trigger,
    CreatedAt,
    StartedAt,
    FinishedAt,
    DeadlineAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum StepInstances {
    Table,
    Id,
    WorkspaceId,
    RunId,
    StepId,
    ItemIndex,
    Status,
    Attempt,
    Input,
    Output,
    Error,
    ItemsTotal,
    DispatchedAt,
    StartedAt,
    FinishedAt,
    DueAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Attempts {
    Table,
    Id,
    WorkspaceId,
    RunId,
    StepInstanceId,
    Attempt,
    WorkerId,
    Status,
    Error,
    StartedAt,
    FinishedAt,
}

#[derive(DeriveIden)]
enum Outbox {
    Table,
    Id,
    Subject,
    MsgId,
    Payload,
    Headers,
    CreatedAt,
    SentAt,
}

#[derive(DeriveIden)]
enum Events {
    Table,
    Id,
    WorkspaceId,
    Name,
    Data,
    Source,
    Depth,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    // PostgreSQL gets a transaction by default; SQLite's DDL is transactional too, so ask for
    // one there as well: the tables, the default workspace and the record that the migration
    // ran then commit together, and a crash part-way leaves nothing behind to trip over.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Workspaces::Table)
                    .if_not_exists()
                    .col(uuid(Workspaces::Id).primary_key())
                    .col(string(Workspaces::Name).unique_key())
                    .col(timestamp_with_time_zone(Workspaces::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .exec_stmt(
                Query::insert()
                    .into_table(Workspaces::Table)
                    .columns([Workspaces::Id, Workspaces::Name, Workspaces::CreatedAt])
                    .values_panic([
                        DEFAULT_WORKSPACE_ID.into(),
                        "default".into(),
                        chrono::Utc::now().into(),
                    ])
                    .on_conflict(OnConflict::column(Workspaces::Id).do_nothing().to_owned())
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(WorkflowVersions::Table)
                    .if_not_exists()
                    .col(uuid(WorkflowVersions::Id).primary_key())
                    .col(uuid(WorkflowVersions::WorkspaceId))
                    .col(string(WorkflowVersions::Name))
                    .col(integer(WorkflowVersions::Version))
                    .col(json_binary(WorkflowVersions::Definition))
                    .col(text(WorkflowVersions::Source))
                    .col(timestamp_with_time_zone(WorkflowVersions::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(unique_index(
                "ux_workflow_versions_name_version",
                WorkflowVersions::Table,
                [
                    WorkflowVersions::WorkspaceId,
                    WorkflowVersions::Name,
                    WorkflowVersions::Version,
                ],
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Runs::Table)
                    .if_not_exists()
                    .col(uuid(Runs::Id).primary_key())
                    .col(uuid(Runs::WorkspaceId))
                    .col(string(Runs::WorkflowName))
                    .col(integer(Runs::WorkflowVersion))
                    .col(string_len(Runs::Status, 16))
                    .col(json_binary(Runs::Input))
                    .col(json_binary_null(Runs::Outputs))
                    .col(json_binary_null(Runs::Error))
                    .col(string_null(Runs::IdempotencyKey))
                    .col(json_binary(Runs::Trigger))
                    .col(timestamp_with_time_zone(Runs::CreatedAt))
                    .col(timestamp_with_time_zone_null(Runs::StartedAt))
                    .col(timestamp_with_time_zone_null(Runs::FinishedAt))
                    .col(timestamp_with_time_zone_null(Runs::DeadlineAt))
                    .col(timestamp_with_time_zone(Runs::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        // NULL keys never collide (both databases treat NULLs as distinct in unique indexes).
        manager
            .create_index(unique_index(
                "ux_runs_idempotency",
                Runs::Table,
                [Runs::WorkspaceId, Runs::WorkflowName, Runs::IdempotencyKey],
            ))
            .await?;
        manager
            .create_index(index(
                "ix_runs_status",
                Runs::Table,
                [Runs::WorkspaceId, Runs::Status, Runs::CreatedAt],
            ))
            .await?;
        manager
            .create_index(index(
                "ix_runs_workflow",
                Runs::Table,
                [Runs::WorkspaceId, Runs::WorkflowName, Runs::CreatedAt],
            ))
            .await?;
        manager
            .create_index(index(
                "ix_runs_deadline",
                Runs::Table,
                [Runs::Status, Runs::DeadlineAt],
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(StepInstances::Table)
                    .if_not_exists()
                    .col(uuid(StepInstances::Id).primary_key())
                    .col(uuid(StepInstances::WorkspaceId))
                    .col(uuid(StepInstances::RunId))
                    .col(string(StepInstances::StepId))
                    .col(integer(StepInstances::ItemIndex))
                    .col(string_len(StepInstances::Status, 16))
                    .col(integer(StepInstances::Attempt))
                    .col(json_binary_null(StepInstances::Input))
                    .col(json_binary_null(StepInstances::Output))
                    .col(json_binary_null(StepInstances::Error))
                    .col(integer_null(StepInstances::ItemsTotal))
                    .col(timestamp_with_time_zone_null(StepInstances::DispatchedAt))
                    .col(timestamp_with_time_zone_null(StepInstances::StartedAt))
                    .col(timestamp_with_time_zone_null(StepInstances::FinishedAt))
                    .col(timestamp_with_time_zone_null(StepInstances::DueAt))
                    .col(timestamp_with_time_zone(StepInstances::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_step_instances_run")
                            .from(StepInstances::Table, StepInstances::RunId)
                            .to(Runs::Table, Runs::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(unique_index(
                "ux_step_instances_key",
                StepInstances::Table,
                [
                    StepInstances::RunId,
                    StepInstances::StepId,
                    StepInstances::ItemIndex,
                ],
            ))
            .await?;
        manager
            .create_index(index(
                "ix_step_instances_due",
                StepInstances::Table,
                [StepInstances::Status, StepInstances::DueAt],
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Attempts::Table)
                    .if_not_exists()
                    .col(uuid(Attempts::Id).primary_key())
                    .col(uuid(Attempts::WorkspaceId))
                    .col(uuid(Attempts::RunId))
                    .col(uuid(Attempts::StepInstanceId))
                    .col(integer(Attempts::Attempt))
                    .col(string(Attempts::WorkerId))
                    .col(string_len(Attempts::Status, 16))
                    .col(json_binary_null(Attempts::Error))
                    .col(timestamp_with_time_zone(Attempts::StartedAt))
                    .col(timestamp_with_time_zone(Attempts::FinishedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_attempts_step_instance")
                            .from(Attempts::Table, Attempts::StepInstanceId)
                            .to(StepInstances::Table, StepInstances::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(unique_index(
                "ux_attempts_step_attempt",
                Attempts::Table,
                [Attempts::StepInstanceId, Attempts::Attempt],
            ))
            .await?;
        manager
            .create_index(index("ix_attempts_run", Attempts::Table, [Attempts::RunId]))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Outbox::Table)
                    .if_not_exists()
                    .col(big_integer(Outbox::Id).primary_key().auto_increment())
                    .col(string(Outbox::Subject))
                    .col(string(Outbox::MsgId).unique_key())
                    .col(text(Outbox::Payload))
                    .col(json_binary(Outbox::Headers))
                    .col(timestamp_with_time_zone(Outbox::CreatedAt))
                    .col(timestamp_with_time_zone_null(Outbox::SentAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "ix_outbox_unsent",
                Outbox::Table,
                [Outbox::SentAt, Outbox::Id],
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Events::Table)
                    .if_not_exists()
                    .col(string(Events::Id).primary_key())
                    .col(uuid(Events::WorkspaceId))
                    .col(string(Events::Name))
                    .col(json_binary(Events::Data))
                    .col(json_binary(Events::Source))
                    .col(integer(Events::Depth))
                    .col(timestamp_with_time_zone(Events::CreatedAt))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Events::Table.into_iden(),
            Outbox::Table.into_iden(),
            Attempts::Table.into_iden(),
            StepInstances::Table.into_iden(),
            Runs::Table.into_iden(),
            WorkflowVersions::Table.into_iden(),
            Workspaces::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
