//! Gmail, through the Gmail API v1 (<https://developers.google.com/gmail/api/reference/rest>).
//!
//! Every call is `https://gmail.googleapis.com/gmail/v1/users/me/…` with an OAuth access token
//! (a person's, or a service account's acting for a user by domain-wide delegation) as
//! `Authorization: Bearer`. Mail is sent as a whole RFC 2822 message, base64url-encoded in
//! `{"raw": …}`: [`mime_message`] builds it from the step's inputs, with non-ASCII header
//! text as RFC 2047 encoded words and bodies as base64 parts.
//!
//! Failures are Google's `{"error": {"code", "message", "status", "errors": [{"reason"}]}}`.
//! Rate limits come as `429`, or as `403` with reason `rateLimitExceeded` or
//! `userRateLimitExceeded` (<https://developers.google.com/gmail/api/guides/handle-errors>),
//! which [`GoogleQuirks`] classifies as `rate_limited`. Lists page with `nextPageToken`.

use std::time::SystemTime;

use base64::Engine as _;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use schemars::JsonSchema;
use schemas::envelope::ErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::mail::{Mailbox, Recipients, mailboxes};
use crate::error::ActionError;
use crate::http::{Quirks, Verdict, ratelimit};
use crate::manifest::{ActionManifest, AuthType, Category, Manifest, RateLimit};
use crate::sdk::{Call, Connector, Listing, Page, collect_pages, output, page_limit, parse_input};

const SEND: &str = "https://www.googleapis.com/auth/gmail.send";
const READONLY: &str = "https://www.googleapis.com/auth/gmail.readonly";
const MODIFY: &str = "https://www.googleapis.com/auth/gmail.modify";

/// The Gmail connector.
#[derive(Debug)]
pub struct Gmail(Manifest);

impl Default for Gmail {
    fn default() -> Self {
        Self::new()
    }
}

impl Gmail {
    /// Its manifest.
    pub fn new() -> Self {
        Gmail(
            Manifest::new("gmail", "Gmail", Category::Communication)
                .auth(&[AuthType::OAuth2Code, AuthType::ServiceAccount])
                .base_url("https://gmail.googleapis.com")
                .docs("https://developers.google.com/gmail/api/reference/rest")
                // 250 quota units per user per second; a read costs 5 units, a send 100.
                .rate_limit(RateLimit::per_second(10).with_burst(10))
                .action(
                    ActionManifest::write("send", "Send an email")
                        .scopes(&[SEND])
                        .input::<Send>()
                        .output::<SentMessage>(),
                )
                .action(
                    ActionManifest::read("list_messages", "List messages matching a query")
                        .scopes(&[READONLY])
                        .paginated("page_token", 100, 1000)
                        .input::<ListMessages>()
                        .output::<Listing>(),
                )
                .action(
                    ActionManifest::read("get_message", "Read a message")
                        .scopes(&[READONLY])
                        .input::<GetMessage>()
                        .output::<Message>(),
                )
                .action(
                    ActionManifest::write("add_label", "Add labels to a message")
                        .scopes(&[MODIFY])
                        .idempotent()
                        .input::<AddLabel>()
                        .output::<Labelled>(),
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
    /// Blind-copy recipient(s) (Gmail delivers to them and drops the header).
    pub bcc: Option<Recipients>,
    /// Sender, for a send-as alias of the account; the account's own address when absent.
    pub from: Option<String>,
    /// Where replies go.
    pub reply_to: Option<String>,
    /// Subject line (any language; encoded as RFC 2047 when not ASCII).
    pub subject: String,
    /// Plain-text body; give `text`, `html` or both (sent as `multipart/alternative`).
    pub text: Option<String>,
    /// HTML body.
    pub html: Option<String>,
    /// Gmail thread to add the message to (its `threadId`); the subject must match the thread's.
    pub thread_id: Option<String>,
    /// `Message-ID` header of the message replied to (sets `In-Reply-To` and `References`).
    pub in_reply_to: Option<String>,
}

/// A sent message.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SentMessage {
    /// Message id.
    pub id: String,
    /// Thread id.
    pub thread_id: Option<String>,
    /// Labels Gmail put on it (`SENT`).
    pub label_ids: Vec<String>,
}

/// `list_messages` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListMessages {
    /// Gmail search query, as in the search box (`from:ada is:unread newer_than:2d`).
    pub q: Option<String>,
    /// Only messages with all these label ids (`INBOX`, `UNREAD`, `Label_12`).
    pub label_ids: Option<Vec<String>>,
    /// Include messages in Spam and Trash.
    pub include_spam_trash: Option<bool>,
    /// Messages wanted in all (default 100, at most 1000).
    pub limit: Option<u32>,
    /// `next_cursor` of an earlier call.
    pub cursor: Option<String>,
}

/// Which parts of a message `get_message` returns.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Headers and decoded bodies.
    #[default]
    Full,
    /// Headers only.
    Metadata,
}

