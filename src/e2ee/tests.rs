use std::sync::Arc;

use serde_json::{json, Value};

use super::*;
use crate::core::ids::UserId;
use crate::core::json::Object;
use crate::store::records::DeviceRecord;
use crate::store::{Batch, KvStore, MemKv, Op, Store};
use crate::wire::client::KeysUpload;
use crate::wire::Failure;

fn setup() -> (Arc<dyn Store>, E2ee, UserId) {
    let store: Arc<dyn Store> = Arc::new(KvStore::new(MemKv::new()));
    let user = UserId::parse("@a:hub.test").unwrap();
    let mut b = Batch::new();
    for device in ["D1", "D2"] {
        b.push(Op::PutDevice { user: user.clone(), device: device.into(), record: DeviceRecord::default() });
    }
    store.write(b).unwrap();
    (store.clone(), E2ee::new(store), user)
}

impl E2ee {
    /// An upload as `/keys/upload` makes it, written at once.
    fn upload(&self, user: &UserId, device: &str, upload: KeysUpload) -> Result<KeyCounts, Failure> {
        let _guard = self.lock(user);
        let mut b = Batch::new();
        self.stage_upload(user, device, upload, &mut b)?;
        if !b.is_empty() {
            self.store.write(b)?;
        }
        Ok(self.counts(user, device)?)
    }
}

/// `keys` signed as `user`'s `key_id` with `seed`'s key.
fn sign(mut keys: Value, user: &str, key_id: &str, seed: u8) -> Value {
    let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let bytes =
        crate::core::crypto::signing_bytes(keys.as_object().unwrap(), crate::core::json::Canonical::Matrix).unwrap();
    use ed25519_dalek::Signer;
    let sig = crate::core::crypto::b64_encode(&key.sign(&bytes).to_bytes());
    keys["signatures"][user][key_id] = json!(sig);
    keys
}

fn public(seed: u8) -> String {
    crate::core::crypto::b64_encode(ed25519_dalek::SigningKey::from_bytes(&[seed; 32]).verifying_key().as_bytes())
}

fn object(v: Value) -> Object {
    v.as_object().unwrap().clone()
}

fn otk(key: &str) -> Value {
    json!({"key": key, "signatures": {"@a:hub.test": {"ed25519:D1": "sig"}}})
}

fn upload(one_time: Value, fallback: Value) -> KeysUpload {
    KeysUpload { device_keys: None, one_time_keys: Some(object(one_time)), fallback_keys: Some(object(fallback)) }
}

#[test]
fn one_time_keys_go_once_oldest_first_then_the_fallback_again_and_again() {
    let (_, e, user) = setup();
    let counts = e.upload(&user, "D1", upload(json!({"signed_curve25519:A": otk("a")}), json!({}))).unwrap();
    assert_eq!(counts.one_time["signed_curve25519"], 1);
    let fallback = json!({"signed_curve25519:F": otk("f")});
    let counts = e.upload(&user, "D1", upload(json!({"signed_curve25519:B": otk("b")}), fallback.clone())).unwrap();
    assert_eq!(
        (counts.one_time["signed_curve25519"], counts.unused_fallback.clone()),
        (2, vec!["signed_curve25519".to_owned()])
    );

    let claim = || e.claim(&user, "D1", "signed_curve25519", 0).unwrap().map(|c| c.name);
    assert_eq!(claim().as_deref(), Some("signed_curve25519:A"), "the oldest upload first");
    assert_eq!(claim().as_deref(), Some("signed_curve25519:B"));
    assert_eq!(claim().as_deref(), Some("signed_curve25519:F"), "then the fallback key");
    assert_eq!(claim().as_deref(), Some("signed_curve25519:F"), "as often as asked");
    let counts = e.counts(&user, "D1").unwrap();
    assert_eq!((counts.one_time["signed_curve25519"], counts.unused_fallback.len()), (0, 0));
    // The same fallback key again does not look fresh; a new one does.
    let counts = e.upload(&user, "D1", upload(json!({}), fallback)).unwrap();
    assert!(counts.unused_fallback.is_empty());
    let counts = e.upload(&user, "D1", upload(json!({}), json!({"signed_curve25519:G": otk("g")}))).unwrap();
    assert_eq!(counts.unused_fallback, ["signed_curve25519"]);
    assert_eq!(e.claim(&user, "D2", "signed_curve25519", 0).unwrap(), None, "another device has none");
}

