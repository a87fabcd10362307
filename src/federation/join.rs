//! Joining (or leaving, knocking on) a room hubbed elsewhere when no local
//! user takes part: the make/send handshake with the hub (digest 7.3-7.5;
//! items 191-201; OQ-25, OQ-27, OQ-40).

use std::sync::Arc;

use http::Method;
use serde_json::{json, Value};

use super::client::FedError;
use super::fetch::{checked_pdu, checked_pdus, lm_peer};
use crate::core::event::{sign_event, sign_lpdu, Lpdu, Pdu, RoomVersion, Schema};
use crate::core::ids::{EventId, RoomId, ServerName, UserId};
use crate::core::json::Object;
use crate::core::rooms::{authorize, StateMap};
use crate::federation::Node;
use crate::http::encode_segment;
use crate::room::{JoinSeed, JoinTurn, Opened, RoomCmd, RoomError, RoomHandle, Verdict};
use crate::sys::now_ms;

/// Versions we can join, for `ver=` (item 195).
fn supported_versions() -> Vec<&'static str> {
    RoomVersion::all().iter().filter(|v| v.hostable).map(|v| v.id).collect()
}

/// The template of a `make_*` answer, in either shape (OQ-25).
fn template_of(body: &Value) -> Option<(Object, Option<String>)> {
    let version = body.get("room_version").and_then(Value::as_str).map(str::to_owned);
    let t = match body.get("event").and_then(Value::as_object) {
        Some(e) => e.clone(),
        None if body.get("type").is_some() => body.as_object()?.clone(),
        None => return None,
    };
    Some((t, version))
}

/// What a make/send handshake is about.
struct Handshake<'a> {
    hub: &'a ServerName,
    room: &'a RoomId,
    user: &'a UserId,
    membership: &'a str,
    version: &'static RoomVersion,
}

fn template_error(h: &Handshake<'_>, what: &str) -> RoomError {
    RoomError::Remote(format!("{}'s template has a wrong {what}", h.hub))
}

/// What every template must say: our user's own member event.
fn check_template(h: &Handshake<'_>, template: &Object) -> Result<(), RoomError> {
    if template.get("type").and_then(Value::as_str) != Some("m.room.member") {
        return Err(template_error(h, "type"));
    }
    for k in ["state_key", "sender"] {
        if template.get(k).and_then(Value::as_str) != Some(h.user.as_str()) {
            return Err(template_error(h, k));
        }
    }
    Ok(())
}

/// Builds and signs our LPDU from a hub's template, keeping only the fields
/// we expect and checking their values (items 193-194).
fn lpdu_from_template(node: &Node, h: &Handshake<'_>, template: &Object, extra: &Object) -> Result<Lpdu, RoomError> {
    let Handshake { hub, room, user, membership, version } = *h;
    check_template(h, template)?;
    if template.get("content").and_then(|c| c.get("membership")).and_then(Value::as_str) != Some(membership) {
        return Err(template_error(h, "membership"));
    }
    if template.get("room_id").and_then(Value::as_str).is_some_and(|r| r != room.as_str()) {
        return Err(template_error(h, "room_id"));
    }
    let mut content = extra.clone();
    content.insert("membership".into(), json!(membership));
    let mut o = Object::new();
    o.insert("room_id".into(), json!(room.as_str()));
    o.insert("type".into(), json!("m.room.member"));
    o.insert("state_key".into(), json!(user.as_str()));
    o.insert("sender".into(), json!(user.as_str()));
    o.insert("origin_server_ts".into(), json!(now_ms()));
    o.insert("hub_server".into(), json!(hub.as_str()));
    o.insert("content".into(), Value::Object(content));
    sign_lpdu(version, &node.key, &mut o).map_err(|e| RoomError::BadEvent(e.to_string()))?;
    Lpdu::from_object(version, o).map_err(|e| RoomError::BadEvent(e.to_string()))
}