/// `get_message` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetMessage {
    /// Message id.
    pub id: String,
    /// `full` (default) or `metadata`.
    #[serde(default)]
    pub format: Format,
    /// With `metadata`: only these headers (`Subject`, `From`…).
    pub metadata_headers: Option<Vec<String>>,
}

/// A message.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Message {
    /// Message id.
    pub id: String,
    /// Thread id.
    pub thread_id: Option<String>,
    /// Label ids.
    pub label_ids: Vec<String>,
    /// The short preview Gmail shows.
    pub snippet: Option<String>,
    /// `Subject` header.
    pub subject: Option<String>,
    /// `From` header.
    pub from: Option<String>,
    /// `To` header.
    pub to: Option<String>,
    /// `Date` header.
    pub date: Option<String>,
    /// The first `text/plain` part, decoded (`full` only).
    pub text: Option<String>,
    /// The first `text/html` part, decoded (`full` only).
    pub html: Option<String>,
    /// The message as Gmail sent it.
    pub raw: Value,
}

/// `add_label` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddLabel {
    /// Message id.
    pub id: String,
    /// Label ids to add (`STARRED`, `IMPORTANT`, `Label_12`…).
    pub label_ids: Vec<String>,
    /// Label ids to remove at the same time (`UNREAD`, `INBOX` to archive).
    pub remove_label_ids: Option<Vec<String>>,
}

/// A message's labels after a change.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Labelled {
    /// Message id.
    pub id: String,
    /// Its label ids now.
    pub label_ids: Vec<String>,
}

/// Google's `403` rate limits, told apart by `errors[].reason`.
#[derive(Debug)]
pub struct GoogleQuirks;

impl Quirks for GoogleQuirks {
    fn judge(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Option<Verdict> {
        if status != StatusCode::FORBIDDEN {
            return None;
        }
        let body: Value = serde_json::from_slice(body).ok()?;
        let limited = body["error"]["errors"].as_array()?.iter().any(|e| {
            matches!(
                e["reason"].as_str(),
                Some("rateLimitExceeded" | "userRateLimitExceeded")
            )
        });
        limited.then(|| {
            Verdict::new(
                ErrorCode::RateLimited,
                ratelimit::wait_hint(status, headers, SystemTime::now()),
            )
        })
    }
}

#[async_trait::async_trait]
impl Connector for Gmail {
    fn manifest(&self) -> &Manifest {
        &self.0
    }

    fn quirks(&self) -> &dyn Quirks {
        &GoogleQuirks
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
            "get_message" => get_message(call, parse_input(input)?).await,
            "add_label" => add_label(call, parse_input(input)?).await,
            _ => Err(call.unknown_action(action)),
        }
    }

    async fn health(&self, call: &Call<'_>) -> Result<(), ActionError> {
        call.send(call.get(&["gmail", "v1", "users", "me", "profile"]))
            .await
            .map(drop)
    }
}

fn messages<'a>(rest: &[&'a str]) -> Vec<&'a str> {
    let mut segments = vec!["gmail", "v1", "users", "me", "messages"];
    segments.extend_from_slice(rest);
    segments
}

