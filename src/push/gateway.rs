//! The push gateway API as the homeserver speaks it: which pushers a client
//! may set, the body of `POST /_matrix/push/v1/notify`, and what an answer
//! means for the notification. Pure: the worker does the I/O.

use std::time::Duration;

use http::StatusCode;
use serde_json::{json, Map, Value};

use crate::wire::Failure;

/// The path every gateway URL must have (push gateway API).
pub const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";
pub const MAX_APP_ID_BYTES: usize = 64;
pub const MAX_PUSHKEY_BYTES: usize = 512;
/// A client-set string's limit (names, language, profile tag).
const MAX_FIELD_BYTES: usize = 512;
/// A pusher's `data` object, as JSON text.
const MAX_DATA_BYTES: usize = 4096;

/// A pusher as `pushers/set` takes it and `GET pushers` shows it: the
/// spec's fields only, checked.
pub fn checked_pusher(body: &Map<String, Value>) -> Result<Value, Failure> {
    let text = |name: &str, limit: usize| -> Result<String, Failure> {
        match body.get(name) {
            Some(Value::String(s)) if s.len() <= limit => Ok(s.clone()),
            Some(Value::String(_)) => Err(Failure::invalid_param(format!("{name} is over {limit} bytes"))),
            Some(_) => Err(Failure::invalid_param(format!("{name} must be a string"))),
            None => Err(Failure::MissingParam(format!("{name} is required"))),
        }
    };
    let (app_id, pushkey) = (text("app_id", MAX_APP_ID_BYTES)?, text("pushkey", MAX_PUSHKEY_BYTES)?);
    if app_id.is_empty() || pushkey.is_empty() {
        return Err(Failure::invalid_param("app_id and pushkey may not be empty"));
    }
    match body.get("kind") {
        None => return Err(Failure::MissingParam("kind is required".into())),
        Some(Value::String(k)) if k == "http" => {}
        Some(Value::String(k)) if k == "email" => {
            return Err(Failure::invalid_param("Email pushers are not served; use an http pusher"))
        }
        Some(_) => return Err(Failure::invalid_param("kind must be \"http\" (or null to delete)")),
    }
    let data = match body.get("data") {
        Some(Value::Object(d)) => d.clone(),
        Some(_) => return Err(Failure::invalid_param("data must be an object")),
        None => return Err(Failure::MissingParam("data is required".into())),
    };
    if serde_json::to_vec(&data).map_or(true, |b| b.len() > MAX_DATA_BYTES) {
        return Err(Failure::invalid_param(format!("data is over {MAX_DATA_BYTES} bytes")));
    }
    let url =
        data.get("url").and_then(Value::as_str).ok_or_else(|| Failure::MissingParam("data.url is required".into()))?;
    check_url(url)?;
    if let Some(format) = data.get("format") {
        if format != "event_id_only" {
            return Err(Failure::invalid_param("data.format may only be \"event_id_only\""));
        }
    }
    let mut pusher = json!({
        "kind": "http",
        "app_id": app_id,
        "pushkey": pushkey,
        "app_display_name": text("app_display_name", MAX_FIELD_BYTES)?,
        "device_display_name": text("device_display_name", MAX_FIELD_BYTES)?,
        "lang": text("lang", MAX_FIELD_BYTES)?,
        "data": data,
    });
    match body.get("profile_tag") {
        None | Some(Value::Null) => {}
        Some(_) => pusher["profile_tag"] = json!(text("profile_tag", MAX_FIELD_BYTES)?),
    }
    Ok(pusher)
}

