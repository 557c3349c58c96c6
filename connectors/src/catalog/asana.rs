//! Asana, through the REST API (<https://developers.asana.com/reference/rest-api-reference>).
//!
//! Requests go to `https://app.asana.com/api/1.0` with a personal access token or an OAuth 2.0
//! token as `Authorization: Bearer`. Objects are named by string `gid`s; request bodies wrap
//! their fields in `{"data": {…}}` and responses wrap the record the same way.
//!
//! Failures are `{"errors": [{"message": …, "help": …}]}`, classified by status (`400`
//! `invalid_input`, `401`, `402` for a premium-only feature, `403`, `404`). Rate limits are
//! `429` with `Retry-After` (seconds): 150 requests a minute on free workspaces, 1,500 on paid
//! ones.

use schemars::JsonSchema;
use schemas::envelope::ErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::catalog::slack::put;
use crate::error::ActionError;
use crate::manifest::{ActionManifest, AuthType, Category, Manifest, RateLimit};
use crate::sdk::{Call, Connector, output, parse_input};

/// The Asana connector.
#[derive(Debug)]
pub struct Asana(Manifest);

impl Default for Asana {
    fn default() -> Self {
        Self::new()
    }
}

impl Asana {
    /// Its manifest.
    pub fn new() -> Self {
        Asana(
            Manifest::new("asana", "Asana", Category::DevTools)
                .auth(&[AuthType::OAuth2Code, AuthType::Bearer])
                .base_url("https://app.asana.com/api/1.0")
                .docs("https://developers.asana.com/reference/rest-api-reference")
                // The free tier's 150 requests a minute; paid workspaces may set 1,500.
                .rate_limit(RateLimit::per_minute(150).with_burst(10))
                .action(
                    ActionManifest::write("create_task", "Create a task")
                        .scopes(&["tasks:write"])
                        .input::<CreateTask>()
                        .output::<Task>(),
                )
                .action(
                    ActionManifest::write("add_comment", "Comment on a task")
                        .scopes(&["stories:write"])
                        .input::<AddComment>()
                        .output::<Story>(),
                ),
        )
    }
}

/// `create_task` inputs. A task needs a `workspace`, or a `projects` or `parent` it belongs to.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    /// Task name.
    pub name: String,
    /// Description, as plain text.
    pub notes: Option<String>,
    /// Description as Asana rich text (`<body>…</body>`), instead of `notes`.
    pub html_notes: Option<String>,
    /// Project gids to add it to.
    pub projects: Option<Vec<String>>,
    /// Workspace gid (needed when no project or parent is given).
    pub workspace: Option<String>,
    /// Parent task gid, to make it a subtask.
    pub parent: Option<String>,
    /// Assignee: a user gid, an email address or `me`.
    pub assignee: Option<String>,
    /// Due date, `YYYY-MM-DD`.
    pub due_on: Option<String>,
    /// Due time, ISO 8601 (instead of `due_on`).
    pub due_at: Option<String>,
    /// Follower user gids or email addresses.
    pub followers: Option<Vec<String>>,
    /// Tag gids.
    pub tags: Option<Vec<String>>,
}

/// A task.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Task {
    /// Task gid.
    pub gid: String,
    /// Name.
    pub name: Option<String>,
    /// Web page.
    pub permalink_url: Option<String>,
    /// The task as Asana sent it.
    pub raw: Value,
}

/// `add_comment` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddComment {
    /// The task's gid.
    pub task_gid: String,
    /// Comment, as plain text.
    pub text: Option<String>,
    /// Comment as Asana rich text (`<body>…</body>`), instead of `text`.
    pub html_text: Option<String>,
    /// Pin it to the top of the task.
    pub is_pinned: Option<bool>,
}

/// A comment (story).
#[derive(Debug, Serialize, JsonSchema)]
pub struct Story {
    /// Story gid.
    pub gid: String,
    /// Its text.
    pub text: Option<String>,
    /// When it was made.
    pub created_at: Option<String>,
}

#[async_trait::async_trait]
impl Connector for Asana {
    fn manifest(&self) -> &Manifest {
        &self.0
    }

    async fn execute(
        &self,
        call: &Call<'_>,
        action: &str,
        input: Value,
    ) -> Result<Value, ActionError> {
        match action {
            "create_task" => create_task(call, parse_input(input)?).await,
            "add_comment" => add_comment(call, parse_input(input)?).await,
            _ => Err(call.unknown_action(action)),
        }
    }

    async fn health(&self, call: &Call<'_>) -> Result<(), ActionError> {
        call.send_json(call.get(&["users", "me"])).await.map(drop)
    }
}

/// The record in Asana's `{"data": …}` envelope.
fn data(answer: Value) -> Result<Value, ActionError> {
    match answer {
        Value::Object(mut map) => map.remove("data").filter(Value::is_object),
        _ => None,
    }
    .ok_or_else(|| {
        ActionError::new(
            ErrorCode::UpstreamUnavailable,
            "Asana's answer has no `data`",
        )
    })
}

fn gid(record: &Value) -> Result<String, ActionError> {
    record["gid"].as_str().map(str::to_owned).ok_or_else(|| {
        ActionError::new(
            ErrorCode::UpstreamUnavailable,
            "Asana's answer has no `gid`",
        )
    })
}

fn text(record: &Value, field: &str) -> Option<String> {
    record[field].as_str().map(str::to_owned)
}

async fn create_task(call: &Call<'_>, input: CreateTask) -> Result<Value, ActionError> {
    if input.workspace.is_none() && input.projects.is_none() && input.parent.is_none() {
        return Err(ActionError::invalid_input(
            "workspace",
            "give `workspace`, `projects` or `parent`",
        ));
    }
    let mut task = json!({ "name": input.name });
    put(&mut task, "notes", input.notes);
    put(&mut task, "html_notes", input.html_notes);
    put(&mut task, "projects", input.projects);
    put(&mut task, "workspace", input.workspace);
    put(&mut task, "parent", input.parent);
    put(&mut task, "assignee", input.assignee);
    put(&mut task, "due_on", input.due_on);
    put(&mut task, "due_at", input.due_at);
    put(&mut task, "followers", input.followers);
    put(&mut task, "tags", input.tags);
    let record = data(
        call.send_json(call.post(&["tasks"]).json(&json!({ "data": task })))
            .await?,
    )?;
    output(&Task {
        gid: gid(&record)?,
        name: text(&record, "name"),
        permalink_url: text(&record, "permalink_url"),
        raw: record,
    })
}

async fn add_comment(call: &Call<'_>, input: AddComment) -> Result<Value, ActionError> {
    if input.text.is_some() == input.html_text.is_some() {
        return Err(ActionError::invalid_input(
            "text",
            "give `text` or `html_text`, exactly one",
        ));
    }
    let mut story = json!({});
    put(&mut story, "text", input.text);
    put(&mut story, "html_text", input.html_text);
    put(&mut story, "is_pinned", input.is_pinned);
    let record = data(
        call.send_json(
            call.post(&["tasks", &input.task_gid, "stories"])
                .json(&json!({ "data": story })),
        )
        .await?,
    )?;
    output(&Story {
        gid: gid(&record)?,
        text: text(&record, "text"),
        created_at: text(&record, "created_at"),
    })
}
