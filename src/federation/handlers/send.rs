//! E5 `PUT …/send/{txnId}`: LPDUs to the hub, PDUs from the hub, EDUs.
//!
//! Request-level faults refuse the whole transaction (documented in
//! README): more than 50 PDUs or 100 EDUs → `400 M_BAD_JSON`; another
//! transaction from the same origin still running → `400 M_BAD_STATE`.
//! Event-level faults only list that event in `failed_pdus` (items 163-171).

use std::collections::BTreeMap;

use serde_json::Value;

use super::{known_room, known_view};
use crate::core::event::{check_hashes, event_id, HashCheck, Lpdu, Pdu, RoomVersion};
use crate::core::ids::{RoomId, UserId};
use crate::core::json::Object;
use crate::federation::fetch::checked_pdu;
use crate::federation::inbound::{Begin, Req};
use crate::room::{Appended, Asked, RoomCmd, Verdict};
use crate::store::records::TxnResponse;
use crate::store::{Batch, Op};
use crate::sys::now_ms;
use crate::wire::federation::{Transaction, TxnAnswer};
use crate::wire::{self, Failure};

pub const MAX_PDUS: usize = 50;
pub const MAX_EDUS: usize = 100;
/// Stored answers are replayed for a day (OQ-38).
const TXN_KEEP_MS: i64 = 24 * 3600 * 1000;
const ENDPOINT: &str = "send";
const ENDPOINT_V1: &str = "send_v1";

pub async fn send(mut req: Req, txn: &str, v1: bool) -> Result<Value, Failure> {
    let endpoint = if v1 { ENDPOINT_V1 } else { ENDPOINT };
    let Transaction { pdus, edus, .. } = wire::take(std::mem::take(&mut req.body))?;
    if pdus.len() > MAX_PDUS {
        return Err(Failure::bad_json(format!("{} PDUs in one transaction; the limit is {MAX_PDUS}", pdus.len())));
    }
    if edus.len() > MAX_EDUS {
        return Err(Failure::bad_json(format!("{} EDUs in one transaction; the limit is {MAX_EDUS}", edus.len())));
    }
    let origin = req.origin.to_string();
    if let Some(stored) = stored_answer(&req, &origin, endpoint, txn)? {
        return Ok(stored);
    }
    let _guard = match req.node.inbound.begin(&origin, txn) {
        Begin::Started(g) => g,
        Begin::Running(done) => {
            done.notified().await;
            return stored_answer(&req, &origin, endpoint, txn)?
                .ok_or_else(|| Failure::failed("a retried transaction did not complete"));
        }
        Begin::Busy => {
            return Err(Failure::BadState("Another transaction from this server is still being processed".into()))
        }
    };
    crate::crash::point("send.before_append");
    let started = std::time::Instant::now();
    let outcomes = process_pdus(&req, &pdus).await?;
    crate::federation::edu::receive(&req.node, &req.origin, &edus).await?;
    let answer = wire::to_json(&TxnAnswer::new(v1, outcomes))?;
    let mut b = Batch::new();
    b.push(Op::PutTxnResponse {
        origin,
        endpoint: endpoint.into(),
        txn: txn.to_owned(),
        response: TxnResponse {
            received_ts: now_ms(),
            status: 200,
            body: serde_json::to_vec(&answer).unwrap_or_default(),
        },
    });
    req.node.store.write(b)?;
    metrics::histogram!("lmx_federation_transaction_seconds", "direction" => "in")
        .record(started.elapsed().as_secs_f64());
    tracing::debug!(origin = %req.origin, txn_id = txn, pdus = pdus.len(), edus = edus.len(), handled_us = started.elapsed().as_micros() as u64, "transaction handled");
    Ok(answer)
}

fn stored_answer(req: &Req, origin: &str, endpoint: &str, txn: &str) -> Result<Option<Value>, Failure> {
    let Some(r) = req.node.store.txn_response(origin, endpoint, txn)? else {
        return Ok(None);
    };
    if now_ms() - r.received_ts > TXN_KEEP_MS {
        return Ok(None);
    }
    Ok(serde_json::from_slice(&r.body).ok())
}

/// An id for `failed_pdus`: the event's (or LPDU's) own reference hash.
fn id_of(version: &RoomVersion, obj: &Object) -> String {
    event_id(version, obj).map(|e| e.to_string()).unwrap_or_else(|_| "$unknown".into())
}

/// The room's answer for an event handed to it, awaited once the whole
/// transaction has been handed over.
type Sequencing = Asked<Appended>;

/// What became of each PDU of a transaction: `Err` carries the reason.
type Outcomes = BTreeMap<String, Result<(), String>>;

