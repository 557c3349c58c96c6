//! Dropbox API v2 as documented at
//! <https://www.dropbox.com/developers/documentation/http/documentation>:
//! `Authorization: Bearer`, content endpoints with `Dropbox-API-Arg` (and `Dropbox-API-Result`
//! on downloads), RPC endpoints with JSON bodies, `list_folder` continued by cursor while
//! `has_more`, endpoint errors as `409` with a `.tag` chain, rate limits as `429` with
//! `Retry-After`, auth errors as `401` with a tag.
//!
//! The connection's base URL is the fake, so it serves the content endpoints as well (see
//! `dropbox::content_base`).

mod support;

use std::time::Duration;

use anyhow::Result;
use schemas::envelope::ErrorCode;
use serde_json::json;
use support::{bearer, ctx, run, run_err};
use wiremock::matchers::{body_json, body_string, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "sl.BtestDropboxAccessToken";

async fn dropbox() -> (MockServer, connectors::ActionContext) {
    let server = MockServer::start().await;
    let ctx = ctx(&server, bearer(TOKEN));
    (server, ctx)
}

fn auth() -> wiremock::matchers::HeaderExactMatcher {
    header("authorization", format!("Bearer {TOKEN}").as_str())
}

/// Matches the `Dropbox-API-Arg` header exactly (wiremock's `header` splits values at commas,
/// which JSON is full of).
fn api_arg(expected: &'static str) -> impl Fn(&wiremock::Request) -> bool {
    move |request: &wiremock::Request| {
        request
            .headers
            .get("dropbox-api-arg")
            .is_some_and(|v| v.as_bytes() == expected.as_bytes())
    }
}

fn file_metadata() -> serde_json::Value {
    json!({
        ".tag": "file",
        "name": "Prime_Numbers.txt",
        "id": "id:a4ayc_80_OEAAAAAAAAAXw",
        "client_modified": "2015-05-12T15:50:38Z",
        "server_modified": "2015-05-12T15:50:38Z",
        "rev": "a1c10ce0dd78",
        "size": 7212,
        "path_lower": "/homework/math/prime_numbers.txt",
        "path_display": "/Homework/math/Prime_Numbers.txt",
        "is_downloadable": true,
        "content_hash": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    })
}

#[tokio::test]
async fn upload_sends_the_arguments_in_the_header_and_the_bytes_as_the_body() -> Result<()> {
    let (server, ctx) = dropbox().await;
    Mock::given(method("POST"))
        .and(path("/2/files/upload"))
        .and(auth())
        .and(header("content-type", "application/octet-stream"))
        .and(api_arg(r#"{"path":"/Homework/math/Prime_Numbers.txt","mode":"overwrite","autorename":false,"mute":true}"#))
        .and(body_string("2 3 5 7 11"))
        .respond_with(ResponseTemplate::new(200).set_body_json(file_metadata()))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "dropbox",
        "upload",
        json!({ "path": "/Homework/math/Prime_Numbers.txt", "content": "2 3 5 7 11",
                "mode": "overwrite", "mute": true }),
    )
    .await?;
    assert_eq!(out["id"], "id:a4ayc_80_OEAAAAAAAAAXw");
    assert_eq!(out["rev"], "a1c10ce0dd78");
    assert_eq!(out["size"], 7212);
    assert_eq!(out["path_display"], "/Homework/math/Prime_Numbers.txt");
    Ok(())
}

#[tokio::test]
async fn upload_escapes_non_ascii_paths_in_the_header() -> Result<()> {
    let (server, ctx) = dropbox().await;
    Mock::given(method("POST"))
        .and(path("/2/files/upload"))
        .and(api_arg(
            r#"{"path":"/R\u00e9sum\u00e9.pdf","mode":"add","autorename":true,"mute":false}"#,
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(file_metadata()))
        .expect(1)
        .mount(&server)
        .await;
    run(
        &ctx,
        "dropbox",
        "upload",
        json!({ "path": "/Résumé.pdf", "content_base64": "JVBERi0=", "autorename": true }),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn upload_conflict_is_classified_by_its_tags() -> Result<()> {
    let (server, ctx) = dropbox().await;
    Mock::given(path("/2/files/upload"))
        .respond_with(ResponseTemplate::new(409).set_body_json(json!({
            "error_summary": "path/conflict/file/...",
            "error": {
                ".tag": "path",
                "reason": { ".tag": "conflict", "conflict": { ".tag": "file" } },
                "upload_session_id": "pid_upload_session:ABCDEF"
            }
        })))
        .mount(&server)
        .await;
    let e = run_err(
        &ctx,
        "dropbox",
        "upload",
        json!({ "path": "/a.txt", "content": "x" }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::Conflict);
    assert_eq!(e.status, Some(409));
    Ok(())
}

#[tokio::test]
async fn download_reads_the_metadata_from_the_result_header() -> Result<()> {
    let (server, ctx) = dropbox().await;
    let result = r#"{"name":"Caf\u00e9.txt","id":"id:a4ayc_80_OEAAAAAAAAAYa","rev":"a1c10ce0dd78","size":5,"path_display":"/Caf\u00e9.txt"}"#;
    Mock::given(method("POST"))
        .and(path("/2/files/download"))
        .and(auth())
        .and(api_arg(r#"{"path":"/Caf\u00e9.txt"}"#))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("dropbox-api-result", result)
                .insert_header("content-type", "application/octet-stream")
                .set_body_string("hello"),
        )
        .expect(1)
        .mount(&server)
        .await;
    let out = run(&ctx, "dropbox", "download", json!({ "path": "/Café.txt" })).await?;
    assert_eq!(out["id"], "id:a4ayc_80_OEAAAAAAAAAYa");
    assert_eq!(out["name"], "Café.txt");
    assert_eq!(out["path_display"], "/Café.txt");
    assert_eq!(out["size"], 5);
    assert_eq!(out["content_base64"], "aGVsbG8=");
    let requests = server.received_requests().await.unwrap_or_default();
    assert!(requests[0].body.is_empty());
    assert!(requests[0].headers.get("content-type").is_none());
    Ok(())
}

#[tokio::test]
async fn download_of_a_missing_path_is_not_found() -> Result<()> {
    let (server, ctx) = dropbox().await;
    Mock::given(path("/2/files/download"))
        .respond_with(ResponseTemplate::new(409).set_body_json(json!({
            "error_summary": "path/not_found/..",
            "error": { ".tag": "path", "path": { ".tag": "not_found" } }
        })))
        .mount(&server)
        .await;
    let e = run_err(&ctx, "dropbox", "download", json!({ "path": "/nope.txt" })).await?;
    assert_eq!(e.code, ErrorCode::NotFound);
    assert!(!e.is_retryable());
    assert!(!e.message.contains(TOKEN));
    Ok(())
}

#[tokio::test]
async fn list_folder_continues_while_has_more() -> Result<()> {
    let (server, ctx) = dropbox().await;
    Mock::given(method("POST"))
        .and(path("/2/files/list_folder"))
        .and(auth())
        .and(body_json(json!({
            "path": "/Homework/math", "recursive": false, "include_deleted": false, "limit": 2000
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "entries": [
                { ".tag": "file", "name": "a.txt", "id": "id:1" },
                { ".tag": "folder", "name": "b", "id": "id:2" }
            ],
            "cursor": "ZtkX9_EHj3x7PMkVuFIhwKYXEpwpLwyxp9vMKomUhllil9q7eWiAu",
            "has_more": true
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/2/files/list_folder/continue"))
        .and(auth())
        .and(body_json(json!({
            "cursor": "ZtkX9_EHj3x7PMkVuFIhwKYXEpwpLwyxp9vMKomUhllil9q7eWiAu"
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "entries": [{ ".tag": "file", "name": "c.txt", "id": "id:3" }],
            "cursor": "AAHvF2eAq1a1Pm0PFy0ZsgPWbbbN3OYUy9Wz8vQ",
            "has_more": false
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "dropbox",
        "list_folder",
        json!({ "path": "/Homework/math", "limit": 5000 }),
    )
    .await?;
    let ids: Vec<&str> = out["items"]
        .as_array()
        .map(|a| a.iter().filter_map(|f| f["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids, ["id:1", "id:2", "id:3"]);
    // The final cursor is for watching changes, not a next page.
    assert_eq!(out["next_cursor"], serde_json::Value::Null);
    Ok(())
}

#[tokio::test]
async fn list_folder_hands_back_the_cursor_rather_than_cut_a_page() -> Result<()> {
    let (server, ctx) = dropbox().await;
    Mock::given(path("/2/files/list_folder"))
        .and(body_json(json!({
            "path": "", "recursive": true, "include_deleted": false, "limit": 3
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "entries": [{ ".tag": "file", "name": "a.txt", "id": "id:1" }],
            "cursor": "CURSOR2",
            "has_more": true
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "dropbox",
        "list_folder",
        json!({ "recursive": true, "limit": 3 }),
    )
    .await?;
    assert_eq!(out["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(out["next_cursor"], "CURSOR2");
    server.reset().await;
    Mock::given(path("/2/files/list_folder/continue"))
        .and(body_json(json!({ "cursor": "CURSOR2" })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "entries": [{ ".tag": "file", "name": "b.txt", "id": "id:2" }],
            "cursor": "CURSOR3",
            "has_more": false
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "dropbox",
        "list_folder",
        json!({ "cursor": "CURSOR2", "limit": 3 }),
    )
    .await?;
    assert_eq!(out["items"][0]["id"], "id:2");
    Ok(())
}

#[tokio::test]
async fn create_shared_link_posts_the_settings() -> Result<()> {
    let (server, ctx) = dropbox().await;
    Mock::given(method("POST"))
        .and(path("/2/sharing/create_shared_link_with_settings"))
        .and(auth())
        .and(header("content-type", "application/json"))
        .and(body_json(json!({
            "path": "/Prime_Numbers.txt",
            "settings": { "audience": "public", "allow_download": true }
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            ".tag": "file",
            "url": "https://www.dropbox.com/s/2sn712vy1ovegw8/Prime_Numbers.txt?dl=0",
            "name": "Prime_Numbers.txt",
            "id": "id:a4ayc_80_OEAAAAAAAAAXw",
            "path_lower": "/prime_numbers.txt",
            "link_permissions": { "can_revoke": true }
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "dropbox",
        "create_shared_link",
        json!({ "path": "/Prime_Numbers.txt", "audience": "public", "allow_download": true }),
    )
    .await?;
    assert_eq!(
        out["url"],
        "https://www.dropbox.com/s/2sn712vy1ovegw8/Prime_Numbers.txt?dl=0"
    );
    assert_eq!(out["existing"], false);
    Ok(())
}

#[tokio::test]
async fn an_existing_shared_link_is_returned() -> Result<()> {
    let (server, ctx) = dropbox().await;
    Mock::given(path("/2/sharing/create_shared_link_with_settings"))
        .and(body_json(json!({ "path": "/Prime_Numbers.txt" })))
        .respond_with(ResponseTemplate::new(409).set_body_json(json!({
            "error_summary": "shared_link_already_exists/metadata/..",
            "error": {
                ".tag": "shared_link_already_exists",
                "shared_link_already_exists": {
                    ".tag": "metadata",
                    "metadata": {
                        ".tag": "file",
                        "url": "https://www.dropbox.com/s/2sn712vy1ovegw8/Prime_Numbers.txt?dl=0",
                        "name": "Prime_Numbers.txt",
                        "path_lower": "/prime_numbers.txt"
                    }
                }
            }
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "dropbox",
        "create_shared_link",
        json!({ "path": "/Prime_Numbers.txt" }),
    )
    .await?;
    assert_eq!(
        out["url"],
        "https://www.dropbox.com/s/2sn712vy1ovegw8/Prime_Numbers.txt?dl=0"
    );
    assert_eq!(out["existing"], true);
    assert_eq!(out["path_lower"], "/prime_numbers.txt");
    // Without the link in the error, it is a conflict.
    server.reset().await;
    Mock::given(path("/2/sharing/create_shared_link_with_settings"))
        .respond_with(ResponseTemplate::new(409).set_body_json(json!({
            "error_summary": "shared_link_already_exists/..",
            "error": { ".tag": "shared_link_already_exists" }
        })))
        .mount(&server)
        .await;
    let e = run_err(
        &ctx,
        "dropbox",
        "create_shared_link",
        json!({ "path": "/Prime_Numbers.txt" }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::Conflict);
    Ok(())
}

#[tokio::test]
async fn rate_limits_carry_retry_after() -> Result<()> {
    let (server, ctx) = dropbox().await;
    Mock::given(path("/2/files/list_folder"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "300")
                .set_body_json(json!({
                    "error_summary": "too_many_requests/..",
                    "error": { "reason": { ".tag": "too_many_requests" }, "retry_after": 300 }
                })),
        )
        .mount(&server)
        .await;
    let e = run_err(&ctx, "dropbox", "list_folder", json!({})).await?;
    assert_eq!(e.code, ErrorCode::RateLimited);
    assert_eq!(e.retry_after, Some(Duration::from_secs(300)));
    Ok(())
}

#[tokio::test]
async fn an_expired_token_is_unauthorized() -> Result<()> {
    let (server, ctx) = dropbox().await;
    Mock::given(path("/2/users/get_current_account"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "error_summary": "expired_access_token/...",
            "error": { ".tag": "expired_access_token" }
        })))
        .mount(&server)
        .await;
    let e = connectors::Registry::builtin()
        .health(&ctx, "dropbox")
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("expected a failure"))?;
    assert_eq!(e.code, ErrorCode::Unauthorized);
    Ok(())
}

#[tokio::test]
async fn health_gets_the_current_account() -> Result<()> {
    let (server, ctx) = dropbox().await;
    Mock::given(method("POST"))
        .and(path("/2/users/get_current_account"))
        .and(auth())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "account_id": "dbid:AAH4f99T0taONIb-OurWxbNQ6ywGRopQngc",
            "email": "franz@dropbox.com",
            "name": { "display_name": "Franz Ferdinand (Personal)" }
        })))
        .expect(1)
        .mount(&server)
        .await;
    connectors::Registry::builtin()
        .health(&ctx, "dropbox")
        .await?;
    let requests = server.received_requests().await.unwrap_or_default();
    assert!(requests[0].body.is_empty());
    Ok(())
}
