//! Connections: a workspace's accounts on external systems, their credentials sealed.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use super::unique_index;

/// Creates `connections`.
#[derive(Debug, DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Connections {
    Table,
    Id,
    WorkspaceId,
    Name,
    Connector,
    AuthType,
    Status,
    Scopes,
    Config,
    KeyVersion,
    WrappedKey,
    Ciphertext,
    CreatedAt,
    UpdatedAt,
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
                    .table(Connections::Table)
                    .if_not_exists()
                    .col(uuid(Connections::Id).primary_key())
                    .col(uuid(Connections::WorkspaceId))
                    .col(string(Connections::Name))
                    .col(string(Connections::Connector))
                    .col(string_len(Connections::AuthType, 32))
                    .col(string_len(Connections::Status, 16))
                    .col(json_binary(Connections::Scopes))
                    .col(json_binary(Connections::Config))
                    .col(integer_null(Connections::KeyVersion))
                    .col(blob_null(Connections::WrappedKey))
                    .col(blob_null(Connections::Ciphertext))
                    .col(timestamp_with_time_zone(Connections::CreatedAt))
                    .col(timestamp_with_time_zone(Connections::UpdatedAt))
                    .col(timestamp_with_time_zone_null(Connections::LastUsedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(unique_index(
                "ux_connections_name",
                Connections::Table,
                [Connections::WorkspaceId, Connections::Name],
            ))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(Connections::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}
