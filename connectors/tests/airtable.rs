//! Airtable's Web API as documented at <https://airtable.com/developers/web/api/introduction>:
//! `/v0/{baseId}/{table}` with `Authorization: Bearer`, at most 10 records per write request,
//! listings paged by `offset`, failures as `{"error": {"type", "message"}}` or
//! `{"error": "NOT_FOUND"}`, and `429` meaning "wait 30 seconds" with no `Retry-After`.

mod support;

use std::time::Duration;

use anyhow::Result;
use schemas::envelope::ErrorCode;
use serde_json::{Value, json};
use support::{bearer, ctx_at, run, run_err};
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "patAbCdEfGh12345.0123456789abcdef0123456789abcdef";
const BASE: &str = "appLkNDICXNqxSDhG";

async fn airtable() -> (MockServer, connectors::ActionContext) {
    let server = MockServer::start().await;
    let ctx = ctx_at(&server.uri(), Some(bearer(TOKEN)));
    (server, ctx)
}

fn auth() -> wiremock::matchers::HeaderExactMatcher {
    header("authorization", format!("Bearer {TOKEN}").as_str())
}

fn created(ids: std::ops::Range<usize>) -> Value {
    let records: Vec<Value> = ids
        .map(|i| {
            json!({
                "id": format!("rec{i:03}"),
                "createdTime": "2024-05-01T10:00:00.000Z",
                "fields": { "Name": format!("Lead {i}") }
            })
        })
        .collect();
    json!({ "records": records })
}

fn fields(ids: std::ops::Range<usize>) -> Vec<Value> {
    ids.map(|i| json!({ "fields": { "Name": format!("Lead {i}") } }))
        .collect()
}

#[tokio::test]
async fn create_records_sends_batches_of_ten() -> Result<()> {
    let (server, ctx) = airtable().await;
    for (range, typecast) in [(0..10, true), (10..20, true), (20..23, true)] {
        Mock::given(method("POST"))
            .and(path(format!("/v0/{BASE}/Leads%20Table")))
            .and(auth())
            .and(header("content-type", "application/json"))
            .and(body_json(
                json!({ "records": fields(range.clone()), "typecast": typecast }),
            ))
            .respond_with(ResponseTemplate::new(200).set_body_json(created(range)))
            .expect(1)
            .mount(&server)
            .await;
    }
    let records: Vec<Value> = (0..23)
        .map(|i| json!({ "Name": format!("Lead {i}") }))
        .collect();
    let out = run(
        &ctx,
        "airtable",
        "create_records",
        json!({ "base_id": BASE, "table": "Leads Table", "records": records, "typecast": true }),
    )
    .await?;
    assert_eq!(out["requests"], 3);
    assert_eq!(out["ids"].as_array().map(Vec::len), Some(23));
    assert_eq!(out["ids"][22], "rec022");
    assert_eq!(out["records"][0]["createdTime"], "2024-05-01T10:00:00.000Z");
    Ok(())
}

#[tokio::test]
async fn a_failed_batch_names_the_records_already_written() -> Result<()> {
    let (server, ctx) = airtable().await;
    Mock::given(method("POST"))
        .and(body_json(json!({ "records": fields(0..10) })))
        .respond_with(ResponseTemplate::new(200).set_body_json(created(0..10)))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(body_json(json!({ "records": fields(10..12) })))
        .respond_with(ResponseTemplate::new(422).set_body_json(json!({
            "error": { "type": "UNKNOWN_FIELD_NAME", "message": "Unknown field name: \"Nmae\"" }
        })))
        .expect(1)
        .mount(&server)
        .await;
    let records: Vec<Value> = (0..12)
        .map(|i| json!({ "Name": format!("Lead {i}") }))
        .collect();
    let e = run_err(
        &ctx,
        "airtable",
        "create_records",
        json!({ "base_id": BASE, "table": "Leads", "records": records }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::InvalidInput);
    assert_eq!(e.status, Some(422));
    assert!(
        e.message.contains("already wrote 10 records: rec000"),
        "{}",
        e.message
    );
    Ok(())
}

#[tokio::test]
async fn update_records_patches_in_batches() -> Result<()> {
    let (server, ctx) = airtable().await;
    let updates: Vec<Value> = (0..12)
        .map(|i| json!({ "id": format!("rec{i:03}"), "fields": { "Status": "Won" } }))
        .collect();
    for batch in [&updates[..10], &updates[10..]] {
        let answer: Vec<Value> = batch
            .iter()
            .map(|u| json!({ "id": u["id"], "createdTime": "2024-05-01T10:00:00.000Z", "fields": { "Status": "Won" } }))
            .collect();
        Mock::given(method("PATCH"))
            .and(path(format!("/v0/{BASE}/tblXyz")))
            .and(auth())
            .and(body_json(json!({ "records": batch })))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "records": answer })))
            .expect(1)
            .mount(&server)
            .await;
    }
    let out = run(
        &ctx,
        "airtable",
        "update_records",
        json!({ "base_id": BASE, "table": "tblXyz", "records": updates }),
    )
    .await?;
    assert_eq!(out["requests"], 2);
    assert_eq!(out["ids"][11], "rec011");
    Ok(())
}

