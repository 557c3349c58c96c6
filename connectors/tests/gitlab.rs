//! GitLab's REST API v4 as documented at <https://docs.gitlab.com/api/rest/>: a
//! `PRIVATE-TOKEN` header (or `Authorization: Bearer`), projects by id or URL-encoded path,
//! `{"message": …}` / `{"error": …}` failures, and `429` with `Retry-After` and
//! `RateLimit-Reset`.

mod support;

use std::time::Duration;

use anyhow::Result;
use schemas::envelope::ErrorCode;
use serde_json::json;
use support::{api_key_header, bearer, ctx_at, run, run_err};
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "glpat-test0123456789abcdef";

async fn gitlab() -> (MockServer, connectors::ActionContext) {
    let server = MockServer::start().await;
    let ctx = ctx_at(
        &format!("{}/api/v4", server.uri()),
        Some(api_key_header("PRIVATE-TOKEN", TOKEN)),
    );
    (server, ctx)
}

fn merge_request(state: &str) -> serde_json::Value {
    json!({
        "id": 93, "iid": 12, "project_id": 3, "title": "Add the thing",
        "state": state, "source_branch": "feature", "target_branch": "main",
        "sha": "8888888888888888888888888888888888888888",
        "merge_commit_sha": if state == "merged" { json!("9999999999999999999999999999999999999999") } else { json!(null) },
        "web_url": "https://gitlab.example.com/my-group/my-project/-/merge_requests/12"
    })
}

#[tokio::test]
async fn create_issue_posts_to_the_encoded_project_path() -> Result<()> {
    let (server, ctx) = gitlab().await;
    Mock::given(method("POST"))
        .and(path("/api/v4/projects/my-group%2Fmy-project/issues"))
        .and(header("private-token", TOKEN))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({
            "title": "Issues with auth",
            "description": "Login fails on Safari",
            "labels": "bug,auth",
            "assignee_ids": [7]
        })))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "id": 84, "iid": 14, "project_id": 4, "title": "Issues with auth",
            "description": "Login fails on Safari", "state": "opened",
            "labels": ["bug", "auth"],
            "web_url": "https://gitlab.example.com/my-group/my-project/-/issues/14"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "gitlab",
        "create_issue",
        json!({ "project": "my-group/my-project", "title": "Issues with auth",
                "description": "Login fails on Safari", "labels": ["bug", "auth"],
                "assignee_ids": [7] }),
    )
    .await?;
    assert_eq!(
        out,
        json!({ "id": 84, "iid": 14, "project_id": 4, "state": "opened",
                "web_url": "https://gitlab.example.com/my-group/my-project/-/issues/14" })
    );
    Ok(())
}

#[tokio::test]
async fn comment_issue_posts_a_note_with_a_numeric_project() -> Result<()> {
    let (server, ctx) = gitlab().await;
    Mock::given(method("POST"))
        .and(path("/api/v4/projects/5/issues/11/notes"))
        .and(header("private-token", TOKEN))
        .and(body_json(json!({ "body": "Triaged: **bug**" })))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "id": 302, "body": "Triaged: **bug**", "noteable_type": "Issue",
            "noteable_id": 377, "noteable_iid": 11, "system": false,
            "author": { "id": 1, "username": "pipin" }
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "gitlab",
        "comment_issue",
        json!({ "project": 5, "issue_iid": 11, "body": "Triaged: **bug**" }),
    )
    .await?;
    assert_eq!(out, json!({ "id": 302, "noteable_iid": 11 }));
    Ok(())
}

