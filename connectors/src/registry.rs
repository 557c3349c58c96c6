//! The set of connectors a workflow can use: the built-ins, and any custom tools layered on.

use std::sync::{Arc, LazyLock};

use schemas::catalog::{ActionCatalog, ActionInfo, ConnectorInfo, SideEffect};
use schemas::envelope::ErrorCode;
use serde_json::Value;

use crate::action::ActionContext;
use crate::error::ActionError;
use crate::manifest::{Category, Idempotency, Manifest};
use crate::sdk::{Call, Connector};

static BUILTIN: LazyLock<Registry> = LazyLock::new(|| Registry {
    connectors: Arc::new(crate::catalog::builtin()),
});

/// The set of connectors available to workflows; cheap to clone.
#[derive(Debug, Clone)]
pub struct Registry {
    connectors: Arc<Vec<Arc<dyn Connector>>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::builtin()
    }
}

impl Registry {
    /// Every built-in connector (built once per process).
    pub fn builtin() -> Self {
        BUILTIN.clone()
    }

    /// The built-ins with `extra` connectors added (custom tools). A name already taken by a
    /// built-in keeps the built-in.
    pub fn with(extra: Vec<Arc<dyn Connector>>) -> Self {
        let mut connectors: Vec<Arc<dyn Connector>> = BUILTIN.connectors.as_ref().clone();
        for c in extra {
            if !connectors
                .iter()
                .any(|b| b.manifest().name == c.manifest().name)
            {
                connectors.push(c);
            }
        }
        Registry {
            connectors: Arc::new(connectors),
        }
    }

    /// The manifest called `name`.
    pub fn get(&self, name: &str) -> Option<&Manifest> {
        self.find(name).map(|c| c.manifest())
    }

    /// The connector called `name`.
    pub fn find(&self, name: &str) -> Option<&dyn Connector> {
        self.connectors
            .iter()
            .find(|c| c.manifest().name == name)
            .map(AsRef::as_ref)
    }

    /// The inputs `connector.action` marks secret (empty when either is unknown).
    pub fn secret_fields(&self, connector: &str, action: &str) -> &[String] {
        self.get(connector)
            .and_then(|m| m.find_action(action))
            .map_or(&[], |a| a.secret_fields.as_slice())
    }

    /// All manifests, in a stable order.
    pub fn manifests(&self) -> impl Iterator<Item = &Manifest> + '_ {
        self.connectors.iter().map(|c| c.manifest())
    }

    /// Runs `connector.action` with its rendered inputs (the step's `with`) and returns its
    /// output; an unknown connector or action is `invalid_input`.
    pub async fn execute(
        &self,
        ctx: &ActionContext,
        connector: &str,
        action: &str,
        input: Value,
    ) -> Result<Value, ActionError> {
        let Some(found) = self.find(connector) else {
            return Err(ActionError::new(
                ErrorCode::InvalidInput,
                format!("there is no connector `{}`", connector.escape_debug()),
            ));
        };
        let call = Call::new(ctx, found)?;
        if found.manifest().find_action(action).is_none() {
            return Err(call.unknown_action(action));
        }
        found.execute(&call, action, input).await
    }

    /// Checks a connection's credentials with the connector's health call.
    pub async fn health(&self, ctx: &ActionContext, connector: &str) -> Result<(), ActionError> {
        let Some(found) = self.find(connector) else {
            return Err(ActionError::new(
                ErrorCode::InvalidInput,
                format!("there is no connector `{}`", connector.escape_debug()),
            ));
        };
        let call = Call::new(ctx, found)?;
        found.health(&call).await
    }
}

impl ActionCatalog for Registry {
    fn connector(&self, name: &str) -> Option<ConnectorInfo> {
        self.get(name).map(|m| ConnectorInfo {
            name: m.name.clone(),
            requires_connection: m.requires_connection,
            actions: m
                .actions
                .iter()
                .map(|a| ActionInfo {
                    name: a.name.clone(),
                    side_effect: a.side_effect,
                })
                .collect(),
        })
    }

