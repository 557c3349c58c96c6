//! `oauth_states`: one pending authorization-code flow (`GET /v1/oauth/{connection}/start`
//! until the provider sends the browser back to `/v1/oauth/callback`). The row is keyed by
//! the SHA-256 of the `state` parameter, so the database never holds a usable state; the
//! PKCE verifier is sealed by the vault (`kind` `oauth_state`, bound to workspace and digest).
//! A callback deletes the row it uses: each state works once, and only until `expires_at`.

use sea_orm::entity::prelude::*;

/// A pending authorization.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "oauth_states")]
pub struct Model {
    /// Hex SHA-256 of the `state` sent to the provider.
    #[sea_orm(primary_key, auto_increment = false)]
    pub state_digest: String,
    /// Workspace of the connection.
    pub workspace_id: Uuid,
    /// The connection being authorized.
    pub connection_id: Uuid,
    /// Name of the principal that started the flow, for the audit record of its end.
    pub started_by: String,
    /// The `redirect_uri` sent to the authorize endpoint; the code exchange repeats it.
    pub redirect_uri: String,
    /// Version of the master key wrapping the verifier's data key.
    pub key_version: i32,
    /// The sealed verifier's data key.
    pub wrapped_key: Vec<u8>,
    /// The sealed PKCE `code_verifier`.
    pub ciphertext: Vec<u8>,
    /// Created at.
    pub created_at: DateTimeUtc,
    /// After this the state is refused.
    pub expires_at: DateTimeUtc,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
