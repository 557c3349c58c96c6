//! `principals`: who calls the API in a workspace — a user, a service account or an agent —
//! with the one role they hold there. A person in two workspaces is two principals.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// A principal.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "principals")]
pub struct Model {
    /// Id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The workspace it acts in.
    pub workspace_id: Uuid,
    /// Name, unique per workspace (`ada`, `ci-deployer`, `triage-agent`).
    pub name: String,
    /// User, service account or agent.
    pub kind: PrincipalKind,
    /// What it may do in its workspace.
    pub role: Role,
    /// The principal that created it; `None` for one made by `switchyard admin bootstrap`.
    pub created_by: Option<Uuid>,
    /// Created at.
    pub created_at: DateTimeUtc,
}

/// What kind of caller a principal is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    /// A person.
    #[sea_orm(string_value = "user")]
    User,
    /// A program acting for a team (CI, another service).
    #[sea_orm(string_value = "service")]
    Service,
    /// An AI agent: a principal that uses tools, under the workspace's agent policy.
    #[sea_orm(string_value = "agent")]
    Agent,
}

/// A role in a workspace. Each role may do everything the roles before it may.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    EnumIter,
    DeriveActiveEnum,
    Serialize,
    Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads workflows, runs and connections (never a secret).
    #[sea_orm(string_value = "viewer")]
    Viewer,
    /// Starts and cancels runs, publishes events, decides approvals it is named for.
    #[sea_orm(string_value = "operator")]
    Operator,
    /// Writes workflows.
    #[sea_orm(string_value = "author")]
    Author,
    /// Connections, secrets, principals and tokens, the audit ledger.
    #[sea_orm(string_value = "admin")]
    Admin,
}

/// No relations are navigated.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
