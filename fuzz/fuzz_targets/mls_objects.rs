//! What a participant or a peer can put before the hub's MLS checks: a
//! commit's `message` and `public_group_state`, a device object and a key
//! package. The input is split at the first three `0xFF 0x00` pairs:
//! `message | group state | device object JSON | key package`. Nothing
//! may panic; a commit accepted against no group makes a group whose
//! members all have readable credentials.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lmx::core::crypto::b64_encode;
use lmx::core::mls::{check_commit, check_device_object, check_key_package, DeviceCredential, GroupTrack};
use serde_json::json;

const ROOM: &str = "!mls:hub.test";

fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while parts.len() < 3 {
        match rest.windows(2).position(|w| w == [0xFF, 0x00]) {
            Some(i) => {
                parts.push(&rest[..i]);
                rest = &rest[i + 2..];
            }
            None => break,
        }
    }
    parts.push(rest);
    parts.resize(4, &[]);
    parts
}

fuzz_target!(|data: &[u8]| {
    let parts = split(data);
    let (message, state, device, package) = (parts[0], parts[1], parts[2], parts[3]);
    let content = json!({ "message": b64_encode(message), "public_group_state": b64_encode(state) });
    if let Ok(facts) = check_commit(None, ROOM, content.as_object().unwrap()) {
        assert!(facts.after.members().is_ok());
        let _ = check_commit(Some(&facts.after), ROOM, content.as_object().unwrap());
    }
    if let Ok(group) = GroupTrack::from_group_state(ROOM, state) {
        let _ = group.members();
        let _ = check_commit(Some(&group), ROOM, content.as_object().unwrap());
    }
    if let Ok(serde_json::Value::Object(o)) = serde_json::from_slice(device) {
        let _ = check_device_object(&o);
    }
    let _ = check_key_package(package);
    if let Ok(c) = DeviceCredential::from_bytes(package) {
        assert_eq!(DeviceCredential::from_bytes(&c.to_bytes()), Ok(c));
    }
});
