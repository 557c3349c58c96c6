//! Jira Cloud's REST API v3 as documented at
//! <https://developer.atlassian.com/cloud/jira/platform/rest/v3/>: the site's own host, Basic
//! auth with `email:api_token`, ADF rich text, `{"errorMessages", "errors"}` failures, `429`
//! with `Retry-After`, and the enhanced JQL search paged by `nextPageToken`.

mod support;

use std::time::Duration;

use anyhow::Result;
use schemas::envelope::ErrorCode;
use serde_json::{Value, json};
use support::{basic, ctx_at, run, run_err};
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const EMAIL: &str = "bot@example.com";
const API_TOKEN: &str = "ATATT3xFfGF0-test-token";

async fn jira() -> (MockServer, connectors::ActionContext) {
    let server = MockServer::start().await;
    let ctx = ctx_at(&server.uri(), Some(basic(EMAIL, API_TOKEN)));
    (server, ctx)
}

fn basic_header() -> String {
    use base64::Engine as _;
    let pair = format!("{EMAIL}:{API_TOKEN}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

fn paragraph(text: &str) -> Value {
    json!({ "type": "paragraph", "content": [{ "type": "text", "text": text }] })
}

#[tokio::test]
async fn create_issue_posts_fields_with_an_adf_description() -> Result<()> {
    let (server, ctx) = jira().await;
    Mock::given(method("POST"))
        .and(path("/rest/api/3/issue"))
        .and(header("authorization", basic_header().as_str()))
        .and(header("content-type", "application/json"))
        .and(header("accept", "application/json"))
        .and(body_json(json!({
            "fields": {
                "project": { "key": "SALES" },
                "summary": "Stalled deal: Acme",
                "issuetype": { "name": "Task" },
                "description": { "type": "doc", "version": 1, "content": [
                    paragraph("No activity for 9 days."),
                    paragraph("Owner: Ana")
                ]},
                "labels": ["stalled"],
                "duedate": "2026-12-31"
            }
        })))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "id": "10000",
            "key": "SALES-24",
            "self": "https://your-domain.atlassian.net/rest/api/3/issue/10000",
            "transition": { "status": 200, "errorCollection": { "errorMessages": [], "errors": {} } }
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "jira",
        "create_issue",
        json!({ "project": "SALES", "summary": "Stalled deal: Acme",
                "description": "No activity for 9 days.\n\nOwner: Ana",
                "labels": ["stalled"], "fields": { "duedate": "2026-12-31" } }),
    )
    .await?;
    assert_eq!(
        out,
        json!({
            "id": "10000",
            "key": "SALES-24",
            "self": "https://your-domain.atlassian.net/rest/api/3/issue/10000",
            "browse_url": format!("{}/browse/SALES-24", server.uri())
        })
    );
    Ok(())
}

#[tokio::test]
async fn field_errors_are_invalid_input_naming_the_field() -> Result<()> {
    let (server, ctx) = jira().await;
    Mock::given(method("POST"))
        .and(path("/rest/api/3/issue"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "errorMessages": [],
            "errors": { "issuetype": "Specify an issue type" }
        })))
        .expect(1)
        .mount(&server)
        .await;
    let e = run_err(
        &ctx,
        "jira",
        "create_issue",
        json!({ "project": "SALES", "summary": "x", "issue_type": "Nope" }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::InvalidInput);
    assert_eq!(e.status, Some(400));
    assert!(
        e.message.contains("`issuetype`: Specify an issue type"),
        "{}",
        e.message
    );
    assert!(!e.message.contains(API_TOKEN));
    Ok(())
}

