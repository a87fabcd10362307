//! `GET /sync`. Tokens are `s<stream position>` and survive restarts; a
//! long poll waits for the stream's watermark to move, so an event is never
//! shown before it is durable and never skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{json, Value};

use super::account_data::default_rules;
use super::events::{client_event, load_client_event, record_event};
use super::filter::{self, SyncFilter};
use super::Call;
use crate::core::ids::{EventId, RoomId, UserId};
use crate::core::json::{self, NumberPolicy};
use crate::http::query_get;
use crate::push::unread::{room_counts, Counts};
use crate::store::records::side_entry::Kind;
use crate::store::records::Membership;
use crate::store::SideTopic;
use crate::wire::Failure;

/// Timeline events per room when the filter sets no limit.
const TIMELINE_LIMIT: u64 = 20;
/// Presence changes read per answer (presence is best effort).
const PRESENCE_CHANGES: usize = 10_000;
const MAX_TIMEOUT_MS: u64 = 120_000;

mod device_lists;
mod history;
pub mod sliding;

pub use device_lists::keys_changes;
use device_lists::MemberChanges;

/// A sync token: `s<stream position>`, and `_<position>` when the device's
/// to-device inbox was read only up to there (it held more than one answer
/// carries). Tokens survive restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Token {
    pos: u64,
    to_device: u64,
}

impl Token {
    fn at(pos: u64) -> Token {
        Token { pos, to_device: pos }
    }

    fn parse(t: &str) -> Option<Token> {
        let t = t.strip_prefix('s').unwrap_or(t);
        match t.split_once('_') {
            Some((pos, to_device)) => {
                let token = Token { pos: pos.parse().ok()?, to_device: to_device.parse().ok()? };
                (token.to_device <= token.pos).then_some(token)
            }
            None => t.parse().ok().map(Token::at),
        }
    }

    fn text(&self) -> String {
        if self.to_device == self.pos {
            format!("s{}", self.pos)
        } else {
            format!("s{}_{}", self.pos, self.to_device)
        }
    }
}

pub async fn sync(call: Call) -> Result<Value, Failure> {
    let (user, _) = call.who()?;
    let user = user.clone();
    let timeout =
        query_get(&call.query, "timeout").and_then(|t| t.parse::<u64>().ok()).unwrap_or(0).min(MAX_TIMEOUT_MS);
    let full_state = query_get(&call.query, "full_state") == Some("true");
    let filter = SyncFilter::from_json(&filter::resolve(&call, &user, query_get(&call.query, "filter"))?);
    let since = match query_get(&call.query, "since") {
        Some(t) => Some(Token::parse(t).ok_or_else(|| Failure::invalid_param("Unknown since token"))?),
        None => None,
    };
    let presence = query_get(&call.query, "set_presence").unwrap_or("online");
    if ["online", "unavailable", "offline"].contains(&presence) {
        let msg = call.server.ephemeral.presence(&user).and_then(|p| p.status_msg);
        super::presence::set_presence(&call, &user, presence, msg)?;
    }
    let device = call.who()?.1.to_owned();
    let s = Syncer { call: &call, user: &user, device: &device, filter: &filter };
    // The client holds everything up to its token: those messages go.
    if let Some(since) = since {
        call.server.e2ee.acknowledge(&user, &device, since.to_device)?;
    }
    let Some(since) = since.filter(|_| !full_state) else {
        return s.initial(since.map_or(0, |t| t.to_device));
    };
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout);
    let mut marks = call.server.positions.subscribe();
    loop {
        let upto = *marks.borrow_and_update();
        if upto > since.to_device {
            let (answer, empty) = s.incremental(since, upto)?;
            if !empty || tokio::time::Instant::now() >= deadline {
                tracing::debug!(%user, since = since.pos, upto, empty, "sync answered");
                return Ok(answer);
            }
        } else if tokio::time::Instant::now() >= deadline {
            return s.empty_answer(since);
        }
        let waiting = crate::admin::metrics::InGauge::enter("lmx_sync_waiters");
        let woken = tokio::time::timeout_at(deadline, marks.changed()).await;
        drop(waiting);
        if woken.is_err() {
            let upto = call.server.positions.watermark();
            return if upto > since.to_device { Ok(s.incremental(since, upto)?.0) } else { s.empty_answer(since) };
        }
    }
}

