//! OAuth 2.0: pending authorization-code flows. Connection statuses `pending` and
//! `needs_reauth` need no schema change (the status column is a string).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use super::index;

/// Creates `oauth_states`.
#[derive(Debug, DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum OauthStates {
    Table,
    StateDigest,
    WorkspaceId,
    ConnectionId,
    StartedBy,
    RedirectUri,
    KeyVersion,
    WrappedKey,
    Ciphertext,
    CreatedAt,
    ExpiresAt,
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
                    .table(OauthStates::Table)
                    .if_not_exists()
                    .col(string_len(OauthStates::StateDigest, 64).primary_key())
                    .col(uuid(OauthStates::WorkspaceId))
                    .col(uuid(OauthStates::ConnectionId))
                    .col(string(OauthStates::StartedBy))
                    .col(text(OauthStates::RedirectUri))
                    .col(integer(OauthStates::KeyVersion))
                    .col(blob(OauthStates::WrappedKey))
                    .col(blob(OauthStates::Ciphertext))
                    .col(timestamp_with_time_zone(OauthStates::CreatedAt))
                    .col(timestamp_with_time_zone(OauthStates::ExpiresAt))
                    .to_owned(),
            )
            .await?;
        // Expired states are swept by age.
        manager
            .create_index(index(
                "ix_oauth_states_expires",
                OauthStates::Table,
                [OauthStates::ExpiresAt],
            ))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(OauthStates::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}