/// `Err` when this server cannot tell what to do with the transaction (a
/// room it knows cannot be read back): the sender retries it later, rather
/// than its events being refused.
async fn process_pdus(req: &Req, pdus: &[Value]) -> Result<Outcomes, Failure> {
    let mut out = Outcomes::new();
    // Events per room, each room taking its share in one go: PDUs from an
    // LM hub, and every event of a mixed room.
    let mut from_hub: Vec<(RoomId, Vec<Pdu>)> = Vec::new();
    let mut mixed: Vec<(RoomId, Vec<Pdu>)> = Vec::new();
    // An LM hub's rooms get every LPDU (and DAG-capable server's event) of
    // the transaction before any answer is awaited, in order, so they share
    // the room's batches and flushes instead of one round trip each.
    let mut sequencing: Vec<(String, Sequencing)> = Vec::new();
    let group = |groups: &mut Vec<(RoomId, Vec<Pdu>)>, room: &RoomId, pdu: Pdu| match groups
        .iter_mut()
        .find(|(r, _)| r == room)
    {
        Some((_, list)) => list.push(pdu),
        None => groups.push((room.clone(), vec![pdu])),
    };
    let mut checks = checks_ahead(req, pdus);
    for (i, item) in pdus.iter().enumerate() {
        let Some(obj) = item.as_object() else {
            out.insert("$unknown".into(), Err("not a JSON object".into()));
            continue;
        };
        let lm = RoomVersion::lm();
        let room = obj.get("room_id").and_then(Value::as_str).unwrap_or("");
        let (handle, view) = match known_room(req, room) {
            Ok(r) => r,
            Err(e @ Failure::Room(_)) => return Err(e),
            Err(_) => {
                // Unknown or invalid room: rejected, and reported (OQ-37).
                out.insert(id_of(lm, obj), Err(format!("unknown room {room:?}")));
                continue;
            }
        };
        let version = view.version;
        let id = id_of(version, obj);
        let is_hub = view.is_hub(&req.node.name);
        if version.is_mixed() {
            if Lpdu::looks_like_lpdu(obj) {
                out.insert(id, Err("rooms of Matrix versions take full events, not LPDUs".into()));
                continue;
            }
            let checked = checked(&mut checks.0[i], req, version, obj).await;
            match checked {
                // A DAG server sends its events to every server; a
                // participant takes the hub's copy, in the hub's order.
                Ok(_) if !is_hub && req.origin != view.hub => {
                    out.insert(id, Ok(()));
                }
                Ok(pdu) => group(&mut mixed, &view.room_id, pdu),
                Err(why) => {
                    out.insert(id, Err(why));
                }
            }
            continue;
        }
        if Lpdu::looks_like_lpdu(obj) {
            if !is_hub {
                continue; // item 165: LPDUs for rooms we do not hub are dropped
            }
            let kind = if version.lm { "lm" } else { "mixed" };
            metrics::counter!("lmx_lpdus_received_total", "room_kind" => kind).increment(1);
            match accept_lpdu(req, version, obj).await {
                Ok(lpdu) => match handle.ask_later(|reply| RoomCmd::Lpdu { lpdu, with_state: false, reply }).await {
                    Ok(answer) => sequencing.push((id, answer)),
                    Err(e) => {
                        out.insert(id, Err(e.public_reason()));
                    }
                },
                Err(why) => {
                    out.insert(id, Err(why));
                }
            }
            continue;
        }
        if is_hub {
            // A DAG-capable LM server's own event (digest 11.3).
            let refused = match checked(&mut checks.0[i], req, version, obj).await {
                Ok(pdu) if pdu.sender().is_on(&req.origin) => {
                    match handle.ask_later(|reply| RoomCmd::LmDagEvent { pdu, reply }).await {
                        Ok(answer) => {
                            sequencing.push((id, answer));
                            continue;
                        }
                        Err(e) => e.public_reason(),
                    }
                }
                Ok(_) => "the hub takes full events only from their sender's server".into(),
                Err(why) => why,
            };
            out.insert(id, Err(refused));
            continue;
        }
        // Participants take room events from the room's hub only (OQ-21).
        if req.origin != view.hub {
            continue;
        }
        match checked(&mut checks.0[i], req, version, obj).await {
            Ok(pdu) => group(&mut from_hub, &view.room_id, pdu),
            Err(why) => {
                out.insert(id, Err(why));
            }
        }
    }
    for (id, answer) in sequencing {
        out.insert(id, answer.answer().await.map(|_| ()).map_err(|e| e.public_reason()));
    }
    // Every room gets its events before any answer is awaited, so the rooms
    // of one transaction build and flush side by side (their flushes are
    // shared) instead of one after the other.
    let mut asked = Vec::new();
    for (room, list) in from_hub {
        let Some(handle) = req.node.rooms.get(&room) else {
            continue;
        };
        let ids: Vec<String> = list.iter().map(|p| p.event_id().to_string()).collect();
        asked.push((ids, handle.ask_later(|reply| RoomCmd::FromHub { pdus: list, reply }).await));
    }
    for (ids, answer) in asked {
        let results = match answer {
            Ok(answer) => answer.answer().await,
            Err(e) => Err(e),
        };
        match results {
            Ok(results) => {
                for (id, r) in ids.into_iter().zip(results) {
                    out.insert(id, r.map_err(|e| e.public_reason()));
                }
            }
            Err(e) => {
                for id in ids {
                    out.insert(id, Err(e.public_reason()));
                }
            }
        }
    }
    let offers = mixed.into_iter().filter_map(|(room, list)| {
        let handle = req.node.rooms.get(&room)?;
        let ids: Vec<String> = list.iter().map(|p| p.event_id().to_string()).collect();
        Some(async move { (ids, crate::federation::dag::offer(&req.node, &handle, &req.origin, list).await) })
    });
    for (ids, offered) in futures_util::future::join_all(offers).await {
        match offered {
            Ok(results) => {
                for (id, r) in results {
                    let r = match r {
                        Ok(Verdict::Accepted | Verdict::Known) => Ok(()),
                        Ok(Verdict::SoftFailed(why)) => Err(format!("soft-failed: {why}")),
                        Ok(Verdict::Rejected(why)) => Err(format!("rejected: {why}")),
                        Err(e) => Err(e.public_reason()),
                    };
                    out.insert(id.to_string(), r);
                }
            }
            Err(e) => {
                for id in ids {
                    out.insert(id, Err(e.public_reason()));
                }
            }
        }
    }
    Ok(out)
}

