//! `workflow_versions`: immutable versions of each workflow definition.

use sea_orm::entity::prelude::*;

/// One version of one workflow.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "workflow_versions")]
pub struct Model {
    /// Id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// Owning workspace.
    pub workspace_id: Uuid,
    /// Workflow name.
    pub name: String,
    /// 1, 2, …; unique with the workspace and name.
    pub version: i32,
    /// The validated definition, normalized.
    pub definition: Json,
    /// The text as submitted.
    pub source: String,
    /// When this version was stored.
    pub created_at: DateTimeUtc,
}

/// No relations are navigated from a version.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
