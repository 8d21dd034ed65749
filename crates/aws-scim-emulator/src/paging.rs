//! List query parameters and the two page shapes (first page only, or cursor mode).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::errors::ApiError;
use super::LIST_RESPONSE_URN;

/// Largest and default page size.
pub(crate) const MAX_COUNT: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CursorParam {
    /// No `cursor` parameter: first page only, `totalResults` = page size.
    Absent,
    /// Bare `cursor` (or `cursor=`): first page in cursor mode.
    Start,
    /// `cursor=<nextCursor>`.
    Continue(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListParams {
    pub filter: Option<String>,
    pub count: usize,
    pub cursor: CursorParam,
}

/// Parses a list query string. `startIndex`, `attributes`, `excludedAttributes` and unknown
/// parameters are ignored.
pub(crate) fn list_params(query: &str) -> Result<ListParams, ApiError> {
    let mut params = ListParams {
        filter: None,
        count: MAX_COUNT,
        cursor: CursorParam::Absent,
    };
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "filter" => params.filter = Some(value.into_owned()),
            "count" => {
                params.count = value
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_COUNT).contains(n))
                    .ok_or_else(|| {
                        ApiError::constraint(
                            "count",
                            &format!("Member must be an integer between 1 and {MAX_COUNT}"),
                        )
                    })?;
            }
            "cursor" => {
                params.cursor = if value.is_empty() {
                    CursorParam::Start
                } else {
                    CursorParam::Continue(value.into_owned())
                }
            }
            _ => {}
        }
    }
    Ok(params)
}

/// FNV-1a over the resource type and filter: what a cursor is bound to.
fn fingerprint(kind: &str, filter: Option<&str>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let filter_bytes = filter.map(str::as_bytes).unwrap_or(b"\x01<none>");
    for b in kind
        .bytes()
        .chain([0u8])
        .chain(filter_bytes.iter().copied())
    {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

fn encode_cursor(kind: &str, filter: Option<&str>, after: u64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}:{:016x}:{after}", fingerprint(kind, filter)))
}

fn decode_cursor(token: &str, kind: &str, filter: Option<&str>) -> Result<u64, ApiError> {
    let invalid = || ApiError::bad_request("The cursor is invalid.");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let mut parts = text.splitn(3, ':');
    let (Some(token_kind), Some(print), Some(after)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid());
    };
    let after = after.parse::<u64>().map_err(|_| invalid())?;
    if token_kind != kind || print != format!("{:016x}", fingerprint(kind, filter)) {
        return Err(ApiError::bad_request(
            "The filter of this request does not match the filter used to obtain the cursor.",
        ));
    }
    Ok(after)
}

/// Builds the list response for `items` (sequence number, resource), already filtered and in
/// creation order; only the page's resources are rendered, so listing a large group a page at a
/// time costs each page what it returns.
pub(crate) fn page<T>(
    kind: &str,
    items: Vec<(u64, T)>,
    params: &ListParams,
    render: impl Fn(T) -> Value,
) -> Result<Value, ApiError> {
    let after = match &params.cursor {
        CursorParam::Continue(token) => decode_cursor(token, kind, params.filter.as_deref())?,
        _ => 0,
    };
    let mut remaining = items.into_iter().filter(|(seq, _)| *seq > after).peekable();
    let mut resources = Vec::new();
    let mut last_seq = after;
    while resources.len() < params.count {
        let Some((seq, item)) = remaining.next() else {
            break;
        };
        last_seq = seq;
        resources.push(render(item));
    }
    let more = remaining.peek().is_some();
    let n = resources.len();
    let mut out = Map::new();
    if params.cursor == CursorParam::Absent {
        out.insert("totalResults".to_owned(), json!(n));
        out.insert("itemsPerPage".to_owned(), json!(n));
        out.insert("startIndex".to_owned(), json!(1));
    } else {
        out.insert("itemsPerPage".to_owned(), json!(n));
        if more {
            out.insert(
                "nextCursor".to_owned(),
                json!(encode_cursor(kind, params.filter.as_deref(), last_seq)),
            );
        }
    }
    out.insert("schemas".to_owned(), json!([LIST_RESPONSE_URN]));
    out.insert("Resources".to_owned(), Value::Array(resources));
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(n: u64) -> Vec<(u64, Value)> {
        (1..=n).map(|i| (i, json!(i))).collect()
    }

    #[test]
    fn bare_cursor_starts_cursor_mode_and_count_defaults_to_100() {
        let p = list_params("cursor&filter=userName%20eq%20%22a%22").ok();
        assert_eq!(
            p,
            Some(ListParams {
                filter: Some("userName eq \"a\"".into()),
                count: 100,
                cursor: CursorParam::Start
            })
        );
    }

    #[test]
    fn count_outside_one_to_hundred_is_refused() {
        assert!(list_params("count=0").is_err());
        assert!(list_params("count=101").is_err());
        assert!(list_params("count=x").is_err());
        assert_eq!(
            list_params("count=100&startIndex=5").map(|p| p.count),
            Ok(100)
        );
    }

    #[test]
    fn cursor_pages_walk_everything_and_the_last_has_no_next_cursor() {
        let mut params = ListParams {
            filter: None,
            count: 2,
            cursor: CursorParam::Start,
        };
        let mut seen = Vec::new();
        loop {
            let page = page("Users", items(5), &params, |v| v).unwrap_or_default();
            seen.extend(page["Resources"].as_array().cloned().unwrap_or_default());
            match page.get("nextCursor").and_then(Value::as_str) {
                Some(c) => params.cursor = CursorParam::Continue(c.to_owned()),
                None => break,
            }
        }
        assert_eq!(seen, (1..=5).map(|i| json!(i)).collect::<Vec<_>>());
    }

    #[test]
    fn a_cursor_is_bound_to_its_filter_and_resource_type() {
        let token = encode_cursor("Users", Some("a"), 1);
        assert!(decode_cursor(&token, "Users", Some("a")).is_ok());
        assert!(decode_cursor(&token, "Users", Some("b")).is_err());
        assert!(decode_cursor(&token, "Users", None).is_err());
        assert!(decode_cursor(&token, "Groups", Some("a")).is_err());
        assert!(decode_cursor("!!", "Users", None).is_err());
    }
}