#[test]
fn an_upload_again_is_taken_and_a_changed_key_refused() {
    let (_, e, user) = setup();
    e.upload(&user, "D1", upload(json!({"signed_curve25519:A": otk("a")}), json!({}))).unwrap();
    let mut resigned = otk("a");
    resigned["signatures"]["@a:hub.test"]["ed25519:D1"] = json!("other");
    let counts = e.upload(&user, "D1", upload(json!({"signed_curve25519:A": resigned}), json!({}))).unwrap();
    assert_eq!(counts.one_time["signed_curve25519"], 1, "a retry adds nothing");
    let changed = e.upload(&user, "D1", upload(json!({"signed_curve25519:A": otk("z")}), json!({})));
    assert!(matches!(changed, Err(Failure::BadRequest(_))));
    let bad_name = e.upload(&user, "D1", upload(json!({"signed_curve25519": otk("a")}), json!({})));
    assert!(matches!(bad_name, Err(Failure::InvalidParam(_))));
    let two = e.upload(&user, "D1", upload(json!({}), json!({"x:1": otk("a"), "x:2": otk("b")})));
    assert!(matches!(two, Err(Failure::InvalidParam(_))), "one fallback key per algorithm");
    let many: serde_json::Map<String, Value> =
        (0..=MAX_FALLBACK_KEYS).map(|n| (format!("alg{n}:k"), otk("a"))).collect();
    let many = e.upload(&user, "D1", upload(json!({}), Value::Object(many)));
    assert!(matches!(many, Err(Failure::BadRequest(_))), "a bounded number of fallback keys");
}

#[test]
fn device_keys_are_the_devices_own_and_shown_with_the_servers_unsigned() {
    let (store, e, user) = setup();
    let keys = |device: &str| {
        let k = json!({"user_id": "@a:hub.test", "device_id": device, "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
            "keys": {format!("ed25519:{device}"): public(1)}, "signatures": {}});
        let mut k = sign(k, "@a:hub.test", &format!("ed25519:{device}"), 1);
        k["unsigned"] = json!({"device_display_name": "forged"});
        k
    };
    let as_device = |device: &str, body: Value| {
        e.upload(
            &user,
            device,
            KeysUpload { device_keys: Some(object(body)), one_time_keys: None, fallback_keys: None },
        )
    };
    assert!(matches!(as_device("D2", keys("D1")), Err(Failure::BadJson(_))), "another device's keys");
    let mut wrong = keys("D1");
    wrong["keys"]["ed25519:D1"] = json!(public(2));
    assert!(matches!(as_device("D1", wrong), Err(Failure::InvalidParam(_))), "signed by another key");
    assert!(e.device_keys(&user, &[], true).unwrap().is_empty(), "nothing kept");
    as_device("D1", keys("D1")).unwrap();
    let mut b = Batch::new();
    let named = DeviceRecord { display_name: "phone".into(), ..Default::default() };
    b.push(Op::PutDevice { user: user.clone(), device: "D1".into(), record: named });
    store.write(b).unwrap();
    let shown = e.device_keys(&user, &[], true).unwrap();
    assert_eq!(shown["D1"]["unsigned"], json!({"device_display_name": "phone"}));
    let to_servers = e.device_keys(&user, &[], false).unwrap();
    assert_eq!(to_servers["D1"]["unsigned"], json!({}), "names are not told to other servers");
    assert!(e.device_keys(&user, &["D2"], true).unwrap().is_empty());
    // A deleted device takes its keys and its inbox with it.
    e.upload(&user, "D1", upload(json!({"signed_curve25519:A": otk("a")}), json!({}))).unwrap();
    let mut b = Batch::new();
    b.push(Op::DeleteDevice { user: user.clone(), device: "D1".into() });
    store.write(b).unwrap();
    assert!(e.device_keys(&user, &[], true).unwrap().is_empty());
    assert_eq!(e.counts(&user, "D1").unwrap().one_time["signed_curve25519"], 0);
}

#[test]
fn an_inbox_is_read_in_order_a_sync_at_a_time_and_emptied_when_acknowledged() {
    let (_, e, user) = setup();
    let mut batch = e.to_device_batch("@b:other.test", "m.room.encrypted");
    batch.add(&user, "*", &object(json!({"n": 0}))).unwrap();
    batch.add(&user, "NOPE", &object(json!({"n": -1}))).unwrap();
    assert_eq!(batch.write(5, None).unwrap(), 2, "both devices, not the unknown one");
    for pos in 6..6 + TO_DEVICE_PER_SYNC as u64 + 10 {
        let mut batch = e.to_device_batch("@b:other.test", "m.room.encrypted");
        batch.add(&user, "D1", &object(json!({"n": pos}))).unwrap();
        batch.write(pos, None).unwrap();
    }
    let first = e.inbox(&user, "D1", 0, 1_000).unwrap();
    assert_eq!(first.events.len(), TO_DEVICE_PER_SYNC);
    assert_eq!(first.events[0], json!({"sender": "@b:other.test", "type": "m.room.encrypted", "content": {"n": 0}}));
    let mark = first.more_after.expect("more are waiting");
    let rest = e.inbox(&user, "D1", mark, 1_000).unwrap();
    assert_eq!((rest.events.len(), rest.more_after), (11, None));
    assert_eq!(e.inbox(&user, "D1", 0, 5).unwrap().events.len(), 1, "nothing past the stream's watermark");
    e.acknowledge(&user, "D1", mark).unwrap();
    assert_eq!(e.inbox(&user, "D1", 0, 1_000).unwrap().events.len(), 11, "what the client had is gone");
    assert_eq!(e.inbox(&user, "D2", 0, 1_000).unwrap().events.len(), 1, "another device's inbox is its own");
}