fn stripped(m: &Membership) -> Value {
    json::parse(&m.invite_state_json, NumberPolicy::Ieee754).unwrap_or_else(|_| json!([]))
}

/// A timeline event with its list position.
struct Item {
    id: EventId,
    event: Value,
    index: u64,
}

struct Syncer<'a> {
    call: &'a Call,
    user: &'a UserId,
    device: &'a str,
    filter: &'a SyncFilter,
}

impl Syncer<'_> {
    /// An answer with no rooms' news at `token`, with the device's key
    /// counts (clients read them on every answer) and its to-device
    /// messages from the token's inbox position on.
    fn answer_at(&self, token: Token, upto: u64) -> Result<(Value, bool), Failure> {
        let e2ee = &self.call.server.e2ee;
        let inbox = e2ee.inbox(self.user, self.device, token.to_device, upto)?;
        let counts = e2ee.counts(self.user, self.device)?;
        let next = Token { pos: upto, to_device: inbox.more_after.unwrap_or(upto) };
        let empty = inbox.events.is_empty();
        let answer = json!({
            "next_batch": next.text(),
            "rooms": {"join": {}, "invite": {}, "leave": {}, "knock": {}},
            "presence": {"events": []},
            "account_data": {"events": []},
            "to_device": {"events": inbox.events},
            "device_one_time_keys_count": counts.one_time,
            "device_unused_fallback_key_types": counts.unused_fallback,
        });
        Ok((answer, empty))
    }

    fn empty_answer(&self, since: Token) -> Result<Value, Failure> {
        Ok(self.answer_at(since, since.pos)?.0)
    }

    fn limit(&self) -> usize {
        self.filter.timeline.limit.unwrap_or(TIMELINE_LIMIT).clamp(1, 500) as usize
    }

    /// Current state as client events, minus the timeline's, filtered.
    fn state_events(&self, room: &RoomId, skip: &BTreeSet<EventId>) -> Vec<Value> {
        let Some(view) = self.call.server.rooms.get_view(room) else { return Vec::new() };
        view.state
            .iter()
            .filter(|p| !skip.contains(p.event_id()))
            .map(|p| client_event(p.json(), p.event_id()))
            .filter(|e| self.filter.state.allows(e))
            .collect()
    }

    /// The last events of a room's list that pass the timeline filter.
    fn recent(&self, room: &RoomId) -> Result<(Vec<Item>, bool), Failure> {
        let Some(view) = self.call.server.rooms.get_view(room) else { return Ok((Vec::new(), false)) };
        let length = view.length;
        let want = self.limit();
        let mut items: Vec<Item> = Vec::new();
        let mut end = length;
        // A filter that lets little through must not make one sync read a
        // whole room: past this many events the timeline is just limited.
        let floor = length.saturating_sub(want as u64 * 4 + 1_000);
        while end > floor && items.len() < want {
            let start = end.saturating_sub(want as u64 * 2).max(floor);
            let ids = self.call.server.store.list(room, start, end)?;
            for (offset, id) in ids.iter().enumerate().rev() {
                if items.len() == want {
                    break;
                }
                if let Some(e) = load_client_event(&self.call.server, id)?.filter(|e| self.filter.timeline.allows(e)) {
                    items.push(Item { id: id.clone(), event: e, index: start + offset as u64 });
                }
            }
            end = start;
        }
        items.reverse();
        let limited = items.first().map_or(end > 0, |i| i.index > 0);
        Ok((items, limited))
    }

    fn ephemeral(&self, room: &RoomId, receipts_since: Option<u64>, typing: bool) -> Result<Vec<Value>, Failure> {
        let mut out = Vec::new();
        if typing {
            let users: Vec<String> = self.call.server.ephemeral.typing(room).iter().map(|u| u.to_string()).collect();
            out.push(json!({"type": "m.typing", "content": {"user_ids": users}}));
        }
        if let Some(since) = receipts_since {
            let mut content = serde_json::Map::new();
            for (kind, user, r) in self.call.server.store.receipts(room)? {
                if r.stream <= since || (kind == "m.read.private" && &user != self.user) {
                    continue;
                }
                let mut data = json!({ "ts": r.ts });
                if !r.thread_id.is_empty() {
                    data["thread_id"] = json!(r.thread_id);
                }
                let by_event = content.entry(r.event_id.clone()).or_insert_with(|| json!({}));
                by_event[&kind][user.as_str()] = data;
            }
            if !content.is_empty() {
                out.push(json!({"type": "m.receipt", "content": content}));
            }
        }
        Ok(out.into_iter().filter(|e| self.filter.ephemeral.allows(e)).collect())
    }

    fn account_data(&self, room: Option<&RoomId>, only: Option<&BTreeSet<String>>) -> Result<Vec<Value>, Failure> {
        let mut out = Vec::new();
        let mut have_rules = false;
        for (kind, bytes) in self.call.server.store.account_data_all(self.user, room)? {
            if only.is_some_and(|o| !o.contains(&kind)) {
                continue;
            }
            have_rules |= kind == "m.push_rules";
            let content = json::parse(&bytes, NumberPolicy::Ieee754).unwrap_or_else(|_| json!({}));
            out.push(json!({"type": kind, "content": content}));
        }
        if room.is_none() && only.is_none() && !have_rules {
            out.push(json!({"type": "m.push_rules", "content": default_rules(self.user)}));
        }
        let filter = if room.is_some() { &self.filter.room_account_data } else { &self.filter.account_data };
        Ok(out.into_iter().filter(|e| filter.allows(e)).collect())
    }

    /// Notifications and highlights after the user's read receipts
    /// (looking back at most `unread::LOOK_BACK` events when first counted).
    fn unread(&self, room: &RoomId) -> Result<Counts, Failure> {
        let server = &self.call.server;
        Ok(room_counts(&*server.store, &server.rooms, &server.push.unread, self.user, room)?)
    }

    /// `unread_notifications`, and `unread_thread_notifications` for a
    /// client that asked for thread-aware counts.
    fn put_unread(&self, room: &RoomId, out: &mut Value) -> Result<(), Failure> {
        let counts = self.unread(room)?;
        let shape = |(n, h): (u64, u64)| json!({ "notification_count": n, "highlight_count": h });
        if self.filter.thread_counts {
            out["unread_notifications"] = shape(counts.main);
            let threads: serde_json::Map<String, Value> =
                counts.threads.iter().filter(|(_, p)| p.0 > 0).map(|(t, p)| (t.clone(), shape(*p))).collect();
            out["unread_thread_notifications"] = Value::Object(threads);
        } else {
            out["unread_notifications"] = shape(counts.total());
        }
        Ok(())
    }

    fn joined_room(
        &self,
        room: &RoomId,
        items: Vec<Item>,
        limited: bool,
        state: Vec<Value>,
        ephemeral: Vec<Value>,
        account_data: Vec<Value>,
    ) -> Result<Value, Failure> {
        let mut events: Vec<Value> = items.iter().map(|i| i.event.clone()).collect();
        for e in &mut events {
            super::relations::bundle_into(&self.call.server, room, self.user, e)?;
        }
        let mut tl = json!({ "events": events, "limited": limited });
        if let Some(first) = items.first() {
            tl["prev_batch"] = json!(format!("t{}", first.index));
        }
        // A room that cannot be read back is left out, not the whole sync.
        let view = self.call.server.rooms.get_view(room);
        if let (None, Some(v)) = (items.first(), &view) {
            tl["prev_batch"] = json!(format!("t{}", v.length));
        }
        let joined = view.as_ref().map_or(0, |v| v.state.joined_members().count());
        let invited = view.as_ref().map_or(0, |v| v.state.iter().filter(|e| e.membership() == Some("invite")).count());
        let mut out = json!({
            "timeline": tl,
            "state": { "events": state },
            "ephemeral": { "events": ephemeral },
            "account_data": { "events": account_data },
            "summary": { "m.joined_member_count": joined, "m.invited_member_count": invited },
        });
        self.put_unread(room, &mut out)?;
        Ok(out)
    }

    fn presence_events(&self, users: &BTreeSet<UserId>) -> Vec<Value> {
        users
            .iter()
            .filter_map(|u| self.call.server.ephemeral.presence_event(u))
            .filter(|e| self.filter.presence.allows(e))
            .collect()
    }

    /// Everything now; to-device messages from `to_device` on (0 unless a
    /// `full_state` sync names a token).
    fn initial(&self, to_device: u64) -> Result<Value, Failure> {
        let upto = self.call.server.positions.watermark();
        let (mut answer, _) = self.answer_at(Token { pos: upto, to_device }, upto)?;
        let mut joined = Vec::new();
        for (room, m) in self.call.server.store.memberships(self.user)? {
            if !self.filter.rooms.allows_room(room.as_str()) {
                continue;
            }
            match m.membership.as_str() {
                "join" => {
                    let (items, limited) = self.recent(&room)?;
                    let items = self.readable(&room, items)?;
                    let ids: BTreeSet<EventId> = items.iter().map(|i| i.id.clone()).collect();
                    let state = self.state_events(&room, &ids);
                    let eph = self.ephemeral(&room, Some(0), true)?;
                    let data = self.account_data(Some(&room), None)?;
                    answer["rooms"]["join"][room.as_str()] =
                        self.joined_room(&room, items, limited, state, eph, data)?;
                    joined.push(room);
                }
                "invite" => {
                    answer["rooms"]["invite"][room.as_str()] = json!({"invite_state": {"events": stripped(&m)}})
                }
                "knock" => answer["rooms"]["knock"][room.as_str()] = json!({"knock_state": {"events": stripped(&m)}}),
                _ => {}
            }
        }
        answer["account_data"]["events"] = json!(self.account_data(None, None)?);
        answer["presence"]["events"] = json!(self.presence_events(&self.contacts(&joined)));
        Ok(answer)
    }

    /// A room's timeline events in `(since, upto]`, read newest first from
    /// the room's own stream: the last `limit()` the filter lets through,
    /// and whether there were more.
    fn timeline_since(&self, room: &RoomId, since: u64, upto: u64) -> Result<(Vec<Item>, bool), Failure> {
        let store = &self.call.server.store;
        let want = self.limit();
        // As in `recent`: a filter that lets little through must not make
        // one sync read a room's whole history.
        let budget = want * 4 + 1_000;
        let page_size = want + 1;
        let (mut items, mut read, mut before) = (Vec::new(), 0, upto);
        let limited = 'pages: loop {
            let page = store.room_stream(room, since, before, page_size)?;
            for e in &page {
                read += 1;
                let Some(rec) = store.event(&e.event)?.filter(|r| !r.soft_failed && !r.outlier) else { continue };
                let Some(ev) = record_event(&rec, &e.event).filter(|ev| self.filter.timeline.allows(ev)) else {
                    continue;
                };
                if items.len() == want {
                    break 'pages true;
                }
                items.push(Item { id: e.event.clone(), event: ev, index: rec.index });
            }
            match page.last() {
                Some(last) if page.len() == page_size => {
                    if read >= budget {
                        break true;
                    }
                    before = last.pos - 1;
                }
                _ => break false,
            }
        };
        items.reverse();
        Ok((items, limited))
    }

    /// The account data types that changed in `(since, upto]`: global,
    /// and by room.
    #[allow(clippy::type_complexity)]
    fn account_data_changes(
        &self,
        since: u64,
        upto: u64,
    ) -> Result<(BTreeSet<String>, BTreeMap<String, BTreeSet<String>>), Failure> {
        let (mut data, mut room_data): (BTreeSet<String>, BTreeMap<String, BTreeSet<String>>) = Default::default();
        let topic = SideTopic::AccountData(self.user.as_str());
        for (_, side) in self.call.server.store.side_entries(topic, since, upto, usize::MAX)? {
            if let Some(Kind::AccountData(c)) = side.kind {
                if c.room_id.is_empty() {
                    data.insert(c.r#type);
                } else {
                    room_data.entry(c.room_id).or_default().insert(c.r#type);
                }
            }
        }
        Ok((data, room_data))
    }

    /// Changes in `(since, upto]`; also says whether there were none. Reads
    /// only the user's rooms and topics, never the whole server's stream.
    fn incremental(&self, token: Token, upto: u64) -> Result<(Value, bool), Failure> {
        let store = &self.call.server.store;
        let (since, next) = (token.pos, upto);
        let memberships = store.memberships(self.user)?;
        let changed = |topic| Ok::<_, Failure>(!store.side_entries(topic, since, next, 1)?.is_empty());
        let (data, room_data) = self.account_data_changes(since, next)?;
        let presence_changes = store.side_entries(SideTopic::Presence, since, next, PRESENCE_CHANGES)?;
        // Past the cap the changes are not all read: every contact's
        // presence goes out, as in an initial sync.
        let all_presence = presence_changes.len() == PRESENCE_CHANGES;
        let mut presence = BTreeSet::new();
        for (_, side) in presence_changes {
            if let Some(Kind::PresenceUser(u)) = side.kind {
                presence.insert(u);
            }
        }
        let (mut answer, mut empty) = self.answer_at(token, upto)?;
        let mut joined = Vec::new();
        let mut members = MemberChanges::default();
        for (room, m) in &memberships {
            if !self.filter.rooms.allows_room(room.as_str()) || m.forgotten {
                continue;
            }
            let changed_membership = m.stream > since && m.stream <= next;
            let key = room.as_str();
            match m.membership.as_str() {
                "invite" if changed_membership => {
                    answer["rooms"]["invite"][key] = json!({"invite_state": {"events": stripped(m)}});
                    empty = false;
                }
                "knock" if changed_membership => {
                    answer["rooms"]["knock"][key] = json!({"knock_state": {"events": stripped(m)}});
                    empty = false;
                }
                "join" => {
                    joined.push(room.clone());
                    let (items, limited) = self.timeline_since(room, since, next)?;
                    let items = if changed_membership { self.readable(room, items)? } else { items };
                    if changed_membership {
                        members.rooms_joined.push(room.clone());
                    }
                    members.read(&items);
                    let is_typing = changed(SideTopic::Typing(key))?;
                    let has_receipts = changed(SideTopic::Receipts(key))?;
                    let data_types = room_data.get(key);
                    // A timeline cut short with nothing the filter lets
                    // through still tells the client of its gap.
                    let quiet = items.is_empty() && !limited;
                    if quiet && !changed_membership && !is_typing && !has_receipts && data_types.is_none() {
                        continue;
                    }
                    let ids: BTreeSet<EventId> = items.iter().map(|i| i.id.clone()).collect();
                    // A room joined in this window gets its state; a gap in the
                    // timeline may hide state changes, so it gets it too.
                    let state = if changed_membership || limited { self.state_events(room, &ids) } else { Vec::new() };
                    let eph = self.ephemeral(room, has_receipts.then_some(since), is_typing)?;
                    let acc = match data_types {
                        Some(t) => self.account_data(Some(room), Some(t))?,
                        None => Vec::new(),
                    };
                    answer["rooms"]["join"][key] = self.joined_room(room, items, limited, state, eph, acc)?;
                    empty = false;
                }
                "leave" | "ban" if changed_membership => {
                    members.rooms_left.push(room.clone());
                    // Nothing after the user left (or was kicked or banned).
                    let (items, limited) = self.timeline_since(room, since, m.stream)?;
                    let events: Vec<Value> = items.iter().map(|i| i.event.clone()).collect();
                    answer["rooms"]["leave"][key] = json!({
                        "timeline": {"events": events, "limited": limited},
                        "state": {"events": []},
                        "account_data": {"events": []},
                    });
                    empty = false;
                }
                _ => {}
            }
        }
        if !data.is_empty() {
            answer["account_data"]["events"] = json!(self.account_data(None, Some(&data))?);
            empty = false;
        }
        let changed = if all_presence {
            self.contacts(&joined)
        } else {
            let mut changed = BTreeSet::new();
            for user in presence.iter().filter_map(|u| UserId::parse(u).ok()) {
                if self.shares_a_room(&user, &joined)? {
                    changed.insert(user);
                }
            }
            changed
        };
        if !changed.is_empty() {
            answer["presence"]["events"] = json!(self.presence_events(&changed));
            empty = false;
        }
        let (changed, left) = self.device_lists(since, next, &joined, &members)?;
        if !changed.is_empty() || !left.is_empty() {
            answer["device_lists"] = json!({"changed": changed, "left": left});
            empty = false;
        }
        Ok((answer, empty))
    }
}
