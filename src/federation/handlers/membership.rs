//! E10-E16: invites, and the make/send handshakes for join, leave and knock
//! (items 183-201; OQ-23, OQ-25, OQ-39, OQ-40, OQ-41).

use std::sync::Arc;

use serde_json::{json, Value};

use super::events::{auth_chain, in_replay_order};
use super::send::accept_lpdu;
use super::{known_room, known_view, require_hub, supported};
use crate::core::event::{sign_event, Lpdu, Pdu, Schema};
use crate::core::ids::{RoomId, UserId};
use crate::core::json::Object;
use crate::core::rooms::{authorize, select_auth_events, EventSketch};
use crate::federation::inbound::Req;
use crate::federation::invite::stripped_state;
use crate::room::{Appended, RoomCmd, RoomView};
use crate::store::records::{EventRecord, Membership, TxnResponse};
use crate::store::{Batch, Op, StreamEntry};
use crate::sys::now_ms;
use crate::wire::federation::{Invite, MakeAnswer, SendJoinAnswer};
use crate::wire::{self, Failure};

/// E11/E13/E15: a template for a server whose user wants to join, leave or
/// knock, after checking the change would pass the rules now.
pub async fn make(req: Req, membership: &'static str, room: &str, user: &str) -> Result<Value, Failure> {
    let view = known_view(&req, room)?;
    require_hub(&req, &view)?;
    let user = UserId::parse(user).map_err(|e| Failure::bad_json(e.to_string()))?;
    if !user.is_on(&req.origin) {
        return Err(Failure::forbidden("The user does not belong to the requesting server"));
    }
    if membership != "leave" {
        let vers: Vec<&str> = req.query.iter().filter(|(k, _)| k == "ver").map(|(_, v)| v.as_str()).collect();
        if !vers.contains(&view.version.id) {
            return Err(Failure::UnsupportedRoomVersion(view.version.id.to_owned()));
        }
    }
    let mut content = Object::new();
    content.insert("membership".into(), json!(membership));
    let sketch = EventSketch {
        event_type: "m.room.member",
        sender: user.as_str(),
        state_key: Some(user.as_str()),
        content: &content,
    };
    let auth_ids: Vec<String> =
        select_auth_events(view.version, &view.state, sketch).iter().map(|e| e.to_string()).collect();
    let mut template = json!({
        "room_id": view.room_id.as_str(),
        "type": "m.room.member",
        "state_key": user.as_str(),
        "sender": user.as_str(),
        "origin_server_ts": now_ms(),
        "content": content,
        "auth_events": auth_ids,
    });
    if view.version.is_mixed() {
        // A DAG server builds the whole event on our forward extremities.
        template["prev_events"] = json!(view.prev_events_for_new().iter().map(|t| t.as_str()).collect::<Vec<_>>());
        template["depth"] = json!(view.max_depth + 1);
        template["origin"] = json!(req.origin.as_str());
    } else {
        template["hub_server"] = json!(req.node.name.as_str());
        template["prev_events"] = json!(view.tail.iter().map(|t| t.as_str()).collect::<Vec<_>>());
    }
    // Would the change pass the rules against the current state?
    let probe = Pdu::from_object(view.version, template.as_object().cloned().unwrap_or_default(), Schema::Loose)
        .map_err(|e| Failure::bad_json(e.to_string()))?;
    authorize(&probe, &view.state).map_err(|e| Failure::forbidden(e.to_string()))?;
    // OQ-25: always `{event, room_version}`.
    wire::to_json(&MakeAnswer { event: &template, room_version: view.version.id })
}

fn replayed(req: &Req, endpoint: &str, txn: &str) -> Result<Option<Value>, Failure> {
    Ok(req
        .node
        .store
        .txn_response(req.origin.as_str(), endpoint, txn)?
        .and_then(|r| serde_json::from_slice(&r.body).ok()))
}

fn remember(req: &Req, endpoint: &str, txn: &str, answer: &Value) -> Result<(), Failure> {
    let mut b = Batch::new();
    b.push(Op::PutTxnResponse {
        origin: req.origin.to_string(),
        endpoint: endpoint.into(),
        txn: txn.into(),
        response: TxnResponse {
            received_ts: now_ms(),
            status: 200,
            body: serde_json::to_vec(answer).unwrap_or_default(),
        },
    });
    Ok(req.node.store.write(b)?)
}

