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
    /// Which trigger of the workflow (`<cron>@<timezone>`).
    #[sea_orm(primary_key, auto_increment = false)]
    pub trigger_key: String,
    /// Every fire time up to here is settled (its run started, or skipped by the catch-up
    /// policy); the next pass considers only later ones. Starts at the moment the trigger was
    /// first seen.
    pub settled_until: DateTimeUtc,
    /// The latest fire time that started a run.
    pub last_fire_at: Option<DateTimeUtc>,
    /// The next fire time, as of the last change.
    pub next_fire_at: Option<DateTimeUtc>,
    /// Last change.
    pub updated_at: DateTimeUtc,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
