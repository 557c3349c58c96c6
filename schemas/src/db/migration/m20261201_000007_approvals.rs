//! Approval gates and workspace policies.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use super::{index, unique_index};

/// Creates `approvals` and `policies`.
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

#[derive(DeriveIden)]
enum Policies {
    Table,
    WorkspaceId,
    Document,
    UpdatedAt,
    UpdatedBy,
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
        manager
            .create_table(
                Table::create()
                    .table(Policies::Table)
                    .if_not_exists()
                    .col(uuid(Policies::WorkspaceId).primary_key())
                    .col(json_binary(Policies::Document))
                    .col(timestamp_with_time_zone(Policies::UpdatedAt))
                    .col(string(Policies::UpdatedBy))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [Policies::Table.into_iden(), Approvals::Table.into_iden()] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
