//! Custom tools against a fake API over real HTTP: the request an action renders (path with
//! encoded segments, query, headers, JSON body, the credential where its auth type puts it),
//! failure classification, input checks, and the OpenAPI import of the published Swagger
//! Petstore 3 document (`tests/fixtures/petstore3-openapi.yaml`).

mod support;

use std::time::Duration;

use anyhow::{Context, Result};
use connectors::custom::{self, CustomConnector};
use connectors::openapi::{self, ImportError, ImportOptions};
use schemas::catalog::SideEffect;
use schemas::envelope::ErrorCode;
use schemas::tool::{CustomTool, ToolAuth};
use serde_json::{Value, json};
use support::{api_key_header, basic, bearer, credential, ctx, ctx_at};
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const PETSTORE: &str = include_str!("../../tests/fixtures/petstore3-openapi.yaml");

fn shop(base: &str) -> CustomTool {
    serde_json::from_value(json!({
        "name": "shop",
        "title": "Shop",
        "base_url": base,
        "auth": [{ "type": "api_key", "in": "header", "name": "X-Api-Key" }, { "type": "bearer" },
                 { "type": "basic" }],
        "actions": [{
            "name": "update_item",
            "method": "PATCH",
            "path": "/shops/{shop}/items/{itemId}",
            "parameters": [
                { "name": "shop", "in": "path", "schema": { "type": "string" } },
                { "name": "itemId", "in": "path", "schema": { "type": "integer" } },
                { "name": "tag", "in": "query", "schema": { "type": "array", "items": { "type": "string" } } },
                { "name": "dry", "in": "query", "schema": { "type": "boolean" } },
                { "name": "X-Request-Id", "in": "header", "required": true, "schema": { "type": "string" } }
            ],
            "body": { "required": true, "schema": {
                "type": "object", "required": ["title"],
                "properties": { "title": { "type": "string" },
                                "state": { "type": "string", "enum": ["open", "closed"] } } } }
        }, {
            "name": "get_item",
            "method": "GET",
            "path": "/items/{id}",
            "parameters": [{ "name": "id", "in": "path", "schema": { "type": "string" } }]
        }, {
            "name": "remove_item",
            "method": "DELETE",
            "path": "/items/{id}",
            "parameters": [{ "name": "id", "in": "path" }]
        }]
    }))
    .unwrap_or_else(|e| panic!("{e}"))
}

async fn run(
    tool: &CustomTool,
    ctx: &connectors::ActionContext,
    action: &str,
    input: Value,
) -> Result<Value, connectors::ActionError> {
    custom::execute(ctx, tool, action, input).await
}

#[tokio::test]
async fn an_action_sends_exactly_the_rendered_request() -> Result<()> {
    let server = MockServer::start().await;
    Mock::given(method("PATCH"))
        // `a/b c` is one segment: its `/` and space are encoded, not a second segment.
        .and(path("/api/shops/a%2Fb%20c/items/42"))
        .and(query_param("tag", "red"))
        .and(query_param("dry", "true"))
        .and(header("x-request-id", "req-1"))
        .and(header("x-api-key", "k-123"))
        .and(body_json(json!({ "title": "Lamp", "state": "open" })))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({ "id": 42, "title": "Lamp" })),
        )
        .expect(1)
        .mount(&server)
        .await;
    let tool = shop(&format!("{}/api", server.uri()));
    let ctx = ctx_at(
        &format!("{}/api", server.uri()),
        Some(api_key_header("X-Api-Key", "k-123")),
    );
    let out = run(
        &tool,
        &ctx,
        "update_item",
        json!({ "shop": "a/b c", "itemId": 42, "tag": ["red", "blue"], "dry": true,
                "X-Request-Id": "req-1", "body": { "title": "Lamp", "state": "open" } }),
    )
    .await?;
    assert_eq!(out["status"], 200);
    assert_eq!(out["body"], json!({ "id": 42, "title": "Lamp" }));
    let seen = server.received_requests().await.context("recorded")?;
    let query = seen[0].url.query().unwrap_or_default();
    assert_eq!(
        query, "tag=red&tag=blue&dry=true",
        "an array repeats the parameter"
    );
    Ok(())
}

