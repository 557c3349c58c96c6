//! Google Drive API v3 as documented at <https://developers.google.com/drive/api/reference/rest/v3>:
//! `Authorization: Bearer`, multipart uploads on `/upload/drive/v3/files`, `files.get` with
//! `alt=media`, `files.export`, `files.list` paged by `nextPageToken`, permissions, errors as
//! `{"error": {"code", "message", "errors": [{"reason"}], "status"}}` with quota exhaustion
//! on `403` (`userRateLimitExceeded`) or `429`.

mod support;

use std::time::Duration;

use anyhow::Result;
use schemas::envelope::ErrorCode;
use serde_json::json;
use support::{bearer, ctx, run, run_err};
use wiremock::matchers::{body_json, body_string, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "ya29.a0AfH6SMBtest-drive-token";

async fn drive() -> (MockServer, connectors::ActionContext) {
    let server = MockServer::start().await;
    let ctx = ctx(&server, bearer(TOKEN));
    (server, ctx)
}

fn auth() -> wiremock::matchers::HeaderExactMatcher {
    header("authorization", format!("Bearer {TOKEN}").as_str())
}

fn google_error(code: u16, status: &str, reason: &str, message: &str) -> serde_json::Value {
    json!({
        "error": {
            "code": code,
            "message": message,
            "errors": [{ "message": message, "domain": "global", "reason": reason }],
            "status": status
        }
    })
}

#[tokio::test]
async fn upload_sends_the_metadata_and_media_as_multipart_related() -> Result<()> {
    let (server, ctx) = drive().await;
    let expected = "--switchyard-part-boundary\r\n\
        Content-Type: application/json; charset=UTF-8\r\n\r\n\
        {\"name\":\"report.csv\",\"mimeType\":\"text/csv\",\"parents\":[\"0BwwA4oUTeiV1TGRPeTVjaWRDY1E\"]}\r\n\
        --switchyard-part-boundary\r\n\
        Content-Type: text/csv\r\n\r\n\
        a,b\n1,2\n\r\n\
        --switchyard-part-boundary--\r\n";
    Mock::given(method("POST"))
        .and(path("/upload/drive/v3/files"))
        .and(query_param("uploadType", "multipart"))
        .and(query_param("supportsAllDrives", "true"))
        .and(auth())
        .and(header(
            "content-type",
            "multipart/related; boundary=switchyard-part-boundary",
        ))
        .and(body_string(expected))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "kind": "drive#file",
            "id": "1Tz9sK1vXlR5aQ2bN3cD4eF5gH6iJ7kL8",
            "name": "report.csv",
            "mimeType": "text/csv",
            "parents": ["0BwwA4oUTeiV1TGRPeTVjaWRDY1E"],
            "webViewLink": "https://drive.google.com/file/d/1Tz9sK1vXlR5aQ2bN3cD4eF5gH6iJ7kL8/view"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "drive",
        "upload",
        json!({ "name": "report.csv", "content": "a,b\n1,2\n", "mime_type": "text/csv",
                "parents": ["0BwwA4oUTeiV1TGRPeTVjaWRDY1E"] }),
    )
    .await?;
    assert_eq!(out["id"], "1Tz9sK1vXlR5aQ2bN3cD4eF5gH6iJ7kL8");
    assert_eq!(out["name"], "report.csv");
    assert_eq!(out["parents"], json!(["0BwwA4oUTeiV1TGRPeTVjaWRDY1E"]));
    assert_eq!(
        out["web_view_link"],
        "https://drive.google.com/file/d/1Tz9sK1vXlR5aQ2bN3cD4eF5gH6iJ7kL8/view"
    );
    Ok(())
}

#[tokio::test]
async fn upload_of_base64_content_sends_the_decoded_bytes() -> Result<()> {
    let (server, ctx) = drive().await;
    Mock::given(method("POST"))
        .and(path("/upload/drive/v3/files"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({ "id": "F1", "name": "logo.png" })),
        )
        .expect(1)
        .mount(&server)
        .await;
    run(
        &ctx,
        "drive",
        "upload",
        json!({ "name": "logo.png", "content_base64": "iVBORw0KGgo=", "mime_type": "image/png" }),
    )
    .await?;
    let requests = server.received_requests().await.unwrap_or_default();
    let body = &requests[0].body;
    let media =
        b"Content-Type: image/png\r\n\r\n\x89PNG\r\n\x1a\n\r\n--switchyard-part-boundary--\r\n";
    assert!(body.ends_with(media), "{}", String::from_utf8_lossy(body));
    let e = run_err(
        &ctx,
        "drive",
        "upload",
        json!({ "name": "x", "content_base64": "not base64!" }),
    )
    .await?;
    assert_eq!(e.message, "with.content_base64: is not valid base64");
    Ok(())
}

