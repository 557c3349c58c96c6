//! A workspace's governance policy: which connectors and actions its workflows may use at all,
//! and which connections each agent may use.
//!
//! ```json
//! {
//!   "connectors": { "allow": ["http", "slack"] },
//!   "actions": { "deny": ["github.close_issue"] },
//!   "approvals": { "actions": ["slack.post_message"] },
//!   "agents": { "triage-agent": ["crm"] }
//! }
//! ```
//!
//! Every field is optional: no `connectors.allow` allows every connector, no `actions.deny`
//! denies nothing. Applying a workflow that uses a forbidden action is refused with 403,
//! naming the action and the step. Destructive actions always wait for approval (see
//! [`crate::planner::needs_approval`]); the policy cannot lift that.

use std::collections::BTreeMap;

use chrono::Utc;
use schemas::db::entities::policy;
use schemas::definition::Workflow;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ConnectionTrait, EntityTrait, Set};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// A workspace's policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Which connectors workflows may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connectors: Option<ConnectorRule>,
    /// Which actions workflows may not use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<ActionRule>,
    /// Actions that always wait for a person's approval, besides destructive ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals: Option<ApprovalRule>,
    /// The connections each agent (by principal name) may use through the tools API.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub agents: BTreeMap<String, Vec<String>>,
}

/// `connectors`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorRule {
    /// Only these connectors.
    pub allow: Vec<String>,
}

/// `approvals`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRule {
    /// `connector.action`s whose steps wait at an approval gate (any operator decides, unless
    /// the step's own `approval` names approvers).
    pub actions: Vec<String>,
}

/// `actions`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionRule {
    /// Never these `connector.action`s.
    pub deny: Vec<String>,
}

/// Why a policy could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The database said no.
    #[error("database: {0}")]
    Db(#[from] sea_orm::DbErr),
    /// The document names something that does not exist, or is malformed.
    #[error("{0}")]
    Invalid(String),
}

impl Policy {
    /// Checks every name against the connector registry, so a typo is an error now rather
    /// than a rule that never matches.
    pub fn check(&self, registry: &connectors::Registry) -> Result<(), PolicyError> {
        for name in self.connectors.iter().flat_map(|c| &c.allow) {
            if registry.get(name).is_none() {
                return Err(PolicyError::Invalid(format!(
                    "`connectors.allow`: there is no connector `{}`",
                    name.escape_debug()
                )));
            }
        }
        let denied = self.actions.iter().flat_map(|a| &a.deny);
        let gated = self.approvals.iter().flat_map(|a| &a.actions);
        for action in denied.chain(gated) {
            let known = action
                .split_once('.')
                .and_then(|(c, a)| registry.get(c).and_then(|m| m.find_action(a)))
                .is_some();
            if !known {
                return Err(PolicyError::Invalid(format!(
                    "`actions.deny` or `approvals.actions`: there is no action `{}` (write `connector.action`)",
                    action.escape_debug()
                )));
            }
        }
        Ok(())
    }

    /// The steps of `workflow` whose action this policy forbids: `(path, message)`.
    pub fn forbidden(&self, workflow: &Workflow) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (i, step) in workflow.steps.iter().enumerate() {
            let Some(action) = step.action.as_deref() else {
                continue;
            };
            let connector = action.split_once('.').map_or(action, |(c, _)| c);
            let path = format!("steps[{i}].action");
            if let Some(rule) = &self.connectors
                && !rule.allow.iter().any(|c| c == connector)
            {
                out.push((
                    path,
                    format!(
                        "the workspace's policy does not allow connector `{connector}` (step `{}` uses `{action}`)",
                        step.id
                    ),
                ));
            } else if self
                .actions
                .as_ref()
                .is_some_and(|rule| rule.deny.iter().any(|a| a == action))
            {
                out.push((
                    path,
                    format!(
                        "the workspace's policy forbids `{action}` (step `{}`)",
                        step.id
                    ),
                ));
            }
        }
        out
    }
}

impl Policy {
    /// The agents allowed to use `connection`, by name.
    pub fn agents_of(&self, connection: &str) -> Vec<String> {
        self.agents
            .iter()
            .filter(|(_, connections)| connections.iter().any(|c| c == connection))
            .map(|(agent, _)| agent.clone())
            .collect()
    }
}

/// The workspace's policy (the empty policy when none was set).
pub async fn get<C: ConnectionTrait>(db: &C, workspace_id: Uuid) -> Result<Policy, PolicyError> {
    let Some(row) = policy::Entity::find_by_id(workspace_id).one(db).await? else {
        return Ok(Policy::default());
    };
    serde_json::from_value(row.document)
        .map_err(|e| PolicyError::Invalid(format!("the stored policy is unreadable: {e}")))
}

/// Replaces the workspace's policy, checking its names against `registry` (the workspace's
/// connectors, custom tools included).
pub async fn put<C: ConnectionTrait>(
    db: &C,
    registry: &connectors::Registry,
    workspace_id: Uuid,
    policy: &Policy,
    by: &str,
) -> Result<(), PolicyError> {
    policy.check(registry)?;
    let document = serde_json::to_value(policy).unwrap_or(Value::Null);
    policy::Entity::insert(policy::ActiveModel {
        workspace_id: Set(workspace_id),
        document: Set(document),
        updated_at: Set(Utc::now()),
        updated_by: Set(by.to_owned()),
    })
    .on_conflict(
        OnConflict::column(policy::Column::WorkspaceId)
            .update_columns([
                policy::Column::Document,
                policy::Column::UpdatedAt,
                policy::Column::UpdatedBy,
            ])
            .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workflow(yaml: &str) -> Workflow {
        schemas::validate::validate(yaml, &connectors::Registry::builtin())
            .unwrap_or_else(|p| panic!("{p}"))
    }

    #[test]
    fn forbidden_actions_are_named_with_their_step() {
        let wf = workflow(
            "name: w\nsteps:\n  - { id: a, action: http.request, with: { url: \"http://x\" } }\n  - { id: b, action: github.close_issue, connection: gh, with: {} }\n",
        );
        let deny = Policy {
            actions: Some(ActionRule {
                deny: vec!["github.close_issue".into()],
            }),
            ..Policy::default()
        };
        let found = deny.forbidden(&wf);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, "steps[1].action");
        assert!(found[0].1.contains("github.close_issue"), "{found:?}");
        let only_http = Policy {
            connectors: Some(ConnectorRule {
                allow: vec!["http".into()],
            }),
            ..Policy::default()
        };
        assert_eq!(only_http.forbidden(&wf).len(), 1);
        assert!(Policy::default().forbidden(&wf).is_empty());
    }

    #[test]
    fn unknown_names_are_refused() {
        let registry = connectors::Registry::builtin();
        let typo = Policy {
            actions: Some(ActionRule {
                deny: vec!["github.close_isue".into()],
            }),
            ..Policy::default()
        };
        assert!(typo.check(&registry).is_err());
        let bad = Policy {
            connectors: Some(ConnectorRule {
                allow: vec!["slak".into()],
            }),
            ..Policy::default()
        };
        assert!(bad.check(&registry).is_err());
    }
}
