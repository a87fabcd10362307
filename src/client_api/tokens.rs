//! Tokens besides access tokens: refresh tokens (`POST refresh`), login
//! tokens (`m.login.token`, made by `POST /_matrix/client/v1/login/
//! get_token` for a signed-in device to sign in another), and registration
//! tokens (made by the operator through Synapse's admin API, asked for by
//! open registration when `registration.requires_token`).

use std::collections::HashMap;
use std::sync::Mutex;

use http::Method;
use serde_json::{json, Value};

use super::deps::ClientDeps;
use super::Call;
use crate::core::ids::UserId;
use crate::store::records::RegistrationTokenRecord;
use crate::store::{Batch, Op, TokenHash};
use crate::sys::{now_ms, random_string};
use crate::wire::client::{Refresh, RegistrationTokenSpec};
use crate::wire::{self, Failure};

/// How long a login token works.
const LOGIN_TOKEN_MS: i64 = 120_000;
/// Login tokens held at once; past it the oldest go.
const MAX_LOGIN_TOKENS: usize = 10_000;

/// Login tokens in memory: they live two minutes, and a restart asks the
/// user to make another.
#[derive(Default)]
pub struct LoginTokens(Mutex<HashMap<String, (UserId, i64)>>);

impl LoginTokens {
    fn issue(&self, user: &UserId) -> String {
        let token = random_string(32);
        let now = now_ms();
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, (_, expires)| *expires > now);
        if map.len() >= MAX_LOGIN_TOKENS {
            if let Some(oldest) = map.iter().min_by_key(|(_, (_, e))| *e).map(|(k, _)| k.clone()) {
                map.remove(&oldest);
            }
        }
        map.insert(token.clone(), (user.clone(), now + LOGIN_TOKEN_MS));
        token
    }

    /// The token's user, once: a login token signs in one device.
    pub fn take(&self, token: &str) -> Option<UserId> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(token).filter(|(_, expires)| *expires > now_ms()).map(|(u, _)| u)
    }
}

/// `POST /_matrix/client/v1/login/get_token`, behind the password.
pub async fn get_login_token(call: Call) -> Result<Value, Failure> {
    let (user, _) = call.who()?;
    let user = user.clone();
    super::devices::require_password(&call, &user).await?;
    let token = call.accounts.login_tokens.issue(&user);
    Ok(json!({"login_token": token, "expires_in_ms": LOGIN_TOKEN_MS}))
}

/// `POST refresh`: a refresh token for a new access token and a new
/// refresh token; the old pair stops working.
pub async fn refresh(call: Call) -> Result<Value, Failure> {
    let Refresh { refresh_token } = wire::read(call.body()?)?;
    let refresh_token = refresh_token.ok_or_else(|| Failure::MissingParam("refresh_token is required".into()))?;
    let rec = call.server.store.refresh_token(&TokenHash::of(refresh_token))?.ok_or(Failure::UnknownToken)?;
    let user = UserId::parse(&rec.user_id).map_err(Failure::corrupt)?;
    let mut b = Batch::new();
    let session = super::account::session_on(&call.server, &mut b, &user, &rec.device_id, true)?;
    call.server.store.write(b)?;
    call.server.store.flush().await?;
    let (refresh, expires_in_ms) = session.refresh.expect("asked for");
    Ok(json!({"access_token": session.access_token, "refresh_token": refresh, "expires_in_ms": expires_in_ms}))
}

/// A registration token that may still complete a registration.
pub fn usable_registration_token(server: &ClientDeps, token: &str) -> Result<Option<RegistrationTokenRecord>, Failure> {
    if token.is_empty() || token.len() > 64 {
        return Ok(None);
    }
    let Some(rec) = server.store.registration_token(token)? else { return Ok(None) };
    let expired = rec.expiry_time != 0 && rec.expiry_time <= now_ms();
    let used_up = rec.uses_allowed.is_some_and(|n| rec.completed >= n);
    Ok((!expired && !used_up).then_some(rec))
}

/// `GET /_matrix/client/v1/register/m.login.registration_token/validity`.
pub fn validity(call: Call) -> Result<Value, Failure> {
    let token = crate::http::query_get(&call.query, "token").ok_or_else(|| Failure::MissingParam("token".into()))?;
    Ok(json!({"valid": usable_registration_token(&call.server, token)?.is_some()}))
}