#[tokio::test]
async fn download_reads_the_metadata_then_alt_media() -> Result<()> {
    let (server, ctx) = drive().await;
    Mock::given(method("GET"))
        .and(path("/drive/v3/files/1Tz9sK1vXlR5"))
        .and(query_param("fields", "id,name,mimeType,size"))
        .and(auth())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "1Tz9sK1vXlR5", "name": "notes.txt", "mimeType": "text/plain", "size": "11"
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/drive/v3/files/1Tz9sK1vXlR5"))
        .and(query_param("alt", "media"))
        .and(auth())
        .respond_with(ResponseTemplate::new(200).set_body_string("hello drive"))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "drive",
        "download",
        json!({ "file_id": "1Tz9sK1vXlR5" }),
    )
    .await?;
    assert_eq!(
        out,
        json!({
            "id": "1Tz9sK1vXlR5", "name": "notes.txt", "mime_type": "text/plain", "size": 11,
            "content_base64": "aGVsbG8gZHJpdmU=", "exported": false
        })
    );
    Ok(())
}

#[tokio::test]
async fn download_of_a_google_sheet_exports_it() -> Result<()> {
    let (server, ctx) = drive().await;
    Mock::given(method("GET"))
        .and(path("/drive/v3/files/1BxiMVs0XRA5"))
        .and(query_param("fields", "id,name,mimeType,size"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "1BxiMVs0XRA5", "name": "Budget", "mimeType": "application/vnd.google-apps.spreadsheet"
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/drive/v3/files/1BxiMVs0XRA5/export"))
        .and(query_param("mimeType", "text/csv"))
        .and(auth())
        .respond_with(ResponseTemplate::new(200).set_body_string("a,b\n"))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "drive",
        "download",
        json!({ "file_id": "1BxiMVs0XRA5", "export_mime_type": "text/csv" }),
    )
    .await?;
    assert_eq!(out["mime_type"], "text/csv");
    assert_eq!(out["content_base64"], "YSxiCg==");
    assert_eq!(out["exported"], true);
    Ok(())
}

#[tokio::test]
async fn download_is_capped_by_the_response_limit() -> Result<()> {
    let (server, mut ctx) = drive().await;
    ctx.max_response_bytes = 16;
    Mock::given(path("/drive/v3/files/big"))
        .and(query_param("fields", "id,name,mimeType,size"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "big", "mimeType": "application/zip"
        })))
        .mount(&server)
        .await;
    Mock::given(path("/drive/v3/files/big"))
        .and(query_param("alt", "media"))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(vec![0u8; 64]))
        .mount(&server)
        .await;
    let e = run_err(&ctx, "drive", "download", json!({ "file_id": "big" })).await?;
    assert_eq!(e.code, ErrorCode::InvalidInput);
    assert!(e.message.contains("16-byte limit"), "{}", e.message);
    Ok(())
}