#[tokio::test]
async fn each_auth_type_puts_the_credential_where_it_belongs() -> Result<()> {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/items/b"))
        .and(header("authorization", "Bearer tok-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "auth": "bearer" })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/items/u"))
        // base64("ada:pw")
        .and(header("authorization", "Basic YWRhOnB3"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "auth": "basic" })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/items/q"))
        .and(query_param("key", "qk-9"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "auth": "query" })))
        .mount(&server)
        .await;
    let tool = shop(&server.uri());
    let out = run(
        &tool,
        &ctx(&server, bearer("tok-1")),
        "get_item",
        json!({ "id": "b" }),
    )
    .await?;
    assert_eq!(out["body"]["auth"], "bearer");
    let out = run(
        &tool,
        &ctx(&server, basic("ada", "pw")),
        "get_item",
        json!({ "id": "u" }),
    )
    .await?;
    assert_eq!(out["body"]["auth"], "basic");
    let query_key = credential(
        "api_key",
        json!({ "in": "query", "name": "key" }),
        json!({ "key": "qk-9" }),
    );
    let out = run(
        &tool,
        &ctx(&server, query_key),
        "get_item",
        json!({ "id": "q" }),
    )
    .await?;
    assert_eq!(out["body"]["auth"], "query");
    Ok(())
}

#[tokio::test]
async fn a_429_with_retry_after_is_rate_limited_and_a_404_is_permanent() -> Result<()> {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/items/busy"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "7")
                .set_body_json(json!({ "message": "slow down" })),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/items/gone"))
        .respond_with(
            ResponseTemplate::new(404).set_body_json(json!({ "message": "no such item" })),
        )
        .mount(&server)
        .await;
    let tool = shop(&server.uri());
    let ctx = ctx(&server, bearer("t"));
    let e = run(&tool, &ctx, "get_item", json!({ "id": "busy" }))
        .await
        .expect_err("429");
    assert_eq!(e.code, ErrorCode::RateLimited);
    assert!(e.is_retryable());
    assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
    assert_eq!(e.status, Some(429));
    let e = run(&tool, &ctx, "get_item", json!({ "id": "gone" }))
        .await
        .expect_err("404");
    assert_eq!(e.code, ErrorCode::NotFound);
    assert!(!e.is_retryable());
    Ok(())
}

#[tokio::test]
async fn missing_or_invalid_inputs_are_invalid_input_naming_the_field() -> Result<()> {
    let server = MockServer::start().await;
    let tool = shop(&server.uri());
    let ctx = ctx(&server, bearer("t"));
    let base = json!({ "shop": "s", "itemId": 1, "X-Request-Id": "r", "body": { "title": "x" } });
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({ "itemId": 1, "X-Request-Id": "r", "body": { "title": "x" } }),
            "with.shop: is required",
        ),
        (
            with(&base, "itemId", json!("one")),
            "with.itemId: must be integer",
        ),
        (
            with(&base, "itemId", json!(1.5)),
            "with.itemId: must be integer",
        ),
        (
            with(&base, "body", json!({})),
            "with.body.title: is required",
        ),
        (
            with(&base, "body", json!({ "title": "x", "state": "lost" })),
            "with.body.state: must be one of",
        ),
        (
            with(&base, "tag", json!([1])),
            "with.tag[0]: must be string",
        ),
        (
            with(&base, "colour", json!("red")),
            "with.colour: `shop.update_item` has no such input",
        ),
    ];
    for (input, expected) in cases {
        let e = run(&tool, &ctx, "update_item", input)
            .await
            .expect_err(expected);
        assert_eq!(e.code, ErrorCode::InvalidInput, "{expected}");
        assert!(
            e.message.starts_with(expected),
            "{} vs {expected}",
            e.message
        );
    }
    let e = run(&tool, &ctx, "get_item", json!({ "id": ".." }))
        .await
        .expect_err("dot-dot");
    assert_eq!(e.code, ErrorCode::InvalidInput);
    let e = run(&tool, &ctx, "nope", json!({}))
        .await
        .expect_err("unknown");
    assert_eq!(e.code, ErrorCode::InvalidInput);
    assert!(
        server
            .received_requests()
            .await
            .unwrap_or_default()
            .is_empty(),
        "no request is sent for bad input"
    );
    Ok(())
}

fn with(base: &Value, key: &str, value: Value) -> Value {
    let mut v = base.clone();
    v[key] = value;
    v
}

#[test]
fn the_manifest_follows_the_definition() {
    let tool = shop("https://shop.example.com");
    let c = CustomConnector::new(tool, &["slack"]).unwrap_or_else(|p| panic!("{p:?}"));
    use connectors::Connector as _;
    let m = c.manifest();
    assert_eq!(m.name, "shop");
    assert_eq!(m.default_base_url, "https://shop.example.com");
    assert!(m.requires_connection);
    assert!(
        m.accepts_auth("api_key") && m.accepts_auth("bearer") && !m.accepts_auth("oauth2_code")
    );
    let side: Vec<SideEffect> = m.actions.iter().map(|a| a.side_effect).collect();
    assert_eq!(
        side,
        [SideEffect::Write, SideEffect::Read, SideEffect::Destructive]
    );
    assert_eq!(
        m.find_action("update_item")
            .map(|a| a.input_schema["required"].clone()),
        Some(json!(["shop", "itemId", "X-Request-Id", "body"]))
    );
    let mut taken = shop("https://shop.example.com");
    taken.name = "slack".into();
    let problems = CustomConnector::new(taken, &["slack"]).expect_err("built-in name");
    assert_eq!(problems[0].path, "name");
}

