//! Dropbox, through the API v2 (<https://www.dropbox.com/developers/documentation/http/documentation>).
//!
//! The OAuth access token goes in `Authorization: Bearer`. Dropbox has two hosts:
//! - RPC endpoints (`list_folder`, sharing, `get_current_account`) on
//!   `https://api.dropboxapi.com/2/…`, with a JSON body;
//! - content endpoints (`files/upload`, `files/download`) on `https://content.dropboxapi.com/2/…`,
//!   with the JSON arguments in the `Dropbox-API-Arg` header, the bytes as the body
//!   (`application/octet-stream`), and a download's metadata in the `Dropbox-API-Result`
//!   response header. Header values are ASCII, so every character from `0x7F` on is written
//!   as a `\uXXXX` escape ([`header_safe_json`]).
//!
//! **Base URL.** The connection's `base_url` (default `https://api.dropboxapi.com`) is the RPC
//! host. When it is Dropbox's own, content calls go to `content.dropboxapi.com` with the same
//! scheme, port and path; any other base URL (a proxy, a test double) serves both kinds of
//! call, so one override redirects the whole connector ([`content_base`]).
//!
//! **Errors.** An endpoint's own errors are `409` with `{"error_summary": "path/not_found/..",
//! "error": {".tag": "path", "path": {".tag": "not_found"}}}`; [`DropboxQuirks`] classifies
//! them by the `.tag` chain, never by the summary text. Auth errors are `401` with a tag
//! (`expired_access_token`, `missing_scope`…). Rate limits are `429` with `Retry-After` and
//! `{"error": {"reason": {".tag": "too_many_requests"}, "retry_after": 300}}`. Bad requests
//! are `400` with plain text.

use std::time::{Duration, SystemTime};

use reqwest::header::{CONTENT_TYPE, HeaderMap};
use reqwest::{Method, StatusCode, Url};
use schemars::JsonSchema;
use schemas::envelope::ErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::file_support::{
    collect_fixed_pages, content_bytes, optional_str, required_str, to_base64,
};
use crate::error::ActionError;
use crate::http::{Quirks, Verdict, ratelimit};
use crate::manifest::{ActionManifest, AuthType, Category, Manifest, RateLimit};
use crate::sdk::{Call, Connector, Listing, Page, json_body, output, page_limit, parse_input};

/// Dropbox's RPC host.
pub const API_HOST: &str = "api.dropboxapi.com";
/// Dropbox's content host.
pub const CONTENT_HOST: &str = "content.dropboxapi.com";

/// The most entries `list_folder` is asked for per page.
const PAGE_MAX: usize = 2000;

/// The Dropbox connector.
#[derive(Debug)]
pub struct Dropbox(Manifest);

impl Default for Dropbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Dropbox {
    /// Its manifest.
    pub fn new() -> Self {
        Dropbox(
            Manifest::new("dropbox", "Dropbox", Category::Files)
                .auth(&[AuthType::OAuth2Code, AuthType::Bearer])
                .base_url("https://api.dropboxapi.com")
                .docs("https://www.dropbox.com/developers/documentation/http/documentation")
                // Dropbox limits per user and app without publishing numbers, answering `429`
                // with `Retry-After`; ten a second is well inside what it takes in practice.
                .rate_limit(RateLimit::per_second(10).with_burst(10))
                .action(
                    ActionManifest::write("upload", "Upload a file of up to 150 MB")
                        .scopes(&["files.content.write"])
                        .input::<Upload>()
                        .output::<FileMetadata>(),
                )
                .action(
                    ActionManifest::read("download", "Download a file's content")
                        .scopes(&["files.content.read"])
                        .input::<Download>()
                        .output::<Downloaded>(),
                )
                .action(
                    ActionManifest::read("list_folder", "List a folder's entries")
                        .scopes(&["files.metadata.read"])
                        .paginated("cursor", 100, 10_000)
                        .input::<ListFolder>()
                        .output::<Listing>(),
                )
                .action(
                    ActionManifest::write(
                        "create_shared_link",
                        "Create a shared link, or return the one that exists",
                    )
                    .scopes(&["sharing.write"])
                    // An existing link is returned instead of a second one.
                    .idempotent()
                    .secret_fields(&["link_password"])
                    .input::<CreateSharedLink>()
                    .output::<SharedLink>(),
                ),
        )
    }
}

