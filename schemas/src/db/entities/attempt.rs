//! `attempts`: one row per recorded attempt; unique per step instance and attempt number,
//! which is what makes recording an outcome exactly-once.

use sea_orm::entity::prelude::*;

use super::AttemptStatus;

/// A recorded attempt.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "attempts")]
pub struct Model {
    /// Id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// Owning workspace.
    pub workspace_id: Uuid,
    /// The run.
    pub run_id: Uuid,
    /// The step instance.
    pub step_instance_id: Uuid,
    /// Attempt number.
    pub attempt: i32,
    /// Worker that ran it.
    pub worker_id: String,
    /// How it ended.
    pub status: AttemptStatus,
    /// The error, when failed.
    pub error: Option<Json>,
    /// Execution started at.
    pub started_at: DateTimeUtc,
    /// Execution ended at.
    pub finished_at: DateTimeUtc,
}

/// An attempt belongs to a step instance.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// Its step instance.
    #[sea_orm(
        belongs_to = "super::step_instance::Entity",
        from = "Column::StepInstanceId",
        to = "super::step_instance::Column::Id",
        on_delete = "Cascade"
    )]
    StepInstance,
}

impl Related<super::step_instance::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::StepInstance.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
