//! HubSpot, through the CRM v3 object APIs and the v4 associations API
//! (<https://developers.hubspot.com/docs/api/crm/understanding-the-crm>).
//!
//! Requests go to `https://api.hubapi.com/crm/v3/objects/{contacts|deals}…` with a private
//! app token or an OAuth access token as `Authorization: Bearer`. Failures are
//! `{"status": "error", "message", "correlationId", "category"}`; [`HubSpotQuirks`] classifies
//! them by `category` (`RATE_LIMITS`, `OBJECT_NOT_FOUND`, `VALIDATION_ERROR`,
//! `MISSING_SCOPES`, …) and by status otherwise.
//!
//! Rate limits: `429` with `category: RATE_LIMITS` (and `policyName`: `TEN_SECONDLY_ROLLING`,
//! `SECONDLY` or `DAILY`), and on every response the `X-HubSpot-RateLimit-*` headers:
//! `-Max` and `-Remaining` (requests allowed and left in the rolling window),
//! `-Interval-Milliseconds` (that window, 10 000 ms), `-Secondly` and `-Secondly-Remaining`,
//! `-Daily` and `-Daily-Remaining` (the account's daily allowance, private apps only). HubSpot
//! sends no `Retry-After`: the wait hint is one window when the window is spent, one second
//! when the per-second limit is, and none when the daily allowance is (it resets at midnight
//! in the account's time zone, which the response does not name). The search endpoints have
//! their own limit of five requests a second per account.
//!
//! Creating a contact whose email is already taken answers `409`; the error names the
//! existing contact's id (`identityProfile.vid` when HubSpot sends it, else the id its
//! message quotes) so a workflow can update that contact instead.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use schemars::JsonSchema;
use schemas::envelope::ErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::ActionError;
use crate::http::{Quirks, Verdict, ratelimit};
use crate::manifest::{ActionManifest, AuthType, Category, Manifest, RateLimit};
use crate::sdk::{
    Call, Connector, Listing, Page, collect_pages, json_body, output, page_limit, parse_input,
};

/// The HubSpot connector.
#[derive(Debug)]
pub struct HubSpot(Manifest);

impl Default for HubSpot {
    fn default() -> Self {
        Self::new()
    }
}

impl HubSpot {
    /// Its manifest.
    pub fn new() -> Self {
        let contacts_write = "crm.objects.contacts.write";
        let deals_write = "crm.objects.deals.write";
        HubSpot(
            Manifest::new("hubspot", "HubSpot", Category::Crm)
                .auth(&[AuthType::OAuth2Code, AuthType::Bearer])
                .base_url("https://api.hubapi.com")
                .docs("https://developers.hubspot.com/docs/api/crm/understanding-the-crm")
                // Private and public apps on Free and Starter accounts: 100 requests per
                // rolling ten seconds (Professional and Enterprise allow 190).
                .rate_limit(RateLimit {
                    requests: 100,
                    per_seconds: 10,
                    burst: 10,
                })
                .action(
                    ActionManifest::write("create_contact", "Create a contact")
                        .scopes(&[contacts_write])
                        .input::<CreateObject>()
                        .output::<CrmObject>(),
                )
                .action(
                    ActionManifest::write("update_contact", "Update a contact")
                        .scopes(&[contacts_write])
                        .idempotent()
                        .input::<UpdateObject>()
                        .output::<CrmObject>(),
                )
                .action(
                    ActionManifest::read("search_contacts", "Search contacts")
                        .scopes(&["crm.objects.contacts.read"])
                        // The search API returns at most 10,000 results per query.
                        .paginated("after", 100, 10_000)
                        .input::<SearchContacts>()
                        .output::<Listing>(),
                )
                .action(
                    ActionManifest::write("create_deal", "Create a deal")
                        .scopes(&[deals_write])
                        .input::<CreateObject>()
                        .output::<CrmObject>(),
                )
                .action(
                    ActionManifest::write("update_deal", "Update a deal")
                        .scopes(&[deals_write])
                        .idempotent()
                        .input::<UpdateObject>()
                        .output::<CrmObject>(),
                )
                .action(
                    ActionManifest::write(
                        "associate",
                        "Associate two records with their default association type",
                    )
                    // Write access to both object types; these cover contacts and deals.
                    .scopes(&[contacts_write, deals_write])
                    .idempotent()
                    .input::<Associate>()
                    .output::<Associated>(),
                ),
        )
    }
}

/// `create_contact` and `create_deal` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateObject {
    /// Property internal names and values, e.g. `{"email": "a@example.com", "firstname": "Ada"}`
    /// or `{"dealname": "Renewal", "amount": "1500", "dealstage": "appointmentscheduled"}`.
    pub properties: Map<String, Value>,
    /// Associations to create with it, as HubSpot takes them:
    /// `[{"to": {"id": "…"}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 3}]}]`.
    pub associations: Option<Vec<Value>>,
}