#[tokio::test]
async fn a_missing_issue_is_not_found() -> Result<()> {
    let (server, ctx) = jira().await;
    Mock::given(path("/rest/api/3/issue/SALES-999/comment"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({
            "errorMessages": ["Issue does not exist or you do not have permission to see it."],
            "errors": {}
        })))
        .mount(&server)
        .await;
    let e = run_err(
        &ctx,
        "jira",
        "add_comment",
        json!({ "issue": "SALES-999", "body": "hi" }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::NotFound);
    Ok(())
}

#[tokio::test]
async fn rate_limits_carry_retry_after() -> Result<()> {
    let (server, ctx) = jira().await;
    Mock::given(path("/rest/api/3/issue"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "5")
                .insert_header("x-ratelimit-limit", "100")
                .insert_header("x-ratelimit-remaining", "0")
                .insert_header("x-ratelimit-reset", "2026-12-02T08:00:05Z")
                .insert_header("ratelimit-reason", "jira-quota-tenant-based")
                .set_body_string("Rate limit exceeded."),
        )
        .mount(&server)
        .await;
    let e = run_err(
        &ctx,
        "jira",
        "create_issue",
        json!({ "project": "SALES", "summary": "x" }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::RateLimited);
    assert_eq!(e.retry_after, Some(Duration::from_secs(5)));
    Ok(())
}

#[tokio::test]
async fn transition_by_id_posts_it_directly() -> Result<()> {
    let (server, ctx) = jira().await;
    Mock::given(method("POST"))
        .and(path("/rest/api/3/issue/SALES-24/transitions"))
        .and(header("authorization", basic_header().as_str()))
        .and(body_json(json!({
            "transition": { "id": "31" },
            "fields": { "resolution": { "name": "Done" } }
        })))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "jira",
        "transition_issue",
        json!({ "issue": "SALES-24", "transition": "31",
                "fields": { "resolution": { "name": "Done" } } }),
    )
    .await?;
    assert_eq!(
        out,
        json!({ "issue": "SALES-24", "transition_id": "31", "transition_name": null })
    );
    assert_eq!(
        server.received_requests().await.unwrap_or_default().len(),
        1
    );
    Ok(())
}

fn transitions() -> Value {
    json!({
        "expand": "transitions",
        "transitions": [
            { "id": "11", "name": "Start work", "hasScreen": false,
              "to": { "id": "3", "name": "In Progress", "statusCategory": { "key": "indeterminate" } } },
            { "id": "31", "name": "Finish", "hasScreen": false,
              "to": { "id": "10001", "name": "Done", "statusCategory": { "key": "done" } } }
        ]
    })
}

#[tokio::test]
async fn transition_by_name_or_status_is_resolved_first() -> Result<()> {
    let (server, ctx) = jira().await;
    Mock::given(method("GET"))
        .and(path("/rest/api/3/issue/SALES-24/transitions"))
        .and(header("authorization", basic_header().as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(transitions()))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/rest/api/3/issue/SALES-24/transitions"))
        .and(body_json(json!({ "transition": { "id": "31" } })))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/rest/api/3/issue/SALES-24/transitions"))
        .and(body_json(json!({ "transition": { "id": "11" } })))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    // By the target status…
    let out = run(
        &ctx,
        "jira",
        "transition_issue",
        json!({ "issue": "SALES-24", "transition": "done" }),
    )
    .await?;
    assert_eq!(out["transition_id"], "31");
    assert_eq!(out["transition_name"], "Finish");
    // …and by the transition's own name.
    let out = run(
        &ctx,
        "jira",
        "transition_issue",
        json!({ "issue": "SALES-24", "transition": "Start work" }),
    )
    .await?;
    assert_eq!(out["transition_id"], "11");
    Ok(())
}

#[tokio::test]
async fn an_unavailable_transition_lists_the_available_ones() -> Result<()> {
    let (server, ctx) = jira().await;
    Mock::given(method("GET"))
        .and(path("/rest/api/3/issue/SALES-24/transitions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(transitions()))
        .expect(1)
        .mount(&server)
        .await;
    let e = run_err(
        &ctx,
        "jira",
        "transition_issue",
        json!({ "issue": "SALES-24", "transition": "Reopen" }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::InvalidInput);
    assert!(
        e.message
            .starts_with("with.transition: issue SALES-24 has no transition `Reopen`"),
        "{}",
        e.message
    );
    assert!(e.message.contains("Start work, Finish"), "{}", e.message);
    Ok(())
}

#[tokio::test]
async fn add_comment_posts_an_adf_body() -> Result<()> {
    let (server, ctx) = jira().await;
    Mock::given(method("POST"))
        .and(path("/rest/api/3/issue/SALES-24/comment"))
        .and(header("authorization", basic_header().as_str()))
        .and(body_json(json!({
            "body": { "type": "doc", "version": 1, "content": [{
                "type": "paragraph",
                "content": [
                    { "type": "text", "text": "Chased by email." },
                    { "type": "hardBreak" },
                    { "type": "text", "text": "Waiting on legal." }
                ]
            }]}
        })))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "id": "10000",
            "self": "https://your-domain.atlassian.net/rest/api/3/issue/10010/comment/10000",
            "author": { "accountId": "5b10a2844c20165700ede21g", "displayName": "Bot" },
            "body": { "type": "doc", "version": 1, "content": [] },
            "created": "2026-12-02T10:30:00.000+0000"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "jira",
        "add_comment",
        json!({ "issue": "SALES-24", "body": "Chased by email.\nWaiting on legal." }),
    )
    .await?;
    assert_eq!(
        out,
        json!({ "id": "10000", "self": "https://your-domain.atlassian.net/rest/api/3/issue/10010/comment/10000" })
    );
    Ok(())
}

#[tokio::test]
async fn add_comment_sends_an_adf_document_as_given() -> Result<()> {
    let (server, ctx) = jira().await;
    let doc = json!({ "type": "doc", "version": 1, "content": [{
        "type": "paragraph", "content": [{ "type": "text", "text": "bold", "marks": [{ "type": "strong" }] }]
    }]});
    Mock::given(method("POST"))
        .and(path("/rest/api/3/issue/10010/comment"))
        .and(body_json(json!({ "body": doc })))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({ "id": "10001" })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "jira",
        "add_comment",
        json!({ "issue": "10010", "body": doc }),
    )
    .await?;
    assert_eq!(out["id"], "10001");
    Ok(())
}

#[tokio::test]
async fn search_pages_by_next_page_token() -> Result<()> {
    let (server, ctx) = jira().await;
    let issue = |n: u32| json!({ "id": format!("{}", 10000 + n), "key": format!("SALES-{n}"), "fields": { "summary": "s" } });
    Mock::given(method("POST"))
        .and(path("/rest/api/3/search/jql"))
        .and(header("authorization", basic_header().as_str()))
        .and(body_json(json!({
            "jql": "project = SALES AND updated >= -7d",
            "maxResults": 3,
            "fields": ["summary", "status"]
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "issues": [issue(1), issue(2)],
            "nextPageToken": "CAEaAggD",
            "isLast": false
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/rest/api/3/search/jql"))
        .and(body_json(json!({
            "jql": "project = SALES AND updated >= -7d",
            "maxResults": 1,
            "fields": ["summary", "status"],
            "nextPageToken": "CAEaAggD"
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "issues": [issue(3)],
            "nextPageToken": "CAEaAggG",
            "isLast": false
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "jira",
        "search",
        json!({ "jql": "project = SALES AND updated >= -7d", "fields": ["summary", "status"], "limit": 3 }),
    )
    .await?;
    let keys: Vec<&str> = out["items"]
        .as_array()
        .map(|a| a.iter().filter_map(|i| i["key"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(keys, ["SALES-1", "SALES-2", "SALES-3"]);
    assert_eq!(out["next_cursor"], "CAEaAggG");
    Ok(())
}

#[tokio::test]
async fn search_ends_on_the_last_page() -> Result<()> {
    let (server, ctx) = jira().await;
    Mock::given(method("POST"))
        .and(path("/rest/api/3/search/jql"))
        .and(body_json(json!({
            "jql": "assignee = currentUser()",
            "maxResults": 50,
            "fields": ["*navigable"]
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "issues": [{ "id": "10001", "key": "OPS-1" }],
            "isLast": true
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "jira",
        "search",
        json!({ "jql": "assignee = currentUser()" }),
    )
    .await?;
    assert_eq!(out["items"][0]["key"], "OPS-1");
    assert_eq!(out["next_cursor"], Value::Null);
    Ok(())
}

#[tokio::test]
async fn a_connection_without_base_url_is_refused() -> Result<()> {
    support::init();
    let ctx = connectors::ActionContext {
        credential: Some(std::sync::Arc::new(basic(EMAIL, API_TOKEN))),
        ..connectors::ActionContext::default()
    };
    let e = run_err(
        &ctx,
        "jira",
        "create_issue",
        json!({ "project": "SALES", "summary": "x" }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::InvalidInput);
    assert!(e.message.contains("base_url"), "{}", e.message);
    Ok(())
}

#[tokio::test]
async fn health_reads_myself() -> Result<()> {
    let (server, ctx) = jira().await;
    Mock::given(method("GET"))
        .and(path("/rest/api/3/myself"))
        .and(header("authorization", basic_header().as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "accountId": "5b10a2844c20165700ede21g", "emailAddress": EMAIL, "active": true
        })))
        .expect(1)
        .mount(&server)
        .await;
    connectors::Registry::builtin().health(&ctx, "jira").await?;
    Ok(())
}
