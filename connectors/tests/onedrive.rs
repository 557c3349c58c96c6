//! OneDrive through Microsoft Graph as documented at
//! <https://learn.microsoft.com/en-us/graph/api/resources/onedrive>: `Authorization: Bearer`,
//! simple upload `PUT /v1.0/me/drive/root:/{path}:/content`, downloads from the item's
//! pre-authenticated `@microsoft.graph.downloadUrl` (no token), children paged by
//! `@odata.nextLink`, errors as `{"error": {"code", "message"}}`, throttling as `429` with
//! `Retry-After`.

mod support;

use std::time::Duration;

use anyhow::Result;
use schemas::envelope::ErrorCode;
use serde_json::json;
use support::{bearer, ctx, run, run_err};
use wiremock::matchers::{body_string, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "EwBwA8l6BAAUtest-graph-token";

async fn onedrive() -> (MockServer, connectors::ActionContext) {
    let server = MockServer::start().await;
    let ctx = ctx(&server, bearer(TOKEN));
    (server, ctx)
}

fn auth() -> wiremock::matchers::HeaderExactMatcher {
    header("authorization", format!("Bearer {TOKEN}").as_str())
}

fn drive_item(id: &str, name: &str) -> serde_json::Value {
    json!({
        "id": id,
        "name": name,
        "size": 8,
        "eTag": "\"{FA8B1B3E-1A5A-4C5E-9E70-5A2A1A1D6C0E},2\"",
        "webUrl": format!("https://contoso-my.sharepoint.com/personal/alex/Documents/{name}"),
        "file": { "mimeType": "text/csv" }
    })
}

#[tokio::test]
async fn upload_puts_the_bytes_at_the_encoded_path() -> Result<()> {
    let (server, ctx) = onedrive().await;
    Mock::given(method("PUT"))
        .and(path(
            "/v1.0/me/drive/root:/Reports%202024/Q1%20%231.csv:/content",
        ))
        .and(auth())
        .and(header("content-type", "text/csv"))
        .and(body_string("a,b\n1,2\n"))
        .respond_with(ResponseTemplate::new(201).set_body_json(drive_item(
            "01BYE5RZ6QN3ZWBTUFOFD3GSPGOHDJD36K",
            "Q1 #1.csv",
        )))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "onedrive",
        "upload",
        json!({ "path": "/Reports 2024/Q1 #1.csv", "content": "a,b\n1,2\n", "content_type": "text/csv" }),
    )
    .await?;
    assert_eq!(out["id"], "01BYE5RZ6QN3ZWBTUFOFD3GSPGOHDJD36K");
    assert_eq!(out["name"], "Q1 #1.csv");
    assert_eq!(out["size"], 8);
    assert_eq!(
        out["web_url"],
        "https://contoso-my.sharepoint.com/personal/alex/Documents/Q1 #1.csv"
    );
    Ok(())
}

