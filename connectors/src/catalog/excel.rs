//! Excel workbooks in OneDrive and SharePoint, through the Microsoft Graph workbook API
//! (<https://learn.microsoft.com/en-us/graph/api/resources/excel>).
//!
//! Base URL `https://graph.microsoft.com`, every path under
//! `/v1.0/me/drive/items/{item-id}/workbook` (or `/v1.0/drives/{drive-id}/items/…`), the OAuth
//! access token in `Authorization: Bearer`. A step may pass the id of a workbook session it
//! opened (`workbook-session-id` header); without one each call works sessionless.
//!
//! - `append_table_rows` adds many rows in one `POST …/tables/{table}/rows` with
//!   `{"values": [[…], …]}`: that is the batching the API offers.
//! - `read_range` reads `GET …/worksheets/{sheet}/range(address='A1:C5')`. The address is an
//!   OData string literal inside one path segment, so it is limited to the characters of a
//!   cell reference or a range name; anything else could end the literal.
//!
//! Errors and throttling: see [`super::graph_files`] (the workbook API's nested
//! `transientFailure` is retryable).

use reqwest::RequestBuilder;
use schemars::JsonSchema;
use schemas::envelope::ErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::graph_files::{GraphQuirks, drive_path};
use crate::error::ActionError;
use crate::http::Quirks;
use crate::manifest::{ActionManifest, AuthType, Category, Manifest, RateLimit};
use crate::sdk::{Call, Connector, output, parse_input};

/// The header naming a workbook session.
pub const SESSION_HEADER: &str = "workbook-session-id";

/// The Excel connector.
#[derive(Debug)]
pub struct Excel(Manifest);

impl Default for Excel {
    fn default() -> Self {
        Self::new()
    }
}

impl Excel {
    /// Its manifest.
    pub fn new() -> Self {
        Excel(
            Manifest::new("excel", "Microsoft Excel", Category::Data)
                .auth(&[AuthType::OAuth2Code, AuthType::Bearer])
                .base_url("https://graph.microsoft.com")
                .docs("https://learn.microsoft.com/en-us/graph/api/resources/excel")
                // Workbook calls are throttled per workbook and answered slowly; Microsoft
                // publishes no number and recommends few concurrent requests per file.
                .rate_limit(RateLimit::per_second(5).with_burst(5))
                .action(
                    ActionManifest::write(
                        "append_table_rows",
                        "Append rows to a table in one request",
                    )
                    .scopes(&["Files.ReadWrite"])
                    .input::<AppendTableRows>()
                    .output::<AppendedRows>(),
                )
                .action(
                    ActionManifest::read("read_range", "Read a range of a worksheet")
                        .scopes(&["Files.Read"])
                        .input::<ReadRange>()
                        .output::<Range>(),
                ),
        )
    }
}

/// `append_table_rows` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AppendTableRows {
    /// Item id of the workbook.
    pub item_id: String,
    /// Table id or name, e.g. `Table1`.
    pub table: String,
    /// The rows, each a list of cell values as wide as the table.
    pub values: Vec<Vec<Value>>,
    /// Insert at this zero-based row of the table instead of the end.
    pub index: Option<u32>,
    /// A workbook session id, sent as `workbook-session-id`.
    pub session_id: Option<String>,
    /// A drive other than the signed-in user's.
    pub drive_id: Option<String>,
}

/// Rows appended.
#[derive(Debug, Serialize, JsonSchema)]
pub struct AppendedRows {
    /// Table row index of the first row added.
    pub index: Option<i64>,
    /// Rows added.
    pub row_count: usize,
}

/// `read_range` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadRange {
    /// Item id of the workbook.
    pub item_id: String,
    /// Worksheet name or id, e.g. `Sheet1`.
    pub worksheet: String,
    /// The range, e.g. `A1:C5`, `B:B` or `$A$1`, or a range name.
    pub address: String,
    /// A workbook session id, sent as `workbook-session-id`.
    pub session_id: Option<String>,
    /// A drive other than the signed-in user's.
    pub drive_id: Option<String>,
}

