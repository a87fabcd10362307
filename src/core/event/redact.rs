//! The redaction algorithm of each room version (digest section 4.8,
//! checklist items 45-47).

use serde_json::Value;

use super::version::{ContentKeep, KeepKey, RoomVersion};
use crate::core::json::Object;

/// Returns the redacted copy of `event`. The result always has a `content`
/// object (`{}` when nothing survives), as every implementation signs it.
pub fn redact(version: &RoomVersion, event: &Object) -> Object {
    let rules = version.redaction;
    let mut out = Object::new();
    for &key in rules.top_level {
        if key == "content" {
            continue;
        }
        if let Some(v) = event.get(key) {
            out.insert(key.to_owned(), v.clone());
        }
    }
    let content = event.get("content").and_then(Value::as_object);
    let event_type = event.get("type").and_then(Value::as_str).unwrap_or("");
    let keep = rules.content.iter().find(|(t, _)| *t == event_type).map(|(_, k)| *k);
    let kept = match (content, keep) {
        (Some(c), Some(ContentKeep::All)) => c.clone(),
        (Some(c), Some(ContentKeep::Keys(keys))) => keep_keys(c, keys),
        _ => Object::new(),
    };
    out.insert("content".to_owned(), Value::Object(kept));
    out
}

fn keep_keys(content: &Object, keys: &[KeepKey]) -> Object {
    let mut out = Object::new();
    for key in keys {
        match *key {
            KeepKey::Key(k) => {
                if let Some(v) = content.get(k) {
                    out.insert(k.to_owned(), v.clone());
                }
            }
            // A non-object parent has no child to keep, so it is dropped
            // (Synapse's reading of the disputed vector).
            KeepKey::Child(parent, child) => {
                if let Some(p) = content.get(parent).and_then(Value::as_object) {
                    let mut kept = Object::new();
                    if let Some(v) = p.get(child) {
                        kept.insert(child.to_owned(), v.clone());
                    }
                    out.insert(parent.to_owned(), Value::Object(kept));
                }
            }
        }
    }
    out
}
