//! Custom tools: each workspace's REST APIs registered as connectors, stored as definitions
//! (`custom_tools`), and the workspace's connector [`Registry`] (the built-ins plus its tools).
//!
//! Every path that asks which connectors a workspace has — applying a workflow, checking a
//! policy, creating or testing a connection, the catalog, approval gates, dispatching steps —
//! reads [`Tools::of`], which an engine caches per workspace for [`TOOLS_FOR`] and forgets at
//! once when a tool changes through it (the way approval rules are cached). Workers never read
//! definitions: the engine puts the tool's definition into each step message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use connectors::Registry;
use connectors::custom::CustomConnector;
use schemas::db::entities::custom_tool;
use schemas::tool::{CustomTool, ToolProblem};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set,
};
use uuid::Uuid;

/// How long an engine trusts a workspace's tools without reading them again. A change made
/// through an engine takes effect there at once; other engine copies see it within this.
pub const TOOLS_FOR: Duration = Duration::from_secs(2);

/// Most workspaces whose tools one engine keeps.
const WORKSPACES_KEPT: usize = 1_024;

/// Why a tool could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The database said no.
    #[error("database: {0}")]
    Db(#[from] sea_orm::DbErr),
    /// The definition has problems, each with its path.
    #[error("the tool definition has {} problem(s)", .0.len())]
    Invalid(Vec<ToolProblem>),
    /// A tool of that name exists.
    #[error("custom tool `{0}` already exists")]
    Exists(String),
    /// No tool of that name.
    #[error("custom tool `{0}` does not exist")]
    NotFound(String),
}

/// A workspace's tools and the registry they make with the built-ins.
#[derive(Debug, Clone)]
pub struct WorkspaceTools {
    /// The built-ins, then the workspace's tools.
    pub registry: Registry,
    /// The workspace's tool definitions, by name.
    pub definitions: HashMap<String, Arc<CustomTool>>,
}

impl WorkspaceTools {
    /// A workspace without custom tools.
    pub fn builtin() -> Self {
        WorkspaceTools {
            registry: Registry::builtin(),
            definitions: HashMap::new(),
        }
    }

    /// What a step message carries for `connector.action` when it is a custom tool's: the
    /// tool's definition with that one action, so a message stays small however many actions
    /// the tool has (NATS refuses messages over its `max_payload`, 1 MiB by default).
    pub fn tool_for(&self, action: &str) -> Option<CustomTool> {
        let (connector, name) = action.split_once('.')?;
        let tool = self.definitions.get(connector)?;
        let mut one = CustomTool {
            actions: Vec::new(),
            ..(**tool).clone()
        };
        one.actions.extend(tool.find_action(name).cloned());
        Some(one)
    }

    /// `tool.action` of every destructive custom action: they wait for approval as
    /// destructive built-ins do.
    pub fn destructive_actions(&self) -> Vec<String> {
        let mut out = Vec::new();
        for tool in self.definitions.values() {
            for a in &tool.actions {
                if a.effective_side_effect() == schemas::catalog::SideEffect::Destructive {
                    out.push(format!("{}.{}", tool.name, a.name));
                }
            }
        }
        out.sort();
        out
    }
}

/// The names custom tools may not take: the built-in connectors'.
pub fn reserved_names() -> Vec<String> {
    Registry::builtin()
        .manifests()
        .map(|m| m.name.clone())
        .collect()
}

/// Every problem of `tool`, built-in names included.
pub fn check(tool: &CustomTool) -> Vec<ToolProblem> {
    let reserved = reserved_names();
    let reserved: Vec<&str> = reserved.iter().map(String::as_str).collect();
    match CustomConnector::new(tool.clone(), &reserved) {
        Ok(_) => Vec::new(),
        Err(problems) => problems,
    }
}

/// Each workspace's tools as this engine last read them.
#[derive(Debug, Default)]
pub struct Tools {
    read: Mutex<HashMap<Uuid, (Instant, Arc<WorkspaceTools>)>>,
}

