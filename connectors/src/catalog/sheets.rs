//! Google Sheets, through the Sheets API v4 values resource
//! (<https://developers.google.com/sheets/api/reference/rest/v4/spreadsheets.values>).
//!
//! Requests go to `https://sheets.googleapis.com/v4/spreadsheets/{id}/values/{range}…` with an
//! OAuth or service-account access token as `Authorization: Bearer`. The A1 range is one path
//! segment, percent-encoded (`Sheet 1!A1:C` is sent as `Sheet%201!A1:C`), and the append
//! method is the custom verb `{range}:append` in that same segment.
//!
//! Failures are Google's `{"error": {"code", "message", "status", "errors": [{"reason"}],
//! "details": [{"@type", "reason", "retryDelay"}]}}`. [`SheetsQuirks`] reads the structured
//! fields: `429 RESOURCE_EXHAUSTED` and a `403` whose `errors[].reason` is
//! `rateLimitExceeded` or `userRateLimitExceeded` (or whose `ErrorInfo` reason is
//! `RATE_LIMIT_EXCEEDED`) are `rate_limited`, waiting for the `RetryInfo` delay or
//! `Retry-After` when Google gives one; `ACCESS_TOKEN_SCOPE_INSUFFICIENT` is
//! `insufficient_scope`. Google sends no rate-limit headers; its quota is 60 reads and 60
//! writes a minute per user per project (300 a minute per project).
//!
//! Health: Google has no Sheets call without a spreadsheet id, and the identity endpoints
//! (Drive's `about`, OAuth `tokeninfo`) live on other hosts, where the connection's base URL
//! and credential do not belong. The check asks Sheets for a spreadsheet that does not exist:
//! Google's `404 NOT_FOUND` means the token was accepted and holds a Sheets scope (Google
//! checks both before looking the spreadsheet up), while a bad token is `401` and a missing
//! scope `403`; a `404` without Google's error body (a wrong base URL) fails the check.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use schemars::JsonSchema;
use schemas::envelope::ErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::ActionError;
use crate::http::{Quirks, Verdict, ratelimit};
use crate::manifest::{ActionManifest, AuthType, Category, Manifest, RateLimit};
use crate::sdk::{Call, Connector, output, parse_input};

/// The spreadsheet id the health check asks for, which no spreadsheet has.
const HEALTH_PROBE_ID: &str = "switchyard-connection-check";

/// The Google Sheets connector.
#[derive(Debug)]
pub struct Sheets(Manifest);

impl Default for Sheets {
    fn default() -> Self {
        Self::new()
    }
}

impl Sheets {
    /// Its manifest.
    pub fn new() -> Self {
        let write = ["https://www.googleapis.com/auth/spreadsheets"];
        Sheets(
            Manifest::new("sheets", "Google Sheets", Category::Data)
                .auth(&[AuthType::OAuth2Code, AuthType::ServiceAccount])
                .base_url("https://sheets.googleapis.com")
                .docs("https://developers.google.com/sheets/api/reference/rest/v4/spreadsheets.values")
                // 60 read and 60 write requests a minute per user per project.
                .rate_limit(RateLimit::per_minute(60).with_burst(10))
                .action(
                    ActionManifest::write("append_row", "Append one row to a sheet")
                        .scopes(&write)
                        .input::<AppendRow>()
                        .output::<Appended>(),
                )
                .action(
                    ActionManifest::write("append_rows", "Append many rows in one request")
                        .scopes(&write)
                        .input::<AppendRows>()
                        .output::<Appended>(),
                )
                .action(
                    ActionManifest::read("read_range", "Read a range of cells")
                        .scopes(&["https://www.googleapis.com/auth/spreadsheets.readonly"])
                        .input::<ReadRange>()
                        .output::<RangeValues>(),
                )
                .action(
                    ActionManifest::destructive("update_range", "Overwrite a range of cells")
                        .scopes(&write)
                        .idempotent()
                        .input::<UpdateRange>()
                        .output::<Updated>(),
                ),
        )
    }
}

