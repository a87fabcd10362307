//! Simplified sliding sync (MSC4186, `POST /_matrix/client/unstable/
//! org.matrix.simplified_msc3575/sync`), as Element X uses it: lists of the
//! user's rooms sorted by recent activity with ranges, room subscriptions,
//! required state, timeline limits, and the to-device, e2ee, account data,
//! receipts and typing extensions. Built on `/sync`'s per-user reads.
//!
//! What a connection has already been sent lives in memory, by position
//! token: a token this server no longer knows (after a restart) answers
//! `M_UNKNOWN_POS`, and the client starts again.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::{stripped, Syncer, MAX_TIMEOUT_MS};
use crate::client_api::filter::SyncFilter;
use crate::client_api::Call;
use crate::core::ids::{RoomId, UserId};
use crate::core::rooms::StateView;
use crate::http::query_get;
use crate::store::SideTopic;
use crate::wire::Failure;

/// Connections kept; past it the least recently used goes.
const MAX_CONNECTIONS: usize = 50_000;
/// Positions kept per connection (a client may repeat its last request).
const POSITIONS_KEPT: usize = 3;
const MAX_TIMELINE: u64 = 100;
const MAX_RANGE_ROOMS: u64 = 1_000;
/// Types that move a room up the list (MSC4186's default bump types).
const BUMP_TYPES: &[&str] = &[
    "m.room.create",
    "m.room.message",
    "m.room.encrypted",
    "m.sticker",
    "m.call.invite",
    "m.poll.start",
    "m.beacon_info",
];

/// What a connection was sent up to one position.
#[derive(Clone, Default)]
struct Sent {
    stream: u64,
    to_device: u64,
    /// Rooms the client holds, with the stream position they are current to.
    rooms: BTreeMap<RoomId, u64>,
}

#[derive(Default)]
struct Connection {
    next: u64,
    used: u64,
    positions: VecDeque<(String, Sent)>,
}

/// Every connection's positions, in memory.
#[derive(Default)]
pub struct Connections {
    map: Mutex<HashMap<(String, String, String), Connection>>,
    clock: Mutex<u64>,
}

impl Connections {
    fn get(&self, key: &(String, String, String), pos: &str) -> Option<Sent> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key)?.positions.iter().find(|(p, _)| p == pos).map(|(_, s)| s.clone())
    }

    fn put(&self, key: (String, String, String), sent: Sent) -> String {
        let tick = {
            let mut c = self.clock.lock().unwrap_or_else(|p| p.into_inner());
            *c += 1;
            *c
        };
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_CONNECTIONS && !map.contains_key(&key) {
            if let Some(oldest) = map.iter().min_by_key(|(_, c)| c.used).map(|(k, _)| k.clone()) {
                map.remove(&oldest);
            }
        }
        let conn = map.entry(key).or_default();
        conn.next += 1;
        conn.used = tick;
        let pos = format!("{}_{}", conn.next, sent.stream);
        conn.positions.push_back((pos.clone(), sent));
        while conn.positions.len() > POSITIONS_KEPT {
            conn.positions.pop_front();
        }
        pos
    }
}

/// What one room is asked for: the union over the lists and
/// subscriptions that name it.
#[derive(Default, Clone)]
struct Want {
    required_state: Vec<(String, String)>,
    timeline_limit: u64,
}

impl Want {
    fn merge(&mut self, config: &Value) {
        for pair in config["required_state"].as_array().into_iter().flatten() {
            if let (Some(t), Some(k)) = (pair[0].as_str(), pair[1].as_str()) {
                self.required_state.push((t.to_owned(), k.to_owned()));
            }
        }
        let limit = config["timeline_limit"].as_u64().unwrap_or(0).min(MAX_TIMELINE);
        self.timeline_limit = self.timeline_limit.max(limit);
    }

    /// Whether state `(ty, key)` is asked for; `lazy` are the members a
    /// `$LAZY` member entry stands for.
    fn wants(&self, ty: &str, key: &str, me: &str, lazy: &BTreeSet<String>) -> bool {
        self.required_state.iter().any(|(t, k)| {
            let type_ok = t == "*" || t == ty;
            let key_ok = k == "*" || k == key || (k == "$ME" && key == me) || (k == "$LAZY" && lazy.contains(key));
            type_ok && key_ok
        })
    }
}

