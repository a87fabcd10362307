//! Room commands passed to the process of this server that owns the room
//! (its writer runs there, `RoomHandle` with an owner elsewhere), and their
//! answers back, as JSON. The events in them were checked by the process
//! that received them; the owner's room checks them against the room again,
//! as it does every input.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::machine::{Appended, Draft, Outlier, Verdict};
use super::{LocalOutcome, Reply, RoomCmd, RoomError};
use crate::core::event::{Lpdu, Pdu, RoomVersion};
use crate::core::ids::{EventId, UserId};
use crate::core::json::Object;
use crate::core::rooms::StateMap;

/// A mixed room's verdict on each event it was offered.
type Verdicts = Vec<(EventId, Result<Verdict, RoomError>)>;

/// The reply channel of a command sent away, waiting for the owner's answer.
pub enum Pending {
    Local(Reply<LocalOutcome>),
    Appended(Reply<Appended>),
    FromHub(Reply<Vec<Result<(), RoomError>>>),
    Dag(Reply<Verdicts>),
    Purged(Reply<u64>),
    Nothing,
}

fn pdu_json(pdu: &Pdu) -> Value {
    json!({ "event_id": pdu.event_id().as_str(), "event": pdu.json() })
}

fn pdu_from(version: &'static RoomVersion, v: &Value) -> Result<Pdu, String> {
    let id = v.get("event_id").and_then(Value::as_str).ok_or("an event without its id")?;
    let id = EventId::parse(id).map_err(|e| e.to_string())?;
    let event = v.get("event").and_then(Value::as_object).ok_or("an event that is not an object")?;
    Pdu::from_trusted(version, event.clone(), id).map_err(|e| e.to_string())
}

fn pdus_from(version: &'static RoomVersion, v: Option<&Value>) -> Result<Vec<Pdu>, String> {
    v.and_then(Value::as_array).ok_or("no events")?.iter().map(|p| pdu_from(version, p)).collect()
}

fn error_json(e: &RoomError) -> Value {
    let (kind, message) = match e {
        RoomError::Forbidden(m) => ("forbidden", m.clone()),
        RoomError::BadEvent(m) => ("bad_event", m.clone()),
        RoomError::TooLarge(m) => ("too_large", m.clone()),
        RoomError::NotHub => ("not_hub", String::new()),
        RoomError::Pending => ("pending", String::new()),
        RoomError::Remote(m) => ("remote", m.clone()),
        // Details stay in the owner's log, as they would for a caller there.
        RoomError::Storage(_) | RoomError::Gone => ("internal", String::new()),
        RoomError::Elsewhere(o) => ("elsewhere", o.describe.clone()),
    };
    json!({ "kind": kind, "message": message })
}

fn error_from(v: &Value) -> RoomError {
    let message = v.get("message").and_then(Value::as_str).unwrap_or_default().to_owned();
    match v.get("kind").and_then(Value::as_str).unwrap_or_default() {
        "forbidden" => RoomError::Forbidden(message),
        "bad_event" => RoomError::BadEvent(message),
        "too_large" => RoomError::TooLarge(message),
        "not_hub" => RoomError::NotHub,
        "pending" => RoomError::Pending,
        "remote" => RoomError::Remote(message),
        "elsewhere" => RoomError::Elsewhere(crate::store::Owner::unknown(message)),
        _ => RoomError::Storage("the owning process failed the command".into()),
    }
}

fn result_json<T>(r: &Result<T, RoomError>, ok: impl FnOnce(&T) -> Value) -> Value {
    match r {
        Ok(v) => json!({ "ok": ok(v) }),
        Err(e) => json!({ "error": error_json(e) }),
    }
}

fn result_from<T>(v: &Value, ok: impl FnOnce(&Value) -> Result<T, String>) -> Result<T, RoomError> {
    match (v.get("ok"), v.get("error")) {
        (Some(value), _) => ok(value).map_err(|e| RoomError::Storage(format!("an answer that does not read: {e}"))),
        (None, Some(e)) => Err(error_from(e)),
        (None, None) => Err(RoomError::Storage("an answer with neither result nor error".into())),
    }
}

