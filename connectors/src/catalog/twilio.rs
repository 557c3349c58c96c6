//! Twilio SMS, through the Programmable Messaging REST API
//! (<https://www.twilio.com/docs/messaging/api/message-resource>).
//!
//! Requests go to `https://api.twilio.com/2010-04-01/Accounts/{AccountSid}/…` with HTTP basic
//! authentication: the Account SID and auth token, or an API key's SID (`SK…`) and secret.
//! The Account SID in the path is the basic username when it is one (`AC…`); with an API key
//! it is the `account_sid` input. Bodies are form-encoded (`To`, `From`, `Body`…), answers
//! JSON. Failures are the status with `{"code": 21211, "message", "more_info", "status"}`;
//! [`TwilioQuirks`] classifies by `code` where the status says too little. Rate limits are
//! `429` with code `20429`.

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use schemars::JsonSchema;
use schemas::envelope::ErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::credential::Credential;
use crate::error::ActionError;
use crate::http::{Quirks, Verdict, ratelimit};
use crate::manifest::{ActionManifest, AuthType, Category, Manifest, RateLimit};
use crate::sdk::{Call, Connector, output, parse_input};

const API_VERSION: &str = "2010-04-01";

/// The Twilio connector.
#[derive(Debug)]
pub struct Twilio(Manifest);

impl Default for Twilio {
    fn default() -> Self {
        Self::new()
    }
}

impl Twilio {
    /// Its manifest.
    pub fn new() -> Self {
        Twilio(
            Manifest::new("twilio", "Twilio SMS", Category::Communication)
                .auth(&[AuthType::Basic])
                .base_url("https://api.twilio.com")
                .docs("https://www.twilio.com/docs/messaging/api/message-resource")
                // Twilio queues messages beyond a sender's throughput (one segment a second
                // on a US long code) and caps concurrent API requests per account.
                .rate_limit(RateLimit::per_second(10).with_burst(10))
                .action(
                    ActionManifest::write("send_sms", "Send an SMS")
                        .input::<SendSms>()
                        .output::<SmsMessage>(),
                ),
        )
    }
}

/// `send_sms` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendSms {
    /// Recipient in E.164 format (`+15558675310`).
    pub to: String,
    /// A Twilio number or alphanumeric sender id; give `from` or `messaging_service_sid`.
    pub from: Option<String>,
    /// A Messaging Service (`MG…`) that picks the sender.
    pub messaging_service_sid: Option<String>,
    /// The text (up to 1600 characters).
    pub body: String,
    /// URL Twilio calls with delivery status updates.
    pub status_callback: Option<String>,
    /// The Account SID (`AC…`), when the connection authenticates with an API key.
    pub account_sid: Option<String>,
}

/// A created message.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SmsMessage {
    /// Message SID (`SM…` or `MM…`).
    pub sid: String,
    /// `accepted`, `queued`, `sending`, `sent`…
    pub status: Option<String>,
    /// Recipient.
    pub to: Option<String>,
    /// Sender (empty until a Messaging Service picks one).
    pub from: Option<String>,
    /// Segments billed.
    pub num_segments: Option<String>,
}

/// Twilio error codes that tell more than their status.
#[derive(Debug)]
pub struct TwilioQuirks;

impl Quirks for TwilioQuirks {
    fn judge(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Option<Verdict> {
        if status.is_success() {
            return None;
        }
        let body: Value = serde_json::from_slice(body).ok()?;
        match body["code"].as_u64()? {
            // Too many requests, whatever the status.
            20429 => Some(Verdict::new(
                ErrorCode::RateLimited,
                ratelimit::wait_hint(status, headers, std::time::SystemTime::now()),
            )),
            // The recipient replied STOP: the sender may not message them.
            21610 => Some(Verdict::new(ErrorCode::Forbidden, None)),
            _ => None,
        }
    }
}

#[async_trait::async_trait]
impl Connector for Twilio {
    fn manifest(&self) -> &Manifest {
        &self.0
    }

    fn quirks(&self) -> &dyn Quirks {
        &TwilioQuirks
    }

    async fn execute(
        &self,
        call: &Call<'_>,
        action: &str,
        input: Value,
    ) -> Result<Value, ActionError> {
        match action {
            "send_sms" => send_sms(call, parse_input(input)?).await,
            _ => Err(call.unknown_action(action)),
        }
    }

    /// Reads the account; with an API key (no Account SID in the credential), lists the
    /// accounts the key can see.
    async fn health(&self, call: &Call<'_>) -> Result<(), ActionError> {
        let request = match credential_account(call) {
            Some(sid) => call.get(&[API_VERSION, "Accounts", &format!("{sid}.json")]),
            None => call
                .get(&[API_VERSION, "Accounts.json"])
                .query(&[("PageSize", "1")]),
        };
        call.send_json(request).await.map(drop)
    }
}

/// The basic credential's username, when it is an Account SID.
fn credential_account(call: &Call<'_>) -> Option<String> {
    match call.ctx.credential.as_deref() {
        Some(Credential::Basic { username, .. }) if username.starts_with("AC") => {
            Some(username.as_str().to_owned())
        }
        _ => None,
    }
}

fn account_sid(call: &Call<'_>, input: Option<String>) -> Result<String, ActionError> {
    let sid = match input {
        Some(sid) => sid,
        None => credential_account(call).ok_or_else(|| {
            ActionError::invalid_input(
                "account_sid",
                "is required when the connection's username is not an Account SID (`AC…`)",
            )
        })?,
    };
    if !(sid.starts_with("AC") && sid.len() == 34 && sid.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        return Err(ActionError::invalid_input(
            "account_sid",
            "must be an Account SID: `AC` and 32 letters or digits",
        ));
    }
    Ok(sid)
}

async fn send_sms(call: &Call<'_>, input: SendSms) -> Result<Value, ActionError> {
    let sid = account_sid(call, input.account_sid)?;
    let mut form = vec![("To", input.to)];
    match (input.from, input.messaging_service_sid) {
        (Some(from), None) => form.push(("From", from)),
        (None, Some(service)) => form.push(("MessagingServiceSid", service)),
        _ => {
            return Err(ActionError::invalid_input(
                "from",
                "give `from` or `messaging_service_sid`, exactly one",
            ));
        }
    }
    form.push(("Body", input.body));
    if let Some(callback) = input.status_callback {
        form.push(("StatusCallback", callback));
    }
    let request = call
        .post(&[API_VERSION, "Accounts", &sid, "Messages.json"])
        .form(&form);
    let answer = call.send_json(request).await?;
    let field = |name: &str| answer[name].as_str().map(str::to_owned);
    output(&SmsMessage {
        sid: field("sid").ok_or_else(|| {
            ActionError::new(
                ErrorCode::UpstreamUnavailable,
                "Twilio's answer has no `sid`",
            )
        })?,
        status: field("status"),
        to: field("to"),
        from: field("from"),
        num_segments: field("num_segments"),
    })
}