/// One of the user's rooms, as the lists sort and filter them.
struct RoomInfo {
    membership: String,
    membership_stream: u64,
    bump: u64,
    invite_state: Value,
}

pub async fn sliding_sync(call: Call) -> Result<Value, Failure> {
    let (user, device) = call.who()?;
    let (user, device) = (user.clone(), device.to_owned());
    let body = Value::Object(call.body()?.clone());
    let conn_id = body["conn_id"].as_str().unwrap_or("").chars().take(64).collect::<String>();
    let key = (user.to_string(), device.clone(), conn_id);
    let prev = match query_get(&call.query, "pos") {
        Some(p) => Some(call.sliding.get(&key, p).ok_or(Failure::UnknownPos)?),
        None => None,
    };
    let timeout =
        query_get(&call.query, "timeout").and_then(|t| t.parse::<u64>().ok()).unwrap_or(0).min(MAX_TIMEOUT_MS);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout);
    let mut marks = call.server.positions.subscribe();
    let asked = Asked { call: &call, user: &user, device: &device, body: &body, prev: prev.as_ref() };
    loop {
        let upto = *marks.borrow_and_update();
        let (mut answer, sent, empty) = build(&asked, upto)?;
        let waiting = prev.is_some() && empty && tokio::time::Instant::now() < deadline;
        if !waiting {
            answer["pos"] = json!(call.sliding.put(key, sent));
            return Ok(answer);
        }
        let waiting = crate::admin::metrics::InGauge::enter("lmx_sync_waiters");
        let woken = tokio::time::timeout_at(deadline, marks.changed()).await;
        drop(waiting);
        if woken.is_err() {
            let upto = call.server.positions.watermark();
            let (mut answer, sent, _) = build(&asked, upto)?;
            answer["pos"] = json!(call.sliding.put(key, sent));
            return Ok(answer);
        }
    }
}

/// One request: who asks, what, and what the connection held before.
struct Asked<'a> {
    call: &'a Call,
    user: &'a UserId,
    device: &'a str,
    body: &'a Value,
    prev: Option<&'a Sent>,
}

/// The answer at `upto`, what the connection then holds, and whether the
/// answer carries nothing new.
fn build(asked: &Asked<'_>, upto: u64) -> Result<(Value, Sent, bool), Failure> {
    let Asked { call, user, body, prev, .. } = *asked;
    let store = &call.server.store;
    let since = prev.map_or(0, |p| p.stream);
    let mut infos: BTreeMap<RoomId, RoomInfo> = BTreeMap::new();
    for (room, m) in store.memberships(user)? {
        if m.forgotten {
            continue;
        }
        let left_now = matches!(m.membership.as_str(), "leave" | "ban") && m.stream > since && prev.is_some();
        if !matches!(m.membership.as_str(), "join" | "invite" | "knock") && !left_now {
            continue;
        }
        let bump = bump_of(call, &room, upto)?.unwrap_or(m.stream);
        let invite_state = if m.membership == "join" { Value::Null } else { stripped(&m) };
        infos.insert(
            room,
            RoomInfo { membership: m.membership.clone(), membership_stream: m.stream, bump, invite_state },
        );
    }
    let dms = direct_rooms(call, user)?;
    let mut wanted: BTreeMap<RoomId, Want> = BTreeMap::new();
    let mut lists = Map::new();
    for (name, config) in body["lists"].as_object().into_iter().flatten() {
        let mut rooms: Vec<(&RoomId, &RoomInfo)> =
            infos.iter().filter(|(id, info)| passes(call, id, info, &config["filters"], &dms)).collect();
        rooms.sort_by(|a, b| b.1.bump.cmp(&a.1.bump).then_with(|| a.0.cmp(b.0)));
        lists.insert(name.clone(), json!({"count": rooms.len()}));
        for range in config["ranges"].as_array().into_iter().flatten() {
            let (Some(from), Some(to)) = (range[0].as_u64(), range[1].as_u64()) else { continue };
            let to = to.min(from.saturating_add(MAX_RANGE_ROOMS));
            for (id, _) in rooms.iter().skip(from as usize).take((to.saturating_sub(from) + 1) as usize) {
                wanted.entry((*id).clone()).or_default().merge(config);
            }
        }
    }
    for (id, config) in body["room_subscriptions"].as_object().into_iter().flatten() {
        if let Ok(id) = RoomId::parse(id) {
            if infos.contains_key(&id) {
                wanted.entry(id).or_default().merge(config);
            }
        }
    }
    let mut sent = Sent {
        stream: upto,
        to_device: prev.map_or(0, |p| p.to_device),
        rooms: prev.map(|p| p.rooms.clone()).unwrap_or_default(),
    };
    let mut rooms_out = Map::new();
    for (id, want) in &wanted {
        let info = &infos[id];
        let had = prev.and_then(|p| p.rooms.get(id)).copied();
        if let Some(room) = room_answer(asked, id, info, want, had, upto, dms.contains(id))? {
            rooms_out.insert(id.to_string(), room);
        }
        sent.rooms.insert(id.clone(), upto);
    }
    let in_answer: Vec<RoomId> = rooms_out.keys().filter_map(|k| RoomId::parse(k).ok()).collect();
    let extensions = extensions(asked, upto, &infos, &in_answer, &mut sent)?;
    let empty =
        rooms_out.is_empty() && extensions.values().all(|e| e.as_object().is_none_or(|o| o.values().all(is_blank)));
    let answer = json!({"lists": lists, "rooms": rooms_out, "extensions": extensions});
    Ok((answer, sent, empty))
}

