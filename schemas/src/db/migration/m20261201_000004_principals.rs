//! Principals (users, service accounts, agents) with their role, and their bearer tokens.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use super::{index, unique_index};

/// Creates `principals` and `api_tokens`.
#[derive(Debug, DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Principals {
    Table,
    Id,
    WorkspaceId,
    Name,
    Kind,
    Role,
    CreatedBy,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ApiTokens {
    Table,
    Id,
    WorkspaceId,
    PrincipalId,
    Name,
    Digest,
    Prefix,
    ExpiresAt,
    RevokedAt,
    CreatedAt,
    LastUsedAt,
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
                    .table(Principals::Table)
                    .if_not_exists()
                    .col(uuid(Principals::Id).primary_key())
                    .col(uuid(Principals::WorkspaceId))
                    .col(string(Principals::Name))
                    .col(string_len(Principals::Kind, 16))
                    .col(string_len(Principals::Role, 16))
                    .col(uuid_null(Principals::CreatedBy))
                    .col(timestamp_with_time_zone(Principals::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(unique_index(
                "ux_principals_name",
                Principals::Table,
                [Principals::WorkspaceId, Principals::Name],
            ))
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ApiTokens::Table)
                    .if_not_exists()
                    .col(uuid(ApiTokens::Id).primary_key())
                    .col(uuid(ApiTokens::WorkspaceId))
                    .col(uuid(ApiTokens::PrincipalId))
                    .col(string(ApiTokens::Name))
                    .col(string_len(ApiTokens::Digest, 64))
                    .col(string_len(ApiTokens::Prefix, 16))
                    .col(timestamp_with_time_zone_null(ApiTokens::ExpiresAt))
                    .col(timestamp_with_time_zone_null(ApiTokens::RevokedAt))
                    .col(timestamp_with_time_zone(ApiTokens::CreatedAt))
                    .col(timestamp_with_time_zone_null(ApiTokens::LastUsedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(unique_index(
                "ux_api_tokens_digest",
                ApiTokens::Table,
                [ApiTokens::Digest],
            ))
            .await?;
        manager
            .create_index(index(
                "ix_api_tokens_principal",
                ApiTokens::Table,
                [ApiTokens::WorkspaceId, ApiTokens::PrincipalId],
            ))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [ApiTokens::Table.into_iden(), Principals::Table.into_iden()] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
