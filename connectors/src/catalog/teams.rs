//! Microsoft Teams, through Microsoft Graph v1.0 (<https://learn.microsoft.com/graph/api/channel-post-messages>)
//! and incoming webhooks.
//!
//! Graph calls go to `https://graph.microsoft.com/v1.0/…` with a delegated user token as
//! `Authorization: Bearer` (sending channel messages needs `ChannelMessage.Send`; Graph
//! allows application permissions for it only for migrations). Failures are the status
//! with `{"error": {"code", "message"}}`, throttling `429` with `Retry-After`; see
//! [`super::graph`].
//!
//! `post_webhook` posts to a channel's incoming webhook (a Teams Workflows "when a webhook
//! request is received" URL, or a legacy Office 365 connector URL). The URL is the webhook's
//! only credential, so it is a secret input of the step (`webhook_url`, usually
//! `{{ secrets.… }}`), never the connection's base URL: one Teams connection serves Graph and
//! any number of channels' webhooks, and the connection's token is never sent to the webhook
//! (a step that only posts to webhooks may name any Teams connection).
//! The message is an Adaptive Card in the message envelope both kinds of webhook accept
//! (<https://learn.microsoft.com/microsoftteams/platform/webhooks-and-connectors/how-to/connectors-using#send-adaptive-cards-using-an-incoming-webhook>).

use reqwest::{Method, Url};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::graph::{self, GraphQuirks, VERSION};
use crate::error::ActionError;
use crate::http::Quirks;
use crate::manifest::{ActionManifest, AuthType, Category, Manifest, RateLimit};
use crate::sdk::{Call, Connector, output, parse_input};

/// The Teams connector.
#[derive(Debug)]
pub struct Teams(Manifest);

impl Default for Teams {
    fn default() -> Self {
        Self::new()
    }
}

impl Teams {
    /// Its manifest.
    pub fn new() -> Self {
        Teams(
            Manifest::new("teams", "Microsoft Teams", Category::Communication)
                .auth(&[AuthType::OAuth2Code, AuthType::Bearer])
                .base_url(graph::GRAPH_BASE_URL)
                .docs("https://learn.microsoft.com/graph/api/resources/chatmessage")
                // Graph limits sending channel messages to about 10 every 10 seconds.
                .rate_limit(RateLimit {
                    requests: 10,
                    per_seconds: 10,
                    burst: 5,
                })
                .action(
                    ActionManifest::write("post_channel_message", "Post a message to a channel")
                        .scopes(&["ChannelMessage.Send"])
                        .input::<PostChannelMessage>()
                        .output::<ChannelMessage>(),
                )
                .action(
                    ActionManifest::write("reply_to_message", "Reply to a channel message")
                        .scopes(&["ChannelMessage.Send"])
                        .input::<ReplyToMessage>()
                        .output::<ChannelMessage>(),
                )
                .action(
                    ActionManifest::write(
                        "post_webhook",
                        "Post a card to a channel's incoming webhook",
                    )
                    .secret_fields(&["webhook_url"])
                    .input::<PostWebhook>()
                    .output::<WebhookDelivery>(),
                ),
        )
    }
}

/// `post_channel_message` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostChannelMessage {
    /// The team's id (a GUID, the group id of the team).
    pub team_id: String,
    /// The channel's id (`19:…@thread.tacv2`).
    pub channel_id: String,
    /// The message as plain text; give `text` or `html`.
    pub text: Option<String>,
    /// The message as HTML.
    pub html: Option<String>,
    /// Subject line shown above the message.
    pub subject: Option<String>,
}

/// `reply_to_message` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplyToMessage {
    /// The team's id.
    pub team_id: String,
    /// The channel's id.
    pub channel_id: String,
    /// The id of the message replied to (the thread's first message).
    pub message_id: String,
    /// The reply as plain text; give `text` or `html`.
    pub text: Option<String>,
    /// The reply as HTML.
    pub html: Option<String>,
}

/// A posted message.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ChannelMessage {
    /// The message id.
    pub id: String,
    /// The id of the message it replies to, for a reply.
    pub reply_to_id: Option<String>,
    /// Link to the message in Teams.
    pub web_url: Option<String>,
    /// When it was created (ISO 8601).
    pub created_date_time: Option<String>,
}

/// `post_webhook` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostWebhook {
    /// The channel's incoming webhook URL (secret: anyone holding it can post).
    pub webhook_url: String,
    /// Text of a simple card; give `text` or `card`.
    pub text: Option<String>,
    /// Bold title above `text`.
    pub title: Option<String>,
    /// A whole Adaptive Card (`{"type": "AdaptiveCard", "version": "1.4", "body": […]}`).
    pub card: Option<Value>,
}

