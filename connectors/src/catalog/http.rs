//! `http`: one HTTP call to any URL ([`crate::http::request`] documents its inputs and
//! output), with the step's connection applied when it names one.

use serde_json::Value;

use crate::error::ActionError;
use crate::manifest::{ActionManifest, AuthType, Category, Manifest};
use crate::sdk::{Call, Connector};

/// The generic HTTP connector.
#[derive(Debug)]
pub struct Http(Manifest);

impl Http {
    /// Its manifest: every auth type, no connection required, no budget (its target is
    /// whatever the step says).
    pub fn new() -> Self {
        Http(
            Manifest::new("http", "HTTP request", Category::Generic)
                .auth(&[
                    AuthType::None,
                    AuthType::ApiKey,
                    AuthType::Bearer,
                    AuthType::Basic,
                    AuthType::Headers,
                    AuthType::OAuth2Client,
                    AuthType::OAuth2Code,
                    AuthType::ServiceAccount,
                ])
                .connection_optional()
                .action(
                    ActionManifest::write(
                        "request",
                        "Send an HTTP request and return status, headers and body",
                    )
                    .idempotency_key("Idempotency-Key")
                    .input_schema_value(crate::http::request::input_schema())
                    .output_schema_value(crate::http::request::output_schema()),
                ),
        )
    }
}

impl Default for Http {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait::async_trait]
impl Connector for Http {
    fn manifest(&self) -> &Manifest {
        &self.0
    }

    async fn execute(
        &self,
        call: &Call<'_>,
        action: &str,
        input: Value,
    ) -> Result<Value, ActionError> {
        match action {
            "request" => crate::http::request::execute(call.ctx, &input).await,
            _ => Err(call.unknown_action(action)),
        }
    }

    /// Nothing to check without a target: the URL comes with each step.
    async fn health(&self, _call: &Call<'_>) -> Result<(), ActionError> {
        Ok(())
    }
}