/// What an upload does when the path is taken.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    /// Keep the existing file; fail with `conflict` (or rename, with `autorename`).
    #[default]
    Add,
    /// Replace the existing file.
    Overwrite,
}

/// `upload` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Upload {
    /// Path in the user's Dropbox, e.g. `/Reports/q1.csv`.
    pub path: String,
    /// The content as text.
    pub content: Option<String>,
    /// The content as base64, for binary files; give `content` or `content_base64`.
    pub content_base64: Option<String>,
    /// `add` (default) or `overwrite`.
    pub mode: Option<WriteMode>,
    /// With `add`, rename the upload (`q1 (1).csv`) instead of failing when the path is taken.
    #[serde(default)]
    pub autorename: bool,
    /// Do not notify the user's devices about the change.
    #[serde(default)]
    pub mute: bool,
}

/// A file's metadata.
#[derive(Debug, Serialize, JsonSchema)]
pub struct FileMetadata {
    /// File id (`id:a4ayc_80_OEAAAAAAAAAXw`).
    pub id: String,
    /// Its name.
    pub name: Option<String>,
    /// Its path, as cased by the user.
    pub path_display: Option<String>,
    /// Revision id.
    pub rev: Option<String>,
    /// Size in bytes.
    pub size: Option<u64>,
    /// The metadata as Dropbox sent it.
    pub raw: Value,
}

impl FileMetadata {
    fn from_resource(raw: Value) -> Result<Self, ActionError> {
        Ok(FileMetadata {
            id: required_str(&raw, "id", "Dropbox")?,
            name: optional_str(&raw, "name"),
            path_display: optional_str(&raw, "path_display"),
            rev: optional_str(&raw, "rev"),
            size: raw["size"].as_u64(),
            raw,
        })
    }
}

/// `download` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Download {
    /// Path (`/Reports/q1.csv`), file id (`id:…`) or revision (`rev:…`).
    pub path: String,
}

/// A downloaded file.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Downloaded {
    /// File id.
    pub id: Option<String>,
    /// Its name.
    pub name: Option<String>,
    /// Its path, as cased by the user.
    pub path_display: Option<String>,
    /// Revision id.
    pub rev: Option<String>,
    /// Bytes returned.
    pub size: usize,
    /// The content, base64.
    pub content_base64: String,
    /// The metadata from `Dropbox-API-Result`.
    pub metadata: Value,
}

/// `list_folder` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListFolder {
    /// Folder path (default: the root, `""`), or a folder id (`id:…`).
    pub path: Option<String>,
    /// Include every subfolder's entries too.
    #[serde(default)]
    pub recursive: bool,
    /// Include deleted files and folders.
    #[serde(default)]
    pub include_deleted: bool,
    /// Entries wanted in all (default 100, at most 10000). Dropbox keeps the first page's
    /// size for the whole listing, so fewer may come back with a `next_cursor` rather than
    /// cut a page.
    pub limit: Option<u32>,
    /// `next_cursor` of an earlier call; continues that listing (`path` is then ignored).
    pub cursor: Option<String>,
}

/// Who a shared link is for.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    /// Anyone with the link.
    Public,
    /// Members of the user's team.
    Team,
    /// Only people already invited to the file.
    NoOne,
}

/// `create_shared_link` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSharedLink {
    /// Path or id of the file or folder.
    pub path: String,
    /// `public`, `team` or `no_one` (default: the team's policy).
    pub audience: Option<Audience>,
    /// Let viewers download (default: the team's policy).
    pub allow_download: Option<bool>,
    /// Expiry, e.g. `2025-12-31T23:59:59Z` (paid plans).
    pub expires: Option<String>,
    /// Require this password to open the link (paid plans).
    pub link_password: Option<String>,
}

