//! HubSpot's CRM v3 object APIs and v4 associations API as documented at
//! <https://developers.hubspot.com/docs/api/crm/understanding-the-crm>: `Authorization:
//! Bearer`, failures as `{"status": "error", "message", "correlationId", "category"}`, rate
//! limits as `429` with `category: RATE_LIMITS` and the `X-HubSpot-RateLimit-*` headers.

mod support;

use std::time::Duration;

use anyhow::Result;
use schemas::envelope::ErrorCode;
use serde_json::json;
use support::{bearer, ctx_at, run, run_err};
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "pat-na1-11111111-2222-3333-4444-555555555555";

async fn hubspot() -> (MockServer, connectors::ActionContext) {
    let server = MockServer::start().await;
    let ctx = ctx_at(&server.uri(), Some(bearer(TOKEN)));
    (server, ctx)
}

fn auth() -> wiremock::matchers::HeaderExactMatcher {
    header("authorization", format!("Bearer {TOKEN}").as_str())
}

fn contact(id: &str, email: &str) -> serde_json::Value {
    json!({
        "id": id,
        "properties": { "email": email, "firstname": "Ada", "hs_object_id": id },
        "createdAt": "2024-05-01T10:00:00.000Z",
        "updatedAt": "2024-05-01T10:00:00.000Z",
        "archived": false
    })
}

#[tokio::test]
async fn create_contact_posts_its_properties() -> Result<()> {
    let (server, ctx) = hubspot().await;
    Mock::given(method("POST"))
        .and(path("/crm/v3/objects/contacts"))
        .and(auth())
        .and(header("content-type", "application/json"))
        .and(body_json(json!({
            "properties": { "email": "ada@example.com", "firstname": "Ada" }
        })))
        .respond_with(ResponseTemplate::new(201).set_body_json(contact("512", "ada@example.com")))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "hubspot",
        "create_contact",
        json!({ "properties": { "email": "ada@example.com", "firstname": "Ada" } }),
    )
    .await?;
    assert_eq!(out["id"], "512");
    assert_eq!(out["properties"]["email"], "ada@example.com");
    assert_eq!(out["created_at"], "2024-05-01T10:00:00.000Z");
    Ok(())
}

