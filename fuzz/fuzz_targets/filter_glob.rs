//! Client filters. The input is split at NUL bytes into a filter text, a
//! client event (JSON), and a glob pattern and value:
//! `filter \0 event \0 pattern \0 value`; missing parts are empty.
//! Nothing may panic; an accepted filter passes `check_limits` and is run
//! against a few client-format events; `glob` agrees with a backtracking
//! reference matcher whenever pattern and value are short.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lmx::client_api::filter::{check_limits, glob, parse, EventFilter, SyncFilter};
use serde_json::{json, Value};

/// Longest pattern and value (bytes) checked against the reference, whose
/// cost grows exponentially with the number of `*`.
const REFERENCE_MAX: usize = 12;

/// The obvious backtracking matcher: `*` matches any run of characters,
/// every other character matches itself.
fn reference(pattern: &[char], value: &[char]) -> bool {
    match pattern.split_first() {
        None => value.is_empty(),
        Some(('*', rest)) => (0..=value.len()).any(|skip| reference(rest, &value[skip..])),
        Some((c, rest)) => value.first() == Some(c) && reference(rest, &value[1..]),
    }
}

fn check_glob(pattern: &str, value: &str) {
    let got = glob(pattern, value);
    if pattern.len() <= REFERENCE_MAX && value.len() <= REFERENCE_MAX {
        let p: Vec<char> = pattern.chars().collect();
        let v: Vec<char> = value.chars().collect();
        assert_eq!(got, reference(&p, &v), "glob({pattern:?}, {value:?})");
    }
}

/// Every string in the `types`/`not_types` lists anywhere in the filter.
fn patterns(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, child) in o {
                if k == "types" || k == "not_types" {
                    if let Some(items) = child.as_array() {
                        out.extend(items.iter().filter_map(Value::as_str).map(str::to_owned));
                    }
                }
                patterns(child, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| patterns(i, out)),
        _ => {}
    }
}

fn run_filter(text: &str, event: Option<&Value>) {
    let Ok(filter) = parse(text) else { return };
    assert!(filter.is_object());
    check_limits(&filter).expect("parse accepted a filter check_limits refuses");
    let sync = SyncFilter::from_json(&filter);
    let parts = [
        &sync.rooms,
        &sync.timeline,
        &sync.state,
        &sync.ephemeral,
        &sync.room_account_data,
        &sync.account_data,
        &sync.presence,
    ];
    let mut found = Vec::new();
    patterns(&filter, &mut found);
    let mut events = vec![
        json!({"type": "m.room.message", "sender": "@alice:a.example", "room_id": "!r:a.example"}),
        json!({"type": "m.room.member", "sender": "@bob:b.example", "room_id": "!s:b.example", "state_key": "@bob:b.example"}),
        json!({"type": "m.presence", "sender": "@carol:c.example"}),
        json!({"type": "", "sender": "", "room_id": ""}),
        json!({}),
        json!({"type": 1, "sender": null, "room_id": ["!r:a.example"]}),
    ];
    // Events whose types the filter's own patterns name or match.
    for p in found.iter().take(8) {
        let literal = p.replace('*', "");
        let filled = p.replace('*', "x.y");
        for ty in [p.as_str(), literal.as_str(), filled.as_str()] {
            check_glob(p, ty);
            events.push(json!({"type": ty, "sender": "@alice:a.example", "room_id": "!r:a.example"}));
        }
    }
    events.extend(event.cloned());
    for f in parts {
        for e in &events {
            let _ = f.allows(e);
            if let Some(room) = e.get("room_id").and_then(Value::as_str) {
                let _ = f.allows_room(room);
            }
        }
    }
    // Each part on its own, as /messages reads a single event filter.
    let _ = EventFilter::from_json(Some(&filter)).allows(&events[0]);
    let _ = EventFilter::from_json(filter.get("room")).allows(&events[0]);
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(4, |b| *b == 0).map(String::from_utf8_lossy);
    let filter = parts.next().unwrap_or_default();
    let event_text = parts.next().unwrap_or_default();
    let pattern = parts.next().unwrap_or_default();
    let value = parts.next().unwrap_or_default();

    let event: Option<Value> = serde_json::from_str(&event_text).ok();
    run_filter(&filter, event.as_ref());

    // An absent filter allows everything.
    let all = EventFilter::from_json(None);
    if let Some(e) = &event {
        assert!(all.allows(e));
    }

    check_glob(&pattern, &value);
    // The filter and event texts as a pattern and value too, so the first
    // two parts of any input exercise the matcher.
    check_glob(&filter, &event_text);
});
