//! Custom tools: REST APIs a workspace registered as connectors without code.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use super::unique_index;

/// Creates `custom_tools`.
#[derive(Debug, DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum CustomTools {
    Table,
    Id,
    WorkspaceId,
    Name,
    Definition,
    CreatedAt,
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
                    .table(CustomTools::Table)
                    .if_not_exists()
                    .col(uuid(CustomTools::Id).primary_key())
                    .col(uuid(CustomTools::WorkspaceId))
                    .col(string(CustomTools::Name))
                    .col(json_binary(CustomTools::Definition))
                    .col(timestamp_with_time_zone(CustomTools::CreatedAt))
                    .col(timestamp_with_time_zone(CustomTools::UpdatedAt))
                    .col(string(CustomTools::UpdatedBy))
                    .to_owned(),
            )
            .await?;
        // One tool per name per workspace; two creators racing on a name: one gets in.
        manager
            .create_index(unique_index(
                "ux_custom_tools_name",
                CustomTools::Table,
                [CustomTools::WorkspaceId, CustomTools::Name],
            ))
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(CustomTools::Table).to_owned())
            .await
    }
}
