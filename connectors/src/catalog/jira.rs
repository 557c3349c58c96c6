//! Jira Cloud, through the platform REST API v3
//! (<https://developer.atlassian.com/cloud/jira/platform/rest/v3/>).
//!
//! Every site has its own host, so a connection must set `base_url`:
//! `https://your-domain.atlassian.net` with Basic auth (`email:api_token`:
//! `auth: {type: basic, username: EMAIL, password: API_TOKEN}`), or
//! `https://api.atlassian.com/ex/jira/{cloudid}` with an OAuth 2.0 (3LO) bearer token. Paths
//! are `/rest/api/3/…`. Rich text (issue descriptions, comments) is Atlassian Document Format;
//! plain text given to these actions is wrapped into an ADF document, one paragraph per
//! blank-line-separated block, line breaks kept.
//!
//! Jira Data Center and Server expose `/rest/api/2` instead (plain-text descriptions and
//! comments, `/rest/api/2/search` with `startAt`), which these actions do not speak; use
//! `http.request` against such a site.
//!
//! Failures are `{"errorMessages": […], "errors": {"field": "message"}}`; a `400` naming fields
//! becomes `invalid_input` naming them. Rate limits are `429` with `Retry-After` (seconds);
//! Jira's `X-RateLimit-Reset` is an ISO 8601 time and is not needed beside it.
//!
//! Searches use the enhanced JQL search, `POST /rest/api/3/search/jql`, paged by
//! `nextPageToken` (the older `/rest/api/3/search` with `startAt` is deprecated).

use reqwest::{Method, StatusCode};
use schemars::JsonSchema;
use schemas::envelope::ErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::catalog::slack::put;
use crate::error::ActionError;
use crate::http::Response;
use crate::manifest::{ActionManifest, AuthType, Category, Manifest, RateLimit};
use crate::sdk::{
    Call, Connector, Listing, Page, collect_pages, json_body, output, page_limit, parse_input,
};

/// The Jira connector.
#[derive(Debug)]
pub struct Jira(Manifest);

impl Default for Jira {
    fn default() -> Self {
        Self::new()
    }
}

impl Jira {
    /// Its manifest. No default base URL: each site has its own.
    pub fn new() -> Self {
        Jira(
            Manifest::new("jira", "Jira", Category::DevTools)
                .auth(&[AuthType::OAuth2Code, AuthType::Basic, AuthType::Bearer])
                .docs("https://developer.atlassian.com/cloud/jira/platform/rest/v3/")
                // Jira Cloud meters requests by cost per site and answers 429 with
                // Retry-After; about 10 simple requests a second stays clear of it.
                .rate_limit(RateLimit::per_minute(600).with_burst(10))
                .action(
                    ActionManifest::write("create_issue", "Create an issue")
                        .scopes(&["write:jira-work"])
                        .input::<CreateIssue>()
                        .output::<IssueRef>(),
                )
                .action(
                    ActionManifest::write("transition_issue", "Move an issue to another status")
                        .scopes(&["read:jira-work", "write:jira-work"])
                        .idempotent()
                        .input::<TransitionIssue>()
                        .output::<Transitioned>(),
                )
                .action(
                    ActionManifest::write("add_comment", "Comment on an issue")
                        .scopes(&["write:jira-work"])
                        .input::<AddComment>()
                        .output::<CommentRef>(),
                )
                .action(
                    ActionManifest::read("search", "Find issues with JQL")
                        .scopes(&["read:jira-work"])
                        .paginated("page_token", 50, 1000)
                        .input::<Search>()
                        .output::<Listing>(),
                ),
        )
    }
}

/// Rich text: plain text (wrapped into an ADF document) or an ADF document as is.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RichText {
    /// Plain text; blank lines separate paragraphs.
    Text(String),
    /// An Atlassian Document Format document (`{"type": "doc", "version": 1, …}`).
    Adf(Map<String, Value>),
}

impl RichText {
    /// The ADF document.
    pub fn into_adf(self) -> Value {
        match self {
            RichText::Text(text) => adf(&text),
            RichText::Adf(doc) => Value::Object(doc),
        }
    }
}

/// Plain text as an ADF document: one paragraph per block between blank lines, each line
/// break a `hardBreak`.
pub fn adf(text: &str) -> Value {
    let normalized = text.replace("\r\n", "\n");
    let paragraphs: Vec<Value> = normalized
        .split("\n\n")
        .map(|p| p.trim_matches('\n'))
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let mut content = Vec::new();
            for (i, line) in p.split('\n').enumerate() {
                if i > 0 {
                    content.push(json!({ "type": "hardBreak" }));
                }
                if !line.is_empty() {
                    content.push(json!({ "type": "text", "text": line }));
                }
            }
            json!({ "type": "paragraph", "content": content })
        })
        .collect();
    json!({ "type": "doc", "version": 1, "content": paragraphs })
}