/// How Google reads the values written.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
pub enum ValueInputOption {
    /// As if typed into the UI: `=SUM(A1:A3)` is a formula, `2024-05-01` a date.
    #[default]
    #[serde(rename = "USER_ENTERED")]
    UserEntered,
    /// Stored as given, as strings and numbers.
    #[serde(rename = "RAW")]
    Raw,
}

impl ValueInputOption {
    fn as_str(self) -> &'static str {
        match self {
            ValueInputOption::UserEntered => "USER_ENTERED",
            ValueInputOption::Raw => "RAW",
        }
    }
}

/// Whether values are rows or columns.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
pub enum MajorDimension {
    /// Each inner list is a row.
    #[default]
    #[serde(rename = "ROWS")]
    Rows,
    /// Each inner list is a column.
    #[serde(rename = "COLUMNS")]
    Columns,
}

impl MajorDimension {
    fn as_str(self) -> &'static str {
        match self {
            MajorDimension::Rows => "ROWS",
            MajorDimension::Columns => "COLUMNS",
        }
    }
}

/// How values read are rendered.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
pub enum ValueRenderOption {
    /// As shown in the UI (`$1.50`); Google's default.
    #[serde(rename = "FORMATTED_VALUE")]
    FormattedValue,
    /// Computed but unformatted (`1.5`).
    #[serde(rename = "UNFORMATTED_VALUE")]
    UnformattedValue,
    /// Formulas themselves (`=A1*2`).
    #[serde(rename = "FORMULA")]
    Formula,
}

impl ValueRenderOption {
    fn as_str(self) -> &'static str {
        match self {
            ValueRenderOption::FormattedValue => "FORMATTED_VALUE",
            ValueRenderOption::UnformattedValue => "UNFORMATTED_VALUE",
            ValueRenderOption::Formula => "FORMULA",
        }
    }
}

/// `append_row` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AppendRow {
    /// The spreadsheet id (from its URL: `/spreadsheets/d/{id}/edit`).
    pub spreadsheet_id: String,
    /// A1 range of the table to append to, e.g. `Sheet1` or `Leads!A:C`; the row goes after
    /// the table's last row.
    pub range: String,
    /// The row's cell values, left to right.
    pub values: Vec<Value>,
    /// `USER_ENTERED` (default) or `RAW`.
    #[serde(default)]
    pub value_input_option: ValueInputOption,
}

/// `append_rows` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AppendRows {
    /// The spreadsheet id.
    pub spreadsheet_id: String,
    /// A1 range of the table to append to, e.g. `Sheet1` or `Leads!A:C`.
    pub range: String,
    /// The rows, each a list of cell values; all go in one request.
    pub rows: Vec<Vec<Value>>,
    /// `USER_ENTERED` (default) or `RAW`.
    #[serde(default)]
    pub value_input_option: ValueInputOption,
}

/// What an append wrote.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Appended {
    /// The spreadsheet id.
    pub spreadsheet_id: String,
    /// The table the rows were appended to, before the append (`Sheet1!A1:C10`).
    pub table_range: Option<String>,
    /// The cells written (`Sheet1!A11:C12`).
    pub updated_range: Option<String>,
    /// Rows written.
    pub updated_rows: u64,
    /// Cells written.
    pub updated_cells: u64,
}

/// `read_range` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadRange {
    /// The spreadsheet id.
    pub spreadsheet_id: String,
    /// A1 range, e.g. `Pipeline!A2:F500` or `'Q1 2024'!A:A`.
    pub range: String,
    /// `ROWS` (default) or `COLUMNS`.
    pub major_dimension: Option<MajorDimension>,
    /// `FORMATTED_VALUE` (Google's default), `UNFORMATTED_VALUE` or `FORMULA`.
    pub value_render_option: Option<ValueRenderOption>,
}

/// The cells of a range.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RangeValues {
    /// The range read, as Google normalised it (`Pipeline!A2:F500`).
    pub range: String,
    /// `ROWS` or `COLUMNS`.
    pub major_dimension: String,
    /// The values; empty trailing rows and cells are left out, an empty range is `[]`.
    pub values: Vec<Vec<Value>>,
}

