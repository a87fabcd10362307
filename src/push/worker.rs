//! One pusher's worker: sends its queue to the gateway in order, one
//! notification at a time, and retries with backoff while the gateway
//! fails. Stops when its pusher is gone.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Notify;

use super::gateway::{backoff, notify_body, outcome, Notice, Outcome};
use super::queue::PusherKey;
use super::unread::room_counts;
use super::Push;
use crate::core::ids::{EventId, RoomId, UserId};
use crate::core::json::{self, NumberPolicy};
use crate::core::rooms::StateView;
use crate::federation::policy::AddressPolicy;
use crate::store::records::{PushItem, PusherRecord};
use crate::store::{Batch, Op, Store, StoreResult};

/// Queue items read at a time.
const BATCH: usize = 16;
/// A notification still failing this long after it was queued is dropped.
const GIVE_UP_MS: i64 = 24 * 60 * 60 * 1000;
/// A gateway's answer is read up to this size.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

pub async fn run(push: Arc<Push>, key: PusherKey, wake: Arc<Notify>) {
    let mut failures = 0u32;
    loop {
        let pusher = match find(&push, &key) {
            Ok(Some(p)) => p,
            Ok(None) => return stop(&push, &key),
            Err(e) => {
                tracing::warn!(error = %e, user = %key.user, "push: cannot read a pusher");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        let items = match push.deps.store.push_queue(&key.user, &key.app_id, &key.pushkey, BATCH) {
            Ok(items) => items,
            Err(e) => {
                tracing::warn!(error = %e, user = %key.user, "push: cannot read a pusher's queue");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        if items.is_empty() {
            wake.notified().await;
            continue;
        }
        for (pos, item) in items {
            let result = if crate::sys::now_ms() - item.queued_ts > GIVE_UP_MS {
                // Failing for a day: dropped without another request.
                (Outcome::Dropped("queued over a day ago".into()), None)
            } else {
                send(&push, &key, &pusher, &item).await
            };
            match result {
                (Outcome::Delivered, _) => failures = 0,
                (Outcome::Dropped(why), _) => {
                    tracing::warn!(user = %key.user, app_id = %key.app_id, event = %item.event_id, %why, "push: notification dropped");
                }
                (Outcome::Rejected, _) => {
                    tracing::info!(user = %key.user, app_id = %key.app_id, "push: the gateway rejected the pushkey; pusher removed");
                    push.pushers_changed();
                    return stop(&push, &key);
                }
                (Outcome::Retry(why), retry_after) => {
                    failures += 1;
                    let delay = backoff(failures, retry_after, crate::sys::random_fraction());
                    tracing::info!(user = %key.user, app_id = %key.app_id, %why, retry_in_s = delay.as_secs(), "push: gateway failed; will retry");
                    tokio::time::sleep(delay).await;
                    break;
                }
            }
            done(&push, &key, pos);
        }
    }
}

/// The pusher is gone (or must go): its record and queue are removed (a
/// queueing step that raced the removal may have left items) and the
/// worker leaves the table.
fn stop(push: &Push, key: &PusherKey) {
    let (user, app_id, pushkey) = (key.user.clone(), key.app_id.clone(), key.pushkey.clone());
    let mut b = Batch::new();
    b.push(Op::DeletePusher { user, app_id, pushkey });
    if let Err(e) = push.deps.store.write(b) {
        tracing::warn!(error = %e, "push: could not remove a pusher's queue");
    }
    push.worker_done(key);
}

fn find(push: &Push, key: &PusherKey) -> StoreResult<Option<PusherRecord>> {
    let all = push.deps.store.pushers(Some(&key.user))?;
    Ok(all.into_iter().find(|(_, a, k, _)| *a == key.app_id && *k == key.pushkey).map(|(_, _, _, r)| r))
}

fn done(push: &Push, key: &PusherKey, pos: u64) {
    let (user, app_id, pushkey) = (key.user.clone(), key.app_id.clone(), key.pushkey.clone());
    let mut b = Batch::new();
    b.push(Op::PushDone { user, app_id, pushkey, pos });
    if let Err(e) = push.deps.store.write(b) {
        tracing::warn!(error = %e, "push: could not mark a notification sent");
    }
}

/// Sends one notification; anything that goes wrong on the way is a
/// retry. With a retry, the wait the gateway asked for.
async fn send(push: &Push, key: &PusherKey, pusher: &PusherRecord, item: &PushItem) -> (Outcome, Option<Duration>) {
    let body = match notify_request(push, key, pusher, item) {
        Ok(Some(body)) => body,
        Ok(None) => return (Outcome::Dropped("the event is no longer here".into()), None),
        Err(e) => return (Outcome::Retry(e.to_string()), None),
    };
    let Ok(pusher_json) = json::parse(&pusher.json, NumberPolicy::Ieee754) else {
        return (Outcome::Dropped("the pusher does not read back".into()), None);
    };
    let url = pusher_json["data"]["url"].as_str().unwrap_or_default();
    let config = &push.deps.config.push;
    let policy = AddressPolicy::new(config.allow_ip_ranges.clone());
    let timeout = Duration::from_millis(config.request_timeout_ms);
    // Requests in flight: a bound for the server, and a smaller one per
    // gateway host, so one slow gateway cannot hold every slot.
    let host = url.parse::<http::Uri>().ok().and_then(|u| u.host().map(str::to_owned)).unwrap_or_default();
    let per_host = push.host_slots(&host);
    let (_server_slot, _host_slot) = (push.sends.acquire().await, per_host.acquire().await);
    match crate::federation::web::post_json(url, body, &policy, MAX_ANSWER_BYTES, timeout).await {
        Ok(answer) => (outcome(answer.status, &answer.body, &key.pushkey), answer.retry_after),
        Err(crate::wire::Failure::Forbidden(why)) => (Outcome::Dropped(why), None),
        Err(e) => (Outcome::Retry(format!("{e:?}")), None),
    }
}

/// The request body, or `None` when the event is not here.
fn notify_request(
    push: &Push,
    key: &PusherKey,
    pusher: &PusherRecord,
    item: &PushItem,
) -> StoreResult<Option<Vec<u8>>> {
    let store = &*push.deps.store;
    let (Ok(room_id), Ok(event_id)) = (RoomId::parse(&item.room_id), EventId::parse(&item.event_id)) else {
        return Ok(None);
    };
    let Some(rec) = store.event(&event_id)? else { return Ok(None) };
    let Ok(event) = json::parse(&rec.json, NumberPolicy::Ieee754) else { return Ok(None) };
    let sender = event["sender"].as_str().unwrap_or_default();
    let names = match push.deps.rooms.get_view(&room_id) {
        Some(view) => {
            let state = |ty: &str, key: &str, field: &str| {
                view.state.get(ty, key).and_then(|e| e.content().get(field)?.as_str().map(str::to_owned))
            };
            Names {
                sender: state("m.room.member", sender, "displayname"),
                room: state("m.room.name", "", "name"),
                alias: state("m.room.canonical_alias", "", "alias"),
            }
        }
        // An invite to a room held elsewhere: what its stripped state says.
        None => invite_names(store, &key.user, &room_id, sender)?,
    };
    let tweaks: Value = serde_json::from_slice(&item.tweaks).unwrap_or_else(|_| serde_json::json!({}));
    let notice = Notice {
        event: &event,
        room_id: &item.room_id,
        event_id: &item.event_id,
        sender_display_name: names.sender.as_deref(),
        room_name: names.room.as_deref(),
        room_alias: names.alias.as_deref(),
        user: key.user.as_str(),
        unread: badge(push, key)?,
        tweaks: &tweaks,
        include_content: push.deps.config.push.include_content,
    };
    let Ok(pusher_json) = json::parse(&pusher.json, NumberPolicy::Ieee754) else { return Ok(None) };
    Ok(Some(serde_json::to_vec(&notify_body(&pusher_json, &notice, pusher.created_ts)).unwrap_or_default()))
}

/// The sender's and the room's names a push shows.
#[derive(Default)]
struct Names {
    sender: Option<String>,
    room: Option<String>,
    alias: Option<String>,
}

fn invite_names(store: &dyn Store, user: &UserId, room: &RoomId, sender: &str) -> StoreResult<Names> {
    let Some(m) = store.membership(user, room)? else { return Ok(Names::default()) };
    let stripped: Vec<Value> = serde_json::from_slice(&m.invite_state_json).unwrap_or_default();
    let find = |ty: &str, key: &str, field: &str| {
        stripped
            .iter()
            .find(|e| e["type"] == ty && e["state_key"] == key)
            .and_then(|e| e["content"][field].as_str().map(str::to_owned))
    };
    Ok(Names {
        sender: find("m.room.member", sender, "displayname"),
        room: find("m.room.name", "", "name"),
        alias: find("m.room.canonical_alias", "", "alias"),
    })
}

/// Unread notifications across the user's joined rooms.
fn badge(push: &Push, key: &PusherKey) -> StoreResult<u64> {
    let d = &push.deps;
    let mut total = 0;
    for (room, m) in d.store.memberships(&key.user)? {
        if m.membership == "join" {
            total += room_counts(&*d.store, &d.rooms, &push.unread, &key.user, &room)?.total().0;
        }
    }
    Ok(total)
}
