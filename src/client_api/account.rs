//! Accounts: versions, registration (open with `m.login.dummy`, or
//! Synapse-style shared-secret admin registration), login, whoami, logout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hmac::{Hmac, Mac};
use http::Method;
use serde_json::{json, Value};

use super::passwords::Passwords;
use super::Call;
use super::ClientDeps;
use crate::core::ids::UserId;
use crate::store::records::{AccessToken, DeviceRecord, UserRecord};
use crate::store::{Batch, Op, TokenHash};
use crate::sys::{now_ms, random_string};
use crate::wire::client::{LoggedIn, Login, Register, SharedSecretRegister};
use crate::wire::{self, Failure, Taken};

/// Longest password taken (hashing cost grows with it).
const MAX_PASSWORD_BYTES: usize = 1024;

/// What the account endpoints share: password hashing, shared-secret
/// nonces, and the lock that makes "is the name free? then create it" one
/// step.
pub struct Accounts {
    pub passwords: Arc<Passwords>,
    pub nonces: RegistrationNonces,
    pub login_tokens: super::tokens::LoginTokens,
    creating: Mutex<()>,
}

impl Accounts {
    pub fn new(passwords: Arc<Passwords>) -> Arc<Accounts> {
        Arc::new(Accounts {
            passwords,
            nonces: RegistrationNonces::default(),
            login_tokens: Default::default(),
            creating: Mutex::new(()),
        })
    }
}

pub fn versions() -> Value {
    json!({
        "versions": ["r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11"],
        "unstable_features": { "org.lmx.mls": true, "org.matrix.simplified_msc3575": true },
    })
}

/// What a client may do here: room versions as they can be created (the
/// LM draft's as unstable), and which account changes are served.
pub fn capabilities() -> Value {
    let mut available = serde_json::Map::new();
    for v in crate::core::event::RoomVersion::all().iter().filter(|v| v.hostable) {
        if v.id != crate::core::event::LM_VERSION_ALIAS {
            available.insert(v.id.to_owned(), json!(if v.lm { "unstable" } else { "stable" }));
        }
    }
    json!({"capabilities": {
        "m.change_password": {"enabled": true},
        "m.room_versions": {"default": crate::core::event::LM_VERSION, "available": available},
        "m.set_displayname": {"enabled": true},
        "m.set_avatar_url": {"enabled": true},
        "m.3pid_changes": {"enabled": false},
        "m.get_login_token": {"enabled": true},
    }})
}

pub fn login_flows() -> Value {
    json!({"flows": [{"type": "m.login.password"}, {"type": "m.login.token", "get_login_token": true}]})
}

/// `@localpart:us`, with the LM localpart grammar (item 15).
fn local_user(server: &ClientDeps, localpart: &str) -> Result<UserId, Failure> {
    let localpart = localpart.to_lowercase();
    let invalid = || Failure::InvalidUsername("User names may contain only a-z, 0-9 and ._=-/+".into());
    if localpart.is_empty() {
        return Err(invalid());
    }
    if localpart == server.config.admin.notices_localpart {
        // Reserved: whoever held it would speak as the server's notices.
        return Err(user_in_use());
    }
    UserId::parse_lm(&format!("@{localpart}:{}", server.name)).map_err(|_| invalid())
}

fn user_in_use() -> Failure {
    Failure::Taken(Taken::UserId)
}

/// The password rules of open registration (`registration.min_password_length`).
pub(super) fn check_password(server: &ClientDeps, password: &str) -> Result<(), Failure> {
    let min = server.config.registration.min_password_length;
    if password.chars().count() < min {
        return Err(Failure::WeakPassword(format!("Passwords must have at least {min} characters")));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(Failure::invalid_param(format!("Passwords may have at most {MAX_PASSWORD_BYTES} bytes")));
    }
    Ok(())
}

/// What a new account starts with.
struct NewUser<'a> {
    password: &'a str,
    admin: bool,
    device: Option<&'a str>,
    device_name: Option<&'a str>,
    login: bool,
    refreshable: bool,
    /// The registration token the request completed, used up on success.
    registration_token: Option<&'a str>,
}

impl Accounts {
    /// Stores a new account unless the name is taken (`false`), under the
    /// lock that creates users.
    pub(super) fn create_exclusive(&self, server: &ClientDeps, rec: UserRecord) -> Result<bool, Failure> {
        let user = UserId::parse(&rec.user_id).map_err(Failure::corrupt)?;
        let _creating = self.creating.lock().expect("poisoned");
        if server.store.user(&user)?.is_some() {
            return Ok(false);
        }
        let mut b = Batch::new();
        b.push(Op::PutUser(rec));
        server.store.write(b)?;
        Ok(true)
    }
}

