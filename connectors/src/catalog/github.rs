//! GitHub, through the REST API (<https://docs.github.com/en/rest>).
//!
//! Every request goes to `https://api.github.com` (GitHub Enterprise Server: the connection's
//! `base_url`, `https://HOST/api/v3`) with the token as `Authorization: Bearer`,
//! `Accept: application/vnd.github+json` and `X-GitHub-Api-Version: 2022-11-28`. GitHub
//! refuses requests without a `User-Agent`; the shared client sends `switchyard/<version>`.
//!
//! Failures are `{"message": …, "documentation_url": …}`; a `422` adds
//! `errors: [{resource, field, code}]`, which this connector turns into `invalid_input` naming
//! the field. GitHub answers `404` (not `403`) for a private repository the token cannot see.
//!
//! Rate limits ([`GitHubQuirks`]): the primary limit (5,000 requests an hour for a user token)
//! is `403` or `429` with `x-ratelimit-remaining: 0` and the reset instant in
//! `x-ratelimit-reset` (Unix seconds); secondary limits (bursts, concurrency, content creation)
//! are `403` or `429` with `retry-after`. Both are decided from those headers, never from the
//! message. A secondary limit sent with neither header cannot be told from a permission
//! failure without reading the message, so it stays `forbidden`.
//!
//! Listings page by the `Link: <…>; rel="next"` header, followed only on the base URL's host.

use reqwest::header::{HeaderMap, LINK};
use reqwest::{Method, StatusCode, Url};
use schemars::JsonSchema;
use schemas::envelope::ErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::time::SystemTime;

use crate::catalog::slack::put;
use crate::error::ActionError;
use crate::http::{Quirks, Response, Verdict, ratelimit};
use crate::manifest::{ActionManifest, AuthType, Category, Manifest, RateLimit};
use crate::sdk::{
    Call, Connector, Listing, Page, collect_pages, json_body, output, page_limit, parse_input,
};

/// The REST API version this connector was written against.
pub const API_VERSION: &str = "2022-11-28";

/// The GitHub connector.
#[derive(Debug)]
pub struct GitHub(Manifest);

impl Default for GitHub {
    fn default() -> Self {
        Self::new()
    }
}

impl GitHub {
    /// Its manifest.
    pub fn new() -> Self {
        GitHub(
            Manifest::new("github", "GitHub", Category::DevTools)
                .auth(&[AuthType::OAuth2Code, AuthType::Bearer])
                .base_url("https://api.github.com")
                .docs("https://docs.github.com/en/rest")
                // 5,000 requests an hour per user token; content-creating requests have a
                // secondary limit of 80 a minute.
                .rate_limit(RateLimit {
                    requests: 5000,
                    per_seconds: 3600,
                    burst: 20,
                })
                .action(
                    ActionManifest::write("create_issue", "Open an issue")
                        .scopes(&["repo"])
                        .input::<CreateIssue>()
                        .output::<Issue>(),
                )
                .action(
                    ActionManifest::write("create_comment", "Comment on an issue or pull request")
                        .scopes(&["repo"])
                        .input::<CreateComment>()
                        .output::<Comment>(),
                )
                .action(
                    ActionManifest::read("get_issue", "Read an issue")
                        .scopes(&["repo"])
                        .input::<IssueAt>()
                        .output::<Issue>(),
                )
                .action(
                    ActionManifest::destructive("close_issue", "Close an issue")
                        .scopes(&["repo"])
                        .idempotent()
                        .input::<CloseIssue>()
                        .output::<Issue>(),
                )
                .action(
                    ActionManifest::write("create_pull_request", "Open a pull request")
                        .scopes(&["repo"])
                        .input::<CreatePullRequest>()
                        .output::<PullRequest>(),
                )
                .action(
                    ActionManifest::destructive("merge_pull_request", "Merge a pull request")
                        .scopes(&["repo"])
                        .idempotent()
                        .input::<MergePullRequest>()
                        .output::<Merged>(),
                )
                .action(
                    ActionManifest::write(
                        "dispatch_workflow",
                        "Start a GitHub Actions workflow (workflow_dispatch)",
                    )
                    .scopes(&["repo"])
                    .input::<DispatchWorkflow>()
                    .output::<Dispatched>(),
                )
                .action(
                    ActionManifest::read("list_issues", "List a repository's issues")
                        .scopes(&["repo"])
                        .paginated("link", 30, 1000)
                        .input::<ListIssues>()
                        .output::<Listing>(),
                ),
        )
    }
}

