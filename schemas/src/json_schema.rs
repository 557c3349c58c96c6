//! The JSON Schema of the definition format, generated from [`crate::definition`].
//!
//! The checked-in copy lives at `schemas/json/workflow.schema.json` so editors can validate
//! definitions as they are typed; a test fails when it no longer matches these types, and
//! `switchyard schema > schemas/json/workflow.schema.json` regenerates it.

use crate::definition::Workflow;

/// The `$id` the schema is published under.
pub const SCHEMA_ID: &str = "https://switchyard.dev/schemas/workflow.schema.json";

/// The definition format's JSON Schema, as a JSON value.
pub fn workflow_schema() -> serde_json::Value {
    let mut schema = schemars::schema_for!(Workflow).to_value();
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("$id".into(), SCHEMA_ID.into());
        obj.insert("title".into(), "Switchyard workflow definition".into());
    }
    schema
}

/// The schema as pretty-printed JSON with a trailing newline, exactly as checked in.
pub fn workflow_schema_pretty() -> String {
    let mut text = serde_json::to_string_pretty(&workflow_schema()).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn checked_in_schema_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/json/workflow.schema.json");
        let expected = super::workflow_schema_pretty();
        let actual = std::fs::read_to_string(path).unwrap_or_default();
        if actual != expected {
            if std::env::var_os("SWITCHYARD_BLESS").is_some() {
                std::fs::write(path, &expected).expect("write schema");
                return;
            }
            panic!(
                "schemas/json/workflow.schema.json is stale; regenerate it with \
                 `SWITCHYARD_BLESS=1 cargo test -p schemas checked_in_schema_is_current` \
                 or `switchyard schema > schemas/json/workflow.schema.json`"
            );
        }
    }
}
