//! `step_instances`: one row per step of a run, plus one per `for_each` item.

use sea_orm::entity::prelude::*;

use super::StepStatus;

/// `item_index` of a step that is not fanned out, and of the parent row of a `for_each` step.
pub const NO_ITEM: i32 = -1;

/// A step instance.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "step_instances")]
pub struct Model {
    /// Id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// Owning workspace.
    pub workspace_id: Uuid,
    /// The run.
    pub run_id: Uuid,
    /// Step id from the definition.
    pub step_id: String,
    /// [`NO_ITEM`], or the index of a `for_each` item.
    pub item_index: i32,
    /// Where it stands.
    pub status: StepStatus,
    /// Current attempt number (0 before the first dispatch).
    pub attempt: i32,
    /// Rendered inputs of the current attempt; for a `for_each` parent, the list of items.
    pub input: Option<Json>,
    /// Output once succeeded.
    pub output: Option<Json>,
    /// Last error (`{code, message, retry_after_ms?}`).
    pub error: Option<Json>,
    /// For a `for_each` parent: how many items.
    pub items_total: Option<i32>,
    /// Current attempt dispatched at.
    pub dispatched_at: Option<DateTimeUtc>,
    /// Execution started at (as the worker reported).
    pub started_at: Option<DateTimeUtc>,
    /// Finished at.
    pub finished_at: Option<DateTimeUtc>,
    /// Retry due time (`retry_wait`) or the deadline after which a dispatched attempt is
    /// presumed lost (`dispatched`).
    pub due_at: Option<DateTimeUtc>,
    /// Last change.
    pub updated_at: DateTimeUtc,
}

/// A step instance belongs to a run and has attempts.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// Its run.
    #[sea_orm(
        belongs_to = "super::run::Entity",
        from = "Column::RunId",
        to = "super::run::Column::Id",
        on_delete = "Cascade"
    )]
    Run,
    /// Its attempts.
    #[sea_orm(has_many = "super::attempt::Entity")]
    Attempt,
}

impl Related<super::run::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Run.def()
    }
}

impl Related<super::attempt::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Attempt.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
