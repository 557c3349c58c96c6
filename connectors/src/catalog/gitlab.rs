//! GitLab, through the REST API v4 (<https://docs.gitlab.com/api/rest/>).
//!
//! Requests go to `https://gitlab.com/api/v4` (self-managed: the connection's `base_url`,
//! `https://HOST/api/v4`). A personal, project or group access token goes in the
//! `PRIVATE-TOKEN` header: a connection with
//! `auth: {type: api_key, in: header, name: PRIVATE-TOKEN, key: glpat-…}`. An OAuth 2.0 token,
//! or any of those tokens, also works as `Authorization: Bearer` (`type: bearer`).
//!
//! A project is named by its numeric id or its full path (`group/subgroup/project`), which
//! GitLab takes URL-encoded as one path segment (`group%2Fsubgroup%2Fproject`): the path is
//! passed as one segment and encoded with it.
//!
//! Failures are `{"message": …}` or `{"error": …}`; a `400` whose `message` is an object of
//! fields (`{"message": {"title": ["can't be blank"]}}`) becomes `invalid_input` naming them.
//! Rate limits are `429` with `Retry-After` and `RateLimit-Reset` (Unix seconds), which the
//! generic rules read.
//!
//! Pipelines start with `POST /projects/:id/pipeline`, the endpoint documented for access
//! tokens; the trigger-token endpoint (`/trigger/pipeline`) takes a different credential.

use reqwest::StatusCode;
use schemars::JsonSchema;
use schemas::envelope::ErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::catalog::slack::put;
use crate::error::ActionError;
use crate::http::Response;
use crate::manifest::{ActionManifest, AuthType, Category, Manifest, RateLimit};
use crate::sdk::{Call, Connector, json_body, output, parse_input};

/// The GitLab connector.
#[derive(Debug)]
pub struct GitLab(Manifest);

impl Default for GitLab {
    fn default() -> Self {
        Self::new()
    }
}

impl GitLab {
    /// Its manifest.
    pub fn new() -> Self {
        GitLab(
            Manifest::new("gitlab", "GitLab", Category::DevTools)
                .auth(&[AuthType::ApiKey, AuthType::Bearer, AuthType::OAuth2Code])
                .base_url("https://gitlab.com/api/v4")
                .docs("https://docs.gitlab.com/api/rest/")
                // GitLab.com allows 2,000 authenticated API requests a minute per user.
                .rate_limit(RateLimit::per_minute(2000).with_burst(20))
                .action(
                    ActionManifest::write("create_issue", "Open an issue")
                        .scopes(&["api"])
                        .input::<CreateIssue>()
                        .output::<Issue>(),
                )
                .action(
                    ActionManifest::write("comment_issue", "Comment on an issue")
                        .scopes(&["api"])
                        .input::<CommentIssue>()
                        .output::<Note>(),
                )
                .action(
                    ActionManifest::write("create_merge_request", "Open a merge request")
                        .scopes(&["api"])
                        .input::<CreateMergeRequest>()
                        .output::<MergeRequest>(),
                )
                .action(
                    ActionManifest::destructive("merge_merge_request", "Merge a merge request")
                        .scopes(&["api"])
                        .idempotent()
                        .input::<MergeMergeRequest>()
                        .output::<MergeRequest>(),
                )
                .action(
                    ActionManifest::write("trigger_pipeline", "Run a CI/CD pipeline on a ref")
                        .scopes(&["api"])
                        .input::<TriggerPipeline>()
                        .output::<Pipeline>(),
                ),
        )
    }
}

/// A project: its numeric id or its full path.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Project {
    /// Numeric id, e.g. `4`.
    Id(u64),
    /// Full path, e.g. `group/subgroup/project` (or the id as a string).
    Path(String),
}

impl Project {
    fn segment(&self) -> String {
        match self {
            Project::Id(id) => id.to_string(),
            Project::Path(path) => path.clone(),
        }
    }
}