fn petstore() -> openapi::Imported {
    openapi::import(
        PETSTORE,
        &ImportOptions {
            name: Some("petstore".into()),
            server_base: Some("https://petstore3.swagger.io".into()),
            reserved: vec!["http".into()],
            ..ImportOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_petstore_document_imports_every_operation() {
    let imported = petstore();
    let tool = &imported.tool;
    assert_eq!(tool.name, "petstore");
    assert_eq!(tool.title, "Swagger Petstore - OpenAPI 3.0");
    assert_eq!(tool.base_url, "https://petstore3.swagger.io/v3");
    let names: Vec<&str> = tool.actions.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "add_pet",
            "update_pet",
            "find_pets_by_status",
            "find_pets_by_tags",
            "get_pet_by_id",
            "update_pet_with_form",
            "delete_pet",
            "upload_file",
            "get_inventory",
            "place_order",
            "get_order_by_id",
            "delete_order",
            "create_user",
            "create_users_with_list_input",
            "login_user",
            "logout_user",
            "get_user_by_name",
            "update_user",
            "delete_user",
        ]
    );
    let side = |name: &str| tool.find_action(name).map(|a| a.effective_side_effect());
    assert_eq!(side("get_pet_by_id"), Some(SideEffect::Read));
    assert_eq!(side("add_pet"), Some(SideEffect::Write));
    assert_eq!(side("update_pet"), Some(SideEffect::Write));
    assert_eq!(side("delete_pet"), Some(SideEffect::Destructive));

    // addPet: the JSON body is the Pet schema, its `$ref`s inlined.
    let add = tool.find_action("add_pet").expect("add_pet");
    assert_eq!(add.summary, "Add a new pet to the store");
    let body = add.body.as_ref().expect("body");
    assert!(body.required);
    assert_eq!(body.schema["required"], json!(["name", "photoUrls"]));
    assert_eq!(
        body.schema["properties"]["category"]["properties"]["name"]["type"],
        "string"
    );
    assert_eq!(
        body.schema["properties"]["tags"]["items"]["properties"]["id"]["type"],
        "integer"
    );
    assert!(body.schema.get("xml").is_none(), "xml hints are dropped");
    // Scopes of the implicit flow are not required: that flow cannot be used here.
    assert!(add.scopes.is_empty());

    // getPetById: one integer path parameter.
    let get = tool.find_action("get_pet_by_id").expect("get_pet_by_id");
    assert_eq!(get.path, "/pet/{petId}");
    let schema = get.input_schema();
    assert_eq!(schema["required"], json!(["petId"]));
    assert_eq!(schema["properties"]["petId"]["type"], "integer");
    assert_eq!(schema["additionalProperties"], false);

    // findPetsByStatus: an enum query parameter with its default.
    let find = tool.find_action("find_pets_by_status").expect("find");
    assert_eq!(
        find.parameters[0].schema["enum"],
        json!(["available", "pending", "sold"])
    );

    // deletePet: its `api_key` header parameter is an input.
    let delete = tool.find_action("delete_pet").expect("delete_pet");
    assert!(delete.parameters.iter().any(|p| p.name == "api_key"));

    // Auth: the API key header, and `none` for the operations without security; OAuth's
    // implicit flow is not supported and says so.
    assert_eq!(
        tool.auth,
        vec![
            ToolAuth::ApiKey {
                location: schemas::tool::KeyLocation::Header,
                name: "api_key".into()
            },
            ToolAuth::None,
        ]
    );
    assert!(tool.check(&[]).is_empty());
    CustomConnector::new(tool.clone(), &[]).unwrap_or_else(|p| panic!("{p:?}"));
}

#[test]
fn unsupported_parts_are_warnings_not_silent_drops() {
    let imported = petstore();
    let warned = |path: &str, text: &str| {
        imported
            .warnings
            .iter()
            .any(|w| w.path == path && w.message.contains(text))
    };
    assert!(
        warned(
            "paths./pet/{petId}/uploadImage.post.requestBody",
            "application/octet-stream"
        ),
        "{:#?}",
        imported.warnings
    );
    assert!(
        warned("components.securitySchemes.petstore_auth", "implicit"),
        "{:#?}",
        imported.warnings
    );
    let upload = imported
        .tool
        .find_action("upload_file")
        .expect("upload_file");
    assert!(upload.body.is_none());

    let doc = json!({
        "openapi": "3.1.0",
        "info": { "title": "Odd" },
        "servers": [{ "url": "https://odd.example.com/{v}", "variables": { "v": { "default": "v2" } } }],
        "paths": { "/things": {
            "get": { "operationId": "listThings", "parameters": [
                { "name": "session", "in": "cookie" },
                { "name": "filter", "in": "query", "schema": { "$ref": "other.yaml#/Filter" } } ] },
            "post": { "requestBody": { "content": { "multipart/form-data": { "schema": {} } } } },
            "trace": {}
        } }
    });
    let imported = openapi::import_value(&doc, &ImportOptions::default()).expect("imports");
    assert_eq!(imported.tool.name, "odd");
    assert_eq!(imported.tool.base_url, "https://odd.example.com/v2");
    let paths: Vec<&str> = imported.warnings.iter().map(|w| w.path.as_str()).collect();
    for expected in [
        "paths./things.get.parameters[0]",
        "paths./things.get.parameters[1].schema",
        "paths./things.post.requestBody",
        "paths./things.trace",
    ] {
        assert!(
            paths.contains(&expected),
            "no warning at {expected}: {:#?}",
            imported.warnings
        );
    }
    // An operation without an id is named from its method and path.
    assert!(imported.tool.find_action("post_things").is_some());
}

#[test]
fn ref_cycles_terminate() {
    let doc = json!({
        "openapi": "3.0.3",
        "info": { "title": "Tree" },
        "servers": [{ "url": "https://tree.example.com" }],
        "paths": { "/nodes": { "post": {
            "operationId": "addNode",
            "requestBody": { "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Node" } } } }
        } } },
        "components": { "schemas": {
            "Node": { "type": "object", "nullable": true, "properties": {
                "name": { "type": "string" },
                "children": { "type": "array", "items": { "$ref": "#/components/schemas/Node" } },
                "parent": { "$ref": "#/components/schemas/Other" } } },
            "Other": { "$ref": "#/components/schemas/Node" }
        } }
    });
    let imported = openapi::import_value(&doc, &ImportOptions::default()).expect("imports");
    let body = imported.tool.actions[0].body.as_ref().expect("body");
    assert_eq!(
        body.schema["type"],
        json!(["object", "null"]),
        "nullable becomes a null type"
    );
    assert_eq!(
        body.schema["properties"]["children"]["items"],
        json!({}),
        "the cycle is cut"
    );
    assert!(
        imported
            .warnings
            .iter()
            .any(|w| w.message.contains("refers back to itself"))
    );
}

