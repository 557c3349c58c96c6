//! `approvals`: one row per approval gate a step reached. Exactly one decision is recorded:
//! deciding updates the row only while it is `pending`, so a second or concurrent decision
//! changes nothing and is answered as a conflict.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// A gate.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "approvals")]
pub struct Model {
    /// Id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// Workspace.
    pub workspace_id: Uuid,
    /// The run.
    pub run_id: Uuid,
    /// The step held at the gate.
    pub step_id: String,
    /// `pending` until decided.
    pub status: ApprovalStatus,
    /// Who may decide (`role:<name>`, `user:<name>`; empty: any operator).
    pub approvers: Json,
    /// What the step will do once approved: its rendered inputs, redacted.
    pub input: Option<Json>,
    /// The step's action (`connector.action`), for people deciding.
    pub action: String,
    /// When the gate opened.
    pub requested_at: DateTimeUtc,
    /// When it times out, if it does.
    pub due_at: Option<DateTimeUtc>,
    /// When it was decided.
    pub decided_at: Option<DateTimeUtc>,
    /// Who decided (a principal's name).
    pub decided_by: Option<String>,
    /// The decider's comment.
    pub comment: Option<String>,
}

/// Where a gate stands.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    /// Waiting for a decision.
    #[sea_orm(string_value = "pending")]
    Pending,
    /// Approved: the step runs.
    #[sea_orm(string_value = "approved")]
    Approved,
    /// Rejected: the step fails with `approval_rejected`.
    #[sea_orm(string_value = "rejected")]
    Rejected,
    /// Nobody decided in time: the step fails with `approval_timeout`.
    #[sea_orm(string_value = "expired")]
    Expired,
}

/// No relations are navigated.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