/// Creates a user and, unless `inhibit_login`, a device with a token. The
/// name is checked and taken under one lock, so two concurrent requests
/// for one name cannot both succeed.
async fn create_user(call: &Call, user: &UserId, new: NewUser<'_>) -> Result<Value, Failure> {
    if call.server.store.user(user)?.is_some() {
        return Err(user_in_use());
    }
    let hash = call.accounts.passwords.hash(new.password).await?;
    commit_user(call, user, &new, hash)
}

fn commit_user(call: &Call, user: &UserId, new: &NewUser<'_>, hash: String) -> Result<Value, Failure> {
    let server = &call.server;
    let _creating = call.accounts.creating.lock().expect("poisoned");
    if server.store.user(user)?.is_some() {
        return Err(user_in_use());
    }
    let mut b = Batch::new();
    if let Some(token) = new.registration_token {
        // Counted under the lock that creates users: never over its uses.
        let mut rec = super::tokens::usable_registration_token(server, token)?
            .ok_or_else(|| Failure::forbidden("Invalid registration token"))?;
        rec.completed += 1;
        b.push(Op::PutRegistrationToken { token: token.to_owned(), record: rec });
    }
    b.push(Op::PutUser(UserRecord {
        user_id: user.to_string(),
        password_hash: hash,
        admin: new.admin,
        displayname: user.localpart().to_owned(),
        created_ts: now_ms(),
        ..Default::default()
    }));
    let mut out = json!({"user_id": user.as_str(), "home_server": server.name.as_str()});
    if new.login {
        let session = new_token(server, &mut b, user, new.device, new.device_name, new.refreshable)?;
        out["access_token"] = json!(session.access_token);
        out["device_id"] = json!(session.device);
        if let Some((refresh, expires_in_ms)) = session.refresh {
            out["refresh_token"] = json!(refresh);
            out["expires_in_ms"] = json!(expires_in_ms);
        }
    }
    server.store.write(b)?;
    Ok(out)
}

/// A session made by [`new_token`].
pub(super) struct Session {
    pub access_token: String,
    pub device: String,
    /// The refresh token and the access token's lifetime, when asked for.
    pub refresh: Option<(String, i64)>,
}

/// A new session on `device` (a new device when none is given); a device
/// that logs in again gets a new token, the old one stops working.
/// `refreshable`: the access token expires and a refresh token renews it.
pub(super) fn new_token(
    server: &ClientDeps,
    b: &mut Batch,
    user: &UserId,
    device: Option<&str>,
    display_name: Option<&str>,
    refreshable: bool,
) -> Result<Session, Failure> {
    let device = device.map(str::to_owned).unwrap_or_else(|| random_string(10).to_uppercase());
    let existing = server.store.devices(user)?.into_iter().find(|(d, _)| *d == device).map(|(_, r)| r);
    let record = match (existing, display_name) {
        (Some(mut r), Some(name)) => {
            r.display_name = name.to_owned();
            r
        }
        (Some(r), None) => r,
        (None, name) => DeviceRecord { display_name: name.unwrap_or_default().to_owned(), ..Default::default() },
    };
    let record = DeviceRecord { last_seen_ts: now_ms(), ..record };
    b.push(Op::PutDevice { user: user.clone(), device: device.clone(), record });
    session_on(server, b, user, &device, refreshable)
}

/// New tokens for an existing device, replacing its old ones.
pub(super) fn session_on(
    server: &ClientDeps,
    b: &mut Batch,
    user: &UserId,
    device: &str,
    refreshable: bool,
) -> Result<Session, Failure> {
    let token = format!("lmx_{}", random_string(32));
    if let Some(old) = server.store.device_token(user, device)? {
        b.push(Op::DeleteToken { hash: old, user: user.clone(), device: device.to_owned() });
    }
    let mut record = AccessToken { user_id: user.to_string(), device_id: device.to_owned(), ..Default::default() };
    let refresh = refreshable.then(|| {
        let refresh = format!("lmxr_{}", random_string(32));
        let lifetime = i64::try_from(server.config.client.refreshable_token_lifetime_ms).unwrap_or(i64::MAX);
        record.expires_ts = now_ms().saturating_add(lifetime);
        record.refresh_hash = TokenHash::of(&refresh).as_str().to_owned();
        (refresh, lifetime)
    });
    b.push(Op::PutToken { hash: TokenHash::of(&token), record });
    Ok(Session { access_token: token, device: device.to_owned(), refresh })
}