impl Tools {
    /// The workspace's tools, from the cache when read less than [`TOOLS_FOR`] ago.
    pub async fn of<C: ConnectionTrait>(
        &self,
        db: &C,
        workspace_id: Uuid,
    ) -> Result<Arc<WorkspaceTools>, ToolError> {
        if let Ok(read) = self.read.lock()
            && let Some((at, found)) = read.get(&workspace_id)
            && at.elapsed() < TOOLS_FOR
        {
            return Ok(found.clone());
        }
        let found = Arc::new(load(db, workspace_id).await?);
        if let Ok(mut read) = self.read.lock() {
            if read.len() >= WORKSPACES_KEPT {
                read.clear();
            }
            read.insert(workspace_id, (Instant::now(), found.clone()));
        }
        Ok(found)
    }

    /// Forgets a workspace's tools, after one changed.
    pub fn forget(&self, workspace_id: Uuid) {
        if let Ok(mut read) = self.read.lock() {
            read.remove(&workspace_id);
        }
    }
}

/// Reads a workspace's tools and builds its registry. A stored definition that no longer
/// passes the checks (a newer built-in took its name) is left out with a log line rather than
/// breaking the workspace.
pub async fn load<C: ConnectionTrait>(
    db: &C,
    workspace_id: Uuid,
) -> Result<WorkspaceTools, ToolError> {
    let rows = list(db, workspace_id).await?;
    if rows.is_empty() {
        return Ok(WorkspaceTools::builtin());
    }
    let reserved = reserved_names();
    let reserved: Vec<&str> = reserved.iter().map(String::as_str).collect();
    let mut extra: Vec<Arc<dyn connectors::Connector>> = Vec::new();
    let mut definitions = HashMap::new();
    for row in rows {
        let tool: CustomTool = match serde_json::from_value(row.definition) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(tool = %row.name, error = %e, "a stored custom tool is unreadable; left out");
                continue;
            }
        };
        match CustomConnector::new(tool.clone(), &reserved) {
            Ok(c) => {
                extra.push(Arc::new(c));
                definitions.insert(tool.name.clone(), Arc::new(tool));
            }
            Err(problems) => {
                tracing::error!(tool = %row.name, problems = problems.len(), "a stored custom tool no longer passes its checks; left out");
            }
        }
    }
    Ok(WorkspaceTools {
        registry: Registry::with(extra),
        definitions,
    })
}

/// The workspace's tools, by name.
pub async fn list<C: ConnectionTrait>(
    db: &C,
    workspace_id: Uuid,
) -> Result<Vec<custom_tool::Model>, ToolError> {
    Ok(custom_tool::Entity::find()
        .filter(custom_tool::Column::WorkspaceId.eq(workspace_id))
        .order_by_asc(custom_tool::Column::Name)
        .all(db)
        .await?)
}

/// The tool called `name`.
pub async fn get<C: ConnectionTrait>(
    db: &C,
    workspace_id: Uuid,
    name: &str,
) -> Result<Option<custom_tool::Model>, ToolError> {
    Ok(custom_tool::Entity::find()
        .filter(custom_tool::Column::WorkspaceId.eq(workspace_id))
        .filter(custom_tool::Column::Name.eq(name))
        .one(db)
        .await?)
}

/// Stores a new tool after checking it; [`ToolError::Exists`] when the name is taken.
pub async fn create<C: ConnectionTrait>(
    db: &C,
    workspace_id: Uuid,
    tool: &CustomTool,
    by: &str,
) -> Result<custom_tool::Model, ToolError> {
    let problems = check(tool);
    if !problems.is_empty() {
        return Err(ToolError::Invalid(problems));
    }
    if get(db, workspace_id, &tool.name).await?.is_some() {
        return Err(ToolError::Exists(tool.name.clone()));
    }
    let now = Utc::now();
    let row = custom_tool::ActiveModel {
        id: Set(Uuid::now_v7()),
        workspace_id: Set(workspace_id),
        name: Set(tool.name.clone()),
        definition: Set(serde_json::to_value(tool).unwrap_or_default()),
        created_at: Set(now),
        updated_at: Set(now),
        updated_by: Set(by.to_owned()),
    };
    // Two creators racing on one name: the unique index lets one in.
    row.insert(db).await.map_err(|e| match e.sql_err() {
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => ToolError::Exists(tool.name.clone()),
        _ => ToolError::Db(e),
    })
}

