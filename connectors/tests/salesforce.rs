//! Salesforce's REST API as documented at
//! <https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/>: requests on
//! the org's instance URL under `/services/data/v60.0`, `Authorization: Bearer`, failures as
//! an array of `{"message", "errorCode", "fields"}`, queries paged by `nextRecordsUrl`.

mod support;

use anyhow::Result;
use schemas::envelope::ErrorCode;
use serde_json::json;
use support::{bearer, ctx_at, run, run_err};
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "00DE0X0A0M0PeLE!AQcAQH0dMHEXAMPLEzmpkb58urFRkgeBGsxL";

async fn salesforce() -> (MockServer, connectors::ActionContext) {
    let server = MockServer::start().await;
    let ctx = ctx_at(&server.uri(), Some(bearer(TOKEN)));
    (server, ctx)
}

fn auth() -> wiremock::matchers::HeaderExactMatcher {
    header("authorization", format!("Bearer {TOKEN}").as_str())
}

#[tokio::test]
async fn create_record_posts_the_fields_to_the_sobject() -> Result<()> {
    let (server, ctx) = salesforce().await;
    Mock::given(method("POST"))
        .and(path("/services/data/v60.0/sobjects/Account"))
        .and(auth())
        .and(header("content-type", "application/json"))
        .and(body_json(
            json!({ "Name": "Express Logistics and Transport" }),
        ))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "id": "001D000000IqhSLIAZ", "errors": [], "success": true
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "salesforce",
        "create_record",
        json!({ "object": "Account", "fields": { "Name": "Express Logistics and Transport" } }),
    )
    .await?;
    assert_eq!(
        out,
        json!({ "object": "Account", "id": "001D000000IqhSLIAZ" })
    );
    Ok(())
}

#[tokio::test]
async fn update_record_patches_the_record_and_accepts_204() -> Result<()> {
    let (server, ctx) = salesforce().await;
    Mock::given(method("PATCH"))
        .and(path(
            "/services/data/v60.0/sobjects/Account/001D000000INjVe",
        ))
        .and(auth())
        .and(body_json(json!({ "BillingCity": "San Francisco" })))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "salesforce",
        "update_record",
        json!({ "object": "Account", "id": "001D000000INjVe", "fields": { "BillingCity": "San Francisco" } }),
    )
    .await?;
    assert_eq!(out, json!({ "object": "Account", "id": "001D000000INjVe" }));
    Ok(())
}

#[tokio::test]
async fn get_record_asks_for_the_chosen_fields() -> Result<()> {
    let (server, ctx) = salesforce().await;
    let record = json!({
        "attributes": { "type": "Account", "url": "/services/data/v60.0/sobjects/Account/001D000000INjVe" },
        "Id": "001D000000INjVe",
        "Name": "Acme",
        "AccountNumber": "CD656092"
    });
    Mock::given(method("GET"))
        .and(path(
            "/services/data/v60.0/sobjects/Account/001D000000INjVe",
        ))
        .and(query_param("fields", "Name,AccountNumber"))
        .and(auth())
        .respond_with(ResponseTemplate::new(200).set_body_json(record.clone()))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "salesforce",
        "get_record",
        json!({ "object": "Account", "id": "001D000000INjVe", "fields": ["Name", "AccountNumber"] }),
    )
    .await?;
    assert_eq!(out, json!({ "id": "001D000000INjVe", "raw": record }));
    Ok(())
}

