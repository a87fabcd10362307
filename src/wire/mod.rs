//! The edge of both APIs: the failure a request ends in, typed by its
//! cause, and the one pure function that turns a failure into Matrix's
//! error answer for each surface (client, federation). Handlers say what
//! went wrong; only `answer` decides the status, the `errcode` and the
//! words. A cause inside this server (storage, a stopped worker, stored
//! data that does not parse) is logged once where the answer is sent
//! (`Failure::log_internal`) and never described to the caller. Typed
//! request and answer bodies live in `client` and `federation`.

pub mod client;
mod failure;
pub mod federation;
pub mod public_rooms;

pub use failure::{Failure, Internal, Taken};

use http::StatusCode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::core::json::Object;

use crate::http::BodyError;
use crate::room::RoomError;

/// Which API a request came in on: the few causes that read differently
/// to a client and to another server are told apart here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    Client,
    Federation,
}

/// An error answer: status and `{"errcode", "error", ...}` body.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: StatusCode,
    pub errcode: &'static str,
    pub body: Value,
}

impl Answer {
    pub fn into_response(self) -> ::http::Response<crate::http::Body> {
        crate::http::json_response(self.status, &self.body)
    }
}

/// Reads a typed body, borrowing its strings: a field missing or of the
/// wrong type is `400 M_BAD_JSON`.
pub fn read<'a, T: Deserialize<'a>>(body: &'a Object) -> Result<T, Failure> {
    T::deserialize(body).map_err(|e| Failure::BadJson(e.to_string()))
}

/// Takes a typed body apart, moving its values.
pub fn take<T: DeserializeOwned>(body: Object) -> Result<T, Failure> {
    serde_json::from_value(Value::Object(body)).map_err(|e| Failure::BadJson(e.to_string()))
}

/// A typed answer as the JSON the handlers return.
pub fn to_json<T: Serialize>(answer: &T) -> Result<Value, Failure> {
    serde_json::to_value(answer).map_err(Failure::failed)
}

const INTERNAL: &str = "Internal server error";

