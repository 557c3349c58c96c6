//! `events`: every event emitted, keyed by its id for deduplication.

use sea_orm::entity::prelude::*;

/// An event.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "events")]
pub struct Model {
    /// Event id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Owning workspace.
    pub workspace_id: Uuid,
    /// Event name.
    pub name: String,
    /// Payload.
    pub data: Json,
    /// Provenance (which run and step, or which API caller).
    pub source: Json,
    /// Chain depth.
    pub depth: i32,
    /// Emitted at.
    pub created_at: DateTimeUtc,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