#[test]
fn local_device_changes_chain_their_versions() {
    let (store, e, user) = setup();
    let mut b = Batch::new();
    let changes = [("D1", DeviceChange::Updated { keys: None }), ("D2", DeviceChange::Deleted)];
    let edus = e.local_device_changes(&user, &changes, 10, &mut b).unwrap();
    store.write(b).unwrap();
    let ids = |edu: &Value| (edu["content"]["stream_id"].clone(), edu["content"]["prev_id"].clone());
    assert_eq!(ids(&edus[0]), (json!(10), json!([])), "the first version names none before it");
    assert_eq!(ids(&edus[1]), (json!(11), json!([10])));
    assert_eq!(edus[1]["content"]["deleted"], true);
    assert_eq!(e.device_list_version(&user).unwrap(), 11);
    let mut b = Batch::new();
    let next = e.local_device_changes(&user, &[("D1", DeviceChange::Updated { keys: None })], 20, &mut b).unwrap();
    assert_eq!(ids(&next[0]), (json!(20), json!([11])));
}

#[test]
fn a_remote_list_follows_its_chain_and_is_dropped_at_a_gap() {
    let (store, e, _) = setup();
    let bob = UserId::parse("@bob:other.test").unwrap();
    let keys = |d: &str| json!({"user_id": "@bob:other.test", "device_id": d, "keys": {}});
    let fetched = CachedDevices::from_answer(&json!({
        "user_id": "@bob:other.test", "stream_id": 5,
        "devices": [{"device_id": "B1", "keys": keys("B1")}, {"device_id": "X", "keys": keys("not X")}],
    }))
    .unwrap();
    assert_eq!(fetched.devices.keys().collect::<Vec<_>>(), ["B1"], "keys naming another device are left out");
    assert!(e.store_fetched_devices(&bob, &fetched).unwrap());
    let update = |stream: u64, prev: Value, device: &str| {
        let mut b = Batch::new();
        let content = json!({"user_id": "@bob:other.test", "device_id": device, "stream_id": stream,
            "prev_id": prev, "keys": keys(device)});
        let out = e.remote_device_update(&bob, &content, 100 + stream, &mut b).unwrap();
        if !b.is_empty() {
            store.write(b).unwrap();
        }
        out
    };
    assert_eq!(update(6, json!([5]), "B2"), RemoteUpdate::Taken);
    assert!(e.cached_devices(&bob).unwrap().unwrap().devices.contains_key("B2"));
    assert_eq!(update(6, json!([5]), "B2"), RemoteUpdate::Seen, "the same update again");
    assert_eq!(update(9, json!([8]), "B3"), RemoteUpdate::Resync, "version 8 never came");
    assert!(e.cached_devices(&bob).unwrap().is_none(), "the cache is dropped");
    // A full list older than what was heard of is not taken for current.
    let older = CachedDevices { stream_id: 7, ..fetched.clone() };
    assert!(!e.store_fetched_devices(&bob, &older).unwrap());
    let newer = CachedDevices { stream_id: 9, ..fetched };
    assert!(e.store_fetched_devices(&bob, &newer).unwrap());
}

#[test]
fn a_backed_up_session_is_replaced_only_by_a_better_copy() {
    let copy = |verified: bool, first: u64, forwarded: u64| json!({"is_verified": verified, "first_message_index": first, "forwarded_count": forwarded});
    let better = super::backup::better_session;
    assert!(better(&copy(true, 9, 9), &copy(false, 0, 0)), "verified first");
    assert!(!better(&copy(false, 0, 0), &copy(true, 9, 9)));
    assert!(better(&copy(false, 1, 9), &copy(false, 2, 0)), "then the earlier first index");
    assert!(better(&copy(false, 2, 0), &copy(false, 2, 1)), "then fewer forwards");
    assert!(!better(&copy(false, 2, 1), &copy(false, 2, 1)), "an equal copy changes nothing");
}