fn verdict_json(v: &Verdict) -> Value {
    match v {
        Verdict::Accepted => json!({ "verdict": "accepted" }),
        Verdict::SoftFailed(why) => json!({ "verdict": "soft_failed", "why": why }),
        Verdict::Rejected(why) => json!({ "verdict": "rejected", "why": why }),
        Verdict::Known => json!({ "verdict": "known" }),
    }
}

fn verdict_from(v: &Value) -> Result<Verdict, String> {
    let why = || v.get("why").and_then(Value::as_str).unwrap_or_default().to_owned();
    match v.get("verdict").and_then(Value::as_str) {
        Some("accepted") => Ok(Verdict::Accepted),
        Some("soft_failed") => Ok(Verdict::SoftFailed(why())),
        Some("rejected") => Ok(Verdict::Rejected(why())),
        Some("known") => Ok(Verdict::Known),
        other => Err(format!("unknown verdict {other:?}")),
    }
}

fn appended_json(a: &Appended) -> Value {
    let state = a.state_before.as_ref().map(|s| s.iter().map(|p| pdu_json(p)).collect::<Vec<_>>());
    json!({ "event": pdu_json(&a.pdu), "state_before": state })
}

fn appended_from(version: &'static RoomVersion, v: &Value) -> Result<Appended, String> {
    let pdu = pdu_from(version, v.get("event").ok_or("no event")?)?;
    let state_before = match v.get("state_before") {
        None | Some(Value::Null) => None,
        state => Some(StateMap::from_events(pdus_from(version, state)?.into_iter().map(std::sync::Arc::new))),
    };
    Ok(Appended { event_id: pdu.event_id().clone(), pdu: std::sync::Arc::new(pdu), state_before })
}

/// The command as it travels, and where its answer goes; `None` for a
/// command only a room's own writer or directory sends.
pub fn encode(cmd: RoomCmd) -> Option<(Value, Pending)> {
    Some(match cmd {
        RoomCmd::Local { draft, reply } => {
            let txn = draft.txn.as_ref().map(|(device, txn)| json!([device, txn]));
            let body = json!({ "command": "local", "sender": draft.sender.as_str(), "type": draft.event_type,
                "state_key": draft.state_key, "content": draft.content, "txn": txn });
            (body, Pending::Local(reply))
        }
        RoomCmd::Lpdu { lpdu, with_state, reply } => {
            (json!({ "command": "lpdu", "lpdu": lpdu.json(), "with_state": with_state }), Pending::Appended(reply))
        }
        RoomCmd::FromHub { pdus, reply } => {
            let pdus: Vec<Value> = pdus.iter().map(pdu_json).collect();
            (json!({ "command": "from_hub", "pdus": pdus }), Pending::FromHub(reply))
        }
        RoomCmd::Dag { pdus, outliers, reply } => {
            let pdus: Vec<Value> = pdus.iter().map(pdu_json).collect();
            let outliers: Vec<Value> = outliers
                .iter()
                .map(|o| {
                    let state = o
                        .state_before
                        .as_ref()
                        .map(|s| s.iter().map(|((t, k), id)| json!([t, k, id.as_str()])).collect::<Vec<_>>());
                    json!({ "event": pdu_json(&o.pdu), "state_before": state })
                })
                .collect();
            (json!({ "command": "dag", "pdus": pdus, "outliers": outliers }), Pending::Dag(reply))
        }
        RoomCmd::LmDagEvent { pdu, reply } => {
            (json!({ "command": "lm_dag_event", "event": pdu_json(&pdu) }), Pending::Appended(reply))
        }
        RoomCmd::LpduRefused { lpdu_hash, error } => {
            (json!({ "command": "lpdu_refused", "lpdu_hash": lpdu_hash, "error": error }), Pending::Nothing)
        }
        RoomCmd::Purge { keep, reply } => (json!({ "command": "purge", "keep": keep }), Pending::Purged(reply)),
        RoomCmd::GapFetched(_) | RoomCmd::InviteAnswered(_) | RoomCmd::Seed { .. } => return None,
    })
}