/// Mixed rooms: our whole membership event from the hub's template,
/// signed by us (prev events, auth events and depth as the hub chose).
fn pdu_from_template(node: &Node, h: &Handshake<'_>, template: &Object, extra: &Object) -> Result<Pdu, RoomError> {
    let Handshake { hub, room, membership, version, .. } = *h;
    let bad = |what: &str| template_error(h, what);
    check_template(h, template)?;
    if template.get("room_id").and_then(Value::as_str) != Some(room.as_str()) {
        return Err(bad("room_id"));
    }
    let mut content = extra.clone();
    content.insert("membership".into(), json!(membership));
    let mut o = Object::new();
    for k in ["room_id", "type", "state_key", "sender", "prev_events", "auth_events", "depth"] {
        let v = template.get(k).cloned().ok_or_else(|| bad(k))?;
        o.insert(k.into(), v);
    }
    o.insert("origin_server_ts".into(), json!(now_ms()));
    o.insert("content".into(), Value::Object(content));
    sign_event(version, &node.key, &mut o).map_err(|e| RoomError::BadEvent(e.to_string()))?;
    Pdu::from_object(version, o, Schema::Full).map_err(|e| RoomError::Remote(format!("{hub}'s template: {e}")))
}

/// Sends our signed membership event: the LPDU to an LM hub's unstable
/// path, the whole event to Matrix's `send_*` of a mixed room's hub.
async fn send_membership(
    node: &Node,
    h: &Handshake<'_>,
    lpdu: Option<&Lpdu>,
    pdu: Option<&Pdu>,
) -> Result<Value, RoomError> {
    let endpoint = format!("send_{}", h.membership);
    let (method, path, body) = match (lpdu, pdu) {
        (Some(l), _) => {
            let path = format!("{}/{endpoint}/{}", super::UNSTABLE, encode_segment(l.lpdu_id().as_str()));
            (Method::POST, path, Value::Object(l.json().clone()))
        }
        (None, Some(p)) => {
            let v = if h.membership == "knock" { "v1" } else { "v2" };
            let path = format!(
                "/_matrix/federation/{v}/{endpoint}/{}/{}",
                encode_segment(h.room.as_str()),
                encode_segment(p.event_id().as_str())
            );
            (Method::PUT, path, Value::Object(p.json().clone()))
        }
        (None, None) => return Err(RoomError::BadEvent("nothing to send".into())),
    };
    let lm = lm_peer(node, h.hub).await;
    let resp = node.fed.request(h.hub, method, &path, Some(&body), lm).await.map_err(|e| {
        match e.status().map(|s| s.as_u16()) {
            Some(403) => RoomError::Forbidden(format!("{} refused the {}", h.hub, h.membership)),
            _ => e.into_room_error(),
        }
    })?;
    resp.json(h.hub.as_str()).map_err(FedError::into_room_error)
}