/// A webhook's answer.
#[derive(Debug, Serialize, JsonSchema)]
pub struct WebhookDelivery {
    /// The HTTP status (`200` from connector webhooks, `202` from Workflows webhooks).
    pub status: u16,
}

#[async_trait::async_trait]
impl Connector for Teams {
    fn manifest(&self) -> &Manifest {
        &self.0
    }

    fn quirks(&self) -> &dyn Quirks {
        &GraphQuirks
    }

    async fn execute(
        &self,
        call: &Call<'_>,
        action: &str,
        input: Value,
    ) -> Result<Value, ActionError> {
        match action {
            "post_channel_message" => post_channel_message(call, parse_input(input)?).await,
            "reply_to_message" => reply_to_message(call, parse_input(input)?).await,
            "post_webhook" => post_webhook(call, parse_input(input)?).await,
            _ => Err(call.unknown_action(action)),
        }
    }

    async fn health(&self, call: &Call<'_>) -> Result<(), ActionError> {
        graph::health(call).await
    }
}

fn message_ref(answer: &Value) -> Result<Value, ActionError> {
    output(&ChannelMessage {
        id: graph::text(answer, "id")?,
        reply_to_id: answer["replyToId"].as_str().map(str::to_owned),
        web_url: answer["webUrl"].as_str().map(str::to_owned),
        created_date_time: answer["createdDateTime"].as_str().map(str::to_owned),
    })
}

async fn post_channel_message(
    call: &Call<'_>,
    input: PostChannelMessage,
) -> Result<Value, ActionError> {
    let mut body = json!({ "body": graph::item_body(input.text, input.html)? });
    if let Some(subject) = input.subject {
        body["subject"] = Value::String(subject);
    }
    let request = call
        .post(&[
            VERSION,
            "teams",
            &input.team_id,
            "channels",
            &input.channel_id,
            "messages",
        ])
        .json(&body);
    message_ref(&call.send_json(request).await?)
}

async fn reply_to_message(call: &Call<'_>, input: ReplyToMessage) -> Result<Value, ActionError> {
    let body = json!({ "body": graph::item_body(input.text, input.html)? });
    let request = call
        .post(&[
            VERSION,
            "teams",
            &input.team_id,
            "channels",
            &input.channel_id,
            "messages",
            &input.message_id,
            "replies",
        ])
        .json(&body);
    message_ref(&call.send_json(request).await?)
}

async fn post_webhook(call: &Call<'_>, input: PostWebhook) -> Result<Value, ActionError> {
    // The URL is not quoted in any message: it is the webhook's credential.
    let url = Url::parse(input.webhook_url.trim())
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
        .ok_or_else(|| ActionError::invalid_input("webhook_url", "not an absolute http(s) URL"))?;
    let card = match (input.card, input.text) {
        (Some(card), None) if input.title.is_none() => {
            if card["type"] != "AdaptiveCard" {
                return Err(ActionError::invalid_input(
                    "card",
                    "must be an Adaptive Card object (`\"type\": \"AdaptiveCard\"`)",
                ));
            }
            card
        }
        (None, Some(text)) => {
            let mut blocks = Vec::new();
            if let Some(title) = input.title {
                blocks.push(json!({
                    "type": "TextBlock", "text": title, "weight": "Bolder", "size": "Medium", "wrap": true
                }));
            }
            blocks.push(json!({ "type": "TextBlock", "text": text, "wrap": true }));
            json!({
                "type": "AdaptiveCard",
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "version": "1.4",
                "body": blocks,
            })
        }
        _ => {
            return Err(ActionError::invalid_input(
                "text",
                "give `text` (with an optional `title`) or a whole `card`, not both",
            ));
        }
    };
    let envelope = json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": card,
        }],
    });
    // The connection's Graph token stays home: the webhook URL carries its own authorization.
    let response = call
        .send(
            call.request_unauthenticated(Method::POST, url)
                .json(&envelope),
        )
        .await
        .map_err(|e| about_the_webhook(call, e))?;
    output(&WebhookDelivery {
        status: response.status.as_u16(),
    })
}

/// An error of the webhook call names the webhook, not the connection's Graph host (which
/// [`Call::send`] names, since the webhook's own URL is a secret).
fn about_the_webhook(call: &Call<'_>, mut e: ActionError) -> ActionError {
    let base = call.base();
    let host = match base.port() {
        Some(port) => format!("{}:{port}", base.host_str().unwrap_or_default()),
        None => base.host_str().unwrap_or_default().to_owned(),
    };
    if let Some(rest) = e.message.strip_prefix(host.as_str()) {
        e.message = format!("the incoming webhook{rest}");
    }
    e
}
