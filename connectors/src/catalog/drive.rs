//! Google Drive, through the Drive API v3 (<https://developers.google.com/drive/api/reference/rest/v3>).
//!
//! Base URL `https://www.googleapis.com`: metadata calls are under `/drive/v3/…`, uploads under
//! `/upload/drive/v3/files`. The OAuth access token (a user's, or a service account's from the
//! JWT bearer grant) goes in `Authorization: Bearer`.
//!
//! - Uploads are multipart (`uploadType=multipart`): a `multipart/related` body with the JSON
//!   metadata part, then the media part. Google recommends it for files of 5 MB or less.
//! - Downloads read `files.get` with `alt=media`; Google Docs, Sheets, Slides and Drawings
//!   have no bytes of their own and are exported (`files.export`, at most 10 MB) instead.
//! - Every call sets `supportsAllDrives=true`, so files on shared drives work too.
//!
//! Errors are `{"error": {"code", "message", "errors": [{"domain", "reason", "message"}],
//! "status"}}`. Google reports quota exhaustion as `403` with the reason `rateLimitExceeded`,
//! `userRateLimitExceeded` or `sharingRateLimitExceeded`: [`DriveQuirks`] makes those
//! `rate_limited`. Other rate limits come as `429`, sometimes with `Retry-After` (generic).
//! Reference: <https://developers.google.com/drive/api/guides/handle-errors>.

use std::time::SystemTime;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use schemars::JsonSchema;
use schemas::envelope::ErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::file_support::{content_bytes, optional_str, required_str, to_base64};
use super::slack::put;
use crate::error::ActionError;
use crate::http::{Quirks, Verdict, ratelimit};
use crate::manifest::{ActionManifest, AuthType, Category, Manifest, RateLimit};
use crate::sdk::{Call, Connector, Listing, Page, collect_pages, output, page_limit, parse_input};

const FILE_SCOPE: &str = "https://www.googleapis.com/auth/drive.file";
const READ_SCOPE: &str = "https://www.googleapis.com/auth/drive.readonly";

/// The file fields every action asks for and returns.
const FILE_FIELDS: &str = "id,name,mimeType,parents,size,modifiedTime,webViewLink";

/// The MIME type of folders.
const FOLDER: &str = "application/vnd.google-apps.folder";

/// The Google Drive connector.
#[derive(Debug)]
pub struct Drive(Manifest);

impl Default for Drive {
    fn default() -> Self {
        Self::new()
    }
}

impl Drive {
    /// Its manifest.
    pub fn new() -> Self {
        Drive(
            Manifest::new("drive", "Google Drive", Category::Files)
                .auth(&[AuthType::OAuth2Code, AuthType::ServiceAccount])
                .base_url("https://www.googleapis.com")
                .docs("https://developers.google.com/drive/api/reference/rest/v3")
                // Drive meters quota units per user per minute, far above this; ten requests
                // a second keeps clear of the write-rate checks behind its `403`s and `429`s.
                .rate_limit(RateLimit::per_second(10).with_burst(10))
                .action(
                    ActionManifest::write("upload", "Upload a file (multipart upload)")
                        .scopes(&[FILE_SCOPE])
                        .input::<Upload>()
                        .output::<DriveFile>(),
                )
                .action(
                    ActionManifest::read(
                        "download",
                        "Download a file's content, exporting Google Docs types",
                    )
                    .scopes(&[READ_SCOPE])
                    .input::<Download>()
                    .output::<Downloaded>(),
                )
                .action(
                    ActionManifest::read("list", "List files matching a query")
                        .scopes(&[READ_SCOPE])
                        .paginated("page_token", 100, 1000)
                        .input::<List>()
                        .output::<Listing>(),
                )
                .action(
                    ActionManifest::write("create_folder", "Create a folder")
                        .scopes(&[FILE_SCOPE])
                        .input::<CreateFolder>()
                        .output::<DriveFile>(),
                )
                .action(
                    ActionManifest::write("share", "Give a user, group, domain or anyone access")
                        .scopes(&[FILE_SCOPE])
                        .input::<Share>()
                        .output::<Permission>(),
                ),
        )
    }
}

