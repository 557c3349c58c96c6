//! Slack, through the Web API (<https://api.slack.com/web>).
//!
//! Every method is `https://slack.com/api/{method}` with the token as `Authorization: Bearer`.
//! Slack answers most failures with HTTP `200` and `{"ok": false, "error": "…"}`: [`SlackQuirks`]
//! turns those into classified failures. Rate limits come as `429` with `Retry-After`.
//! Files go up in Slack's external-upload flow (`files.getUploadURLExternal`, a `POST` of the
//! bytes to the URL it hands out, `files.completeUploadExternal`), which replaced
//! `files.upload`.

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use schemars::JsonSchema;
use schemas::envelope::ErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::ActionError;
use crate::http::{Quirks, Verdict};
use crate::manifest::{ActionManifest, AuthType, Category, Manifest, RateLimit};
use crate::sdk::{Call, Connector, Listing, Page, collect_pages, output, page_limit, parse_input};

/// The Slack connector.
#[derive(Debug)]
pub struct Slack(Manifest);

impl Default for Slack {
    fn default() -> Self {
        Self::new()
    }
}

impl Slack {
    /// Its manifest.
    pub fn new() -> Self {
        Slack(
            Manifest::new("slack", "Slack", Category::Communication)
                .auth(&[AuthType::OAuth2Code, AuthType::Bearer])
                .base_url("https://slack.com/api")
                .docs("https://api.slack.com/methods")
                // Tier 3 methods allow about 50 calls a minute per workspace and app.
                .rate_limit(RateLimit::per_minute(50).with_burst(5))
                .action(
                    ActionManifest::write("post_message", "Post a message to a channel")
                        .scopes(&["chat:write"])
                        .input::<PostMessage>()
                        .output::<MessageRef>(),
                )
                .action(
                    ActionManifest::write("update_message", "Edit a message")
                        .scopes(&["chat:write"])
                        .idempotent()
                        .input::<UpdateMessage>()
                        .output::<MessageRef>(),
                )
                .action(
                    ActionManifest::write(
                        "upload_file",
                        "Upload a file, optionally sharing it to a channel",
                    )
                    .scopes(&["files:write"])
                    .input::<UploadFile>()
                    .output::<UploadedFile>(),
                )
                .action(
                    ActionManifest::read("list_channels", "List channels")
                        .scopes(&["channels:read"])
                        .paginated("cursor", 100, 1000)
                        .input::<ListChannels>()
                        .output::<Listing>(),
                )
                .action(
                    ActionManifest::read("lookup_user_by_email", "Find a user by email address")
                        .scopes(&["users:read.email"])
                        .input::<LookupUser>()
                        .output::<User>(),
                ),
        )
    }
}

/// `post_message` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostMessage {
    /// Channel id (`C0123…`) or name (`#general`).
    pub channel: String,
    /// Text, or the fallback text when `blocks` are given.
    pub text: Option<String>,
    /// Block Kit blocks.
    pub blocks: Option<Vec<Value>>,
    /// Reply in this message's thread (its `ts`).
    pub thread_ts: Option<String>,
    /// Show a thread reply in the channel too.
    pub reply_broadcast: Option<bool>,
    /// Parse links and names in `text` (`true`: unfurl text links).
    pub unfurl_links: Option<bool>,
}

/// `update_message` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMessage {
    /// Channel id holding the message.
    pub channel: String,
    /// The message's `ts`.
    pub ts: String,
    /// New text.
    pub text: Option<String>,
    /// New blocks.
    pub blocks: Option<Vec<Value>>,
}

/// Where a message is.
#[derive(Debug, Serialize, JsonSchema)]
pub struct MessageRef {
    /// Channel id.
    pub channel: String,
    /// The message's timestamp id.
    pub ts: String,
}

/// `upload_file` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadFile {
    /// File name, e.g. `report.csv`.
    pub filename: String,
    /// The content as text.
    pub content: Option<String>,
    /// The content as base64, for binary files; give `content` or `content_base64`.
    pub content_base64: Option<String>,
    /// Title shown in Slack.
    pub title: Option<String>,
    /// Channel id to share it to.
    pub channel_id: Option<String>,
    /// Message posted with it.
    pub initial_comment: Option<String>,
    /// Share it in this thread.
    pub thread_ts: Option<String>,
}

/// An uploaded file.
#[derive(Debug, Serialize, JsonSchema)]
pub struct UploadedFile {
    /// File id (`F0123…`).
    pub id: String,
    /// Its title.
    pub title: Option<String>,
}