fn token_json(token: &str, r: &RegistrationTokenRecord) -> Value {
    json!({
        "token": token,
        "uses_allowed": r.uses_allowed,
        "pending": 0,
        "completed": r.completed,
        "expiry_time": (r.expiry_time != 0).then_some(r.expiry_time),
    })
}

/// Synapse's admin API for registration tokens
/// (`/_synapse/admin/v1/registration_tokens[/new|/{token}]`), for server
/// admins (the admin API checked the caller).
pub async fn admin(call: Call, method: &Method, rest: &[&str]) -> Result<Value, Failure> {
    let store = &call.server.store;
    let answer = match (rest, method) {
        ([], &Method::GET) => {
            let valid = crate::http::query_get(&call.query, "valid").map(|v| v == "true");
            let tokens: Vec<Value> = store
                .registration_tokens()?
                .iter()
                .filter(|(t, _)| {
                    valid.is_none_or(|v| usable_registration_token(&call.server, t).ok().flatten().is_some() == v)
                })
                .map(|(t, r)| token_json(t, r))
                .collect();
            json!({"registration_tokens": tokens})
        }
        (["new"], &Method::POST) => {
            let spec: RegistrationTokenSpec = wire::read(call.body()?)?;
            let token = match spec.token {
                Some(t) => t.to_owned(),
                None => random_string(usize::try_from(spec.length.unwrap_or(16)).unwrap_or(16).clamp(1, 64)),
            };
            let valid = |c: u8| c.is_ascii_alphanumeric() || b"._~-".contains(&c);
            if token.is_empty() || token.len() > 64 || !token.bytes().all(valid) {
                return Err(Failure::invalid_param("A token is 1-64 characters of A-Z, a-z, 0-9, ., _, ~ and -"));
            }
            if store.registration_token(&token)?.is_some() {
                return Err(Failure::BadRequest(format!("Token {token} already exists")));
            }
            let mut rec = RegistrationTokenRecord::default();
            apply(&mut rec, &spec)?;
            save(&call, &token, &rec).await?;
            token_json(&token, &rec)
        }
        ([token], &Method::GET) => {
            let rec = store.registration_token(token)?.ok_or_else(|| Failure::not_found("No such token"))?;
            token_json(token, &rec)
        }
        ([token], &Method::PUT) => {
            let mut rec = store.registration_token(token)?.ok_or_else(|| Failure::not_found("No such token"))?;
            apply(&mut rec, &wire::read(call.body()?)?)?;
            save(&call, token, &rec).await?;
            token_json(token, &rec)
        }
        ([token], &Method::DELETE) => {
            store.registration_token(token)?.ok_or_else(|| Failure::not_found("No such token"))?;
            let mut b = Batch::new();
            b.push(Op::DeleteRegistrationToken((*token).to_owned()));
            store.write(b)?;
            store.flush().await?;
            json!({})
        }
        ([] | ["new"] | [_], _) => return Err(Failure::MethodNotAllowed),
        _ => return Err(Failure::Unrecognized),
    };
    Ok(answer)
}

fn apply(rec: &mut RegistrationTokenRecord, spec: &RegistrationTokenSpec<'_>) -> Result<(), Failure> {
    if let Some(uses) = spec.uses_allowed {
        if uses.is_some_and(|n| n < 0) {
            return Err(Failure::invalid_param("uses_allowed must be a non-negative integer or null"));
        }
        rec.uses_allowed = uses;
    }
    if let Some(expiry) = spec.expiry_time {
        if expiry.is_some_and(|t| t < now_ms()) {
            return Err(Failure::invalid_param("expiry_time must not be in the past"));
        }
        rec.expiry_time = expiry.unwrap_or(0);
    }
    Ok(())
}

async fn save(call: &Call, token: &str, rec: &RegistrationTokenRecord) -> Result<(), Failure> {
    let mut b = Batch::new();
    b.push(Op::PutRegistrationToken { token: token.to_owned(), record: *rec });
    call.server.store.write(b)?;
    call.server.store.flush().await?;
    Ok(())
}