/// `upload` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Upload {
    /// File name, e.g. `report.csv`.
    pub name: String,
    /// The content as text.
    pub content: Option<String>,
    /// The content as base64, for binary files; give `content` or `content_base64`.
    pub content_base64: Option<String>,
    /// MIME type of the content (default `text/plain` for `content`,
    /// `application/octet-stream` for `content_base64`).
    pub mime_type: Option<String>,
    /// Folder ids to put it in (default: the user's My Drive root).
    pub parents: Option<Vec<String>>,
    /// Description shown in Drive.
    pub description: Option<String>,
}

/// A Drive file or folder.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DriveFile {
    /// File id.
    pub id: String,
    /// Its name.
    pub name: Option<String>,
    /// Its MIME type (`application/vnd.google-apps.folder` for folders).
    pub mime_type: Option<String>,
    /// Link to open it in Drive.
    pub web_view_link: Option<String>,
    /// Parent folder ids.
    pub parents: Vec<String>,
    /// The file resource as Drive sent it.
    pub raw: Value,
}

impl DriveFile {
    fn from_resource(raw: Value) -> Result<Self, ActionError> {
        Ok(DriveFile {
            id: required_str(&raw, "id", "Drive")?,
            name: optional_str(&raw, "name"),
            mime_type: optional_str(&raw, "mimeType"),
            web_view_link: optional_str(&raw, "webViewLink"),
            parents: raw["parents"]
                .as_array()
                .map(|p| {
                    p.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            raw,
        })
    }
}

/// `download` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Download {
    /// File id.
    pub file_id: String,
    /// For Google Docs types: the format to export to, e.g. `text/csv` or `application/pdf`
    /// (default: PDF for documents and presentations, XLSX for spreadsheets, PNG for
    /// drawings).
    pub export_mime_type: Option<String>,
}

/// A downloaded file.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Downloaded {
    /// File id.
    pub id: String,
    /// Its name.
    pub name: Option<String>,
    /// MIME type of the bytes returned (the export format when exported).
    pub mime_type: Option<String>,
    /// Bytes returned.
    pub size: usize,
    /// The content, base64.
    pub content_base64: String,
    /// Whether a Google Docs type was exported.
    pub exported: bool,
}

/// `list` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct List {
    /// A Drive search query, e.g. `'FOLDER_ID' in parents and trashed = false`.
    pub q: Option<String>,
    /// Files wanted in all (default 100, at most 1000).
    pub limit: Option<u32>,
    /// `next_cursor` of an earlier call.
    pub cursor: Option<String>,
    /// Sort order, e.g. `modifiedTime desc,name`.
    pub order_by: Option<String>,
    /// List this shared drive instead of the user's files.
    pub drive_id: Option<String>,
}

/// `create_folder` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateFolder {
    /// Folder name.
    pub name: String,
    /// Parent folder ids (default: the user's My Drive root).
    pub parents: Option<Vec<String>>,
}

/// Who a permission is for.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Grantee {
    /// One user (`email_address`).
    User,
    /// A Google group (`email_address`).
    Group,
    /// Everyone in a domain (`domain`).
    Domain,
    /// Anyone with the link.
    Anyone,
}

/// The access granted.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    /// Read only.
    Reader,
    /// Read and comment.
    Commenter,
    /// Read and edit.
    Writer,
    /// Organize files on a shared drive.
    FileOrganizer,
    /// Manage a shared drive's files and members.
    Organizer,
}

