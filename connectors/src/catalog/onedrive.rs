//! OneDrive and SharePoint document libraries, through Microsoft Graph
//! (<https://learn.microsoft.com/en-us/graph/api/resources/onedrive>).
//!
//! Base URL `https://graph.microsoft.com`, every path under `/v1.0`, the OAuth access token
//! in `Authorization: Bearer`. A drive is the signed-in user's (`/me/drive`) unless a step
//! names one (`/drives/{drive-id}`).
//!
//! - `upload` is the simple upload, `PUT …/root:/{path}:/content` with the raw bytes, which
//!   Graph takes for files up to 4 MB (larger ones need an upload session). Each path segment
//!   is percent-encoded on its own; the `:` that open and close the path are Graph's syntax,
//!   so a segment holding `:` (which OneDrive forbids in names anyway) is refused.
//! - `download` reads the item and fetches its `@microsoft.graph.downloadUrl`, the short-lived
//!   pre-authenticated URL that `GET …/items/{id}/content` redirects to, without the token.
//!   It is fetched explicitly rather than through the `302`: the shared client follows
//!   redirects itself (see [`crate::http::new_client`]), so the connector would never see the
//!   redirect, and a credential carried in a custom header would go along to the storage
//!   host.
//! - `list` reads `…/children` with `$top`, following `@odata.nextLink` on the same origin.
//!
//! Errors and throttling: see [`super::graph_files`].

use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, Url};
use schemars::JsonSchema;
use schemas::envelope::ErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::file_support::{
    collect_fixed_pages, content_bytes, optional_str, required_str, to_base64,
};
use super::graph_files::{GraphQuirks, drive_path};
use crate::error::ActionError;
use crate::http::Quirks;
use crate::manifest::{ActionManifest, AuthType, Category, Manifest, RateLimit};
use crate::sdk::{Call, Connector, Listing, Page, output, page_limit, parse_input};

/// The largest file the simple upload takes.
pub const SIMPLE_UPLOAD_MAX_BYTES: usize = 4 * 1024 * 1024;

/// The largest page asked for with `$top`.
const PAGE_MAX: usize = 200;

/// The OneDrive connector.
#[derive(Debug)]
pub struct OneDrive(Manifest);

impl Default for OneDrive {
    fn default() -> Self {
        Self::new()
    }
}

impl OneDrive {
    /// Its manifest.
    pub fn new() -> Self {
        OneDrive(
            Manifest::new("onedrive", "OneDrive", Category::Files)
                .auth(&[AuthType::OAuth2Code, AuthType::Bearer])
                .base_url("https://graph.microsoft.com")
                .docs("https://learn.microsoft.com/en-us/graph/api/resources/onedrive")
                // Graph throttles OneDrive by resource units per app and tenant, with no fixed
                // request count; ten a second stays well inside what one user's flows need.
                .rate_limit(RateLimit::per_second(10).with_burst(10))
                .action(
                    ActionManifest::write("upload", "Upload a file of up to 4 MB to a path")
                        .scopes(&["Files.ReadWrite"])
                        // A PUT of the whole content to a path: repeating it leaves the same file.
                        .idempotent()
                        .input::<Upload>()
                        .output::<Item>(),
                )
                .action(
                    ActionManifest::read("download", "Download a file's content")
                        .scopes(&["Files.Read"])
                        .input::<Download>()
                        .output::<Downloaded>(),
                )
                .action(
                    ActionManifest::read("list", "List the children of a folder")
                        .scopes(&["Files.Read"])
                        .paginated("link", 100, 1000)
                        .input::<List>()
                        .output::<Listing>(),
                ),
        )
    }
}

/// What to do when the path is taken.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConflictBehavior {
    /// Overwrite the file (a new version).
    #[default]
    Replace,
    /// Fail with `conflict`.
    Fail,
}

