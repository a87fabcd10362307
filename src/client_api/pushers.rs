//! Pushers (`GET pushers`, `POST pushers/set`) and the notification list
//! (`GET notifications`). Delivery itself is `crate::push`'s.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{json, Value};

use super::events::load_client_event;
use super::newest::NewestFirst;
use super::Call;
use crate::core::ids::RoomId;
use crate::core::json::{self, NumberPolicy};
use crate::core::push::Actions;
use crate::http::query_get;
use crate::push::gateway::checked_pusher;
use crate::push::unread::{is_read, pushable, read_receipts, receipt_positions, rules_of, thread_of, PushFacts};
use crate::room::RoomView;
use crate::store::records::PusherRecord;
use crate::store::{Batch, Op};
use crate::wire::Failure;

/// Pushers one user may have.
const MAX_PUSHERS_PER_USER: usize = 100;
/// Events one `GET notifications` looks at, at most.
const SCAN_BUDGET: usize = 5_000;

pub fn list(call: Call) -> Result<Value, Failure> {
    let (user, _) = call.who()?;
    let mut pushers = Vec::new();
    for (_, _, _, rec) in call.server.store.pushers(Some(user))? {
        pushers.push(json::parse(&rec.json, NumberPolicy::Ieee754).map_err(Failure::corrupt)?);
    }
    Ok(json!({ "pushers": pushers }))
}

/// `POST pushers/set`: adds, replaces or (with `kind: null`) removes one.
pub async fn set(call: Call) -> Result<Value, Failure> {
    let (user, device) = call.who()?;
    let body = call.body()?;
    let field = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_owned);
    let (Some(app_id), Some(pushkey)) = (field("app_id"), field("pushkey")) else {
        return Err(Failure::MissingParam("app_id and pushkey are required".into()));
    };
    let mut b = Batch::new();
    if body.get("kind").is_some_and(Value::is_null) {
        b.push(Op::DeletePusher { user: user.clone(), app_id, pushkey });
    } else {
        let pusher = checked_pusher(body)?;
        let append = body.get("append").and_then(Value::as_bool).unwrap_or(false);
        let mine = call.server.store.pushers(Some(user))?;
        let replaces = mine.iter().any(|(_, a, k, _)| *a == app_id && *k == pushkey);
        if !replaces && mine.len() >= MAX_PUSHERS_PER_USER {
            return Err(Failure::limit_exceeded(format!("At most {MAX_PUSHERS_PER_USER} pushers per user"), 0));
        }
        if !append {
            // The pair is this device's now: other users' copies go.
            for (other, a, k, _) in call.server.store.pushers(None)? {
                if other != *user && a == app_id && k == pushkey {
                    b.push(Op::DeletePusher { user: other, app_id: a, pushkey: k });
                }
            }
        }
        let record = PusherRecord {
            json: serde_json::to_vec(&pusher).map_err(Failure::failed)?,
            device_id: device.to_owned(),
            created_ts: crate::sys::now_ms(),
        };
        if !replaces {
            // A queue left by an earlier pusher of the same key is not this one's.
            b.push(Op::DeletePusher { user: user.clone(), app_id: app_id.clone(), pushkey: pushkey.clone() });
        }
        b.push(Op::PutPusher { user: user.clone(), app_id, pushkey, record });
    }
    call.server.store.write(b)?;
    call.server.store.flush().await?;
    call.server.push.pushers_changed();
    Ok(json!({}))
}

/// `GET notifications`: events of the user's joined rooms that their push
/// rules say notify, newest first, with whether a receipt covers them.
/// Worked out from the rooms' recent events (nothing is stored per user);
/// one request looks at a bounded number of events and hands out a token
/// to go on.
pub fn notifications(call: Call) -> Result<Value, Failure> {
    let (user, _) = call.who()?;
    let limit = match query_get(&call.query, "limit") {
        Some(l) => l.parse::<usize>().map_err(|_| Failure::invalid_param("limit must be a number"))?.clamp(1, 100),
        None => 20,
    };
    let only_highlight = match query_get(&call.query, "only") {
        None => false,
        Some("highlight") => true,
        Some(_) => return Err(Failure::invalid_param("only may be \"highlight\"")),
    };
    let before = match query_get(&call.query, "from") {
        Some(t) => t.parse::<u64>().map_err(|_| Failure::invalid_param("bad from token"))?,
        None => call.server.positions.watermark().saturating_add(1),
    };
    let store = &*call.server.store;
    let mut views: BTreeMap<RoomId, Arc<RoomView>> = BTreeMap::new();
    for (room, m) in store.memberships(user)? {
        if m.membership != "join" {
            continue;
        }
        if let Some(view) = call.server.rooms.get_view(&room) {
            views.insert(room, view);
        }
    }
    let rules = rules_of(store, user)?;
    let mut facts: HashMap<&RoomId, PushFacts<'_>> = HashMap::new();
    let mut read: HashMap<RoomId, HashMap<String, u64>> = HashMap::new();
    let mut out = Vec::new();
    let mut next = None;
    let mut walk = NewestFirst::new(store, views.keys().cloned().collect(), before);
    let mut scanned = 0;
    while let Some(entry) = walk.next()? {
        scanned += 1;
        let (room, view) = views.get_key_value(&entry.room).expect("walked rooms are these");
        let room_facts = facts.entry(room).or_insert_with(|| PushFacts::of(view));
        let Some(rec) = store.event(&entry.event)? else { continue };
        let Some(event) = pushable(&rec) else { continue };
        let actions = room_facts.actions(&rules, &event, user.as_str());
        if actions.notify && (actions.highlight || !only_highlight) {
            if let Some(client) = load_client_event(&call.server, &entry.event)? {
                if !read.contains_key(room) {
                    read.insert(room.clone(), receipt_positions(store, &read_receipts(store, room, user)?)?);
                }
                out.push(json!({
                    "actions": action_list(&actions),
                    "event": client,
                    "read": is_read(&read[room], &thread_of(store, &event)?, rec.index),
                    "room_id": room.as_str(),
                    "ts": event["origin_server_ts"],
                }));
            }
        }
        if out.len() == limit || scanned >= SCAN_BUDGET {
            next = Some(entry.pos);
            break;
        }
    }
    let mut answer = json!({ "notifications": out });
    if let Some(n) = next {
        answer["next_token"] = json!(n.to_string());
    }
    Ok(answer)
}

/// The actions as the push rule had them.
fn action_list(a: &Actions) -> Value {
    let mut list = vec![json!("notify")];
    if let Some(sound) = &a.sound {
        list.push(json!({"set_tweak": "sound", "value": sound}));
    }
    if a.highlight {
        list.push(json!({"set_tweak": "highlight"}));
    }
    Value::Array(list)
}