/// A gateway URL: `http` or `https`, with a host and the notify path.
pub fn check_url(url: &str) -> Result<(), Failure> {
    let uri: http::Uri = url.parse().map_err(|_| Failure::invalid_param("data.url is not a URL"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none_or(str::is_empty) {
        return Err(Failure::invalid_param("data.url must be an http or https URL with a host"));
    }
    if uri.path() != NOTIFY_PATH || uri.query().is_some() {
        return Err(Failure::invalid_param(format!("data.url's path must be {NOTIFY_PATH}")));
    }
    Ok(())
}

/// What the gateway is told of one notification.
pub struct Notice<'a> {
    /// The event (its `type`, `sender`, `content`, `state_key` are read).
    pub event: &'a Value,
    pub room_id: &'a str,
    pub event_id: &'a str,
    pub sender_display_name: Option<&'a str>,
    pub room_name: Option<&'a str>,
    pub room_alias: Option<&'a str>,
    /// The user the push is for (to tell whether they are the target).
    pub user: &'a str,
    /// Unread notifications across the user's rooms (the badge).
    pub unread: u64,
    pub tweaks: &'a Value,
    /// `push.include_content`.
    pub include_content: bool,
}

/// The body of `POST /_matrix/push/v1/notify` for one pusher.
pub fn notify_body(pusher: &Value, notice: &Notice<'_>, pushkey_ts: i64) -> Value {
    let mut data = pusher["data"].as_object().cloned().unwrap_or_default();
    // The URL is the homeserver's business, not the app's.
    data.remove("url");
    let ids_only = data.get("format").and_then(Value::as_str) == Some("event_id_only");
    // Encrypted messages cannot be told apart: they go as urgent, as
    // anything that rings or highlights.
    let urgent = notice.tweaks.get("highlight") == Some(&json!(true))
        || notice.tweaks.get("sound").is_some()
        || notice.event["type"] == "m.room.encrypted";
    let device = json!({
        "app_id": pusher["app_id"],
        "pushkey": pusher["pushkey"],
        "pushkey_ts": pushkey_ts / 1000,
        "data": data,
        "tweaks": notice.tweaks,
    });
    let mut n = json!({
        "event_id": notice.event_id,
        "room_id": notice.room_id,
        // Counts of zero are left out (push gateway API).
        "counts": if notice.unread > 0 { json!({"unread": notice.unread}) } else { json!({}) },
        "prio": if urgent { "high" } else { "low" },
        "devices": [device],
    });
    if ids_only {
        return json!({ "notification": n });
    }
    let e = notice.event;
    n["type"] = e["type"].clone();
    n["sender"] = e["sender"].clone();
    let optional = [
        ("sender_display_name", notice.sender_display_name),
        ("room_name", notice.room_name),
        ("room_alias", notice.room_alias),
    ];
    for (name, value) in optional {
        if let Some(v) = value {
            n[name] = json!(v);
        }
    }
    if e["type"] == "m.room.member" {
        n["membership"] = e["content"]["membership"].clone();
        n["user_is_target"] = json!(e["state_key"].as_str() == Some(notice.user));
    }
    if notice.include_content && e["content"].is_object() {
        n["content"] = e["content"].clone();
    }
    json!({ "notification": n })
}

/// What became of a notification sent to a gateway.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// The gateway no longer takes this pushkey: the pusher must go.
    Rejected,
    /// Refused for good (a 4xx): retrying would not help.
    Dropped(String),
    /// Worth trying again later.
    Retry(String),
}

/// The outcome of a gateway's answer.
pub fn outcome(status: StatusCode, body: &[u8], pushkey: &str) -> Outcome {
    if status.is_success() {
        let answer: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let rejected = answer["rejected"].as_array().is_some_and(|r| r.iter().any(|k| k.as_str() == Some(pushkey)));
        return if rejected { Outcome::Rejected } else { Outcome::Delivered };
    }
    let why = format!("the gateway answered {}", status.as_u16());
    if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::REQUEST_TIMEOUT || !status.is_client_error() {
        Outcome::Retry(why)
    } else {
        Outcome::Dropped(why)
    }
}

