//! GitHub's REST API as documented at <https://docs.github.com/en/rest>: `Authorization:
//! Bearer`, `Accept: application/vnd.github+json`, `X-GitHub-Api-Version: 2022-11-28`, a
//! `User-Agent`; `422` validation errors naming fields; rate limits as `403`/`429` with
//! `x-ratelimit-remaining: 0` and `x-ratelimit-reset`, or with `retry-after`; listings paged by
//! `Link` headers.

mod support;

use std::time::{Duration, SystemTime};

use anyhow::Result;
use schemas::envelope::ErrorCode;
use serde_json::json;
use support::{bearer, ctx_at, run, run_err};
use wiremock::matchers::{body_json, header, header_exists, method, path, query_param};
use wiremock::{Mock, MockBuilder, MockServer, ResponseTemplate};

const TOKEN: &str = "ghp_test0123456789abcdefTOKEN";

async fn github() -> (MockServer, connectors::ActionContext) {
    let server = MockServer::start().await;
    let ctx = ctx_at(&server.uri(), Some(bearer(TOKEN)));
    (server, ctx)
}

/// The headers GitHub documents for every request.
fn documented(mock: MockBuilder) -> MockBuilder {
    mock.and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(header("accept", "application/vnd.github+json"))
        .and(header("x-github-api-version", "2022-11-28"))
        .and(header_exists("user-agent"))
}

fn issue_json(number: u64, state: &str) -> serde_json::Value {
    json!({
        "id": 1_000 + number,
        "node_id": "MDU6SXNzdWUx",
        "url": format!("https://api.github.com/repos/octocat/Hello-World/issues/{number}"),
        "html_url": format!("https://github.com/octocat/Hello-World/issues/{number}"),
        "number": number,
        "state": state,
        "title": "Found a bug",
        "body": "I'm having a problem with this.",
        "user": { "login": "octocat", "id": 1 },
        "labels": [{ "id": 208045946, "name": "bug" }]
    })
}

#[tokio::test]
async fn create_issue_posts_the_documented_request() -> Result<()> {
    let (server, ctx) = github().await;
    documented(Mock::given(method("POST")))
        .and(path("/repos/octocat/Hello-World/issues"))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({
            "title": "Found a bug",
            "body": "I'm having a problem with this.",
            "assignees": ["octocat"],
            "labels": ["bug"],
            "milestone": 1
        })))
        .respond_with(ResponseTemplate::new(201).set_body_json(issue_json(1347, "open")))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "github",
        "create_issue",
        json!({ "owner": "octocat", "repo": "Hello-World", "title": "Found a bug",
                "body": "I'm having a problem with this.", "assignees": ["octocat"],
                "labels": ["bug"], "milestone": 1 }),
    )
    .await?;
    assert_eq!(out["number"], 1347);
    assert_eq!(out["id"], 2347);
    assert_eq!(
        out["html_url"],
        "https://github.com/octocat/Hello-World/issues/1347"
    );
    assert_eq!(out["state"], "open");
    assert_eq!(out["raw"]["labels"][0]["name"], "bug");
    Ok(())
}

#[tokio::test]
async fn create_comment_posts_to_the_issue_comments() -> Result<()> {
    let (server, ctx) = github().await;
    documented(Mock::given(method("POST")))
        .and(path("/repos/octocat/Hello-World/issues/1347/comments"))
        .and(body_json(json!({ "body": "Me too" })))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "id": 1,
            "node_id": "MDEyOklzc3VlQ29tbWVudDE=",
            "url": "https://api.github.com/repos/octocat/Hello-World/issues/comments/1",
            "html_url": "https://github.com/octocat/Hello-World/issues/1347#issuecomment-1",
            "body": "Me too",
            "user": { "login": "octocat" }
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "github",
        "create_comment",
        json!({ "owner": "octocat", "repo": "Hello-World", "issue_number": 1347, "body": "Me too" }),
    )
    .await?;
    assert_eq!(
        out,
        json!({ "id": 1, "html_url": "https://github.com/octocat/Hello-World/issues/1347#issuecomment-1" })
    );
    Ok(())
}