/// The answer `surface` gives for `failure`.
pub fn answer(surface: Surface, failure: &Failure) -> Answer {
    use Failure as F;
    use StatusCode as S;
    let mut extra = Map::new();
    let (status, errcode, words): (StatusCode, &'static str, String) = match failure {
        F::Unrecognized => (S::NOT_FOUND, "M_UNRECOGNIZED", "Unrecognized request".into()),
        F::MethodNotAllowed => (S::METHOD_NOT_ALLOWED, "M_UNRECOGNIZED", "Method not allowed on this endpoint".into()),
        F::Body(b) => body_answer(b, &mut extra),
        F::BadJson(m) => (S::BAD_REQUEST, "M_BAD_JSON", m.clone()),
        F::MissingParam(m) => (S::BAD_REQUEST, "M_MISSING_PARAM", m.clone()),
        F::InvalidParam(m) => (S::BAD_REQUEST, "M_INVALID_PARAM", m.clone()),
        F::BadRequest(m) => (S::BAD_REQUEST, "M_UNKNOWN", m.clone()),
        F::BadState(m) => (S::BAD_REQUEST, "M_BAD_STATE", m.clone()),
        F::MissingToken => (S::UNAUTHORIZED, "M_MISSING_TOKEN", "Missing access token".into()),
        F::UnknownToken => {
            extra.insert("soft_logout".into(), json!(false));
            (S::UNAUTHORIZED, "M_UNKNOWN_TOKEN", "Unknown access token".into())
        }
        F::ExpiredToken => {
            extra.insert("soft_logout".into(), json!(true));
            (S::UNAUTHORIZED, "M_UNKNOWN_TOKEN", "The access token has expired".into())
        }
        F::UnknownPos => (S::BAD_REQUEST, "M_UNKNOWN_POS", "Unknown position: start again without one".into()),
        F::UserDeactivated => (S::FORBIDDEN, "M_USER_DEACTIVATED", "This account has been deactivated".into()),
        F::ThreepidUnsupported => (
            S::BAD_REQUEST,
            "M_THREEPID_MEDIUM_NOT_SUPPORTED",
            "This server does not support email addresses or phone numbers".into(),
        ),
        F::AuthNeeded { stage, session, why, failed } => {
            extra.insert("flows".into(), json!([{ "stages": [stage] }]));
            extra.insert("params".into(), json!({}));
            extra.insert("session".into(), json!(session));
            if *failed {
                extra.insert("completed".into(), json!([]));
            }
            (S::UNAUTHORIZED, "M_FORBIDDEN", why.to_string())
        }
        // Item 156: a request that authenticates nothing is `401 M_FORBIDDEN`.
        F::BadSignature(m) => (S::UNAUTHORIZED, "M_FORBIDDEN", format!("Signature error on request: {m}")),
        F::Forbidden(m) => (S::FORBIDDEN, "M_FORBIDDEN", m.clone()),
        F::NotFound(m) => (S::NOT_FOUND, "M_NOT_FOUND", m.clone()),
        F::Taken(Taken::UserId) => (S::BAD_REQUEST, "M_USER_IN_USE", "User ID already taken".into()),
        F::Taken(Taken::AliasOnCreate) => (S::BAD_REQUEST, "M_ROOM_IN_USE", "Room alias already taken".into()),
        F::Taken(Taken::Alias) => (S::CONFLICT, "M_ROOM_IN_USE", "Room alias already exists".into()),
        F::InvalidUsername(m) => (S::BAD_REQUEST, "M_INVALID_USERNAME", m.clone()),
        F::WeakPassword(m) => (S::BAD_REQUEST, "M_WEAK_PASSWORD", m.clone()),
        F::LimitExceeded { why, retry_after_ms } => {
            extra.insert("retry_after_ms".into(), json!(retry_after_ms));
            (S::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED", why.clone())
        }
        F::TooLarge(m) => (S::PAYLOAD_TOO_LARGE, "M_TOO_LARGE", m.clone()),
        F::RemoteTooLarge(m) => (S::BAD_GATEWAY, "M_TOO_LARGE", m.clone()),
        F::NotYetUploaded => (S::GATEWAY_TIMEOUT, "M_NOT_YET_UPLOADED", "The media has not been uploaded yet".into()),
        F::CannotOverwriteMedia => {
            (S::CONFLICT, "M_CANNOT_OVERWRITE_MEDIA", "This media id already has its content".into())
        }
        F::InvalidSignature(m) => (S::BAD_REQUEST, "M_INVALID_SIGNATURE", m.clone()),
        F::WrongRoomKeysVersion(current) => {
            extra.insert("current_version".into(), json!(current));
            (S::FORBIDDEN, "M_WRONG_ROOM_KEYS_VERSION", "Wrong backup version".into())
        }
        F::WrongServer { hub } => {
            extra.insert("hub_server".into(), json!(hub));
            (S::BAD_REQUEST, "M_WRONG_SERVER", "This server is not the room's hub".into())
        }
        F::UnsupportedRoomVersion(v) => {
            // A client asked to create one; a server asked to take part in one.
            let code = match surface {
                Surface::Client => "M_UNSUPPORTED_ROOM_VERSION",
                Surface::Federation => {
                    extra.insert("room_version".into(), json!(v));
                    "M_INCOMPATIBLE_ROOM_VERSION"
                }
            };
            (S::BAD_REQUEST, code, format!("Room version {v} is not supported"))
        }
        F::Room(e) => room_answer(surface, e, &mut extra),
        F::Unavailable(m) => (S::SERVICE_UNAVAILABLE, "M_UNKNOWN", m.clone()),
        F::Remote(m) => (S::BAD_GATEWAY, "M_UNKNOWN", m.clone()),
        F::Internal(_) => (S::INTERNAL_SERVER_ERROR, "M_UNKNOWN", INTERNAL.into()),
    };
    extra.insert("errcode".into(), json!(errcode));
    extra.insert("error".into(), json!(words));
    // A first user-interactive challenge is not an error of the client's.
    if matches!(failure, F::AuthNeeded { failed: false, .. }) {
        extra.remove("errcode");
        extra.remove("error");
    }
    Answer { status, errcode, body: Value::Object(extra) }
}

fn body_answer(b: &BodyError, extra: &mut Map<String, Value>) -> (StatusCode, &'static str, String) {
    use StatusCode as S;
    match b {
        BodyError::TooLarge(limit) => {
            (S::PAYLOAD_TOO_LARGE, "M_TOO_LARGE", format!("Request body is over {limit} bytes"))
        }
        BodyError::Unreadable(m) => (S::BAD_REQUEST, "M_UNKNOWN", format!("Could not read body: {m}")),
        BodyError::Busy => {
            extra.insert("retry_after_ms".into(), json!(1_000));
            (S::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED", "The server is receiving too much at once".into())
        }
        BodyError::Slow => (S::REQUEST_TIMEOUT, "M_UNKNOWN", "The request body took too long".into()),
        BodyError::NotJson(m) => (S::BAD_REQUEST, "M_NOT_JSON", format!("Body is not valid JSON: {m}")),
        BodyError::NotObject => (S::BAD_REQUEST, "M_BAD_JSON", "Body must be a JSON object".into()),
    }
}

fn room_answer(surface: Surface, e: &RoomError, extra: &mut Map<String, Value>) -> (StatusCode, &'static str, String) {
    use StatusCode as S;
    match e {
        RoomError::Forbidden(m) => (S::FORBIDDEN, "M_FORBIDDEN", m.clone()),
        RoomError::BadEvent(m) => (S::BAD_REQUEST, "M_BAD_JSON", m.clone()),
        RoomError::TooLarge(_) => (S::PAYLOAD_TOO_LARGE, "M_TOO_LARGE", e.to_string()),
        // To another server: it asked the wrong one. To a client: this
        // server lost track of its own room's hub.
        RoomError::NotHub => match surface {
            Surface::Federation => (S::BAD_REQUEST, "M_WRONG_SERVER", e.to_string()),
            Surface::Client => (S::BAD_GATEWAY, "M_UNKNOWN", e.to_string()),
        },
        // A participant's send the hub has not sequenced yet: the client
        // retries with the same transaction id.
        RoomError::Pending => {
            extra.insert("retry_after_ms".into(), json!(1_000));
            (S::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED", e.to_string())
        }
        RoomError::Remote(m) => (S::BAD_GATEWAY, "M_UNKNOWN", m.clone()),
        RoomError::Storage(_) | RoomError::Gone => (S::INTERNAL_SERVER_ERROR, "M_UNKNOWN", INTERNAL.into()),
        // The process that owns the room could not be reached, or has not
        // said where it serves: the caller comes back (the room moves once
        // that process is gone).
        RoomError::Elsewhere(_) => {
            extra.insert("retry_after_ms".into(), json!(1_000));
            (S::SERVICE_UNAVAILABLE, "M_UNKNOWN", e.public_reason())
        }
    }
}

#[cfg(test)]
mod tests;
