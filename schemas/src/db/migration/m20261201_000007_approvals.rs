//! Approval gates.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use super::{index, unique_index};

/// Creates `approvals`.
#[derive(Debug, DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Approvals {
    Table,
    Id,
    WorkspaceId,
    RunId,
    StepId,
    Status,
    Approvers,
    Input,
    Action,
    RequestedAt,
    DueAt,
    DecidedAt,
    DecidedBy,
    Comment,
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
                    .table(Approvals::Table)
                    .if_not_exists()
                    .col(uuid(Approvals::Id).primary_key())
                    .col(uuid(Approvals::WorkspaceId))
                    .col(uuid(Approvals::RunId))
                    .col(string(Approvals::StepId))
                    .col(string_len(Approvals::Status, 16))
                    .col(json_binary(Approvals::Approvers))
                    .col(json_binary_null(Approvals::Input))
                    .col(string(Approvals::Action))
                    .col(timestamp_with_time_zone(Approvals::RequestedAt))
                    .col(timestamp_with_time_zone_null(Approvals::DueAt))
                    .col(timestamp_with_time_zone_null(Approvals::DecidedAt))
                    .col(string_null(Approvals::DecidedBy))
                    .col(text_null(Approvals::Comment))
                    .to_owned(),
            )
            .await?;
        // One gate per step of a run.
        manager
            .create_index(unique_index(
                "ux_approvals_step",
                Approvals::Table,
                [Approvals::RunId, Approvals::StepId],
            ))
            .await?;
        manager
            .create_index(index(
                "ix_approvals_pending",
                Approvals::Table,
                [Approvals::WorkspaceId, Approvals::Status],
            ))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Approvals::Table).if_exists().to_owned())
            .await?;
        Ok(())
    }
}