#[tokio::test]
async fn upload_to_another_drive_can_refuse_to_overwrite() -> Result<()> {
    let (server, ctx) = onedrive().await;
    Mock::given(method("PUT"))
        .and(path("/v1.0/drives/b!t18F8ybsHUq1z3LTz8xvZqP8zaSWjkFNhsME-Fepo75dTf9vQKfeRblBZjoSQrd7/root:/logo.png:/content"))
        .and(query_param("@microsoft.graph.conflictBehavior", "fail"))
        .and(header("content-type", "application/octet-stream"))
        .respond_with(ResponseTemplate::new(409).set_body_json(json!({
            "error": { "code": "nameAlreadyExists", "message": "The specified item name already exists." }
        })))
        .expect(1)
        .mount(&server)
        .await;
    let e = run_err(
        &ctx,
        "onedrive",
        "upload",
        json!({ "path": "logo.png", "content_base64": "iVBORw0KGgo=",
                "drive_id": "b!t18F8ybsHUq1z3LTz8xvZqP8zaSWjkFNhsME-Fepo75dTf9vQKfeRblBZjoSQrd7",
                "conflict_behavior": "fail" }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::Conflict);
    assert!(e.message.contains("nameAlreadyExists"), "{}", e.message);
    Ok(())
}

#[tokio::test]
async fn upload_refuses_paths_and_sizes_graph_would_misread() -> Result<()> {
    let (server, ctx) = onedrive().await;
    let e = run_err(
        &ctx,
        "onedrive",
        "upload",
        json!({ "path": "a/../b.txt", "content": "x" }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::InvalidInput);
    let e = run_err(
        &ctx,
        "onedrive",
        "upload",
        json!({ "path": "big.txt", "content": "x".repeat(4 * 1024 * 1024 + 1) }),
    )
    .await?;
    assert!(e.message.contains("at most 4 MB"), "{}", e.message);
    assert!(
        server
            .received_requests()
            .await
            .unwrap_or_default()
            .is_empty()
    );
    Ok(())
}

#[tokio::test]
async fn download_fetches_the_pre_authenticated_url_without_the_token() -> Result<()> {
    let (server, ctx) = onedrive().await;
    let storage = MockServer::start().await;
    let download_url = format!(
        "{}/personal/alex/_layouts/15/download.aspx?UniqueId=fa8b1b3e&tempauth=eyJ0eXAi",
        storage.uri()
    );
    let mut item = drive_item("01BYE5RZ6QN3", "report.csv");
    item["@microsoft.graph.downloadUrl"] = json!(download_url);
    Mock::given(method("GET"))
        .and(path("/v1.0/me/drive/items/01BYE5RZ6QN3"))
        .and(auth())
        .respond_with(ResponseTemplate::new(200).set_body_json(item))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/personal/alex/_layouts/15/download.aspx"))
        .and(query_param("tempauth", "eyJ0eXAi"))
        .respond_with(ResponseTemplate::new(200).set_body_string("a,b\n1,2\n"))
        .expect(1)
        .mount(&storage)
        .await;
    let out = run(
        &ctx,
        "onedrive",
        "download",
        json!({ "item_id": "01BYE5RZ6QN3" }),
    )
    .await?;
    assert_eq!(
        out,
        json!({ "id": "01BYE5RZ6QN3", "name": "report.csv", "mime_type": "text/csv",
                "size": 8, "content_base64": "YSxiCjEsMgo=" })
    );
    let fetched = storage.received_requests().await.unwrap_or_default();
    assert!(fetched[0].headers.get("authorization").is_none());
    Ok(())
}

#[tokio::test]
async fn download_of_a_folder_is_refused() -> Result<()> {
    let (server, ctx) = onedrive().await;
    Mock::given(path("/v1.0/me/drive/items/FOLDER1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "FOLDER1", "name": "Reports", "folder": { "childCount": 3 }
        })))
        .mount(&server)
        .await;
    let e = run_err(
        &ctx,
        "onedrive",
        "download",
        json!({ "item_id": "FOLDER1" }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::InvalidInput);
    assert!(e.message.starts_with("with.item_id: is not a file"));
    Ok(())
}

#[tokio::test]
async fn list_follows_next_links() -> Result<()> {
    let (server, ctx) = onedrive().await;
    let next = format!(
        "{}/v1.0/me/drive/items/F1/children?$top=200&$skiptoken=Paged%3dTRUE%26p_ID%3d2",
        server.uri()
    );
    Mock::given(method("GET"))
        .and(path("/v1.0/me/drive/items/F1/children"))
        .and(query_param("$skiptoken", "Paged=TRUE&p_ID=2"))
        .and(auth())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "value": [drive_item("3", "c.csv"), drive_item("4", "d.csv")]
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1.0/me/drive/items/F1/children"))
        .and(query_param("$top", "200"))
        .and(auth())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "value": [drive_item("1", "a.csv"), drive_item("2", "b.csv")],
            "@odata.nextLink": next
        })))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "onedrive",
        "list",
        json!({ "item_id": "F1", "limit": 1000 }),
    )
    .await?;
    let ids: Vec<&str> = out["items"]
        .as_array()
        .map(|a| a.iter().filter_map(|f| f["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids, ["1", "2", "3", "4"]);
    assert_eq!(out["next_cursor"], serde_json::Value::Null);
    Ok(())
}

#[tokio::test]
async fn list_of_the_root_asks_for_top_and_refuses_foreign_links() -> Result<()> {
    let (server, ctx) = onedrive().await;
    Mock::given(method("GET"))
        .and(path("/v1.0/me/drive/root/children"))
        .and(query_param("$top", "2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "value": [drive_item("1", "a.csv"), drive_item("2", "b.csv")],
            "@odata.nextLink": format!("{}/v1.0/me/drive/root/children?$skiptoken=x", server.uri())
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(&ctx, "onedrive", "list", json!({ "limit": 2 })).await?;
    assert_eq!(out["items"].as_array().map(Vec::len), Some(2));
    let e = run_err(
        &ctx,
        "onedrive",
        "list",
        json!({ "cursor": "https://evil.example.com/v1.0/me/drive/root/children?$skiptoken=x" }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::UpstreamUnavailable);
    Ok(())
}

#[tokio::test]
async fn throttling_carries_retry_after() -> Result<()> {
    let (server, ctx) = onedrive().await;
    Mock::given(path("/v1.0/me/drive/root/children"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "12")
                .set_body_json(json!({
                    "error": { "code": "activityLimitReached", "message": "The app or user has been throttled." }
                })),
        )
        .mount(&server)
        .await;
    let e = run_err(&ctx, "onedrive", "list", json!({})).await?;
    assert_eq!(e.code, ErrorCode::RateLimited);
    assert_eq!(e.retry_after, Some(Duration::from_secs(12)));
    Ok(())
}

#[tokio::test]
async fn graph_errors_are_classified() -> Result<()> {
    let (server, ctx) = onedrive().await;
    Mock::given(path("/v1.0/me/drive/items/gone"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({
            "error": { "code": "itemNotFound", "message": "The resource could not be found." }
        })))
        .mount(&server)
        .await;
    Mock::given(path("/v1.0/me/drive/root:/full.txt:/content"))
        .respond_with(ResponseTemplate::new(507).set_body_json(json!({
            "error": { "code": "quotaLimitReached", "message": "Insufficient Space Available" }
        })))
        .mount(&server)
        .await;
    let e = run_err(&ctx, "onedrive", "download", json!({ "item_id": "gone" })).await?;
    assert_eq!(e.code, ErrorCode::NotFound);
    let e = run_err(
        &ctx,
        "onedrive",
        "upload",
        json!({ "path": "full.txt", "content": "x" }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::Forbidden);
    assert!(!e.is_retryable());
    assert!(!e.message.contains(TOKEN));
    Ok(())
}

#[tokio::test]
async fn health_reads_the_users_drive() -> Result<()> {
    let (server, ctx) = onedrive().await;
    Mock::given(method("GET"))
        .and(path("/v1.0/me/drive"))
        .and(auth())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "b!t18F8ybsHUq1z3LTz8xvZqP8zaSWjkFNhsME", "driveType": "business"
        })))
        .expect(1)
        .mount(&server)
        .await;
    connectors::Registry::builtin()
        .health(&ctx, "onedrive")
        .await?;
    Ok(())
}
