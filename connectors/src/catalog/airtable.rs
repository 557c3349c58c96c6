//! Airtable, through the Web API (<https://airtable.com/developers/web/api/introduction>).
//!
//! Requests go to `https://api.airtable.com/v0/{baseId}/{tableIdOrName}` with a personal
//! access token or an OAuth access token as `Authorization: Bearer`. Creating and updating
//! take at most 10 records per request: larger inputs are split into batches of 10, sent one
//! after the other (each admitted by the connection's budget), and the output says how many
//! requests went out. A batch that fails stops the action; its error names the records the
//! earlier batches already wrote, since Airtable cannot undo them (a retried
//! `create_records` writes those again).
//!
//! Failures come in two shapes, `{"error": {"type": "INVALID_REQUEST_UNKNOWN", "message": …}}`
//! and `{"error": "NOT_FOUND"}`; [`AirtableQuirks`] classifies both by `type`, then by status.
//! The limit is 5 requests a second per base (and 50 a second per token across bases, so the
//! manifest's 5 a second per connection stays under both); a `429` means waiting 30 seconds before the
//! next request, and Airtable sends no `Retry-After`, so 30 s is the wait hint unless one is
//! present.

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
use crate::sdk::{Call, Connector, Listing, Page, collect_pages, output, page_limit, parse_input};

/// Records per create or update request, Airtable's maximum.
pub const BATCH: usize = 10;

/// Records one step may write, bounding the requests (and time) of one action.
pub const MAX_RECORDS: usize = 1000;

/// What Airtable asks for after a `429`.
pub const RATE_LIMIT_WAIT: Duration = Duration::from_secs(30);

/// The Airtable connector.
#[derive(Debug)]
pub struct Airtable(Manifest);

impl Default for Airtable {
    fn default() -> Self {
        Self::new()
    }
}

impl Airtable {
    /// Its manifest.
    pub fn new() -> Self {
        let write = ["data.records:write"];
        Airtable(
            Manifest::new("airtable", "Airtable", Category::Data)
                .auth(&[AuthType::OAuth2Code, AuthType::Bearer])
                .base_url("https://api.airtable.com")
                .docs("https://airtable.com/developers/web/api/introduction")
                // 5 requests a second per base.
                .rate_limit(RateLimit::per_second(5))
                .action(
                    ActionManifest::write("create_records", "Create records, 10 per request")
                        .scopes(&write)
                        .input::<CreateRecords>()
                        .output::<Written>(),
                )
                .action(
                    ActionManifest::write(
                        "update_records",
                        "Update fields of records, 10 per request",
                    )
                    .scopes(&write)
                    .idempotent()
                    .input::<UpdateRecords>()
                    .output::<Written>(),
                )
                .action(
                    ActionManifest::read("list_records", "List records of a table or view")
                        .scopes(&["data.records:read"])
                        .paginated("offset", 100, 10_000)
                        .input::<ListRecords>()
                        .output::<Listing>(),
                ),
        )
    }
}

/// `create_records` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRecords {
    /// The base id (`app…`).
    pub base_id: String,
    /// The table's id (`tbl…`) or name.
    pub table: String,
    /// Each record's fields by field name or id, e.g. `[{"Name": "Ada", "Score": 9}]`; at
    /// most 1000, sent 10 per request.
    pub records: Vec<Map<String, Value>>,
    /// Convert values to the fields' types (e.g. create missing select options).
    pub typecast: Option<bool>,
}

/// One record to update.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordUpdate {
    /// The record id (`rec…`).
    pub id: String,
    /// Fields to change; others keep their values.
    pub fields: Map<String, Value>,
}

/// `update_records` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRecords {
    /// The base id (`app…`).
    pub base_id: String,
    /// The table's id (`tbl…`) or name.
    pub table: String,
    /// The records and their changes; at most 1000, sent 10 per request.
    pub records: Vec<RecordUpdate>,
    /// Convert values to the fields' types.
    pub typecast: Option<bool>,
}

/// Records written.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Written {
    /// The records' ids, in input order.
    pub ids: Vec<String>,
    /// The records as Airtable returned them (`id`, `createdTime`, `fields`).
    pub records: Vec<Value>,
    /// Requests sent (one per batch of up to 10 records).
    pub requests: usize,
}

/// `list_records` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListRecords {
    /// The base id (`app…`).
    pub base_id: String,
    /// The table's id (`tbl…`) or name.
    pub table: String,
    /// A view's name or id: only its records, in its order.
    pub view: Option<String>,
    /// A formula records must make true, e.g. `{Status} = 'Open'`.
    pub filter_by_formula: Option<String>,
    /// Fields to return; all when left out.
    pub fields: Option<Vec<String>>,
    /// Records wanted in all (default 100, at most 10000).
    pub limit: Option<u32>,
    /// `next_cursor` of an earlier call.
    pub cursor: Option<String>,
}

/// Airtable's two error shapes, and the 30-second wait after a `429`.
#[derive(Debug)]
pub struct AirtableQuirks;

