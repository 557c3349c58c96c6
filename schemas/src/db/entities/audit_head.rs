//! `audit_heads`: the last record of each workspace's audit chain, locked by every append.

use sea_orm::entity::prelude::*;

/// A chain head.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_heads")]
pub struct Model {
    /// Workspace.
    #[sea_orm(primary_key, auto_increment = false)]
    pub workspace_id: Uuid,
    /// `seq` of the last record (0 before the first).
    pub seq: i64,
    /// Hash of the last record.
    pub hash: String,
}

/// No relations are navigated.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
