//! The client side of the draft's MLS (digest 9.2, 9.3), which the draft
//! leaves to implementations; lmx serves it under an unstable prefix,
//! shaped like `/keys/upload` and `/keys/query`:
//!
//! - `POST /_matrix/client/unstable/org.lmx.mls/keys/upload`
//!   `{device_object?, key_packages?, last_resort_key_packages?}` →
//!   `{key_package_counts: {algorithm: n}}`
//! - `POST /_matrix/client/unstable/org.lmx.mls/keys/query`
//!   `{device_objects: {user: [device…]}}` → `{device_objects: {user:
//!   {device: object}}, failures}`
//! - `POST /_matrix/client/unstable/org.lmx.mls/keys/claim`: `/keys/claim`
//!   (key packages come back in E18's shape).
//!
//! Welcomes travel as to-device messages (`/sendToDevice`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use super::Call;
use crate::core::ids::UserId;
use crate::core::json::Object;
use crate::core::mls::KEY_PACKAGE_ALGORITHM;
use crate::store::Batch;
use crate::wire::client::{KeysUpload, MlsKeysQuery, MlsKeysUpload};
use crate::wire::{self, Failure};

/// Devices of other servers' users one query fetches at most.
const MAX_REMOTE_DEVICES: usize = 100;
const DEFAULT_TIMEOUT_MS: u64 = 10_000;

fn only_key_packages(keys: &Option<Object>) -> Result<(), Failure> {
    for name in keys.iter().flat_map(|k| k.keys()) {
        if name.split_once(':').is_none_or(|(algorithm, _)| algorithm != KEY_PACKAGE_ALGORITHM) {
            return Err(Failure::invalid_param(format!("{name} is not {KEY_PACKAGE_ALGORITHM}:<version>")));
        }
    }
    Ok(())
}

pub async fn upload(call: Call) -> Result<Value, Failure> {
    let (user, device) = call.who()?;
    let body: MlsKeysUpload = wire::read(call.body()?)?;
    only_key_packages(&body.key_packages)?;
    only_key_packages(&body.last_resort_key_packages)?;
    let e2ee = &call.server.e2ee;
    let (_alloc, dests) = {
        let _guard = e2ee.lock(user);
        let mut b = Batch::new();
        let changed = match &body.device_object {
            Some(object) => e2ee.stage_device_object(user, device, object, &mut b)?,
            None => false,
        };
        let packages = KeysUpload {
            device_keys: None,
            one_time_keys: body.key_packages,
            fallback_keys: body.last_resort_key_packages,
        };
        e2ee.stage_upload(user, device, packages, &mut b)?;
        // Other servers learn of the device object directly (item 203).
        let told = match (changed, body.device_object) {
            (true, Some(object)) => {
                let alloc = call.server.positions.allocate(1)?;
                let dests = call.server.remote.sharing_lm_servers(user);
                let edu = crate::federation::edu::lm_device_list_edu(user, vec![Value::Object(object)], Vec::new());
                call.server.remote.queue_edu(&dests, alloc.first(), &edu, &mut b);
                Some((alloc, dests))
            }
            _ => None,
        };
        if !b.is_empty() {
            call.server.store.write(b)?;
        }
        told.unzip()
    };
    call.server.remote.wake(&dests.unwrap_or_default());
    call.server.store.flush().await?;
    let counts = e2ee.counts(user, device)?;
    let count = counts.one_time.get(KEY_PACKAGE_ALGORITHM).copied().unwrap_or(0);
    Ok(json!({ "key_package_counts": { KEY_PACKAGE_ALGORITHM: count } }))
}

/// Device objects of local users from the store; of other servers' users
/// as their servers last sent them, and a device named but not known is
/// fetched from its server (E17) and kept.
pub async fn query(call: Call) -> Result<Value, Failure> {
    call.who()?;
    let MlsKeysQuery { device_objects, timeout } = wire::read(call.body()?)?;
    if device_objects.len() > 1_000 {
        return Err(Failure::too_large("at most 1000 users a request"));
    }
    let timeout = Duration::from_millis(timeout.unwrap_or(DEFAULT_TIMEOUT_MS).min(30_000));
    let e2ee = &call.server.e2ee;
    let (mut out, mut failures) = (Object::new(), Object::new());
    let mut fetch: BTreeMap<UserId, Vec<String>> = BTreeMap::new();
    for (user, wanted) in device_objects {
        let Ok(user) = UserId::parse(user) else { continue };
        let known = e2ee.device_objects(&user, &wanted)?;
        if user.server_name() != call.server.name {
            let missing = wanted.iter().filter(|d| !known.contains_key(**d)).map(|d| (*d).to_owned());
            fetch.entry(user.clone()).or_default().extend(missing);
        }
        out.insert(user.to_string(), Value::Object(known));
    }
    let asks: Vec<(UserId, String)> = fetch
        .into_iter()
        .flat_map(|(u, devices)| devices.into_iter().map(move |d| (u.clone(), d)))
        .take(MAX_REMOTE_DEVICES)
        .collect();
    let answers = futures_util::future::join_all(
        asks.iter().map(|(user, device)| call.server.remote.device_object(user, device, timeout)),
    )
    .await;
    for ((user, device), answer) in asks.into_iter().zip(answers) {
        let kept = match answer {
            Ok(object) => keep_fetched(&call, &user, &device, object),
            Err(why) => Err(why),
        };
        match kept {
            Ok(object) => {
                out.entry(user.to_string()).or_insert_with(|| json!({}))[&device] = object;
            }
            Err(why) => {
                tracing::debug!(%user, device, error = %why, "no device object");
                failures.insert(user.server_name().to_string(), json!({ "error": why }));
            }
        }
    }
    Ok(json!({ "device_objects": out, "failures": failures }))
}

/// A device object another server answered with, checked and kept.
fn keep_fetched(call: &Call, user: &UserId, device: &str, object: Value) -> Result<Value, String> {
    if object.get("device_id").and_then(Value::as_str) != Some(device) {
        return Err("the answer names another device".into());
    }
    let _guard = call.server.e2ee.lock(user);
    let mut b = Batch::new();
    call.server.e2ee.stage_remote_device_objects(user, std::slice::from_ref(&object), &[], &mut b)?;
    call.server.store.write(b).map_err(|e| e.to_string())?;
    Ok(object)
}
