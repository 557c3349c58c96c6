//! Connector manifests: the description every part of Switchyard reads — the validator (which
//! `connector.action` names exist), the engine (side effects for approval gates, scopes,
//! rate-limit defaults), the API (`GET /v1/connectors`), the generated reference page and
//! agents (input and output schemas).
//!
//! A manifest is plain data. Built-in connectors build theirs once at start with the builders
//! below; custom tools build theirs from what a user registered, so every field is owned.

use schemas::catalog::SideEffect;
use serde::Serialize;
use serde_json::Value;

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

impl AuthType {
    /// The name connections use in `auth.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthType::None => "none",
            AuthType::ApiKey => "api_key",
            AuthType::Bearer => "bearer",
            AuthType::Basic => "basic",
            AuthType::Headers => "headers",
            AuthType::OAuth2Code => "oauth2_code",
            AuthType::OAuth2Client => "oauth2_client",
            AuthType::ServiceAccount => "service_account",
        }
    }
}

/// What a connector is for, to group the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Messages, mail, SMS, notifications.
    Communication,
    /// File storage and documents.
    Files,
    /// CRM and sales.
    Crm,
    /// Spreadsheets and databases.
    Data,
    /// Issue trackers, code hosting, project management.
    DevTools,
    /// Generic protocols and user-registered APIs.
    Generic,
}

impl Category {
    /// Every category, in catalog order.
    pub const ALL: [Category; 6] = [
        Category::Communication,
        Category::Files,
        Category::Crm,
        Category::Data,
        Category::DevTools,
        Category::Generic,
    ];

    /// The name the API uses (`dev_tools`).
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Communication => "communication",
            Category::Files => "files",
            Category::Crm => "crm",
            Category::Data => "data",
            Category::DevTools => "dev_tools",
            Category::Generic => "generic",
        }
    }

    /// The category named `name` (as [`Category::as_str`] spells it).
    pub fn parse(name: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// The heading used in the reference page.
    pub fn title(self) -> &'static str {
        match self {
            Category::Communication => "Communication",
            Category::Files => "Files and documents",
            Category::Crm => "CRM and sales",
            Category::Data => "Productivity and data",
            Category::DevTools => "Project and dev tools",
            Category::Generic => "Generic",
        }
    }
}

/// A request budget: at most `requests` per `per_seconds`, with up to `burst` at once.
///
/// The budget of a connection is enforced across the whole worker fleet. A manifest gives the
/// provider's documented default; a connection may set its own (a paid plan, a shared app).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests allowed per window.
    pub requests: u32,
    /// The window, in seconds.
    pub per_seconds: u32,
    /// Requests that may go at once before the steady rate applies (at least 1).
    #[serde(default = "one")]
    pub burst: u32,
}

fn one() -> u32 {
    1
}

impl RateLimit {
    /// `requests` per second, no burst.
    pub const fn per_second(requests: u32) -> Self {
        RateLimit {
            requests,
            per_seconds: 1,
            burst: 1,
        }
    }

    /// `requests` per minute, no burst.
    pub const fn per_minute(requests: u32) -> Self {
        RateLimit {
            requests,
            per_seconds: 60,
            burst: 1,
        }
    }

    /// The same budget allowing `burst` requests at once.
    pub const fn with_burst(self, burst: u32) -> Self {
        RateLimit { burst, ..self }
    }

    /// Whether the numbers make sense: a positive rate, a window of at most a day, a burst
    /// of at least one and no larger than the window's requests.
    pub fn check(&self) -> Result<(), String> {
        if self.requests == 0 || self.per_seconds == 0 {
            return Err("`requests` and `per_seconds` must be positive".into());
        }
        if self.per_seconds > 86_400 {
            return Err("`per_seconds` must be at most 86400 (one day)".into());
        }
        if self.burst == 0 || self.burst > self.requests {
            return Err("`burst` must be between 1 and `requests`".into());
        }
        Ok(())
    }