/// `upload` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Upload {
    /// Path from the drive's root, folders included, e.g. `Reports/2024/q1.csv`; missing
    /// folders are created.
    pub path: String,
    /// The content as text.
    pub content: Option<String>,
    /// The content as base64, for binary files; give `content` or `content_base64`.
    pub content_base64: Option<String>,
    /// MIME type sent with the content (default `text/plain` for `content`,
    /// `application/octet-stream` for `content_base64`).
    pub content_type: Option<String>,
    /// A drive other than the signed-in user's (a SharePoint library's drive id).
    pub drive_id: Option<String>,
    /// `replace` (default) or `fail` when a file exists at `path`.
    pub conflict_behavior: Option<ConflictBehavior>,
}

/// A drive item.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Item {
    /// Item id.
    pub id: String,
    /// Its name.
    pub name: Option<String>,
    /// Size in bytes.
    pub size: Option<u64>,
    /// Link to open it in the browser.
    pub web_url: Option<String>,
    /// Its entity tag (changes with every edit).
    pub e_tag: Option<String>,
    /// The driveItem as Graph sent it.
    pub raw: Value,
}

/// `download` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Download {
    /// Item id of the file.
    pub item_id: String,
    /// A drive other than the signed-in user's.
    pub drive_id: Option<String>,
}

/// A downloaded file.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Downloaded {
    /// Item id.
    pub id: String,
    /// Its name.
    pub name: Option<String>,
    /// Its MIME type, as Graph records it.
    pub mime_type: Option<String>,
    /// Bytes returned.
    pub size: usize,
    /// The content, base64.
    pub content_base64: String,
}

/// `list` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct List {
    /// Folder item id (default: the drive's root).
    pub item_id: Option<String>,
    /// A drive other than the signed-in user's.
    pub drive_id: Option<String>,
    /// Items wanted in all (default 100, at most 1000). Graph keeps the first page's size
    /// for the whole listing, so fewer may come back with a `next_cursor` rather than cut a
    /// page.
    pub limit: Option<u32>,
    /// `next_cursor` of an earlier call (an `@odata.nextLink`).
    pub cursor: Option<String>,
}

#[async_trait::async_trait]
impl Connector for OneDrive {
    fn manifest(&self) -> &Manifest {
        &self.0
    }

    fn quirks(&self) -> &dyn Quirks {
        &GraphQuirks
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
            "list" => list(call, parse_input(input)?).await,
            _ => Err(call.unknown_action(action)),
        }
    }

    async fn health(&self, call: &Call<'_>) -> Result<(), ActionError> {
        call.send(call.get(&drive_path(None))).await.map(drop)
    }
}

/// The segments of `path` for `root:/{path}:`, each to be encoded on its own.
fn path_segments(path: &str) -> Result<Vec<&str>, ActionError> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segments.is_empty() {
        return Err(ActionError::invalid_input("path", "names no file"));
    }
    for segment in &segments {
        if matches!(*segment, "." | "..") {
            return Err(ActionError::invalid_input(
                "path",
                "may not contain `.` or `..` segments",
            ));
        }
        if segment.contains([':', '\\']) || segment.chars().any(char::is_control) {
            return Err(ActionError::invalid_input(
                "path",
                "may not contain `:`, `\\` or control characters",
            ));
        }
    }
    Ok(segments)
}

impl Item {
    fn from_resource(raw: Value) -> Result<Self, ActionError> {
        Ok(Item {
            id: required_str(&raw, "id", "Graph")?,
            name: optional_str(&raw, "name"),
            size: raw["size"].as_u64(),
            web_url: optional_str(&raw, "webUrl"),
            e_tag: optional_str(&raw, "eTag"),
            raw,
        })
    }
}