/// `create_issue` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateIssue {
    /// Account owning the repository (user or organization).
    pub owner: String,
    /// Repository name, without `.git`.
    pub repo: String,
    /// Title.
    pub title: String,
    /// Body, in Markdown.
    pub body: Option<String>,
    /// Logins to assign.
    pub assignees: Option<Vec<String>>,
    /// Label names.
    pub labels: Option<Vec<String>>,
    /// Milestone number.
    pub milestone: Option<u64>,
}

/// `create_comment` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateComment {
    /// Account owning the repository.
    pub owner: String,
    /// Repository name.
    pub repo: String,
    /// Issue or pull request number.
    pub issue_number: u64,
    /// Comment, in Markdown.
    pub body: String,
}

/// `get_issue` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueAt {
    /// Account owning the repository.
    pub owner: String,
    /// Repository name.
    pub repo: String,
    /// Issue number.
    pub issue_number: u64,
}

/// `close_issue` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseIssue {
    /// Account owning the repository.
    pub owner: String,
    /// Repository name.
    pub repo: String,
    /// Issue number.
    pub issue_number: u64,
    /// Why: `completed` (GitHub's default), `not_planned` or `duplicate`.
    pub state_reason: Option<String>,
}

/// An issue.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Issue {
    /// Number within the repository.
    pub number: u64,
    /// Global id.
    pub id: u64,
    /// Title.
    pub title: Option<String>,
    /// `open` or `closed`.
    pub state: Option<String>,
    /// Web page.
    pub html_url: Option<String>,
    /// The issue as GitHub sent it.
    pub raw: Value,
}

/// A comment.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Comment {
    /// Comment id.
    pub id: u64,
    /// Web page of the comment.
    pub html_url: Option<String>,
}

/// `create_pull_request` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePullRequest {
    /// Account owning the repository.
    pub owner: String,
    /// Repository name.
    pub repo: String,
    /// Title.
    pub title: String,
    /// Branch with the changes (`feature`, or `user:feature` from a fork).
    pub head: String,
    /// Branch to merge into.
    pub base: String,
    /// Description, in Markdown.
    pub body: Option<String>,
    /// Open it as a draft.
    pub draft: Option<bool>,
    /// Let maintainers push to the head branch.
    pub maintainer_can_modify: Option<bool>,
}

/// A pull request.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PullRequest {
    /// Number within the repository.
    pub number: u64,
    /// Global id.
    pub id: u64,
    /// `open` or `closed`.
    pub state: Option<String>,
    /// Whether it is a draft.
    pub draft: Option<bool>,
    /// Web page.
    pub html_url: Option<String>,
    /// Commit at the head branch.
    pub head_sha: Option<String>,
}

/// How to merge.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MergeMethod {
    /// A merge commit.
    Merge,
    /// One squashed commit.
    Squash,
    /// The commits rebased onto the base branch.
    Rebase,
}

/// `merge_pull_request` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MergePullRequest {
    /// Account owning the repository.
    pub owner: String,
    /// Repository name.
    pub repo: String,
    /// Pull request number.
    pub pull_number: u64,
    /// `merge` (default), `squash` or `rebase`.
    pub merge_method: Option<MergeMethod>,
    /// Title of the merge commit.
    pub commit_title: Option<String>,
    /// Message of the merge commit.
    pub commit_message: Option<String>,
    /// Merge only if the head is still this commit (fails with `conflict` otherwise).
    pub sha: Option<String>,
}

/// A merge.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Merged {
    /// The merge commit.
    pub sha: Option<String>,
    /// Whether it merged.
    pub merged: bool,
    /// GitHub's message.
    pub message: Option<String>,
}