/// Replaces the tool called `tool.name` (which must exist) after checking the new definition.
pub async fn replace<C: ConnectionTrait>(
    db: &C,
    workspace_id: Uuid,
    tool: &CustomTool,
    by: &str,
) -> Result<custom_tool::Model, ToolError> {
    let problems = check(tool);
    if !problems.is_empty() {
        return Err(ToolError::Invalid(problems));
    }
    let row = get(db, workspace_id, &tool.name)
        .await?
        .ok_or_else(|| ToolError::NotFound(tool.name.clone()))?;
    let mut active: custom_tool::ActiveModel = row.into();
    active.definition = Set(serde_json::to_value(tool).unwrap_or_default());
    active.updated_at = Set(Utc::now());
    active.updated_by = Set(by.to_owned());
    Ok(active.update(db).await?)
}

/// Deletes the tool called `name`, returning what it was.
pub async fn delete<C: ConnectionTrait>(
    db: &C,
    workspace_id: Uuid,
    name: &str,
) -> Result<custom_tool::Model, ToolError> {
    let row = get(db, workspace_id, name)
        .await?
        .ok_or_else(|| ToolError::NotFound(name.to_owned()))?;
    custom_tool::Entity::delete_by_id(row.id).exec(db).await?;
    Ok(row)
}

impl Default for WorkspaceTools {
    fn default() -> Self {
        Self::builtin()
    }
}

impl From<ToolError> for crate::store::StoreError {
    fn from(e: ToolError) -> Self {
        match e {
            ToolError::Db(e) => crate::store::StoreError::Db(e),
            other => crate::store::StoreError::InvalidInput(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace() -> WorkspaceTools {
        let tool: CustomTool = serde_json::from_value(serde_json::json!({
            "name": "notes",
            "base_url": "https://notes.example.com",
            "auth": [{ "type": "bearer" }],
            "actions": [
                { "name": "get_note", "method": "GET", "path": "/notes/{id}",
                  "parameters": [{ "name": "id", "in": "path" }] },
                { "name": "drop_note", "method": "DELETE", "path": "/notes/{id}",
                  "parameters": [{ "name": "id", "in": "path" }] }
            ]
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let connector = CustomConnector::new(tool.clone(), &[]).unwrap_or_else(|p| panic!("{p:?}"));
        WorkspaceTools {
            registry: Registry::with(vec![Arc::new(connector)]),
            definitions: HashMap::from([(tool.name.clone(), Arc::new(tool))]),
        }
    }

    #[test]
    fn a_step_message_carries_only_the_action_it_calls() {
        let ws = workspace();
        let one = ws.tool_for("notes.get_note").expect("a custom tool");
        assert_eq!(one.actions.len(), 1);
        assert_eq!(one.actions[0].name, "get_note");
        assert!(ws.tool_for("slack.post_message").is_none());
        assert!(ws.tool_for("notes").is_none());
        assert!(ws.registry.get("notes").is_some() && ws.registry.get("slack").is_some());
    }

    #[test]
    fn destructive_custom_actions_are_gated() {
        assert_eq!(workspace().destructive_actions(), ["notes.drop_note"]);
    }

    #[test]
    fn built_in_names_are_refused() {
        let mut tool = (*workspace().definitions["notes"]).clone();
        tool.name = "github".into();
        assert_eq!(check(&tool)[0].path, "name");
    }
}
