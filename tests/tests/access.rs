//! Who may do what, through a real engine and a real database: every route refuses a request
//! without a valid token (401) and a role below the one it needs (403); every query is scoped
//! to the caller's workspace, so another workspace's names and ids answer 404; fields such as
//! `workspace_id` or `role` cannot be set through a body; revoked and expired tokens are
//! refused at once; a token's text appears only in the answer that creates it.

mod common;

use anyhow::{Context, Result, ensure};
use axum::http::StatusCode;
use chrono::{TimeDelta, Utc};
use common::{Stack, authed_client};
use reqwest::Method;
use schemas::db::entities::api_token;
use sea_orm::{ActiveModelTrait, EntityTrait, IntoActiveModel, Set};
use serde_json::{Value, json};
use switchyard_tests::Backend;

/// One request: method, path, body (JSON, or YAML text for definitions).
#[derive(Clone)]
struct Call {
    method: Method,
    path: String,
    body: Body,
}

#[derive(Clone)]
enum Body {
    None,
    Json(Value),
    Text(String),
}

fn call(method: Method, path: &str, body: Body) -> Call {
    Call {
        method,
        path: path.to_owned(),
        body,
    }
}

async fn send(http: &reqwest::Client, api: &str, c: &Call) -> Result<(StatusCode, Value)> {
    let mut req = http.request(c.method.clone(), format!("{api}{}", c.path));
    req = match &c.body {
        Body::None => req,
        Body::Json(v) => req.json(v),
        Body::Text(t) => req.body(t.clone()),
    };
    let r = req.send().await?;
    let status = r.status();
    let text = r.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// Creates a principal with `role` in the caller's workspace and returns a token for it.
async fn member(stack: &Stack, admin: &reqwest::Client, name: &str, role: &str) -> Result<String> {
    let (status, body) = send(
        admin,
        &stack.api,
        &call(
            Method::POST,
            "/v1/principals",
            Body::Json(json!({ "name": name, "role": role })),
        ),
    )
    .await?;
    ensure!(status == StatusCode::CREATED, "{status}: {body}");
    assert_eq!(body["role"], role);
    let (status, token) = send(
        admin,
        &stack.api,
        &call(
            Method::POST,
            &format!("/v1/principals/{name}/tokens"),
            Body::Json(json!({ "name": "test" })),
        ),
    )
    .await?;
    ensure!(status == StatusCode::CREATED, "{status}: {token}");
    token["token"]
        .as_str()
        .map(str::to_owned)
        .context("the new token is in the answer")
}

const WORKFLOW: &str = "name: w\ndescription: ours\nsteps:\n  - { id: noop, if: \"{{ false }}\", action: http.request, with: { url: \"http://127.0.0.1:9/\" } }\n";

/// A second workspace, `other`, with its own admin and a workflow, run, connection, secret,
/// principal and token; returns its admin client and the ids a foreign caller might try.
async fn other_workspace(stack: &Stack) -> Result<(reqwest::Client, String, String)> {
    let db = stack.db.connect().await?;
    let (_, issued) = engine::auth::bootstrap(&db, "other", "admin").await?;
    let theirs = authed_client(&issued.token)?;
    let api = &stack.api;
    for c in [
        call(
            Method::PUT,
            "/v1/workflows/theirs",
            Body::Text(WORKFLOW.replace("name: w", "name: theirs")),
        ),
        // The same name as a workflow of `default`: each workspace sees its own.
        call(
            Method::PUT,
            "/v1/workflows/w",
            Body::Text(WORKFLOW.replace("ours", "theirs")),
        ),
        call(
            Method::POST,
            "/v1/connections",
            Body::Json(
                json!({ "name": "their-crm", "connector": "http", "auth": { "type": "bearer", "token": "their-token" } }),
            ),
        ),
        call(
            Method::PUT,
            "/v1/secrets/their-secret",
            Body::Json(json!({ "value": "their-value" })),
        ),
        call(
            Method::POST,
            "/v1/principals",
            Body::Json(json!({ "name": "bob", "role": "viewer" })),
        ),
    ] {
        let (status, body) = send(&theirs, api, &c).await?;
        ensure!(
            status.is_success(),
            "{} {}: {status}: {body}",
            c.method,
            c.path
        );
    }
    let (_, run) = send(
        &theirs,
        api,
        &call(Method::POST, "/v1/workflows/theirs/runs", Body::None),
    )
    .await?;
    let run_id = run["run_id"].as_str().context("their run")?.to_owned();
    Ok((theirs, run_id, issued.row.id.to_string()))
}

#[tokio::test]
async fn every_route_needs_a_token_and_its_role() -> Result<()> {
    let stack = Stack::start_with_workers(Backend::Sqlite, 0).await?;
    let api = stack.api.clone();
    let admin = stack.http.clone();
    for c in [
        call(Method::PUT, "/v1/workflows/w", Body::Text(WORKFLOW.into())),
        call(
            Method::POST,
            "/v1/connections",
            Body::Json(
                json!({ "name": "crm", "connector": "http", "auth": { "type": "bearer", "token": "t0" } }),
            ),
        ),
    ] {
        let (status, body) = send(&admin, &api, &c).await?;
        ensure!(status.is_success(), "{status}: {body}");
    }
    let (_, run) = send(
        &admin,
        &api,
        &call(Method::POST, "/v1/workflows/w/runs", Body::None),
    )
    .await?;
    let run_id = run["run_id"].as_str().context("run")?.to_owned();

    let mut clients = vec![("nobody", reqwest::Client::new())];
    for role in ["viewer", "operator", "author"] {
        clients.push((
            role,
            authed_client(&member(&stack, &admin, role, role).await?)?,
        ));
    }
    clients.push(("admin", admin.clone()));
    let rank = |role: &str| {
        ["nobody", "viewer", "operator", "author", "admin"]
            .iter()
            .position(|r| *r == role)
            .unwrap_or(0)
    };

    // Every route with the least role it needs. Calls that change state come after the reads,
    // and are made only by callers allowed to, lowest role first.
    let routes = [
        (call(Method::GET, "/v1/whoami", Body::None), "viewer"),
        (call(Method::GET, "/v1/workflows", Body::None), "viewer"),
        (call(Method::GET, "/v1/workflows/w", Body::None), "viewer"),
        (call(Method::GET, "/v1/runs", Body::None), "viewer"),
        (
            call(Method::GET, &format!("/v1/runs/{run_id}"), Body::None),
            "viewer",
        ),
        (call(Method::GET, "/v1/connections", Body::None), "viewer"),
        (
            call(Method::GET, "/v1/connections/crm", Body::None),
            "viewer",
        ),
        (call(Method::GET, "/v1/secrets", Body::None), "viewer"),
        (call(Method::GET, "/v1/policy", Body::None), "viewer"),
        (call(Method::GET, "/v1/approvals", Body::None), "viewer"),
        (call(Method::GET, "/v1/connectors", Body::None), "viewer"),
        (call(Method::GET, "/v1/tools/custom", Body::None), "viewer"),
        (
            call(Method::POST, "/v1/workflows/w/runs", Body::None),
            "operator",
        ),
        (
            call(
                Method::POST,
                &format!("/v1/runs/{run_id}/cancel"),
                Body::None,
            ),
            "operator",
        ),
        (
            call(
                Method::POST,
                "/v1/events/thing.happened",
                Body::Json(json!({ "data": 1 })),
            ),
            "operator",
        ),
        (
            call(Method::PUT, "/v1/workflows/w", Body::Text(WORKFLOW.into())),
            "author",
        ),
        (
            call(
                Method::POST,
                "/v1/principals/author/tokens",
                Body::Json(json!({})),
            ),
            "author",
        ),
        (call(Method::GET, "/v1/principals", Body::None), "admin"),
        (
            call(Method::GET, "/v1/principals/viewer", Body::None),
            "admin",
        ),
        (
            call(
                Method::POST,
                "/v1/principals",
                Body::Json(json!({ "name": "new-one", "role": "viewer" })),
            ),
            "admin",
        ),
        (
            call(Method::POST, "/v1/principals/new-one/tokens", Body::None),
            "admin",
        ),
        (call(Method::GET, "/v1/tokens", Body::None), "admin"),
        (call(Method::GET, "/v1/audit", Body::None), "admin"),
        (
            call(Method::GET, "/v1/oauth/crm/start", Body::None),
            "admin",
        ),
        (
            call(Method::POST, "/v1/connections/crm/test", Body::None),
            "admin",
        ),
        (call(Method::GET, "/v1/audit/verify", Body::None), "admin"),
        (
            call(Method::PUT, "/v1/policy", Body::Json(json!({}))),
            "admin",
        ),
        (
            call(
                Method::POST,
                "/v1/tools/custom",
                Body::Json(json!({
                    "name": "notes", "base_url": "https://notes.example.com",
                    "auth": [{ "type": "bearer" }],
                    "actions": [{ "name": "list_notes", "method": "GET", "path": "/notes" }]
                })),
            ),
            "admin",
        ),
        (
            call(
                Method::POST,
                "/v1/tools/import-openapi?dry_run=true",
                Body::Json(json!({ "document": {
                    "openapi": "3.1.0", "info": { "title": "Tiny" },
                    "servers": [{ "url": "https://tiny.example.com" }],
                    "paths": { "/ping": { "get": { "operationId": "ping" } } }
                } })),
            ),
            "admin",
        ),
        (
            call(
                Method::POST,
                "/v1/connections",
                Body::Json(
                    json!({ "name": "crm2", "connector": "http", "auth": { "type": "bearer", "token": "t1" } }),
                ),
            ),
            "admin",
        ),
        (
            call(
                Method::PUT,
                "/v1/connections/crm/credentials",
                Body::Json(json!({ "auth": { "type": "bearer", "token": "t2" } })),
            ),
            "admin",
        ),
        (
            call(
                Method::PUT,
                "/v1/connections/crm/scopes",
                Body::Json(json!({ "scopes": ["read"] })),
            ),
            "admin",
        ),
        (
            call(
                Method::PUT,
                "/v1/secrets/hook",
                Body::Json(json!({ "value": "v" })),
            ),
            "admin",
        ),
        (
            call(Method::DELETE, "/v1/secrets/hook", Body::None),
            "admin",
        ),
        (
            call(Method::DELETE, "/v1/connections/crm", Body::None),
            "admin",
        ),
        (
            call(Method::DELETE, "/v1/principals/new-one", Body::None),
            "admin",
        ),
        (
            call(Method::DELETE, "/v1/tools/custom/notes", Body::None),
            "admin",
        ),
    ];
    for (c, needs) in &routes {
        for (who, http) in &clients {
            let (status, body) = send(http, &api, c).await?;
            let expected = if *who == "nobody" {
                Some(StatusCode::UNAUTHORIZED)
            } else if rank(who) < rank(needs) {
                Some(StatusCode::FORBIDDEN)
            } else {
                None
            };
            match expected {
                Some(code) => {
                    assert_eq!(status, code, "{who} {} {}: {body}", c.method, c.path);
                    let message = body["error"]["message"].as_str().unwrap_or_default();
                    assert!(!message.is_empty(), "{body}");
                    if code == StatusCode::FORBIDDEN {
                        assert_eq!(body["error"]["code"], "forbidden");
                    }
                }
                None => assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{who} may {} {}: {status} {body}",
                    c.method,
                    c.path
                ),
            }
        }
    }
    // Health, OpenAPI and metrics stay open; webhooks are authenticated by their signature.
    for path in ["/healthz", "/openapi.json", "/metrics"] {
        let (status, _) = send(
            &reqwest::Client::new(),
            &api,
            &call(Method::GET, path, Body::None),
        )
        .await?;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    Ok(())
}

#[tokio::test]
async fn another_workspace_s_names_and_ids_are_not_found() -> Result<()> {
    let stack = Stack::start_with_workers(Backend::Postgres, 0).await?;
    let api = stack.api.clone();
    let ours = stack.http.clone();
    let (status, body) = send(
        &ours,
        &api,
        &call(Method::PUT, "/v1/workflows/w", Body::Text(WORKFLOW.into())),
    )
    .await?;
    ensure!(status.is_success(), "{status}: {body}");
    let (theirs, their_run, their_token) = other_workspace(&stack).await?;

    // Named or numbered things of `other` do not exist for `default`'s admin, for reading
    // and for changing alike.
    for c in [
        call(Method::GET, "/v1/workflows/theirs", Body::None),
        call(Method::POST, "/v1/workflows/theirs/runs", Body::None),
        call(Method::GET, &format!("/v1/runs/{their_run}"), Body::None),
        call(
            Method::POST,
            &format!("/v1/runs/{their_run}/cancel"),
            Body::None,
        ),
        call(Method::GET, "/v1/connections/their-crm", Body::None),
        call(
            Method::PUT,
            "/v1/connections/their-crm/credentials",
            Body::Json(json!({ "auth": { "type": "bearer", "token": "x" } })),
        ),
        call(Method::DELETE, "/v1/connections/their-crm", Body::None),
        call(Method::DELETE, "/v1/secrets/their-secret", Body::None),
        call(Method::GET, "/v1/principals/bob", Body::None),
        call(Method::DELETE, "/v1/principals/bob", Body::None),
        call(Method::POST, "/v1/principals/bob/tokens", Body::None),
        call(
            Method::DELETE,
            &format!("/v1/tokens/{their_token}"),
            Body::None,
        ),
        call(
            Method::POST,
            &format!("/v1/runs/{their_run}/steps/noop/approve"),
            Body::None,
        ),
        call(
            Method::PUT,
            "/v1/connections/their-crm/scopes",
            Body::Json(json!({ "scopes": [] })),
        ),
        call(Method::GET, "/v1/oauth/their-crm/start", Body::None),
        call(Method::POST, "/v1/connections/their-crm/test", Body::None),
    ] {
        let (status, body) = send(&ours, &api, &c).await?;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "{} {}: {body}",
            c.method,
            c.path
        );
    }
    // Lists show only the caller's own.
    let (_, runs) = send(&ours, &api, &call(Method::GET, "/v1/runs", Body::None)).await?;
    assert!(!runs.to_string().contains(&their_run), "{runs}");
    for (path, theirs_name) in [
        ("/v1/workflows", "theirs"),
        ("/v1/connections", "their-crm"),
        ("/v1/secrets", "their-secret"),
        ("/v1/principals", "bob"),
        ("/v1/tokens", &their_token),
    ] {
        let (status, list) = send(&ours, &api, &call(Method::GET, path, Body::None)).await?;
        assert_eq!(status, StatusCode::OK, "{path}: {list}");
        assert!(!list.to_string().contains(theirs_name), "{path}: {list}");
    }
    // The same workflow name in both: each workspace reads its own.
    let (_, w) = send(
        &ours,
        &api,
        &call(Method::GET, "/v1/workflows/w", Body::None),
    )
    .await?;
    assert_eq!(w["definition"]["description"], "ours");
    let (_, w) = send(
        &theirs,
        &api,
        &call(Method::GET, "/v1/workflows/w", Body::None),
    )
    .await?;
    assert_eq!(w["definition"]["description"], "theirs");
    // Event ids are the workspace's own: the same id in both is two events, and neither
    // learns that the other used it.
    for http in [&theirs, &ours] {
        let (status, body) = send(
            http,
            &api,
            &call(
                Method::POST,
                "/v1/events/order.placed",
                Body::Json(json!({ "id": "shared-1", "data": {} })),
            ),
        )
        .await?;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body["id"], "shared-1");
    }
    // Their run is untouched by our attempts.
    let (status, run) = send(
        &theirs,
        &api,
        &call(Method::GET, &format!("/v1/runs/{their_run}"), Body::None),
    )
    .await?;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(run["status"], "cancelled", "{run}");
    Ok(())
}