/// `POST /register`: open registration with the `m.login.dummy` stage,
/// shaped as a user-interactive auth exchange.
pub async fn register(call: Call) -> Result<Value, Failure> {
    let server = call.server.clone();
    if !server.config.registration.enabled {
        return Err(Failure::forbidden("Registration is disabled on this server"));
    }
    if call.query.iter().any(|(k, v)| k == "kind" && v == "guest") {
        return Err(Failure::forbidden("Guest access is disabled"));
    }
    // What the request names is checked before the auth stage, as Synapse
    // does, so a client learns of a taken name or a weak password at once.
    let body: Register = wire::read(call.body()?)?;
    let username = body.username.map(|u| local_user(&server, u)).transpose()?;
    if let Some(u) = &username {
        if server.store.user(u)?.is_some() {
            return Err(user_in_use());
        }
    }
    let password = body.password;
    if let Some(p) = password {
        check_password(&server, p)?;
    }
    let registration_token = registration_stage(&call, body.auth.as_ref())?;
    let user = match username {
        Some(u) => u,
        None => local_user(&server, &random_string(12).to_lowercase())?,
    };
    let password = password.ok_or_else(|| Failure::MissingParam("A password is required to register".into()))?;
    let new = NewUser {
        password,
        admin: false,
        device: body.device_id,
        device_name: body.initial_device_display_name,
        login: !body.inhibit_login,
        refreshable: body.refresh_token,
        registration_token,
    };
    create_user(&call, &user, new).await
}

/// The user-interactive stage open registration asks for: `m.login.dummy`,
/// or a registration token when the operator requires one (answered with
/// the token, used up when the account is made).
fn registration_stage<'a>(
    call: &Call,
    auth: Option<&crate::wire::client::AuthData<'a>>,
) -> Result<Option<&'a str>, Failure> {
    let requires_token = call.server.config.registration.requires_token;
    let stage = if requires_token { "m.login.registration_token" } else { "m.login.dummy" };
    let session = auth.and_then(|a| a.session).map_or_else(|| random_string(16), str::to_owned);
    if auth.and_then(|a| a.kind) != Some(stage) {
        return Err(Failure::AuthNeeded { stage, session, why: "Authentication required", failed: false });
    }
    if !requires_token {
        return Ok(None);
    }
    let token = auth.and_then(|a| a.token).unwrap_or_default();
    match super::tokens::usable_registration_token(&call.server, token)? {
        Some(_) => Ok(Some(token)),
        None => Err(Failure::AuthNeeded { stage, session, why: "Invalid registration token", failed: true }),
    }
}

pub fn available(call: Call) -> Result<Value, Failure> {
    let name = crate::http::query_get(&call.query, "username").unwrap_or_default();
    let user = local_user(&call.server, name)?;
    if call.server.store.user(&user)?.is_some() {
        return Err(Failure::Taken(Taken::UserId));
    }
    Ok(json!({"available": true}))
}

pub async fn login(call: Call) -> Result<Value, Failure> {
    let body: Login = wire::read(call.body()?)?;
    let bad = || Failure::forbidden("Invalid username or password");
    let user = match body.kind {
        Some("m.login.password") => {
            let name = body
                .identifier
                .as_ref()
                .and_then(|i| i.user)
                .or(body.user)
                .ok_or_else(|| Failure::bad_json("identifier.user is required"))?;
            let localpart = name.strip_prefix('@').map(|n| n.split(':').next().unwrap_or(n)).unwrap_or(name);
            // Failed logins are logged with the name tried (for fail2ban and the like).
            let bad = || {
                let tried: String = localpart.chars().take(64).collect();
                tracing::info!(target: "lmx::auth", user = %tried, "login failed");
                bad()
            };
            let user = local_user(&call.server, localpart).map_err(|_| bad())?;
            let rec = call.server.store.user(&user)?.ok_or_else(bad)?;
            if rec.deactivated {
                return Err(Failure::UserDeactivated);
            }
            let password = body.password.ok_or_else(bad)?;
            if password.len() > MAX_PASSWORD_BYTES
                || !call.accounts.passwords.verify(&rec.password_hash, password).await?
            {
                return Err(bad());
            }
            user
        }
        Some("m.login.token") => {
            let token = body.token.ok_or_else(|| Failure::bad_json("token is required"))?;
            let user =
                call.accounts.login_tokens.take(token).ok_or_else(|| Failure::forbidden("Invalid login token"))?;
            if call.server.store.user(&user)?.is_none_or(|r| r.deactivated) {
                return Err(Failure::UserDeactivated);
            }
            user
        }
        _ => return Err(Failure::BadRequest("Supported login types: m.login.password, m.login.token".into())),
    };
    let mut b = Batch::new();
    let display = body.initial_device_display_name;
    let session = new_token(&call.server, &mut b, &user, body.device_id, display, body.refresh_token)?;
    call.server.store.write(b)?;
    wire::to_json(&LoggedIn {
        user_id: user.as_str(),
        access_token: &session.access_token,
        device_id: &session.device,
        home_server: call.server.name.as_str(),
        refresh_token: session.refresh.as_ref().map(|(r, _)| r.as_str()),
        expires_in_ms: session.refresh.as_ref().map(|(_, e)| *e),
    })
}