#[tokio::test]
async fn create_merge_request_posts_branches_and_title() -> Result<()> {
    let (server, ctx) = gitlab().await;
    Mock::given(method("POST"))
        .and(path("/api/v4/projects/3/merge_requests"))
        .and(header("private-token", TOKEN))
        .and(body_json(json!({
            "source_branch": "feature",
            "target_branch": "main",
            "title": "Add the thing",
            "remove_source_branch": true
        })))
        .respond_with(ResponseTemplate::new(201).set_body_json(merge_request("opened")))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "gitlab",
        "create_merge_request",
        json!({ "project": "3", "source_branch": "feature", "target_branch": "main",
                "title": "Add the thing", "remove_source_branch": true }),
    )
    .await?;
    assert_eq!(
        out,
        json!({ "id": 93, "iid": 12, "state": "opened",
                "web_url": "https://gitlab.example.com/my-group/my-project/-/merge_requests/12",
                "sha": "8888888888888888888888888888888888888888", "merge_commit_sha": null })
    );
    Ok(())
}

#[tokio::test]
async fn field_errors_are_invalid_input_naming_the_field() -> Result<()> {
    let (server, ctx) = gitlab().await;
    Mock::given(path("/api/v4/projects/3/merge_requests"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "message": { "title": ["can't be blank"] }
        })))
        .expect(1)
        .mount(&server)
        .await;
    let e = run_err(
        &ctx,
        "gitlab",
        "create_merge_request",
        json!({ "project": 3, "source_branch": "f", "target_branch": "main", "title": "" }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::InvalidInput);
    assert_eq!(e.status, Some(400));
    assert!(
        e.message.contains("`title` can't be blank"),
        "{}",
        e.message
    );
    Ok(())
}