impl Pending {
    /// Hands the owner's answer (or the failure to get one) to the caller.
    pub fn settle(self, version: &'static RoomVersion, answer: Result<Value, RoomError>) {
        match self {
            Pending::Local(reply) => {
                let r = answer.and_then(|v| {
                    result_from(&v, |id| {
                        let id = id.as_str().ok_or("no event id")?;
                        EventId::parse(id).map(LocalOutcome::Done).map_err(|e| e.to_string())
                    })
                });
                let _ = reply.send(r);
            }
            Pending::Appended(reply) => {
                let _ = reply.send(answer.and_then(|v| result_from(&v, |a| appended_from(version, a))));
            }
            Pending::FromHub(reply) => {
                let r = answer.and_then(|v| {
                    result_from(&v, |list| {
                        let list = list.as_array().ok_or("not a list")?;
                        Ok(list.iter().map(|each| result_from(each, |_| Ok(()))).collect())
                    })
                });
                let _ = reply.send(r);
            }
            Pending::Dag(reply) => {
                let r = answer.and_then(|v| {
                    result_from(&v, |list| {
                        let list = list.as_array().ok_or("not a list")?;
                        list.iter()
                            .map(|each| {
                                let id = each.get("event_id").and_then(Value::as_str).ok_or("no event id")?;
                                let id = EventId::parse(id).map_err(|e| e.to_string())?;
                                let outcome = each.get("outcome").ok_or("no outcome")?;
                                Ok((id, result_from(outcome, verdict_from)))
                            })
                            .collect()
                    })
                });
                let _ = reply.send(r);
            }
            Pending::Purged(reply) => {
                let r = answer.and_then(|v| result_from(&v, |n| n.as_u64().ok_or_else(|| "not a count".into())));
                let _ = reply.send(r);
            }
            Pending::Nothing => {}
        }
    }
}

/// What the owner awaits from its room for a relayed command.
pub enum Awaiting {
    Local(oneshot::Receiver<Result<LocalOutcome, RoomError>>),
    Appended(oneshot::Receiver<Result<Appended, RoomError>>),
    FromHub(oneshot::Receiver<Result<Vec<Result<(), RoomError>>, RoomError>>),
    Dag(oneshot::Receiver<Result<Verdicts, RoomError>>),
    Purged(oneshot::Receiver<Result<u64, RoomError>>),
    Nothing,
}

fn text(o: &Object, field: &str) -> Result<String, String> {
    o.get(field).and_then(Value::as_str).map(str::to_owned).ok_or_else(|| format!("no {field}"))
}