#[tokio::test]
async fn bodies_cannot_set_who_owns_or_what_role() -> Result<()> {
    let stack = Stack::start_with_workers(Backend::Sqlite, 0).await?;
    let admin = stack.http.clone();
    let api = stack.api.clone();
    for (path, method, body, field) in [
        (
            "/v1/principals",
            Method::POST,
            json!({ "name": "mallory", "role": "viewer", "workspace_id": "00000000-0000-0000-0000-000000000000" }),
            "workspace_id",
        ),
        (
            "/v1/principals",
            Method::POST,
            json!({ "name": "mallory", "role": "viewer", "id": "00000000-0000-0000-0000-000000000000" }),
            "id",
        ),
        (
            "/v1/principals",
            Method::POST,
            json!({ "name": "mallory", "role": "viewer", "created_by": null }),
            "created_by",
        ),
        (
            "/v1/principals",
            Method::POST,
            json!({ "name": "mallory", "role": "owner" }),
            "owner",
        ),
        (
            "/v1/connections",
            Method::POST,
            json!({ "name": "c", "connector": "http", "auth": { "type": "bearer", "token": "t" }, "status": "active" }),
            "status",
        ),
        (
            "/v1/principals/admin/tokens",
            Method::POST,
            json!({ "name": "t", "principal_id": "00000000-0000-0000-0000-000000000000" }),
            "principal_id",
        ),
    ] {
        let (status, answer) =
            send(&admin, &api, &call(method, path, Body::Json(body.clone()))).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{body}: {message}");
    }
    let (_, list) = send(
        &admin,
        &api,
        &call(Method::GET, "/v1/principals", Body::None),
    )
    .await?;
    assert!(!list.to_string().contains("mallory"), "{list}");

    // An operator cannot make itself more, nor mint tokens for others.
    let operator = authed_client(&member(&stack, &admin, "op", "operator").await?)?;
    for c in [
        call(
            Method::POST,
            "/v1/principals",
            Body::Json(json!({ "name": "op2", "role": "admin" })),
        ),
        call(Method::POST, "/v1/principals/admin/tokens", Body::None),
    ] {
        let (status, body) = send(&operator, &api, &c).await?;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "{} {}: {body}",
            c.method,
            c.path
        );
    }
    Ok(())
}

