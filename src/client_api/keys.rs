//! End-to-end encryption: device keys (`/keys/upload`, `/keys/query`,
//! `/keys/claim`) and to-device messages (`/sendToDevice`). What the server
//! decides is in `e2ee`; other servers' users are asked over federation.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{json, Value};

use super::Call;
use crate::core::ids::{ServerName, UserId};
use crate::core::json::Object;
use crate::e2ee::DeviceChange;
use crate::e2ee::MAX_TO_DEVICE_BYTES;
use crate::http::query_get;
use crate::store::{Allocation, Batch, Op};
use crate::wire::client::{KeysClaim, KeysQuery, KeysUpload, SendToDevice};
use crate::wire::{self, Failure};

/// How long a query or claim waits for other servers unless told.
const DEFAULT_TIMEOUT_MS: u64 = 10_000;
const MAX_TIMEOUT_MS: u64 = 30_000;
/// Users one query or claim may name.
const MAX_USERS: usize = 1_000;

pub async fn upload(call: Call) -> Result<Value, Failure> {
    let (user, device) = call.who()?;
    let body: KeysUpload = wire::read(call.body()?)?;
    let e2ee = &call.server.e2ee;
    let (_alloc, dests) = {
        let _guard = e2ee.lock(user);
        let mut b = Batch::new();
        let changed = e2ee.stage_upload(user, device, body, &mut b)?;
        let told = match &changed {
            Some(keys) => Some(stage_device_changes(
                &call,
                user,
                &[(device, DeviceChange::Updated { keys: Some(keys) })],
                &mut b,
            )?),
            None => None,
        };
        if !b.is_empty() {
            call.server.store.write(b)?;
        }
        told.unzip()
    };
    call.server.remote.wake(&dests.unwrap_or_default());
    // Keys a client was told are kept must survive a crash.
    call.server.store.flush().await?;
    let counts = e2ee.counts(user, device)?;
    Ok(json!({ "one_time_key_counts": counts.one_time }))
}

