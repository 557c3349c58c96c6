//! `switchyard connectors list|show`, run as a real process.

use std::process::{Command, Output};

use serde_json::Value;

fn switchyard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .output()
        .expect("run switchyard")
}

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

#[test]
fn list_prints_every_connector_with_its_actions() {
    let catalog = json_of(&switchyard(&["connectors", "list", "--json"]));
    let connectors = catalog["connectors"].as_array().expect("connectors");
    let slack = connectors
        .iter()
        .find(|c| c["name"] == "slack")
        .expect("slack is listed");
    assert_eq!(slack["category"], "communication");
    assert!(
        slack["actions"]
            .as_array()
            .expect("actions")
            .iter()
            .any(|a| a["name"] == "post_message" && a["side_effect"] == "write"),
        "{slack:#}"
    );
    assert!(
        slack["actions"][0].get("input_schema").is_none(),
        "the list leaves schemas out"
    );

    let text = switchyard(&["connectors", "list"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("slack.post_message"), "{text}");
    // The bare verb is the list.
    let bare = switchyard(&["connectors"]);
    assert_eq!(String::from_utf8_lossy(&bare.stdout), text);
}

#[test]
fn list_filters_by_category_and_names_the_valid_ones() {
    let generic = json_of(&switchyard(&[
        "connectors",
        "list",
        "--category",
        "generic",
        "--json",
    ]));
    let names: Vec<&str> = generic["connectors"]
        .as_array()
        .expect("connectors")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(names.contains(&"http"), "{names:?}");
    assert!(!names.contains(&"slack"), "{names:?}");

    let bad = switchyard(&["connectors", "list", "--category", "chat"]);
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("category `chat` is not one of communication, files"),
        "{stderr}"
    );
}

#[test]
fn show_prints_the_manifest_with_schemas() {
    let slack = json_of(&switchyard(&["connectors", "show", "slack", "--json"]));
    let post = slack["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .find(|a| a["name"] == "post_message")
        .expect("post_message");
    assert_eq!(post["input_schema"]["required"][0], "channel");
    assert_eq!(post["scopes"][0], "chat:write");
    assert_eq!(post["idempotency"]["kind"], "none");

    let text = switchyard(&["connectors", "show", "slack"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("slack.post_message — Post a message"),
        "{text}"
    );
    assert!(
        text.contains("channel*"),
        "required inputs are marked: {text}"
    );

    let missing = switchyard(&["connectors", "show", "slak"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no built-in connector `slak`"));
}

#[test]
fn markdown_is_the_reference_page() {
    let out = switchyard(&["connectors", "--markdown"]);
    let page = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/connectors.md"
    ))
    .expect("docs/connectors.md");
    assert_eq!(String::from_utf8_lossy(&out.stdout), page);
}
