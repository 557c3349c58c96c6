//! What the file connectors (Drive, OneDrive, Dropbox, Excel) share: file content given as
//! text or base64, and paging for providers that fix the page size when a listing starts.
//!
//! [`crate::sdk::collect_pages`] sizes every page to what is still wanted, and drops what a
//! page brings past the limit. Dropbox's `list_folder/continue` and Microsoft Graph's
//! `@odata.nextLink` keep the page size of the first request, so a short page in the middle
//! would make the next one overshoot and lose entries that no cursor points back to.
//! [`collect_fixed_pages`] never drops: it stops before a page that could overshoot and hands
//! back the cursor instead.

use std::future::Future;

use base64::Engine as _;
use schemas::envelope::ErrorCode;
use serde_json::Value;

use crate::error::ActionError;
use crate::sdk::{Listing, Page};

/// The bytes of a file given as `content` (text) or `content_base64`, exactly one.
pub(crate) fn content_bytes(
    content: Option<String>,
    content_base64: Option<String>,
) -> Result<Vec<u8>, ActionError> {
    match (content, content_base64) {
        (Some(text), None) => Ok(text.into_bytes()),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|_| ActionError::invalid_input("content_base64", "is not valid base64")),
        _ => Err(ActionError::invalid_input(
            "content",
            "give `content` or `content_base64`, exactly one",
        )),
    }
}

/// `bytes` as standard base64, for outputs.
pub(crate) fn to_base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The string `field` of a provider's answer, or `upstream_unavailable` naming `provider`.
pub(crate) fn required_str(
    value: &Value,
    field: &str,
    provider: &str,
) -> Result<String, ActionError> {
    value[field].as_str().map(str::to_owned).ok_or_else(|| {
        ActionError::new(
            ErrorCode::UpstreamUnavailable,
            format!("{provider}'s answer has no `{field}`"),
        )
    })
}

/// The string `field` of a provider's answer, when there is one.
pub(crate) fn optional_str(value: &Value, field: &str) -> Option<String> {
    value[field].as_str().map(str::to_owned)
}

/// Follows pages from `cursor` until `limit` items are collected, the provider has no more,
/// or the room left is smaller than `page_size` (the size the listing's first request asked
/// for), so that no page is cut.
///
/// Every page is kept whole: the items exceed `limit` only when the provider sends more than
/// `page_size` (Dropbox calls its page size approximate) or `cursor` comes from a listing
/// started with a larger page size.
pub(crate) async fn collect_fixed_pages<F, Fut>(
    limit: usize,
    page_size: usize,
    cursor: Option<String>,
    mut fetch: F,
) -> Result<Listing, ActionError>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<Page, ActionError>>,
{
    let mut items = Vec::new();
    let mut cursor = cursor;
    loop {
        let page = fetch(cursor.take()).await?;
        let empty = page.items.is_empty();
        items.extend(page.items);
        cursor = page.next.filter(|c| !c.is_empty());
        let room = limit.saturating_sub(items.len());
        // An empty page with a cursor would loop forever on a misbehaving provider.
        if room == 0 || room < page_size || cursor.is_none() || empty {
            return Ok(Listing {
                items,
                next_cursor: cursor,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A provider with `total` items, answering `sizes[i]` items on its `i`th page.
    async fn list(limit: usize, page_size: usize, sizes: &[usize]) -> Listing {
        let total: usize = sizes.iter().sum();
        collect_fixed_pages(limit, page_size, None, |cursor| {
            let start: usize = cursor.as_deref().map_or(0, |c| c.parse().unwrap_or(0));
            let page = sizes
                .iter()
                .scan(0, |at, n| {
                    let from = *at;
                    *at += n;
                    Some((from, *n))
                })
                .find(|(from, _)| *from == start)
                .map_or(0, |(_, n)| n);
            let end = start + page;
            async move {
                Ok(Page {
                    items: (start..end).map(Value::from).collect(),
                    next: (end < total).then(|| end.to_string()),
                })
            }
        })
        .await
        .expect("pages")
    }

    #[tokio::test]
    async fn a_short_page_stops_the_listing_instead_of_losing_entries() {
        // Asked for 5 per page; the first came back with 3, so the next could bring 5 more.
        let listing = list(5, 5, &[3, 5, 5]).await;
        assert_eq!(listing.items.len(), 3);
        assert_eq!(listing.next_cursor.as_deref(), Some("3"));
    }

    #[tokio::test]
    async fn pages_are_followed_while_a_whole_one_fits() {
        let listing = list(6, 2, &[2, 2, 2, 2]).await;
        assert_eq!(listing.items, (0..6).map(Value::from).collect::<Vec<_>>());
        assert_eq!(listing.next_cursor.as_deref(), Some("6"));
        let listing = list(10, 2, &[2, 1]).await;
        assert_eq!(listing.items.len(), 3);
        assert_eq!(listing.next_cursor, None);
    }
}