    fn connector_names(&self) -> Vec<String> {
        self.manifests().map(|m| m.name.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_well_formed() {
        let registry = Registry::builtin();
        let mut seen = std::collections::HashSet::new();
        for m in registry.manifests() {
            assert!(
                seen.insert(m.name.clone()),
                "duplicate connector {}",
                m.name
            );
            assert!(!m.actions.is_empty(), "{} has no actions", m.name);
            assert!(!m.auth.is_empty(), "{} takes no auth type", m.name);
            if let Some(limit) = m.rate_limit {
                limit.check().unwrap_or_else(|e| panic!("{}: {e}", m.name));
            }
            let mut actions = std::collections::HashSet::new();
            for a in &m.actions {
                assert!(
                    actions.insert(a.name.clone()),
                    "duplicate action {}.{}",
                    m.name,
                    a.name
                );
                assert!(
                    a.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                    "{}.{}",
                    m.name,
                    a.name
                );
                assert!(a.input_schema.is_object() && a.output_schema.is_object());
            }
        }
    }

    #[test]
    fn the_catalog_answers_the_validator() {
        let registry = Registry::builtin();
        let slack = registry.connector("slack").expect("slack");
        assert!(slack.requires_connection);
        assert!(slack.actions.iter().any(|a| a.name == "post_message"));
        assert!(registry.connector("nope").is_none());
    }
}

/// The connector reference page, `docs/connectors.md`, generated from the manifests.
pub fn markdown(registry: &Registry) -> String {
    use std::fmt::Write as _;
    let mut out = String::from(
        "# Connectors\n\n\
         Generated from the connector manifests by `switchyard connectors --markdown`; a test fails\n\
         when this page and the manifests disagree. `GET /v1/connectors/{name}` serves the same\n\
         manifests with each action's full input and output JSON Schema.\n\n\
         Every connector sends its requests through one HTTP layer: the connection's base URL\n\
         (`base_url` on the connection, else the default below), its credential, its fleet-wide\n\
         request budget (the rate limit below unless the connection sets `rate_limit`), the\n\
         run's `traceparent`, a response size cap and one failure classification (`408`, `429`\n\
         and `5xx` but `501` are retried, with the provider's `Retry-After` or rate-limit reset).\n\
         Inputs marked * are required. Paging actions take `limit` and `cursor` and return\n\
         `{items, next_cursor}`.\n\n\
         This page lists the built-ins. A workspace may add its own REST APIs as custom tools,\n\
         by hand or imported from an OpenAPI document ([custom-tools.md](custom-tools.md)); they\n\
         use the same HTTP layer and appear in `GET /v1/connectors` marked `\"custom\": true`.\n",
    );
    for category in Category::ALL {
        let manifests: Vec<&Manifest> = registry
            .manifests()
            .filter(|m| m.category == category)
            .collect();
        if manifests.is_empty() {
            continue;
        }
        let _ = write!(out, "\n## {}\n", category.title());
        for m in manifests {
            let auth: Vec<String> = m.auth.iter().map(|a| format!("`{}`", a.as_str())).collect();
            let _ = write!(out, "\n### {} (`{}`)\n\n", m.title, m.name);
            let _ = writeln!(out, "- Auth: {}", auth.join(", "));
            let _ = writeln!(
                out,
                "- Connection required: {}",
                if m.requires_connection { "yes" } else { "no" }
            );
            if !m.default_base_url.is_empty() {
                let _ = writeln!(out, "- Default base URL: `{}`", m.default_base_url);
            }
            if let Some(limit) = m.rate_limit {
                let _ = writeln!(
                    out,
                    "- Rate limit per connection: {} requests per {} s (burst {})",
                    limit.requests, limit.per_seconds, limit.burst
                );
            }
            if !m.docs_url.is_empty() {
                let _ = writeln!(out, "- API reference: <{}>", m.docs_url);
            }
            out.push_str("\n| action | side effect | repeat-safe | scopes | summary |\n| --- | --- | --- | --- | --- |\n");
            for a in &m.actions {
                let side = match a.side_effect {
                    SideEffect::Read => "read",
                    SideEffect::Write => "write",
                    SideEffect::Destructive => "destructive",
                };
                let repeat = match &a.idempotency {
                    Idempotency::Natural => "yes".to_owned(),
                    Idempotency::Key { header } => format!("key (`{header}`)"),
                    Idempotency::None => "no".to_owned(),
                };
                let scopes: Vec<String> = a.scopes.iter().map(|s| format!("`{s}`")).collect();
                let _ = writeln!(
                    out,
                    "| `{}.{}` | {side} | {repeat} | {} | {} |",
                    m.name,
                    a.name,
                    if scopes.is_empty() {
                        "—".to_owned()
                    } else {
                        scopes.join(" ")
                    },
                    a.summary
                );
            }
            out.push('\n');
            for a in &m.actions {
                let inputs = input_fields(&a.input_schema);
                let _ = writeln!(
                    out,
                    "- `{}` inputs: {}{}",
                    a.name,
                    if inputs.is_empty() {
                        "none".to_owned()
                    } else {
                        inputs.join(", ")
                    },
                    a.pagination.as_ref().map_or(String::new(), |p| format!(
                        "; pages by {} (default {} items, at most {})",
                        p.style, p.default_limit, p.max_limit
                    ))
                );
            }
        }
    }
    out
}

/// `name*` (required) or `name` for each top-level property of an input schema.
fn input_fields(schema: &Value) -> Vec<String> {
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    schema["properties"]
        .as_object()
        .map(|props| {
            props
                .keys()
                .map(|k| {
                    if required.contains(&k.as_str()) {
                        format!("`{k}`*")
                    } else {
                        format!("`{k}`")
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod docs_tests {
    #[test]
    fn docs_connectors_page_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/connectors.md");
        let expected = super::markdown(&super::Registry::builtin());
        let actual = std::fs::read_to_string(path).unwrap_or_default();
        if actual != expected {
            if std::env::var_os("SWITCHYARD_BLESS").is_some() {
                std::fs::write(path, &expected).expect("write docs/connectors.md");
                return;
            }
            panic!(
                "docs/connectors.md is stale; regenerate it with `switchyard connectors --markdown > docs/connectors.md`"
            );
        }
    }
}