#[tokio::test]
async fn list_follows_next_page_tokens() -> Result<()> {
    let (server, ctx) = drive().await;
    let fields = "nextPageToken,files(id,name,mimeType,parents,size,modifiedTime,webViewLink)";
    Mock::given(method("GET"))
        .and(path("/drive/v3/files"))
        .and(query_param("pageToken", "~!!~AI9FV7Q"))
        .and(query_param("pageSize", "1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "nextPageToken": "~!!~AI9FV7R",
            "files": [{ "id": "3", "name": "c.txt", "mimeType": "text/plain" }]
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/drive/v3/files"))
        .and(query_param("q", "'F1' in parents and trashed = false"))
        .and(query_param("pageSize", "3"))
        .and(query_param("fields", fields))
        .and(query_param("orderBy", "name"))
        .and(auth())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "nextPageToken": "~!!~AI9FV7Q",
            "files": [
                { "id": "1", "name": "a.txt", "mimeType": "text/plain" },
                { "id": "2", "name": "b.txt", "mimeType": "text/plain" }
            ]
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "drive",
        "list",
        json!({ "q": "'F1' in parents and trashed = false", "limit": 3, "order_by": "name" }),
    )
    .await?;
    let ids: Vec<&str> = out["items"]
        .as_array()
        .map(|a| a.iter().filter_map(|f| f["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids, ["1", "2", "3"]);
    assert_eq!(out["next_cursor"], "~!!~AI9FV7R");
    Ok(())
}

#[tokio::test]
async fn create_folder_posts_a_folder_resource() -> Result<()> {
    let (server, ctx) = drive().await;
    Mock::given(method("POST"))
        .and(path("/drive/v3/files"))
        .and(auth())
        .and(header("content-type", "application/json"))
        .and(body_json(json!({
            "name": "Invoices",
            "mimeType": "application/vnd.google-apps.folder",
            "parents": ["root"]
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "0BwwA4oUTeiV1TGRPeTVjaWRDY1E",
            "name": "Invoices",
            "mimeType": "application/vnd.google-apps.folder",
            "parents": ["0AKd8iJkl"]
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "drive",
        "create_folder",
        json!({ "name": "Invoices", "parents": ["root"] }),
    )
    .await?;
    assert_eq!(out["id"], "0BwwA4oUTeiV1TGRPeTVjaWRDY1E");
    assert_eq!(out["mime_type"], "application/vnd.google-apps.folder");
    Ok(())
}

#[tokio::test]
async fn share_creates_a_permission() -> Result<()> {
    let (server, ctx) = drive().await;
    Mock::given(method("POST"))
        .and(path("/drive/v3/files/1Tz9sK1vXlR5/permissions"))
        .and(query_param("sendNotificationEmail", "false"))
        .and(auth())
        .and(body_json(json!({
            "role": "writer", "type": "user", "emailAddress": "alex@example.com"
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "kind": "drive#permission",
            "id": "12345678901234567890",
            "type": "user",
            "role": "writer"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "drive",
        "share",
        json!({ "file_id": "1Tz9sK1vXlR5", "role": "writer", "type": "user",
                "email_address": "alex@example.com", "send_notification_email": false }),
    )
    .await?;
    assert_eq!(out["id"], "12345678901234567890");
    assert_eq!(out["role"], "writer");
    assert_eq!(out["type"], "user");
    let e = run_err(
        &ctx,
        "drive",
        "share",
        json!({ "file_id": "F", "role": "reader", "type": "user" }),
    )
    .await?;
    assert_eq!(
        e.message,
        "with.email_address: is required for `user` and `group`"
    );
    Ok(())
}

#[tokio::test]
async fn user_rate_limit_on_403_is_rate_limited() -> Result<()> {
    let (server, ctx) = drive().await;
    Mock::given(path("/drive/v3/files"))
        .respond_with(ResponseTemplate::new(403).set_body_json(google_error(
            403,
            "PERMISSION_DENIED",
            "userRateLimitExceeded",
            "User Rate Limit Exceeded",
        )))
        .mount(&server)
        .await;
    let e = run_err(&ctx, "drive", "list", json!({})).await?;
    assert_eq!(e.code, ErrorCode::RateLimited);
    assert_eq!(e.status, Some(403));
    Ok(())
}

#[tokio::test]
async fn too_many_requests_carries_retry_after() -> Result<()> {
    let (server, ctx) = drive().await;
    Mock::given(path("/drive/v3/files"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "17")
                .set_body_json(google_error(
                    429,
                    "RESOURCE_EXHAUSTED",
                    "rateLimitExceeded",
                    "Rate Limit Exceeded",
                )),
        )
        .mount(&server)
        .await;
    let e = run_err(&ctx, "drive", "list", json!({})).await?;
    assert_eq!(e.code, ErrorCode::RateLimited);
    assert_eq!(e.retry_after, Some(Duration::from_secs(17)));
    Ok(())
}

#[tokio::test]
async fn permanent_errors_keep_their_status_codes() -> Result<()> {
    let (server, ctx) = drive().await;
    Mock::given(path("/drive/v3/files/missing"))
        .respond_with(ResponseTemplate::new(404).set_body_json(google_error(
            404,
            "NOT_FOUND",
            "notFound",
            "File not found: missing.",
        )))
        .mount(&server)
        .await;
    Mock::given(path("/drive/v3/files/locked/permissions"))
        .respond_with(ResponseTemplate::new(403).set_body_json(google_error(
            403,
            "PERMISSION_DENIED",
            "insufficientFilePermissions",
            "The user does not have sufficient permissions for this file.",
        )))
        .mount(&server)
        .await;
    let e = run_err(&ctx, "drive", "download", json!({ "file_id": "missing" })).await?;
    assert_eq!(e.code, ErrorCode::NotFound);
    assert!(!e.is_retryable());
    let e = run_err(
        &ctx,
        "drive",
        "share",
        json!({ "file_id": "locked", "role": "reader", "type": "anyone" }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::Forbidden);
    assert!(!e.message.contains(TOKEN));
    Ok(())
}

#[tokio::test]
async fn health_reads_about_user() -> Result<()> {
    let (server, ctx) = drive().await;
    Mock::given(method("GET"))
        .and(path("/drive/v3/about"))
        .and(query_param("fields", "user"))
        .and(auth())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "user": { "kind": "drive#user", "displayName": "Alex", "emailAddress": "alex@example.com" }
        })))
        .expect(1)
        .mount(&server)
        .await;
    connectors::Registry::builtin()
        .health(&ctx, "drive")
        .await?;
    Ok(())
}
