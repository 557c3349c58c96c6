//! The connector catalog over the API: `GET /v1/connectors[/{name}]` on a real engine.

mod common;

use anyhow::Result;
use axum::http::StatusCode;
use common::Stack;
use serde_json::Value;
use switchyard_tests::Backend;

async fn get(stack: &Stack, path: &str) -> Result<(StatusCode, Value)> {
    let r = stack
        .http
        .get(format!("{}{path}", stack.api))
        .send()
        .await?;
    let status = r.status();
    Ok((status, r.json().await?))
}

#[tokio::test]
async fn the_catalog_serves_every_manifest_and_each_one_whole() -> Result<()> {
    let stack = Stack::start_with_workers(Backend::Sqlite, 0).await?;

    let (status, catalog) = get(&stack, "/v1/connectors").await?;
    assert_eq!(status, StatusCode::OK, "{catalog}");
    let all = catalog["connectors"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let registry = connectors::Registry::builtin();
    let names: Vec<&str> = all.iter().filter_map(|c| c["name"].as_str()).collect();
    let expected: Vec<&str> = registry.manifests().map(|m| m.name.as_str()).collect();
    assert_eq!(names, expected, "every built-in, in catalog order");
    let slack = all
        .iter()
        .find(|c| c["name"] == "slack")
        .cloned()
        .unwrap_or_default();
    assert_eq!(slack["rate_limit"]["requests"], 50, "{slack:#}");
    assert!(slack["actions"][0].get("input_schema").is_none());

    let (status, generic) = get(&stack, "/v1/connectors?category=generic").await?;
    assert_eq!(status, StatusCode::OK);
    assert!(
        generic["connectors"]
            .as_array()
            .is_some_and(|c| c.iter().all(|c| c["category"] == "generic") && !c.is_empty()),
        "{generic:#}"
    );
    let (status, bad) = get(&stack, "/v1/connectors?category=chat").await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    assert!(
        bad.to_string().contains("category `chat` is not one of"),
        "{bad}"
    );

    let (status, manifest) = get(&stack, "/v1/connectors/slack").await?;
    assert_eq!(status, StatusCode::OK);
    let expected = serde_json::to_value(registry.get("slack"))?;
    assert_eq!(manifest, expected, "the whole manifest, schemas included");

    let (status, missing) = get(&stack, "/v1/connectors/slak").await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");

    let anonymous = reqwest::get(format!("{}/v1/connectors", stack.api)).await?;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    Ok(())
}