/// `update_range` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRange {
    /// The spreadsheet id.
    pub spreadsheet_id: String,
    /// A1 range to overwrite, e.g. `Sheet1!A1:C2`.
    pub range: String,
    /// The values, as rows (or columns with `major_dimension: COLUMNS`).
    pub values: Vec<Vec<Value>>,
    /// `USER_ENTERED` (default) or `RAW`.
    #[serde(default)]
    pub value_input_option: ValueInputOption,
    /// `ROWS` (default) or `COLUMNS`.
    #[serde(default)]
    pub major_dimension: MajorDimension,
}

/// What an update wrote.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Updated {
    /// The spreadsheet id.
    pub spreadsheet_id: String,
    /// The cells written.
    pub updated_range: Option<String>,
    /// Rows written.
    pub updated_rows: u64,
    /// Columns written.
    pub updated_columns: u64,
    /// Cells written.
    pub updated_cells: u64,
}

/// Google's structured errors: rate limits on `403`, `RetryInfo` delays, scope errors.
#[derive(Debug)]
pub struct SheetsQuirks;

impl Quirks for SheetsQuirks {
    fn judge(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Option<Verdict> {
        if status.is_success() {
            return None;
        }
        let body: Value = serde_json::from_slice(body).ok()?;
        let error = body.get("error")?;
        let reasons: Vec<&str> = error["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(error["details"].as_array().into_iter().flatten())
            .filter_map(|e| e["reason"].as_str())
            .collect();
        let limited = error["status"] == "RESOURCE_EXHAUSTED"
            || reasons.iter().any(|r| {
                matches!(
                    *r,
                    "rateLimitExceeded" | "userRateLimitExceeded" | "RATE_LIMIT_EXCEEDED"
                )
            });
        if limited {
            let wait = retry_delay(error)
                .or_else(|| ratelimit::wait_hint(status, headers, SystemTime::now()));
            return Some(Verdict::new(ErrorCode::RateLimited, wait));
        }
        if reasons.contains(&"ACCESS_TOKEN_SCOPE_INSUFFICIENT") {
            return Some(Verdict::new(ErrorCode::InsufficientScope, None));
        }
        None
    }
}

/// The `retryDelay` of a `google.rpc.RetryInfo` detail (`"30s"`, `"1.5s"`).
pub(crate) fn retry_delay(error: &Value) -> Option<Duration> {
    error["details"]
        .as_array()?
        .iter()
        .filter(|d| {
            d["@type"]
                .as_str()
                .is_some_and(|t| t.ends_with("google.rpc.RetryInfo"))
        })
        .find_map(|d| {
            let secs = d["retryDelay"].as_str()?.strip_suffix('s')?;
            let secs: f64 = secs.parse().ok()?;
            Duration::try_from_secs_f64(secs)
                .ok()
                .map(|d| d.min(ratelimit::MAX_WAIT))
        })
}

#[async_trait::async_trait]
impl Connector for Sheets {
    fn manifest(&self) -> &Manifest {
        &self.0
    }

    fn quirks(&self) -> &dyn Quirks {
        &SheetsQuirks
    }

    async fn execute(
        &self,
        call: &Call<'_>,
        action: &str,
        input: Value,
    ) -> Result<Value, ActionError> {
        match action {
            "append_row" => {
                let input: AppendRow = parse_input(input)?;
                append(
                    call,
                    &input.spreadsheet_id,
                    &input.range,
                    vec![input.values],
                    input.value_input_option,
                )
                .await
            }
            "append_rows" => {
                let input: AppendRows = parse_input(input)?;
                if input.rows.is_empty() {
                    return Err(ActionError::invalid_input("rows", "give at least one row"));
                }
                append(
                    call,
                    &input.spreadsheet_id,
                    &input.range,
                    input.rows,
                    input.value_input_option,
                )
                .await
            }
            "read_range" => read_range(call, parse_input(input)?).await,
            "update_range" => update_range(call, parse_input(input)?).await,
            _ => Err(call.unknown_action(action)),
        }
    }

    async fn health(&self, call: &Call<'_>) -> Result<(), ActionError> {
        let request = call
            .get(&["v4", "spreadsheets", HEALTH_PROBE_ID])
            .query(&[("fields", "spreadsheetId")]);
        let response = call
            .send_accepting(request, |s| s.is_success() || s == StatusCode::NOT_FOUND)
            .await?;
        // Only Google's own `NOT_FOUND` proves the token passed; a `404` page from a wrong
        // base URL does not.
        if response.status == StatusCode::NOT_FOUND {
            let body: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
            if body["error"]["status"] != "NOT_FOUND" {
                let mut error = call.provider_error(
                    ErrorCode::UpstreamUnavailable,
                    "404 without a Google error; is the connection's base_url the Sheets API?",
                );
                error.status = Some(StatusCode::NOT_FOUND.as_u16());
                return Err(error);
            }
        }
        Ok(())
    }
}

fn count(value: &Value) -> u64 {
    value.as_u64().unwrap_or(0)
}

fn text(value: &Value) -> Option<String> {
    value.as_str().map(str::to_owned)
}

async fn append(
    call: &Call<'_>,
    spreadsheet_id: &str,
    range: &str,
    rows: Vec<Vec<Value>>,
    value_input: ValueInputOption,
) -> Result<Value, ActionError> {
    let verb = format!("{range}:append");
    let request = call
        .post(&["v4", "spreadsheets", spreadsheet_id, "values", &verb])
        .query(&[
            ("valueInputOption", value_input.as_str()),
            ("insertDataOption", "INSERT_ROWS"),
        ])
        .json(&json!({ "majorDimension": "ROWS", "values": rows }));
    let answer = call.send_json(request).await?;
    let updates = &answer["updates"];
    output(&Appended {
        spreadsheet_id: text(&answer["spreadsheetId"]).unwrap_or_else(|| spreadsheet_id.to_owned()),
        table_range: text(&answer["tableRange"]),
        updated_range: text(&updates["updatedRange"]),
        updated_rows: count(&updates["updatedRows"]),
        updated_cells: count(&updates["updatedCells"]),
    })
}

async fn read_range(call: &Call<'_>, input: ReadRange) -> Result<Value, ActionError> {
    let mut query = Vec::new();
    if let Some(dimension) = input.major_dimension {
        query.push(("majorDimension", dimension.as_str()));
    }
    if let Some(render) = input.value_render_option {
        query.push(("valueRenderOption", render.as_str()));
    }
    let answer = call
        .send_json(
            call.get(&[
                "v4",
                "spreadsheets",
                &input.spreadsheet_id,
                "values",
                &input.range,
            ])
            .query(&query),
        )
        .await?;
    let values = answer["values"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|row| row.as_array().cloned().unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    output(&RangeValues {
        range: text(&answer["range"]).unwrap_or(input.range),
        major_dimension: text(&answer["majorDimension"]).unwrap_or_else(|| "ROWS".to_owned()),
        values,
    })
}

async fn update_range(call: &Call<'_>, input: UpdateRange) -> Result<Value, ActionError> {
    let request = call
        .put(&[
            "v4",
            "spreadsheets",
            &input.spreadsheet_id,
            "values",
            &input.range,
        ])
        .query(&[("valueInputOption", input.value_input_option.as_str())])
        .json(&json!({
            "range": input.range,
            "majorDimension": input.major_dimension.as_str(),
            "values": input.values,
        }));
    let answer = call.send_json(request).await?;
    output(&Updated {
        spreadsheet_id: text(&answer["spreadsheetId"]).unwrap_or(input.spreadsheet_id),
        updated_range: text(&answer["updatedRange"]),
        updated_rows: count(&answer["updatedRows"]),
        updated_columns: count(&answer["updatedColumns"]),
        updated_cells: count(&answer["updatedCells"]),
    })
}