/// `create_issue` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateIssue {
    /// Project id or full path.
    pub project: Project,
    /// Title.
    pub title: String,
    /// Description, in Markdown.
    pub description: Option<String>,
    /// Label names.
    pub labels: Option<Vec<String>>,
    /// User ids to assign.
    pub assignee_ids: Option<Vec<u64>>,
    /// Milestone id.
    pub milestone_id: Option<u64>,
    /// Due date, `YYYY-MM-DD`.
    pub due_date: Option<String>,
    /// Make it confidential.
    pub confidential: Option<bool>,
}

/// An issue.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Issue {
    /// Global id.
    pub id: u64,
    /// Number within the project (`#12`).
    pub iid: u64,
    /// The project's id.
    pub project_id: Option<u64>,
    /// `opened` or `closed`.
    pub state: Option<String>,
    /// Web page.
    pub web_url: Option<String>,
}

/// `comment_issue` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommentIssue {
    /// Project id or full path.
    pub project: Project,
    /// The issue's number within the project (`iid`).
    pub issue_iid: u64,
    /// Comment, in Markdown.
    pub body: String,
    /// Visible only to project members with at least the Reporter role.
    pub internal: Option<bool>,
}

/// A comment (note).
#[derive(Debug, Serialize, JsonSchema)]
pub struct Note {
    /// Note id.
    pub id: u64,
    /// The issue's number within the project.
    pub noteable_iid: Option<u64>,
}

/// `create_merge_request` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMergeRequest {
    /// Project id or full path.
    pub project: Project,
    /// Branch with the changes.
    pub source_branch: String,
    /// Branch to merge into.
    pub target_branch: String,
    /// Title (prefix `Draft: ` to open it as a draft).
    pub title: String,
    /// Description, in Markdown.
    pub description: Option<String>,
    /// Label names.
    pub labels: Option<Vec<String>>,
    /// User ids to assign.
    pub assignee_ids: Option<Vec<u64>>,
    /// User ids to ask for review.
    pub reviewer_ids: Option<Vec<u64>>,
    /// Delete the source branch once merged.
    pub remove_source_branch: Option<bool>,
    /// Squash the commits when merging.
    pub squash: Option<bool>,
    /// Project to merge into, when it is not `project` (a fork's upstream).
    pub target_project_id: Option<u64>,
}

/// A merge request.
#[derive(Debug, Serialize, JsonSchema)]
pub struct MergeRequest {
    /// Global id.
    pub id: u64,
    /// Number within the project (`!12`).
    pub iid: u64,
    /// `opened`, `merged`, `closed` or `locked`.
    pub state: Option<String>,
    /// Web page.
    pub web_url: Option<String>,
    /// Head commit of the source branch.
    pub sha: Option<String>,
    /// The merge commit, once merged.
    pub merge_commit_sha: Option<String>,
}

/// `merge_merge_request` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeMergeRequest {
    /// Project id or full path.
    pub project: Project,
    /// The merge request's number within the project (`iid`).
    pub merge_request_iid: u64,
    /// Message of the merge commit.
    pub merge_commit_message: Option<String>,
    /// Message of the squash commit.
    pub squash_commit_message: Option<String>,
    /// Squash the commits.
    pub squash: Option<bool>,
    /// Delete the source branch.
    pub should_remove_source_branch: Option<bool>,
    /// Merge only if the source branch's head is still this commit (`conflict` otherwise).
    pub sha: Option<String>,
    /// Merge once the pipeline succeeds instead of now (GitLab 17.11 and later).
    pub auto_merge: Option<bool>,
    /// The same, for GitLab releases before 17.11.
    pub merge_when_pipeline_succeeds: Option<bool>,
}

/// `trigger_pipeline` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerPipeline {
    /// Project id or full path.
    pub project: Project,
    /// Branch or tag to run on.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// CI/CD variables for this pipeline, name to value.
    pub variables: Option<Map<String, Value>>,
    /// The pipeline's `spec:inputs`, name to value.
    pub inputs: Option<Map<String, Value>>,
}