    /// Time between two requests at the steady rate, in microseconds (at least 1).
    pub fn interval_micros(&self) -> u64 {
        (u64::from(self.per_seconds) * 1_000_000 / u64::from(self.requests.max(1))).max(1)
    }
}

/// Whether repeating an action (a retry after a lost answer) can do its effect twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Idempotency {
    /// Repeating it is harmless (reads, overwrites, state transitions to a fixed state).
    Natural,
    /// The provider deduplicates by a key the action sends in this header (the step's
    /// idempotency key, the same for every attempt).
    Key {
        /// The header, e.g. `Idempotency-Key`.
        header: String,
    },
    /// A repeated call may repeat the effect (a second message, a second record).
    None,
}

/// How an action that lists things pages through them.
///
/// Every paging action takes `limit` (items wanted in all, default and cap below) and an
/// optional `cursor` from an earlier call, follows the provider's pages until it has `limit`
/// items or there are no more, and returns them with `next_cursor` (`null` at the end).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pagination {
    /// What the provider pages by, for people: `cursor`, `page_token`, `offset`, `link`…
    pub style: String,
    /// Items returned when the step gives no `limit`.
    pub default_limit: u32,
    /// The largest `limit` accepted (bounds memory and time per step).
    pub max_limit: u32,
}

/// One action a connector offers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionManifest {
    /// Name within the connector, e.g. `post_message`.
    pub name: String,
    /// One line for people.
    pub summary: String,
    /// What running it does to the external system.
    pub side_effect: SideEffect,
    /// Provider scopes the connection must have been granted.
    pub scopes: Vec<String>,
    /// Whether a retry may repeat its effect.
    pub idempotency: Idempotency,
    /// Input fields holding secrets (dotted paths under `with`): redacted in audit records
    /// and never echoed in outputs or errors.
    pub secret_fields: Vec<String>,
    /// How it pages, when the provider pages.
    pub pagination: Option<Pagination>,
    /// JSON Schema of its inputs (the step's `with`).
    pub input_schema: Value,
    /// JSON Schema of its output.
    pub output_schema: Value,
}

impl ActionManifest {
    /// An action with no scopes, no secret fields, no paging, inputs and output of any shape,
    /// and idempotency following its side effect: reads are natural, writes are not.
    pub fn new(name: &str, summary: &str, side_effect: SideEffect) -> Self {
        ActionManifest {
            name: name.to_owned(),
            summary: summary.to_owned(),
            side_effect,
            scopes: Vec::new(),
            idempotency: match side_effect {
                SideEffect::Read => Idempotency::Natural,
                SideEffect::Write | SideEffect::Destructive => Idempotency::None,
            },
            secret_fields: Vec::new(),
            pagination: None,
            input_schema: serde_json::json!({}),
            output_schema: serde_json::json!({}),
        }
    }

    /// A read.
    pub fn read(name: &str, summary: &str) -> Self {
        Self::new(name, summary, SideEffect::Read)
    }

    /// A write.
    pub fn write(name: &str, summary: &str) -> Self {
        Self::new(name, summary, SideEffect::Write)
    }

    /// A destructive write (deletes, overwrites, merges): gated by approval when the
    /// workspace's policy says so.
    pub fn destructive(name: &str, summary: &str) -> Self {
        Self::new(name, summary, SideEffect::Destructive)
    }

