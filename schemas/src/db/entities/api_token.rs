//! `api_tokens`: bearer tokens of principals. Only a SHA-256 digest of each token is stored
//! (tokens are 256 random bits, so a fast digest is enough); the token itself is shown once,
//! when it is created.

use sea_orm::entity::prelude::*;

/// A token.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "api_tokens")]
pub struct Model {
    /// Id; tokens are listed and revoked by it.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The workspace of its principal (kept here so every lookup is scoped without a join).
    pub workspace_id: Uuid,
    /// Whose token it is.
    pub principal_id: Uuid,
    /// A label for people (`laptop`, `ci`).
    pub name: String,
    /// Hex SHA-256 of the whole token; unique.
    pub digest: String,
    /// The token's first characters (`sy_ab12cd`), to tell tokens apart in listings.
    pub prefix: String,
    /// After this the token is refused; `None`: never expires.
    pub expires_at: Option<DateTimeUtc>,
    /// Set when revoked; a revoked token is refused at once.
    pub revoked_at: Option<DateTimeUtc>,
    /// Created at.
    pub created_at: DateTimeUtc,
    /// Last time it authenticated a request (updated at most once a minute).
    pub last_used_at: Option<DateTimeUtc>,
}

/// No relations are navigated.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
