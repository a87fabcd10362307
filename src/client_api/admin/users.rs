//! Accounts through Synapse's admin paths: list, show, create or change,
//! deactivate, reset the password, the admin flag, devices and sessions.

use http::StatusCode;
use serde_json::{json, Value};

use super::{backwards, body, flag, local_user, ok, paging, Acting, Reply};
use crate::client_api::Call;
use crate::core::ids::UserId;
use crate::e2ee::DeviceChange;
use crate::store::records::UserRecord;
use crate::store::{Batch, Op};
use crate::wire::Failure;

fn opt(s: &str) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        json!(s)
    }
}

fn last_seen(call: &Call, user: &UserId) -> Result<Option<i64>, Failure> {
    Ok(call.server.store.devices(user)?.iter().map(|(_, d)| d.last_seen_ts).filter(|t| *t > 0).max())
}

/// An entry of the users list (`creation_ts` in ms, as Synapse's list).
fn list_entry(call: &Call, u: &UserRecord) -> Result<Value, Failure> {
    let id = UserId::parse(&u.user_id).map_err(Failure::corrupt)?;
    Ok(json!({
        "name": u.user_id, "user_type": null, "is_guest": false, "admin": u.admin,
        "deactivated": u.deactivated, "shadow_banned": false, "displayname": opt(&u.displayname),
        "avatar_url": opt(&u.avatar_url), "creation_ts": u.created_ts, "approved": true,
        "erased": false, "last_seen_ts": last_seen(call, &id)?, "locked": false,
    }))
}

/// One user's details (`creation_ts` in seconds, as Synapse's).
fn details(call: &Call, u: &UserRecord) -> Result<Value, Failure> {
    let id = UserId::parse(&u.user_id).map_err(Failure::corrupt)?;
    Ok(json!({
        "name": u.user_id, "admin": u.admin, "deactivated": u.deactivated, "locked": false,
        "shadow_banned": false, "creation_ts": u.created_ts / 1000, "appservice_id": null,
        "consent_server_notice_sent": null, "consent_version": null, "consent_ts": null,
        "user_type": null, "is_guest": false, "suspended": false,
        "displayname": opt(&u.displayname), "avatar_url": opt(&u.avatar_url),
        "threepids": [], "external_ids": [], "erased": false,
        "last_seen_ts": last_seen(call, &id)?,
    }))
}

/// `GET /v2/users`: `from`, `limit`, `user_id` or `name` (substring),
/// `deactivated` (include them), `admins`, `order_by` (`name`,
/// `displayname`, `admin`, `deactivated`, `creation_ts`), `dir`.
pub fn list(call: &Call) -> Result<Reply, Failure> {
    let (from, limit) = paging(call)?;
    let q = |k: &str| crate::http::query_get(&call.query, k).map(str::to_lowercase);
    let (name, user_id) = (q("name"), q("user_id"));
    let deactivated = flag(call, "deactivated")?.unwrap_or(false);
    let admins = flag(call, "admins")?;
    let mut users: Vec<UserRecord> = call
        .server
        .store
        .users()?
        .into_iter()
        .filter(|u| deactivated || !u.deactivated)
        .filter(|u| admins.is_none_or(|a| u.admin == a))
        .filter(|u| match (&name, &user_id) {
            (Some(n), _) => {
                let local = u.user_id.split(':').next().unwrap_or_default().to_lowercase();
                local.contains(n.as_str()) || u.displayname.to_lowercase().contains(n.as_str())
            }
            (None, Some(id)) => u.user_id.to_lowercase().contains(id.as_str()),
            (None, None) => true,
        })
        .collect();
    match crate::http::query_get(&call.query, "order_by").unwrap_or("name") {
        "name" => users.sort_by(|a, b| a.user_id.cmp(&b.user_id)),
        "displayname" => users.sort_by(|a, b| a.displayname.cmp(&b.displayname)),
        "admin" => users.sort_by_key(|u| u.admin),
        "deactivated" => users.sort_by_key(|u| u.deactivated),
        "creation_ts" => users.sort_by_key(|u| u.created_ts),
        other => return Err(Failure::invalid_param(format!("order_by {other:?} is not supported"))),
    }
    if backwards(call)? {
        users.reverse();
    }
    let total = users.len();
    let page: Vec<Value> =
        users.iter().skip(from).take(limit).map(|u| list_entry(call, u)).collect::<Result<_, _>>()?;
    let mut out = json!({"users": page, "total": total});
    if let Some(next) = super::next_from(from, limit, total) {
        out["next_token"] = json!(next.to_string());
    }
    ok(out)
}