fn is_blank(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.values().all(is_blank),
        Value::Null => true,
        _ => false,
    }
}

/// The stream position of the room's latest bump event (among its last
/// few), else of its latest event.
fn bump_of(call: &Call, room: &RoomId, upto: u64) -> Result<Option<u64>, Failure> {
    let store = &call.server.store;
    let recent = store.room_stream(room, 0, upto, 20)?;
    for e in &recent {
        let Some(rec) = store.event(&e.event)? else { continue };
        let ty = crate::core::json::parse(&rec.json, crate::core::json::NumberPolicy::Ieee754)
            .ok()
            .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_owned));
        if ty.is_some_and(|t| BUMP_TYPES.contains(&t.as_str())) {
            return Ok(Some(e.pos));
        }
    }
    Ok(recent.first().map(|e| e.pos))
}

/// Rooms the user's `m.direct` account data names.
fn direct_rooms(call: &Call, user: &UserId) -> Result<BTreeSet<RoomId>, Failure> {
    let direct = crate::client_api::account_data::get_data(call, user, None, "m.direct")?;
    Ok(direct
        .as_ref()
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|o| o.values())
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(|r| RoomId::parse(r).ok())
        .collect())
}

/// A list's `filters`.
fn passes(call: &Call, id: &RoomId, info: &RoomInfo, filters: &Value, dms: &BTreeSet<RoomId>) -> bool {
    if let Some(want) = filters["is_dm"].as_bool() {
        if dms.contains(id) != want {
            return false;
        }
    }
    if let Some(want) = filters["is_invite"].as_bool() {
        if (info.membership == "invite") != want {
            return false;
        }
    }
    let view = call.server.rooms.get_view(id);
    if let Some(want) = filters["is_encrypted"].as_bool() {
        let encrypted =
            view.as_ref().is_some_and(|v| v.state.get("m.room.encryption", "").is_some() || v.mls_commit.is_some());
        if encrypted != want {
            return false;
        }
    }
    let room_type = view.as_ref().and_then(|v| v.state.create()?.content().get("type")?.as_str().map(str::to_owned));
    let type_value = room_type.map_or(Value::Null, Value::String);
    if let Some(types) = filters["room_types"].as_array() {
        if !types.contains(&type_value) {
            return false;
        }
    }
    if let Some(types) = filters["not_room_types"].as_array() {
        if types.contains(&type_value) {
            return false;
        }
    }
    true
}

