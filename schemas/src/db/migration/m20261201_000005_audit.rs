//! The audit ledger: hash-chained records per workspace and the head of each chain.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use super::index;

/// Creates `audit_records` and `audit_heads`.
#[derive(Debug, DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AuditRecords {
    Table,
    Id,
    WorkspaceId,
    Seq,
    At,
    Kind,
    Principal,
    Via,
    RunId,
    StepId,
    ItemIndex,
    Attempt,
    Connector,
    Action,
    ConnectionId,
    Outcome,
    ErrorCode,
    HttpStatus,
    DurationMs,
    RetryDelayMs,
    Bytes,
    Input,
    Output,
    Details,
    PrevHash,
    Hash,
}

#[derive(DeriveIden)]
enum AuditHeads {
    Table,
    WorkspaceId,
    Seq,
    Hash,
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
                    .table(AuditRecords::Table)
                    .if_not_exists()
                    .col(uuid(AuditRecords::WorkspaceId))
                    .col(big_integer(AuditRecords::Seq))
                    .col(uuid(AuditRecords::Id))
                    .col(timestamp_with_time_zone(AuditRecords::At))
                    .col(string_len(AuditRecords::Kind, 64))
                    .col(string(AuditRecords::Principal))
                    .col(string_len(AuditRecords::Via, 16))
                    .col(uuid_null(AuditRecords::RunId))
                    .col(string_null(AuditRecords::StepId))
                    .col(integer_null(AuditRecords::ItemIndex))
                    .col(integer_null(AuditRecords::Attempt))
                    .col(string_null(AuditRecords::Connector))
                    .col(string_null(AuditRecords::Action))
                    .col(uuid_null(AuditRecords::ConnectionId))
                    .col(string_len(AuditRecords::Outcome, 16))
                    .col(string_len_null(AuditRecords::ErrorCode, 64))
                    .col(integer_null(AuditRecords::HttpStatus))
                    .col(big_integer_null(AuditRecords::DurationMs))
                    .col(big_integer_null(AuditRecords::RetryDelayMs))
                    .col(big_integer_null(AuditRecords::Bytes))
                    // `json`, not `jsonb`: the ledger is written once per call and read rarely,
                    // and `json` costs PostgreSQL no parsing into its binary form.
                    .col(json_null(AuditRecords::Input))
                    .col(json_null(AuditRecords::Output))
                    .col(json_null(AuditRecords::Details))
                    .col(string_len(AuditRecords::PrevHash, 64))
                    .col(string_len(AuditRecords::Hash, 64))
                    // The chain position is the key: one index fewer to maintain per call
                    // than a separate id key.
                    .primary_key(
                        Index::create()
                            .col(AuditRecords::WorkspaceId)
                            .col(AuditRecords::Seq),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "ix_audit_records_run",
                AuditRecords::Table,
                [AuditRecords::WorkspaceId, AuditRecords::RunId],
            ))
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuditHeads::Table)
                    .if_not_exists()
                    .col(uuid(AuditHeads::WorkspaceId).primary_key())
                    .col(big_integer(AuditHeads::Seq))
                    .col(string_len(AuditHeads::Hash, 64))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            AuditHeads::Table.into_iden(),
            AuditRecords::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