/// `dispatch_workflow` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DispatchWorkflow {
    /// Account owning the repository.
    pub owner: String,
    /// Repository name.
    pub repo: String,
    /// The workflow's file name (`deploy.yml`) or numeric id.
    pub workflow_id: String,
    /// Branch or tag to run it on.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// The workflow's `workflow_dispatch` inputs (at most 25).
    pub inputs: Option<Map<String, Value>>,
    /// Ask GitHub for the run's id and URLs. GitHub Enterprise Server releases before this
    /// option refuse it with `400`.
    pub return_run_details: Option<bool>,
}

/// A dispatched workflow.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Dispatched {
    /// The run, when `return_run_details` was asked.
    pub workflow_run_id: Option<u64>,
    /// The run's API URL, when asked.
    pub run_url: Option<String>,
    /// The run's web page, when asked.
    pub html_url: Option<String>,
}

/// `list_issues` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListIssues {
    /// Account owning the repository.
    pub owner: String,
    /// Repository name.
    pub repo: String,
    /// `open` (default), `closed` or `all`.
    pub state: Option<String>,
    /// Label names, comma-separated; issues must have all of them.
    pub labels: Option<String>,
    /// A login, `none` or `*`.
    pub assignee: Option<String>,
    /// Login of the issues' author.
    pub creator: Option<String>,
    /// `created` (default), `updated` or `comments`.
    pub sort: Option<String>,
    /// `asc` or `desc` (default).
    pub direction: Option<String>,
    /// Only issues updated at or after this ISO 8601 time.
    pub since: Option<String>,
    /// Issues wanted in all (default 30, at most 1000). Pull requests count as issues here;
    /// they carry a `pull_request` key.
    pub limit: Option<u32>,
    /// `next_cursor` of an earlier call.
    pub cursor: Option<String>,
}

/// GitHub's rate limits on `403` and `429`, read from headers.
#[derive(Debug)]
pub struct GitHubQuirks;

impl Quirks for GitHubQuirks {
    fn judge(&self, status: StatusCode, headers: &HeaderMap, _: &[u8]) -> Option<Verdict> {
        if status != StatusCode::FORBIDDEN && status != StatusCode::TOO_MANY_REQUESTS {
            return None;
        }
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let now = SystemTime::now();
        // Primary limit: the quota is spent until the reset instant.
        if header("x-ratelimit-remaining").map(str::trim) == Some("0") {
            let wait = header("x-ratelimit-reset").and_then(|v| ratelimit::parse_reset(v, now));
            return Some(Verdict::new(ErrorCode::RateLimited, wait));
        }
        // Secondary limit: GitHub says how long to back off.
        let wait = header("retry-after").and_then(|v| ratelimit::parse_retry_after(v, now))?;
        Some(Verdict::new(ErrorCode::RateLimited, Some(wait)))
    }
}

#[async_trait::async_trait]
impl Connector for GitHub {
    fn manifest(&self) -> &Manifest {
        &self.0
    }

    fn quirks(&self) -> &dyn Quirks {
        &GitHubQuirks
    }

    async fn execute(
        &self,
        call: &Call<'_>,
        action: &str,
        input: Value,
    ) -> Result<Value, ActionError> {
        match action {
            "create_issue" => create_issue(call, parse_input(input)?).await,
            "create_comment" => create_comment(call, parse_input(input)?).await,
            "get_issue" => get_issue(call, parse_input(input)?).await,
            "close_issue" => close_issue(call, parse_input(input)?).await,
            "create_pull_request" => create_pull_request(call, parse_input(input)?).await,
            "merge_pull_request" => merge_pull_request(call, parse_input(input)?).await,
            "dispatch_workflow" => dispatch_workflow(call, parse_input(input)?).await,
            "list_issues" => list_issues(call, parse_input(input)?).await,
            _ => Err(call.unknown_action(action)),
        }
    }

    async fn health(&self, call: &Call<'_>) -> Result<(), ActionError> {
        send(call, request(call, Method::GET, &["user"]))
            .await
            .map(drop)
    }
}

/// A request to base + `segments` with GitHub's media type and API version.
fn request(call: &Call<'_>, method: Method, segments: &[&str]) -> reqwest::RequestBuilder {
    headers(call.request(method, segments))
}

