//! `schedule_states`: where each schedule trigger stands, so a fire time starts one run however
//! many engines are running and missed times can be caught up after downtime.

use sea_orm::entity::prelude::*;

/// One schedule trigger's state.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "schedule_states")]
pub struct Model {
    /// Owning workspace.
    #[sea_orm(primary_key, auto_increment = false)]
    pub workspace_id: Uuid,
    /// Workflow name.
    #[sea_orm(primary_key, auto_increment = false)]
    pub workflow_name: String,
    /// Which trigger of the workflow (`schedule.<cron>@<timezone>`).
    #[sea_orm(primary_key, auto_increment = false)]
    pub trigger_key: String,
    /// The latest fire time handled (run started or skipped); the first fire considered is
    /// after it.
    pub last_fire_at: DateTimeUtc,
    /// The next fire time, as of the last change.
    pub next_fire_at: Option<DateTimeUtc>,
    /// Last change.
    pub updated_at: DateTimeUtc,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