#[tokio::test]
async fn get_issue_reads_one_issue_and_404_is_not_found() -> Result<()> {
    let (server, ctx) = github().await;
    documented(Mock::given(method("GET")))
        .and(path("/repos/octocat/Hello-World/issues/1347"))
        .respond_with(ResponseTemplate::new(200).set_body_json(issue_json(1347, "open")))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "github",
        "get_issue",
        json!({ "owner": "octocat", "repo": "Hello-World", "issue_number": 1347 }),
    )
    .await?;
    assert_eq!(out["title"], "Found a bug");
    assert_eq!(out["raw"]["user"]["login"], "octocat");
    Mock::given(path("/repos/octocat/Hello-World/issues/9"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({
            "message": "Not Found",
            "documentation_url": "https://docs.github.com/rest/issues/issues#get-an-issue",
            "status": "404"
        })))
        .mount(&server)
        .await;
    let e = run_err(
        &ctx,
        "github",
        "get_issue",
        json!({ "owner": "octocat", "repo": "Hello-World", "issue_number": 9 }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::NotFound);
    assert_eq!(e.status, Some(404));
    Ok(())
}

#[tokio::test]
async fn close_issue_patches_state_and_reason() -> Result<()> {
    let (server, ctx) = github().await;
    documented(Mock::given(method("PATCH")))
        .and(path("/repos/octocat/Hello-World/issues/1347"))
        .and(body_json(
            json!({ "state": "closed", "state_reason": "not_planned" }),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(issue_json(1347, "closed")))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "github",
        "close_issue",
        json!({ "owner": "octocat", "repo": "Hello-World", "issue_number": 1347,
                "state_reason": "not_planned" }),
    )
    .await?;
    assert_eq!(out["state"], "closed");
    assert_eq!(out["number"], 1347);
    Ok(())
}

#[tokio::test]
async fn create_pull_request_posts_head_and_base() -> Result<()> {
    let (server, ctx) = github().await;
    documented(Mock::given(method("POST")))
        .and(path("/repos/octocat/Hello-World/pulls"))
        .and(body_json(json!({
            "title": "Amazing new feature",
            "head": "octocat:new-feature",
            "base": "master",
            "body": "Please pull these awesome changes in!",
            "draft": true
        })))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "id": 1, "number": 1347, "state": "open", "draft": true,
            "html_url": "https://github.com/octocat/Hello-World/pull/1347",
            "title": "Amazing new feature",
            "head": { "ref": "new-feature", "sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e" },
            "base": { "ref": "master", "sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e" }
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "github",
        "create_pull_request",
        json!({ "owner": "octocat", "repo": "Hello-World", "title": "Amazing new feature",
                "head": "octocat:new-feature", "base": "master",
                "body": "Please pull these awesome changes in!", "draft": true }),
    )
    .await?;
    assert_eq!(
        out,
        json!({ "number": 1347, "id": 1, "state": "open", "draft": true,
                "html_url": "https://github.com/octocat/Hello-World/pull/1347",
                "head_sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e" })
    );
    Ok(())
}