fn text(value: &Value, field: &str) -> Result<String, ActionError> {
    value[field].as_str().map(str::to_owned).ok_or_else(|| {
        ActionError::new(
            ErrorCode::UpstreamUnavailable,
            format!("Gmail's answer has no `{field}`"),
        )
    })
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

async fn send(call: &Call<'_>, input: Send) -> Result<Value, ActionError> {
    let message = mime_message(&input)?;
    let raw = base64::engine::general_purpose::URL_SAFE.encode(message);
    let mut body = json!({ "raw": raw });
    if let Some(thread) = input.thread_id {
        body["threadId"] = Value::String(thread);
    }
    let answer = call
        .send_json(call.post(&messages(&["send"])).json(&body))
        .await?;
    output(&SentMessage {
        id: text(&answer, "id")?,
        thread_id: answer["threadId"].as_str().map(str::to_owned),
        label_ids: strings(&answer["labelIds"]),
    })
}

/// The RFC 2822 message for `input`, lines ending in CRLF.
///
/// Header text that is not printable ASCII goes in RFC 2047 `B` encoded words; bodies are
/// base64 (any character set, no line-length limit to respect). With both bodies the message
/// is `multipart/alternative`, plain text first as RFC 2046 asks. Its boundary holds `=_`,
/// which base64 never produces, so no body can contain it.
pub fn mime_message(input: &Send) -> Result<String, ActionError> {
    let to = mailboxes(&input.to, "to")?;
    let cc = mailboxes(&input.cc, "cc")?;
    let bcc = mailboxes(&input.bcc, "bcc")?;
    if to.is_empty() && cc.is_empty() && bcc.is_empty() {
        return Err(ActionError::invalid_input(
            "to",
            "give at least one recipient in `to`, `cc` or `bcc`",
        ));
    }
    let mut head = String::new();
    if let Some(from) = &input.from {
        header(
            &mut head,
            "From",
            &address_list(&[Mailbox::parse(from, "from")?]),
        );
    }
    for (name, list) in [("To", &to), ("Cc", &cc), ("Bcc", &bcc)] {
        if !list.is_empty() {
            header(&mut head, name, &address_list(list));
        }
    }
    if let Some(reply_to) = &input.reply_to {
        header(
            &mut head,
            "Reply-To",
            &address_list(&[Mailbox::parse(reply_to, "reply_to")?]),
        );
    }
    if let Some(id) = &input.in_reply_to {
        let id = id.trim();
        if id.is_empty() || id.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(ActionError::invalid_input(
                "in_reply_to",
                "must be one Message-ID, such as `<abc@mail.example.com>`",
            ));
        }
        header(&mut head, "In-Reply-To", id);
        header(&mut head, "References", id);
    }
    if input.subject.chars().any(|c| c == '\r' || c == '\n') {
        return Err(ActionError::invalid_input(
            "subject",
            "cannot hold line breaks",
        ));
    }
    header(&mut head, "Subject", &encode_words(&input.subject));
    header(&mut head, "MIME-Version", "1.0");
    let part = |subtype: &str, content: &str| {
        format!(
            "Content-Type: text/{subtype}; charset=\"UTF-8\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
            base64_lines(content.as_bytes())
        )
    };
    let body = match (&input.text, &input.html) {
        (Some(text), None) => part("plain", text),
        (None, Some(html)) => part("html", html),
        (Some(text), Some(html)) => {
            let boundary = "=_switchyard_alternative";
            format!(
                "Content-Type: multipart/alternative; boundary=\"{boundary}\"\r\n\r\n\
                 --{boundary}\r\n{}--{boundary}\r\n{}--{boundary}--\r\n",
                part("plain", text),
                part("html", html)
            )
        }
        (None, None) => {
            return Err(ActionError::invalid_input(
                "text",
                "give `text`, `html` or both",
            ));
        }
    };
    Ok(head + &body)
}

fn header(head: &mut String, name: &str, value: &str) {
    head.push_str(name);
    head.push_str(": ");
    head.push_str(value);
    head.push_str("\r\n");
}

/// Addresses for a header, folded one per line after the first.
fn address_list(list: &[Mailbox]) -> String {
    list.iter()
        .map(|m| match &m.name {
            None => m.address.clone(),
            Some(name) if is_plain(name) => {
                let quoted = name.replace('\\', "\\\\").replace('"', "\\\"");
                format!("\"{quoted}\" <{}>", m.address)
            }
            Some(name) => format!("{} <{}>", encode_words(name), m.address),
        })
        .collect::<Vec<_>>()
        .join(",\r\n ")
}

fn is_plain(text: &str) -> bool {
    text.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// `text` as is when it is printable ASCII, else as RFC 2047 `B` encoded words of at most 75
/// characters each (45 bytes of UTF-8, never split inside a character), folded onto
/// continuation lines.
fn encode_words(text: &str) -> String {
    if is_plain(text) {
        return text.to_owned();
    }
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in text.chars() {
        if chunk.len() + c.len_utf8() > 45 {
            words.push(std::mem::take(&mut chunk));
        }
        chunk.push(c);
    }
    words.push(chunk);
    words
        .iter()
        .map(|w| {
            format!(
                "=?UTF-8?B?{}?=",
                base64::engine::general_purpose::STANDARD.encode(w)
            )
        })
        .collect::<Vec<_>>()
        .join("\r\n ")
}

/// Base64 in lines of 76 characters, each ending in CRLF (RFC 2045).
fn base64_lines(bytes: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = String::with_capacity(encoded.len() + encoded.len() / 38 + 2);
    for line in encoded.as_bytes().chunks(76) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push_str("\r\n");
    }
    out
}