#[tokio::test]
async fn revoked_and_expired_tokens_are_refused_and_token_text_is_shown_once() -> Result<()> {
    let stack = Stack::start_with_workers(Backend::Postgres, 0).await?;
    let admin = stack.http.clone();
    let api = stack.api.clone();
    let token = member(&stack, &admin, "ada", "viewer").await?;
    let ada = authed_client(&token)?;
    let whoami = call(Method::GET, "/v1/whoami", Body::None);
    let (status, me) = send(&ada, &api, &whoami).await?;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["principal"], "ada");
    assert_eq!(me["role"], "viewer");

    // Listings show a prefix, never the token or its digest.
    let (_, tokens) = send(&admin, &api, &call(Method::GET, "/v1/tokens", Body::None)).await?;
    let listed = tokens.to_string();
    assert!(!listed.contains(&token), "{listed}");
    assert!(!listed.contains(&token[12..]), "{listed}");
    assert!(listed.contains(&token[..9]), "{listed}");
    assert!(!listed.contains("digest"), "{listed}");

    // Malformed and unknown tokens.
    for bad in [
        "Bearer",
        "Basic YWRhOnB3",
        "Bearer not-ours",
        "Bearer sy_unknown",
    ] {
        let r = reqwest::Client::new()
            .get(format!("{api}/v1/whoami"))
            .header("authorization", bad)
            .send()
            .await?;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{bad}");
        assert_eq!(
            r.headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Bearer")
        );
    }

    // Ada revokes her own token: refused from the next request on.
    let id = me["token_id"].as_str().context("token id")?.to_owned();
    let (status, revoked) = send(
        &ada,
        &api,
        &call(Method::DELETE, &format!("/v1/tokens/{id}"), Body::None),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert!(revoked["revoked_at"].is_string());
    let (status, body) = send(&ada, &api, &whoami).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("revoked"),
        "{body}"
    );

    // A token past its expiry.
    let (status, issued) = send(
        &admin,
        &api,
        &call(
            Method::POST,
            "/v1/principals/ada/tokens",
            Body::Json(json!({ "name": "short", "expires_in": "1h" })),
        ),
    )
    .await?;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    let short = authed_client(issued["token"].as_str().context("token")?)?;
    assert_eq!(send(&short, &api, &whoami).await?.0, StatusCode::OK);
    let db = stack.db.connect().await?;
    let id: uuid::Uuid = issued["id"].as_str().context("id")?.parse()?;
    let mut row = api_token::Entity::find_by_id(id)
        .one(&db)
        .await?
        .context("row")?
        .into_active_model();
    row.expires_at = Set(Some(Utc::now() - TimeDelta::seconds(1)));
    row.update(&db).await?;
    // Changed behind the engine's back, so it is seen once the engine's short-lived memory of
    // the token lapses (`engine::auth::CACHE_FOR`).
    let last = std::sync::Mutex::new(Value::Null);
    switchyard_tests::wait_until(
        || async {
            let (status, body) = send(&short, &api, &whoami).await?;
            *last.lock().unwrap_or_else(|e| e.into_inner()) = body;
            Ok::<bool, anyhow::Error>(status == StatusCode::UNAUTHORIZED)
        },
        engine::auth::CACHE_FOR * 5,
    )
    .await
    .context("the expired token is refused")?;
    let body = last.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(body.to_string().contains("expired"), "{body}");

    // Deleting a principal revokes all of its tokens.
    let again = authed_client(
        send(
            &admin,
            &api,
            &call(Method::POST, "/v1/principals/ada/tokens", Body::None),
        )
        .await?
        .1["token"]
            .as_str()
            .context("token")?,
    )?;
    assert_eq!(send(&again, &api, &whoami).await?.0, StatusCode::OK);
    let (status, _) = send(
        &admin,
        &api,
        &call(Method::DELETE, "/v1/principals/ada", Body::None),
    )
    .await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        send(&again, &api, &whoami).await?.0,
        StatusCode::UNAUTHORIZED
    );
    // And an admin cannot delete itself.
    let (status, _) = send(
        &admin,
        &api,
        &call(Method::DELETE, "/v1/principals/admin", Body::None),
    )
    .await?;
    assert_eq!(status, StatusCode::CONFLICT);
    Ok(())
}

