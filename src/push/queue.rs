//! The queueing task: follows the event stream from the stored cursor and
//! queues a notification for every pusher of every local member the event
//! notifies, the cursor's advance written in the same batch.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::unread::{invite_actions, pushable, rules_of, PushFacts};
use super::Push;
use crate::core::ids::UserId;
use crate::core::push::Actions;
use crate::store::records::PushItem;
use crate::store::{Batch, Op, Store, StoreResult, StreamEntry};

/// Stream entries looked at per batch.
const STEP: usize = 256;

/// A pusher, as its owner and the spec's unique pair.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PusherKey {
    pub user: UserId,
    pub app_id: String,
    pub pushkey: String,
}

/// Each user with pushers, and theirs.
pub type PushersByUser = HashMap<UserId, Vec<PusherKey>>;

fn load(store: &dyn Store) -> StoreResult<PushersByUser> {
    let mut by_user = PushersByUser::new();
    for (user, app_id, pushkey, _) in store.pushers(None)? {
        by_user.entry(user.clone()).or_default().push(PusherKey { user, app_id, pushkey });
    }
    Ok(by_user)
}

pub async fn run(push: Arc<Push>) {
    let d = &push.deps;
    let mut wake = d.positions.subscribe();
    let mut cursor = loop {
        match start_cursor(&*d.store, d.positions.watermark()) {
            Ok(c) => break c,
            Err(e) => tracing::warn!(error = %e, "push: cannot read the cursor; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    // With nobody to push to, the cursor moves in memory and is written
    // at most once a second: a write per sent event cost local sends ~10%.
    let mut persisted = cursor;
    let mut pushers = PushersByUser::new();
    let mut loaded = false;
    loop {
        if !loaded || push.dirty.swap(false, Ordering::AcqRel) {
            // A new pusher must not be sent what came before it.
            persist(&*d.store, cursor, &mut persisted);
            match load(&*d.store) {
                Ok(p) => {
                    pushers = p;
                    loaded = true;
                    // Workers start with their pushers (and drain what a
                    // restart left queued); those of removed pushers wake
                    // to find them gone and stop.
                    push.wake_all();
                    pushers.values().flatten().for_each(|k| push.kick(k));
                }
                Err(e) => {
                    // Nothing is queued without knowing who has pushers.
                    tracing::warn!(error = %e, "push: cannot read pushers; retrying");
                    push.dirty.store(true, Ordering::Release);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        let upto = d.positions.watermark();
        if cursor < upto && pushers.is_empty() {
            cursor = upto;
            continue;
        }
        if cursor < upto {
            match step(&push, &pushers, cursor, upto) {
                Ok((next, kicked)) => {
                    cursor = next;
                    persisted = next;
                    kicked.iter().for_each(|k| push.kick(k));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "push: could not queue notifications; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            continue;
        }
        tokio::select! {
            changed = wake.changed() => if changed.is_err() {
                persist(&*d.store, cursor, &mut persisted);
                return;
            },
            _ = push.changed.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)), if persisted < cursor => {
                persist(&*d.store, cursor, &mut persisted);
            }
        }
    }
}

/// Writes the cursor if it moved since the last write; a failure is retried
/// by the next call.
fn persist(store: &dyn Store, cursor: u64, persisted: &mut u64) {
    if *persisted >= cursor {
        return;
    }
    let mut b = Batch::new();
    b.push(Op::PushCursor(cursor));
    match store.write(b) {
        Ok(()) => *persisted = cursor,
        Err(e) => tracing::warn!(error = %e, "push: cannot write the cursor"),
    }
}

/// Where to start: the stored cursor, or (the first time) now, so that
/// turning push on does not send old history.
fn start_cursor(store: &dyn Store, watermark: u64) -> StoreResult<u64> {
    if let Some(c) = store.push_cursor()? {
        return Ok(c);
    }
    let mut b = Batch::new();
    b.push(Op::PushCursor(watermark));
    store.write(b)?;
    Ok(watermark)
}

/// Queues what the events after `cursor` (through `upto`) call for; the
/// new cursor and the pushers that got work.
fn step(push: &Push, pushers: &PushersByUser, cursor: u64, upto: u64) -> StoreResult<(u64, HashSet<PusherKey>)> {
    let store = &*push.deps.store;
    let entries: Vec<StreamEntry> = store.stream_after(cursor, STEP)?.into_iter().filter(|e| e.pos <= upto).collect();
    // A short read saw everything up to the watermark.
    let next = if entries.len() == STEP { entries.last().map_or(upto, |e| e.pos) } else { upto };
    let mut batch = Batch::new();
    let mut kicked = HashSet::new();
    if !pushers.is_empty() {
        let mut rules = HashMap::new();
        for entry in &entries {
            queue_event(push, pushers, entry, &mut rules, &mut batch, &mut kicked)?;
        }
    }
    batch.push(Op::PushCursor(next));
    store.write(batch)?;
    Ok((next, kicked))
}

fn queue_event(
    push: &Push,
    pushers: &PushersByUser,
    entry: &StreamEntry,
    rules: &mut HashMap<UserId, Value>,
    batch: &mut Batch,
    kicked: &mut HashSet<PusherKey>,
) -> StoreResult<()> {
    let store = &*push.deps.store;
    let Some(rec) = store.event(&entry.event)? else { return Ok(()) };
    let Some(event) = pushable(&rec) else { return Ok(()) };
    // An invite to a room held elsewhere comes without the room.
    let view = push.deps.rooms.get_view(&entry.room);
    let facts = view.as_deref().map(PushFacts::of);
    let targets = match view.as_deref() {
        Some(view) => recipients(view, &event, pushers, push),
        None => invited(&event).filter(|u| pushers.contains_key(u) && push.is_local(u)).into_iter().collect(),
    };
    for user in targets {
        let user_rules = match rules.get(&user) {
            Some(r) => r,
            None => rules.entry(user.clone()).or_insert(rules_of(store, &user)?),
        };
        let actions = match &facts {
            Some(facts) => facts.actions(user_rules, &event, user.as_str()),
            None => invite_actions(user_rules, &event, user.as_str()),
        };
        if !actions.notify {
            continue;
        }
        for key in pushers.get(&user).into_iter().flatten() {
            let item = PushItem {
                room_id: entry.room.to_string(),
                event_id: entry.event.to_string(),
                tweaks: serde_json::to_vec(&tweaks(&actions)).unwrap_or_default(),
                queued_ts: crate::sys::now_ms(),
            };
            let (user, app_id, pushkey) = (key.user.clone(), key.app_id.clone(), key.pushkey.clone());
            batch.push(Op::PushQueued { user, app_id, pushkey, pos: entry.pos, item });
            kicked.insert(key.clone());
        }
    }
    Ok(())
}

/// Local users with pushers the event may notify: the room's joined
/// members, and the target of an invite.
fn recipients(view: &crate::room::RoomView, event: &Value, pushers: &PushersByUser, push: &Push) -> Vec<UserId> {
    let mut users: Vec<UserId> = view.state.joined_members().filter(|u| pushers.contains_key(u)).collect();
    if let Some(u) = invited(event).filter(|u| pushers.contains_key(u) && !users.contains(u)) {
        users.push(u);
    }
    users.retain(|u| push.is_local(u));
    users
}

/// The target of an invite.
fn invited(event: &Value) -> Option<UserId> {
    let invite = event["type"] == "m.room.member" && event["content"]["membership"] == "invite";
    invite.then(|| event["state_key"].as_str().and_then(|s| UserId::parse(s).ok())).flatten()
}

/// The tweaks a gateway is told of.
pub fn tweaks(actions: &Actions) -> Value {
    let mut t = json!({});
    if let Some(sound) = &actions.sound {
        t["sound"] = json!(sound);
    }
    if actions.highlight {
        t["highlight"] = json!(true);
    }
    t
}