/// `update_contact` and `update_deal` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateObject {
    /// The record id.
    pub id: String,
    /// Properties to change; others keep their values. An empty string clears one.
    pub properties: Map<String, Value>,
}

/// A contact or deal.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CrmObject {
    /// The record id.
    pub id: String,
    /// Its properties as HubSpot returned them (values are strings).
    pub properties: Value,
    /// When it was created (ISO 8601).
    pub created_at: Option<String>,
    /// When it last changed (ISO 8601).
    pub updated_at: Option<String>,
}

/// `search_contacts` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchContacts {
    /// Filter groups, ORed; the filters within one are ANDed:
    /// `[{"filters": [{"propertyName": "email", "operator": "EQ", "value": "a@example.com"}]}]`.
    pub filter_groups: Option<Vec<Value>>,
    /// Sorts, e.g. `[{"propertyName": "createdate", "direction": "DESCENDING"}]`.
    pub sorts: Option<Vec<Value>>,
    /// Properties to return; HubSpot's defaults when left out.
    pub properties: Option<Vec<String>>,
    /// Text searched in the default searchable properties (name, email, phone, company).
    pub query: Option<String>,
    /// Contacts wanted in all (default 100, at most 10000).
    pub limit: Option<u32>,
    /// `next_cursor` of an earlier call.
    pub cursor: Option<String>,
}

/// `associate` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Associate {
    /// The first record's object type, e.g. `contacts`, `deals`, `companies`.
    pub from_type: String,
    /// The first record's id.
    pub from_id: String,
    /// The second record's object type.
    pub to_type: String,
    /// The second record's id.
    pub to_id: String,
}

/// The association made.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Associated {
    /// `COMPLETE` when HubSpot did it.
    pub status: Option<String>,
    /// HubSpot's results: `from`, `to` and each `associationSpec` (category and type id).
    pub results: Vec<Value>,
}

/// HubSpot's `{"status": "error", "category": …}` bodies and rate-limit headers.
#[derive(Debug)]
pub struct HubSpotQuirks;

impl Quirks for HubSpotQuirks {
    fn judge(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Option<Verdict> {
        // A `409` is `conflict` by status; writes read its body for the existing record's id.
        if status.is_success() || status == StatusCode::CONFLICT {
            return None;
        }
        let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let category = body["category"].as_str().unwrap_or_default();
        // Older endpoints (and some 429s) say `errorType: RATE_LIMIT` instead.
        if category == "RATE_LIMITS" || body["errorType"] == "RATE_LIMIT" {
            let policy = body["policyName"].as_str().unwrap_or_default();
            return Some(Verdict::new(
                ErrorCode::RateLimited,
                rate_limit_wait(status, headers, policy),
            ));
        }
        let code = match category {
            "INVALID_AUTHENTICATION" | "EXPIRED_AUTHENTICATION" => ErrorCode::Unauthorized,
            "MISSING_SCOPES" => ErrorCode::InsufficientScope,
            "OBJECT_NOT_FOUND" => ErrorCode::NotFound,
            "VALIDATION_ERROR" | "INVALID_PARAMS" => ErrorCode::InvalidInput,
            _ => return None,
        };
        Some(Verdict::new(code, None))
    }
}

/// How long a rate-limited request should wait, from HubSpot's headers and policy.
fn rate_limit_wait(status: StatusCode, headers: &HeaderMap, policy: &str) -> Option<Duration> {
    if let Some(wait) = ratelimit::wait_hint(status, headers, SystemTime::now()) {
        return Some(wait);
    }
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    if policy == "DAILY" || number("x-hubspot-ratelimit-daily-remaining") == Some(0) {
        return None;
    }
    if policy == "SECONDLY" || number("x-hubspot-ratelimit-secondly-remaining") == Some(0) {
        return Some(Duration::from_secs(1));
    }
    number("x-hubspot-ratelimit-interval-milliseconds")
        .map(|ms| Duration::from_millis(ms).min(ratelimit::MAX_WAIT))
}

#[async_trait::async_trait]
impl Connector for HubSpot {
    fn manifest(&self) -> &Manifest {
        &self.0
    }

    fn quirks(&self) -> &dyn Quirks {
        &HubSpotQuirks
    }

    async fn execute(
        &self,
        call: &Call<'_>,
        action: &str,
        input: Value,
    ) -> Result<Value, ActionError> {
        match action {
            "create_contact" => create(call, "contacts", parse_input(input)?).await,
            "update_contact" => update(call, "contacts", parse_input(input)?).await,
            "search_contacts" => search_contacts(call, parse_input(input)?).await,
            "create_deal" => create(call, "deals", parse_input(input)?).await,
            "update_deal" => update(call, "deals", parse_input(input)?).await,
            "associate" => associate(call, parse_input(input)?).await,
            _ => Err(call.unknown_action(action)),
        }
    }

