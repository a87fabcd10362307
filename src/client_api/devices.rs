//! Devices: list, show, rename, delete (deleting ends the device's session
//! and asks for the password, as the user-interactive auth of the spec).

use serde_json::{json, Value};

use super::Call;
use crate::core::ids::UserId;
use crate::e2ee::DeviceChange;
use crate::store::records::DeviceRecord;
use crate::store::{Batch, Op};
use crate::sys::random_string;
use crate::wire::client::{Authenticated, DeviceUpdate};
use crate::wire::{self, Failure};

fn device_json(id: &str, d: &DeviceRecord) -> Value {
    let mut v = json!({"device_id": id, "last_seen_ts": d.last_seen_ts});
    if !d.display_name.is_empty() {
        v["display_name"] = json!(d.display_name);
    }
    if !d.last_seen_ip.is_empty() {
        v["last_seen_ip"] = json!(d.last_seen_ip);
    }
    v
}

pub fn list(call: Call) -> Result<Value, Failure> {
    let (user, _) = call.who()?;
    let devices: Vec<Value> = call.server.store.devices(user)?.iter().map(|(id, d)| device_json(id, d)).collect();
    Ok(json!({ "devices": devices }))
}

fn find(call: &Call, user: &UserId, id: &str) -> Result<DeviceRecord, Failure> {
    call.server
        .store
        .devices(user)?
        .into_iter()
        .find(|(d, _)| d == id)
        .map(|(_, r)| r)
        .ok_or_else(|| Failure::not_found("Unknown device"))
}

pub fn get(call: Call, id: &str) -> Result<Value, Failure> {
    let (user, _) = call.who()?;
    Ok(device_json(id, &find(&call, user, id)?))
}

pub async fn update(call: Call, id: &str) -> Result<Value, Failure> {
    let (user, _) = call.who()?;
    let mut record = find(&call, user, id)?;
    let DeviceUpdate { display_name } = wire::read(call.body()?)?;
    if let Some(name) = display_name {
        record.display_name = name.to_owned();
    }
    let mut b = Batch::new();
    b.push(Op::PutDevice { user: user.clone(), device: id.to_owned(), record });
    // The device's owner sees names in `keys/query`: their devices re-read.
    super::keys::commit_device_changes(&call, user, &[(id, DeviceChange::Updated { keys: None })], b).await?;
    Ok(json!({}))
}

/// User-interactive auth with `m.login.password`: a `401` with the flows
/// until the body carries the user's password.
pub(super) async fn require_password(call: &Call, user: &UserId) -> Result<(), Failure> {
    let Authenticated { auth } = wire::read(call.body()?)?;
    // The client's session is kept, so it may try again in it.
    let session = auth.as_ref().and_then(|a| a.session).map_or_else(|| random_string(16), str::to_owned);
    let password = auth.filter(|a| a.kind == Some("m.login.password")).and_then(|a| a.password);
    let challenge =
        |why, failed| Failure::AuthNeeded { stage: "m.login.password", session: session.clone(), why, failed };
    let Some(password) = password else { return Err(challenge("Password required", false)) };
    let rec = call.server.store.user(user)?.ok_or_else(|| challenge("Password required", false))?;
    if call.accounts.passwords.verify(&rec.password_hash, password).await? {
        Ok(())
    } else {
        Err(challenge("Invalid password", true))
    }
}

pub(super) fn delete_ops(call: &Call, user: &UserId, id: &str, b: &mut Batch) -> Result<(), Failure> {
    if let Some(hash) = call.server.store.device_token(user, id)? {
        b.push(Op::DeleteToken { hash, user: user.clone(), device: id.to_owned() });
    }
    b.push(Op::DeleteDevice { user: user.clone(), device: id.to_owned() });
    Ok(())
}

pub async fn delete(call: Call, id: &str) -> Result<Value, Failure> {
    let (user, _) = call.who()?;
    find(&call, user, id)?;
    require_password(&call, user).await?;
    let mut b = Batch::new();
    delete_ops(&call, user, id, &mut b)?;
    super::keys::commit_device_changes(&call, user, &[(id, DeviceChange::Deleted)], b).await?;
    Ok(json!({}))
}

/// `POST /delete_devices`.
pub async fn delete_many(call: Call) -> Result<Value, Failure> {
    let (user, _) = call.who()?;
    require_password(&call, user).await?;
    let ids: Vec<String> = call
        .body()?
        .get("devices")
        .and_then(Value::as_array)
        .ok_or_else(|| Failure::bad_json("devices must be a list"))?
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    let mut b = Batch::new();
    let known: std::collections::BTreeSet<String> =
        call.server.store.devices(user)?.into_iter().map(|(d, _)| d).collect();
    let mut changes = Vec::new();
    for id in ids.iter().filter(|id| known.contains(*id)) {
        delete_ops(&call, user, id, &mut b)?;
        changes.push((id.as_str(), DeviceChange::Deleted));
    }
    super::keys::commit_device_changes(&call, user, &changes, b).await?;
    Ok(json!({}))
}