/// A pipeline.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Pipeline {
    /// Global id.
    pub id: u64,
    /// Number within the project.
    pub iid: Option<u64>,
    /// Commit it runs on.
    pub sha: Option<String>,
    /// Branch or tag.
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    /// `created`, `pending`, `running`…
    pub status: Option<String>,
    /// Web page.
    pub web_url: Option<String>,
}

#[async_trait::async_trait]
impl Connector for GitLab {
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
            "create_issue" => create_issue(call, parse_input(input)?).await,
            "comment_issue" => comment_issue(call, parse_input(input)?).await,
            "create_merge_request" => create_merge_request(call, parse_input(input)?).await,
            "merge_merge_request" => merge_merge_request(call, parse_input(input)?).await,
            "trigger_pipeline" => trigger_pipeline(call, parse_input(input)?).await,
            _ => Err(call.unknown_action(action)),
        }
    }

    async fn health(&self, call: &Call<'_>) -> Result<(), ActionError> {
        send(call, call.get(&["user"])).await.map(drop)
    }
}

/// Sends `request`; a `400` with field errors becomes `invalid_input` naming them.
async fn send(call: &Call<'_>, request: reqwest::RequestBuilder) -> Result<Response, ActionError> {
    let response = call
        .send_accepting(request, |s| s.is_success() || s == StatusCode::BAD_REQUEST)
        .await?;
    if response.status == StatusCode::BAD_REQUEST {
        return Err(rejected(call, &response));
    }
    Ok(response)
}

async fn send_json(
    call: &Call<'_>,
    request: reqwest::RequestBuilder,
) -> Result<Value, ActionError> {
    json_body(&send(call, request).await?)
}

/// `{"message": {"title": ["can't be blank"]}}`, `{"message": "…"}` or `{"error": "…"}` as
/// `invalid_input`.
fn rejected(call: &Call<'_>, response: &Response) -> ActionError {
    let body: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    let detail = match (&body["message"], &body["error"]) {
        (Value::Object(fields), _) => fields
            .iter()
            .map(|(field, problems)| {
                let problems = match problems {
                    Value::Array(list) => list
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", "),
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                format!("`{field}` {problems}")
            })
            .collect::<Vec<_>>()
            .join("; "),
        (Value::String(message), _) => message.clone(),
        (_, Value::String(error)) => error.clone(),
        _ => "400 Bad Request".to_owned(),
    };
    let mut e = call.provider_error(ErrorCode::InvalidInput, &detail);
    e.status = Some(response.status.as_u16());
    e
}

fn number(value: &Value, field: &str) -> Result<u64, ActionError> {
    value[field].as_u64().ok_or_else(|| {
        ActionError::new(
            ErrorCode::UpstreamUnavailable,
            format!("GitLab's answer has no `{field}`"),
        )
    })
}

fn text(value: &Value, field: &str) -> Option<String> {
    value[field].as_str().map(str::to_owned)
}

fn merge_request(raw: &Value) -> Result<Value, ActionError> {
    output(&MergeRequest {
        id: number(raw, "id")?,
        iid: number(raw, "iid")?,
        state: text(raw, "state"),
        web_url: text(raw, "web_url"),
        sha: text(raw, "sha"),
        merge_commit_sha: text(raw, "merge_commit_sha"),
    })
}

async fn create_issue(call: &Call<'_>, input: CreateIssue) -> Result<Value, ActionError> {
    let project = input.project.segment();
    let mut body = json!({ "title": input.title });
    put(&mut body, "description", input.description);
    // GitLab takes labels comma-separated.
    put(&mut body, "labels", input.labels.map(|l| l.join(",")));
    put(&mut body, "assignee_ids", input.assignee_ids);
    put(&mut body, "milestone_id", input.milestone_id);
    put(&mut body, "due_date", input.due_date);
    put(&mut body, "confidential", input.confidential);
    let raw = send_json(
        call,
        call.post(&["projects", &project, "issues"]).json(&body),
    )
    .await?;
    output(&Issue {
        id: number(&raw, "id")?,
        iid: number(&raw, "iid")?,
        project_id: raw["project_id"].as_u64(),
        state: text(&raw, "state"),
        web_url: text(&raw, "web_url"),
    })
}