/// E12/E14/E16: the body is the LPDU built from the template. The rules are
/// checked again against the state at append time (item 199).
pub async fn send(req: Req, membership: &'static str, txn: &str) -> Result<Value, Failure> {
    let endpoint = format!("send_{membership}");
    if let Some(answer) = replayed(&req, &endpoint, txn)? {
        return Ok(answer);
    }
    let room = req.body.get("room_id").and_then(Value::as_str).unwrap_or_default().to_owned();
    let (handle, view) = known_room(&req, &room)?;
    require_hub(&req, &view)?;
    let lpdu = accept_lpdu(&req, view.version, &req.body).await.map_err(Failure::bad_json)?;
    check_membership_lpdu(&lpdu, membership)?;
    let with_state = membership == "join";
    let appended: Appended = handle.ask(|reply| RoomCmd::Lpdu { lpdu, with_state, reply }).await?;
    let answer = match membership {
        "join" => {
            // OQ-40: the state before the join, and the auth chain of that
            // state and of the join event.
            let state: Vec<Arc<Pdu>> = appended.state_before.iter().flat_map(|s| s.iter().cloned()).collect();
            join_answer(&req, &view, &appended.pdu, state)?
        }
        "knock" => {
            let stripped = stripped_state(&handle.view(), None);
            json!({ "stripped_state": stripped, "knock_room_state": stripped })
        }
        _ => json!({}),
    };
    remember(&req, &endpoint, txn, &answer)?;
    Ok(answer)
}

/// `PUT /v2/send_join|send_leave/{roomId}/{eventId}` and `/v1/send_knock`:
/// a DAG server's (or mixed-room participant's) signed membership event,
/// built from our template. The room checks it like any event; only an
/// accepted one is answered with success.
pub async fn send_pdu(req: Req, membership: &'static str, room: &str, event_id: &str) -> Result<Value, Failure> {
    let endpoint = format!("send_{membership}_pdu");
    if let Some(answer) = replayed(&req, &endpoint, event_id)? {
        return Ok(answer);
    }
    let (handle, view) = known_room(&req, room)?;
    require_hub(&req, &view)?;
    let pdu = crate::federation::fetch::checked_pdu(&req.node, view.version, req.body.clone())
        .await
        .map_err(Failure::bad_json)?;
    if pdu.event_id().as_str() != event_id || pdu.room_id() != &view.room_id {
        return Err(Failure::bad_json("the event does not match the path"));
    }
    let own = pdu.event_type() == "m.room.member"
        && pdu.state_key() == Some(pdu.sender().as_str())
        && pdu.membership() == Some(membership)
        && pdu.sender().is_on(&req.origin);
    if !own {
        return Err(Failure::bad_json(format!(
            "expected the m.room.member event of a user of {} with membership {membership}",
            req.origin
        )));
    }
    let appended = if view.version.is_mixed() {
        let outcome = crate::federation::dag::offer(&req.node, &handle, &req.origin, vec![pdu.clone()]).await?;
        match outcome.into_iter().next().map(|(_, r)| r) {
            Some(Ok(crate::room::Verdict::Accepted | crate::room::Verdict::Known)) => Arc::new(pdu),
            Some(Ok(other)) => return Err(Failure::forbidden(format!("{other:?}"))),
            Some(Err(e)) => return Err(e.into()),
            None => return Err(Failure::stopped("the room's task")),
        }
    } else {
        let a = handle.ask(|reply| RoomCmd::LmDagEvent { pdu, reply }).await?;
        a.pdu
    };
    let answer = match membership {
        "join" => {
            let state = if view.version.is_mixed() {
                super::events::mixed_state_before(&req.node, &handle.view(), appended.event_id())?
            } else {
                super::events::list_state_before(&req.node, &handle.view(), appended.event_id()).await?
            };
            join_answer(&req, &view, &appended, state)?
        }
        "knock" => {
            let stripped = stripped_state(&handle.view(), None);
            json!({ "knock_room_state": stripped, "knock_state_events": stripped })
        }
        _ => json!({}),
    };
    remember(&req, &endpoint, event_id, &answer)?;
    Ok(answer)
}

/// A `send_join` answer: the join, the state before it, and the auth
/// chain of both.
/// Both lists go out in a replayable order (auth events first, then list
/// order): a receiver that replays them with auth checks in array order
/// (the LM reference implementation) must not meet an event before what
/// allows it.
fn join_answer(req: &Req, view: &RoomView, join: &Arc<Pdu>, state: Vec<Arc<Pdu>>) -> Result<Value, Failure> {
    let roots = state.iter().cloned().chain(std::iter::once(join.clone()));
    let chain = in_replay_order(&req.node, auth_chain(&req.node, view, roots)?)?;
    let state = in_replay_order(&req.node, state)?;
    wire::to_json(&SendJoinAnswer {
        event: join.json(),
        state: state.iter().map(|p| p.json()).collect(),
        auth_chain: chain.iter().map(|p| p.json()).collect(),
        members_omitted: false,
        origin: req.node.name.as_str(),
    })
}