/// `create_issue` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateIssue {
    /// Project key, e.g. `SALES`.
    pub project: String,
    /// Summary (the title).
    pub summary: String,
    /// Description: plain text or an ADF document.
    pub description: Option<RichText>,
    /// Issue type name (default `Task`).
    pub issue_type: Option<String>,
    /// Labels (no spaces).
    pub labels: Option<Vec<String>>,
    /// Atlassian account id of the assignee.
    pub assignee_account_id: Option<String>,
    /// Priority name, e.g. `High`.
    pub priority: Option<String>,
    /// Key of the parent issue (for sub-tasks, or an epic).
    pub parent: Option<String>,
    /// Further fields exactly as Jira names them (`customfield_10011`, `duedate`…); they
    /// override the ones above.
    pub fields: Option<Map<String, Value>>,
}

/// A created issue.
#[derive(Debug, Serialize, JsonSchema)]
pub struct IssueRef {
    /// Issue id.
    pub id: String,
    /// Issue key, e.g. `SALES-24`.
    pub key: String,
    /// API URL of the issue.
    #[serde(rename = "self")]
    pub self_url: Option<String>,
    /// Web page of the issue.
    pub browse_url: String,
}

/// `transition_issue` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransitionIssue {
    /// Issue key or id.
    pub issue: String,
    /// Transition id (`31`), or its name or target status (`Done`), looked up among the
    /// issue's available transitions.
    pub transition: String,
    /// Fields to set on the transition screen (`resolution`…), as Jira names them.
    pub fields: Option<Map<String, Value>>,
}

/// A transition done.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Transitioned {
    /// The issue.
    pub issue: String,
    /// The transition's id.
    pub transition_id: String,
    /// Its name, when it was looked up.
    pub transition_name: Option<String>,
}

/// `add_comment` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddComment {
    /// Issue key or id.
    pub issue: String,
    /// The comment: plain text or an ADF document.
    pub body: RichText,
}

/// A comment.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CommentRef {
    /// Comment id.
    pub id: String,
    /// API URL of the comment.
    #[serde(rename = "self")]
    pub self_url: Option<String>,
}

/// `search` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Search {
    /// The JQL query; it must be bounded (e.g. `project = SALES AND updated >= -7d`).
    pub jql: String,
    /// Fields to return per issue (default `*navigable`; `*all` for every field).
    pub fields: Option<Vec<String>>,
    /// Issues wanted in all (default 50, at most 1000).
    pub limit: Option<u32>,
    /// `next_cursor` of an earlier call.
    pub cursor: Option<String>,
}

#[async_trait::async_trait]
impl Connector for Jira {
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
            "transition_issue" => transition_issue(call, parse_input(input)?).await,
            "add_comment" => add_comment(call, parse_input(input)?).await,
            "search" => search(call, parse_input(input)?).await,
            _ => Err(call.unknown_action(action)),
        }
    }

    async fn health(&self, call: &Call<'_>) -> Result<(), ActionError> {
        send(call, call.get(&["rest", "api", "3", "myself"]))
            .await
            .map(drop)
    }
}

/// Segments under `/rest/api/3`.
fn api<'a>(rest: &[&'a str]) -> Vec<&'a str> {
    let mut segments = vec!["rest", "api", "3"];
    segments.extend_from_slice(rest);
    segments
}

