//! Reports of events, rooms and users (`rooms/{id}/report[/{eventId}]`,
//! `users/{userId}/report`), kept for the operator, who reads them with
//! Synapse's `GET /_synapse/admin/v1/event_reports`.

use serde_json::{json, Value};

use super::Call;
use crate::core::ids::{EventId, UserId};
use crate::store::records::ReportRecord;
use crate::store::{Batch, Op};
use crate::wire::Failure;

const MAX_REASON: usize = 1000;

fn reason_and_score(call: &Call) -> Result<(String, Option<i64>), Failure> {
    let body = call.body()?;
    let reason = match body.get("reason") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(r)) if r.len() <= MAX_REASON => r.clone(),
        Some(_) => return Err(Failure::invalid_param(format!("reason is a string of at most {MAX_REASON} bytes"))),
    };
    let score = match body.get("score") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_i64().filter(|s| (-100..=0).contains(s)) {
            Some(s) => Some(s),
            None => return Err(Failure::invalid_param("score is an integer from -100 to 0")),
        },
    };
    Ok((reason, score))
}

async fn keep(call: &Call, record: ReportRecord) -> Result<Value, Failure> {
    let mut b = Batch::new();
    b.push(Op::PutReport { id: crate::sys::random_string(16), record });
    call.server.store.write(b)?;
    call.server.store.flush().await?;
    Ok(json!({}))
}

/// An event the reporter can see, or a room they are in (`event: None`).
pub async fn room_or_event(call: Call, room: &str, event: Option<&str>) -> Result<Value, Failure> {
    let (user, _) = call.who()?;
    let user = user.clone();
    let not_found = || Failure::not_found("Unknown room or event");
    let view = super::events::readable_room(&call, room).map_err(|_| not_found())?;
    if let Some(event) = event {
        let id = EventId::parse(event).map_err(|_| not_found())?;
        let reader = call.server.remote.reader(&view, &user).await?;
        if !super::messages::may_read(&call.server, &reader, &view, &id)? {
            return Err(not_found());
        }
    }
    let (reason, score) = reason_and_score(&call)?;
    let record = ReportRecord {
        reporter: user.to_string(),
        room_id: view.room_id.to_string(),
        event_id: event.unwrap_or_default().to_owned(),
        reason,
        score,
        ts: crate::sys::now_ms(),
        ..Default::default()
    };
    keep(&call, record).await
}

/// A user this server knows (local, or sharing a room with the reporter).
pub async fn user(call: Call, target: &str) -> Result<Value, Failure> {
    let (reporter, _) = call.who()?;
    let reporter = reporter.clone();
    let target = UserId::parse(target).map_err(|_| Failure::not_found("Unknown user"))?;
    let known = if target.server_name() == call.server.name {
        call.server.store.user(&target)?.is_some()
    } else {
        use crate::core::rooms::StateView;
        call.server.store.memberships(&reporter)?.into_iter().any(|(room, _)| {
            let view = call.server.rooms.find_view(&room).ok().flatten();
            view.is_some_and(|v| v.state.membership(target.as_str()) != "leave")
        })
    };
    if !known {
        return Err(Failure::not_found("Unknown user"));
    }
    let (reason, _) = reason_and_score(&call)?;
    let record = ReportRecord {
        reporter: reporter.to_string(),
        user_id: target.to_string(),
        reason,
        ts: crate::sys::now_ms(),
        ..Default::default()
    };
    keep(&call, record).await
}

/// A report as Synapse's admin API shows it, with the room's name and
/// alias and the reported event's sender when this server has them.
fn admin_json(call: &Call, id: &str, r: &ReportRecord) -> Value {
    let mut out = json!({
        "id": id, "received_ts": r.ts, "user_id": r.reporter, "room_id": r.room_id,
        "event_id": r.event_id, "target_user_id": r.user_id, "reason": r.reason, "score": r.score,
        "sender": null, "name": null, "canonical_alias": null,
    });
    let view = crate::core::ids::RoomId::parse(&r.room_id).ok().and_then(|room| call.server.rooms.get_view(&room));
    if let Some(view) = view {
        let field = |ty: &str, key: &str| {
            crate::core::rooms::StateView::get(&*view.state, ty, "").and_then(|e| e.content().get(key).cloned())
        };
        out["name"] = field("m.room.name", "name").unwrap_or(Value::Null);
        out["canonical_alias"] = field("m.room.canonical_alias", "alias").unwrap_or(Value::Null);
    }
    let event = EventId::parse(&r.event_id).ok().and_then(|e| call.server.store.event(&e).ok().flatten());
    if let Some(rec) = event {
        let pdu = crate::core::json::parse(&rec.json, crate::core::json::NumberPolicy::Ieee754).unwrap_or_default();
        out["sender"] = pdu["sender"].clone();
        out["event_json"] = pdu;
    }
    out
}

/// `GET /_synapse/admin/v1/event_reports`: `from`, `limit`, `dir` (`b`,
/// newest first, by default), `user_id` and `room_id` (substrings). The
/// admin API checked the caller.
pub fn admin_list(call: Call) -> Result<Value, Failure> {
    let q = |k: &str| crate::http::query_get(&call.query, k);
    let number = |k: &str, default: usize| match q(k) {
        None => Ok(default),
        Some(v) => {
            v.parse::<usize>().map_err(|_| Failure::invalid_param(format!("{k} must be a non-negative integer")))
        }
    };
    let (from, limit) = (number("from", 0)?, number("limit", 100)?.min(1000));
    let mut reports = call.server.store.reports(usize::MAX)?;
    reports.retain(|(_, r)| q("user_id").is_none_or(|u| r.reporter.contains(u)));
    reports.retain(|(_, r)| q("room_id").is_none_or(|room| r.room_id.contains(room)));
    match q("dir") {
        None | Some("b") => {}
        Some("f") => reports.reverse(),
        Some(_) => return Err(Failure::invalid_param("dir must be f or b")),
    }
    let total = reports.len();
    let page: Vec<Value> = reports
        .iter()
        .skip(from)
        .take(limit)
        .map(|(id, r)| {
            let mut v = admin_json(&call, id, r);
            v.as_object_mut().map(|o| o.remove("event_json"));
            v
        })
        .collect();
    let mut out = json!({"total": total, "event_reports": page});
    if from.saturating_add(limit) < total {
        out["next_token"] = json!(from + limit);
    }
    Ok(out)
}

fn find_report(call: &Call, id: &str) -> Result<ReportRecord, Failure> {
    // Reports are kept newest first; an operator asks after recent ones.
    let found = call.server.store.reports(usize::MAX)?.into_iter().find(|(k, _)| k == id);
    found.map(|(_, r)| r).ok_or_else(|| Failure::not_found("Event report not found"))
}

/// `GET /_synapse/admin/v1/event_reports/{id}`: with the reported event as
/// stored here.
pub fn admin_get(call: &Call, id: &str) -> Result<Value, Failure> {
    let r = find_report(call, id)?;
    Ok(admin_json(call, id, &r))
}

/// `DELETE /_synapse/admin/v1/event_reports/{id}`.
pub async fn admin_delete(call: &Call, id: &str) -> Result<Value, Failure> {
    let r = find_report(call, id)?;
    let mut b = Batch::new();
    b.push(Op::DeleteReport { ts: r.ts, id: id.to_owned() });
    call.server.store.write(b)?;
    call.server.store.flush().await?;
    Ok(json!({}))
}