async fn upload(call: &Call<'_>, input: Upload) -> Result<Value, ActionError> {
    let segments = path_segments(&input.path)?;
    let text = input.content.is_some();
    let bytes = content_bytes(input.content, input.content_base64)?;
    if bytes.len() > SIMPLE_UPLOAD_MAX_BYTES {
        return Err(ActionError::invalid_input(
            "content",
            format!(
                "is {} bytes; the simple upload takes at most 4 MB",
                bytes.len()
            ),
        ));
    }
    let content_type = input.content_type.unwrap_or_else(|| {
        if text {
            "text/plain".to_owned()
        } else {
            "application/octet-stream".to_owned()
        }
    });
    // `root:/Reports/q1.csv:/content`: the last segment carries the closing colon.
    let (last, folders) = segments
        .split_last()
        .ok_or_else(|| ActionError::invalid_input("path", "names no file"))?;
    let last = format!("{last}:");
    let mut url_path = drive_path(input.drive_id.as_deref());
    url_path.push("root:");
    url_path.extend(folders.iter().copied());
    url_path.push(&last);
    url_path.push("content");
    let mut request = call
        .put(&url_path)
        .header(CONTENT_TYPE, content_type)
        .body(bytes);
    if let Some(ConflictBehavior::Fail) = input.conflict_behavior {
        request = request.query(&[("@microsoft.graph.conflictBehavior", "fail")]);
    }
    output(&Item::from_resource(call.send_json(request).await?)?)
}

async fn download(call: &Call<'_>, input: Download) -> Result<Value, ActionError> {
    let mut url_path = drive_path(input.drive_id.as_deref());
    url_path.extend(["items", input.item_id.as_str()]);
    let item = call.send_json(call.get(&url_path)).await?;
    if item.get("file").is_none() {
        return Err(ActionError::invalid_input(
            "item_id",
            "is not a file (folders and packages have no content to download)",
        ));
    }
    let link = item["@microsoft.graph.downloadUrl"]
        .as_str()
        .ok_or_else(|| {
            ActionError::new(
                ErrorCode::UpstreamUnavailable,
                "Graph's answer has no `@microsoft.graph.downloadUrl`",
            )
        })?;
    let url = Url::parse(link).map_err(|_| {
        ActionError::new(
            ErrorCode::UpstreamUnavailable,
            "Graph's download URL is not a URL",
        )
    })?;
    // Pre-authenticated on https; plain http only when the connection itself is (a test
    // double), never a downgrade.
    if !(url.scheme() == "https" || url.scheme() == call.base().scheme()) {
        return Err(ActionError::new(
            ErrorCode::UpstreamUnavailable,
            "Graph's download URL is not https; it was not fetched",
        ));
    }
    let response = call
        .send(call.request_unauthenticated(Method::GET, url))
        .await?;
    output(&Downloaded {
        id: optional_str(&item, "id").unwrap_or(input.item_id),
        name: optional_str(&item, "name"),
        mime_type: item["file"]["mimeType"].as_str().map(str::to_owned),
        size: response.body.len(),
        content_base64: to_base64(&response.body),
    })
}

async fn list(call: &Call<'_>, input: List) -> Result<Value, ActionError> {
    let pagination = call
        .manifest
        .find_action("list")
        .and_then(|a| a.pagination.clone())
        .ok_or_else(|| ActionError::new(ErrorCode::Internal, "list pages"))?;
    let limit = page_limit(input.limit, &pagination)?;
    let page_size = limit.min(PAGE_MAX);
    let mut first = drive_path(input.drive_id.as_deref());
    match input.item_id.as_deref() {
        Some(id) => first.extend(["items", id, "children"]),
        None => first.extend(["root", "children"]),
    }
    let first = &first;
    let listing = collect_fixed_pages(limit, page_size, input.cursor, |cursor| async move {
        let request = match cursor {
            // The link carries `$top` and `$skiptoken`; it is followed as given.
            Some(link) => call.request_url(Method::GET, call.same_origin(&link)?),
            None => call.get(first).query(&[("$top", page_size.to_string())]),
        };
        let page = call.send_json(request).await?;
        Ok(Page {
            items: page["value"].as_array().cloned().unwrap_or_default(),
            next: optional_str(&page, "@odata.nextLink"),
        })
    })
    .await?;
    output(&listing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_keep_their_shape() {
        assert_eq!(
            path_segments("/Reports//2024/q1.csv").expect("path"),
            ["Reports", "2024", "q1.csv"]
        );
        for bad in ["", "/", "a/../b", "a:b/c", "a\\b"] {
            assert!(path_segments(bad).is_err(), "{bad}");
        }
    }
}