#[tokio::test]
async fn a_duplicate_email_is_a_conflict_naming_the_existing_contact() -> Result<()> {
    let (server, ctx) = hubspot().await;
    Mock::given(method("POST"))
        .and(path("/crm/v3/objects/contacts"))
        .respond_with(ResponseTemplate::new(409).set_body_json(json!({
            "status": "error",
            "message": "Contact already exists. Existing ID: 2926551",
            "correlationId": "b6881283-187e-4088-a778-5c933a14547c",
            "category": "CONFLICT"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let e = run_err(
        &ctx,
        "hubspot",
        "create_contact",
        json!({ "properties": { "email": "lee@xyz.co.uk" } }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::Conflict);
    assert_eq!(e.status, Some(409));
    assert!(e.message.contains("existing id 2926551"), "{}", e.message);

    // Newer answers carry the id as a field too.
    server.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(409).set_body_json(json!({
            "status": "error",
            "message": "Contact already exists.",
            "identityProfile": { "vid": 2926552, "isContact": true },
            "correlationId": "b6881283-187e-4088-a778-5c933a14547d",
            "category": "OBJECT_ALREADY_EXISTS",
            "error": "CONTACT_EXISTS"
        })))
        .mount(&server)
        .await;
    let e = run_err(
        &ctx,
        "hubspot",
        "create_contact",
        json!({ "properties": { "email": "lee@xyz.co.uk" } }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::Conflict);
    assert!(e.message.contains("existing id 2926552"), "{}", e.message);
    Ok(())
}

#[tokio::test]
async fn update_contact_patches_the_contact() -> Result<()> {
    let (server, ctx) = hubspot().await;
    Mock::given(method("PATCH"))
        .and(path("/crm/v3/objects/contacts/512"))
        .and(auth())
        .and(body_json(
            json!({ "properties": { "lifecyclestage": "customer" } }),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(contact("512", "ada@example.com")))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "hubspot",
        "update_contact",
        json!({ "id": "512", "properties": { "lifecyclestage": "customer" } }),
    )
    .await?;
    assert_eq!(out["id"], "512");
    Ok(())
}

#[tokio::test]
async fn search_contacts_pages_by_after() -> Result<()> {
    let (server, ctx) = hubspot().await;
    let filters = json!([{ "filters": [{ "propertyName": "lifecyclestage", "operator": "EQ", "value": "lead" }] }]);
    Mock::given(method("POST"))
        .and(path("/crm/v3/objects/contacts/search"))
        .and(auth())
        .and(body_json(json!({
            "filterGroups": filters,
            "properties": ["email"],
            "limit": 3
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "total": 5,
            "results": [contact("1", "a@x.io"), contact("2", "b@x.io")],
            "paging": { "next": { "after": "2", "link": "?after=2" } }
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/crm/v3/objects/contacts/search"))
        .and(body_json(json!({
            "filterGroups": filters,
            "properties": ["email"],
            "limit": 1,
            "after": "2"
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "total": 5,
            "results": [contact("3", "c@x.io")],
            "paging": { "next": { "after": "3" } }
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "hubspot",
        "search_contacts",
        json!({ "filter_groups": filters, "properties": ["email"], "limit": 3 }),
    )
    .await?;
    let ids: Vec<&str> = out["items"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids, ["1", "2", "3"]);
    assert_eq!(out["next_cursor"], "3");
    Ok(())
}

#[tokio::test]
async fn create_and_update_deal_use_the_deals_object() -> Result<()> {
    let (server, ctx) = hubspot().await;
    let deal = json!({
        "id": "9001",
        "properties": { "dealname": "Renewal", "amount": "1500", "dealstage": "appointmentscheduled" },
        "createdAt": "2024-05-01T10:00:00.000Z",
        "updatedAt": "2024-05-02T10:00:00.000Z",
        "archived": false
    });
    let associations = json!([{
        "to": { "id": "512" },
        "types": [{ "associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 3 }]
    }]);
    Mock::given(method("POST"))
        .and(path("/crm/v3/objects/deals"))
        .and(auth())
        .and(body_json(json!({
            "properties": { "dealname": "Renewal", "amount": "1500", "dealstage": "appointmentscheduled" },
            "associations": associations
        })))
        .respond_with(ResponseTemplate::new(201).set_body_json(deal.clone()))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/crm/v3/objects/deals/9001"))
        .and(auth())
        .and(body_json(
            json!({ "properties": { "dealstage": "closedwon" } }),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(deal))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "hubspot",
        "create_deal",
        json!({
            "properties": { "dealname": "Renewal", "amount": "1500", "dealstage": "appointmentscheduled" },
            "associations": associations
        }),
    )
    .await?;
    assert_eq!(out["id"], "9001");
    let out = run(
        &ctx,
        "hubspot",
        "update_deal",
        json!({ "id": "9001", "properties": { "dealstage": "closedwon" } }),
    )
    .await?;
    assert_eq!(out["updated_at"], "2024-05-02T10:00:00.000Z");
    Ok(())
}

#[tokio::test]
async fn associate_puts_the_default_association() -> Result<()> {
    let (server, ctx) = hubspot().await;
    let results = json!([{
        "from": { "id": "512" },
        "to": { "id": "9001" },
        "associationSpec": { "associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 4 }
    }]);
    Mock::given(method("PUT"))
        .and(path(
            "/crm/v4/objects/contacts/512/associations/default/deals/9001",
        ))
        .and(auth())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "status": "COMPLETE",
            "results": results,
            "startedAt": "2024-05-01T10:00:00.000Z",
            "completedAt": "2024-05-01T10:00:00.050Z"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "hubspot",
        "associate",
        json!({ "from_type": "contacts", "from_id": "512", "to_type": "deals", "to_id": "9001" }),
    )
    .await?;
    assert_eq!(out, json!({ "status": "COMPLETE", "results": results }));
    Ok(())
}

#[tokio::test]
async fn errors_are_classified_by_category() -> Result<()> {
    let (server, ctx) = hubspot().await;
    for (status, category, code) in [
        (400, "VALIDATION_ERROR", ErrorCode::InvalidInput),
        (404, "OBJECT_NOT_FOUND", ErrorCode::NotFound),
        (401, "INVALID_AUTHENTICATION", ErrorCode::Unauthorized),
        (403, "MISSING_SCOPES", ErrorCode::InsufficientScope),
    ] {
        server.reset().await;
        Mock::given(method("PATCH"))
            .respond_with(ResponseTemplate::new(status).set_body_json(json!({
                "status": "error",
                "message": "Property values were not valid",
                "correlationId": "aeb5f871-7f07-4993-9211-075dc63e7cbf",
                "category": category
            })))
            .mount(&server)
            .await;
        let e = run_err(
            &ctx,
            "hubspot",
            "update_contact",
            json!({ "id": "512", "properties": { "email": "not-an-email" } }),
        )
        .await?;
        assert_eq!(e.code, code, "{category}");
        assert_eq!(e.status, Some(status));
        assert!(!e.message.contains(TOKEN));
    }
    Ok(())
}

#[tokio::test]
async fn rate_limits_wait_for_hubspots_window() -> Result<()> {
    let (server, ctx) = hubspot().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("x-hubspot-ratelimit-daily", "250000")
                .insert_header("x-hubspot-ratelimit-daily-remaining", "249000")
                .insert_header("x-hubspot-ratelimit-interval-milliseconds", "10000")
                .insert_header("x-hubspot-ratelimit-max", "100")
                .insert_header("x-hubspot-ratelimit-remaining", "0")
                .set_body_json(json!({
                    "status": "error",
                    "message": "You have reached your ten_secondly_rolling limit.",
                    "errorType": "RATE_LIMIT",
                    "correlationId": "c033cdaa-2c40-4a64-ae48-b4cec88dad24",
                    "policyName": "TEN_SECONDLY_ROLLING",
                    "category": "RATE_LIMITS"
                })),
        )
        .mount(&server)
        .await;
    let e = run_err(
        &ctx,
        "hubspot",
        "create_deal",
        json!({ "properties": { "dealname": "x" } }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::RateLimited);
    assert_eq!(e.status, Some(429));
    assert_eq!(e.retry_after, Some(Duration::from_secs(10)));

    // The daily allowance resets at the account's midnight, which HubSpot does not name.
    server.reset().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("x-hubspot-ratelimit-daily", "250000")
                .insert_header("x-hubspot-ratelimit-daily-remaining", "0")
                .set_body_json(json!({
                    "status": "error",
                    "message": "You have reached your daily limit.",
                    "errorType": "RATE_LIMIT",
                    "policyName": "DAILY",
                    "category": "RATE_LIMITS"
                })),
        )
        .mount(&server)
        .await;
    let e = run_err(
        &ctx,
        "hubspot",
        "create_deal",
        json!({ "properties": { "dealname": "x" } }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::RateLimited);
    assert_eq!(e.retry_after, None);
    Ok(())
}

#[tokio::test]
async fn health_lists_one_contact() -> Result<()> {
    let (server, ctx) = hubspot().await;
    Mock::given(method("GET"))
        .and(path("/crm/v3/objects/contacts"))
        .and(query_param("limit", "1"))
        .and(auth())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "results": [contact("1", "a@x.io")],
            "paging": { "next": { "after": "2" } }
        })))
        .expect(1)
        .mount(&server)
        .await;
    connectors::Registry::builtin()
        .health(&ctx, "hubspot")
        .await?;
    Ok(())
}