/// A shared link.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SharedLink {
    /// The link.
    pub url: String,
    /// Name of the linked file or folder.
    pub name: Option<String>,
    /// Its lowercased path, when the user can see it.
    pub path_lower: Option<String>,
    /// Whether the link existed already (its settings are then the existing ones).
    pub existing: bool,
    /// The link metadata as Dropbox sent it.
    pub raw: Value,
}

/// Dropbox's tagged errors on `401`, `409` and `429`.
#[derive(Debug)]
pub struct DropboxQuirks;

impl Quirks for DropboxQuirks {
    fn judge(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Option<Verdict> {
        if !matches!(status.as_u16(), 401 | 409 | 429) {
            return None;
        }
        let body: Value = serde_json::from_slice(body).ok()?;
        let error = &body["error"];
        let tags = tag_chain(error);
        // Handed back to `create_shared_link`, which accepts `409` to read the link.
        if status == StatusCode::CONFLICT
            && tags.first() == Some(&"shared_link_already_exists")
            && existing_link(error).is_some()
        {
            return None;
        }
        let code = tags
            .iter()
            .find_map(|tag| code_for_tag(tag))
            .unwrap_or(match status {
                StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
                StatusCode::TOO_MANY_REQUESTS => ErrorCode::RateLimited,
                // Dropbox's `409` is "an endpoint-specific error", mostly about the inputs.
                _ => ErrorCode::InvalidInput,
            });
        let wait = ratelimit::wait_hint(status, headers, SystemTime::now())
            .or_else(|| error["retry_after"].as_u64().map(Duration::from_secs));
        Some(Verdict::new(code, wait))
    }
}

/// The `.tag`s of a Dropbox error, outermost first: `{".tag": "path", "path": {".tag":
/// "not_found"}}` is `["path", "not_found"]`. A union's value sits under its tag's name, or
/// under `reason` (upload errors, rate limits).
fn tag_chain(error: &Value) -> Vec<&str> {
    let mut tags = Vec::new();
    let mut at = error;
    for _ in 0..8 {
        let tag = at[".tag"].as_str();
        if let Some(tag) = tag {
            tags.push(tag);
        }
        let next = tag
            .map(|t| &at[t])
            .filter(|v| v.is_object())
            .or_else(|| Some(&at["reason"]).filter(|v| v.is_object()));
        match next {
            Some(next) => at = next,
            None => break,
        }
    }
    tags
}

fn code_for_tag(tag: &str) -> Option<ErrorCode> {
    Some(match tag {
        "too_many_requests" | "too_many_write_operations" => ErrorCode::RateLimited,
        "invalid_access_token"
        | "expired_access_token"
        | "invalid_select_user"
        | "invalid_select_admin" => ErrorCode::Unauthorized,
        "missing_scope"
        | "route_access_denied"
        | "user_suspended"
        | "no_write_permission"
        | "access_denied"
        | "restricted_content"
        | "team_folder"
        | "email_not_verified"
        | "insufficient_space"
        | "shared_link_access_denied" => ErrorCode::Forbidden,
        "not_found" => ErrorCode::NotFound,
        "conflict" | "shared_link_already_exists" => ErrorCode::Conflict,
        "malformed_path" | "disallowed_name" | "not_file" | "not_folder" | "reset"
        | "settings_error" => ErrorCode::InvalidInput,
        _ => return None,
    })
}

/// The link a `shared_link_already_exists` error carries, when it carries one.
fn existing_link(error: &Value) -> Option<&Value> {
    let detail = &error["shared_link_already_exists"];
    (detail[".tag"] == "metadata")
        .then(|| &detail["metadata"])
        .filter(|m| m["url"].is_string())
}

/// `value` as JSON fit for a header: every character from `0x7F` on as `\uXXXX` (UTF-16).
pub fn header_safe_json(value: &Value) -> String {
    let mut out = String::new();
    for c in value.to_string().chars() {
        if (c as u32) < 0x7F {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// Where content calls go for the RPC base URL `base`: `content.dropboxapi.com` instead of
/// Dropbox's `api.dropboxapi.com`, the same base URL otherwise.
pub fn content_base(base: &Url) -> Url {
    let mut url = base.clone();
    if base.host_str() == Some(API_HOST) {
        // Setting a registered domain name on an http(s) URL cannot fail.
        let _ = url.set_host(Some(CONTENT_HOST));
    }
    url
}

/// A `POST` to a content endpoint, with the credential and `arg` in `Dropbox-API-Arg`.
fn content_request(call: &Call<'_>, segments: &[&str], arg: &Value) -> reqwest::RequestBuilder {
    let mut url = content_base(call.base());
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    call.request_url(Method::POST, url)
        .header("Dropbox-API-Arg", header_safe_json(arg))
}

#[async_trait::async_trait]
impl Connector for Dropbox {
    fn manifest(&self) -> &Manifest {
        &self.0
    }

    fn quirks(&self) -> &dyn Quirks {
        &DropboxQuirks
    }

    async fn execute(
        &self,
        call: &Call<'_>,
        action: &str,
        input: Value,
    ) -> Result<Value, ActionError> {
        match action {
            "upload" => upload(call, parse_input(input)?).await,
            "download" => download(call, parse_input(input)?).await,
            "list_folder" => list_folder(call, parse_input(input)?).await,
            "create_shared_link" => create_shared_link(call, parse_input(input)?).await,
            _ => Err(call.unknown_action(action)),
        }
    }

    async fn health(&self, call: &Call<'_>) -> Result<(), ActionError> {
        // No arguments: no body and no content type, as the reference shows.
        call.send(call.post(&["2", "users", "get_current_account"]))
            .await
            .map(drop)
    }
}

async fn upload(call: &Call<'_>, input: Upload) -> Result<Value, ActionError> {
    let bytes = content_bytes(input.content, input.content_base64)?;
    let arg = json!({
        "path": input.path,
        "mode": input.mode.unwrap_or_default(),
        "autorename": input.autorename,
        "mute": input.mute,
    });
    let request = content_request(call, &["2", "files", "upload"], &arg)
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(bytes);
    output(&FileMetadata::from_resource(
        call.send_json(request).await?,
    )?)
}

async fn download(call: &Call<'_>, input: Download) -> Result<Value, ActionError> {
    let arg = json!({ "path": input.path });
    let response = call
        .send(content_request(call, &["2", "files", "download"], &arg))
        .await?;
    let metadata = response
        .headers
        .get("dropbox-api-result")
        .and_then(|v| serde_json::from_slice::<Value>(v.as_bytes()).ok())
        .unwrap_or(Value::Null);
    output(&Downloaded {
        id: optional_str(&metadata, "id"),
        name: optional_str(&metadata, "name"),
        path_display: optional_str(&metadata, "path_display"),
        rev: optional_str(&metadata, "rev"),
        size: response.body.len(),
        content_base64: to_base64(&response.body),
        metadata,
    })
}

async fn list_folder(call: &Call<'_>, input: ListFolder) -> Result<Value, ActionError> {
    let pagination = call
        .manifest
        .find_action("list_folder")
        .and_then(|a| a.pagination.clone())
        .ok_or_else(|| ActionError::new(ErrorCode::Internal, "list_folder pages"))?;
    let limit = page_limit(input.limit, &pagination)?;
    let page_size = limit.min(PAGE_MAX);
    let first = json!({
        "path": input.path.clone().unwrap_or_default(),
        "recursive": input.recursive,
        "include_deleted": input.include_deleted,
        "limit": page_size,
    });
    let first = &first;
    let listing = collect_fixed_pages(limit, page_size, input.cursor, |cursor| async move {
        let request = match cursor {
            Some(cursor) => call
                .post(&["2", "files", "list_folder", "continue"])
                .json(&json!({ "cursor": cursor })),
            None => call.post(&["2", "files", "list_folder"]).json(first),
        };
        let page = call.send_json(request).await?;
        Ok(Page {
            items: page["entries"].as_array().cloned().unwrap_or_default(),
            // The cursor is also sent at the end (for later changes); only `has_more`
            // says there is a next page.
            next: if page["has_more"] == true {
                optional_str(&page, "cursor")
            } else {
                None
            },
        })
    })
    .await?;
    output(&listing)
}

async fn create_shared_link(
    call: &Call<'_>,
    input: CreateSharedLink,
) -> Result<Value, ActionError> {
    let mut settings = serde_json::Map::new();
    if let Some(audience) = input.audience {
        settings.insert("audience".into(), json!(audience));
    }
    if let Some(allow) = input.allow_download {
        settings.insert("allow_download".into(), json!(allow));
    }
    if let Some(expires) = input.expires {
        settings.insert("expires".into(), json!(expires));
    }
    if let Some(password) = input.link_password {
        settings.insert("require_password".into(), json!(true));
        settings.insert("link_password".into(), json!(password));
    }
    let mut body = json!({ "path": input.path });
    if !settings.is_empty() {
        body["settings"] = Value::Object(settings);
    }
    let request = call
        .post(&["2", "sharing", "create_shared_link_with_settings"])
        .json(&body);
    // A `409` reaches here only when it is `shared_link_already_exists` with the link
    // ([`DropboxQuirks`] fails every other one).
    let response = call
        .send_accepting(request, |s| s.is_success() || s == StatusCode::CONFLICT)
        .await?;
    let answer = json_body(&response)?;
    let (link, existing) = if response.status == StatusCode::CONFLICT {
        let link = existing_link(&answer["error"])
            .cloned()
            .ok_or_else(|| ActionError::new(ErrorCode::Conflict, "Dropbox reported a conflict"))?;
        (link, true)
    } else {
        (answer, false)
    };
    output(&SharedLink {
        url: required_str(&link, "url", "Dropbox")?,
        name: optional_str(&link, "name"),
        path_lower: optional_str(&link, "path_lower"),
        existing,
        raw: link,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_json_escapes_everything_past_ascii() {
        let arg = json!({ "path": "/Résumé/日本\u{7f}😀.txt" });
        let safe = header_safe_json(&arg);
        assert_eq!(
            safe,
            r#"{"path":"/R\u00e9sum\u00e9/\u65e5\u672c\u007f\ud83d\ude00.txt"}"#
        );
        assert_eq!(serde_json::from_str::<Value>(&safe).expect("json"), arg);
    }

    #[test]
    fn content_calls_go_to_the_content_host_only_for_dropbox() {
        let dropbox = Url::parse("https://api.dropboxapi.com").expect("url");
        assert_eq!(
            content_base(&dropbox).as_str(),
            "https://content.dropboxapi.com/"
        );
        let proxy = Url::parse("https://dropbox-proxy.internal:8443/dbx").expect("url");
        assert_eq!(content_base(&proxy), proxy);
    }

    #[test]
    fn errors_are_classified_by_their_tags() {
        let judge = |status: u16, body: Value| {
            DropboxQuirks
                .judge(
                    StatusCode::from_u16(status).expect("status"),
                    &HeaderMap::new(),
                    body.to_string().as_bytes(),
                )
                .map(|v| (v.code(), v.retry_after()))
        };
        let conflict = json!({ "error_summary": "path/conflict/file/..", "error": {
            ".tag": "path", "reason": { ".tag": "conflict", "conflict": { ".tag": "file" } },
            "upload_session_id": "1234" } });
        assert_eq!(judge(409, conflict), Some((ErrorCode::Conflict, None)));
        // The summary text is not read: a misleading one changes nothing.
        let not_found = json!({ "error_summary": "too_many_requests/..", "error": {
            ".tag": "path", "path": { ".tag": "not_found" } } });
        assert_eq!(judge(409, not_found), Some((ErrorCode::NotFound, None)));
        let limited = json!({ "error_summary": "too_many_requests/",
            "error": { "reason": { ".tag": "too_many_requests" }, "retry_after": 300 } });
        assert_eq!(
            judge(429, limited),
            Some((ErrorCode::RateLimited, Some(Duration::from_secs(300))))
        );
        let scope = json!({ "error_summary": "missing_scope/..", "error": {
            ".tag": "missing_scope", "required_scope": "files.content.write" } });
        assert_eq!(judge(401, scope), Some((ErrorCode::Forbidden, None)));
        assert_eq!(judge(400, json!("Error in call")), None);
    }
}