    /// One contact: the cheapest call private app tokens and OAuth tokens both may make
    /// (the token-info endpoint knows OAuth tokens only).
    async fn health(&self, call: &Call<'_>) -> Result<(), ActionError> {
        call.send(
            call.get(&["crm", "v3", "objects", "contacts"])
                .query(&[("limit", "1")]),
        )
        .await
        .map(drop)
    }
}

fn crm_object(value: Value) -> Result<Value, ActionError> {
    let id = value["id"].as_str().map(str::to_owned).ok_or_else(|| {
        ActionError::new(
            ErrorCode::UpstreamUnavailable,
            "HubSpot's answer has no record `id`",
        )
    })?;
    output(&CrmObject {
        id,
        properties: value["properties"].clone(),
        created_at: value["createdAt"].as_str().map(str::to_owned),
        updated_at: value["updatedAt"].as_str().map(str::to_owned),
    })
}

/// Sends a contact or deal write, turning HubSpot's `409` into a `conflict` that names the
/// record already holding the unique value.
async fn send_write(
    call: &Call<'_>,
    request: reqwest::RequestBuilder,
) -> Result<Value, ActionError> {
    let response = call
        .send_accepting(request, |s| s.is_success() || s == StatusCode::CONFLICT)
        .await?;
    if response.status != StatusCode::CONFLICT {
        return json_body(&response);
    }
    let body = json_body(&response).unwrap_or(Value::Null);
    let detail = match existing_id(&body) {
        Some(id) => format!(
            "a record with this unique value (such as the email) already exists: existing id {id}"
        ),
        None => "a record with this unique value (such as the email) already exists".to_owned(),
    };
    let mut error = call.provider_error(ErrorCode::Conflict, &detail);
    error.status = Some(StatusCode::CONFLICT.as_u16());
    Err(error)
}

/// The id of the record a `409` collided with: `identityProfile.vid` when HubSpot sends it,
/// else the number after `Existing ID:` in its message (the only place v3 puts it).
fn existing_id(body: &Value) -> Option<String> {
    if let Some(vid) = body["identityProfile"]["vid"].as_u64() {
        return Some(vid.to_string());
    }
    let message = body["message"].as_str()?;
    let (_, rest) = message.split_once("Existing ID:")?;
    let id: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (!id.is_empty()).then_some(id)
}

async fn create(call: &Call<'_>, object: &str, input: CreateObject) -> Result<Value, ActionError> {
    let mut body = json!({ "properties": input.properties });
    if let Some(associations) = input.associations {
        body["associations"] = Value::Array(associations);
    }
    let answer = send_write(
        call,
        call.post(&["crm", "v3", "objects", object]).json(&body),
    )
    .await?;
    crm_object(answer)
}

async fn update(call: &Call<'_>, object: &str, input: UpdateObject) -> Result<Value, ActionError> {
    let body = json!({ "properties": input.properties });
    let answer = send_write(
        call,
        call.patch(&["crm", "v3", "objects", object, &input.id])
            .json(&body),
    )
    .await?;
    crm_object(answer)
}

async fn search_contacts(call: &Call<'_>, input: SearchContacts) -> Result<Value, ActionError> {
    let pagination = call
        .manifest
        .find_action("search_contacts")
        .and_then(|a| a.pagination.clone())
        .ok_or_else(|| ActionError::new(ErrorCode::Internal, "search_contacts pages"))?;
    let limit = page_limit(input.limit, &pagination)?;
    let mut base = json!({});
    if let Some(groups) = input.filter_groups {
        base["filterGroups"] = Value::Array(groups);
    }
    if let Some(sorts) = input.sorts {
        base["sorts"] = Value::Array(sorts);
    }
    if let Some(properties) = input.properties {
        base["properties"] = json!(properties);
    }
    if let Some(query) = input.query {
        base["query"] = Value::String(query);
    }
    let listing = collect_pages(limit, input.cursor, |cursor, wanted| {
        let mut body = base.clone();
        async move {
            // 200 is the search API's largest page.
            body["limit"] = json!(wanted.min(200));
            if let Some(after) = cursor {
                body["after"] = Value::String(after);
            }
            let page = call
                .send_json(
                    call.post(&["crm", "v3", "objects", "contacts", "search"])
                        .json(&body),
                )
                .await?;
            Ok(Page {
                items: page["results"].as_array().cloned().unwrap_or_default(),
                next: page["paging"]["next"]["after"].as_str().map(str::to_owned),
            })
        }
    })
    .await?;
    output(&listing)
}

async fn associate(call: &Call<'_>, input: Associate) -> Result<Value, ActionError> {
    let answer = call
        .send_json(call.put(&[
            "crm",
            "v4",
            "objects",
            &input.from_type,
            &input.from_id,
            "associations",
            "default",
            &input.to_type,
            &input.to_id,
        ]))
        .await?;
    output(&Associated {
        status: answer["status"].as_str().map(str::to_owned),
        results: answer["results"].as_array().cloned().unwrap_or_default(),
    })
}