async fn list_messages(call: &Call<'_>, input: ListMessages) -> Result<Value, ActionError> {
    let pagination = call
        .manifest
        .find_action("list_messages")
        .and_then(|a| a.pagination.clone())
        .ok_or_else(|| ActionError::new(ErrorCode::Internal, "list_messages pages"))?;
    let limit = page_limit(input.limit, &pagination)?;
    let listing = collect_pages(limit, input.cursor, |cursor, wanted| {
        // Gmail returns at most 500 per page.
        let mut query = vec![("maxResults", wanted.min(500).to_string())];
        if let Some(q) = &input.q {
            query.push(("q", q.clone()));
        }
        for label in input.label_ids.iter().flatten() {
            query.push(("labelIds", label.clone()));
        }
        if let Some(include) = input.include_spam_trash {
            query.push(("includeSpamTrash", include.to_string()));
        }
        if let Some(cursor) = cursor {
            query.push(("pageToken", cursor));
        }
        async move {
            let page = call
                .send_json(call.get(&messages(&[])).query(&query))
                .await?;
            Ok(Page {
                items: page["messages"].as_array().cloned().unwrap_or_default(),
                next: page["nextPageToken"].as_str().map(str::to_owned),
            })
        }
    })
    .await?;
    output(&listing)
}

async fn get_message(call: &Call<'_>, input: GetMessage) -> Result<Value, ActionError> {
    let format = match input.format {
        Format::Full => "full",
        Format::Metadata => "metadata",
    };
    let mut query = vec![("format", format.to_owned())];
    for name in input.metadata_headers.iter().flatten() {
        query.push(("metadataHeaders", name.clone()));
    }
    let answer = call
        .send_json(call.get(&messages(&[&input.id])).query(&query))
        .await?;
    let header = |name: &str| {
        answer["payload"]["headers"]
            .as_array()
            .and_then(|headers| {
                headers.iter().find(|h| {
                    h["name"]
                        .as_str()
                        .is_some_and(|n| n.eq_ignore_ascii_case(name))
                })
            })
            .and_then(|h| h["value"].as_str())
            .map(str::to_owned)
    };
    output(&Message {
        id: text(&answer, "id")?,
        thread_id: answer["threadId"].as_str().map(str::to_owned),
        label_ids: strings(&answer["labelIds"]),
        snippet: answer["snippet"].as_str().map(str::to_owned),
        subject: header("Subject"),
        from: header("From"),
        to: header("To"),
        date: header("Date"),
        text: body_of(&answer["payload"], "text/plain"),
        html: body_of(&answer["payload"], "text/html"),
        raw: answer.clone(),
    })
}

/// The decoded data of the first part of `mime_type` in a message payload, depth first.
fn body_of(part: &Value, mime_type: &str) -> Option<String> {
    if part["mimeType"] == mime_type
        && let Some(data) = part["body"]["data"].as_str()
    {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(data.trim_end_matches('='))
            .ok()?;
        return Some(String::from_utf8_lossy(&bytes).into_owned());
    }
    part["parts"]
        .as_array()?
        .iter()
        .find_map(|p| body_of(p, mime_type))
}

async fn add_label(call: &Call<'_>, input: AddLabel) -> Result<Value, ActionError> {
    if input.label_ids.is_empty() {
        return Err(ActionError::invalid_input(
            "label_ids",
            "give at least one label id",
        ));
    }
    let mut body = json!({ "addLabelIds": input.label_ids });
    if let Some(remove) = input.remove_label_ids {
        body["removeLabelIds"] = json!(remove);
    }
    let answer = call
        .send_json(call.post(&messages(&[&input.id, "modify"])).json(&body))
        .await?;
    output(&Labelled {
        id: text(&answer, "id")?,
        label_ids: strings(&answer["labelIds"]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_non_ascii_subjects_become_folded_encoded_words() {
        let subject = "Ваш заказ отправлен — спасибо за покупку!";
        let encoded = encode_words(subject);
        let lines: Vec<&str> = encoded.split("\r\n ").collect();
        assert!(lines.len() > 1, "{encoded}");
        let mut decoded = Vec::new();
        for word in lines {
            assert!(word.len() <= 75, "{word}");
            let inner = word
                .strip_prefix("=?UTF-8?B?")
                .and_then(|w| w.strip_suffix("?="))
                .expect("an encoded word");
            decoded.extend(
                base64::engine::general_purpose::STANDARD
                    .decode(inner)
                    .expect("base64"),
            );
        }
        assert_eq!(String::from_utf8(decoded).expect("utf-8"), subject);
        assert_eq!(encode_words("Plain subject"), "Plain subject");
    }
}
