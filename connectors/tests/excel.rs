//! The Microsoft Graph workbook API as documented at
//! <https://learn.microsoft.com/en-us/graph/api/resources/excel>: `Authorization: Bearer`,
//! `POST …/workbook/tables/{table}/rows` with `{"values": [[…]]}`,
//! `GET …/workbook/worksheets/{sheet}/range(address='A1:C5')`, an optional
//! `workbook-session-id` header, errors as `{"error": {"code", "message", "innerError"}}`,
//! throttling as `429` with `Retry-After`.

mod support;

use std::time::Duration;

use anyhow::Result;
use schemas::envelope::ErrorCode;
use serde_json::json;
use support::{bearer, ctx, run, run_err};
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "EwBwA8l6BAAUtest-excel-token";
const ITEM: &str = "01CYZLFJGUJ7JHBSZDFZFL25KSZGQTVAUN";

async fn excel() -> (MockServer, connectors::ActionContext) {
    let server = MockServer::start().await;
    let ctx = ctx(&server, bearer(TOKEN));
    (server, ctx)
}

fn auth() -> wiremock::matchers::HeaderExactMatcher {
    header("authorization", format!("Bearer {TOKEN}").as_str())
}

#[tokio::test]
async fn append_table_rows_posts_every_row_in_one_request() -> Result<()> {
    let (server, ctx) = excel().await;
    Mock::given(method("POST"))
        .and(path(format!(
            "/v1.0/me/drive/items/{ITEM}/workbook/tables/Orders/rows"
        )))
        .and(auth())
        .and(header("content-type", "application/json"))
        .and(header("workbook-session-id", "cluster=PAR1&session=15.PA1"))
        .and(body_json(json!({
            "values": [["2024-05-01", "ACME", 120.5], ["2024-05-02", "Globex", 80]]
        })))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#workbookTableRow",
            "index": 41,
            "values": [["2024-05-01", "ACME", 120.5], ["2024-05-02", "Globex", 80]]
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "excel",
        "append_table_rows",
        json!({ "item_id": ITEM, "table": "Orders",
                "values": [["2024-05-01", "ACME", 120.5], ["2024-05-02", "Globex", 80]],
                "session_id": "cluster=PAR1&session=15.PA1" }),
    )
    .await?;
    assert_eq!(out, json!({ "index": 41, "row_count": 2 }));
    Ok(())
}

#[tokio::test]
async fn append_table_rows_at_an_index_on_another_drive() -> Result<()> {
    let (server, ctx) = excel().await;
    Mock::given(method("POST"))
        .and(path(format!(
            "/v1.0/drives/b!xyz/items/{ITEM}/workbook/tables/%7B6D182180-5F5E-4A43%7D/rows"
        )))
        .and(body_json(json!({ "values": [["a"]], "index": 0 })))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({ "index": 0, "values": [["a"]] })),
        )
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "excel",
        "append_table_rows",
        json!({ "item_id": ITEM, "table": "{6D182180-5F5E-4A43}", "values": [["a"]],
                "index": 0, "drive_id": "b!xyz" }),
    )
    .await?;
    assert_eq!(out["index"], 0);
    let requests = server.received_requests().await.unwrap_or_default();
    assert!(requests[0].headers.get("workbook-session-id").is_none());
    Ok(())
}

