//! Custom tools end to end, on SQLite and PostgreSQL: the published Petstore 3 document is
//! imported through the API with its base URL on a fake Petstore (wiremock over real HTTP,
//! answering as the document says), a connection is made for it, and a workflow calls two
//! imported operations — `addPet`, then `getPetById` with the id the first answered — through
//! a real engine, NATS and worker. Writes need an admin, a bad definition is answered with the
//! path of every problem, and the ledger holds the tool's creation and both calls.

mod common;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use axum::http::StatusCode;
use common::Stack;
use reqwest::Method;
use serde_json::{Value, json};
use switchyard_tests::Backend;
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const PETSTORE: &str = include_str!("../fixtures/petstore3-openapi.yaml");
const WAIT: Duration = Duration::from_secs(30);

async fn send(
    http: &reqwest::Client,
    stack: &Stack,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<(StatusCode, Value)> {
    let mut request = http.request(method, format!("{}{path}", stack.api));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let r = request.send().await?;
    let status = r.status();
    let text = r.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// A token of a new principal with `role`.
async fn member(stack: &Stack, name: &str, role: &str) -> Result<reqwest::Client> {
    let (status, body) = send(
        &stack.http,
        stack,
        Method::POST,
        "/v1/principals",
        Some(json!({ "name": name, "role": role })),
    )
    .await?;
    ensure!(status == StatusCode::CREATED, "{status}: {body}");
    let (status, token) = send(
        &stack.http,
        stack,
        Method::POST,
        &format!("/v1/principals/{name}/tokens"),
        Some(json!({ "name": "test" })),
    )
    .await?;
    ensure!(status == StatusCode::CREATED, "{status}: {token}");
    common::authed_client(token["token"].as_str().context("token")?)
}

const WORKFLOW: &str = r#"name: adopt
steps:
  - id: add
    action: petstore.add_pet
    connection: pets
    with:
      body: { name: doggie, photoUrls: ["https://img.example.com/doggie.png"], status: available }
  - id: fetch
    needs: [add]
    action: petstore.get_pet_by_id
    connection: pets
    with:
      petId: "{{ steps.add.output.body.id }}"
outputs:
  name: "{{ steps.fetch.output.body.name }}"
"#;

async fn petstore_end_to_end(backend: Backend) -> Result<()> {
    let fake = MockServer::start().await;
    // The Petstore's documented answers: the stored Pet, with its new id.
    Mock::given(method("POST"))
        .and(path("/v3/pet"))
        .and(header("api_key", "special-key"))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({
            "name": "doggie", "photoUrls": ["https://img.example.com/doggie.png"], "status": "available"
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": 4242, "name": "doggie", "photoUrls": ["https://img.example.com/doggie.png"],
            "tags": [], "status": "available"
        })))
        .expect(1)
        .mount(&fake)
        .await;
    Mock::given(method("GET"))
        .and(path("/v3/pet/4242"))
        .and(header("api_key", "special-key"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": 4242, "name": "doggie", "photoUrls": ["https://img.example.com/doggie.png"],
            "tags": [], "status": "available"
        })))
        .expect(1)
        .mount(&fake)
        .await;

    let stack = Stack::start(backend).await?;
    let import = json!({
        "name": "petstore",
        "document": PETSTORE,
        "base_url": format!("{}/v3", fake.uri()),
    });

    // Writes are for admins.
    let viewer = member(&stack, "vera", "viewer").await?;
    let (status, body) = send(
        &viewer,
        &stack,
        Method::POST,
        "/v1/tools/import-openapi",
        Some(import.clone()),
    )
    .await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // A dry run answers without storing.
    let (status, dry) = send(
        &stack.http,
        &stack,
        Method::POST,
        "/v1/tools/import-openapi?dry_run=true",
        Some(import.clone()),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!(dry["stored"], false);
    let (status, _) = send(
        &stack.http,
        &stack,
        Method::GET,
        "/v1/tools/custom/petstore",
        None,
    )
    .await?;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, imported) = send(
        &stack.http,
        &stack,
        Method::POST,
        "/v1/tools/import-openapi",
        Some(import.clone()),
    )
    .await?;
    assert_eq!(status, StatusCode::CREATED, "{imported}");
    assert_eq!(imported["stored"], true);
    assert_eq!(
        imported["definition"]["base_url"],
        format!("{}/v3", fake.uri())
    );
    let warnings = imported["warnings"].as_array().cloned().unwrap_or_default();
    assert!(
        warnings
            .iter()
            .any(|w| w["path"] == "paths./pet/{petId}/uploadImage.post.requestBody"),
        "{warnings:#?}"
    );
    let (status, again) = send(
        &stack.http,
        &stack,
        Method::POST,
        "/v1/tools/import-openapi",
        Some(import),
    )
    .await?;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");

    // It is in the catalog, marked custom, with the side effects of its methods.
    let (status, catalog) = send(&viewer, &stack, Method::GET, "/v1/connectors", None).await?;
    assert_eq!(status, StatusCode::OK);
    let listed = catalog["connectors"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "petstore").cloned())
        .context("petstore is listed")?;
    assert_eq!(listed["custom"], true);
    let side = |name: &str| {
        listed["actions"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["name"] == name))
            .map(|a| a["side_effect"].clone())
    };
    assert_eq!(side("get_pet_by_id"), Some(json!("read")));
    assert_eq!(side("delete_pet"), Some(json!("destructive")));
    let (status, manifest) = send(
        &viewer,
        &stack,
        Method::GET,
        "/v1/connectors/petstore",
        None,
    )
    .await?;
    assert_eq!(status, StatusCode::OK);
    assert!(manifest["actions"][0]["input_schema"]["properties"]["body"].is_object());

    // A bad definition: every problem, with its path.
    let (status, bad) = send(
        &stack.http,
        &stack,
        Method::POST,
        "/v1/tools/custom",
        Some(json!({
            "name": "slack",
            "base_url": "not a url",
            "auth": [{ "type": "bearer" }],
            "actions": [{ "name": "get", "method": "GET", "path": "/things/{id}" }]
        })),
    )
    .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    assert_eq!(bad["error"]["code"], "invalid_input");
    let paths: Vec<&str> = bad["error"]["details"]["problems"]
        .as_array()
        .map(|p| p.iter().filter_map(|p| p["path"].as_str()).collect())
        .unwrap_or_default();
    for expected in ["name", "base_url", "actions[0].path"] {
        assert!(paths.contains(&expected), "{expected} in {bad:#}");
    }
    let (status, bad) = send(
        &stack.http,
        &stack,
        Method::POST,
        "/v1/tools/custom",
        Some(json!({ "name": "x", "base_url": "https://x.example.com", "auth": [{ "type": "bearer" }],
                     "actions": [{ "name": "a", "method": "FETCH", "path": "/" }] })),
    )
    .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    assert_eq!(
        bad["error"]["details"]["problems"][0]["path"],
        "actions[0].method"
    );

    // A connection with the API key the Petstore's `api_key` scheme expects.
    let (status, body) = send(
        &stack.http,
        &stack,
        Method::POST,
        "/v1/connections",
        Some(json!({
            "name": "pets", "connector": "petstore",
            "auth": { "type": "api_key", "in": "header", "name": "api_key", "key": "special-key" }
        })),
    )
    .await?;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = send(
        &stack.http,
        &stack,
        Method::POST,
        "/v1/connections",
        Some(json!({ "name": "pets-bearer", "connector": "petstore", "auth": { "type": "bearer", "token": "t" } })),
    )
    .await?;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "the tool takes no bearer tokens: {body}"
    );

    stack.apply(WORKFLOW).await?;
    let (_, run) = stack.start_run("adopt", json!({}), None).await?;
    let finished = stack.finished(&run, WAIT).await?;
    assert_eq!(finished["status"], "succeeded", "{finished:#}");
    assert_eq!(finished["outputs"]["name"], "doggie", "{finished:#}");
    fake.verify().await;

    // The ledger: the tool's creation, and one record per call.
    let (status, ledger) = send(
        &stack.http,
        &stack,
        Method::GET,
        "/v1/audit?principal=admin&limit=500",
        None,
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{ledger}");
    let records = ledger["records"].as_array().cloned().unwrap_or_default();
    let created = records
        .iter()
        .find(|r| r["kind"] == "tool.created")
        .context("a tool.created record")?;
    let details = created["details"].to_string();
    assert!(
        details.contains("petstore") && details.contains("openapi"),
        "{created:#}"
    );
    let (_, calls) = send(
        &stack.http,
        &stack,
        Method::GET,
        &format!("/v1/audit?run={run}"),
        None,
    )
    .await?;
    let calls = calls["records"].as_array().cloned().unwrap_or_default();
    let actions: Vec<&str> = calls
        .iter()
        .filter(|c| c["kind"] == "integration.call" && c["connector"] == "petstore")
        .filter_map(|c| c["action"].as_str())
        .collect();
    assert_eq!(actions, ["add_pet", "get_pet_by_id"], "{calls:#?}");
    assert!(!serde_json::to_string(&calls)?.contains("special-key"));

    // Deleting needs an admin, is audited, and takes the tool out of the catalog.
    let (status, _) = send(
        &viewer,
        &stack,
        Method::DELETE,
        "/v1/tools/custom/petstore",
        None,
    )
    .await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = send(
        &stack.http,
        &stack,
        Method::DELETE,
        "/v1/tools/custom/petstore",
        None,
    )
    .await?;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, _) = send(
        &viewer,
        &stack,
        Method::GET,
        "/v1/connectors/petstore",
        None,
    )
    .await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    Ok(())
}