/// The owner's side: the command a relayed body carries, for a room of
/// `version`.
pub fn decode(version: &'static RoomVersion, body: &Object) -> Result<(RoomCmd, Awaiting), String> {
    let command = text(body, "command")?;
    Ok(match command.as_str() {
        "local" => {
            let txn = match body.get("txn") {
                Some(Value::Array(pair)) => match pair.as_slice() {
                    [Value::String(d), Value::String(t)] => Some((d.clone(), t.clone())),
                    _ => return Err("a bad transaction".into()),
                },
                _ => None,
            };
            let draft = Draft {
                sender: UserId::parse(&text(body, "sender")?).map_err(|e| e.to_string())?,
                event_type: text(body, "type")?,
                state_key: body.get("state_key").and_then(Value::as_str).map(str::to_owned),
                content: body.get("content").and_then(Value::as_object).cloned().ok_or("no content")?,
                txn,
            };
            let (reply, rx) = oneshot::channel();
            (RoomCmd::Local { draft, reply }, Awaiting::Local(rx))
        }
        "lpdu" => {
            let lpdu = body.get("lpdu").and_then(Value::as_object).ok_or("no lpdu")?;
            let lpdu = Lpdu::from_object(version, lpdu.clone()).map_err(|e| e.to_string())?;
            let with_state = body.get("with_state").and_then(Value::as_bool).unwrap_or(false);
            let (reply, rx) = oneshot::channel();
            (RoomCmd::Lpdu { lpdu, with_state, reply }, Awaiting::Appended(rx))
        }
        "from_hub" => {
            let pdus = pdus_from(version, body.get("pdus"))?;
            let (reply, rx) = oneshot::channel();
            (RoomCmd::FromHub { pdus, reply }, Awaiting::FromHub(rx))
        }
        "dag" => {
            let pdus = pdus_from(version, body.get("pdus"))?;
            let mut outliers = Vec::new();
            for o in body.get("outliers").and_then(Value::as_array).ok_or("no outliers")? {
                let pdu = pdu_from(version, o.get("event").ok_or("no outlier event")?)?;
                let state_before = match o.get("state_before") {
                    None | Some(Value::Null) => None,
                    Some(Value::Array(entries)) => Some(
                        entries
                            .iter()
                            .map(|e| match e.as_array().map(Vec::as_slice) {
                                Some([Value::String(t), Value::String(k), Value::String(id)]) => {
                                    Ok(((t.clone(), k.clone()), EventId::parse(id).map_err(|e| e.to_string())?))
                                }
                                _ => Err("a bad state entry".to_owned()),
                            })
                            .collect::<Result<_, _>>()?,
                    ),
                    Some(_) => return Err("a bad outlier state".into()),
                };
                outliers.push(Outlier { pdu, state_before });
            }
            let (reply, rx) = oneshot::channel();
            (RoomCmd::Dag { pdus, outliers, reply }, Awaiting::Dag(rx))
        }
        "lm_dag_event" => {
            let pdu = pdu_from(version, body.get("event").ok_or("no event")?)?;
            let (reply, rx) = oneshot::channel();
            (RoomCmd::LmDagEvent { pdu, reply }, Awaiting::Appended(rx))
        }
        "lpdu_refused" => {
            let cmd = RoomCmd::LpduRefused { lpdu_hash: text(body, "lpdu_hash")?, error: text(body, "error")? };
            (cmd, Awaiting::Nothing)
        }
        "purge" => {
            let keep = body.get("keep").and_then(Value::as_u64).ok_or("no count to keep")?;
            let (reply, rx) = oneshot::channel();
            (RoomCmd::Purge { keep, reply }, Awaiting::Purged(rx))
        }
        other => return Err(format!("unknown command {other}")),
    })
}

fn gone<T>(r: Result<Result<T, RoomError>, oneshot::error::RecvError>) -> Result<T, RoomError> {
    r.map_err(|_| RoomError::Gone)?
}