fn headers(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    request
        .header(reqwest::header::ACCEPT, "application/vnd.github+json")
        .header("X-GitHub-Api-Version", API_VERSION)
}

/// Sends `request`; a `422` becomes `invalid_input` naming the fields GitHub rejected.
async fn send(call: &Call<'_>, request: reqwest::RequestBuilder) -> Result<Response, ActionError> {
    let response = call
        .send_accepting(request, |s| {
            s.is_success() || s == StatusCode::UNPROCESSABLE_ENTITY
        })
        .await?;
    if response.status == StatusCode::UNPROCESSABLE_ENTITY {
        return Err(validation_failed(call, &response));
    }
    Ok(response)
}

async fn send_json(
    call: &Call<'_>,
    request: reqwest::RequestBuilder,
) -> Result<Value, ActionError> {
    json_body(&send(call, request).await?)
}

/// `{"message": "Validation Failed", "errors": [{"resource", "field", "code"}]}` as
/// `invalid_input`: ``… reported Validation Failed: `title` missing_field``.
fn validation_failed(call: &Call<'_>, response: &Response) -> ActionError {
    let body: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    let mut detail = body["message"]
        .as_str()
        .unwrap_or("Validation Failed")
        .to_owned();
    let problems: Vec<String> = body["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| match (e["field"].as_str(), e.as_str()) {
                    (Some(field), _) => {
                        let code = e["code"].as_str().unwrap_or("invalid");
                        format!("`{field}` {code}")
                    }
                    // Some errors are plain strings; others are `custom` with a message.
                    (None, Some(text)) => text.to_owned(),
                    (None, None) => e["message"]
                        .as_str()
                        .or(e["code"].as_str())
                        .unwrap_or("invalid")
                        .to_owned(),
                })
                .collect()
        })
        .unwrap_or_default();
    if !problems.is_empty() {
        detail.push_str(": ");
        detail.push_str(&problems.join(", "));
    }
    let mut e = call.provider_error(ErrorCode::InvalidInput, &detail);
    e.status = Some(response.status.as_u16());
    e
}

fn number(value: &Value, field: &str) -> Result<u64, ActionError> {
    value[field].as_u64().ok_or_else(|| missing(field))
}

fn missing(field: &str) -> ActionError {
    ActionError::new(
        ErrorCode::UpstreamUnavailable,
        format!("GitHub's answer has no `{field}`"),
    )
}

fn text(value: &Value, field: &str) -> Option<String> {
    value[field].as_str().map(str::to_owned)
}

fn issue(raw: Value) -> Result<Value, ActionError> {
    output(&Issue {
        number: number(&raw, "number")?,
        id: number(&raw, "id")?,
        title: text(&raw, "title"),
        state: text(&raw, "state"),
        html_url: text(&raw, "html_url"),
        raw,
    })
}

async fn create_issue(call: &Call<'_>, input: CreateIssue) -> Result<Value, ActionError> {
    let mut body = json!({ "title": input.title });
    put(&mut body, "body", input.body);
    put(&mut body, "assignees", input.assignees);
    put(&mut body, "labels", input.labels);
    put(&mut body, "milestone", input.milestone);
    let segments = ["repos", &input.owner, &input.repo, "issues"];
    let raw = send_json(call, request(call, Method::POST, &segments).json(&body)).await?;
    issue(raw)
}

async fn create_comment(call: &Call<'_>, input: CreateComment) -> Result<Value, ActionError> {
    let n = input.issue_number.to_string();
    let segments = ["repos", &input.owner, &input.repo, "issues", &n, "comments"];
    let raw = send_json(
        call,
        request(call, Method::POST, &segments).json(&json!({ "body": input.body })),
    )
    .await?;
    output(&Comment {
        id: number(&raw, "id")?,
        html_url: text(&raw, "html_url"),
    })
}

async fn get_issue(call: &Call<'_>, input: IssueAt) -> Result<Value, ActionError> {
    let n = input.issue_number.to_string();
    let segments = ["repos", &input.owner, &input.repo, "issues", &n];
    issue(send_json(call, request(call, Method::GET, &segments)).await?)
}