fn record(call: &Call, user: &UserId) -> Result<UserRecord, Failure> {
    call.server.store.user(user)?.ok_or_else(|| Failure::not_found("User not found"))
}

pub fn get(call: &Call, user: &str) -> Result<Reply, Failure> {
    let user = local_user(call, user)?;
    ok(details(call, &record(call, &user)?)?)
}

fn bool_field(body: &crate::core::json::Object, key: &str) -> Result<Option<bool>, Failure> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(Failure::bad_json(format!("Param '{key}' must be a boolean, if given"))),
    }
}

fn str_field<'a>(body: &'a crate::core::json::Object, key: &str) -> Result<Option<&'a str>, Failure> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Failure::bad_json(format!("Param '{key}' must be a string, if given"))),
    }
}

/// `PUT /v2/users/{user}`: creates the account (`201`) or changes what the
/// body names (`200`): password, displayname, avatar_url, admin,
/// deactivated.
pub async fn put(call: &Call, user: &str, acting: &Acting) -> Result<Reply, Failure> {
    let user = local_user(call, user)?;
    let b = body(call)?.clone();
    let password = str_field(&b, "password")?;
    if password.is_some_and(|p| p.len() > 512) {
        return Err(Failure::invalid_param("Invalid password"));
    }
    let admin = bool_field(&b, "admin")?;
    let deactivated = bool_field(&b, "deactivated")?;
    let logout = bool_field(&b, "logout_devices")?.unwrap_or(true);
    let displayname = str_field(&b, "displayname")?;
    let avatar_url = str_field(&b, "avatar_url")?;
    if admin == Some(false) && acting.as_ref() == Some(&user) {
        return Err(Failure::BadRequest("You may not demote yourself.".into()));
    }
    let hash = match password {
        Some(p) => Some(call.accounts.passwords.hash(p).await?),
        None => None,
    };
    let Some(mut rec) = call.server.store.user(&user)? else {
        // New accounts follow registration's rules, so that they can log in.
        let lower = user.localpart().to_lowercase() == user.localpart();
        if !lower || UserId::parse_lm(user.as_str()).is_err() {
            return Err(Failure::InvalidUsername("User names may contain only a-z, 0-9 and ._=-/+".into()));
        }
        let rec = UserRecord {
            user_id: user.to_string(),
            password_hash: hash.unwrap_or_default(),
            admin: admin.unwrap_or(false),
            displayname: displayname.unwrap_or(user.localpart()).to_owned(),
            avatar_url: avatar_url.unwrap_or_default().to_owned(),
            created_ts: crate::sys::now_ms(),
            deactivated: false,
        };
        if !call.accounts.create_exclusive(&call.server, rec.clone())? {
            return Err(Failure::Taken(crate::wire::Taken::UserId));
        }
        return Ok((StatusCode::CREATED, details(call, &rec)?));
    };
    if deactivated == Some(true) && !rec.deactivated {
        crate::client_api::account_changes::deactivate_account(call.as_user(&user), &user).await?;
        rec = record(call, &user)?;
    }
    if deactivated == Some(false) {
        rec.deactivated = false;
    }
    if let Some(a) = admin {
        rec.admin = a;
    }
    let mut batch = Batch::new();
    if let Some(h) = hash {
        rec.password_hash = h;
        if logout {
            logout_all(call, &user, &mut batch)?;
        }
    }
    batch.push(Op::PutUser(rec));
    call.server.store.write(batch)?;
    call.server.store.flush().await?;
    for (field, value) in [("displayname", displayname), ("avatar_url", avatar_url)] {
        if let Some(v) = value {
            crate::client_api::profile::set_field(&call.as_user(&user), &user, field, v).await?;
        }
    }
    ok(details(call, &record(call, &user)?)?)
}

/// Ends every session of `user` (their devices stay).
fn logout_all(call: &Call, user: &UserId, b: &mut Batch) -> Result<(), Failure> {
    for (device, _) in call.server.store.devices(user)? {
        if let Some(hash) = call.server.store.device_token(user, &device)? {
            b.push(Op::DeleteToken { hash, user: user.clone(), device });
        }
    }
    Ok(())
}

/// `POST /v1/deactivate/{user}` (`erase` is accepted; the profile goes
/// either way).
pub async fn deactivate(call: &Call, user: &str) -> Result<Reply, Failure> {
    let user = local_user(call, user)?;
    bool_field(body(call)?, "erase")?;
    let rec = record(call, &user)?;
    if !rec.deactivated {
        crate::client_api::account_changes::deactivate_account(call.as_user(&user), &user).await?;
    }
    ok(json!({"id_server_unbind_result": "no-support"}))
}