#[tokio::test]
async fn the_workspace_policy_refuses_forbidden_actions_when_a_workflow_is_applied() -> Result<()> {
    let stack = Stack::start_with_workers(Backend::Sqlite, 0).await?;
    let admin = stack.http.clone();
    let api = stack.api.clone();
    let (status, body) = send(
        &admin,
        &api,
        &call(
            Method::PUT,
            "/v1/policy",
            Body::Json(json!({ "actions": { "deny": ["http.reqest"] } })),
        ),
    )
    .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a typo is refused: {body}");
    let (status, body) = send(
        &admin,
        &api,
        &call(
            Method::PUT,
            "/v1/policy",
            Body::Json(json!({ "actions": { "deny": ["http.request"] } })),
        ),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = send(
        &admin,
        &api,
        &call(Method::PUT, "/v1/workflows/w", Body::Text(WORKFLOW.into())),
    )
    .await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let problem = &body["error"]["details"]["problems"][0];
    assert_eq!(problem["path"], "steps[0].action", "{body}");
    assert_eq!(problem["line"], 4, "{body}");
    assert!(
        problem["message"]
            .as_str()
            .is_some_and(|m| m.contains("http.request")),
        "{body}"
    );
    // Lifted: the same workflow applies.
    send(
        &admin,
        &api,
        &call(Method::PUT, "/v1/policy", Body::Json(json!({}))),
    )
    .await?;
    let (status, body) = send(
        &admin,
        &api,
        &call(Method::PUT, "/v1/workflows/w", Body::Text(WORKFLOW.into())),
    )
    .await?;
    assert!(status.is_success(), "{status}: {body}");
    let (_, audit) = send(
        &admin,
        &api,
        &call(Method::GET, "/v1/audit?principal=admin", Body::None),
    )
    .await?;
    let changes = audit["records"]
        .as_array()
        .map(|r| r.iter().filter(|r| r["kind"] == "policy.changed").count());
    assert_eq!(changes, Some(2), "{audit}");
    Ok(())
}
