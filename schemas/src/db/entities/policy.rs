//! `policies`: each workspace's governance policy, one JSON document per workspace (see the
//! engine's `policy` module for its shape). A workspace without a row allows every connector
//! and action.

use sea_orm::entity::prelude::*;

/// A workspace's policy.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "policies")]
pub struct Model {
    /// The workspace.
    #[sea_orm(primary_key, auto_increment = false)]
    pub workspace_id: Uuid,
    /// The policy document.
    pub document: Json,
    /// Last change.
    pub updated_at: DateTimeUtc,
    /// Who made it (a principal's name).
    pub updated_by: String,
}

/// No relations are navigated.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
