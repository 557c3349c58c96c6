//! The built-in connector manifests.

use schemas::catalog::{ActionCatalog, ActionInfo, ConnectorInfo, SideEffect};

use crate::manifest::{ActionManifest, AuthType, Manifest};

const fn action(
    name: &'static str,
    summary: &'static str,
    side_effect: SideEffect,
    scopes: &'static [&'static str],
) -> ActionManifest {
    ActionManifest {
        name,
        summary,
        side_effect,
        scopes,
    }
}

use SideEffect::{Destructive, Read, Write};

static BUILTIN: &[Manifest] = &[
    Manifest {
        name: "http",
        title: "HTTP request",
        auth: &[
            AuthType::None,
            AuthType::ApiKey,
            AuthType::Bearer,
            AuthType::Basic,
            AuthType::Headers,
            AuthType::OAuth2Client,
            AuthType::OAuth2Code,
            AuthType::ServiceAccount,
        ],
        requires_connection: false,
        default_base_url: "",
        actions: &[action(
            "request",
            "Send an HTTP request and return status, headers and body",
            Write,
            &[],
        )],
    },
    Manifest {
        name: "slack",
        title: "Slack",
        auth: &[AuthType::OAuth2Code, AuthType::Bearer],
        requires_connection: true,
        default_base_url: "https://slack.com/api",
        actions: &[
            action(
                "chat_post_message",
                "Post a message to a channel",
                Write,
                &["chat:write"],
            ),
            action("chat_update", "Edit a message", Write, &["chat:write"]),
            action(
                "files_upload",
                "Upload a file to a channel",
                Write,
                &["files:write"],
            ),
            action(
                "conversations_list",
                "List channels",
                Read,
                &["channels:read"],
            ),
            action(
                "users_lookup_by_email",
                "Find a user by email address",
                Read,
                &["users:read.email"],
            ),
        ],
    },
    Manifest {
        name: "github",
        title: "GitHub",
        auth: &[AuthType::OAuth2Code, AuthType::Bearer],
        requires_connection: true,
        default_base_url: "https://api.github.com",
        actions: &[
            action("create_issue", "Open an issue", Write, &["repo"]),
            action(
                "create_comment",
                "Comment on an issue or pull request",
                Write,
                &["repo"],
            ),
            action("get_issue", "Read an issue", Read, &["repo"]),
            action("close_issue", "Close an issue", Destructive, &["repo"]),
        ],
    },
    Manifest {
        name: "sheets",
        title: "Google Sheets",
        auth: &[AuthType::OAuth2Code, AuthType::ServiceAccount],
        requires_connection: true,
        default_base_url: "https://sheets.googleapis.com",
        actions: &[
            action(
                "append_row",
                "Append one row to a sheet",
                Write,
                &["https://www.googleapis.com/auth/spreadsheets"],
            ),
            action(
                "append_rows",
                "Append many rows in one request",
                Write,
                &["https://www.googleapis.com/auth/spreadsheets"],
            ),
            action(
                "read_range",
                "Read a range of cells",
                Read,
                &["https://www.googleapis.com/auth/spreadsheets.readonly"],
            ),
            action(
                "update_range",
                "Overwrite a range of cells",
                Destructive,
                &["https://www.googleapis.com/auth/spreadsheets"],
            ),
        ],
    },
    Manifest {
        name: "hubspot",
        title: "HubSpot",
        auth: &[AuthType::OAuth2Code, AuthType::Bearer],
        requires_connection: true,
        default_base_url: "https://api.hubapi.com",
        actions: &[
            action(
                "create_contact",
                "Create a contact",
                Write,
                &["crm.objects.contacts.write"],
            ),
            action(
                "update_contact",
                "Update a contact",
                Write,
                &["crm.objects.contacts.write"],
            ),
            action(
                "search_contacts",
                "Search contacts",
                Read,
                &["crm.objects.contacts.read"],
            ),
            action(
                "create_deal",
                "Create a deal",
                Write,
                &["crm.objects.deals.write"],
            ),
        ],
    },
    Manifest {
        name: "jira",
        title: "Jira",
        auth: &[AuthType::OAuth2Code, AuthType::Basic, AuthType::Bearer],
        requires_connection: true,
        default_base_url: "https://your-domain.atlassian.net",
        actions: &[
            action(
                "create_issue",
                "Create an issue",
                Write,
                &["write:jira-work"],
            ),
            action(
                "transition_issue",
                "Move an issue to another status",
                Write,
                &["write:jira-work"],
            ),
            action(
                "add_comment",
                "Comment on an issue",
                Write,
                &["write:jira-work"],
            ),
        ],
    },
    Manifest {
        name: "gmail",
        title: "Gmail",
        auth: &[AuthType::OAuth2Code, AuthType::ServiceAccount],
        requires_connection: true,
        default_base_url: "https://gmail.googleapis.com",
        actions: &[
            action(
                "send",
                "Send an email",
                Write,
                &["https://www.googleapis.com/auth/gmail.send"],
            ),
            action(
                "list_messages",
                "List messages matching a query",
                Read,
                &["https://www.googleapis.com/auth/gmail.readonly"],
            ),
        ],
    },
];