#[tokio::test]
async fn list_records_follows_offsets() -> Result<()> {
    let (server, ctx) = airtable().await;
    let record = |id: &str| json!({ "id": id, "createdTime": "2024-05-01T10:00:00.000Z", "fields": { "Status": "Open" } });
    Mock::given(method("GET"))
        .and(path(format!("/v0/{BASE}/Leads")))
        .and(query_param("offset", "itrABC/recB"))
        .and(query_param("pageSize", "1"))
        .and(auth())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "records": [record("recC")], "offset": "itrABC/recC"
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/v0/{BASE}/Leads")))
        .and(query_param("pageSize", "3"))
        .and(query_param("view", "Grid view"))
        .and(query_param("filterByFormula", "{Status} = 'Open'"))
        .and(query_param("fields[]", "Status"))
        .and(auth())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "records": [record("recA"), record("recB")], "offset": "itrABC/recB"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "airtable",
        "list_records",
        json!({
            "base_id": BASE, "table": "Leads", "view": "Grid view",
            "filter_by_formula": "{Status} = 'Open'", "fields": ["Status"], "limit": 3
        }),
    )
    .await?;
    let ids: Vec<&str> = out["items"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids, ["recA", "recB", "recC"]);
    assert_eq!(out["next_cursor"], "itrABC/recC");
    Ok(())
}

#[tokio::test]
async fn both_error_shapes_are_classified_by_type() -> Result<()> {
    let (server, ctx) = airtable().await;
    for (status, body, code) in [
        (404, json!({ "error": "NOT_FOUND" }), ErrorCode::NotFound),
        (
            403,
            json!({ "error": { "type": "INVALID_PERMISSIONS_OR_MODEL_NOT_FOUND", "message": "Invalid permissions, or the requested model was not found." } }),
            ErrorCode::Forbidden,
        ),
        (
            422,
            json!({ "error": { "type": "INVALID_REQUEST_UNKNOWN", "message": "Invalid request: parameter validation failed." } }),
            ErrorCode::InvalidInput,
        ),
        (
            401,
            json!({ "error": { "type": "AUTHENTICATION_REQUIRED", "message": "Authentication required" } }),
            ErrorCode::Unauthorized,
        ),
    ] {
        server.reset().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(status).set_body_json(body))
            .mount(&server)
            .await;
        let e = run_err(
            &ctx,
            "airtable",
            "list_records",
            json!({ "base_id": BASE, "table": "Leads" }),
        )
        .await?;
        assert_eq!(e.code, code, "{status}");
        assert_eq!(e.status, Some(status));
        assert!(!e.message.contains(TOKEN));
    }
    Ok(())
}

#[tokio::test]
async fn a_429_waits_thirty_seconds() -> Result<()> {
    let (server, ctx) = airtable().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(429).set_body_json(json!({
            "errors": [{ "error": "RATE_LIMIT_REACHED", "message": "Rate limit exceeded. Please try again later" }]
        })))
        .mount(&server)
        .await;
    let e = run_err(
        &ctx,
        "airtable",
        "list_records",
        json!({ "base_id": BASE, "table": "Leads" }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::RateLimited);
    assert_eq!(e.status, Some(429));
    assert_eq!(e.retry_after, Some(Duration::from_secs(30)));
    Ok(())
}

#[tokio::test]
async fn inputs_are_bounded_before_any_call() -> Result<()> {
    let (server, ctx) = airtable().await;
    let e = run_err(
        &ctx,
        "airtable",
        "create_records",
        json!({ "base_id": BASE, "table": "Leads", "records": [] }),
    )
    .await?;
    assert_eq!(e.message, "with.records: give at least one record");
    let many: Vec<Value> = (0..1001).map(|_| json!({ "Name": "x" })).collect();
    let e = run_err(
        &ctx,
        "airtable",
        "create_records",
        json!({ "base_id": BASE, "table": "Leads", "records": many }),
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
async fn health_asks_whoami() -> Result<()> {
    let (server, ctx) = airtable().await;
    Mock::given(method("GET"))
        .and(path("/v0/meta/whoami"))
        .and(auth())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "usrL2PNC5o3H4lBEi",
            "scopes": ["data.records:read", "data.records:write"]
        })))
        .expect(1)
        .mount(&server)
        .await;
    connectors::Registry::builtin()
        .health(&ctx, "airtable")
        .await?;
    Ok(())
}