#[test]
fn swagger_2_is_refused_and_other_documents_too() {
    let swagger = "swagger: '2.0'\ninfo: { title: Old, version: '1' }\npaths: {}\n";
    assert_eq!(
        openapi::import(swagger, &ImportOptions::default()),
        Err(ImportError::Swagger2)
    );
    assert!(matches!(
        openapi::import("openapi: 4.0.0\npaths: {}\n", &ImportOptions::default()),
        Err(ImportError::Version(_))
    ));
    assert!(matches!(
        openapi::import("{ not json", &ImportOptions::default()),
        Err(ImportError::Unreadable(_))
    ));
    let relative =
        "openapi: 3.0.0\ninfo: { title: R }\nservers: [{ url: /v1 }]\npaths: { /a: { get: {} } }\n";
    assert!(matches!(
        openapi::import(relative, &ImportOptions::default()),
        Err(ImportError::Server(_))
    ));
    let huge = "x".repeat(openapi::MAX_DOCUMENT_BYTES + 1);
    assert!(matches!(
        openapi::import(&huge, &ImportOptions::default()),
        Err(ImportError::TooLarge(_))
    ));
}

#[tokio::test]
async fn imported_operations_call_the_api_as_documented() -> Result<()> {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v3/pet"))
        .and(header("api_key", "special-key"))
        .and(body_json(json!({ "name": "doggie", "photoUrls": [] })))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({ "id": 10, "name": "doggie", "photoUrls": [], "status": "available" }),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v3/pet/10"))
        .and(header("api_key", "special-key"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({ "id": 10, "name": "doggie" })),
        )
        .expect(1)
        .mount(&server)
        .await;
    let imported = openapi::import(
        PETSTORE,
        &ImportOptions {
            name: Some("petstore".into()),
            server_base: Some(server.uri()),
            ..ImportOptions::default()
        },
    )?;
    let ctx = ctx_at(
        &format!("{}/v3", server.uri()),
        Some(api_key_header("api_key", "special-key")),
    );
    let added = run(
        &imported.tool,
        &ctx,
        "add_pet",
        json!({ "body": { "name": "doggie", "photoUrls": [] } }),
    )
    .await?;
    assert_eq!(added["body"]["id"], 10);
    let got = run(
        &imported.tool,
        &ctx,
        "get_pet_by_id",
        json!({ "petId": 10 }),
    )
    .await?;
    assert_eq!(got["body"]["name"], "doggie");
    Ok(())
}