#[tokio::test]
async fn query_follows_next_records_url_on_the_instance() -> Result<()> {
    let (server, ctx) = salesforce().await;
    let soql = "SELECT Id, Name FROM Account";
    let next = "/services/data/v60.0/query/01gD0000002HU6KIAW-200";
    let first: Vec<_> = (0..200)
        .map(|i| json!({ "attributes": { "type": "Account" }, "Id": format!("001A{i:04}") }))
        .collect();
    Mock::given(method("GET"))
        .and(path("/services/data/v60.0/query"))
        .and(query_param("q", soql))
        .and(header("sforce-query-options", "batchSize=250"))
        .and(auth())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "totalSize": 400, "done": false, "nextRecordsUrl": next, "records": first
        })))
        .expect(1)
        .mount(&server)
        .await;
    let second: Vec<_> = (200..400)
        .map(|i| json!({ "attributes": { "type": "Account" }, "Id": format!("001A{i:04}") }))
        .collect();
    Mock::given(method("GET"))
        .and(path(next))
        .and(header("sforce-query-options", "batchSize=200"))
        .and(auth())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "totalSize": 400, "done": true, "records": second
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "salesforce",
        "query",
        json!({ "soql": soql, "limit": 250 }),
    )
    .await?;
    let items = out["items"].as_array().map(Vec::len);
    assert_eq!(items, Some(250));
    assert_eq!(out["items"][249]["Id"], "001A0249");
    // The last page was read whole but only partly returned; there is no page after it.
    assert_eq!(out["next_cursor"], json!(null));
    Ok(())
}

#[tokio::test]
async fn query_resumes_from_a_cursor_and_refuses_other_hosts() -> Result<()> {
    let (server, ctx) = salesforce().await;
    let next = "/services/data/v60.0/query/01gD0000002HU6KIAW-2000";
    Mock::given(method("GET"))
        .and(path(next))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "totalSize": 2001, "done": true, "records": [{ "Id": "001B" }]
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(&ctx, "salesforce", "query", json!({ "cursor": next })).await?;
    assert_eq!(
        out,
        json!({ "items": [{ "Id": "001B" }], "next_cursor": null })
    );
    let e = run_err(
        &ctx,
        "salesforce",
        "query",
        json!({ "soql": "SELECT Id FROM Account", "cursor": "https://evil.example.com/q" }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::UpstreamUnavailable);
    let e = run_err(&ctx, "salesforce", "query", json!({})).await?;
    assert_eq!(
        e.message,
        "with.soql: give `soql`, or `cursor` to continue an earlier query"
    );
    Ok(())
}

#[tokio::test]
async fn upsert_says_whether_it_created_or_updated() -> Result<()> {
    let (server, ctx) = salesforce().await;
    let url = "/services/data/v60.0/sobjects/Account/customExtIdField__c/11999";
    Mock::given(method("PATCH"))
        .and(path(url))
        .and(auth())
        .and(body_json(
            json!({ "Name": "California Wheat Corporation", "Type": "New Customer" }),
        ))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "id": "00190000001pPvHAAU", "errors": [], "success": true, "created": true
        })))
        .expect(1)
        .mount(&server)
        .await;
    let input = json!({
        "object": "Account",
        "external_id_field": "customExtIdField__c",
        "external_id": "11999",
        "fields": { "Name": "California Wheat Corporation", "Type": "New Customer" }
    });
    let out = run(&ctx, "salesforce", "upsert_by_external_id", input.clone()).await?;
    assert_eq!(
        out,
        json!({ "outcome": "created", "created": true, "id": "00190000001pPvHAAU" })
    );

    server.reset().await;
    Mock::given(method("PATCH"))
        .and(path(url))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "00190000001pPvHAAU", "errors": [], "success": true, "created": false
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(&ctx, "salesforce", "upsert_by_external_id", input.clone()).await?;
    assert_eq!(
        out,
        json!({ "outcome": "updated", "created": false, "id": "00190000001pPvHAAU" })
    );

    server.reset().await;
    Mock::given(method("PATCH"))
        .and(path(url))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(&ctx, "salesforce", "upsert_by_external_id", input).await?;
    assert_eq!(
        out,
        json!({ "outcome": "updated", "created": false, "id": null })
    );
    Ok(())
}