    /// The scopes the connection must hold.
    pub fn scopes(mut self, scopes: &[&str]) -> Self {
        self.scopes = scopes.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Inputs described by `T` (its `schemars` schema).
    pub fn input<T: schemars::JsonSchema>(mut self) -> Self {
        self.input_schema = schema_of::<T>();
        self
    }

    /// Output described by `T`.
    pub fn output<T: schemars::JsonSchema>(mut self) -> Self {
        self.output_schema = schema_of::<T>();
        self
    }

    /// Inputs described by a schema written out by hand (or imported).
    pub fn input_schema_value(mut self, schema: Value) -> Self {
        self.input_schema = schema;
        self
    }

    /// Output described by a schema written out by hand (or imported).
    pub fn output_schema_value(mut self, schema: Value) -> Self {
        self.output_schema = schema;
        self
    }

    /// Repeating it is harmless (e.g. a `PUT` of a whole value, a transition).
    pub fn idempotent(mut self) -> Self {
        self.idempotency = Idempotency::Natural;
        self
    }

    /// The provider deduplicates by a key sent in `header`.
    pub fn idempotency_key(mut self, header: &str) -> Self {
        self.idempotency = Idempotency::Key {
            header: header.to_owned(),
        };
        self
    }

    /// Inputs holding secrets.
    pub fn secret_fields(mut self, fields: &[&str]) -> Self {
        self.secret_fields = fields.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Pages with `style`, returning `default_limit` items unless asked, at most `max_limit`.
    pub fn paginated(mut self, style: &str, default_limit: u32, max_limit: u32) -> Self {
        self.pagination = Some(Pagination {
            style: style.to_owned(),
            default_limit,
            max_limit,
        });
        self
    }
}

/// The JSON Schema of `T`, as a JSON value.
pub fn schema_of<T: schemars::JsonSchema>() -> Value {
    let schema = schemars::SchemaGenerator::default().into_root_schema_for::<T>();
    serde_json::to_value(schema).unwrap_or_else(|_| serde_json::json!({}))
}

/// Everything Switchyard knows about one connector.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Manifest {
    /// Name used in `connector.action`, e.g. `slack`.
    pub name: String,
    /// Display name.
    pub title: String,
    /// What it is for.
    pub category: Category,
    /// The provider's API reference, for people.
    pub docs_url: String,
    /// Auth types a connection may use.
    pub auth: Vec<AuthType>,
    /// Whether steps must name a connection (false only for connectors that need no account).
    pub requires_connection: bool,
    /// Base URL used unless a connection overrides it (tests, self-hosted editions).
    pub default_base_url: String,
    /// Request budget per connection unless the connection sets its own; `None` for no
    /// budget (the generic HTTP action, whose target is unknown).
    pub rate_limit: Option<RateLimit>,
    /// The actions.
    pub actions: Vec<ActionManifest>,
}

impl Manifest {
    /// A connector with no actions yet, requiring a connection, with no rate limit.
    pub fn new(name: &str, title: &str, category: Category) -> Self {
        Manifest {
            name: name.to_owned(),
            title: title.to_owned(),
            category,
            docs_url: String::new(),
            auth: Vec::new(),
            requires_connection: true,
            default_base_url: String::new(),
            rate_limit: None,
            actions: Vec::new(),
        }
    }

    /// The auth types accepted.
    pub fn auth(mut self, auth: &[AuthType]) -> Self {
        self.auth = auth.to_vec();
        self
    }

    /// The default base URL.
    pub fn base_url(mut self, url: &str) -> Self {
        self.default_base_url = url.to_owned();
        self
    }

    /// The provider's API reference.
    pub fn docs(mut self, url: &str) -> Self {
        self.docs_url = url.to_owned();
        self
    }

    /// The default per-connection budget.
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// Steps may run without a connection.
    pub fn connection_optional(mut self) -> Self {
        self.requires_connection = false;
        self
    }

    /// Adds an action.
    pub fn action(mut self, action: ActionManifest) -> Self {
        self.actions.push(action);
        self
    }

    /// The action called `name`, if this connector has it.
    pub fn find_action(&self, name: &str) -> Option<&ActionManifest> {
        self.actions.iter().find(|a| a.name == name)
    }

    /// Whether a connection may use `auth_type` (`api_key`, `oauth2_code`, …).
    pub fn accepts_auth(&self, auth_type: &str) -> bool {
        self.auth.iter().any(|a| a.as_str() == auth_type)
    }
}