impl Quirks for AirtableQuirks {
    fn judge(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Option<Verdict> {
        if status.is_success() {
            return None;
        }
        let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let error = &body["error"];
        let kind = error["type"].as_str().or_else(|| error.as_str());
        if let Some(code) = kind.and_then(error_code_of) {
            return Some(Verdict::new(code, None));
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            let wait =
                ratelimit::wait_hint(status, headers, SystemTime::now()).unwrap_or(RATE_LIMIT_WAIT);
            return Some(Verdict::new(ErrorCode::RateLimited, Some(wait)));
        }
        None
    }
}

/// The stable code of one of Airtable's error types, when it says more than the status.
fn error_code_of(kind: &str) -> Option<ErrorCode> {
    Some(match kind {
        "AUTHENTICATION_REQUIRED" | "INVALID_API_KEY" => ErrorCode::Unauthorized,
        "INVALID_PERMISSIONS" | "INVALID_PERMISSIONS_OR_MODEL_NOT_FOUND" => ErrorCode::Forbidden,
        // The workspace's monthly call allowance is spent: no retry helps this month.
        "PUBLIC_API_BILLING_LIMIT_EXCEEDED" => ErrorCode::Forbidden,
        "NOT_FOUND"
        | "MODEL_ID_NOT_FOUND"
        | "TABLE_NOT_FOUND"
        | "VIEW_NAME_NOT_FOUND"
        | "ROW_DOES_NOT_EXIST" => ErrorCode::NotFound,
        "INVALID_REQUEST_UNKNOWN"
        | "INVALID_REQUEST_MISSING_FIELDS"
        | "INVALID_VALUE_FOR_COLUMN"
        | "UNKNOWN_FIELD_NAME"
        | "INVALID_MULTIPLE_CHOICE_OPTIONS"
        | "INVALID_RECORDS"
        | "INVALID_FILTER_BY_FORMULA"
        | "CANNOT_UPDATE_COMPUTED_FIELD" => ErrorCode::InvalidInput,
        _ => return None,
    })
}

#[async_trait::async_trait]
impl Connector for Airtable {
    fn manifest(&self) -> &Manifest {
        &self.0
    }

    fn quirks(&self) -> &dyn Quirks {
        &AirtableQuirks
    }

    async fn execute(
        &self,
        call: &Call<'_>,
        action: &str,
        input: Value,
    ) -> Result<Value, ActionError> {
        match action {
            "create_records" => {
                let input: CreateRecords = parse_input(input)?;
                let records = input
                    .records
                    .into_iter()
                    .map(|fields| json!({ "fields": fields }))
                    .collect();
                write_batches(
                    call,
                    reqwest::Method::POST,
                    &input.base_id,
                    &input.table,
                    records,
                    input.typecast,
                )
                .await
            }
            "update_records" => {
                let input: UpdateRecords = parse_input(input)?;
                let records = input
                    .records
                    .into_iter()
                    .map(|r| json!({ "id": r.id, "fields": r.fields }))
                    .collect();
                write_batches(
                    call,
                    reqwest::Method::PATCH,
                    &input.base_id,
                    &input.table,
                    records,
                    input.typecast,
                )
                .await
            }
            "list_records" => list_records(call, parse_input(input)?).await,
            _ => Err(call.unknown_action(action)),
        }
    }

    async fn health(&self, call: &Call<'_>) -> Result<(), ActionError> {
        call.send(call.get(&["v0", "meta", "whoami"]))
            .await
            .map(drop)
    }
}

/// Sends `records` in batches of [`BATCH`], one request each, in order.
async fn write_batches(
    call: &Call<'_>,
    method: reqwest::Method,
    base_id: &str,
    table: &str,
    records: Vec<Value>,
    typecast: Option<bool>,
) -> Result<Value, ActionError> {
    if records.is_empty() {
        return Err(ActionError::invalid_input(
            "records",
            "give at least one record",
        ));
    }
    if records.len() > MAX_RECORDS {
        return Err(ActionError::invalid_input(
            "records",
            format!("at most {MAX_RECORDS} records per step"),
        ));
    }
    let mut written = Written {
        ids: Vec::new(),
        records: Vec::new(),
        requests: 0,
    };
    for batch in records.chunks(BATCH) {
        let mut body = json!({ "records": batch });
        if let Some(typecast) = typecast {
            body["typecast"] = Value::Bool(typecast);
        }
        let request = call
            .request(method.clone(), &["v0", base_id, table])
            .json(&body);
        let answer = match call.send_json(request).await {
            Ok(answer) => answer,
            Err(mut e) if written.requests > 0 => {
                e.message = format!(
                    "{} (the {} earlier requests already wrote {} records: {})",
                    e.message,
                    written.requests,
                    written.ids.len(),
                    written.ids.join(", ")
                );
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        written.requests += 1;
        for record in answer["records"].as_array().into_iter().flatten() {
            if let Some(id) = record["id"].as_str() {
                written.ids.push(id.to_owned());
            }
            written.records.push(record.clone());
        }
    }
    output(&written)
}

async fn list_records(call: &Call<'_>, input: ListRecords) -> Result<Value, ActionError> {
    let pagination = call
        .manifest
        .find_action("list_records")
        .and_then(|a| a.pagination.clone())
        .ok_or_else(|| ActionError::new(ErrorCode::Internal, "list_records pages"))?;
    let limit = page_limit(input.limit, &pagination)?;
    let mut filters: Vec<(&str, String)> = Vec::new();
    if let Some(view) = &input.view {
        filters.push(("view", view.clone()));
    }
    if let Some(formula) = &input.filter_by_formula {
        filters.push(("filterByFormula", formula.clone()));
    }
    for field in input.fields.iter().flatten() {
        filters.push(("fields[]", field.clone()));
    }
    let (base_id, table) = (input.base_id.as_str(), input.table.as_str());
    let listing = collect_pages(limit, input.cursor, |cursor, wanted| {
        let mut query = filters.clone();
        async move {
            // 100 is Airtable's largest page.
            query.push(("pageSize", wanted.min(100).to_string()));
            if let Some(offset) = cursor {
                query.push(("offset", offset));
            }
            let page = call
                .send_json(call.get(&["v0", base_id, table]).query(&query))
                .await?;
            Ok(Page {
                items: page["records"].as_array().cloned().unwrap_or_default(),
                next: page["offset"].as_str().map(str::to_owned),
            })
        }
    })
    .await?;
    output(&listing)
}
