//! The draft's MLS objects and commit rules, decided without a server:
//! device objects (items 108-110), key packages, and what the hub makes of
//! each commit (items 105, 111-113), on groups made by openmls devices.

#[path = "common/mls.rs"]
mod mls;

use lmx::core::crypto::b64_decode;
use lmx::core::mls::{check_commit, check_device_object, check_key_package, commit_allowed, GroupTrack};
use mls::MlsDevice;
use serde_json::{json, Value};

const ROOM: &str = "!mls:hub.test";
const ALICE: &str = "@alice:hub.test";
const BOB: &str = "@bob:p1.test";
const CAROL: &str = "@carol:hub.test";

fn obj(v: &Value) -> &serde_json::Map<String, Value> {
    v.as_object().unwrap()
}

#[test]
fn device_objects_need_every_field_and_a_valid_signature_for_every_key() {
    let d = MlsDevice::new(ALICE, "AD1");
    let object = d.device_object();
    let checked = check_device_object(obj(&object)).unwrap();
    assert_eq!((checked.user.as_str(), checked.device_id.as_str()), (ALICE, "AD1"));
    // Item 108: each required field.
    for field in ["device_id", "user_id", "algorithms", "keys", "signatures"] {
        let mut o = object.clone();
        o.as_object_mut().unwrap().remove(field);
        let e = check_device_object(obj(&o)).unwrap_err();
        assert!(e.0.contains(field), "{field}: {e}");
    }
    // Item 110: a listed key without a valid signature under user_id.
    let mut tampered = object.clone();
    tampered["algorithms"] = json!(["m.mls.v1.dhkemx25519-aes128gcm-sha256-ed25519", "x.other"]);
    assert!(check_device_object(obj(&tampered)).is_err(), "content changed after signing");
    let mut other_user = object.clone();
    let sigs = other_user["signatures"][ALICE].clone();
    other_user["signatures"] = json!({ BOB: sigs });
    assert!(check_device_object(obj(&other_user)).is_err(), "signature under another user");
    let extra_key = d.sign(
        json!({
            "device_id": "AD1", "user_id": ALICE, "algorithms": object["algorithms"],
            "keys": { "m.mls.v1.credential.ed25519:AD1": object["keys"]["m.mls.v1.credential.ed25519:AD1"],
                      "ed25519:AD1": lmx::core::crypto::b64_encode(&[7u8; 32]) },
        }),
        &d.credential_key_id(),
    );
    let e = check_device_object(obj(&extra_key)).unwrap_err();
    assert!(e.0.contains("ed25519:AD1"), "the unsigned second key: {e}");
    // Item 109: the credential must name this very device.
    let mut renamed = object.clone();
    renamed["device_id"] = json!("AD2");
    assert!(check_device_object(obj(&renamed)).is_err());
    let mut no_credential = object.clone();
    no_credential["keys"] = json!({});
    assert!(check_device_object(obj(&no_credential)).is_err());
}

#[test]
fn key_packages_name_their_device_and_say_whether_they_are_last_resort() {
    let d = MlsDevice::new(BOB, "BD1");
    for last_resort in [false, true] {
        let (id, package) = d.key_package(last_resort, None);
        assert!(id.starts_with("m.mls.v1.key_package.dhkemx25519-aes128gcm-sha256-ed25519:"));
        let facts = check_key_package(&b64_decode(&package).unwrap()).unwrap();
        assert_eq!((facts.device.user.as_str(), facts.device.device.as_str()), (BOB, "BD1"));
        assert_eq!(facts.last_resort, last_resort);
    }
    let (_, package) = d.key_package(false, None);
    let mut bytes = b64_decode(&package).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert!(check_key_package(&bytes).is_err(), "a broken signature");
}

fn membership(joined: &'static [&'static str]) -> impl Fn(&str) -> String {
    move |u| if joined.contains(&u) { "join".into() } else { "leave".into() }
}

/// Alice's group after its first commit, and Bob's device in it.
fn group_with_bob() -> (MlsDevice, MlsDevice, GroupTrack) {
    let mut alice = MlsDevice::new(ALICE, "AD1");
    let first = alice.create_group(ROOM);
    let facts = check_commit(None, ROOM, obj(&first)).unwrap();
    assert_eq!((facts.committer.user.as_str(), facts.adds.len()), (ALICE, 0));
    alice.accepted();
    let mut bob = MlsDevice::new(BOB, "BD1");
    let (add, welcome) = alice.add(&[bob.key_package(false, None).1]);
    let facts = check_commit(Some(&facts.after), ROOM, obj(&add)).unwrap();
    assert_eq!(facts.adds.iter().map(|d| d.to_string()).collect::<Vec<_>>(), [format!("{BOB} BD1")]);
    commit_allowed(&facts, ALICE, membership(&[ALICE, BOB]), false).unwrap();
    alice.accepted();
    bob.join(&welcome);
    (alice, bob, facts.after)
}

