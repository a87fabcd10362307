//! A `publicRooms` request as both surfaces take it: from the query of a
//! `GET` or the body of a `POST`.

use serde_json::{json, Value};

use super::Failure;
use crate::core::json::Object;
use crate::http::query_get;

/// Rooms one page holds, at most.
pub const MAX_PAGE: usize = 500;

#[derive(Debug, PartialEq, Eq)]
pub struct PublicRoomsQuery {
    pub limit: usize,
    /// The position to go on from, as the last page's `next_batch` had it.
    pub since: Option<String>,
    /// `filter.generic_search_term` (a `POST` only).
    pub term: Option<String>,
}

impl PublicRoomsQuery {
    /// `body` is the `POST` body, `None` for a `GET`.
    pub fn parse(query: &[(String, String)], body: Option<&Object>) -> PublicRoomsQuery {
        let (limit, since, term) = match body {
            Some(body) => {
                let term = body.get("filter").and_then(|f| f.get("generic_search_term")).and_then(Value::as_str);
                let since = body.get("since").and_then(Value::as_str);
                (body.get("limit").and_then(Value::as_u64), since.map(str::to_owned), term.map(str::to_owned))
            }
            None => {
                let limit = query_get(query, "limit").and_then(|l| l.parse().ok());
                (limit, query_get(query, "since").map(str::to_owned), None)
            }
        };
        let limit = usize::try_from(limit.unwrap_or(100)).unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
        PublicRoomsQuery { limit, since, term }
    }

    /// The position `since` names in this server's list.
    pub fn offset(&self) -> Result<usize, Failure> {
        match &self.since {
            None => Ok(0),
            Some(s) => s.parse().map_err(|_| Failure::invalid_param("Unknown since token")),
        }
    }

    /// The same request as a `POST` body, to ask another server.
    pub fn body(&self) -> Value {
        let mut body = json!({ "limit": self.limit });
        if let Some(s) = &self.since {
            body["since"] = json!(s);
        }
        if let Some(t) = &self.term {
            body["filter"] = json!({ "generic_search_term": t });
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_and_post_read_alike() {
        let query = vec![("limit".to_owned(), "7".to_owned()), ("since".to_owned(), "14".to_owned())];
        let got = PublicRoomsQuery::parse(&query, None);
        assert_eq!((got.limit, got.offset().unwrap(), got.term), (7, 14, None));
        let body = json!({"limit": 100_000, "filter": {"generic_search_term": "tea"}});
        let posted = PublicRoomsQuery::parse(&[], body.as_object());
        assert_eq!((posted.limit, posted.term.as_deref()), (MAX_PAGE, Some("tea")));
        assert_eq!(posted.body(), json!({"limit": MAX_PAGE, "filter": {"generic_search_term": "tea"}}));
        let bad = PublicRoomsQuery { limit: 1, since: Some("x".into()), term: None };
        assert!(bad.offset().is_err());
    }
}