/// The cells of a range.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Range {
    /// The range's address, with its sheet (`Sheet1!A1:C5`).
    pub address: Option<String>,
    /// Raw cell values, row by row.
    pub values: Vec<Vec<Value>>,
    /// Cell values as displayed, row by row.
    pub text: Vec<Vec<Value>>,
    /// Rows in the range.
    pub row_count: Option<u64>,
    /// Columns in the range.
    pub column_count: Option<u64>,
}

#[async_trait::async_trait]
impl Connector for Excel {
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
            "append_table_rows" => append_table_rows(call, parse_input(input)?).await,
            "read_range" => read_range(call, parse_input(input)?).await,
            _ => Err(call.unknown_action(action)),
        }
    }

    async fn health(&self, call: &Call<'_>) -> Result<(), ActionError> {
        call.send(call.get(&drive_path(None))).await.map(drop)
    }
}

fn with_session(request: RequestBuilder, session_id: Option<&str>) -> RequestBuilder {
    match session_id {
        Some(id) => request.header(SESSION_HEADER, id),
        None => request,
    }
}

/// The `range(address='…')` segment, refusing addresses that could end the OData literal.
pub fn range_segment(address: &str) -> Result<String, ActionError> {
    let address = address.trim();
    if address.is_empty()
        || !address
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '$' | '_' | '.'))
    {
        return Err(ActionError::invalid_input(
            "address",
            "must be a cell range such as `A1:C5` or a range name (letters, digits, `:`, `$`, `_`, `.`)",
        ));
    }
    Ok(format!("range(address='{address}')"))
}

async fn append_table_rows(call: &Call<'_>, input: AppendTableRows) -> Result<Value, ActionError> {
    let width = input.values.first().map_or(0, Vec::len);
    if width == 0 {
        return Err(ActionError::invalid_input(
            "values",
            "give at least one row with at least one cell",
        ));
    }
    if let Some(i) = input.values.iter().position(|row| row.len() != width) {
        return Err(ActionError::invalid_input(
            &format!("values[{i}]"),
            format!(
                "has {} cells; every row must have {width}",
                input.values[i].len()
            ),
        ));
    }
    let row_count = input.values.len();
    let mut body = json!({ "values": input.values });
    if let Some(index) = input.index {
        body["index"] = json!(index);
    }
    let mut path = drive_path(input.drive_id.as_deref());
    path.extend([
        "items",
        input.item_id.as_str(),
        "workbook",
        "tables",
        input.table.as_str(),
        "rows",
    ]);
    let request = with_session(call.post(&path).json(&body), input.session_id.as_deref());
    let answer = call.send_json(request).await?;
    output(&AppendedRows {
        index: answer["index"].as_i64(),
        row_count,
    })
}

async fn read_range(call: &Call<'_>, input: ReadRange) -> Result<Value, ActionError> {
    let range = range_segment(&input.address)?;
    let mut path = drive_path(input.drive_id.as_deref());
    path.extend([
        "items",
        input.item_id.as_str(),
        "workbook",
        "worksheets",
        input.worksheet.as_str(),
        range.as_str(),
    ]);
    let request = with_session(call.get(&path), input.session_id.as_deref());
    let answer = call.send_json(request).await?;
    let grid = |field: &str| -> Result<Vec<Vec<Value>>, ActionError> {
        match &answer[field] {
            Value::Null => Ok(Vec::new()),
            value => serde_json::from_value(value.clone()).map_err(|_| {
                ActionError::new(
                    ErrorCode::UpstreamUnavailable,
                    format!("Graph's `{field}` is not a list of rows"),
                )
            }),
        }
    };
    output(&Range {
        address: answer["address"].as_str().map(str::to_owned),
        values: grid("values")?,
        text: grid("text")?,
        row_count: answer["rowCount"].as_u64(),
        column_count: answer["columnCount"].as_u64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_cannot_end_the_literal() {
        assert_eq!(
            range_segment("A1:C5").expect("address"),
            "range(address='A1:C5')"
        );
        assert!(range_segment("$A$1:$B$2").is_ok());
        for bad in ["", "A1')/delete", "Sheet1!A1", "A1 B2"] {
            assert!(range_segment(bad).is_err(), "{bad}");
        }
    }
}
