//! Google Sheets API v4 as documented at
//! <https://developers.google.com/sheets/api/reference/rest/v4/spreadsheets.values>: the A1
//! range percent-encoded as one path segment (with `:append` in it for appends),
//! `Authorization: Bearer`, failures as `{"error": {"code", "message", "status", …}}`.

mod support;

use std::time::Duration;

use anyhow::Result;
use schemas::envelope::ErrorCode;
use serde_json::json;
use support::{bearer, ctx_at, run, run_err};
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "ya29.a0AfH6SMBexampleexampleexample";
const SHEET: &str = "1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms";

async fn sheets() -> (MockServer, connectors::ActionContext) {
    let server = MockServer::start().await;
    let ctx = ctx_at(&server.uri(), Some(bearer(TOKEN)));
    (server, ctx)
}

fn auth() -> wiremock::matchers::HeaderExactMatcher {
    header("authorization", format!("Bearer {TOKEN}").as_str())
}

fn appended(updated_range: &str, rows: u64, cells: u64) -> serde_json::Value {
    json!({
        "spreadsheetId": SHEET,
        "tableRange": "'Sheet 1'!A1:C10",
        "updates": {
            "spreadsheetId": SHEET,
            "updatedRange": updated_range,
            "updatedRows": rows,
            "updatedColumns": 3,
            "updatedCells": cells
        }
    })
}