/// One room's part of the answer: whole when the connection does not hold
/// it (`had` is `None`), else what changed since; `None` when nothing did.
fn room_answer(
    asked: &Asked<'_>,
    id: &RoomId,
    info: &RoomInfo,
    want: &Want,
    had: Option<u64>,
    upto: u64,
    is_dm: bool,
) -> Result<Option<Value>, Failure> {
    let (call, user) = (asked.call, asked.user);
    let mut out = json!({"bump_stamp": info.bump, "initial": had.is_none()});
    if is_dm {
        out["is_dm"] = json!(true);
    }
    if info.membership != "join" && info.membership != "leave" && info.membership != "ban" {
        if had.is_some_and(|h| h >= info.membership_stream) {
            return Ok(None);
        }
        let key = if info.membership == "knock" { "knock_state" } else { "invite_state" };
        out[key] = info.invite_state.clone();
        return Ok(Some(out));
    }
    let filter = SyncFilter::from_json(&json!({"room": {"timeline": {"limit": want.timeline_limit.max(1)}}}));
    let device = call.who()?.1.to_owned();
    let s = Syncer { call, user, device: &device, filter: &filter };
    let (items, limited) = match had {
        None if want.timeline_limit == 0 => (Vec::new(), true),
        None => s.recent(id)?,
        Some(h) => {
            let end = if info.membership == "join" { upto } else { info.membership_stream };
            s.timeline_since(id, h, end)?
        }
    };
    let items = if had.is_none() { s.readable(id, items)? } else { items };
    let Some(view) = call.server.rooms.get_view(id) else { return Ok(None) };
    let lazy: BTreeSet<String> =
        items.iter().filter_map(|i| i.event["sender"].as_str().map(str::to_owned)).chain([user.to_string()]).collect();
    let me = user.as_str();
    let required_state: Vec<Value> = match had {
        None => view
            .state
            .iter()
            .filter(|p| want.wants(p.event_type(), p.state_key().unwrap_or(""), me, &lazy))
            .map(|p| super::client_event(p.json(), p.event_id()))
            .collect(),
        // Changes come with the timeline; members newly in it are added.
        Some(_) => items
            .iter()
            .filter(|i| i.event.get("state_key").is_some())
            .filter(|i| {
                want.wants(
                    i.event["type"].as_str().unwrap_or(""),
                    i.event["state_key"].as_str().unwrap_or(""),
                    me,
                    &lazy,
                )
            })
            .map(|i| i.event.clone())
            .collect(),
    };
    if had.is_some() && items.is_empty() {
        return Ok(None);
    }
    let mut timeline: Vec<Value> = items.iter().map(|i| i.event.clone()).collect();
    for e in &mut timeline {
        crate::client_api::relations::bundle_into(&call.server, id, user, e)?;
    }
    if let Some(first) = items.first() {
        out["prev_batch"] = json!(format!("t{}", first.index));
    } else {
        out["prev_batch"] = json!(format!("t{}", view.length));
    }
    out["num_live"] = json!(if had.is_some() { timeline.len() } else { 0 });
    out["timeline"] = json!(timeline);
    out["limited"] = json!(limited);
    out["required_state"] = json!(required_state);
    name_and_heroes(&view, me, &mut out);
    out["joined_count"] = json!(view.state.joined_members().count());
    out["invited_count"] = json!(view.state.iter().filter(|e| e.membership() == Some("invite")).count());
    let (notifications, highlights) = s.unread(id)?.total();
    out["notification_count"] = json!(notifications);
    out["highlight_count"] = json!(highlights);
    Ok(Some(out))
}

/// The room's name, avatar and (without a name) up to five other members.
fn name_and_heroes(view: &crate::room::RoomView, me: &str, out: &mut Value) {
    let get = |ty: &str, field: &str| {
        view.state
            .get(ty, "")
            .and_then(|e| e.content().get(field)?.as_str().map(str::to_owned))
            .filter(|s| !s.is_empty())
    };
    if let Some(avatar) = get("m.room.avatar", "url") {
        out["avatar"] = json!(avatar);
    }
    if let Some(name) = get("m.room.name", "name") {
        out["name"] = json!(name);
        return;
    }
    let heroes: Vec<Value> = view
        .state
        .iter()
        .filter(|e| e.event_type() == "m.room.member" && matches!(e.membership(), Some("join" | "invite")))
        .filter(|e| e.state_key() != Some(me))
        .take(5)
        .map(|e| {
            let mut h = json!({"user_id": e.state_key().unwrap_or("")});
            for (k, field) in [("displayname", "displayname"), ("avatar_url", "avatar_url")] {
                if let Some(v) = e.content().get(field).and_then(Value::as_str) {
                    h[k] = json!(v);
                }
            }
            h
        })
        .collect();
    if !heroes.is_empty() {
        out["heroes"] = json!(heroes);
    }
}