async fn comment_issue(call: &Call<'_>, input: CommentIssue) -> Result<Value, ActionError> {
    let project = input.project.segment();
    let iid = input.issue_iid.to_string();
    let mut body = json!({ "body": input.body });
    put(&mut body, "internal", input.internal);
    let raw = send_json(
        call,
        call.post(&["projects", &project, "issues", &iid, "notes"])
            .json(&body),
    )
    .await?;
    output(&Note {
        id: number(&raw, "id")?,
        noteable_iid: raw["noteable_iid"].as_u64(),
    })
}

async fn create_merge_request(
    call: &Call<'_>,
    input: CreateMergeRequest,
) -> Result<Value, ActionError> {
    let project = input.project.segment();
    let mut body = json!({
        "source_branch": input.source_branch,
        "target_branch": input.target_branch,
        "title": input.title,
    });
    put(&mut body, "description", input.description);
    put(&mut body, "labels", input.labels.map(|l| l.join(",")));
    put(&mut body, "assignee_ids", input.assignee_ids);
    put(&mut body, "reviewer_ids", input.reviewer_ids);
    put(
        &mut body,
        "remove_source_branch",
        input.remove_source_branch,
    );
    put(&mut body, "squash", input.squash);
    put(&mut body, "target_project_id", input.target_project_id);
    let raw = send_json(
        call,
        call.post(&["projects", &project, "merge_requests"])
            .json(&body),
    )
    .await?;
    merge_request(&raw)
}

async fn merge_merge_request(
    call: &Call<'_>,
    input: MergeMergeRequest,
) -> Result<Value, ActionError> {
    let project = input.project.segment();
    let iid = input.merge_request_iid.to_string();
    let mut body = json!({});
    put(
        &mut body,
        "merge_commit_message",
        input.merge_commit_message,
    );
    put(
        &mut body,
        "squash_commit_message",
        input.squash_commit_message,
    );
    put(&mut body, "squash", input.squash);
    put(
        &mut body,
        "should_remove_source_branch",
        input.should_remove_source_branch,
    );
    put(&mut body, "sha", input.sha);
    put(&mut body, "auto_merge", input.auto_merge);
    put(
        &mut body,
        "merge_when_pipeline_succeeds",
        input.merge_when_pipeline_succeeds,
    );
    let request = call
        .put(&["projects", &project, "merge_requests", &iid, "merge"])
        .json(&body);
    let raw = send_json(call, request).await.map_err(|e| match e.status {
        // The merge request's state, not a passing fault: no retry helps.
        Some(405 | 406 | 422) => ActionError {
            code: ErrorCode::Conflict,
            message: format!("merge request !{iid} cannot be merged now: {}", e.message),
            ..e
        },
        Some(409) => ActionError {
            code: ErrorCode::Conflict,
            message: format!(
                "merge request !{iid}'s source branch is no longer at the given `sha`: {}",
                e.message
            ),
            ..e
        },
        _ => e,
    })?;
    merge_request(&raw)
}

async fn trigger_pipeline(call: &Call<'_>, input: TriggerPipeline) -> Result<Value, ActionError> {
    let project = input.project.segment();
    let mut body = json!({ "ref": input.git_ref });
    let variables = input.variables.map(|vars| {
        vars.into_iter()
            .map(|(key, value)| {
                // Variables are strings in GitLab; other scalars are sent as their text.
                let value = match value {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                json!({ "key": key, "value": value })
            })
            .collect::<Vec<_>>()
    });
    put(&mut body, "variables", variables);
    put(&mut body, "inputs", input.inputs);
    let raw = send_json(
        call,
        call.post(&["projects", &project, "pipeline"]).json(&body),
    )
    .await?;
    output(&Pipeline {
        id: number(&raw, "id")?,
        iid: raw["iid"].as_u64(),
        sha: text(&raw, "sha"),
        git_ref: text(&raw, "ref"),
        status: text(&raw, "status"),
        web_url: text(&raw, "web_url"),
    })
}