/// Candidate hubs in order (OQ-27): servers named by the caller (invite
/// origin, `via`), then the room id's domain.
pub fn candidates(room: &RoomId, named: &[ServerName]) -> Vec<ServerName> {
    let mut out: Vec<ServerName> = Vec::new();
    let domain = room.domain().and_then(|d| ServerName::parse(d).ok());
    for s in named.iter().cloned().chain(domain) {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// Asks each candidate for a template until one (the hub) answers.
async fn make(
    node: &Node,
    endpoint: &str,
    room: &RoomId,
    user: &UserId,
    servers: &[ServerName],
) -> Result<(ServerName, Object, &'static RoomVersion), RoomError> {
    let mut last = RoomError::Remote(format!("no server to ask about {room}"));
    for server in servers {
        if node.is_me(server) {
            continue;
        }
        let vers: String = supported_versions().iter().map(|v| format!("&ver={}", encode_segment(v))).collect();
        let path = format!(
            "/_matrix/federation/v1/{endpoint}/{}/{}?{}",
            encode_segment(room.as_str()),
            encode_segment(user.as_str()),
            vers.trim_start_matches('&')
        );
        let lm = lm_peer(node, server).await;
        match node.fed.request(server, Method::GET, &path, None, lm).await {
            Ok(resp) => {
                let body = resp.json(server.as_str()).map_err(FedError::into_room_error)?;
                let (template, version) =
                    template_of(&body).ok_or_else(|| RoomError::Remote(format!("{server}: no template")))?;
                let version = version
                    .as_deref()
                    .and_then(RoomVersion::find)
                    .filter(|v| v.hostable)
                    .ok_or_else(|| RoomError::Remote(format!("{server}: unsupported room version")))?;
                return Ok((server.clone(), template, version));
            }
            Err(e) => {
                tracing::info!(%server, error = %e, endpoint, "candidate hub refused");
                last = match e.status().map(|s| s.as_u16()) {
                    Some(403) => RoomError::Forbidden(format!("{server}: {}", e.errcode().unwrap_or_default())),
                    _ => e.into_room_error(),
                };
            }
        }
    }
    Err(last)
}

/// Joins `user` to a room hubbed elsewhere and starts following it.
pub async fn join_remote(
    node: &Arc<Node>,
    room: &RoomId,
    user: &UserId,
    servers: &[ServerName],
    content: &Object,
) -> Result<crate::core::ids::EventId, RoomError> {
    // One local user at a time joins a given room from elsewhere (see
    // `Rooms::join_turn`).
    let turn = node.rooms.join_turn(room).await;
    let (hub, template, version) = make(node, "make_join", room, user, servers).await?;
    let h = Handshake { hub: &hub, room, user, membership: "join", version };
    if version.is_mixed() {
        return join_mixed(node, &h, &template, content, &turn).await;
    }
    let lpdu = lpdu_from_template(node, &h, &template, content)?;
    let body = send_membership(node, &h, Some(&lpdu), None).await?;
    let event_obj =
        body.get("event").and_then(Value::as_object).ok_or_else(|| RoomError::Remote("send_join: no event".into()))?;
    let event = checked_pdu(node, version, event_obj.clone()).await.map_err(RoomError::Remote)?;
    if event.lpdu_hash() != Some(lpdu.lpdu_hash()) {
        return Err(RoomError::Remote(format!("{hub} returned another event than our join")));
    }
    // Already following the room (a local user was here before): the join
    // continues our list; the room task fills any gap from the hub.
    if let Some(handle) = node.rooms.get(room) {
        return continue_with(&handle, event).await;
    }
    let empty = Vec::new();
    let state_items = body.get("state").and_then(Value::as_array).unwrap_or(&empty);
    let chain_items = body.get("auth_chain").and_then(Value::as_array).unwrap_or(&empty);
    let state_events = checked_pdus(node, version, state_items).await.map_err(RoomError::Remote)?;
    let chain = checked_pdus(node, version, chain_items).await.map_err(RoomError::Remote)?;
    // A `state` that is the whole timeline folds to the same state (OQ-40).
    let state = StateMap::from_events(state_events.iter().cloned().map(Arc::new));
    authorize(&event, &state).map_err(|e| RoomError::Remote(format!("{hub}'s join fails the rules here: {e}")))?;
    let outliers = chain.into_iter().chain(state_events).collect();
    let seed = seed(&h, state, outliers, event.clone(), 0);
    match node.rooms.open_joined(seed, &turn).await? {
        Opened::Started(id) => Ok(id),
        Opened::Existing(handle) => continue_with(&handle, event).await,
    }
}

/// Our join into a room we follow already: the next event of our list.
async fn continue_with(handle: &RoomHandle, event: Pdu) -> Result<EventId, RoomError> {
    let id = event.event_id().clone();
    let results = handle.ask(|reply| RoomCmd::FromHub { pdus: vec![event], reply }).await?;
    results.into_iter().next().unwrap_or(Ok(())).map(|_| id)
}

fn seed(h: &Handshake<'_>, state: StateMap, outliers: Vec<Pdu>, join: Pdu, depth: i64) -> JoinSeed {
    JoinSeed { room: h.room.clone(), version: h.version, hub: h.hub.clone(), state, outliers, join, depth }
}

/// Mixed rooms: joins with our own signed event; the hub answers with the
/// state before it, which becomes the state our copy starts from.
async fn join_mixed(
    node: &Arc<Node>,
    h: &Handshake<'_>,
    template: &Object,
    content: &Object,
    turn: &JoinTurn,
) -> Result<EventId, RoomError> {
    let pdu = pdu_from_template(node, h, template, content)?;
    let body = send_membership(node, h, None, Some(&pdu)).await?;
    if let Some(handle) = node.rooms.get(h.room) {
        return offer_join(node, h, &handle, pdu).await;
    }
    let empty = Vec::new();
    let state_items = body.get("state").and_then(Value::as_array).unwrap_or(&empty);
    let chain_items = body.get("auth_chain").and_then(Value::as_array).unwrap_or(&empty);
    let state_events = checked_pdus(node, h.version, state_items).await.map_err(RoomError::Remote)?;
    let chain = checked_pdus(node, h.version, chain_items).await.map_err(RoomError::Remote)?;
    let state = StateMap::from_events(state_events.iter().cloned().map(Arc::new));
    authorize(&pdu, &state).map_err(|e| RoomError::Remote(format!("{}'s join fails the rules here: {e}", h.hub)))?;
    let depth = pdu.depth().unwrap_or(0);
    let outliers = chain.into_iter().chain(state_events).collect();
    match node.rooms.open_joined(seed(h, state, outliers, pdu.clone(), depth), turn).await? {
        Opened::Started(id) => Ok(id),
        Opened::Existing(handle) => offer_join(node, h, &handle, pdu).await,
    }
}

/// Mixed rooms: our join into a room we follow already, an event like any
/// other.
async fn offer_join(node: &Arc<Node>, h: &Handshake<'_>, handle: &RoomHandle, pdu: Pdu) -> Result<EventId, RoomError> {
    let id = pdu.event_id().clone();
    let outcome = super::dag::offer(node, handle, h.hub, vec![pdu]).await?;
    match outcome.into_iter().next().map(|(_, r)| r) {
        Some(Ok(Verdict::Accepted | Verdict::Known)) => Ok(id),
        Some(Ok(other)) => Err(RoomError::Forbidden(format!("{other:?}"))),
        Some(Err(e)) => Err(e),
        None => Err(RoomError::Gone),
    }
}

/// Leaves (or rejects an invite to) a room we do not take part in.
pub async fn leave_remote(
    node: &Arc<Node>,
    room: &RoomId,
    user: &UserId,
    servers: &[ServerName],
) -> Result<(), RoomError> {
    let (hub, template, version) = make(node, "make_leave", room, user, servers).await?;
    let h = Handshake { hub: &hub, room, user, membership: "leave", version };
    if version.is_mixed() {
        let pdu = pdu_from_template(node, &h, &template, &Object::new())?;
        send_membership(node, &h, None, Some(&pdu)).await?;
    } else {
        let lpdu = lpdu_from_template(node, &h, &template, &Object::new())?;
        send_membership(node, &h, Some(&lpdu), None).await?;
    }
    Ok(())
}

/// Knocks on a room we do not take part in; returns the hub, the room's
/// stripped state from the hub's answer, and the room version.
pub async fn knock_remote(
    node: &Arc<Node>,
    room: &RoomId,
    user: &UserId,
    servers: &[ServerName],
    content: &Object,
) -> Result<(ServerName, Value, &'static str), RoomError> {
    let (hub, template, version) = make(node, "make_knock", room, user, servers).await?;
    let h = Handshake { hub: &hub, room, user, membership: "knock", version };
    let body = if version.is_mixed() {
        let pdu = pdu_from_template(node, &h, &template, content)?;
        send_membership(node, &h, None, Some(&pdu)).await?
    } else {
        let lpdu = lpdu_from_template(node, &h, &template, content)?;
        send_membership(node, &h, Some(&lpdu), None).await?
    };
    let stripped = body
        .get("stripped_state")
        .or_else(|| body.get("knock_room_state"))
        .cloned()
        .unwrap_or(Value::Array(Vec::new()));
    Ok((hub, stripped, version.id))
}