async fn close_issue(call: &Call<'_>, input: CloseIssue) -> Result<Value, ActionError> {
    let n = input.issue_number.to_string();
    let segments = ["repos", &input.owner, &input.repo, "issues", &n];
    let mut body = json!({ "state": "closed" });
    put(&mut body, "state_reason", input.state_reason);
    issue(send_json(call, request(call, Method::PATCH, &segments).json(&body)).await?)
}

async fn create_pull_request(
    call: &Call<'_>,
    input: CreatePullRequest,
) -> Result<Value, ActionError> {
    let mut body = json!({ "title": input.title, "head": input.head, "base": input.base });
    put(&mut body, "body", input.body);
    put(&mut body, "draft", input.draft);
    put(
        &mut body,
        "maintainer_can_modify",
        input.maintainer_can_modify,
    );
    let segments = ["repos", &input.owner, &input.repo, "pulls"];
    let raw = send_json(call, request(call, Method::POST, &segments).json(&body)).await?;
    output(&PullRequest {
        number: number(&raw, "number")?,
        id: number(&raw, "id")?,
        state: text(&raw, "state"),
        draft: raw["draft"].as_bool(),
        html_url: text(&raw, "html_url"),
        head_sha: text(&raw["head"], "sha"),
    })
}

async fn merge_pull_request(
    call: &Call<'_>,
    input: MergePullRequest,
) -> Result<Value, ActionError> {
    let n = input.pull_number.to_string();
    let segments = ["repos", &input.owner, &input.repo, "pulls", &n, "merge"];
    let mut body = json!({});
    put(&mut body, "merge_method", input.merge_method);
    put(&mut body, "commit_title", input.commit_title);
    put(&mut body, "commit_message", input.commit_message);
    put(&mut body, "sha", input.sha);
    let raw = send_json(call, request(call, Method::PUT, &segments).json(&body))
        .await
        .map_err(|e| match e.status {
            // Both are the pull request's state, not a passing fault: no retry helps.
            Some(405) => ActionError {
                code: ErrorCode::Conflict,
                message: format!("pull request #{n} is not mergeable: {}", e.message),
                ..e
            },
            Some(409) => ActionError {
                code: ErrorCode::Conflict,
                message: format!(
                    "pull request #{n}'s head is no longer the given `sha`: {}",
                    e.message
                ),
                ..e
            },
            _ => e,
        })?;
    output(&Merged {
        sha: text(&raw, "sha"),
        merged: raw["merged"].as_bool().unwrap_or(false),
        message: text(&raw, "message"),
    })
}

async fn dispatch_workflow(call: &Call<'_>, input: DispatchWorkflow) -> Result<Value, ActionError> {
    let segments = [
        "repos",
        &input.owner,
        &input.repo,
        "actions",
        "workflows",
        &input.workflow_id,
        "dispatches",
    ];
    let mut body = json!({ "ref": input.git_ref });
    put(&mut body, "inputs", input.inputs);
    put(&mut body, "return_run_details", input.return_run_details);
    // `204 No Content`, or `200` with the run when `return_run_details` is set.
    let raw = send_json(call, request(call, Method::POST, &segments).json(&body)).await?;
    output(&Dispatched {
        workflow_run_id: raw["workflow_run_id"].as_u64(),
        run_url: text(&raw, "run_url"),
        html_url: text(&raw, "html_url"),
    })
}

/// The marker a cursor carries when a page was cut short: the items of that page already
/// returned, so the next call starts where this one stopped.
const SKIP: &str = "skip=";