/// Sends `request`; a `400` becomes `invalid_input` naming the fields Jira rejected.
async fn send(call: &Call<'_>, request: reqwest::RequestBuilder) -> Result<Response, ActionError> {
    let request = request.header(reqwest::header::ACCEPT, "application/json");
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

/// `{"errorMessages": […], "errors": {"summary": "…"}}` as `invalid_input`:
/// ``… reported `summary`: You must specify a summary of the issue.``
fn rejected(call: &Call<'_>, response: &Response) -> ActionError {
    let body: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    let mut problems: Vec<String> = body["errors"]
        .as_object()
        .map(|errors| {
            errors
                .iter()
                .map(|(field, message)| {
                    format!("`{field}`: {}", message.as_str().unwrap_or("invalid"))
                })
                .collect()
        })
        .unwrap_or_default();
    if let Some(messages) = body["errorMessages"].as_array() {
        problems.extend(messages.iter().filter_map(Value::as_str).map(str::to_owned));
    }
    let detail = if problems.is_empty() {
        "400 Bad Request".to_owned()
    } else {
        problems.join("; ")
    };
    let mut e = call.provider_error(ErrorCode::InvalidInput, &detail);
    e.status = Some(response.status.as_u16());
    e
}

fn string(value: &Value, field: &str) -> Result<String, ActionError> {
    value[field].as_str().map(str::to_owned).ok_or_else(|| {
        ActionError::new(
            ErrorCode::UpstreamUnavailable,
            format!("Jira's answer has no `{field}`"),
        )
    })
}

async fn create_issue(call: &Call<'_>, input: CreateIssue) -> Result<Value, ActionError> {
    let mut fields = json!({
        "project": { "key": input.project },
        "summary": input.summary,
        "issuetype": { "name": input.issue_type.as_deref().unwrap_or("Task") },
    });
    put(
        &mut fields,
        "description",
        input.description.map(RichText::into_adf),
    );
    put(&mut fields, "labels", input.labels);
    put(
        &mut fields,
        "assignee",
        input.assignee_account_id.map(|id| json!({ "id": id })),
    );
    put(
        &mut fields,
        "priority",
        input.priority.map(|name| json!({ "name": name })),
    );
    put(
        &mut fields,
        "parent",
        input.parent.map(|key| json!({ "key": key })),
    );
    if let (Some(extra), Some(all)) = (input.fields, fields.as_object_mut()) {
        all.extend(extra);
    }
    let raw = send_json(
        call,
        call.post(&api(&["issue"]))
            .json(&json!({ "fields": fields })),
    )
    .await?;
    let key = string(&raw, "key")?;
    output(&IssueRef {
        id: string(&raw, "id")?,
        browse_url: call.url(&["browse", &key]).to_string(),
        key,
        self_url: raw["self"].as_str().map(str::to_owned),
    })
}

async fn transition_issue(call: &Call<'_>, input: TransitionIssue) -> Result<Value, ActionError> {
    let path = api(&["issue", &input.issue, "transitions"]);
    let wanted = input.transition.trim();
    let (id, name) = if !wanted.is_empty() && wanted.bytes().all(|b| b.is_ascii_digit()) {
        (wanted.to_owned(), None)
    } else {
        let available = send_json(call, call.get(&path)).await?;
        let transitions = available["transitions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let by = |pick: &dyn Fn(&Value) -> Option<&str>| {
            transitions
                .iter()
                .find(|t| pick(t).is_some_and(|n| n.eq_ignore_ascii_case(wanted)))
                .cloned()
        };
        // A transition's own name first, then the status it leads to.
        let found = by(&|t| t["name"].as_str()).or_else(|| by(&|t| t["to"]["name"].as_str()));
        let Some(found) = found else {
            let names: Vec<&str> = transitions
                .iter()
                .filter_map(|t| t["name"].as_str())
                .collect();
            return Err(ActionError::invalid_input(
                "transition",
                format!(
                    "issue {} has no transition `{wanted}` from its status; available: {}",
                    input.issue,
                    if names.is_empty() {
                        "none".to_owned()
                    } else {
                        names.join(", ")
                    }
                ),
            ));
        };
        (
            string(&found, "id")?,
            found["name"].as_str().map(str::to_owned),
        )
    };
    let mut body = json!({ "transition": { "id": id } });
    put(&mut body, "fields", input.fields);
    // `204 No Content` on success.
    send(call, call.post(&path).json(&body)).await?;
    output(&Transitioned {
        issue: input.issue,
        transition_id: id,
        transition_name: name,
    })
}

async fn add_comment(call: &Call<'_>, input: AddComment) -> Result<Value, ActionError> {
    let raw = send_json(
        call,
        call.post(&api(&["issue", &input.issue, "comment"]))
            .json(&json!({ "body": input.body.into_adf() })),
    )
    .await?;
    output(&CommentRef {
        id: string(&raw, "id")?,
        self_url: raw["self"].as_str().map(str::to_owned),
    })
}

async fn search(call: &Call<'_>, input: Search) -> Result<Value, ActionError> {
    let pagination = call
        .manifest
        .find_action("search")
        .and_then(|a| a.pagination.clone())
        .ok_or_else(|| ActionError::new(ErrorCode::Internal, "search pages"))?;
    let limit = page_limit(input.limit, &pagination)?;
    // The enhanced search returns only ids unless fields are named.
    let fields = input
        .fields
        .unwrap_or_else(|| vec!["*navigable".to_owned()]);
    let jql = input.jql;
    let listing = collect_pages(limit, input.cursor, |cursor, wanted| {
        let mut body = json!({
            "jql": jql,
            "maxResults": wanted.min(100),
            "fields": fields,
        });
        put(&mut body, "nextPageToken", cursor);
        async move {
            let page = send_json(
                call,
                call.request(Method::POST, &api(&["search", "jql"]))
                    .json(&body),
            )
            .await?;
            let last = page["isLast"].as_bool().unwrap_or(false);
            Ok(Page {
                items: page["issues"].as_array().cloned().unwrap_or_default(),
                next: page["nextPageToken"]
                    .as_str()
                    .filter(|_| !last)
                    .map(str::to_owned),
            })
        }
    })
    .await?;
    output(&listing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_becomes_paragraphs_with_line_breaks() {
        assert_eq!(
            adf("Stalled deal.\nOwner: Ana\n\nNo activity for 9 days."),
            json!({ "type": "doc", "version": 1, "content": [
                { "type": "paragraph", "content": [
                    { "type": "text", "text": "Stalled deal." },
                    { "type": "hardBreak" },
                    { "type": "text", "text": "Owner: Ana" }
                ]},
                { "type": "paragraph", "content": [
                    { "type": "text", "text": "No activity for 9 days." }
                ]}
            ]})
        );
        assert_eq!(
            adf(""),
            json!({ "type": "doc", "version": 1, "content": [] })
        );
    }
}
