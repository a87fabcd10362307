//! `GET voip/turnServer`: the TURN servers of `[turn]`, with credentials
//! made from the shared secret as TURN's REST API has them
//! (`username = expiry:user`, `password = base64(HMAC-SHA1(secret, username))`).

use hmac::{Hmac, Mac};
use serde_json::{json, Value};

use super::Call;
use crate::wire::Failure;

pub fn turn_server(call: Call) -> Result<Value, Failure> {
    let (user, _) = call.who()?;
    let turn = &call.server.config.turn;
    if turn.uris.is_empty() {
        // As Synapse does when no TURN server is configured.
        return Ok(json!({}));
    }
    let ttl = turn.user_lifetime_secs;
    let (username, password) = match (&turn.shared_secret, &turn.username, &turn.password) {
        (Some(secret), _, _) => {
            let expiry = crate::sys::now_ms() / 1000 + i64::try_from(ttl).unwrap_or(i64::MAX / 2);
            let username = format!("{expiry}:{user}");
            let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).map_err(Failure::failed)?;
            mac.update(username.as_bytes());
            (username, base64::Engine::encode(&base64::engine::general_purpose::STANDARD, mac.finalize().into_bytes()))
        }
        (None, Some(u), Some(p)) => (u.clone(), p.clone()),
        _ => return Ok(json!({})),
    };
    Ok(json!({"username": username, "password": password, "uris": turn.uris, "ttl": ttl}))
}
