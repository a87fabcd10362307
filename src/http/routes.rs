//! Request paths as metric labels: the route's shape with identifiers and
//! values hidden, and a bound on how many distinct ones are kept, so that
//! paths a stranger makes up cannot grow the metrics without end.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

/// Whether request metrics are recorded: labels cost a lock and a string
/// per request, spent only when a metrics listener is on.
static COUNTED: AtomicBool = AtomicBool::new(false);

/// Turns request metrics on (the metrics recorder is installed).
pub fn count_requests() {
    COUNTED.store(true, Ordering::Relaxed);
}

pub fn counting_requests() -> bool {
    COUNTED.load(Ordering::Relaxed)
}

/// Most distinct route labels kept; later new ones count as `other`, so
/// that paths a stranger makes up cannot grow the metrics without bound.
const MAX_ROUTES: usize = 400;

/// The words a route's path is made of (and common event types); any
/// other segment is a value and shows as `{}`.
const ROUTE_WORDS: &[&str] = &[
    "_lmx",
    "_matrix",
    "_synapse",
    "3pid",
    "account",
    "account_data",
    "actions",
    "add",
    "admin",
    "alias",
    "all",
    "available",
    "avatar_url",
    "backfill",
    "backup",
    "ban",
    "bind",
    "caches",
    "capabilities",
    "changes",
    "claim",
    "client",
    "config",
    "content",
    "context",
    "create",
    "createRoom",
    "deactivate",
    "delete",
    "delete_devices",
    "destinations",
    "device_signing",
    "devices",
    "directory",
    "displayname",
    "download",
    "email",
    "enabled",
    "event",
    "event_auth",
    "event_reports",
    "federation",
    "filter",
    "flush",
    "forget",
    "get_missing_events",
    "get_token",
    "global",
    "health",
    "hierarchy",
    "invite",
    "join",
    "joined_members",
    "joined_rooms",
    "key",
    "keys",
    "kick",
    "knock",
    "leave",
    "list",
    "log_level",
    "login",
    "logout",
    "m.login.registration_token",
    "m.reaction",
    "m.room.encrypted",
    "m.room.member",
    "m.room.message",
    "m.room.name",
    "m.room.redaction",
    "m.room.topic",
    "make_join",
    "make_knock",
    "make_leave",
    "media",
    "members",
    "messages",
    "metrics",
    "msisdn",
    "new",
    "notifications",
    "org.lmx.mls",
    "org.matrix.simplified_msc3575",
    "override",
    "password",
    "presence",
    "preview_url",
    "profile",
    "publicRooms",
    "purge",
    "pushers",
    "pushrules",
    "quarantine",
    "query",
    "r0",
    "read_markers",
    "ready",
    "receipt",
    "redact",
    "refresh",
    "register",
    "registration_tokens",
    "relations",
    "report",
    "requestToken",
    "reset_connection",
    "reset_password",
    "retry",
    "room",
    "room_keys",
    "rooms",
    "search",
    "send",
    "sendToDevice",
    "send_join",
    "send_knock",
    "send_leave",
    "send_server_notice",
    "sender",
    "server",
    "server_version",
    "set",
    "signatures",
    "state",
    "state_ids",
    "status",
    "sync",
    "tags",
    "threads",
    "thumbnail",
    "timestamp_to_event",
    "turnServer",
    "typing",
    "unban",
    "unbind",
    "underride",
    "unquarantine",
    "unstable",
    "upgrade",
    "upload",
    "user",
    "user_directory",
    "users",
    "v1",
    "v2",
    "v3",
    "validity",
    "version",
    "versions",
    "voip",
    "whoami",
    "whois",
];

/// A request path as a label: the route's words kept, identifiers, ids
/// and anything else shown as `{}`. Only answered routes get one:
/// `unmatched` otherwise, so that paths a stranger makes up name nothing.
pub fn route_label(path: &str, status: u16) -> String {
    if matches!(status, 404 | 405) {
        return "unmatched".into();
    }
    let shape: Vec<&str> =
        path.split('/').skip(1).map(|seg| if ROUTE_WORDS.contains(&seg) { seg } else { "{}" }).collect();
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
            route_label("/_matrix/client/v3/rooms/!abc:hub.example/send/m.room.message/txn1", 200),
            "/_matrix/client/v3/rooms/{}/send/m.room.message/{}"
        );
        assert_eq!(route_label("/_matrix/federation/v1/send/1700.42", 200), "/_matrix/federation/v1/send/{}");
        assert_eq!(route_label("/_matrix/client/v3/profile/@alice:hub", 200), "/_matrix/client/v3/profile/{}");
        assert_eq!(route_label("/health", 200), "/health");
        assert_eq!(route_label("/_matrix/media/v3/download/hub/AbCd", 200), "/_matrix/media/v3/download/{}/{}");
        assert_eq!(route_label("/made/up/words", 404), "unmatched");
        assert_eq!(
            route_label("/_matrix/client/v3/rooms/!r:h/send/com.example.custom/t", 200),
            "/_matrix/client/v3/rooms/{}/send/{}/{}"
        );
    }
}
