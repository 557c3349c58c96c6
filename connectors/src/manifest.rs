//! Connector manifests: the description every part of Switchyard reads.

use schemas::catalog::SideEffect;
use serde::Serialize;

/// How a connection authenticates to the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthType {
    /// No credentials.
    None,
    /// An API key in a header or query parameter.
    ApiKey,
    /// A static bearer token.
    Bearer,
    /// HTTP basic authentication.
    Basic,
    /// Custom headers (a provider's own scheme, e.g. two headers with an id and a key).
    Headers,
    /// OAuth 2.0 authorization code with PKCE.
    #[serde(rename = "oauth2_code")]
    OAuth2Code,
    /// OAuth 2.0 client credentials.
    #[serde(rename = "oauth2_client")]
    OAuth2Client,
    /// A service account's signed JWT bearer grant.
    ServiceAccount,
}

/// One action a connector offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionManifest {
    /// Name within the connector, e.g. `chat_post_message`.
    pub name: &'static str,
    /// One line for people.
    pub summary: &'static str,
    /// What running it does to the external system.
    pub side_effect: SideEffect,
    /// Provider scopes the connection must have been granted.
    pub scopes: &'static [&'static str],
}

/// Everything Switchyard knows about one connector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Manifest {
    /// Name used in `connector.action`, e.g. `slack`.
    pub name: &'static str,
    /// Display name.
    pub title: &'static str,
    /// Auth types a connection may use.
    pub auth: &'static [AuthType],
    /// Whether steps must name a connection (false only for connectors that need no account).
    pub requires_connection: bool,
    /// Base URL used unless a connection overrides it (tests, self-hosted editions).
    pub default_base_url: &'static str,
    /// The actions.
    pub actions: &'static [ActionManifest],
}

impl Manifest {
    /// The action called `name`, if this connector has it.
    pub fn action(&self, name: &str) -> Option<&ActionManifest> {
        self.actions.iter().find(|a| a.name == name)
    }
}