/// `list_channels` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListChannels {
    /// Channels wanted in all (default 100, at most 1000).
    pub limit: Option<u32>,
    /// `next_cursor` of an earlier call.
    pub cursor: Option<String>,
    /// `public_channel`, `private_channel`, `mpim`, `im`, comma-separated.
    pub types: Option<String>,
    /// Leave out archived channels.
    pub exclude_archived: Option<bool>,
}

/// `lookup_user_by_email` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LookupUser {
    /// The address.
    pub email: String,
}

/// A Slack user.
#[derive(Debug, Serialize, JsonSchema)]
pub struct User {
    /// User id (`U0123…`).
    pub id: String,
    /// Handle.
    pub name: Option<String>,
    /// Display or real name.
    pub real_name: Option<String>,
    /// Workspace id.
    pub team_id: Option<String>,
    /// The user object as Slack sent it.
    pub raw: Value,
}

/// Slack's `200` with `ok: false`.
#[derive(Debug)]
pub struct SlackQuirks;

impl Quirks for SlackQuirks {
    fn judge(&self, status: StatusCode, _: &HeaderMap, body: &[u8]) -> Option<Verdict> {
        if !status.is_success() {
            return None;
        }
        let body: Value = serde_json::from_slice(body).ok()?;
        if body.get("ok") != Some(&Value::Bool(false)) {
            return None;
        }
        Some(Verdict::new(
            error_code(body["error"].as_str().unwrap_or_default()),
            None,
        ))
    }
}

/// The stable code of one of Slack's `error` strings.
fn error_code(error: &str) -> ErrorCode {
    match error {
        "ratelimited" | "rate_limited" => ErrorCode::RateLimited,
        "invalid_auth" | "not_authed" | "account_inactive" | "token_expired" => {
            ErrorCode::Unauthorized
        }
        "token_revoked" | "app_uninstalled" | "team_access_not_granted" => {
            ErrorCode::ConnectionRevoked
        }
        "missing_scope" | "no_permission" | "not_in_channel" | "restricted_action"
        | "ekm_access_denied" => ErrorCode::Forbidden,
        "channel_not_found" | "users_not_found" | "user_not_found" | "message_not_found"
        | "thread_not_found" | "file_not_found" => ErrorCode::NotFound,
        "internal_error" | "fatal_error" | "service_unavailable" | "request_timeout" => {
            ErrorCode::UpstreamUnavailable
        }
        _ => ErrorCode::InvalidInput,
    }
}

#[async_trait::async_trait]
impl Connector for Slack {
    fn manifest(&self) -> &Manifest {
        &self.0
    }

    fn quirks(&self) -> &dyn Quirks {
        &SlackQuirks
    }

    async fn execute(
        &self,
        call: &Call<'_>,
        action: &str,
        input: Value,
    ) -> Result<Value, ActionError> {
        match action {
            "post_message" => post_message(call, parse_input(input)?).await,
            "update_message" => update_message(call, parse_input(input)?).await,
            "upload_file" => upload_file(call, parse_input(input)?).await,
            "list_channels" => list_channels(call, parse_input(input)?).await,
            "lookup_user_by_email" => lookup_user(call, parse_input(input)?).await,
            _ => Err(call.unknown_action(action)),
        }
    }

    async fn health(&self, call: &Call<'_>) -> Result<(), ActionError> {
        call.send_json(call.post(&["auth.test"])).await.map(drop)
    }
}

fn text(value: &Value, field: &str) -> Result<String, ActionError> {
    value[field].as_str().map(str::to_owned).ok_or_else(|| {
        ActionError::new(
            ErrorCode::UpstreamUnavailable,
            format!("Slack's answer has no `{field}`"),
        )
    })
}

fn require_text_or_blocks(
    text: &Option<String>,
    blocks: &Option<Vec<Value>>,
) -> Result<(), ActionError> {
    if text.is_none() && blocks.is_none() {
        return Err(ActionError::invalid_input(
            "text",
            "give `text`, `blocks` or both",
        ));
    }
    Ok(())
}

async fn post_message(call: &Call<'_>, input: PostMessage) -> Result<Value, ActionError> {
    require_text_or_blocks(&input.text, &input.blocks)?;
    let mut body = json!({ "channel": input.channel });
    put(&mut body, "text", input.text);
    put(&mut body, "blocks", input.blocks);
    put(&mut body, "thread_ts", input.thread_ts);
    put(&mut body, "reply_broadcast", input.reply_broadcast);
    put(&mut body, "unfurl_links", input.unfurl_links);
    let answer = call
        .send_json(call.post(&["chat.postMessage"]).json(&body))
        .await?;
    output(&MessageRef {
        channel: text(&answer, "channel")?,
        ts: text(&answer, "ts")?,
    })
}

