//! One module per table.

pub mod api_token;
pub mod approval;
pub mod attempt;
pub mod audit_head;
pub mod audit_record;
pub mod connection;
pub mod custom_tool;
pub mod event;
pub mod oauth_state;
pub mod outbox;
pub mod policy;
pub mod principal;
pub mod run;
pub mod schedule_state;
pub mod secret;
pub mod step_instance;
pub mod workflow_version;
pub mod workspace;

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// Where a run stands.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Accepted, nothing started yet.
    #[sea_orm(string_value = "queued")]
    Queued,
    /// Steps are being executed.
    #[sea_orm(string_value = "running")]
    Running,
    /// Paused on something outside the engine (an approval, a re-authorization).
    #[sea_orm(string_value = "waiting")]
    Waiting,
    /// Every step finished and outputs were rendered.
    #[sea_orm(string_value = "succeeded")]
    Succeeded,
    /// A step failed for good.
    #[sea_orm(string_value = "failed")]
    Failed,
    /// Cancelled on request.
    #[sea_orm(string_value = "cancelled")]
    Cancelled,
    /// The run-level timeout passed.
    #[sea_orm(string_value = "timed_out")]
    TimedOut,
}

impl RunStatus {
    /// Whether the run has ended.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled | RunStatus::TimedOut
        )
    }
}

/// Where one step instance stands.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Not started.
    #[sea_orm(string_value = "pending")]
    Pending,
    /// Its step message is in the outbox or on the stream.
    #[sea_orm(string_value = "dispatched")]
    Dispatched,
    /// A `for_each` parent whose items are running (items themselves go dispatched → done).
    #[sea_orm(string_value = "running")]
    Running,
    /// Failed, and waiting for its next attempt's due time.
    #[sea_orm(string_value = "retry_wait")]
    RetryWait,
    /// Finished with an output.
    #[sea_orm(string_value = "succeeded")]
    Succeeded,
    /// Finished with an error, for good.
    #[sea_orm(string_value = "failed")]
    Failed,
    /// Not run (`if` was false, or a need was skipped).
    #[sea_orm(string_value = "skipped")]
    Skipped,
    /// Not run or stopped because the run ended.
    #[sea_orm(string_value = "cancelled")]
    Cancelled,
    /// Ready, and held at its approval gate until a person decides; nothing is dispatched.
    #[sea_orm(string_value = "waiting_approval")]
    WaitingApproval,
    /// Its gate was approved; the planner starts it as it would a ready step.
    #[sea_orm(string_value = "approved")]
    Approved,
}

impl StepStatus {
    /// Whether nothing more will happen to this instance.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            StepStatus::Succeeded
                | StepStatus::Failed
                | StepStatus::Skipped
                | StepStatus::Cancelled
        )
    }
}

/// How one attempt ended.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "snake_case")]
pub enum AttemptStatus {
    /// The action succeeded.
    #[sea_orm(string_value = "succeeded")]
    Succeeded,
    /// The action failed.
    #[sea_orm(string_value = "failed")]
    Failed,
}

#[cfg(test)]
mod tests {
    use sea_orm::{ActiveEnum, Iterable};

    use super::*;

    /// The stored string of every variant: what the database column holds, and what the API
    /// shows through serde. They must be the same word, and fit the `VARCHAR(16)` column.
    fn stored<T>() -> Vec<(T, String)>
    where
        T: ActiveEnum<Value = String> + Iterable + Serialize,
    {
        T::iter()
            .map(|variant| {
                let column = variant.to_value();
                let wire = serde_json::to_value(&variant).expect("serializes");
                assert_eq!(wire, serde_json::Value::String(column.clone()));
                assert!(column.len() <= 16, "{column} does not fit VARCHAR(16)");
                (variant, column)
            })
            .collect()
    }

    #[test]
    fn run_statuses_store_as_their_snake_case_names() {
        let words: Vec<_> = stored::<RunStatus>().into_iter().map(|(_, w)| w).collect();
        assert_eq!(
            words,
            [
                "queued",
                "running",
                "waiting",
                "succeeded",
                "failed",
                "cancelled",
                "timed_out"
            ]
        );
        for (status, word) in stored::<RunStatus>() {
            assert_eq!(RunStatus::try_from_value(&word), Ok(status));
        }
        assert!(RunStatus::try_from_value(&"done".to_owned()).is_err());
    }

    #[test]
    fn step_statuses_store_as_their_snake_case_names() {
        let words: Vec<_> = stored::<StepStatus>().into_iter().map(|(_, w)| w).collect();
        assert_eq!(
            words,
            [
                "pending",
                "dispatched",
                "running",
                "retry_wait",
                "succeeded",
                "failed",
                "skipped",
                "cancelled",
                "waiting_approval",
                "approved"
            ]
        );
        for (status, word) in stored::<StepStatus>() {
            assert_eq!(StepStatus::try_from_value(&word), Ok(status));
        }
    }

    #[test]
    fn attempt_statuses_store_as_their_snake_case_names() {
        let words: Vec<_> = stored::<AttemptStatus>()
            .into_iter()
            .map(|(_, w)| w)
            .collect();
        assert_eq!(words, ["succeeded", "failed"]);
    }

    #[test]
    fn only_ended_runs_are_terminal() {
        let terminal: Vec<_> = RunStatus::iter().filter(|s| s.is_terminal()).collect();
        assert_eq!(
            terminal,
            [
                RunStatus::Succeeded,
                RunStatus::Failed,
                RunStatus::Cancelled,
                RunStatus::TimedOut
            ]
        );
    }

    #[test]
    fn only_finished_steps_are_terminal() {
        let terminal: Vec<_> = StepStatus::iter().filter(|s| s.is_terminal()).collect();
        assert_eq!(
            terminal,
            [
                StepStatus::Succeeded,
                StepStatus::Failed,
                StepStatus::Skipped,
                StepStatus::Cancelled
            ]
        );
    }
}
