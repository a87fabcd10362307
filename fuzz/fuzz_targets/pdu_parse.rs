//! PDU and LPDU parsing for the room versions lmx hosts: never panics, and
//! an accepted event's id does not depend on how it was serialised.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lmx::core::event::{event_id, Lpdu, Pdu, RoomVersion, Schema};
use lmx::core::json::parse_object;

fuzz_target!(|data: &[u8]| {
    for v in ["10", "11", lmx::core::event::LM_VERSION] {
        let version = RoomVersion::find(v).unwrap();
        for schema in [Schema::Full, Schema::Loose] {
            if let Ok(pdu) = Pdu::from_bytes(version, data, schema) {
                let pretty = serde_json::to_vec_pretty(pdu.json()).unwrap();
                let reparsed = parse_object(&pretty, version.numbers).unwrap();
                assert_eq!(&event_id(version, &reparsed).unwrap(), pdu.event_id());
            }
        }
        if let Ok(obj) = parse_object(data, version.numbers) {
            let _ = Lpdu::from_object(version, obj);
        }
    }
});