/// The longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// How long to wait after `failures` failed attempts in a row: one second,
/// doubling, at most an hour, or what the gateway asked for (`Retry-After`,
/// within the same hour); `jitter` (0 to 1) spreads pushers that failed
/// together by up to a quarter more.
pub fn backoff(failures: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
    let base = Duration::from_secs(1u64 << failures.saturating_sub(1).min(12)).min(MAX_BACKOFF);
    let wait = retry_after.map_or(base, |r| r.clamp(base, MAX_BACKOFF));
    wait.mul_f64(1.0 + jitter.clamp(0.0, 1.0) / 4.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn good() -> Value {
        json!({"kind": "http", "app_id": "im.app", "pushkey": "k1", "app_display_name": "App",
               "device_display_name": "Phone", "lang": "en", "profile_tag": "t",
               "data": {"url": "https://push.example/_matrix/push/v1/notify", "extra": 1}})
    }

    #[test]
    fn pushers_are_checked_field_by_field() {
        let p = checked_pusher(&body(good())).unwrap();
        assert_eq!(p["profile_tag"], "t");
        assert_eq!(p["data"]["extra"], 1, "data is the app's and kept");
        let refuse = |change: &dyn Fn(&mut Value), why: &str| {
            let mut v = good();
            change(&mut v);
            assert!(checked_pusher(&body(v)).is_err(), "{why}");
        };
        refuse(&|v| v["kind"] = json!("email"), "email pushers are not served");
        refuse(&|v| v["kind"] = json!("carrier pigeon"), "unknown kind");
        refuse(&|v| v["data"]["url"] = json!("https://push.example/notify"), "wrong path");
        refuse(&|v| v["data"]["url"] = json!("ftp://push.example/_matrix/push/v1/notify"), "wrong scheme");
        refuse(&|v| v["data"]["url"] = json!("https://push.example/_matrix/push/v1/notify?x=1"), "a query");
        refuse(&|v| v["data"]["format"] = json!("full"), "unknown format");
        refuse(&|v| v["app_id"] = json!("a".repeat(65)), "app_id too long");
        refuse(&|v| v["pushkey"] = json!("k".repeat(513)), "pushkey too long");
        refuse(&|v| v["data"] = json!("url"), "data not an object");
        refuse(&|v| v["data"]["blob"] = json!("x".repeat(5000)), "data too large");
        refuse(&|v| v["pushkey"] = json!(""), "an empty pushkey");
        let mut plain = good();
        plain["lang"] = json!("");
        assert!(checked_pusher(&body(plain)).is_ok(), "empty names and language are the client's business");
        for field in ["kind", "app_id", "pushkey", "app_display_name", "device_display_name", "lang", "data"] {
            refuse(&|v| drop(v.as_object_mut().unwrap().remove(field)), field);
        }
    }

    #[test]
    fn the_notify_body_follows_the_pusher_format() {
        let pusher = checked_pusher(&body(good())).unwrap();
        let event = json!({"type": "m.room.message", "sender": "@a:x", "content": {"body": "hi", "msgtype": "m.text"}});
        let tweaks = json!({"sound": "default"});
        let notice = Notice {
            event: &event,
            room_id: "!r:x",
            event_id: "$e",
            sender_display_name: Some("Alice"),
            room_name: None,
            room_alias: Some("#r:x"),
            user: "@b:x",
            unread: 3,
            tweaks: &tweaks,
            include_content: true,
        };
        let n = &notify_body(&pusher, &notice, 1_700_000_000_000)["notification"];
        assert_eq!(n["counts"]["unread"], 3);
        assert_eq!(n["prio"], "high", "a sound makes it urgent");
        assert_eq!(n["content"]["body"], "hi");
        assert_eq!(n["sender_display_name"], "Alice");
        assert!(n.get("room_name").is_none());
        assert_eq!(n["devices"][0]["pushkey_ts"], 1_700_000_000);
        assert!(n["devices"][0]["data"].get("url").is_none(), "the URL is not sent");
        assert_eq!(n["devices"][0]["tweaks"]["sound"], "default");
        let mut ids_only = pusher.clone();
        ids_only["data"]["format"] = json!("event_id_only");
        let n = &notify_body(&ids_only, &notice, 0)["notification"];
        assert!(n.get("content").is_none() && n.get("sender").is_none() && n.get("type").is_none());
        assert_eq!((n["event_id"].as_str(), n["room_id"].as_str()), (Some("$e"), Some("!r:x")));
        let quiet = Notice { include_content: false, tweaks: &json!({}), unread: 0, ..notice };
        let n = &notify_body(&pusher, &quiet, 0)["notification"];
        assert!(n.get("content").is_none());
        assert_eq!(n["prio"], "low");
        assert_eq!(n["counts"], json!({}), "zero counts are left out");
        let encrypted = json!({"type": "m.room.encrypted", "sender": "@a:x", "content": {"ciphertext": "..."}});
        let secret = Notice { event: &encrypted, ..quiet };
        assert_eq!(notify_body(&pusher, &secret, 0)["notification"]["prio"], "high", "encrypted messages go urgent");
    }

    #[test]
    fn answers_decide_what_happens_to_a_notification() {
        assert_eq!(outcome(StatusCode::OK, br#"{"rejected": []}"#, "k"), Outcome::Delivered);
        assert_eq!(outcome(StatusCode::OK, b"not json", "k"), Outcome::Delivered);
        assert_eq!(outcome(StatusCode::OK, br#"{"rejected": ["k"]}"#, "k"), Outcome::Rejected);
        assert!(matches!(outcome(StatusCode::BAD_REQUEST, b"", "k"), Outcome::Dropped(_)));
        assert!(matches!(outcome(StatusCode::TOO_MANY_REQUESTS, b"", "k"), Outcome::Retry(_)));
        assert!(matches!(outcome(StatusCode::BAD_GATEWAY, b"", "k"), Outcome::Retry(_)));
        assert_eq!(backoff(1, None, 0.0).as_secs(), 1);
        assert_eq!(backoff(4, None, 0.0).as_secs(), 8);
        assert_eq!(backoff(40, None, 0.0).as_secs(), 3600);
        assert_eq!(backoff(1, Some(Duration::from_secs(30)), 0.0).as_secs(), 30, "Retry-After is heeded");
        assert_eq!(backoff(1, Some(Duration::from_secs(1 << 20)), 0.0).as_secs(), 3600, "within an hour");
        assert_eq!(backoff(4, None, 1.0).as_secs(), 10, "jitter adds up to a quarter");
    }
}