#[test]
fn a_commit_adds_only_devices_of_joined_users_unless_the_room_is_world_readable() {
    let mut alice = MlsDevice::new(ALICE, "AD1");
    let first = alice.create_group(ROOM);
    let group = check_commit(None, ROOM, obj(&first)).unwrap().after;
    alice.accepted();
    let bob = MlsDevice::new(BOB, "BD1");
    let (add, _) = alice.add(&[bob.key_package(false, None).1]);
    let facts = check_commit(Some(&group), ROOM, obj(&add)).unwrap();
    let e = commit_allowed(&facts, ALICE, membership(&[ALICE]), false).unwrap_err();
    assert!(e.0.contains(BOB), "{e}");
    commit_allowed(&facts, ALICE, membership(&[ALICE]), true).unwrap();
    // The commit is Alice's: nobody else may send it.
    assert!(commit_allowed(&facts, CAROL, membership(&[ALICE, BOB, CAROL]), false).is_err());
}

#[test]
fn a_commit_removes_only_its_own_users_devices_or_those_of_users_gone() {
    let (mut alice, _bob, group) = group_with_bob();
    let leaf = alice.leaf_of(BOB, "BD1").unwrap();
    let remove = alice.remove(&[leaf]);
    let facts = check_commit(Some(&group), ROOM, obj(&remove)).unwrap();
    assert_eq!(facts.removes.iter().map(|d| d.to_string()).collect::<Vec<_>>(), [format!("{BOB} BD1")]);
    let e = commit_allowed(&facts, ALICE, membership(&[ALICE, BOB]), false).unwrap_err();
    assert!(e.0.contains("still joined"), "{e}");
    commit_allowed(&facts, ALICE, membership(&[ALICE]), false).unwrap();
}

#[test]
fn a_member_removes_its_own_other_device() {
    let mut alice = MlsDevice::new(ALICE, "AD1");
    let first = alice.create_group(ROOM);
    let group = check_commit(None, ROOM, obj(&first)).unwrap().after;
    alice.accepted();
    let second = MlsDevice::new(ALICE, "AD2");
    let (add, _) = alice.add(&[second.key_package(false, None).1]);
    let group = check_commit(Some(&group), ROOM, obj(&add)).unwrap().after;
    alice.accepted();
    let remove = alice.remove(&[alice.leaf_of(ALICE, "AD2").unwrap()]);
    let facts = check_commit(Some(&group), ROOM, obj(&remove)).unwrap();
    commit_allowed(&facts, ALICE, membership(&[ALICE]), false).unwrap();
}

#[test]
fn commits_must_be_public_messages_carrying_only_their_committers_proposals() {
    let (mut alice, mut bob, group) = group_with_bob();
    // Item 113: Bob proposes, Alice commits it by reference.
    let proposal = bob.propose_add(&MlsDevice::new(CAROL, "CD1").key_package(false, None).1);
    alice.take_proposal(&proposal);
    let by_reference = alice.commit_pending();
    let e = check_commit(Some(&group), ROOM, obj(&by_reference)).unwrap_err();
    assert!(e.0.contains("proposal"), "{e}");
    alice.refused();
    // Item 105: a commit sent as a PrivateMessage.
    bob.encrypt_handshakes();
    let private = bob.self_update();
    let e = check_commit(Some(&group), ROOM, obj(&private)).unwrap_err();
    assert!(e.0.contains("PublicMessage"), "{e}");
    bob.refused();
    // A lone proposal is not a commit either.
    let e = check_commit(Some(&group), ROOM, &obj(&json!({"message": proposal, "public_group_state": "AA"})).clone())
        .unwrap_err();
    assert!(e.0.contains("not a commit"), "{e}");
}

#[test]
fn the_group_state_must_be_the_one_the_commit_makes() {
    let (mut alice, _bob, group) = group_with_bob();
    let a = alice.self_update();
    alice.refused();
    let b = alice.self_update();
    let mixed = json!({ "message": a["message"], "public_group_state": b["public_group_state"] });
    let e = check_commit(Some(&group), ROOM, obj(&mixed)).unwrap_err();
    assert!(e.0.contains("public_group_state"), "{e}");
    // And of this room's group.
    assert!(check_commit(Some(&group), "!other:hub.test", obj(&b)).is_err());
    // A commit for an older epoch no longer applies.
    let facts = check_commit(Some(&group), ROOM, obj(&b)).unwrap();
    alice.accepted();
    assert!(check_commit(Some(&facts.after), ROOM, obj(&b)).is_err());
}

/// Writes the seeds of the `mls_objects` fuzz target (`message | group
/// state | device object | key package`, split by `0xFF 0x00`): run with
/// `--ignored` when these formats change.
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/mls_objects");
    std::fs::create_dir_all(&dir).unwrap();
    let mut alice = MlsDevice::new(ALICE, "AD1");
    let bob = MlsDevice::new(BOB, "BD1");
    let seed = |commit: &Value, device: &MlsDevice, last_resort: bool| {
        let mut out = Vec::new();
        for part in [
            &b64_decode(commit["message"].as_str().unwrap()).unwrap(),
            &b64_decode(commit["public_group_state"].as_str().unwrap()).unwrap(),
            &serde_json::to_vec(&device.device_object()).unwrap(),
        ] {
            out.extend_from_slice(part);
            out.extend_from_slice(&[0xFF, 0x00]);
        }
        out.extend(b64_decode(&device.key_package(last_resort, None).1).unwrap());
        out
    };
    let first = alice.create_group(ROOM);
    std::fs::write(dir.join("first-commit"), seed(&first, &alice, false)).unwrap();
    alice.accepted();
    let (add, _) = alice.add(&[bob.key_package(false, None).1]);
    std::fs::write(dir.join("add-commit"), seed(&add, &bob, true)).unwrap();
}