async fn list_issues(call: &Call<'_>, input: ListIssues) -> Result<Value, ActionError> {
    let pagination = call
        .manifest
        .find_action("list_issues")
        .and_then(|a| a.pagination.clone())
        .ok_or_else(|| ActionError::new(ErrorCode::Internal, "list_issues pages"))?;
    let limit = page_limit(input.limit, &pagination)?;
    // GitHub pages by number with a fixed page size, so the size is chosen once.
    let per_page = limit.min(100).to_string();
    let mut first = call.url(&["repos", &input.owner, &input.repo, "issues"]);
    {
        let mut query = first.query_pairs_mut();
        for (name, value) in [
            ("state", &input.state),
            ("labels", &input.labels),
            ("assignee", &input.assignee),
            ("creator", &input.creator),
            ("sort", &input.sort),
            ("direction", &input.direction),
            ("since", &input.since),
        ] {
            if let Some(value) = value {
                query.append_pair(name, value);
            }
        }
        query.append_pair("per_page", &per_page);
    }
    let listing = collect_pages(limit, input.cursor, |cursor, wanted| {
        let first = first.clone();
        async move {
            let mut url = match cursor {
                Some(link) => call.same_origin(&link)?,
                None => first,
            };
            let skip = url
                .fragment()
                .and_then(|f| f.strip_prefix(SKIP))
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(0);
            url.set_fragment(None);
            let response = send(call, headers(call.request_url(Method::GET, url.clone()))).await?;
            let body = json_body(&response)?;
            let mut items: Vec<Value> = body.as_array().cloned().unwrap_or_default();
            items.drain(..skip.min(items.len()));
            let next = if items.len() > wanted {
                // The rest of this page is still to come: resume on it.
                Some(with_skip(url, skip + wanted))
            } else {
                next_link(&response.headers)
            };
            Ok(Page { items, next })
        }
    })
    .await?;
    output(&listing)
}

fn with_skip(mut url: Url, skip: usize) -> String {
    url.set_fragment(Some(&format!("{SKIP}{skip}")));
    url.to_string()
}

/// The `rel="next"` target of a `Link` header (RFC 8288).
pub fn next_link(headers: &HeaderMap) -> Option<String> {
    for value in headers.get_all(LINK) {
        let Ok(mut rest) = value.to_str() else {
            continue;
        };
        while let Some(start) = rest.find('<') {
            let after = &rest[start + 1..];
            let end = after.find('>')?;
            let target = &after[..end];
            let params_end = after[end + 1..]
                .find('<')
                .map_or(after.len(), |i| end + 1 + i);
            let params = &after[end + 1..params_end];
            let is_next = params.split(';').any(|p| {
                let p = p.trim().trim_end_matches(',').trim();
                p.strip_prefix("rel=").is_some_and(|rel| {
                    rel.trim_matches('"')
                        .split_ascii_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("next"))
                })
            });
            if is_next {
                return Some(target.to_owned());
            }
            rest = &after[params_end..];
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn link(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(LINK, HeaderValue::from_str(value).expect("header"));
        h
    }

    #[test]
    fn next_link_is_found_among_the_relations() {
        let h = link(
            r#"<https://api.github.com/repositories/1/issues?page=1>; rel="prev", <https://api.github.com/repositories/1/issues?labels=a,b&page=3>; rel="next", <https://api.github.com/repositories/1/issues?page=9>; rel="last""#,
        );
        assert_eq!(
            next_link(&h).as_deref(),
            Some("https://api.github.com/repositories/1/issues?labels=a,b&page=3")
        );
        assert_eq!(
            next_link(&link(r#"<https://x/?page=1>; rel="first""#)),
            None
        );
        assert_eq!(next_link(&HeaderMap::new()), None);
    }

    #[test]
    fn rate_limits_are_read_from_headers_only() {
        let judge = |status: u16, pairs: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_str(v).expect("header"));
            }
            GitHubQuirks.judge(StatusCode::from_u16(status).expect("status"), &h, b"")
        };
        let primary = judge(
            403,
            &[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "30")],
        )
        .expect("limited");
        assert_eq!(primary.code(), ErrorCode::RateLimited);
        assert_eq!(
            primary.retry_after(),
            Some(std::time::Duration::from_secs(30))
        );
        let secondary = judge(403, &[("retry-after", "60")]).expect("limited");
        assert_eq!(
            secondary.retry_after(),
            Some(std::time::Duration::from_secs(60))
        );
        assert_eq!(judge(403, &[("x-ratelimit-remaining", "12")]), None);
        assert_eq!(judge(404, &[("x-ratelimit-remaining", "0")]), None);
    }
}