/// Writes `b` with the user's device changes (deletions, renames) and
/// tells the servers sharing a room, durably.
pub(super) async fn commit_device_changes(
    call: &Call,
    user: &UserId,
    changes: &[(&str, DeviceChange<'_>)],
    mut b: Batch,
) -> Result<(), Failure> {
    let (_alloc, dests) = {
        let _guard = call.server.e2ee.lock(user);
        let told = if changes.is_empty() { None } else { Some(stage_device_changes(call, user, changes, &mut b)?) };
        call.server.store.write(b)?;
        told.unzip()
    };
    call.server.remote.wake(&dests.unwrap_or_default());
    if changes.iter().any(|(_, c)| matches!(c, DeviceChange::Deleted)) {
        // The store removed the deleted devices' pushers with them.
        call.server.push.pushers_changed();
    }
    call.server.store.flush().await?;
    Ok(())
}

/// A local user's device changes staged in `b`: the list's next versions
/// and their side entries, and `m.device_list_update` EDUs queued for every
/// server sharing a room with the user. The caller holds the user's lock
/// until `b` is written, then wakes the servers answered and keeps the
/// positions until its flush.
pub(super) fn stage_device_changes(
    call: &Call,
    user: &UserId,
    changes: &[(&str, DeviceChange<'_>)],
    b: &mut Batch,
) -> Result<(Allocation, BTreeSet<ServerName>), Failure> {
    // Deleted devices that had an MLS device object: LM servers are told
    // they are removed (item 203).
    let mut removed = Vec::new();
    for (device, change) in changes {
        if matches!(change, DeviceChange::Deleted) && !call.server.e2ee.device_objects(user, &[device])?.is_empty() {
            removed.push((*device).to_owned());
        }
    }
    let extra = u64::from(!removed.is_empty());
    let alloc = call.server.positions.allocate(changes.len() as u64 + extra)?;
    let edus = call.server.e2ee.local_device_changes(user, changes, alloc.first(), b)?;
    let mut dests = call.server.remote.sharing_servers(user);
    for (pos, edu) in alloc.positions().zip(&edus) {
        call.server.remote.queue_edu(&dests, pos, edu, b);
    }
    if !removed.is_empty() {
        // The position after the Matrix updates' own.
        let pos = alloc.first() + changes.len() as u64;
        let lm = call.server.remote.sharing_lm_servers(user);
        let edu = crate::federation::edu::lm_device_list_edu(user, Vec::new(), removed);
        call.server.remote.queue_edu(&lm, pos, &edu, b);
        dests.extend(lm);
    }
    Ok((alloc, dests))
}

/// The timeout for other servers: the body's, else the query string's
/// (Synapse reads it there), else the default.
fn remote_timeout(call: &Call, body: Option<u64>) -> Duration {
    let asked = body.or_else(|| query_get(&call.query, "timeout").and_then(|t| t.parse().ok()));
    Duration::from_millis(asked.unwrap_or(DEFAULT_TIMEOUT_MS).min(MAX_TIMEOUT_MS))
}

/// Users named in a request, by server; ids that do not parse are left
/// out, as Matrix servers do.
fn by_server<T>(named: BTreeMap<&str, T>) -> Result<BTreeMap<ServerName, Vec<(UserId, T)>>, Failure> {
    if named.len() > MAX_USERS {
        return Err(Failure::too_large(format!("at most {MAX_USERS} users a request")));
    }
    let mut out: BTreeMap<ServerName, Vec<(UserId, T)>> = BTreeMap::new();
    for (user, wanted) in named {
        if let Ok(user) = UserId::parse(user) {
            out.entry(user.server_name()).or_default().push((user, wanted));
        }
    }
    Ok(out)
}

/// What other servers said of their users: one object per answer field
/// asked for, and a `failures` entry for each that did not answer.
struct Answers {
    fields: BTreeMap<&'static str, Object>,
    failures: Object,
}

/// Asks every other server named, side by side, within `timeout`: what
/// each said of its own users under `fields` (a server speaks for no one
/// else).
async fn ask_servers(
    call: &Call,
    what: &'static str,
    fields: &[&'static str],
    requests: Vec<(ServerName, Value)>,
    timeout: Duration,
) -> Answers {
    let asks = requests.into_iter().map(|(server, body)| {
        let remote = call.server.remote.clone();
        async move {
            let answer = remote.user_keys(&server, what, &body, timeout).await;
            (server, answer)
        }
    });
    let mut out = Answers { fields: fields.iter().map(|f| (*f, Object::new())).collect(), failures: Object::new() };
    for (server, answer) in futures_util::future::join_all(asks).await {
        match answer {
            Ok(v) => {
                for (field, into) in &mut out.fields {
                    for (user, value) in v.get(*field).and_then(Value::as_object).into_iter().flatten() {
                        let own = UserId::parse(user).is_ok_and(|u| u.server_name() == server);
                        if own && value.is_object() {
                            into.insert(user.clone(), value.clone());
                        }
                    }
                }
            }
            Err(why) => {
                tracing::info!(%server, error = %why, what, "keys not fetched from another server");
                out.failures.insert(server.to_string(), json!({"status": 503, "message": "server unreachable"}));
            }
        }
    }
    out
}

/// `keys/query`'s answer being built: device keys and cross-signing keys
/// by user.
#[derive(Default)]
struct QueryAnswer {
    device_keys: Object,
    master_keys: Object,
    self_signing_keys: Object,
    user_signing_keys: Object,
}

impl QueryAnswer {
    fn local(&mut self, call: &Call, asker: &UserId, user: &UserId, devices: &[&str]) -> Result<(), Failure> {
        let e2ee = &call.server.e2ee;
        self.device_keys.insert(user.to_string(), Value::Object(e2ee.device_keys(user, devices, true)?));
        let mut kinds = vec![("master", &mut self.master_keys), ("self_signing", &mut self.self_signing_keys)];
        // A user-signing key is its owner's alone.
        if user == asker {
            kinds.push(("user_signing", &mut self.user_signing_keys));
        }
        for (kind, into) in kinds {
            if let Some(key) = e2ee.cross_signing_key(user, kind)? {
                into.insert(user.to_string(), key);
            }
        }
        Ok(())
    }

    fn cached(&mut self, user: &UserId, devices: &[&str], cache: crate::e2ee::CachedDevices) {
        let keys: Object =
            cache.devices.into_iter().filter(|(d, _)| devices.is_empty() || devices.contains(&d.as_str())).collect();
        self.device_keys.insert(user.to_string(), Value::Object(keys));
        for (key, into) in
            [(cache.master_key, &mut self.master_keys), (cache.self_signing_key, &mut self.self_signing_keys)]
        {
            if let Some(key) = key {
                into.insert(user.to_string(), key);
            }
        }
    }

    /// The asker's own signatures (by their user-signing key) on others'
    /// master keys: shown to them alone.
    fn add_own_signatures(&mut self, call: &Call, asker: &UserId) -> Result<(), Failure> {
        for (user, key) in self.master_keys.iter_mut() {
            let Ok(target) = UserId::parse(user) else { continue };
            if &target != asker {
                if let Some(signed) = call.server.e2ee.user_signatures(asker, &target)? {
                    crate::e2ee::merge_signatures(key, &signed);
                }
            }
        }
        Ok(())
    }
}

pub async fn query(call: Call) -> Result<Value, Failure> {
    let (asker, _) = call.who()?;
    let KeysQuery { device_keys, timeout } = wire::read(call.body()?)?;
    let timeout = remote_timeout(&call, timeout);
    let mut out = QueryAnswer::default();
    let mut remote = Vec::new();
    for (server, users) in by_server(device_keys)? {
        if server == call.server.name {
            for (user, devices) in users {
                out.local(&call, asker, &user, &devices)?;
            }
            continue;
        }
        let mut asked = Object::new();
        for (user, devices) in users {
            // A cached list is current while its server's updates chain;
            // a user not cached yet is fetched for next time.
            match call.server.e2ee.cached_devices(&user)? {
                Some(cache) => out.cached(&user, &devices, cache),
                None => {
                    call.server.remote.track_devices(&user);
                    asked.insert(user.to_string(), json!(devices));
                }
            }
        }
        if !asked.is_empty() {
            remote.push((server, json!({ "device_keys": asked })));
        }
    }
    let fields = ["device_keys", "master_keys", "self_signing_keys"];
    let mut answers = ask_servers(&call, "query", &fields, remote, timeout).await;
    for (field, into) in [
        ("device_keys", &mut out.device_keys),
        ("master_keys", &mut out.master_keys),
        ("self_signing_keys", &mut out.self_signing_keys),
    ] {
        into.extend(answers.fields.remove(field).unwrap_or_default());
    }
    out.add_own_signatures(&call, asker)?;
    Ok(json!({
        "device_keys": out.device_keys,
        "master_keys": out.master_keys,
        "self_signing_keys": out.self_signing_keys,
        "user_signing_keys": out.user_signing_keys,
        "failures": answers.failures,
    }))
}

pub async fn claim(call: Call) -> Result<Value, Failure> {
    call.who()?;
    let KeysClaim { one_time_keys, timeout } = wire::read(call.body()?)?;
    let timeout = remote_timeout(&call, timeout);
    let mut out = Object::new();
    let mut remote = Vec::new();
    for (server, users) in by_server(one_time_keys)? {
        if server == call.server.name {
            for (user, devices) in users {
                let mut keys = Object::new();
                for (device, algorithm) in devices {
                    let now = crate::sys::now_ms().max(0) as u64 / 1000;
                    if let Some(claimed) = call.server.e2ee.claim(&user, device, algorithm, now)? {
                        keys.insert(device.to_owned(), claimed.answer());
                    }
                }
                if !keys.is_empty() {
                    out.insert(user.to_string(), Value::Object(keys));
                }
            }
        } else {
            let asked: Object = users.into_iter().map(|(u, d)| (u.to_string(), json!(d))).collect();
            remote.push((server, json!({ "one_time_keys": asked })));
        }
    }
    // A key handed out must stay handed out after a crash.
    call.server.store.flush().await?;
    let mut answers = ask_servers(&call, "claim", &["one_time_keys"], remote, timeout).await;
    out.extend(answers.fields.remove("one_time_keys").unwrap_or_default());
    Ok(json!({ "one_time_keys": out, "failures": answers.failures }))
}

/// Messages an `m.direct_to_device` EDU carries at most, in bytes of
/// content, so no transaction outgrows what a receiver takes.
const EDU_BYTES: usize = 60_000;

/// `PUT /sendToDevice/{type}/{txnId}`: local devices' inboxes get their
/// messages in one write with the transaction's mark, and each other server
/// gets `m.direct_to_device` EDUs whose message ids come from the
/// transaction, so a retry delivers nothing twice here or there.
pub async fn send(call: Call, event_type: &str, txn: &str) -> Result<Value, Failure> {
    let (user, device) = call.who()?;
    let SendToDevice { messages } = wire::read(call.body()?)?;
    let e2ee = &call.server.e2ee;
    let mut local = e2ee.to_device_batch(user.as_str(), event_type);
    let mut remote: BTreeMap<ServerName, Vec<(UserId, String, Object, usize)>> = BTreeMap::new();
    for (target, devices) in by_server(messages)?.into_values().flatten() {
        for (target_device, content) in devices {
            let size = crate::core::json::object_to_canonical(&content, crate::core::json::Canonical::Rfc8785)
                .map_or(usize::MAX, |b| b.len());
            if size > MAX_TO_DEVICE_BYTES {
                return Err(Failure::too_large(format!("a to-device message is at most {MAX_TO_DEVICE_BYTES} bytes")));
            }
            if target.server_name() == call.server.name {
                local.add(&target, target_device, &content)?;
            } else {
                remote.entry(target.server_name()).or_default().push((
                    target.clone(),
                    target_device.to_owned(),
                    content,
                    size,
                ));
            }
        }
    }
    // LM servers get LM's one-message EDUs (§10); a wildcard device is
    // Matrix's, so it goes in Matrix's form, as does everything to a server
    // whose keys say nothing yet (lmx takes both).
    let lm_peers: std::collections::BTreeSet<ServerName> =
        remote.keys().filter(|s| call.server.remote.known_lm_peer(s)).cloned().collect();
    let seed = format!("{user}\n{device}\n{event_type}\n{txn}");
    let id_base =
        crate::core::crypto::sha256(seed.as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect::<String>();
    // The check and the writes under the user's lock: two copies of one
    // request arriving together deliver once. The position is held until
    // the flush, so no sync shows a message before it is on disk.
    let _alloc = {
        let _guard = e2ee.lock(user);
        if call.server.store.to_device_txn_done(user, device, event_type, txn)? {
            return Ok(json!({}));
        }
        for (server, items) in remote {
            let lm = lm_peers.contains(&server);
            let dests = std::collections::BTreeSet::from([server]);
            let (single, items): (Vec<_>, Vec<_>) = items.into_iter().partition(|i| lm && i.1 != "*");
            for (n, (target, target_device, content, _)) in single.into_iter().enumerate() {
                let id = format!("{id_base}d{n}");
                let edu = crate::federation::edu::lm_to_device_edu(
                    user,
                    event_type,
                    &id,
                    &target,
                    &target_device,
                    Value::Object(content),
                );
                call.server.remote.send_edu(&dests, &edu)?;
            }
            for (n, chunk) in chunks(items).into_iter().enumerate() {
                let mut messages = Object::new();
                for (target, target_device, content, _) in chunk {
                    let per_user = messages.entry(target.to_string()).or_insert_with(|| json!({}));
                    per_user[target_device] = Value::Object(content);
                }
                let edu = json!({
                    "edu_type": "m.direct_to_device",
                    "type": "m.direct_to_device",
                    "content": {
                        "sender": user.as_str(),
                        "type": event_type,
                        "message_id": format!("{id_base}{n}"),
                        "messages": messages,
                    },
                });
                call.server.remote.send_edu(&dests, &edu)?;
            }
        }
        let alloc = call.server.positions.allocate(1)?;
        let done = Op::ToDeviceTxn {
            user: user.clone(),
            device: device.to_owned(),
            event_type: event_type.to_owned(),
            txn: txn.to_owned(),
        };
        local.write(alloc.first(), Some(done))?;
        alloc
    };
    call.server.store.flush().await?;
    Ok(json!({}))
}

/// Messages for one server in EDUs of at most `EDU_BYTES` of content
/// (a message larger than that alone in its own).
fn chunks(items: Vec<(UserId, String, Object, usize)>) -> Vec<Vec<(UserId, String, Object, usize)>> {
    let mut out: Vec<Vec<(UserId, String, Object, usize)>> = vec![Vec::new()];
    let mut size = 0;
    for item in items {
        if size + item.3 > EDU_BYTES && !out.last().is_some_and(Vec::is_empty) {
            out.push(Vec::new());
            size = 0;
        }
        size += item.3;
        out.last_mut().expect("never empty").push(item);
    }
    out.retain(|c| !c.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_for_a_server_are_split_into_edus_of_bounded_size() {
        let user = UserId::parse("@u:other.test").unwrap();
        let item = |size: usize| (user.clone(), "D".to_owned(), Object::new(), size);
        let sizes = |chunks: Vec<Vec<(UserId, String, Object, usize)>>| -> Vec<Vec<usize>> {
            chunks.into_iter().map(|c| c.into_iter().map(|i| i.3).collect()).collect()
        };
        assert_eq!(sizes(chunks(vec![item(10), item(20)])), [vec![10, 20]]);
        let big = EDU_BYTES / 2 + 1;
        assert_eq!(sizes(chunks(vec![item(big), item(big), item(10)])), [vec![big], vec![big, 10]]);
        assert_eq!(sizes(chunks(vec![item(EDU_BYTES + 5), item(1)])), [vec![EDU_BYTES + 5], vec![1]]);
        assert!(chunks(Vec::new()).is_empty());
    }
}
