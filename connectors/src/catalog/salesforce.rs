//! Salesforce, through the REST API
//! (<https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/>).
//!
//! Every org has its own host, its *instance URL* (`https://yourorg.my.salesforce.com`), which
//! the OAuth token response names as `instance_url`. The manifest therefore has no default
//! base URL: an OAuth connection without a `base_url` takes the `instance_url` of its first
//! token response and keeps it ([`crate::oauth::Tokens::base_url_to_adopt`]); a `bearer`
//! connection must set `base_url` to the instance URL, and a step on a connection without
//! one fails with `invalid_input` before any request. `https://login.salesforce.com`
//! is not a default worth having: it is the authorization server, and data requests sent there
//! fail. Requests go to `{instance}/services/data/v60.0/…` with the token as
//! `Authorization: Bearer`.
//!
//! Failures are an array of `{"message", "errorCode", "fields"}`; [`SalesforceQuirks`]
//! classifies them by `errorCode` (`REQUEST_LIMIT_EXCEEDED` on a `403` is the org's rolling
//! 24-hour API allowance running out: `rate_limited`; `INVALID_SESSION_ID` is
//! `unauthorized`), and by status otherwise. Every response carries
//! `Sforce-Limit-Info: api-usage=25/15000`: the requests the org has spent of its 24-hour
//! allowance; it names no reset time, so it gives no wait hint.
//!
//! `query` pages by `nextRecordsUrl`, a path on the same instance that is followed with the
//! connection's credential. Salesforce returns 200 to 2000 records a page (asked for with
//! `Sforce-Query-Options: batchSize=…`); when a page holds more records than `limit` still
//! wants, the extra ones are dropped and `next_cursor` points past that page, so resume with
//! `limit`s that are multiples of the page size, or bound the query with `LIMIT`.

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use schemars::JsonSchema;
use schemas::envelope::ErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ActionError;
use crate::http::{Quirks, Verdict};
use crate::manifest::{ActionManifest, AuthType, Category, Manifest, RateLimit};
use crate::sdk::{Call, Connector, Listing, Page, collect_pages, output, page_limit, parse_input};

/// The REST API version every request uses.
pub const API_VERSION: &str = "v60.0";

/// The Salesforce connector.
#[derive(Debug)]
pub struct Salesforce(Manifest);

impl Default for Salesforce {
    fn default() -> Self {
        Self::new()
    }
}

impl Salesforce {
    /// Its manifest.
    pub fn new() -> Self {
        let api = ["api"];
        Salesforce(
            Manifest::new("salesforce", "Salesforce", Category::Crm)
                .auth(&[
                    AuthType::OAuth2Code,
                    AuthType::OAuth2Client,
                    AuthType::Bearer,
                ])
                .docs("https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/")
                // Enterprise Edition's base allowance: 100,000 requests per rolling 24 hours
                // (plus more per licence); bursts of a thousand keep workflows moving.
                .rate_limit(RateLimit {
                    requests: 100_000,
                    per_seconds: 86_400,
                    burst: 1_000,
                })
                .action(
                    ActionManifest::write("create_record", "Create a record of any object")
                        .scopes(&api)
                        .input::<CreateRecord>()
                        .output::<RecordRef>(),
                )
                .action(
                    ActionManifest::write("update_record", "Update fields of a record")
                        .scopes(&api)
                        .idempotent()
                        .input::<UpdateRecord>()
                        .output::<RecordRef>(),
                )
                .action(
                    ActionManifest::read("get_record", "Read a record by id")
                        .scopes(&api)
                        .input::<GetRecord>()
                        .output::<Record>(),
                )
                .action(
                    ActionManifest::read("query", "Run a SOQL query")
                        .scopes(&api)
                        .paginated("next_records_url", 2000, 50_000)
                        .input::<Query>()
                        .output::<Listing>(),
                )
                .action(
                    ActionManifest::write(
                        "upsert_by_external_id",
                        "Create or update a record matched by an external id field",
                    )
                    .scopes(&api)
                    .idempotent()
                    .input::<Upsert>()
                    .output::<Upserted>(),
                ),
        )
    }
}

/// `create_record` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRecord {
    /// The object's API name, e.g. `Account`, `Lead`, `Invoice__c`.
    pub object: String,
    /// Field API names and values, e.g. `{"Name": "Acme"}`.
    pub fields: Map<String, Value>,
}

/// `update_record` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRecord {
    /// The object's API name.
    pub object: String,
    /// The record id (15 or 18 characters).
    pub id: String,
    /// Fields to change; fields left out keep their values.
    pub fields: Map<String, Value>,
}

