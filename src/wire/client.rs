//! Typed bodies of the Client-Server API: what a request may carry (read
//! with `wire::read`, borrowing from the parsed body) and what an answer
//! says. A field of the wrong type is `400 M_BAD_JSON`, as Synapse answers,
//! never silently taken for its default.

use serde::{Deserialize, Serialize};

use crate::core::json::Object;

/// `POST /createRoom`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CreateRoom<'a> {
    #[serde(borrow)]
    pub room_version: Option<&'a str>,
    pub visibility: Option<&'a str>,
    pub preset: Option<&'a str>,
    pub invite: Vec<&'a str>,
    pub creation_content: Option<Object>,
    pub power_level_content_override: Option<Object>,
    pub initial_state: Vec<InitialState<'a>>,
    pub room_alias_name: Option<&'a str>,
    pub name: Option<&'a str>,
    pub topic: Option<&'a str>,
    pub is_direct: bool,
}

#[derive(Debug, Deserialize)]
pub struct InitialState<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    #[serde(default)]
    pub state_key: &'a str,
    pub content: Object,
}

/// The `auth` of a user-interactive exchange.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AuthData<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Option<&'a str>,
    pub session: Option<&'a str>,
    pub password: Option<&'a str>,
    /// `m.login.registration_token`.
    pub token: Option<&'a str>,
}

/// A request whose only typed part is its user-interactive `auth`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Authenticated<'a> {
    #[serde(borrow)]
    pub auth: Option<AuthData<'a>>,
}

/// `POST /register`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Register<'a> {
    #[serde(borrow)]
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    pub auth: Option<AuthData<'a>>,
    pub inhibit_login: bool,
    pub device_id: Option<&'a str>,
    pub initial_device_display_name: Option<&'a str>,
    /// The client takes a refresh token (and an expiring access token).
    pub refresh_token: bool,
}

/// `POST /login` (the password and token flows).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Login<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Option<&'a str>,
    pub identifier: Option<Identifier<'a>>,
    /// The deprecated form of `identifier.user`.
    pub user: Option<&'a str>,
    pub password: Option<&'a str>,
    /// `m.login.token`.
    pub token: Option<&'a str>,
    pub device_id: Option<&'a str>,
    pub initial_device_display_name: Option<&'a str>,
    pub refresh_token: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Identifier<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Option<&'a str>,
    pub user: Option<&'a str>,
}

/// Synapse's shared-secret registration (`POST /_synapse/admin/v1/register`).
#[derive(Debug, Deserialize)]
pub struct SharedSecretRegister<'a> {
    pub nonce: &'a str,
    pub username: &'a str,
    pub password: &'a str,
    pub mac: &'a str,
    #[serde(default)]
    pub admin: bool,
    #[serde(default)]
    pub user_type: Option<&'a str>,
}

/// `invite`, `kick`, `ban`, `unban`: who, and why.
#[derive(Debug, Deserialize)]
pub struct MemberTarget<'a> {
    pub user_id: &'a str,
    #[serde(default)]
    pub reason: Option<&'a str>,
}

/// `join`, `leave`, `knock`: an optional reason.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Reason<'a> {
    #[serde(borrow)]
    pub reason: Option<&'a str>,
}

/// `PUT /rooms/{roomId}/typing/{userId}`.
#[derive(Debug, Deserialize)]
pub struct Typing {
    pub typing: bool,
    #[serde(default)]
    pub timeout: Option<u64>,
}

/// `POST /rooms/{roomId}/receipt/...`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Receipt<'a> {
    #[serde(borrow)]
    pub thread_id: Option<&'a str>,
}

/// `POST /rooms/{roomId}/read_markers`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ReadMarkers<'a> {
    #[serde(rename = "m.fully_read", borrow)]
    pub fully_read: Option<&'a str>,
    #[serde(rename = "m.read")]
    pub read: Option<&'a str>,
    #[serde(rename = "m.read.private")]
    pub read_private: Option<&'a str>,
}

/// `PUT /presence/{userId}/status`.
#[derive(Debug, Deserialize)]
pub struct Presence<'a> {
    pub presence: &'a str,
    #[serde(default)]
    pub status_msg: Option<&'a str>,
}

/// `PUT /devices/{deviceId}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DeviceUpdate<'a> {
    #[serde(borrow)]
    pub display_name: Option<&'a str>,
}

/// The answer of every call that makes an event.
#[derive(Debug, Serialize)]
pub struct EventIdAnswer<'a> {
    pub event_id: &'a str,
}

/// The answer of `createRoom` and `join`.
#[derive(Debug, Serialize)]
pub struct RoomIdAnswer<'a> {
    pub room_id: &'a str,
}

/// The answer of `login` and `register`.
#[derive(Debug, Serialize)]
pub struct LoggedIn<'a> {
    pub user_id: &'a str,
    pub access_token: &'a str,
    pub device_id: &'a str,
    pub home_server: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in_ms: Option<i64>,
}

/// `POST /account/password`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PasswordChange<'a> {
    #[serde(borrow)]
    pub new_password: Option<&'a str>,
    pub logout_devices: Option<bool>,
}

/// `POST /refresh`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Refresh<'a> {
    #[serde(borrow)]
    pub refresh_token: Option<&'a str>,
}

/// `POST /_synapse/admin/v1/registration_tokens/new` and the `PUT` of one.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RegistrationTokenSpec<'a> {
    #[serde(borrow)]
    pub token: Option<&'a str>,
    pub length: Option<u64>,
    /// `Some(None)`: `null` given (no limit).
    #[serde(deserialize_with = "present")]
    pub uses_allowed: Option<Option<i64>>,
    #[serde(deserialize_with = "present")]
    pub expiry_time: Option<Option<i64>>,
}

/// A field that may be absent, `null` or a value, told apart.
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// `POST /keys/upload`. Keys stay JSON: they are signed objects, kept and
/// handed out as the device wrote them.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct KeysUpload {
    pub device_keys: Option<Object>,
    pub one_time_keys: Option<Object>,
    pub fallback_keys: Option<Object>,
}

/// `POST …/org.lmx.mls/keys/upload`: a device's MLS device object and key
/// packages (`algorithm:version` → unpadded base64), the last-resort ones
/// apart.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct MlsKeysUpload {
    pub device_object: Option<Object>,
    pub key_packages: Option<Object>,
    pub last_resort_key_packages: Option<Object>,
}

/// `POST …/org.lmx.mls/keys/query`: the device objects wanted per user
/// (none listed: all known).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct MlsKeysQuery<'a> {
    #[serde(borrow)]
    pub device_objects: std::collections::BTreeMap<&'a str, Vec<&'a str>>,
    pub timeout: Option<u64>,
}

/// `POST /keys/query`: the devices wanted per user (none listed: all).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct KeysQuery<'a> {
    #[serde(borrow)]
    pub device_keys: std::collections::BTreeMap<&'a str, Vec<&'a str>>,
    pub timeout: Option<u64>,
}

/// `POST /keys/claim`: per user and device, the algorithm of the key wanted.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct KeysClaim<'a> {
    #[serde(borrow)]
    pub one_time_keys: std::collections::BTreeMap<&'a str, std::collections::BTreeMap<&'a str, &'a str>>,
    pub timeout: Option<u64>,
}

/// `PUT /sendToDevice/{type}/{txnId}`: per user, per device (or `*`), the
/// message's content.
#[derive(Debug, Deserialize)]
pub struct SendToDevice<'a> {
    #[serde(borrow)]
    pub messages: std::collections::BTreeMap<&'a str, std::collections::BTreeMap<&'a str, Object>>,
}