impl Awaiting {
    /// The room's answer, as the process that relayed the command reads
    /// it. A participant's send waits up to `local_wait` for the hub's echo
    /// (as a client send does), then answers `Pending` (the client retries
    /// with its transaction id, which finds the event once it is there).
    pub async fn answer(self, local_wait: Duration) -> Value {
        match self {
            Awaiting::Local(rx) => {
                let outcome = match gone(rx.await) {
                    Ok(LocalOutcome::Done(id)) => Ok(id),
                    Ok(LocalOutcome::Waiting { done, .. }) => match tokio::time::timeout(local_wait, done).await {
                        Ok(r) => gone(r),
                        Err(_) => Err(RoomError::Pending),
                    },
                    Err(e) => Err(e),
                };
                result_json(&outcome, |id| json!(id.as_str()))
            }
            Awaiting::Appended(rx) => result_json(&gone(rx.await), appended_json),
            Awaiting::FromHub(rx) => result_json(&gone(rx.await), |list| {
                Value::Array(list.iter().map(|r| result_json(r, |_| Value::Null)).collect())
            }),
            Awaiting::Dag(rx) => result_json(&gone(rx.await), |list| {
                let each = list
                    .iter()
                    .map(|(id, r)| json!({ "event_id": id.as_str(), "outcome": result_json(r, verdict_json) }));
                Value::Array(each.collect())
            }),
            Awaiting::Purged(rx) => result_json(&gone(rx.await), |n| json!(n)),
            Awaiting::Nothing => json!({ "ok": null }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(txn: Option<(&str, &str)>) -> (RoomCmd, oneshot::Receiver<Result<LocalOutcome, RoomError>>) {
        let mut content = Object::new();
        content.insert("body".into(), json!("hi"));
        let draft = Draft {
            sender: UserId::parse("@a:hub.test").unwrap(),
            event_type: "m.room.message".into(),
            state_key: None,
            content,
            txn: txn.map(|(d, t)| (d.into(), t.into())),
        };
        let (reply, rx) = oneshot::channel();
        (RoomCmd::Local { draft, reply }, rx)
    }

    #[tokio::test]
    async fn a_local_send_travels_whole_and_its_answer_comes_back() {
        let version = RoomVersion::lm();
        let (cmd, asker) = local(Some(("DEV", "t1")));
        let Some((body, pending)) = encode(cmd) else { panic!("a local send travels") };
        let (cmd, awaiting) = decode(version, body.as_object().unwrap()).unwrap();
        let RoomCmd::Local { draft, reply } = cmd else { panic!("decoded as a local send") };
        assert_eq!(draft.sender.as_str(), "@a:hub.test");
        assert_eq!(draft.txn, Some(("DEV".into(), "t1".into())));
        assert_eq!(draft.content["body"], "hi");
        let id = EventId::parse("$abc").unwrap();
        reply.send(Ok(LocalOutcome::Done(id.clone()))).ok().unwrap();
        pending.settle(version, Ok(awaiting.answer(Duration::from_secs(1)).await));
        match asker.await.unwrap() {
            Ok(LocalOutcome::Done(got)) => assert_eq!(got, id),
            _ => panic!("the event id comes back"),
        }
    }

    #[tokio::test]
    async fn refusals_and_failures_come_back_as_what_they_are() {
        let version = RoomVersion::lm();
        let (cmd, asker) = local(None);
        let Some((body, pending)) = encode(cmd) else { panic!() };
        let (cmd, awaiting) = decode(version, body.as_object().unwrap()).unwrap();
        let RoomCmd::Local { reply, .. } = cmd else { panic!() };
        reply.send(Err(RoomError::Forbidden("not in the room".into()))).ok().unwrap();
        pending.settle(version, Ok(awaiting.answer(Duration::from_secs(1)).await));
        assert!(matches!(asker.await.unwrap(), Err(RoomError::Forbidden(m)) if m == "not in the room"));

        // Storage details stay with the owner; an owner that could not be
        // reached is "elsewhere" (try again).
        assert!(
            matches!(error_from(&error_json(&RoomError::Storage("disk".into()))), RoomError::Storage(m) if !m.contains("disk"))
        );
        let (cmd, asker) = local(None);
        let Some((_, pending)) = encode(cmd) else { panic!() };
        pending.settle(version, Err(RoomError::Elsewhere(crate::store::Owner::unknown("gone"))));
        assert!(matches!(asker.await.unwrap(), Err(RoomError::Elsewhere(_))));
    }

    #[test]
    fn what_only_a_room_itself_sends_does_not_travel() {
        assert!(encode(RoomCmd::GapFetched(Ok(Vec::new()))).is_none());
        assert!(decode(RoomVersion::lm(), json!({"command": "seed"}).as_object().unwrap()).is_err());
        let (cmd, _) = decode(RoomVersion::lm(), json!({"command": "purge", "keep": 3}).as_object().unwrap()).unwrap();
        assert!(matches!(cmd, RoomCmd::Purge { keep: 3, .. }));
    }
}