#[tokio::test]
async fn an_imported_petstore_runs_two_operations_on_every_backend() -> Result<()> {
    for backend in Backend::ALL {
        petstore_end_to_end(backend)
            .await
            .with_context(|| format!("on {backend}"))?;
    }
    Ok(())
}

#[tokio::test]
async fn a_tool_defined_by_hand_is_created_replaced_and_listed() -> Result<()> {
    let stack = Stack::start_with_workers(Backend::Sqlite, 0).await?;
    let tool = json!({
        "name": "notes",
        "base_url": "https://notes.example.com/api",
        "auth": [{ "type": "bearer" }],
        "actions": [{ "name": "get_note", "method": "GET", "path": "/notes/{id}",
                      "parameters": [{ "name": "id", "in": "path" }] }]
    });
    let (status, body) = send(
        &stack.http,
        &stack,
        Method::POST,
        "/v1/tools/custom",
        Some(tool.clone()),
    )
    .await?;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = send(
        &stack.http,
        &stack,
        Method::POST,
        "/v1/tools/custom",
        Some(tool.clone()),
    )
    .await?;
    assert_eq!(status, StatusCode::CONFLICT);
    let mut replaced = tool.clone();
    replaced["actions"][0]["summary"] = json!("Read one note");
    let (status, body) = send(
        &stack.http,
        &stack,
        Method::PUT,
        "/v1/tools/custom/notes",
        Some(replaced),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["definition"]["actions"][0]["summary"], "Read one note");
    let (status, body) = send(
        &stack.http,
        &stack,
        Method::PUT,
        "/v1/tools/custom/other",
        Some(tool),
    )
    .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, list) = send(&stack.http, &stack, Method::GET, "/v1/tools/custom", None).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["tools"][0]["name"], "notes");
    // A workflow may use it at once: the engine's registry was refreshed by the write.
    let e = stack
        .apply("name: read-note\nsteps:\n  - { id: a, action: notes.get_note, connection: nope, with: { id: n1 } }\n")
        .await
        .expect_err("the connection does not exist");
    assert!(
        e.to_string().contains("connection `nope` does not exist"),
        "the action is known, only the connection is missing: {e}"
    );
    let r = stack
        .http
        .put(format!("{}/v1/workflows/typo", stack.api))
        .body("name: typo\nsteps:\n  - { id: a, action: notes.get_notes, with: {} }\n")
        .send()
        .await?;
    let status = r.status();
    let body: Value = r.json().await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body.to_string().contains("has no action `get_notes`"),
        "{body}"
    );
    Ok(())
}