/// The extensions asked for: to-device messages (acknowledged by the
/// client's `since`), keys (device-list changes and key counts), account
/// data, receipts and typing, for the rooms in the answer and those that
/// changed.
fn extensions(
    asked: &Asked<'_>,
    upto: u64,
    infos: &BTreeMap<RoomId, RoomInfo>,
    in_answer: &[RoomId],
    sent: &mut Sent,
) -> Result<Map<String, Value>, Failure> {
    let Asked { call, user, device, body, prev } = *asked;
    let ext = &body["extensions"];
    let on = |name: &str| ext[name]["enabled"].as_bool().unwrap_or(false);
    let store = &call.server.store;
    let since = prev.map(|p| p.stream);
    let filter = SyncFilter::from_json(&json!({}));
    let s = Syncer { call, user, device, filter: &filter };
    let joined: Vec<RoomId> = infos.iter().filter(|(_, i)| i.membership == "join").map(|(r, _)| r.clone()).collect();
    let mut out = Map::new();
    if on("to_device") {
        let e2ee = &call.server.e2ee;
        let from = ext["to_device"]["since"].as_str().and_then(|t| t.parse::<u64>().ok()).unwrap_or(0).min(upto);
        e2ee.acknowledge(user, device, from)?;
        let inbox = e2ee.inbox(user, device, from, upto)?;
        let next = inbox.more_after.unwrap_or(upto);
        sent.to_device = next;
        out.insert("to_device".into(), json!({"next_batch": next.to_string(), "events": inbox.events}));
    }
    if on("e2ee") {
        let counts = call.server.e2ee.counts(user, device)?;
        let mut e = json!({
            "device_one_time_keys_count": counts.one_time,
            "device_unused_fallback_key_types": counts.unused_fallback,
        });
        if let Some(since) = since {
            let mut members = super::device_lists::MemberChanges::default();
            for (room, info) in infos {
                if info.membership_stream > since && info.membership == "join" {
                    members.rooms_joined.push(room.clone());
                } else if info.membership_stream > since && matches!(info.membership.as_str(), "leave" | "ban") {
                    members.rooms_left.push(room.clone());
                }
            }
            let (changed, left) = s.device_lists(since, upto, &joined, &members)?;
            e["device_lists"] = json!({"changed": changed, "left": left});
        }
        out.insert("e2ee".into(), e);
    }
    if on("account_data") {
        let (global, by_room) = match since {
            None => {
                let rooms: Map<String, Value> = in_answer
                    .iter()
                    .map(|r| Ok((r.to_string(), json!(s.account_data(Some(r), None)?))))
                    .collect::<Result<_, Failure>>()?;
                (s.account_data(None, None)?, rooms)
            }
            Some(since) => {
                let (data, room_data) = s.account_data_changes(since, upto)?;
                let global = if data.is_empty() { Vec::new() } else { s.account_data(None, Some(&data))? };
                let mut rooms = Map::new();
                for (room, types) in &room_data {
                    if let Ok(r) = RoomId::parse(room) {
                        rooms.insert(room.clone(), json!(s.account_data(Some(&r), Some(types))?));
                    }
                }
                (global, rooms)
            }
        };
        out.insert("account_data".into(), json!({"global": global, "rooms": by_room}));
    }
    for (name, typing) in [("receipts", false), ("typing", true)] {
        if !on(name) {
            continue;
        }
        let mut rooms = Map::new();
        for room in &joined {
            let topic = if typing { SideTopic::Typing(room.as_str()) } else { SideTopic::Receipts(room.as_str()) };
            let fresh = in_answer.contains(room) && prev.is_none_or(|p| !p.rooms.contains_key(room));
            let changed =
                since.is_some_and(|since| !store.side_entries(topic, since, upto, 1).unwrap_or_default().is_empty());
            if !fresh && !changed {
                continue;
            }
            let receipts_since = (!typing).then(|| if fresh { 0 } else { since.unwrap_or(0) });
            if let Some(e) = s.ephemeral(room, receipts_since, typing)?.into_iter().next() {
                rooms.insert(room.to_string(), e);
            }
        }
        out.insert(name.into(), json!({"rooms": rooms}));
    }
    Ok(out)
}
