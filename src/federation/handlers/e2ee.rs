//! Other servers asking for our users' device keys (`user/keys/query`,
//! with their master and self-signing keys), one-time keys
//! (`user/keys/claim`) and whole device lists (`user/devices`). Only users
//! of this server may be named; a request naming another's is refused
//! whole.

use serde_json::{json, Value};

use crate::core::ids::UserId;
use crate::core::json::Object;
use crate::federation::inbound::Req;
use crate::wire::client::{KeysClaim, KeysQuery};
use crate::wire::{self, Failure};

/// Users one request may name: more is a request to split.
pub const MAX_USERS: usize = 1_000;

fn local_user(req: &Req, user: &str) -> Result<UserId, Failure> {
    let user = UserId::parse(user).map_err(|_| Failure::invalid_param(format!("{user:?} is not a user id")))?;
    if !req.node.is_me(&user.server_name()) {
        return Err(Failure::invalid_param(format!("{user} is not a user of this server")));
    }
    Ok(user)
}

pub fn keys_query(req: Req) -> Result<Value, Failure> {
    let KeysQuery { device_keys, .. } = wire::read(&req.body)?;
    if device_keys.len() > MAX_USERS {
        return Err(Failure::too_large(format!("at most {MAX_USERS} users a request")));
    }
    let (mut out, mut masters, mut self_signing) = (Object::new(), Object::new(), Object::new());
    for (user, devices) in device_keys {
        let user = local_user(&req, user)?;
        // Device names stay on this server, as Synapse keeps them by default.
        out.insert(user.to_string(), Value::Object(req.node.e2ee.device_keys(&user, &devices, false)?));
        for (kind, into) in [("master", &mut masters), ("self_signing", &mut self_signing)] {
            if let Some(key) = req.node.e2ee.cross_signing_key(&user, kind)? {
                into.insert(user.to_string(), key);
            }
        }
    }
    Ok(json!({ "device_keys": out, "master_keys": masters, "self_signing_keys": self_signing }))
}

/// `GET user/devices/{userId}`: a local user's whole device list and its
/// version, for a server that saw a gap in its updates.
pub fn user_devices(req: Req, user: &str) -> Result<Value, Failure> {
    let user = local_user(&req, user)?;
    if req.node.store.user(&user)?.is_none() {
        return Err(Failure::not_found("Unknown user"));
    }
    // One consistent reading: the version must be that of the devices.
    let _guard = req.node.e2ee.lock(&user);
    Ok(req.node.e2ee.devices_answer(&user)?)
}

/// E17 (item 204): a local device's MLS device object, as uploaded.
pub fn user_device(req: Req, user: &str, device: &str) -> Result<Value, Failure> {
    let not_found = || Failure::not_found("No such device");
    let user = local_user(&req, user).map_err(|_| not_found())?;
    let mut objects = req.node.e2ee.device_objects(&user, &[device])?;
    objects.remove(device).ok_or_else(not_found)
}

pub async fn keys_claim(req: Req) -> Result<Value, Failure> {
    // Required in the request (item 206), even if empty.
    if req.body.get("one_time_keys").is_none() {
        return Err(Failure::bad_json("one_time_keys is required"));
    }
    let KeysClaim { one_time_keys, .. } = wire::read(&req.body)?;
    if one_time_keys.len() > MAX_USERS {
        return Err(Failure::too_large(format!("at most {MAX_USERS} users a request")));
    }
    let mut out = Object::new();
    let now = crate::sys::now_ms().max(0) as u64 / 1000;
    for (user, devices) in one_time_keys {
        // Other servers' users and unknown ones are skipped (item 207).
        let Ok(user) = local_user(&req, user) else { continue };
        let mut keys = Object::new();
        for (device, algorithm) in devices {
            if let Some(claimed) = req.node.e2ee.claim(&user, device, algorithm, now)? {
                keys.insert(device.to_owned(), claimed.answer());
            }
        }
        if !keys.is_empty() {
            out.insert(user.to_string(), Value::Object(keys));
        }
    }
    // A key handed out must stay handed out after a crash.
    req.node.store.flush().await?;
    Ok(json!({ "one_time_keys": out }))
}
