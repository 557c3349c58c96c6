//! `runs`: one execution of a workflow version.

use sea_orm::entity::prelude::*;

use super::RunStatus;

/// A run.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "runs")]
pub struct Model {
    /// Id (UUID v7, so ids sort by creation time).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// Owning workspace.
    pub workspace_id: Uuid,
    /// Workflow name.
    pub workflow_name: String,
    /// The version the run is pinned to.
    pub workflow_version: i32,
    /// Where it stands.
    pub status: RunStatus,
    /// Inputs after defaults.
    pub input: Json,
    /// Rendered outputs, once succeeded.
    pub outputs: Option<Json>,
    /// `{code, message, step?}` once failed, cancelled or timed out.
    pub error: Option<Json>,
    /// Unique per workspace and workflow when set.
    pub idempotency_key: Option<String>,
    /// What started it.
    pub trigger: Json,
    /// Accepted at.
    pub created_at: DateTimeUtc,
    /// First step dispatched at.
    pub started_at: Option<DateTimeUtc>,
    /// Ended at.
    pub finished_at: Option<DateTimeUtc>,
    /// When the run-level timeout passes.
    pub deadline_at: Option<DateTimeUtc>,
    /// Last change.
    pub updated_at: DateTimeUtc,
    /// W3C `traceparent` of the span that started the run, parent of every step's dispatch
    /// span; `None` when tracing was off.
    pub traceparent: Option<String>,
}

/// A run has step instances.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// Its steps.
    #[sea_orm(has_many = "super::step_instance::Entity")]
    StepInstance,
}

impl Related<super::step_instance::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::StepInstance.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