/// `POST /v1/reset_password/{user}`: `new_password`, `logout_devices`.
pub async fn reset_password(call: &Call, user: &str) -> Result<Reply, Failure> {
    let user = local_user(call, user)?;
    let b = body(call)?;
    let password = str_field(b, "new_password")?.ok_or_else(|| Failure::MissingParam("new_password".into()))?;
    let logout = bool_field(b, "logout_devices")?.unwrap_or(true);
    let mut rec = call.server.store.user(&user)?.ok_or_else(|| Failure::not_found("Unknown user"))?;
    crate::client_api::account::check_password(&call.server, password)?;
    rec.password_hash = call.accounts.passwords.hash(password).await?;
    let mut batch = Batch::new();
    if logout {
        logout_all(call, &user, &mut batch)?;
    }
    batch.push(Op::PutUser(rec));
    call.server.store.write(batch)?;
    call.server.store.flush().await?;
    ok(json!({}))
}

pub fn admin_flag(call: &Call, user: &str) -> Result<Reply, Failure> {
    let user = local_user(call, user)?;
    ok(json!({"admin": call.server.store.user(&user)?.is_some_and(|u| u.admin)}))
}

pub fn set_admin_flag(call: &Call, user: &str, acting: &Acting) -> Result<Reply, Failure> {
    let user = local_user(call, user)?;
    let admin = bool_field(body(call)?, "admin")?.ok_or_else(|| Failure::MissingParam("admin".into()))?;
    if !admin && acting.as_ref() == Some(&user) {
        return Err(Failure::BadRequest("You may not demote yourself.".into()));
    }
    let mut rec = call.server.store.user(&user)?.ok_or_else(|| Failure::not_found("Unknown user"))?;
    rec.admin = admin;
    let mut b = Batch::new();
    b.push(Op::PutUser(rec));
    call.server.store.write(b)?;
    ok(json!({}))
}

fn device_json(user: &UserId, id: &str, d: &crate::store::records::DeviceRecord) -> Value {
    json!({
        "user_id": user.as_str(), "device_id": id, "display_name": opt(&d.display_name),
        "last_seen_ip": opt(&d.last_seen_ip), "last_seen_user_agent": null,
        "last_seen_ts": (d.last_seen_ts > 0).then_some(d.last_seen_ts),
    })
}

/// `GET /v2/users/{user}/devices`.
pub fn devices(call: &Call, user: &str) -> Result<Reply, Failure> {
    let user = local_user(call, user)?;
    record(call, &user)?;
    let devices: Vec<Value> =
        call.server.store.devices(&user)?.iter().map(|(id, d)| device_json(&user, id, d)).collect();
    ok(json!({"total": devices.len(), "devices": devices}))
}

pub fn device(call: &Call, user: &str, device: &str) -> Result<Reply, Failure> {
    let user = local_user(call, user)?;
    record(call, &user)?;
    let found = call.server.store.devices(&user)?.into_iter().find(|(id, _)| id == device);
    let (id, d) = found.ok_or_else(|| Failure::not_found("No device found"))?;
    ok(device_json(&user, &id, &d))
}

/// `DELETE /v2/users/{user}/devices/{device}`: the session and the
/// device's keys go (an unknown device is no error, as in Synapse).
pub async fn delete_device(call: &Call, user: &str, device: &str) -> Result<Reply, Failure> {
    let user = local_user(call, user)?;
    record(call, &user)?;
    if call.server.store.devices(&user)?.iter().any(|(id, _)| id == device) {
        let acting = call.as_user(&user);
        let mut b = Batch::new();
        crate::client_api::devices::delete_ops(&acting, &user, device, &mut b)?;
        crate::client_api::keys::commit_device_changes(&acting, &user, &[(device, DeviceChange::Deleted)], b).await?;
    }
    ok(json!({}))
}

/// `GET /v1/whois/{user}`: each device's last connection.
pub fn whois(call: &Call, user: &str) -> Result<Reply, Failure> {
    let user = local_user(call, user)?;
    // Synapse's shape: one unnamed device, one session, a connection per
    // device this server has seen.
    let connections: Vec<Value> = call
        .server
        .store
        .devices(&user)?
        .into_iter()
        .filter(|(_, d)| d.last_seen_ts > 0)
        .map(|(_, d)| json!({"ip": d.last_seen_ip, "last_seen": d.last_seen_ts, "user_agent": ""}))
        .collect();
    ok(json!({"user_id": user.as_str(), "devices": {"": {"sessions": [{"connections": connections}]}}}))
}