#[tokio::test]
async fn append_row_posts_one_row_to_the_encoded_range() -> Result<()> {
    let (server, ctx) = sheets().await;
    Mock::given(method("POST"))
        .and(path(format!(
            "/v4/spreadsheets/{SHEET}/values/Sheet%201!A1:C:append"
        )))
        .and(query_param("valueInputOption", "USER_ENTERED"))
        .and(query_param("insertDataOption", "INSERT_ROWS"))
        .and(auth())
        .and(header("content-type", "application/json"))
        .and(body_json(json!({
            "majorDimension": "ROWS",
            "values": [["SKU-1", 3, "=B11*2"]]
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(appended("'Sheet 1'!A11:C11", 1, 3)))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "sheets",
        "append_row",
        json!({ "spreadsheet_id": SHEET, "range": "Sheet 1!A1:C", "values": ["SKU-1", 3, "=B11*2"] }),
    )
    .await?;
    assert_eq!(
        out,
        json!({
            "spreadsheet_id": SHEET,
            "table_range": "'Sheet 1'!A1:C10",
            "updated_range": "'Sheet 1'!A11:C11",
            "updated_rows": 1,
            "updated_cells": 3
        })
    );
    Ok(())
}

#[tokio::test]
async fn append_rows_sends_every_row_in_one_request() -> Result<()> {
    let (server, ctx) = sheets().await;
    Mock::given(method("POST"))
        .and(path(format!(
            "/v4/spreadsheets/{SHEET}/values/Leads:append"
        )))
        .and(query_param("valueInputOption", "RAW"))
        .and(query_param("insertDataOption", "INSERT_ROWS"))
        .and(auth())
        .and(body_json(json!({
            "majorDimension": "ROWS",
            "values": [["a", 1], ["b", 2], ["c", 3]]
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(appended("Leads!A11:B13", 3, 6)))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "sheets",
        "append_rows",
        json!({
            "spreadsheet_id": SHEET,
            "range": "Leads",
            "rows": [["a", 1], ["b", 2], ["c", 3]],
            "value_input_option": "RAW"
        }),
    )
    .await?;
    assert_eq!(out["updated_rows"], 3);
    assert_eq!(out["updated_range"], "Leads!A11:B13");
    let e = run_err(
        &ctx,
        "sheets",
        "append_rows",
        json!({ "spreadsheet_id": SHEET, "range": "Leads", "rows": [] }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::InvalidInput);
    Ok(())
}

#[tokio::test]
async fn read_range_reads_values_with_the_chosen_rendering() -> Result<()> {
    let (server, ctx) = sheets().await;
    Mock::given(method("GET"))
        .and(path(format!(
            "/v4/spreadsheets/{SHEET}/values/Pipeline!A2:C4"
        )))
        .and(query_param("majorDimension", "ROWS"))
        .and(query_param("valueRenderOption", "UNFORMATTED_VALUE"))
        .and(auth())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "range": "Pipeline!A2:C4",
            "majorDimension": "ROWS",
            "values": [["Acme", 1500, "Open"], ["Globex", 900]]
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "sheets",
        "read_range",
        json!({
            "spreadsheet_id": SHEET,
            "range": "Pipeline!A2:C4",
            "major_dimension": "ROWS",
            "value_render_option": "UNFORMATTED_VALUE"
        }),
    )
    .await?;
    assert_eq!(
        out,
        json!({
            "range": "Pipeline!A2:C4",
            "major_dimension": "ROWS",
            "values": [["Acme", 1500, "Open"], ["Globex", 900]]
        })
    );
    Ok(())
}

#[tokio::test]
async fn an_empty_range_reads_as_no_values() -> Result<()> {
    let (server, ctx) = sheets().await;
    Mock::given(method("GET"))
        .and(path(format!("/v4/spreadsheets/{SHEET}/values/Empty!A1:B2")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "range": "Empty!A1:B2", "majorDimension": "ROWS"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "sheets",
        "read_range",
        json!({ "spreadsheet_id": SHEET, "range": "Empty!A1:B2" }),
    )
    .await?;
    assert_eq!(out["values"], json!([]));
    Ok(())
}

#[tokio::test]
async fn update_range_puts_the_values() -> Result<()> {
    let (server, ctx) = sheets().await;
    Mock::given(method("PUT"))
        .and(path(format!(
            "/v4/spreadsheets/{SHEET}/values/Q1%202024!A1:B2"
        )))
        .and(query_param("valueInputOption", "USER_ENTERED"))
        .and(auth())
        .and(body_json(json!({
            "range": "Q1 2024!A1:B2",
            "majorDimension": "ROWS",
            "values": [["Region", "Total"], ["EMEA", "=SUM(C2:C9)"]]
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "spreadsheetId": SHEET,
            "updatedRange": "'Q1 2024'!A1:B2",
            "updatedRows": 2,
            "updatedColumns": 2,
            "updatedCells": 4
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "sheets",
        "update_range",
        json!({
            "spreadsheet_id": SHEET,
            "range": "Q1 2024!A1:B2",
            "values": [["Region", "Total"], ["EMEA", "=SUM(C2:C9)"]]
        }),
    )
    .await?;
    assert_eq!(
        out,
        json!({
            "spreadsheet_id": SHEET,
            "updated_range": "'Q1 2024'!A1:B2",
            "updated_rows": 2,
            "updated_columns": 2,
            "updated_cells": 4
        })
    );
    Ok(())
}

#[tokio::test]
async fn google_errors_are_classified_by_status_and_reason() -> Result<()> {
    let (server, ctx) = sheets().await;
    for (status, google_status, reason, code) in [
        (
            400,
            "INVALID_ARGUMENT",
            "badRequest",
            ErrorCode::InvalidInput,
        ),
        (404, "NOT_FOUND", "notFound", ErrorCode::NotFound),
        (401, "UNAUTHENTICATED", "authError", ErrorCode::Unauthorized),
        (403, "PERMISSION_DENIED", "forbidden", ErrorCode::Forbidden),
    ] {
        server.reset().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(status).set_body_json(json!({
                "error": {
                    "code": status,
                    "message": "Unable to parse range: Nope!A1",
                    "status": google_status,
                    "errors": [{ "message": "Unable to parse range", "domain": "global", "reason": reason }]
                }
            })))
            .mount(&server)
            .await;
        let e = run_err(
            &ctx,
            "sheets",
            "read_range",
            json!({ "spreadsheet_id": SHEET, "range": "Nope!A1" }),
        )
        .await?;
        assert_eq!(e.code, code, "{google_status}");
        assert_eq!(e.status, Some(status));
        assert!(!e.message.contains(TOKEN));
    }
    server.reset().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(403).set_body_json(json!({
            "error": {
                "code": 403,
                "message": "Request had insufficient authentication scopes.",
                "status": "PERMISSION_DENIED",
                "details": [{
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
                    "domain": "googleapis.com",
                    "metadata": { "service": "sheets.googleapis.com", "method": "google.apps.sheets.v4.SpreadsheetsService.GetValues" }
                }]
            }
        })))
        .mount(&server)
        .await;
    let e = run_err(
        &ctx,
        "sheets",
        "read_range",
        json!({ "spreadsheet_id": SHEET, "range": "A1" }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::InsufficientScope);
    Ok(())
}

#[tokio::test]
async fn resource_exhausted_is_a_rate_limit_with_googles_retry_delay() -> Result<()> {
    let (server, ctx) = sheets().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).set_body_json(json!({
            "error": {
                "code": 429,
                "message": "Quota exceeded for quota metric 'Write requests' and limit 'Write requests per minute per user'.",
                "status": "RESOURCE_EXHAUSTED",
                "details": [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "RATE_LIMIT_EXCEEDED",
                        "domain": "googleapis.com",
                        "metadata": { "quota_limit": "WriteRequestsPerMinutePerUser", "service": "sheets.googleapis.com" }
                    },
                    { "@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s" }
                ]
            }
        })))
        .mount(&server)
        .await;
    let e = run_err(
        &ctx,
        "sheets",
        "append_row",
        json!({ "spreadsheet_id": SHEET, "range": "A1", "values": [1] }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::RateLimited);
    assert_eq!(e.status, Some(429));
    assert_eq!(e.retry_after, Some(Duration::from_secs(17)));
    Ok(())
}

#[tokio::test]
async fn a_403_rate_limit_reason_is_a_rate_limit() -> Result<()> {
    let (server, ctx) = sheets().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(403)
                .insert_header("retry-after", "5")
                .set_body_json(json!({
                    "error": {
                        "code": 403,
                        "message": "User Rate Limit Exceeded",
                        "errors": [{ "domain": "usageLimits", "reason": "userRateLimitExceeded", "message": "User Rate Limit Exceeded" }]
                    }
                })),
        )
        .mount(&server)
        .await;
    let e = run_err(
        &ctx,
        "sheets",
        "append_row",
        json!({ "spreadsheet_id": SHEET, "range": "A1", "values": [1] }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::RateLimited);
    assert_eq!(e.status, Some(403));
    assert_eq!(e.retry_after, Some(Duration::from_secs(5)));
    Ok(())
}

#[tokio::test]
async fn health_accepts_not_found_for_its_probe_and_refuses_a_bad_token() -> Result<()> {
    let (server, ctx) = sheets().await;
    Mock::given(method("GET"))
        .and(path("/v4/spreadsheets/switchyard-connection-check"))
        .and(query_param("fields", "spreadsheetId"))
        .and(auth())
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({
            "error": { "code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND" }
        })))
        .expect(1)
        .mount(&server)
        .await;
    connectors::Registry::builtin()
        .health(&ctx, "sheets")
        .await?;
    server.reset().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "error": { "code": 401, "message": "Request had invalid authentication credentials.", "status": "UNAUTHENTICATED" }
        })))
        .mount(&server)
        .await;
    let e = connectors::Registry::builtin()
        .health(&ctx, "sheets")
        .await
        .expect_err("a bad token fails the check");
    assert_eq!(e.code, ErrorCode::Unauthorized);
    server.reset().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(404).set_body_string("<html>Not Found</html>"))
        .mount(&server)
        .await;
    let e = connectors::Registry::builtin()
        .health(&ctx, "sheets")
        .await
        .expect_err("a 404 that is not Google's fails the check");
    assert_eq!(e.code, ErrorCode::UpstreamUnavailable);
    Ok(())
}