#[tokio::test]
async fn validation_failures_name_the_field() -> Result<()> {
    let (server, ctx) = github().await;
    Mock::given(method("POST"))
        .and(path("/repos/octocat/Hello-World/pulls"))
        .respond_with(ResponseTemplate::new(422).set_body_json(json!({
            "message": "Validation Failed",
            "errors": [{ "resource": "PullRequest", "field": "base", "code": "invalid" }],
            "documentation_url": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request",
            "status": "422"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let e = run_err(
        &ctx,
        "github",
        "create_pull_request",
        json!({ "owner": "octocat", "repo": "Hello-World", "title": "t", "head": "f", "base": "nope" }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::InvalidInput);
    assert_eq!(e.status, Some(422));
    assert!(
        e.message.contains("Validation Failed: `base` invalid"),
        "{}",
        e.message
    );
    assert!(!e.is_retryable());
    Ok(())
}

#[tokio::test]
async fn merge_pull_request_puts_method_title_and_sha() -> Result<()> {
    let (server, ctx) = github().await;
    documented(Mock::given(method("PUT")))
        .and(path("/repos/octocat/Hello-World/pulls/1347/merge"))
        .and(body_json(json!({
            "merge_method": "squash",
            "commit_title": "Expand enum",
            "sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e"
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e",
            "merged": true,
            "message": "Pull Request successfully merged"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "github",
        "merge_pull_request",
        json!({ "owner": "octocat", "repo": "Hello-World", "pull_number": 1347,
                "merge_method": "squash", "commit_title": "Expand enum",
                "sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e" }),
    )
    .await?;
    assert_eq!(
        out,
        json!({ "sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e", "merged": true,
                "message": "Pull Request successfully merged" })
    );
    Ok(())
}

#[tokio::test]
async fn unmergeable_and_moved_heads_are_permanent_conflicts() -> Result<()> {
    let (server, ctx) = github().await;
    for (status, message, says) in [
        (405, "Pull Request is not mergeable", "is not mergeable"),
        (
            409,
            "Head branch was modified. Review and try the merge again.",
            "no longer the given `sha`",
        ),
    ] {
        server.reset().await;
        Mock::given(method("PUT"))
            .and(path("/repos/octocat/Hello-World/pulls/7/merge"))
            .respond_with(ResponseTemplate::new(status).set_body_json(json!({
                "message": message,
                "documentation_url": "https://docs.github.com/rest/pulls/pulls#merge-a-pull-request"
            })))
            .expect(1)
            .mount(&server)
            .await;
        let e = run_err(
            &ctx,
            "github",
            "merge_pull_request",
            json!({ "owner": "octocat", "repo": "Hello-World", "pull_number": 7, "sha": "abc" }),
        )
        .await?;
        assert_eq!(e.code, ErrorCode::Conflict, "{status}");
        assert_eq!(e.status, Some(status));
        assert!(!e.is_retryable());
        assert!(e.message.contains(says), "{}", e.message);
        assert!(e.message.contains(message), "{}", e.message);
    }
    Ok(())
}

#[tokio::test]
async fn dispatch_workflow_posts_ref_and_inputs_and_accepts_204() -> Result<()> {
    let (server, ctx) = github().await;
    documented(Mock::given(method("POST")))
        .and(path(
            "/repos/octocat/Hello-World/actions/workflows/deploy.yml/dispatches",
        ))
        .and(body_json(json!({
            "ref": "topic-branch",
            "inputs": { "name": "Mona the Octocat", "home": "San Francisco, CA" }
        })))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "github",
        "dispatch_workflow",
        json!({ "owner": "octocat", "repo": "Hello-World", "workflow_id": "deploy.yml",
                "ref": "topic-branch",
                "inputs": { "name": "Mona the Octocat", "home": "San Francisco, CA" } }),
    )
    .await?;
    assert_eq!(
        out,
        json!({ "workflow_run_id": null, "run_url": null, "html_url": null })
    );
    Ok(())
}

#[tokio::test]
async fn dispatch_workflow_returns_the_run_when_asked() -> Result<()> {
    let (server, ctx) = github().await;
    documented(Mock::given(method("POST")))
        .and(path(
            "/repos/octocat/Hello-World/actions/workflows/1296269/dispatches",
        ))
        .and(body_json(
            json!({ "ref": "main", "return_run_details": true }),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "workflow_run_id": 999,
            "run_url": "https://api.github.com/repos/octocat/Hello-World/actions/runs/999",
            "html_url": "https://github.com/octocat/Hello-World/actions/runs/999"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "github",
        "dispatch_workflow",
        json!({ "owner": "octocat", "repo": "Hello-World", "workflow_id": "1296269",
                "ref": "main", "return_run_details": true }),
    )
    .await?;
    assert_eq!(out["workflow_run_id"], 999);
    assert_eq!(
        out["html_url"],
        "https://github.com/octocat/Hello-World/actions/runs/999"
    );
    Ok(())
}

#[tokio::test]
async fn list_issues_follows_link_headers() -> Result<()> {
    let (server, ctx) = github().await;
    let page2 = format!(
        "{}/repositories/1296269/issues?state=all&per_page=2&page=2",
        server.uri()
    );
    let page3 = format!(
        "{}/repositories/1296269/issues?state=all&per_page=2&page=3",
        server.uri()
    );
    documented(Mock::given(method("GET")))
        .and(path("/repos/octocat/Hello-World/issues"))
        .and(query_param("state", "all"))
        .and(query_param("per_page", "2"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header(
                    "link",
                    format!(r#"<{page2}>; rel="next", <{page3}>; rel="last""#).as_str(),
                )
                .set_body_json(json!([issue_json(4, "open"), issue_json(3, "closed")])),
        )
        .expect(1)
        .mount(&server)
        .await;
    documented(Mock::given(method("GET")))
        .and(path("/repositories/1296269/issues"))
        .and(query_param("page", "2"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header(
                    "link",
                    format!(r#"<{page3}>; rel="next", <{page3}>; rel="last""#).as_str(),
                )
                .set_body_json(json!([issue_json(2, "open")])),
        )
        .expect(1)
        .mount(&server)
        .await;
    // The last page has no `next`.
    documented(Mock::given(method("GET")))
        .and(path("/repositories/1296269/issues"))
        .and(query_param("page", "3"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("link", format!(r#"<{page2}>; rel="prev""#).as_str())
                .set_body_json(json!([issue_json(1, "open")])),
        )
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "github",
        "list_issues",
        json!({ "owner": "octocat", "repo": "Hello-World", "state": "all", "limit": 2 }),
    )
    .await?;
    let numbers = |out: &serde_json::Value| -> Vec<u64> {
        out["items"]
            .as_array()
            .map(|a| a.iter().filter_map(|i| i["number"].as_u64()).collect())
            .unwrap_or_default()
    };
    assert_eq!(numbers(&out), [4, 3]);
    assert_eq!(out["next_cursor"], page2.as_str());
    // The cursor continues on the links GitHub sent, to the last page.
    let out = run(
        &ctx,
        "github",
        "list_issues",
        json!({ "owner": "octocat", "repo": "Hello-World", "limit": 5, "cursor": page2 }),
    )
    .await?;
    assert_eq!(numbers(&out), [2, 1]);
    assert_eq!(out["next_cursor"], serde_json::Value::Null);
    Ok(())
}

#[tokio::test]
async fn list_issues_spans_pages_and_resumes_inside_a_cut_page() -> Result<()> {
    let (server, ctx) = github().await;
    let page2 = format!("{}/repositories/1/issues?per_page=100&page=2", server.uri());
    let first: Vec<_> = (0..100).map(|n| issue_json(1000 - n, "open")).collect();
    let second: Vec<_> = (0..100).map(|n| issue_json(900 - n, "open")).collect();
    Mock::given(path("/repos/octocat/Hello-World/issues"))
        .and(query_param("per_page", "100"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("link", format!(r#"<{page2}>; rel="next""#).as_str())
                .set_body_json(first),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/repositories/1/issues"))
        .and(query_param("page", "2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(second))
        .expect(2)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "github",
        "list_issues",
        json!({ "owner": "octocat", "repo": "Hello-World", "limit": 150 }),
    )
    .await?;
    let items = out["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 150);
    assert_eq!(items[149]["number"], 851);
    let cursor = out["next_cursor"].as_str().unwrap_or_default().to_owned();
    assert_eq!(cursor, format!("{page2}#skip=50"));
    // The next call starts at the first issue not yet returned.
    let out = run(
        &ctx,
        "github",
        "list_issues",
        json!({ "owner": "octocat", "repo": "Hello-World", "limit": 10, "cursor": cursor }),
    )
    .await?;
    assert_eq!(out["items"][0]["number"], 850);
    assert_eq!(out["items"].as_array().map(Vec::len), Some(10));
    Ok(())
}

#[tokio::test]
async fn a_cursor_to_another_host_is_refused() -> Result<()> {
    let (server, ctx) = github().await;
    let e = run_err(
        &ctx,
        "github",
        "list_issues",
        json!({ "owner": "o", "repo": "r", "cursor": "https://evil.example.com/issues?page=2" }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::UpstreamUnavailable);
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
async fn primary_rate_limit_waits_for_the_reset() -> Result<()> {
    let (server, ctx) = github().await;
    let reset = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)?
        .as_secs()
        + 120;
    Mock::given(path("/repos/octocat/Hello-World/issues"))
        .respond_with(
            ResponseTemplate::new(403)
                .insert_header("x-ratelimit-limit", "5000")
                .insert_header("x-ratelimit-remaining", "0")
                .insert_header("x-ratelimit-used", "5000")
                .insert_header("x-ratelimit-reset", reset.to_string().as_str())
                .insert_header("x-ratelimit-resource", "core")
                .set_body_json(json!({
                    "message": "API rate limit exceeded for user ID 1.",
                    "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"
                })),
        )
        .mount(&server)
        .await;
    let e = run_err(
        &ctx,
        "github",
        "create_issue",
        json!({ "owner": "octocat", "repo": "Hello-World", "title": "t" }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::RateLimited);
    assert_eq!(e.status, Some(403));
    let wait = e.retry_after.unwrap_or_default();
    assert!(
        wait > Duration::from_secs(100) && wait <= Duration::from_secs(120),
        "{wait:?}"
    );
    assert!(!e.message.contains(TOKEN));
    Ok(())
}

#[tokio::test]
async fn secondary_rate_limit_carries_retry_after() -> Result<()> {
    let (server, ctx) = github().await;
    for status in [403, 429] {
        server.reset().await;
        Mock::given(path("/repos/octocat/Hello-World/issues/1/comments"))
            .respond_with(
                ResponseTemplate::new(status)
                    .insert_header("retry-after", "60")
                    .insert_header("x-ratelimit-remaining", "4000")
                    .set_body_json(json!({
                        "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                        "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits"
                    })),
            )
            .mount(&server)
            .await;
        let e = run_err(
            &ctx,
            "github",
            "create_comment",
            json!({ "owner": "octocat", "repo": "Hello-World", "issue_number": 1, "body": "x" }),
        )
        .await?;
        assert_eq!(e.code, ErrorCode::RateLimited, "{status}");
        assert_eq!(e.retry_after, Some(Duration::from_secs(60)), "{status}");
    }
    Ok(())
}

#[tokio::test]
async fn a_403_without_rate_limit_headers_is_forbidden() -> Result<()> {
    let (server, ctx) = github().await;
    Mock::given(path("/repos/octocat/Hello-World/issues/1"))
        .respond_with(
            ResponseTemplate::new(403)
                .insert_header("x-ratelimit-remaining", "4999")
                .set_body_json(json!({
                    "message": "Resource not accessible by integration",
                    "documentation_url": "https://docs.github.com/rest/issues/issues#update-an-issue"
                })),
        )
        .mount(&server)
        .await;
    let e = run_err(
        &ctx,
        "github",
        "close_issue",
        json!({ "owner": "octocat", "repo": "Hello-World", "issue_number": 1 }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::Forbidden);
    Ok(())
}

#[tokio::test]
async fn enterprise_server_uses_the_connection_base_url() -> Result<()> {
    let server = MockServer::start().await;
    let ctx = ctx_at(&format!("{}/api/v3", server.uri()), Some(bearer(TOKEN)));
    documented(Mock::given(method("GET")))
        .and(path("/api/v3/repos/octocat/Hello-World/issues/5"))
        .respond_with(ResponseTemplate::new(200).set_body_json(issue_json(5, "open")))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "github",
        "get_issue",
        json!({ "owner": "octocat", "repo": "Hello-World", "issue_number": 5 }),
    )
    .await?;
    assert_eq!(out["number"], 5);
    Ok(())
}

#[tokio::test]
async fn path_inputs_cannot_change_the_path() -> Result<()> {
    let (server, ctx) = github().await;
    Mock::given(method("GET"))
        .and(path("/repos/octocat/..%2Fadmin/issues/5"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({ "message": "Not Found" })))
        .expect(1)
        .mount(&server)
        .await;
    let e = run_err(
        &ctx,
        "github",
        "get_issue",
        json!({ "owner": "octocat", "repo": "../admin", "issue_number": 5 }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::NotFound);
    Ok(())
}

#[tokio::test]
async fn health_reads_the_authenticated_user() -> Result<()> {
    let (server, ctx) = github().await;
    documented(Mock::given(method("GET")))
        .and(path("/user"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({ "login": "octocat", "id": 1 })),
        )
        .expect(1)
        .mount(&server)
        .await;
    connectors::Registry::builtin()
        .health(&ctx, "github")
        .await?;
    Ok(())
}