#[tokio::test]
async fn ragged_rows_are_refused_before_any_call() -> Result<()> {
    let (server, ctx) = excel().await;
    let e = run_err(
        &ctx,
        "excel",
        "append_table_rows",
        json!({ "item_id": ITEM, "table": "T", "values": [["a", "b"], ["c"]] }),
    )
    .await?;
    assert_eq!(
        e.message,
        "with.values[1]: has 1 cells; every row must have 2"
    );
    let e = run_err(
        &ctx,
        "excel",
        "append_table_rows",
        json!({ "item_id": ITEM, "table": "T", "values": [] }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::InvalidInput);
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
async fn read_range_addresses_the_range_segment_as_graph_expects() -> Result<()> {
    let (server, ctx) = excel().await;
    Mock::given(method("GET"))
        .and(path(format!(
            "/v1.0/me/drive/items/{ITEM}/workbook/worksheets/Q1%20Sales/range(address='A1:C2')"
        )))
        .and(auth())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "@odata.type": "#microsoft.graph.workbookRange",
            "address": "'Q1 Sales'!A1:C2",
            "addressLocal": "'Q1 Sales'!A1:C2",
            "cellCount": 6,
            "columnCount": 3,
            "rowCount": 2,
            "values": [["Date", "Customer", "Total"], [45413, "ACME", 120.5]],
            "text": [["Date", "Customer", "Total"], ["5/1/2024", "ACME", "120.50"]]
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "excel",
        "read_range",
        json!({ "item_id": ITEM, "worksheet": "Q1 Sales", "address": "A1:C2" }),
    )
    .await?;
    assert_eq!(
        out,
        json!({
            "address": "'Q1 Sales'!A1:C2",
            "values": [["Date", "Customer", "Total"], [45413, "ACME", 120.5]],
            "text": [["Date", "Customer", "Total"], ["5/1/2024", "ACME", "120.50"]],
            "row_count": 2,
            "column_count": 3
        })
    );
    let e = run_err(
        &ctx,
        "excel",
        "read_range",
        json!({ "item_id": ITEM, "worksheet": "S", "address": "A1')/x" }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::InvalidInput);
    Ok(())
}

#[tokio::test]
async fn throttling_carries_retry_after() -> Result<()> {
    let (server, ctx) = excel().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "8")
                .set_body_json(json!({
                    "error": { "code": "tooManyRequests", "message": "The app or user has been throttled.",
                        "innerError": { "code": "tooManyRequestsUncategorized" } }
                })),
        )
        .mount(&server)
        .await;
    let e = run_err(
        &ctx,
        "excel",
        "append_table_rows",
        json!({ "item_id": ITEM, "table": "T", "values": [["a"]] }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::RateLimited);
    assert_eq!(e.retry_after, Some(Duration::from_secs(8)));
    Ok(())
}

#[tokio::test]
async fn workbook_errors_are_classified() -> Result<()> {
    let (server, ctx) = excel().await;
    Mock::given(path(format!(
        "/v1.0/me/drive/items/{ITEM}/workbook/tables/Missing/rows"
    )))
    .respond_with(ResponseTemplate::new(404).set_body_json(json!({
        "error": { "code": "itemNotFound", "message": "The requested resource doesn't exist.",
            "innerError": { "code": "notFoundUncategorized" } }
    })))
    .mount(&server)
    .await;
    Mock::given(path(format!(
        "/v1.0/me/drive/items/{ITEM}/workbook/tables/Busy/rows"
    )))
    .respond_with(
        ResponseTemplate::new(409)
            .insert_header("retry-after", "3")
            .set_body_json(json!({
                "error": { "code": "conflict", "message": "The request could not be processed.",
                    "innerError": { "code": "transientFailure" } }
            })),
    )
    .mount(&server)
    .await;
    let e = run_err(
        &ctx,
        "excel",
        "append_table_rows",
        json!({ "item_id": ITEM, "table": "Missing", "values": [["a"]] }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::NotFound);
    assert!(!e.message.contains(TOKEN));
    let e = run_err(
        &ctx,
        "excel",
        "append_table_rows",
        json!({ "item_id": ITEM, "table": "Busy", "values": [["a"]] }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::UpstreamUnavailable);
    assert_eq!(e.retry_after, Some(Duration::from_secs(3)));
    Ok(())
}

#[tokio::test]
async fn health_reads_the_users_drive() -> Result<()> {
    let (server, ctx) = excel().await;
    Mock::given(method("GET"))
        .and(path("/v1.0/me/drive"))
        .and(auth())
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "id": "b!abc", "driveType": "business" })),
        )
        .expect(1)
        .mount(&server)
        .await;
    connectors::Registry::builtin()
        .health(&ctx, "excel")
        .await?;
    Ok(())
}