pub fn whoami(call: Call) -> Result<Value, Failure> {
    let (user, device) = call.who()?;
    Ok(json!({"user_id": user.as_str(), "device_id": device, "is_guest": false}))
}

/// Ends the session and deletes its device with the device's keys and
/// inbox, as the spec has it: others stop encrypting to it.
pub async fn logout(call: Call) -> Result<Value, Failure> {
    let (user, device) = call.who()?;
    let hash = TokenHash::of(call.token.as_deref().unwrap_or_default());
    let mut b = Batch::new();
    b.push(Op::DeleteToken { hash, user: user.clone(), device: device.to_owned() });
    b.push(Op::DeleteDevice { user: user.clone(), device: device.to_owned() });
    let gone = [(device, crate::e2ee::DeviceChange::Deleted)];
    super::keys::commit_device_changes(&call, user, &gone, b).await?;
    Ok(json!({}))
}

/// Ends every session of the user and deletes every device.
pub async fn logout_all(call: Call) -> Result<Value, Failure> {
    let (user, _) = call.who()?;
    let mut b = Batch::new();
    let devices: Vec<String> = call.server.store.devices(user)?.into_iter().map(|(d, _)| d).collect();
    for device in &devices {
        if let Some(hash) = call.server.store.device_token(user, device)? {
            b.push(Op::DeleteToken { hash, user: user.clone(), device: device.clone() });
        }
        b.push(Op::DeleteDevice { user: user.clone(), device: device.clone() });
    }
    let gone: Vec<_> = devices.iter().map(|d| (d.as_str(), crate::e2ee::DeviceChange::Deleted)).collect();
    super::keys::commit_device_changes(&call, user, &gone, b).await?;
    Ok(json!({}))
}

/// Single-use nonces for shared-secret registration, valid one minute.
#[derive(Default)]
pub struct RegistrationNonces {
    issued: Mutex<HashMap<String, i64>>,
}

impl RegistrationNonces {
    fn issue(&self) -> String {
        let nonce = random_string(32);
        let mut map = self.issued.lock().expect("poisoned");
        let now = now_ms();
        map.retain(|_, t| now - *t < 60_000);
        map.insert(nonce.clone(), now);
        nonce
    }

    fn take(&self, nonce: &str) -> bool {
        let mut map = self.issued.lock().expect("poisoned");
        map.remove(nonce).is_some_and(|t| now_ms() - t < 60_000)
    }
}

/// `/_synapse/admin/v1/register`: GET issues a nonce; POST checks
/// `mac = HMAC-SHA1(secret, nonce\0user\0password\0admin|notadmin)` as
/// Synapse does, so its `register_new_matrix_user` works against lmx.
pub async fn shared_secret_register(method: &Method, call: Call) -> Result<Value, Failure> {
    let Some(secret) = call.server.config.registration.shared_secret.clone() else {
        return Err(Failure::BadRequest("Shared secret registration is not enabled".into()));
    };
    if *method == Method::GET {
        return Ok(json!({"nonce": call.accounts.nonces.issue()}));
    }
    if *method != Method::POST {
        return Err(Failure::MethodNotAllowed);
    }
    let SharedSecretRegister { nonce, username, password, mac, admin, user_type } = wire::read(call.body()?)?;
    if !call.accounts.nonces.take(nonce) {
        return Err(Failure::BadRequest("Unrecognised nonce".into()));
    }
    let mut h = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).map_err(Failure::failed)?;
    h.update(nonce.as_bytes());
    h.update(b"\0");
    h.update(username.as_bytes());
    h.update(b"\0");
    h.update(password.as_bytes());
    h.update(b"\0");
    h.update(if admin { b"admin" as &[u8] } else { b"notadmin" });
    if let Some(t) = user_type {
        h.update(b"\0");
        h.update(t.as_bytes());
    }
    let want: String = h.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    if !constant_time_eq(want.as_bytes(), mac.to_ascii_lowercase().as_bytes()) {
        return Err(Failure::forbidden("HMAC incorrect"));
    }
    let user = local_user(&call.server, username)?;
    let new = NewUser {
        password,
        admin,
        device: None,
        device_name: None,
        login: true,
        refreshable: false,
        registration_token: None,
    };
    create_user(&call, &user, new).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