async fn update_message(call: &Call<'_>, input: UpdateMessage) -> Result<Value, ActionError> {
    require_text_or_blocks(&input.text, &input.blocks)?;
    let mut body = json!({ "channel": input.channel, "ts": input.ts });
    put(&mut body, "text", input.text);
    put(&mut body, "blocks", input.blocks);
    let answer = call
        .send_json(call.post(&["chat.update"]).json(&body))
        .await?;
    output(&MessageRef {
        channel: text(&answer, "channel")?,
        ts: text(&answer, "ts")?,
    })
}

async fn upload_file(call: &Call<'_>, input: UploadFile) -> Result<Value, ActionError> {
    use base64::Engine as _;
    let bytes = match (input.content, input.content_base64) {
        (Some(text), None) => text.into_bytes(),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|_| ActionError::invalid_input("content_base64", "is not valid base64"))?,
        _ => {
            return Err(ActionError::invalid_input(
                "content",
                "give `content` or `content_base64`, exactly one",
            ));
        }
    };
    // Step 1: a one-time upload URL, sized in advance.
    let length = bytes.len().to_string();
    let ticket = call
        .send_json(call.get(&["files.getUploadURLExternal"]).query(&[
            ("filename", input.filename.as_str()),
            ("length", length.as_str()),
        ]))
        .await?;
    let upload_url = text(&ticket, "upload_url")?;
    let file_id = text(&ticket, "file_id")?;
    let upload_url = reqwest::Url::parse(&upload_url).map_err(|_| {
        ActionError::new(
            ErrorCode::UpstreamUnavailable,
            "Slack's upload_url is not a URL",
        )
    })?;
    // Step 2: the bytes, to the URL Slack handed out (it carries its own authorization).
    call.send(
        call.request_unauthenticated(reqwest::Method::POST, upload_url)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(bytes),
    )
    .await?;
    // Step 3: finish, sharing it where asked.
    let title = input
        .title
        .clone()
        .unwrap_or_else(|| input.filename.clone());
    let mut body = json!({ "files": [{ "id": file_id, "title": title }] });
    put(&mut body, "channel_id", input.channel_id);
    put(&mut body, "initial_comment", input.initial_comment);
    put(&mut body, "thread_ts", input.thread_ts);
    let done = call
        .send_json(call.post(&["files.completeUploadExternal"]).json(&body))
        .await?;
    let file = &done["files"][0];
    output(&UploadedFile {
        id: file["id"].as_str().unwrap_or(&file_id).to_owned(),
        title: file["title"].as_str().map(str::to_owned).or(Some(title)),
    })
}

async fn list_channels(call: &Call<'_>, input: ListChannels) -> Result<Value, ActionError> {
    let pagination = call
        .manifest
        .find_action("list_channels")
        .and_then(|a| a.pagination.clone())
        .ok_or_else(|| ActionError::new(ErrorCode::Internal, "list_channels pages"))?;
    let limit = page_limit(input.limit, &pagination)?;
    let types = input.types.clone();
    let exclude_archived = input.exclude_archived;
    let listing = collect_pages(limit, input.cursor, |cursor, wanted| {
        let types = types.clone();
        async move {
            // Slack returns at most 1000 per page and recommends 200 or fewer.
            let mut query = vec![("limit", wanted.min(200).to_string())];
            if let Some(cursor) = cursor {
                query.push(("cursor", cursor));
            }
            if let Some(types) = types {
                query.push(("types", types));
            }
            if let Some(exclude) = exclude_archived {
                query.push(("exclude_archived", exclude.to_string()));
            }
            let page = call
                .send_json(call.get(&["conversations.list"]).query(&query))
                .await?;
            Ok(Page {
                items: page["channels"].as_array().cloned().unwrap_or_default(),
                next: page["response_metadata"]["next_cursor"]
                    .as_str()
                    .map(str::to_owned),
            })
        }
    })
    .await?;
    output(&listing)
}

async fn lookup_user(call: &Call<'_>, input: LookupUser) -> Result<Value, ActionError> {
    let answer = call
        .send_json(
            call.get(&["users.lookupByEmail"])
                .query(&[("email", input.email.as_str())]),
        )
        .await?;
    let user = answer["user"].clone();
    output(&User {
        id: text(&user, "id")?,
        name: user["name"].as_str().map(str::to_owned),
        real_name: user["real_name"].as_str().map(str::to_owned),
        team_id: user["team_id"].as_str().map(str::to_owned),
        raw: user,
    })
}

/// Sets `field` on a JSON body when `value` is given.
pub(crate) fn put<T: Serialize>(body: &mut Value, field: &str, value: Option<T>) {
    if let Some(value) = value
        && let Ok(value) = serde_json::to_value(value)
    {
        body[field] = value;
    }
}