/// Fewer events than this are checked one after the other where the loop
/// meets them: spreading them would cost a thread hop on the latency path.
const CHECK_AHEAD_FROM: usize = 8;

type Check = Option<tokio::task::JoinHandle<Result<Pdu, String>>>;

/// Checks started ahead; those not taken when the transaction ends early
/// (or its request goes away) are stopped.
struct Checks(Vec<Check>);

impl Drop for Checks {
    fn drop(&mut self) {
        for check in self.0.iter().flatten() {
            check.abort();
        }
    }
}

/// Starts the receive checks (schema, signatures, hashes) of a large
/// transaction's full events at once, as tasks the runtime spreads over its
/// threads: a catching-up follower gets 50 events a transaction, and their
/// signature checks, one at a time, were most of its time. Each event still
/// gets the one signature check it always had; only where it runs changes.
/// The loop takes the results in order; an event it does not check (an
/// LPDU, one from a server it ignores) gets none.
fn checks_ahead(req: &Req, pdus: &[Value]) -> Checks {
    let inline = || Checks(pdus.iter().map(|_| None).collect());
    if pdus.len() < CHECK_AHEAD_FROM {
        // Too few to be worth spreading: no look-ups on the latency path.
        return inline();
    }
    let wanted: Vec<Option<(&'static RoomVersion, &Object)>> = pdus
        .iter()
        .map(|item| {
            let obj = item.as_object()?;
            let view = known_view(req, obj.get("room_id").and_then(Value::as_str).unwrap_or("")).ok()?;
            let checked_below = if view.version.is_mixed() {
                !Lpdu::looks_like_lpdu(obj)
            } else {
                !Lpdu::looks_like_lpdu(obj) && (view.is_hub(&req.node.name) || req.origin == view.hub)
            };
            checked_below.then_some((view.version, obj))
        })
        .collect();
    if wanted.iter().flatten().count() < CHECK_AHEAD_FROM {
        return inline();
    }
    Checks(
        wanted
            .into_iter()
            .map(|w| {
                let (version, obj) = w?;
                let (node, obj) = (req.node.clone(), obj.clone());
                Some(tokio::spawn(async move { checked_pdu(&node, version, obj).await }))
            })
            .collect(),
    )
}

/// The receive checks of one event: started ahead, or run now.
async fn checked(ahead: &mut Check, req: &Req, version: &'static RoomVersion, obj: &Object) -> Result<Pdu, String> {
    match ahead.take() {
        Some(check) => match check.await {
            Ok(checked) => checked,
            // A panic goes on as it would have inline: the transaction is
            // not answered, so its sender retries it.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err("the event's checks were stopped".into()),
        },
        None => checked_pdu(&req.node, version, obj.clone()).await,
    }
}

/// The hub's checks on an LPDU before building anything: shape, the
/// sender belongs to the requesting server, its signature, its hash
/// (rejected, not redacted: OQ-13).
pub async fn accept_lpdu(req: &Req, version: &'static RoomVersion, obj: &Object) -> Result<Lpdu, String> {
    let lpdu = Lpdu::from_object(version, obj.clone()).map_err(|e| format!("bad LPDU: {e}"))?;
    if !lpdu.sender().is_on(&req.origin) {
        return Err(format!("sender {} does not belong to {}", lpdu.sender(), req.origin));
    }
    let sender_server = UserId::server_name(lpdu.sender());
    req.node
        .keyring
        .verify_signers(version, lpdu.json(), &[sender_server], now_ms())
        .await
        .map_err(|e| format!("signature check failed: {e}"))?;
    match check_hashes(version, lpdu.json()) {
        Ok(HashCheck::Match) => Ok(lpdu),
        Ok(HashCheck::Mismatch(_)) => Err("content hash mismatch".into()),
        Err(e) => Err(e.to_string()),
    }
}
