//! `secrets`: named secrets stored encrypted (envelope encryption; the engine's vault seals and
//! opens them). Plaintext is never stored and never returned by any API.

use sea_orm::entity::prelude::*;

/// A stored secret.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "secrets")]
pub struct Model {
    /// Id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// Owning workspace.
    pub workspace_id: Uuid,
    /// Name, unique per workspace; definitions refer to it.
    pub name: String,
    /// Version of the key-encryption key that wraps `wrapped_key`.
    pub key_version: i32,
    /// The secret's data key, encrypted under the key-encryption key.
    pub wrapped_key: Vec<u8>,
    /// The secret, encrypted under its data key.
    pub ciphertext: Vec<u8>,
    /// Created at.
    pub created_at: DateTimeUtc,
    /// Last replaced at.
    pub updated_at: DateTimeUtc,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