#[tokio::test]
async fn merge_merge_request_puts_the_documented_attributes() -> Result<()> {
    let (server, ctx) = gitlab().await;
    Mock::given(method("PUT"))
        .and(path(
            "/api/v4/projects/my-group%2Fmy-project/merge_requests/12/merge",
        ))
        .and(header("private-token", TOKEN))
        .and(body_json(json!({
            "squash": true,
            "should_remove_source_branch": true,
            "sha": "8888888888888888888888888888888888888888"
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(merge_request("merged")))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "gitlab",
        "merge_merge_request",
        json!({ "project": "my-group/my-project", "merge_request_iid": 12, "squash": true,
                "should_remove_source_branch": true,
                "sha": "8888888888888888888888888888888888888888" }),
    )
    .await?;
    assert_eq!(out["state"], "merged");
    assert_eq!(
        out["merge_commit_sha"],
        "9999999999999999999999999999999999999999"
    );
    Ok(())
}

#[tokio::test]
async fn unmergeable_and_moved_merge_requests_are_permanent_conflicts() -> Result<()> {
    let (server, ctx) = gitlab().await;
    for (status, body, says) in [
        (
            405,
            json!({ "message": "405 Method Not Allowed" }),
            "cannot be merged now",
        ),
        (
            409,
            json!({ "message": "SHA does not match HEAD of source branch: 1234" }),
            "no longer at the given `sha`",
        ),
    ] {
        server.reset().await;
        Mock::given(method("PUT"))
            .and(path("/api/v4/projects/3/merge_requests/12/merge"))
            .respond_with(ResponseTemplate::new(status).set_body_json(body))
            .expect(1)
            .mount(&server)
            .await;
        let e = run_err(
            &ctx,
            "gitlab",
            "merge_merge_request",
            json!({ "project": 3, "merge_request_iid": 12, "sha": "1234" }),
        )
        .await?;
        assert_eq!(e.code, ErrorCode::Conflict, "{status}");
        assert_eq!(e.status, Some(status));
        assert!(!e.is_retryable());
        assert!(e.message.contains(says), "{}", e.message);
    }
    Ok(())
}

#[tokio::test]
async fn trigger_pipeline_posts_ref_and_variables() -> Result<()> {
    let (server, ctx) = gitlab().await;
    Mock::given(method("POST"))
        .and(path("/api/v4/projects/1/pipeline"))
        .and(header("private-token", TOKEN))
        .and(body_json(json!({
            "ref": "main",
            "variables": [
                { "key": "DEPLOY_ENV", "value": "staging" },
                { "key": "DRY_RUN", "value": "true" }
            ]
        })))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "id": 61, "iid": 21, "project_id": 1,
            "sha": "384c444e840a515b23f21915ee5766b87068a70d",
            "ref": "main", "status": "pending", "source": "api",
            "web_url": "https://gitlab.example.com/my-group/my-project/-/pipelines/61"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "gitlab",
        "trigger_pipeline",
        json!({ "project": 1, "ref": "main",
                "variables": { "DEPLOY_ENV": "staging", "DRY_RUN": true } }),
    )
    .await?;
    assert_eq!(
        out,
        json!({ "id": 61, "iid": 21, "sha": "384c444e840a515b23f21915ee5766b87068a70d",
                "ref": "main", "status": "pending",
                "web_url": "https://gitlab.example.com/my-group/my-project/-/pipelines/61" })
    );
    Ok(())
}

#[tokio::test]
async fn error_key_bodies_are_quoted() -> Result<()> {
    let (server, ctx) = gitlab().await;
    Mock::given(path("/api/v4/projects/1/pipeline"))
        .respond_with(
            ResponseTemplate::new(400).set_body_json(json!({ "error": "ref is missing" })),
        )
        .mount(&server)
        .await;
    let e = run_err(
        &ctx,
        "gitlab",
        "trigger_pipeline",
        json!({ "project": 1, "ref": "" }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::InvalidInput);
    assert!(
        e.message.ends_with("reported ref is missing"),
        "{}",
        e.message
    );
    Ok(())
}

#[tokio::test]
async fn missing_projects_are_not_found_and_bad_tokens_unauthorized() -> Result<()> {
    let (server, ctx) = gitlab().await;
    Mock::given(path("/api/v4/projects/404/issues"))
        .respond_with(
            ResponseTemplate::new(404).set_body_json(json!({ "message": "404 Project Not Found" })),
        )
        .mount(&server)
        .await;
    Mock::given(path("/api/v4/projects/401/issues"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({ "message": "401 Unauthorized" })),
        )
        .mount(&server)
        .await;
    let e = run_err(
        &ctx,
        "gitlab",
        "create_issue",
        json!({ "project": 404, "title": "t" }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::NotFound);
    let e = run_err(
        &ctx,
        "gitlab",
        "create_issue",
        json!({ "project": 401, "title": "t" }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::Unauthorized);
    assert!(!e.message.contains(TOKEN));
    Ok(())
}

#[tokio::test]
async fn rate_limits_carry_retry_after() -> Result<()> {
    let (server, ctx) = gitlab().await;
    Mock::given(path("/api/v4/projects/1/issues"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "42")
                .insert_header("ratelimit-limit", "2000")
                .insert_header("ratelimit-observed", "2000")
                .insert_header("ratelimit-remaining", "0")
                .insert_header("ratelimit-reset", "1767225600")
                .insert_header("ratelimit-name", "throttle_authenticated_api")
                .set_body_string("Retry later\n"),
        )
        .mount(&server)
        .await;
    let e = run_err(
        &ctx,
        "gitlab",
        "create_issue",
        json!({ "project": 1, "title": "t" }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::RateLimited);
    assert_eq!(e.retry_after, Some(Duration::from_secs(42)));
    Ok(())
}

#[tokio::test]
async fn oauth_tokens_go_as_bearer() -> Result<()> {
    let server = MockServer::start().await;
    let ctx = ctx_at(&format!("{}/api/v4", server.uri()), Some(bearer(TOKEN)));
    Mock::given(method("GET"))
        .and(path("/api/v4/user"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({ "id": 1, "username": "john_smith" })),
        )
        .expect(1)
        .mount(&server)
        .await;
    connectors::Registry::builtin()
        .health(&ctx, "gitlab")
        .await?;
    Ok(())
}

#[tokio::test]
async fn health_reads_the_current_user() -> Result<()> {
    let (server, ctx) = gitlab().await;
    Mock::given(method("GET"))
        .and(path("/api/v4/user"))
        .and(header("private-token", TOKEN))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({ "id": 1, "username": "john_smith" })),
        )
        .expect(1)
        .mount(&server)
        .await;
    connectors::Registry::builtin()
        .health(&ctx, "gitlab")
        .await?;
    Ok(())
}