#[tokio::test]
async fn a_destructive_custom_action_waits_for_approval() -> Result<()> {
    let fake = MockServer::start().await;
    Mock::given(method("DELETE"))
        .and(path("/notes/n1"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&fake)
        .await;
    let stack = Stack::start(Backend::Sqlite).await?;
    let tool = json!({
        "name": "notes",
        "base_url": fake.uri(),
        "auth": [{ "type": "none" }],
        "actions": [{ "name": "delete_note", "method": "DELETE", "path": "/notes/{id}",
                      "parameters": [{ "name": "id", "in": "path" }] }]
    });
    let (status, body) = send(
        &stack.http,
        &stack,
        Method::POST,
        "/v1/tools/custom",
        Some(tool),
    )
    .await?;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // `switchyard apply` checks the file against the engine's catalog, custom tools included.
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("tidy.yaml");
    std::fs::write(
        &file,
        "name: tidy\nsteps:\n  - { id: drop, action: notes.delete_note, with: { id: n1 } }\n",
    )?;
    let out = tokio::process::Command::new(common::switchyard_bin()?)
        .arg("apply")
        .arg(&file)
        .env("SWITCHYARD_URL", &stack.api)
        .env("SWITCHYARD_TOKEN", &stack.token)
        .env("RUST_LOG", "warn")
        .output()
        .await?;
    ensure!(
        out.status.success(),
        "switchyard apply: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, run) = stack.start_run("tidy", json!({}), None).await?;
    switchyard_tests::wait_until(
        || async {
            let r = stack.run(&run).await?;
            Ok::<bool, anyhow::Error>(common::step(&r, "drop")["status"] == "waiting_approval")
        },
        WAIT,
    )
    .await
    .context("the destructive step waits at a gate")?;
    assert!(
        fake.received_requests()
            .await
            .unwrap_or_default()
            .is_empty(),
        "nothing is sent before the approval"
    );
    let r = stack
        .http
        .post(format!("{}/v1/runs/{run}/steps/drop/approve", stack.api))
        .json(&json!({}))
        .send()
        .await?;
    ensure!(r.status().is_success(), "approve: {}", r.status());
    let finished = stack.finished(&run, WAIT).await?;
    assert_eq!(finished["status"], "succeeded", "{finished:#}");
    assert_eq!(common::step(&finished, "drop")["output"]["status"], 204);
    fake.verify().await;
    Ok(())
}