/// `share` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Share {
    /// File or folder id.
    pub file_id: String,
    /// `reader`, `commenter`, `writer`, `fileOrganizer` or `organizer`.
    pub role: Role,
    /// `user`, `group`, `domain` or `anyone`.
    #[serde(rename = "type")]
    pub grantee: Grantee,
    /// The user's or group's address (for `user` and `group`).
    pub email_address: Option<String>,
    /// The domain (for `domain`).
    pub domain: Option<String>,
    /// Email the user or group about it (Drive's default: yes); only for `user` and `group`.
    pub send_notification_email: Option<bool>,
    /// Text added to the notification email.
    pub email_message: Option<String>,
}

/// A permission on a file.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Permission {
    /// Permission id.
    pub id: String,
    /// The role granted.
    pub role: Option<String>,
    /// Who it is for: `user`, `group`, `domain` or `anyone`.
    #[serde(rename = "type")]
    pub grantee: Option<String>,
    /// The permission as Drive sent it.
    pub raw: Value,
}

/// Google's `403` quota errors, told apart by `errors[].reason`.
#[derive(Debug)]
pub struct DriveQuirks;

impl Quirks for DriveQuirks {
    fn judge(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Option<Verdict> {
        if status != StatusCode::FORBIDDEN {
            return None;
        }
        let body: Value = serde_json::from_slice(body).ok()?;
        let limited = body["error"]["errors"].as_array()?.iter().any(|e| {
            matches!(
                e["reason"].as_str(),
                Some("rateLimitExceeded" | "userRateLimitExceeded" | "sharingRateLimitExceeded")
            )
        });
        limited.then(|| {
            Verdict::new(
                ErrorCode::RateLimited,
                ratelimit::wait_hint(status, headers, SystemTime::now()),
            )
        })
    }
}

#[async_trait::async_trait]
impl Connector for Drive {
    fn manifest(&self) -> &Manifest {
        &self.0
    }

    fn quirks(&self) -> &dyn Quirks {
        &DriveQuirks
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
            "create_folder" => create_folder(call, parse_input(input)?).await,
            "share" => share(call, parse_input(input)?).await,
            _ => Err(call.unknown_action(action)),
        }
    }

    async fn health(&self, call: &Call<'_>) -> Result<(), ActionError> {
        call.send(
            call.get(&["drive", "v3", "about"])
                .query(&[("fields", "user")]),
        )
        .await
        .map(drop)
    }
}