/// The set of connectors available to workflows.
#[derive(Debug, Clone)]
pub struct Registry {
    manifests: Vec<&'static Manifest>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::builtin()
    }
}

impl Registry {
    /// Every built-in connector.
    pub fn builtin() -> Self {
        Registry {
            manifests: BUILTIN.iter().collect(),
        }
    }

    /// The manifest called `name`.
    pub fn get(&self, name: &str) -> Option<&'static Manifest> {
        self.manifests.iter().copied().find(|m| m.name == name)
    }

    /// All manifests, in a stable order.
    pub fn manifests(&self) -> impl Iterator<Item = &'static Manifest> + '_ {
        self.manifests.iter().copied()
    }
}

impl ActionCatalog for Registry {
    fn connector(&self, name: &str) -> Option<ConnectorInfo> {
        self.get(name).map(|m| ConnectorInfo {
            name: m.name.to_owned(),
            requires_connection: m.requires_connection,
            actions: m
                .actions
                .iter()
                .map(|a| ActionInfo {
                    name: a.name.to_owned(),
                    side_effect: a.side_effect,
                })
                .collect(),
        })
    }

    fn connector_names(&self) -> Vec<String> {
        self.manifests.iter().map(|m| m.name.to_owned()).collect()
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
            assert!(seen.insert(m.name), "duplicate connector {}", m.name);
            assert!(!m.actions.is_empty(), "{} has no actions", m.name);
            let mut actions = std::collections::HashSet::new();
            for a in m.actions {
                assert!(
                    actions.insert(a.name),
                    "duplicate action {}.{}",
                    m.name,
                    a.name
                );
                assert!(a.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
            }
        }
    }

    #[test]
    fn the_catalog_answers_the_validator() {
        let registry = Registry::builtin();
        let slack = registry.connector("slack").expect("slack");
        assert!(slack.requires_connection);
        assert!(slack.actions.iter().any(|a| a.name == "chat_post_message"));
        assert!(registry.connector("nope").is_none());
    }
}

/// The connector reference page, `docs/connectors.md`, generated from the manifests.
pub fn markdown(registry: &Registry) -> String {
    use std::fmt::Write as _;
    let mut out = String::from(
        "# Connectors\n\n\
         Generated from the connector manifests by `switchyard connectors --markdown`; a test fails\n\
         when this page and the manifests disagree.\n\n\
         Every manifest tells the validator which `connector.action` names exist. Today only\n\
         `http.request` executes; the other actions come with the governance (connections,\n\
         credentials) and connector catalog work, and a step using one fails with `invalid_input`.\n\
         `http.request` takes `{method, url, headers, query, json | body, expect, timeout_ms,\n\
         idempotency}` and returns `{status, headers, body}` (see `connectors/src/http/request.rs`).\n",
    );
    for m in registry.manifests() {
        let auth: Vec<String> = m
            .auth
            .iter()
            .map(|a| {
                format!(
                    "`{}`",
                    serde_json::to_value(a)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                )
            })
            .collect();
        let _ = write!(
            out,
            "\n## {} (`{}`)\n\nAuth: {}. Connection required: {}.{}\n\n| action | side effect | scopes | summary |\n| --- | --- | --- | --- |\n",
            m.title,
            m.name,
            auth.join(", "),
            if m.requires_connection { "yes" } else { "no" },
            if m.default_base_url.is_empty() {
                String::new()
            } else {
                format!(" Default base URL: `{}`.", m.default_base_url)
            }
        );
        for a in m.actions {
            let side = match a.side_effect {
                SideEffect::Read => "read",
                SideEffect::Write => "write",
                SideEffect::Destructive => "destructive",
            };
            let scopes: Vec<String> = a.scopes.iter().map(|s| format!("`{s}`")).collect();
            let _ = writeln!(
                out,
                "| `{}.{}` | {side} | {} | {} |",
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
    }
    out
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
