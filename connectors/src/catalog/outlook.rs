//! Outlook mail, through Microsoft Graph v1.0 (<https://learn.microsoft.com/graph/api/resources/mail-api-overview>).
//!
//! Calls go to `https://graph.microsoft.com/v1.0/me/…` with a delegated user token as
//! `Authorization: Bearer`. `sendMail` answers `202 Accepted` with no body (the message has no
//! id until it lands in Sent Items). Listing pages by the `@odata.nextLink` URL Graph returns,
//! followed only on the connection's own host. Failures, throttling (`429` with
//! `Retry-After`; Outlook's `ApplicationThrottled` and `MailboxConcurrency`) and the health
//! call are shared with Teams in [`super::graph`]. Outlook allows 10,000 requests per 10
//! minutes and 4 concurrent requests per app and mailbox.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::graph::{self, GraphQuirks, VERSION};
use super::mail::{Mailbox, Recipients, mailboxes};
use crate::error::ActionError;
use crate::http::Quirks;
use crate::manifest::{ActionManifest, AuthType, Category, Manifest, RateLimit};
use crate::sdk::{Call, Connector, Listing, collect_pages, output, page_limit, parse_input};

/// The Outlook connector.
#[derive(Debug)]
pub struct Outlook(Manifest);

impl Default for Outlook {
    fn default() -> Self {
        Self::new()
    }
}

impl Outlook {
    /// Its manifest.
    pub fn new() -> Self {
        Outlook(
            Manifest::new("outlook", "Outlook mail", Category::Communication)
                .auth(&[AuthType::OAuth2Code, AuthType::Bearer])
                .base_url(graph::GRAPH_BASE_URL)
                .docs("https://learn.microsoft.com/graph/api/resources/message")
                .rate_limit(RateLimit {
                    requests: 10_000,
                    per_seconds: 600,
                    burst: 4,
                })
                .action(
                    ActionManifest::write("send", "Send an email")
                        .scopes(&["Mail.Send"])
                        .input::<Send>()
                        .output::<Sent>(),
                )
                .action(
                    ActionManifest::read("list_messages", "List messages in the mailbox")
                        .scopes(&["Mail.Read"])
                        .paginated("link", 50, 1000)
                        .input::<ListMessages>()
                        .output::<Listing>(),
                ),
        )
    }
}

/// `send` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Send {
    /// Recipient(s): `ada@example.com` or `Ada Lovelace <ada@example.com>`, one or a list.
    pub to: Option<Recipients>,
    /// Copy recipient(s).
    pub cc: Option<Recipients>,
    /// Blind-copy recipient(s).
    pub bcc: Option<Recipients>,
    /// Where replies go.
    pub reply_to: Option<Recipients>,
    /// Subject line.
    pub subject: String,
    /// Plain-text body; give `text` or `html`.
    pub text: Option<String>,
    /// HTML body.
    pub html: Option<String>,
    /// Keep a copy in Sent Items (default true).
    pub save_to_sent_items: Option<bool>,
}

/// The outcome of `send`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Sent {
    /// Graph accepted the message for delivery (always `true` on success).
    pub accepted: bool,
}

/// `list_messages` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListMessages {
    /// A mail folder id or well-known name (`inbox`, `sentitems`); all folders when absent.
    pub folder: Option<String>,
    /// OData `$filter`, e.g. `isRead eq false`.
    pub filter: Option<String>,
    /// Properties to return (`$select`), e.g. `["subject", "from", "receivedDateTime"]`.
    pub select: Option<Vec<String>>,
    /// OData `$orderby`, e.g. `receivedDateTime desc`.
    pub order_by: Option<String>,
    /// Messages wanted in all (default 50, at most 1000).
    pub limit: Option<u32>,
    /// `next_cursor` of an earlier call.
    pub cursor: Option<String>,
}

#[async_trait::async_trait]
impl Connector for Outlook {
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
            "send" => send(call, parse_input(input)?).await,
            "list_messages" => list_messages(call, parse_input(input)?).await,
            _ => Err(call.unknown_action(action)),
        }
    }

    async fn health(&self, call: &Call<'_>) -> Result<(), ActionError> {
        graph::health(call).await
    }
}

/// Graph `recipient` objects.
fn recipients(list: &[Mailbox]) -> Value {
    list.iter()
        .map(|m| {
            let mut address = json!({ "address": m.address });
            if let Some(name) = &m.name {
                address["name"] = Value::String(name.clone());
            }
            json!({ "emailAddress": address })
        })
        .collect()
}

async fn send(call: &Call<'_>, input: Send) -> Result<Value, ActionError> {
    let to = mailboxes(&input.to, "to")?;
    let cc = mailboxes(&input.cc, "cc")?;
    let bcc = mailboxes(&input.bcc, "bcc")?;
    if to.is_empty() && cc.is_empty() && bcc.is_empty() {
        return Err(ActionError::invalid_input(
            "to",
            "give at least one recipient in `to`, `cc` or `bcc`",
        ));
    }
    let mut message = json!({
        "subject": input.subject,
        "body": graph::item_body(input.text, input.html)?,
        "toRecipients": recipients(&to),
    });
    if !cc.is_empty() {
        message["ccRecipients"] = recipients(&cc);
    }
    if !bcc.is_empty() {
        message["bccRecipients"] = recipients(&bcc);
    }
    let reply_to = mailboxes(&input.reply_to, "reply_to")?;
    if !reply_to.is_empty() {
        message["replyTo"] = recipients(&reply_to);
    }
    let body = json!({
        "message": message,
        "saveToSentItems": input.save_to_sent_items.unwrap_or(true),
    });
    // `202 Accepted` with no body: the message has no id until it is in Sent Items.
    call.send(call.post(&[VERSION, "me", "sendMail"]).json(&body))
        .await?;
    output(&Sent { accepted: true })
}

async fn list_messages(call: &Call<'_>, input: ListMessages) -> Result<Value, ActionError> {
    let pagination = call
        .manifest
        .find_action("list_messages")
        .and_then(|a| a.pagination.clone())
        .ok_or_else(|| {
            ActionError::new(
                schemas::envelope::ErrorCode::Internal,
                "list_messages pages",
            )
        })?;
    let limit = page_limit(input.limit, &pagination)?;
    let listing = collect_pages(limit, input.cursor, |cursor, wanted| {
        let request = match cursor {
            // The link carries the query (and a `$skip` or `$skiptoken`) Graph chose.
            Some(link) => call
                .same_origin(&link)
                .map(|url| call.request_url(reqwest::Method::GET, url)),
            None => {
                let mut segments = vec![VERSION, "me"];
                if let Some(folder) = &input.folder {
                    segments.extend(["mailFolders", folder.as_str()]);
                }
                segments.push("messages");
                // Graph returns at most 1000 messages per page.
                let mut query = vec![("$top", wanted.min(1000).to_string())];
                if let Some(select) = &input.select {
                    query.push(("$select", select.join(",")));
                }
                if let Some(filter) = &input.filter {
                    query.push(("$filter", filter.clone()));
                }
                if let Some(order) = &input.order_by {
                    query.push(("$orderby", order.clone()));
                }
                Ok(call.get(&segments).query(&query))
            }
        };
        async move { Ok(graph::page(&call.send_json(request?).await?)) }
    })
    .await?;
    output(&listing)
}