/// A `multipart/related` body: the JSON `metadata` part, then `media` as `media_type`.
///
/// Returns the body and its boundary. The boundary is fixed unless the content contains it,
/// in which case a counter is added until it does not.
pub fn multipart_related(metadata: &Value, media_type: &str, media: &[u8]) -> (Vec<u8>, String) {
    let metadata = metadata.to_string();
    let mut boundary = String::from("switchyard-part-boundary");
    let mut n = 0u32;
    while contains(media, boundary.as_bytes()) || metadata.contains(&boundary) {
        n += 1;
        boundary = format!("switchyard-part-boundary-{n}");
    }
    let mut body = Vec::with_capacity(media.len() + metadata.len() + 256);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{metadata}\r\n\
             --{boundary}\r\nContent-Type: {media_type}\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(media);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (body, boundary)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn upload(call: &Call<'_>, input: Upload) -> Result<Value, ActionError> {
    let text = input.content.is_some();
    let bytes = content_bytes(input.content, input.content_base64)?;
    let mime_type = input.mime_type.unwrap_or_else(|| {
        if text {
            "text/plain".to_owned()
        } else {
            "application/octet-stream".to_owned()
        }
    });
    if mime_type.contains(['\r', '\n']) {
        return Err(ActionError::invalid_input(
            "mime_type",
            "must be a single line, e.g. `text/csv`",
        ));
    }
    let mut metadata = json!({ "name": input.name, "mimeType": mime_type });
    put(&mut metadata, "parents", input.parents);
    put(&mut metadata, "description", input.description);
    let (body, boundary) = multipart_related(&metadata, &mime_type, &bytes);
    let request = call
        .post(&["upload", "drive", "v3", "files"])
        .query(&[
            ("uploadType", "multipart"),
            ("supportsAllDrives", "true"),
            ("fields", FILE_FIELDS),
        ])
        .header(
            CONTENT_TYPE,
            format!("multipart/related; boundary={boundary}"),
        )
        .body(body);
    output(&DriveFile::from_resource(call.send_json(request).await?)?)
}

/// The export format used when a Google Docs type is downloaded without one.
fn default_export(mime_type: &str) -> Option<&'static str> {
    match mime_type {
        "application/vnd.google-apps.document" | "application/vnd.google-apps.presentation" => {
            Some("application/pdf")
        }
        "application/vnd.google-apps.spreadsheet" => {
            Some("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
        }
        "application/vnd.google-apps.drawing" => Some("image/png"),
        _ => None,
    }
}

async fn download(call: &Call<'_>, input: Download) -> Result<Value, ActionError> {
    let meta = call
        .send_json(call.get(&["drive", "v3", "files", &input.file_id]).query(&[
            ("fields", "id,name,mimeType,size"),
            ("supportsAllDrives", "true"),
        ]))
        .await?;
    let mime_type = optional_str(&meta, "mimeType").unwrap_or_default();
    let google_type = mime_type.starts_with("application/vnd.google-apps.");
    let (response, returned_type) = if google_type {
        if mime_type == FOLDER || mime_type == "application/vnd.google-apps.shortcut" {
            return Err(ActionError::invalid_input(
                "file_id",
                format!("is a `{mime_type}`, which has no content to download"),
            ));
        }
        let export = match input.export_mime_type.as_deref() {
            Some(export) => export.to_owned(),
            None => default_export(&mime_type)
                .ok_or_else(|| {
                    ActionError::invalid_input(
                        "export_mime_type",
                        format!("a `{mime_type}` file needs an export format"),
                    )
                })?
                .to_owned(),
        };
        let response = call
            .send(
                call.get(&["drive", "v3", "files", &input.file_id, "export"])
                    .query(&[("mimeType", export.as_str())]),
            )
            .await?;
        (response, export)
    } else {
        if input.export_mime_type.is_some() {
            return Err(ActionError::invalid_input(
                "export_mime_type",
                format!(
                    "only Google Docs types are exported; this file is `{mime_type}`, leave it out"
                ),
            ));
        }
        let response = call
            .send(
                call.get(&["drive", "v3", "files", &input.file_id])
                    .query(&[("alt", "media"), ("supportsAllDrives", "true")]),
            )
            .await?;
        (response, mime_type)
    };
    output(&Downloaded {
        id: optional_str(&meta, "id").unwrap_or(input.file_id),
        name: optional_str(&meta, "name"),
        mime_type: Some(returned_type).filter(|t| !t.is_empty()),
        size: response.body.len(),
        content_base64: to_base64(&response.body),
        exported: google_type,
    })
}

async fn list(call: &Call<'_>, input: List) -> Result<Value, ActionError> {
    let pagination = call
        .manifest
        .find_action("list")
        .and_then(|a| a.pagination.clone())
        .ok_or_else(|| ActionError::new(ErrorCode::Internal, "list pages"))?;
    let limit = page_limit(input.limit, &pagination)?;
    let fields = format!("nextPageToken,files({FILE_FIELDS})");
    let listing = collect_pages(limit, input.cursor, |cursor, wanted| {
        let mut query = vec![
            ("pageSize", wanted.min(1000).to_string()),
            ("fields", fields.clone()),
            ("supportsAllDrives", "true".to_owned()),
        ];
        if let Some(q) = &input.q {
            query.push(("q", q.clone()));
        }
        if let Some(order_by) = &input.order_by {
            query.push(("orderBy", order_by.clone()));
        }
        if let Some(drive_id) = &input.drive_id {
            query.push(("corpora", "drive".to_owned()));
            query.push(("driveId", drive_id.clone()));
            query.push(("includeItemsFromAllDrives", "true".to_owned()));
        }
        if let Some(cursor) = cursor {
            query.push(("pageToken", cursor));
        }
        async move {
            let page = call
                .send_json(call.get(&["drive", "v3", "files"]).query(&query))
                .await?;
            Ok(Page {
                items: page["files"].as_array().cloned().unwrap_or_default(),
                next: optional_str(&page, "nextPageToken"),
            })
        }
    })
    .await?;
    output(&listing)
}

async fn create_folder(call: &Call<'_>, input: CreateFolder) -> Result<Value, ActionError> {
    let mut body = json!({ "name": input.name, "mimeType": FOLDER });
    put(&mut body, "parents", input.parents);
    let request = call
        .post(&["drive", "v3", "files"])
        .query(&[("supportsAllDrives", "true"), ("fields", FILE_FIELDS)])
        .json(&body);
    output(&DriveFile::from_resource(call.send_json(request).await?)?)
}

async fn share(call: &Call<'_>, input: Share) -> Result<Value, ActionError> {
    let mut body = json!({ "role": input.role, "type": input.grantee });
    match input.grantee {
        Grantee::User | Grantee::Group => {
            let email = input.email_address.ok_or_else(|| {
                ActionError::invalid_input("email_address", "is required for `user` and `group`")
            })?;
            body["emailAddress"] = Value::String(email);
        }
        Grantee::Domain => {
            let domain = input
                .domain
                .ok_or_else(|| ActionError::invalid_input("domain", "is required for `domain`"))?;
            body["domain"] = Value::String(domain);
        }
        Grantee::Anyone => {}
    }
    let notifies = matches!(input.grantee, Grantee::User | Grantee::Group);
    let mut query = vec![("supportsAllDrives", "true".to_owned())];
    if let Some(send) = input.send_notification_email {
        if !notifies {
            return Err(ActionError::invalid_input(
                "send_notification_email",
                "applies only to `user` and `group`",
            ));
        }
        query.push(("sendNotificationEmail", send.to_string()));
    }
    if let Some(message) = input.email_message {
        query.push(("emailMessage", message));
    }
    let answer = call
        .send_json(
            call.post(&["drive", "v3", "files", &input.file_id, "permissions"])
                .query(&query)
                .json(&body),
        )
        .await?;
    output(&Permission {
        id: required_str(&answer, "id", "Drive")?,
        role: optional_str(&answer, "role"),
        grantee: optional_str(&answer, "type"),
        raw: answer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boundary_never_occurs_in_the_content() {
        let media = b"--switchyard-part-boundary and --switchyard-part-boundary-1";
        let (body, boundary) = multipart_related(&json!({"name": "a"}), "text/plain", media);
        assert_eq!(boundary, "switchyard-part-boundary-2");
        let text = String::from_utf8(body).expect("utf-8");
        assert!(text.starts_with("--switchyard-part-boundary-2\r\n"));
        assert!(text.ends_with("\r\n--switchyard-part-boundary-2--\r\n"));
    }

    #[test]
    fn only_quota_reasons_on_403_are_rate_limits() {
        let body = |reason: &str| {
            json!({ "error": { "code": 403, "message": "x", "status": "PERMISSION_DENIED",
                "errors": [{ "domain": "usageLimits", "reason": reason, "message": "x" }] } })
            .to_string()
        };
        let judge = |status: u16, reason: &str| {
            DriveQuirks.judge(
                StatusCode::from_u16(status).expect("status"),
                &HeaderMap::new(),
                body(reason).as_bytes(),
            )
        };
        assert_eq!(
            judge(403, "userRateLimitExceeded").map(|v| v.code()),
            Some(ErrorCode::RateLimited)
        );
        assert_eq!(judge(403, "insufficientFilePermissions"), None);
        assert_eq!(judge(400, "rateLimitExceeded"), None);
    }
}
