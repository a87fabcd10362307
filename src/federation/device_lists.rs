//! Other servers' device lists: their `m.device_list_update` and
//! `m.signing_key_update` EDUs (taken only for their own users), and a
//! fresh copy of a user's list (`GET user/devices/{userId}`) when an
//! update shows one was missed.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::Node;
use crate::core::ids::{ServerName, UserId};
use crate::e2ee::{CachedDevices, RemoteUpdate};
use crate::store::{Allocation, Batch, StoreError};

/// How long a resync waits for the user's server.
const RESYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// What became of one EDU: refused (its words), or taken with the
/// position its writes hold until the transaction's flush.
pub enum Outcome {
    Taken(Option<Allocation>),
    Refused(String),
}

fn user_of(origin: &ServerName, c: &Value) -> Result<UserId, String> {
    let user = UserId::parse(c.get("user_id").and_then(Value::as_str).unwrap_or("")).map_err(|e| e.to_string())?;
    if !user.is_on(origin) {
        return Err(format!("{user} is not a user of {origin}"));
    }
    Ok(user)
}

/// `m.device_list_update`: the cache follows the chain, or is fetched
/// again when a version is missing.
pub fn device_list_update(node: &Arc<Node>, origin: &ServerName, c: &Value) -> Result<Outcome, StoreError> {
    let user = match user_of(origin, c) {
        Ok(u) => u,
        Err(why) => return Ok(Outcome::Refused(why)),
    };
    let alloc = node.positions.allocate(1)?;
    let outcome = {
        let _guard = node.e2ee.lock(&user);
        let mut b = Batch::new();
        match node.e2ee.remote_device_update(&user, c, alloc.first(), &mut b) {
            Ok(outcome) => {
                node.store.write(b)?;
                outcome
            }
            Err(why) => return Ok(Outcome::Refused(why)),
        }
    };
    if outcome == RemoteUpdate::Resync {
        resync(node, user);
    }
    Ok(Outcome::Taken(Some(alloc)))
}

/// `m.signing_key_update`: the cached cross-signing keys change.
pub fn signing_key_update(node: &Arc<Node>, origin: &ServerName, c: &Value) -> Result<Outcome, StoreError> {
    let user = match user_of(origin, c) {
        Ok(u) => u,
        Err(why) => return Ok(Outcome::Refused(why)),
    };
    let alloc = node.positions.allocate(1)?;
    let _guard = node.e2ee.lock(&user);
    let mut b = Batch::new();
    node.e2ee.remote_signing_key_update(&user, c, alloc.first(), &mut b)?;
    node.store.write(b)?;
    Ok(Outcome::Taken(Some(alloc)))
}

/// Fetches `user`'s whole list from their server in the background (one
/// fetch per user at a time) and keeps it unless newer news came first.
pub fn resync(node: &Arc<Node>, user: UserId) {
    if !node.e2ee.begin_resync(&user) {
        return;
    }
    let task_node = node.clone();
    node.spawn(async move {
        let node = task_node;
        match fetch_devices(&node, &user).await {
            Ok(fetched) => {
                let _guard = node.e2ee.lock(&user);
                if let Err(e) = node.e2ee.store_fetched_devices(&user, &fetched) {
                    tracing::warn!(%user, error = %e, "fetched device list not kept");
                }
            }
            Err(why) => tracing::info!(%user, error = %why, "device list not fetched; keys are asked for live"),
        }
        node.e2ee.end_resync(&user);
    });
}

/// `GET /_matrix/federation/v1/user/devices/{userId}` of the user's server.
pub async fn fetch_devices(node: &Arc<Node>, user: &UserId) -> Result<CachedDevices, String> {
    let server = user.server_name();
    let path = format!("/_matrix/federation/v1/user/devices/{}", crate::http::encode_segment(user.as_str()));
    let lm = super::fetch::lm_peer(node, &server).await;
    let call = node.fed.request(&server, http::Method::GET, &path, None, lm);
    let resp = tokio::time::timeout(RESYNC_TIMEOUT, call).await.map_err(|_| "timed out".to_owned())?;
    let answer = resp.and_then(|r| r.json(server.as_str())).map_err(|e| e.to_string())?;
    if answer.get("user_id").and_then(Value::as_str) != Some(user.as_str()) {
        return Err("the answer names another user".into());
    }
    CachedDevices::from_answer(&answer).ok_or_else(|| "malformed user/devices answer".into())
}
