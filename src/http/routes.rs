//! Request paths as metric labels: the route's shape with identifiers and
//! values hidden, and a bound on how many distinct ones are kept, so that
//! paths a stranger makes up cannot grow the metrics without end.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

/// Most distinct route labels kept; later new ones count as `other`, so
/// that paths a stranger makes up cannot grow the metrics without bound.
const MAX_ROUTES: usize = 400;

/// A request path as a label: identifiers, ids and anything unusual become
/// `{}`, leaving the route's shape.
pub fn route_label(path: &str) -> String {
    let shape: Vec<&str> = path
        .split('/')
        .skip(1)
        .map(|seg| {
            let plain = !seg.is_empty()
                && seg.len() <= 40
                && seg.bytes().all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'.')
                && !seg.starts_with('.');
            if plain {
                seg
            } else if seg.chars().next().is_some_and(|c| c.is_ascii_digit()) && seg.bytes().all(|b| b.is_ascii_digit())
            {
                // Versions (`v3`) are plain; bare numbers are values.
                "{}"
            } else if matches!(seg, "v1" | "v2" | "v3" | "r0") {
                seg
            } else {
                "{}"
            }
        })
        .collect();
    let label = format!("/{}", shape.join("/"));
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let mut seen = SEEN.get_or_init(Default::default).lock().expect("poisoned");
    if seen.contains(&label) {
        return label;
    }
    if seen.len() >= MAX_ROUTES {
        return "other".into();
    }
    seen.insert(label.clone());
    label
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_labels_keep_the_shape_and_hide_values() {
        assert_eq!(
            route_label("/_matrix/client/v3/rooms/!abc:hub.example/send/m.room.message/txn1"),
            "/_matrix/client/v3/rooms/{}/send/m.room.message/{}"
        );
        assert_eq!(route_label("/_matrix/federation/v1/send/1700.42"), "/_matrix/federation/v1/send/{}");
        assert_eq!(route_label("/_matrix/client/v3/profile/@alice:hub"), "/_matrix/client/v3/profile/{}");
        assert_eq!(route_label("/health"), "/health");
        assert_eq!(route_label("/_matrix/media/v3/download/hub/AbCd"), "/_matrix/media/v3/download/hub/{}");
    }
}
