//! `workspaces`: the unit of isolation; every other row belongs to one.

use sea_orm::entity::prelude::*;

/// A workspace.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "workspaces")]
pub struct Model {
    /// Id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// Unique name.
    #[sea_orm(unique)]
    pub name: String,
    /// Creation time.
    pub created_at: DateTimeUtc,
}

/// No relations are navigated from a workspace.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
