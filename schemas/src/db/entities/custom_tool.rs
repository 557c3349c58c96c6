//! `custom_tools`: each workspace's custom tools (REST APIs registered as connectors), one
//! definition per name (see [`crate::tool::CustomTool`]). A definition holds no secrets.

use sea_orm::entity::prelude::*;

/// A custom tool.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "custom_tools")]
pub struct Model {
    /// Id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// Owning workspace.
    pub workspace_id: Uuid,
    /// The tool's name, unique per workspace (`tool.action` in workflows).
    pub name: String,
    /// The definition, as JSON.
    pub definition: Json,
    /// When it was created.
    pub created_at: DateTimeUtc,
    /// When it was last replaced.
    pub updated_at: DateTimeUtc,
    /// Who last wrote it (a principal's name).
    pub updated_by: String,
}

/// No relations are navigated.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