#[tokio::test]
async fn upsert_matching_several_records_is_a_conflict() -> Result<()> {
    let (server, ctx) = salesforce().await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(300).set_body_json(json!([
            "/services/data/v60.0/sobjects/Account/001D000000Kv3g5IAB",
            "/services/data/v60.0/sobjects/Account/001D000000Kv3g6IAB"
        ])))
        .mount(&server)
        .await;
    let e = run_err(
        &ctx,
        "salesforce",
        "upsert_by_external_id",
        json!({ "object": "Account", "external_id_field": "Ext__c", "external_id": "1", "fields": {} }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::Conflict);
    Ok(())
}

#[tokio::test]
async fn errors_are_classified_by_error_code() -> Result<()> {
    let (server, ctx) = salesforce().await;
    for (status, error_code, code) in [
        (400, "INVALID_FIELD", ErrorCode::InvalidInput),
        (401, "INVALID_SESSION_ID", ErrorCode::Unauthorized),
        (404, "NOT_FOUND", ErrorCode::NotFound),
        (400, "DUPLICATE_VALUE", ErrorCode::Conflict),
        (400, "UNABLE_TO_LOCK_ROW", ErrorCode::UpstreamUnavailable),
        (403, "INSUFFICIENT_ACCESS_OR_READONLY", ErrorCode::Forbidden),
    ] {
        server.reset().await;
        Mock::given(method("POST"))
            .and(path("/services/data/v60.0/sobjects/Account"))
            .respond_with(ResponseTemplate::new(status).set_body_json(json!([{
                "message": "No such column 'Nmae' on sobject of type Account",
                "errorCode": error_code,
                "fields": ["Nmae"]
            }])))
            .mount(&server)
            .await;
        let e = run_err(
            &ctx,
            "salesforce",
            "create_record",
            json!({ "object": "Account", "fields": { "Nmae": "x" } }),
        )
        .await?;
        assert_eq!(e.code, code, "{error_code}");
        assert_eq!(e.status, Some(status));
        assert!(e.message.contains(error_code), "{}", e.message);
        assert!(!e.message.contains(TOKEN));
    }
    Ok(())
}

#[tokio::test]
async fn request_limit_exceeded_is_a_rate_limit() -> Result<()> {
    let (server, ctx) = salesforce().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(403)
                .insert_header("sforce-limit-info", "api-usage=15001/15000")
                .set_body_json(json!([{
                    "message": "TotalRequests Limit exceeded.",
                    "errorCode": "REQUEST_LIMIT_EXCEEDED"
                }])),
        )
        .mount(&server)
        .await;
    let e = run_err(
        &ctx,
        "salesforce",
        "get_record",
        json!({ "object": "Account", "id": "001D000000INjVe" }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::RateLimited);
    assert!(e.is_retryable());
    assert_eq!(e.status, Some(403));
    // Salesforce's allowance rolls over 24 hours and names no reset time.
    assert_eq!(e.retry_after, None);
    Ok(())
}

#[tokio::test]
async fn a_connection_without_an_instance_url_is_refused() -> Result<()> {
    support::init();
    let ctx = connectors::ActionContext {
        credential: Some(std::sync::Arc::new(bearer(TOKEN))),
        ..connectors::ActionContext::default()
    };
    let e = run_err(
        &ctx,
        "salesforce",
        "get_record",
        json!({ "object": "Account", "id": "001" }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::InvalidInput);
    assert!(e.message.contains("base_url"), "{}", e.message);
    Ok(())
}

#[tokio::test]
async fn health_reads_the_version_resources() -> Result<()> {
    let (server, ctx) = salesforce().await;
    Mock::given(method("GET"))
        .and(path("/services/data/v60.0/"))
        .and(auth())
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("sforce-limit-info", "api-usage=25/15000")
                .set_body_json(json!({
                    "sobjects": "/services/data/v60.0/sobjects",
                    "query": "/services/data/v60.0/query",
                    "limits": "/services/data/v60.0/limits"
                })),
        )
        .expect(1)
        .mount(&server)
        .await;
    connectors::Registry::builtin()
        .health(&ctx, "salesforce")
        .await?;
    Ok(())
}