/// A record acted on.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RecordRef {
    /// The object's API name.
    pub object: String,
    /// The record id.
    pub id: String,
}

/// `get_record` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetRecord {
    /// The object's API name.
    pub object: String,
    /// The record id.
    pub id: String,
    /// Fields to read; all fields when left out.
    pub fields: Option<Vec<String>>,
}

/// A record read.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Record {
    /// The record id.
    pub id: String,
    /// The record as Salesforce sent it (its fields and `attributes`).
    pub raw: Value,
}

/// `query` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Query {
    /// The SOQL query, e.g. `SELECT Id, Name FROM Account WHERE Industry = 'Energy'`;
    /// required unless `cursor` continues an earlier one.
    pub soql: Option<String>,
    /// Records wanted in all (default 2000, at most 50000).
    pub limit: Option<u32>,
    /// `next_cursor` of an earlier call (a `nextRecordsUrl`); `soql` is then not needed.
    pub cursor: Option<String>,
}

/// `upsert_by_external_id` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Upsert {
    /// The object's API name.
    pub object: String,
    /// The external id field's API name, e.g. `External_Id__c`.
    pub external_id_field: String,
    /// The external id value to match.
    pub external_id: String,
    /// Fields to set (without the external id field itself).
    pub fields: Map<String, Value>,
}

/// The outcome of an upsert.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Upserted {
    /// `created` (no record had the external id) or `updated`.
    pub outcome: String,
    /// Whether a record was created.
    pub created: bool,
    /// The record id; Salesforce sends none when it answers an update with `204`.
    pub id: Option<String>,
}

/// Salesforce's array of `{"errorCode": …}` errors.
#[derive(Debug)]
pub struct SalesforceQuirks;

impl Quirks for SalesforceQuirks {
    fn judge(&self, status: StatusCode, _: &HeaderMap, body: &[u8]) -> Option<Verdict> {
        // `300`: the external id matches several records (the body lists them).
        if status == StatusCode::MULTIPLE_CHOICES {
            return Some(Verdict::new(ErrorCode::Conflict, None));
        }
        if status.is_success() {
            return None;
        }
        let body: Value = serde_json::from_slice(body).ok()?;
        let error_code = body.get(0)?.get("errorCode")?.as_str()?;
        error_code_of(error_code).map(|code| Verdict::new(code, None))
    }
}

/// The stable code of one of Salesforce's `errorCode`s, when it says more than the status.
fn error_code_of(error_code: &str) -> Option<ErrorCode> {
    Some(match error_code {
        // The org's 24-hour allowance; Salesforce names no reset time.
        "REQUEST_LIMIT_EXCEEDED" | "TOO_MANY_REQUESTS" => ErrorCode::RateLimited,
        "INVALID_SESSION_ID" | "INVALID_AUTH_HEADER" => ErrorCode::Unauthorized,
        "INSUFFICIENT_ACCESS"
        | "INSUFFICIENT_ACCESS_OR_READONLY"
        | "API_DISABLED_FOR_ORG"
        | "API_CURRENTLY_DISABLED"
        | "FUNCTIONALITY_NOT_ENABLED" => ErrorCode::Forbidden,
        "NOT_FOUND" | "ENTITY_IS_DELETED" => ErrorCode::NotFound,
        "DUPLICATE_VALUE" | "DUPLICATES_DETECTED" | "DUPLICATE_EXTERNAL_ID" => ErrorCode::Conflict,
        // Another transaction holds the row; Salesforce's guidance is to try again.
        "UNABLE_TO_LOCK_ROW" | "SERVER_UNAVAILABLE" => ErrorCode::UpstreamUnavailable,
        "REQUEST_RUNNING_TOO_LONG" | "QUERY_TIMEOUT" => ErrorCode::Timeout,
        "INVALID_FIELD"
        | "INVALID_TYPE"
        | "MALFORMED_QUERY"
        | "MALFORMED_ID"
        | "INVALID_QUERY_FILTER_OPERATOR"
        | "REQUIRED_FIELD_MISSING"
        | "FIELD_CUSTOM_VALIDATION_EXCEPTION"
        | "STRING_TOO_LONG"
        | "JSON_PARSER_ERROR"
        | "INVALID_FIELD_FOR_INSERT_UPDATE"
        | "INVALID_CROSS_REFERENCE_KEY" => ErrorCode::InvalidInput,
        _ => return None,
    })
}

#[async_trait::async_trait]
impl Connector for Salesforce {
    fn manifest(&self) -> &Manifest {
        &self.0
    }

    fn quirks(&self) -> &dyn Quirks {
        &SalesforceQuirks
    }

