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
            let view = call.server.rooms.find(&room).ok().flatten().map(|h| h.view());
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

/// `GET /_synapse/admin/v1/event_reports` (newest first, `limit` up to 1000).
/// The admin API checked the caller.
pub fn admin_list(call: Call) -> Result<Value, Failure> {
    let limit = crate::http::query_get(&call.query, "limit").and_then(|l| l.parse().ok()).unwrap_or(100usize).min(1000);
    let reports: Vec<Value> = call
        .server
        .store
        .reports(limit)?
        .into_iter()
        .map(|(id, r)| {
            json!({
                "id": id, "received_ts": r.ts, "user_id": r.reporter, "room_id": r.room_id,
                "event_id": r.event_id, "target_user_id": r.user_id, "reason": r.reason, "score": r.score,
            })
        })
        .collect();
    Ok(json!({"total": reports.len(), "event_reports": reports}))
}

/// `GET /_synapse/admin/v1/event_reports/{id}`: the report, with the
/// reported event as stored here.
pub fn admin_get(call: &Call, id: &str) -> Result<Value, Failure> {
    // Reports are kept newest first; an operator asks after recent ones.
    let (_, r) = call
        .server
        .store
        .reports(100_000)?
        .into_iter()
        .find(|(k, _)| k == id)
        .ok_or_else(|| Failure::not_found("Event report not found"))?;
    let mut out = json!({
        "id": id, "received_ts": r.ts, "user_id": r.reporter, "room_id": r.room_id,
        "event_id": r.event_id, "target_user_id": r.user_id, "reason": r.reason, "score": r.score,
    });
    let event = crate::core::ids::EventId::parse(&r.event_id).ok().map(|e| call.server.store.event(&e)).transpose()?;
    if let Some(rec) = event.flatten() {
        let pdu = crate::core::json::parse(&rec.json, crate::core::json::NumberPolicy::Ieee754).unwrap_or_default();
        out["sender"] = pdu["sender"].clone();
        out["event_json"] = pdu;
    }
    Ok(out)
}
