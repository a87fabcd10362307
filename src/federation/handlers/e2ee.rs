//! Other servers asking for our users' device keys (`user/keys/query`)
//! and one-time keys (`user/keys/claim`). Only users of this server may be
//! named; a request naming another's is refused whole.

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
    let mut out = Object::new();
    for (user, devices) in device_keys {
        let user = local_user(&req, user)?;
        // Device names stay on this server, as Synapse keeps them by default.
        out.insert(user.to_string(), Value::Object(req.node.e2ee.device_keys(&user, &devices, false)?));
    }
    Ok(json!({ "device_keys": out }))
}

pub async fn keys_claim(req: Req) -> Result<Value, Failure> {
    let KeysClaim { one_time_keys, .. } = wire::read(&req.body)?;
    if one_time_keys.len() > MAX_USERS {
        return Err(Failure::too_large(format!("at most {MAX_USERS} users a request")));
    }
    let mut out = Object::new();
    for (user, devices) in one_time_keys {
        let user = local_user(&req, user)?;
        let mut keys = Object::new();
        for (device, algorithm) in devices {
            if let Some(claimed) = req.node.e2ee.claim(&user, device, algorithm)? {
                keys.insert(device.to_owned(), json!({ claimed.name: claimed.key }));
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
