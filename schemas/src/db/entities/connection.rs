//! `connections`: a workspace's account on an external system. The credentials are sealed by
//! the vault (`kind` `connection`, bound to workspace and connection id); the rest is clear.

use sea_orm::entity::prelude::*;

/// A connection.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "connections")]
pub struct Model {
    /// Id; step messages name connections by it.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// Owning workspace.
    pub workspace_id: Uuid,
    /// Name, unique per workspace; definitions refer to it.
    pub name: String,
    /// Connector, e.g. `http`.
    pub connector: String,
    /// `api_key`, `bearer`, `basic`, `headers`, `oauth2_client`, `oauth2_code` or
    /// `service_account`.
    pub auth_type: String,
    /// `pending`, `active`, `needs_reauth` or `revoked`.
    pub status: ConnectionStatus,
    /// Scopes granted, a JSON array of strings.
    pub scopes: Json,
    /// The clear part of the auth (where a key goes, header names, OAuth endpoints, client id,
    /// scopes and the access token's `expires_at`); never a secret.
    pub config: Json,
    /// Version of the master key wrapping the data key; `None` once revoked.
    pub key_version: Option<i32>,
    /// The sealed credentials' data key; `None` once revoked.
    pub wrapped_key: Option<Vec<u8>>,
    /// The sealed credentials; `None` once revoked.
    pub ciphertext: Option<Vec<u8>>,
    /// Created at.
    pub created_at: DateTimeUtc,
    /// Last change (credentials rotated, revoked).
    pub updated_at: DateTimeUtc,
    /// Last time a worker used it.
    pub last_used_at: Option<DateTimeUtc>,
    /// Base URL replacing the connector's default (a self-hosted edition, a Salesforce or
    /// Jira site, a test fake); `None` for the default.
    pub base_url: Option<String>,
    /// Request budget replacing the connector's default, `{requests, per_seconds, burst}`;
    /// `None` for the default.
    pub rate_limit: Option<Json>,
}

/// Where a connection stands.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    EnumIter,
    DeriveActiveEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "snake_case")]
pub enum ConnectionStatus {
    /// Created with `oauth2_code` and not yet authorized by a person; steps using it fail
    /// `needs_reauth`.
    #[sea_orm(string_value = "pending")]
    Pending,
    /// Usable.
    #[sea_orm(string_value = "active")]
    Active,
    /// Disconnected: its credentials are erased and steps using it fail `connection_revoked`.
    #[sea_orm(string_value = "revoked")]
    Revoked,
    /// The provider refused its refresh token (`invalid_grant`): a person must authorize it
    /// again; steps using it fail `needs_reauth` without calling the provider.
    #[sea_orm(string_value = "needs_reauth")]
    NeedsReauth,
    /// Its credentials could not be opened when it was last tested (a master key version
    /// missing, a damaged row); steps using it fail until new credentials are stored.
    #[sea_orm(string_value = "error")]
    Error,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
