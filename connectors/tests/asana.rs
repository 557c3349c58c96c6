//! Asana's REST API as documented at
//! <https://developers.asana.com/reference/rest-api-reference>: `Authorization: Bearer`, bodies
//! and answers in a `{"data": …}` envelope, `{"errors": [{"message"}]}` failures, `429` with
//! `Retry-After`.

mod support;

use std::time::Duration;

use anyhow::Result;
use schemas::envelope::ErrorCode;
use serde_json::json;
use support::{bearer, ctx_at, run, run_err};
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "2/1200000000000000/1209999999999999:0123456789abcdef";

async fn asana() -> (MockServer, connectors::ActionContext) {
    let server = MockServer::start().await;
    let ctx = ctx_at(&format!("{}/api/1.0", server.uri()), Some(bearer(TOKEN)));
    (server, ctx)
}

#[tokio::test]
async fn create_task_posts_the_data_envelope() -> Result<()> {
    let (server, ctx) = asana().await;
    Mock::given(method("POST"))
        .and(path("/api/1.0/tasks"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({
            "data": {
                "name": "Buy catnip",
                "notes": "Mittens really likes the stuff from Humboldt.",
                "projects": ["1331"],
                "assignee": "me",
                "due_on": "2026-12-24"
            }
        })))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "data": {
                "gid": "12345",
                "resource_type": "task",
                "name": "Buy catnip",
                "notes": "Mittens really likes the stuff from Humboldt.",
                "completed": false,
                "due_on": "2026-12-24",
                "permalink_url": "https://app.asana.com/0/resource/12345/list",
                "projects": [{ "gid": "1331", "resource_type": "project", "name": "Stuff to buy" }],
                "workspace": { "gid": "12345", "resource_type": "workspace", "name": "My Company Workspace" }
            }
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "asana",
        "create_task",
        json!({ "name": "Buy catnip", "notes": "Mittens really likes the stuff from Humboldt.",
                "projects": ["1331"], "assignee": "me", "due_on": "2026-12-24" }),
    )
    .await?;
    assert_eq!(out["gid"], "12345");
    assert_eq!(out["name"], "Buy catnip");
    assert_eq!(
        out["permalink_url"],
        "https://app.asana.com/0/resource/12345/list"
    );
    assert_eq!(out["raw"]["projects"][0]["name"], "Stuff to buy");
    Ok(())
}

#[tokio::test]
async fn create_task_needs_somewhere_to_live() -> Result<()> {
    let (server, ctx) = asana().await;
    let e = run_err(&ctx, "asana", "create_task", json!({ "name": "Orphan" })).await?;
    assert_eq!(
        e.message,
        "with.workspace: give `workspace`, `projects` or `parent`"
    );
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
async fn add_comment_posts_a_story() -> Result<()> {
    let (server, ctx) = asana().await;
    Mock::given(method("POST"))
        .and(path("/api/1.0/tasks/12345/stories"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(body_json(
            json!({ "data": { "text": "This is a very nice comment." } }),
        ))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "data": {
                "gid": "67890",
                "resource_type": "story",
                "created_at": "2026-12-02T02:06:58.147Z",
                "resource_subtype": "comment_added",
                "text": "This is a very nice comment.",
                "type": "comment",
                "created_by": { "gid": "12345", "resource_type": "user", "name": "Greg Sanchez" }
            }
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "asana",
        "add_comment",
        json!({ "task_gid": "12345", "text": "This is a very nice comment." }),
    )
    .await?;
    assert_eq!(
        out,
        json!({ "gid": "67890", "text": "This is a very nice comment.",
                "created_at": "2026-12-02T02:06:58.147Z" })
    );
    Ok(())
}

#[tokio::test]
async fn errors_are_classified_by_status() -> Result<()> {
    let (server, ctx) = asana().await;
    for (status, message, code) in [
        (
            400,
            "projects: [0]: Not a recognized ID: abc",
            ErrorCode::InvalidInput,
        ),
        (401, "Not Authorized", ErrorCode::Unauthorized),
        (
            403,
            "You do not have access to this task.",
            ErrorCode::Forbidden,
        ),
        (404, "task: Unknown object: 999", ErrorCode::NotFound),
    ] {
        server.reset().await;
        Mock::given(path("/api/1.0/tasks/999/stories"))
            .respond_with(ResponseTemplate::new(status).set_body_json(json!({
                "errors": [{
                    "message": message,
                    "help": "For more information on API status codes and how to handle them, read the docs on errors: https://developers.asana.com/docs/errors"
                }]
            })))
            .expect(1)
            .mount(&server)
            .await;
        let e = run_err(
            &ctx,
            "asana",
            "add_comment",
            json!({ "task_gid": "999", "text": "x" }),
        )
        .await?;
        assert_eq!(e.code, code, "{status}");
        assert!(e.message.contains(message), "{}", e.message);
        assert!(!e.message.contains(TOKEN));
    }
    Ok(())
}

#[tokio::test]
async fn rate_limits_carry_retry_after() -> Result<()> {
    let (server, ctx) = asana().await;
    Mock::given(path("/api/1.0/tasks"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "30")
                .set_body_json(json!({
                    "errors": [{ "message": "You have made too many requests recently. Please, be chill." }]
                })),
        )
        .mount(&server)
        .await;
    let e = run_err(
        &ctx,
        "asana",
        "create_task",
        json!({ "name": "t", "workspace": "1" }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::RateLimited);
    assert_eq!(e.retry_after, Some(Duration::from_secs(30)));
    assert_eq!(e.status, Some(429));
    Ok(())
}

#[tokio::test]
async fn health_reads_the_current_user() -> Result<()> {
    let (server, ctx) = asana().await;
    Mock::given(method("GET"))
        .and(path("/api/1.0/users/me"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": { "gid": "12345", "resource_type": "user", "name": "Greg Sanchez" }
        })))
        .expect(1)
        .mount(&server)
        .await;
    connectors::Registry::builtin()
        .health(&ctx, "asana")
        .await?;
    Ok(())
}