fn check_membership_lpdu(lpdu: &Lpdu, membership: &str) -> Result<(), Failure> {
    let ok = lpdu.event_type() == "m.room.member"
        && lpdu.state_key() == Some(lpdu.sender().as_str())
        && lpdu.content().get("membership").and_then(Value::as_str) == Some(membership);
    if ok {
        Ok(())
    } else {
        Err(Failure::bad_json(format!("expected the sender's own m.room.member event with membership {membership}")))
    }
}

/// E10. Two roles: as the room's hub, an invite LPDU from a participant
/// (the hub forwards it to the invitee's server when needed); as the
/// invitee's server, a PDU from the hub to counter-sign.
pub async fn invite(mut req: Req, txn: &str) -> Result<Value, Failure> {
    if let Some(answer) = replayed(&req, "invite", txn)? {
        return Ok(answer);
    }
    let Invite { event, room_version: version_id, invite_room_state } = wire::take(std::mem::take(&mut req.body))?;
    let version = supported(&version_id).ok_or_else(|| Failure::UnsupportedRoomVersion(version_id.clone()))?;
    let is_invite = event.get("type").and_then(Value::as_str) == Some("m.room.member")
        && event.get("content").and_then(|c| c.get("membership")).and_then(Value::as_str) == Some("invite");
    if !is_invite {
        return Err(Failure::bad_json("the event must be an m.room.member invite"));
    }
    let room = event.get("room_id").and_then(Value::as_str).unwrap_or_default();
    let hubbed_here =
        RoomId::parse(room).ok().and_then(|r| req.node.rooms.get_view(&r)).is_some_and(|v| v.is_hub(&req.node.name));
    let answer = if hubbed_here && Lpdu::looks_like_lpdu(&event) {
        let (handle, view) = known_room(&req, room)?;
        let lpdu = accept_lpdu(&req, view.version, &event).await.map_err(Failure::bad_json)?;
        let appended = handle.ask(|reply| RoomCmd::Lpdu { lpdu, with_state: false, reply }).await?;
        json!({ "pdu": appended.pdu.json(), "event": appended.pdu.json() })
    } else {
        countersign(&req, version, event, invite_room_state).await?
    };
    remember(&req, "invite", txn, &answer)?;
    Ok(answer)
}

/// The invitee's server checks the hub's invite, signs it without changing
/// anything else, and records the pending invite for its user.
async fn countersign(
    req: &Req,
    version: &'static crate::core::event::RoomVersion,
    event: Object,
    mut state: Vec<Value>,
) -> Result<Value, Failure> {
    let checked = crate::federation::fetch::checked_pdu(&req.node, version, event).await.map_err(Failure::forbidden)?;
    let target = checked
        .state_key()
        .and_then(|s| UserId::parse(s).ok())
        .filter(|u| u.is_on(&req.node.name))
        .ok_or_else(|| Failure::bad_json("the invitee is not a user of this server"))?;
    let mut signed = checked.json().clone();
    sign_event(version, &req.node.key, &mut signed).map_err(Failure::failed)?;
    let signed_pdu = Pdu::from_object(version, signed, Schema::Full).map_err(Failure::failed)?;
    let own = crate::federation::invite::strip(&signed_pdu);
    state.push(own);
    // The hub is whoever sent the invite (digest 7.1); in a mixed room a
    // DAG server may invite, and the hub is the creator's server.
    let creator_server = state
        .iter()
        .find(|e| e.get("type").and_then(Value::as_str) == Some("m.room.create"))
        .and_then(|e| e.get("sender").and_then(Value::as_str))
        .and_then(|s| UserId::parse(s).ok())
        .map(|u| u.server_name());
    let via = checked.hub_server().cloned().or(creator_server).unwrap_or_else(|| req.origin.clone());
    let alloc = req.node.positions.allocate(1)?;
    let pos = alloc.first();
    let id = signed_pdu.event_id().clone();
    let room = signed_pdu.room_id().clone();
    let (json, canonical) = crate::store::stored_json(signed_pdu.json());
    let mut b = Batch::new();
    b.push(Op::PutEvent(
        id.clone(),
        EventRecord {
            json,
            canonical,
            room_id: room.to_string(),
            stream: pos,
            outlier: true,
            hash_redacted: signed_pdu.hash_redacted(),
            ..Default::default()
        },
    ))
    .push(Op::StreamEntry(StreamEntry { pos, room: room.clone(), event: id.clone() }))
    .push(Op::PutMembership {
        user: target,
        room,
        membership: Membership {
            membership: "invite".into(),
            stream: pos,
            event_id: id.to_string(),
            invite_state_json: serde_json::to_vec(&state).unwrap_or_default(),
            via_server: via.to_string(),
            room_version: version.id.to_owned(),
            forgotten: false,
        },
    });
    req.node.store.write(b)?;
    req.node.store.flush().await?;
    drop(alloc);
    Ok(json!({ "pdu": signed_pdu.json(), "event": signed_pdu.json() }))
}
