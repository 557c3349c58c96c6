//! `audit_records`: the append-only ledger. One row per integration call attempt (written in
//! the transaction that records the attempt) and per administrative change (written in the
//! transaction that makes it). Inputs and outputs are stored redacted.
//!
//! Each row carries `hash = SHA-256(prev_hash ‖ canonical JSON of the row)` and the `prev_hash`
//! of the row before it in its workspace (`seq` − 1), so an edited, removed or inserted row
//! breaks the chain; `audit_heads` holds each workspace's last `seq` and hash, and is locked by
//! every append so the chain never forks.

use sea_orm::entity::prelude::*;

/// A ledger record.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_records")]
pub struct Model {
    /// Workspace.
    #[sea_orm(primary_key, auto_increment = false)]
    pub workspace_id: Uuid,
    /// Position in the workspace's chain, from 1.
    #[sea_orm(primary_key, auto_increment = false)]
    pub seq: i64,
    /// Id, unique across workspaces (the key is workspace and `seq`).
    pub id: Uuid,
    /// When it happened (microseconds).
    pub at: DateTimeUtc,
    /// What happened: `integration.call`, `connection.created`, `token.issued`, …
    pub kind: String,
    /// Who: a principal's name, or the trigger that started the run (`webhook`, `schedule`, …).
    pub principal: String,
    /// How it acted: `run` (a workflow step), `api` (an API call), `tool` (an agent's tool call).
    pub via: String,
    /// The run, for calls made by a step.
    pub run_id: Option<Uuid>,
    /// The step.
    pub step_id: Option<String>,
    /// The `for_each` item, if any.
    pub item_index: Option<i32>,
    /// The attempt number.
    pub attempt: Option<i32>,
    /// Connector, e.g. `http`.
    pub connector: Option<String>,
    /// Action, e.g. `request`.
    pub action: Option<String>,
    /// The connection used, if any.
    pub connection_id: Option<Uuid>,
    /// `success` or `error`.
    pub outcome: String,
    /// The error code when `outcome` is `error` (`rate_limited`, `connection_revoked`, …).
    pub error_code: Option<String>,
    /// The external system's HTTP status, when there was a response.
    pub http_status: Option<i32>,
    /// How long the call took.
    pub duration_ms: Option<i64>,
    /// The delay before the next attempt, when one was scheduled.
    pub retry_delay_ms: Option<i64>,
    /// Bytes of the recorded output.
    pub bytes: Option<i64>,
    /// The inputs, redacted.
    #[sea_orm(column_type = "Json", nullable)]
    pub input: Option<Json>,
    /// The output or error, redacted.
    #[sea_orm(column_type = "Json", nullable)]
    pub output: Option<Json>,
    /// For administrative records: what was changed (names, never secrets).
    #[sea_orm(column_type = "Json", nullable)]
    pub details: Option<Json>,
    /// The previous record's hash (64 zeros for the first).
    pub prev_hash: String,
    /// This record's hash.
    pub hash: String,
}

/// No relations are navigated.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
