//! Connection settings: a base URL replacing the connector's default (tests, self-hosted
//! editions, a Salesforce or Jira site) and a request budget replacing the manifest's.

use sea_orm_migration::prelude::*;

/// Adds `connections.base_url` and `connections.rate_limit`.
#[derive(Debug, DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Connections {
    Table,
    BaseUrl,
    RateLimit,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one thing at a time.
        manager
            .alter_table(
                Table::alter()
                    .table(Connections::Table)
                    .add_column(ColumnDef::new(Connections::BaseUrl).text().null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Connections::Table)
                    .add_column(ColumnDef::new(Connections::RateLimit).json().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [Connections::RateLimit, Connections::BaseUrl] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Connections::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