    async fn execute(
        &self,
        call: &Call<'_>,
        action: &str,
        input: Value,
    ) -> Result<Value, ActionError> {
        match action {
            "create_record" => create_record(call, parse_input(input)?).await,
            "update_record" => update_record(call, parse_input(input)?).await,
            "get_record" => get_record(call, parse_input(input)?).await,
            "query" => query(call, parse_input(input)?).await,
            "upsert_by_external_id" => upsert(call, parse_input(input)?).await,
            _ => Err(call.unknown_action(action)),
        }
    }

    /// The version's resource list: any valid session may read it, where `/limits` needs
    /// the "View Setup and Configuration" permission.
    async fn health(&self, call: &Call<'_>) -> Result<(), ActionError> {
        call.send(call.get(&["services", "data", API_VERSION, ""]))
            .await
            .map(drop)
    }
}

/// `services/data/v60.0/{rest…}`.
fn api_path<'a>(rest: &[&'a str]) -> Vec<&'a str> {
    let mut path = vec!["services", "data", API_VERSION];
    path.extend_from_slice(rest);
    path
}

fn id_of(value: &Value) -> Result<String, ActionError> {
    value["id"]
        .as_str()
        .or_else(|| value["Id"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| {
            ActionError::new(
                ErrorCode::UpstreamUnavailable,
                "Salesforce's answer has no record `id`",
            )
        })
}

async fn create_record(call: &Call<'_>, input: CreateRecord) -> Result<Value, ActionError> {
    let answer = call
        .send_json(
            call.post(&api_path(&["sobjects", &input.object]))
                .json(&input.fields),
        )
        .await?;
    output(&RecordRef {
        id: id_of(&answer)?,
        object: input.object,
    })
}

async fn update_record(call: &Call<'_>, input: UpdateRecord) -> Result<Value, ActionError> {
    // `204 No Content` on success.
    call.send(
        call.patch(&api_path(&["sobjects", &input.object, &input.id]))
            .json(&input.fields),
    )
    .await?;
    output(&RecordRef {
        object: input.object,
        id: input.id,
    })
}

async fn get_record(call: &Call<'_>, input: GetRecord) -> Result<Value, ActionError> {
    let mut request = call.get(&api_path(&["sobjects", &input.object, &input.id]));
    if let Some(fields) = &input.fields {
        request = request.query(&[("fields", fields.join(","))]);
    }
    let answer = call.send_json(request).await?;
    output(&Record {
        id: id_of(&answer)?,
        raw: answer,
    })
}

async fn query(call: &Call<'_>, input: Query) -> Result<Value, ActionError> {
    let pagination = call
        .manifest
        .find_action("query")
        .and_then(|a| a.pagination.clone())
        .ok_or_else(|| ActionError::new(ErrorCode::Internal, "query pages"))?;
    let limit = page_limit(input.limit, &pagination)?;
    if input.soql.is_none() && input.cursor.is_none() {
        return Err(ActionError::invalid_input(
            "soql",
            "give `soql`, or `cursor` to continue an earlier query",
        ));
    }
    let soql = input.soql.unwrap_or_default();
    let listing = collect_pages(limit, input.cursor, |cursor, wanted| {
        let soql = soql.clone();
        async move {
            let request = match cursor {
                Some(next) => call.request_url(reqwest::Method::GET, call.same_origin(&next)?),
                None => call
                    .get(&api_path(&["query"]))
                    .query(&[("q", soql.as_str())]),
            };
            // Salesforce takes 200 to 2000 and may return other sizes; it is a hint.
            let batch = wanted.clamp(200, 2000);
            let page = call
                .send_json(request.header("sforce-query-options", format!("batchSize={batch}")))
                .await?;
            let next = if page["done"] == Value::Bool(true) {
                None
            } else {
                page["nextRecordsUrl"].as_str().map(str::to_owned)
            };
            Ok(Page {
                items: page["records"].as_array().cloned().unwrap_or_default(),
                next,
            })
        }
    })
    .await?;
    output(&listing)
}

async fn upsert(call: &Call<'_>, input: Upsert) -> Result<Value, ActionError> {
    let response = call
        .send(
            call.patch(&api_path(&[
                "sobjects",
                &input.object,
                &input.external_id_field,
                &input.external_id,
            ]))
            .json(&input.fields),
        )
        .await?;
    let answer = crate::sdk::json_body(&response)?;
    // `201` with `created: true` for a new record; an update is `200` with `created: false`
    // (API 46.0 on) or an empty `204`.
    let created = response.status == StatusCode::CREATED || answer["created"] == Value::Bool(true);
    output(&Upserted {
        outcome: if created { "created" } else { "updated" }.to_owned(),
        created,
        id: answer["id"].as_str().map(str::to_owned),
    })
}
