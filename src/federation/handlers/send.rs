//! E5 `PUT …/send/{txnId}`: LPDUs to the hub, PDUs from the hub, EDUs.
//!
//! Request-level faults refuse the whole transaction (documented in
//! README): more than 50 PDUs or 100 EDUs → `400 M_BAD_JSON`; another
//! transaction from the same origin still running → `400 M_BAD_STATE`.
//! Event-level faults only list that event in `failed_pdus` (items 163-171).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::known_room;
use crate::core::event::{check_hashes, event_id, HashCheck, Lpdu, Pdu, RoomVersion};
use crate::core::ids::{RoomId, UserId};
use crate::core::json::Object;
use crate::federation::fetch::checked_pdu;
use crate::federation::inbound::{Begin, Req};
use crate::http::ApiError;
use crate::node::now_ms;
use crate::room::{RoomCmd, RoomError};
use crate::store::records::TxnResponse;
use crate::store::{Batch, Op};

pub const MAX_PDUS: usize = 50;
pub const MAX_EDUS: usize = 100;
/// Stored answers are replayed for a day (OQ-38).
const TXN_KEEP_MS: i64 = 24 * 3600 * 1000;
const ENDPOINT: &str = "send";

pub async fn send(req: Req, txn: &str) -> Result<Value, ApiError> {
    let empty = Vec::new();
    let pdus = match req.body.get("pdus") {
        None => &empty,
        Some(v) => v.as_array().ok_or_else(|| ApiError::bad_json("`pdus` must be an array"))?,
    };
    let edus = match req.body.get("edus") {
        None => &empty,
        Some(v) => v.as_array().ok_or_else(|| ApiError::bad_json("`edus` must be an array"))?,
    };
    if pdus.len() > MAX_PDUS {
        return Err(ApiError::bad_json(format!("{} PDUs in one transaction; the limit is {MAX_PDUS}", pdus.len())));
    }
    if edus.len() > MAX_EDUS {
        return Err(ApiError::bad_json(format!("{} EDUs in one transaction; the limit is {MAX_EDUS}", edus.len())));
    }
    let origin = req.origin.to_string();
    if let Some(stored) = stored_answer(&req, &origin, txn)? {
        return Ok(stored);
    }
    let _guard = match req.node.inbound.begin(&origin, txn) {
        Begin::Started(g) => g,
        Begin::Running(done) => {
            done.notified().await;
            return stored_answer(&req, &origin, txn)?
                .ok_or_else(|| ApiError::unknown("The retried transaction did not complete"));
        }
        Begin::Busy => {
            return Err(ApiError::new(
                http::StatusCode::BAD_REQUEST,
                "M_BAD_STATE",
                "Another transaction from this server is still being processed",
            ))
        }
    };
    let failed = process_pdus(&req, pdus).await;
    crate::federation::edu::receive(&req.node, &req.origin, edus).await;
    let answer = json!({ "failed_pdus": failed });
    let mut b = Batch::new();
    b.push(Op::PutTxnResponse {
        origin,
        endpoint: ENDPOINT.into(),
        txn: txn.to_owned(),
        response: TxnResponse {
            received_ts: now_ms(),
            status: 200,
            body: serde_json::to_vec(&answer).unwrap_or_default(),
        },
    });
    req.node.store.write(b)?;
    Ok(answer)
}

fn stored_answer(req: &Req, origin: &str, txn: &str) -> Result<Option<Value>, ApiError> {
    let Some(r) = req.node.store.txn_response(origin, ENDPOINT, txn)? else {
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

async fn process_pdus(req: &Req, pdus: &[Value]) -> BTreeMap<String, Value> {
    let mut failed = BTreeMap::new();
    // PDUs from the hub, grouped per room so each room takes them in one go.
    let mut from_hub: Vec<(RoomId, Vec<Pdu>)> = Vec::new();
    for item in pdus {
        let fail = |failed: &mut BTreeMap<String, Value>, id: String, why: String| {
            failed.insert(id, json!({ "error": why }));
        };
        let Some(obj) = item.as_object() else {
            fail(&mut failed, "$unknown".into(), "not a JSON object".into());
            continue;
        };
        let lm = RoomVersion::lm();
        let room = obj.get("room_id").and_then(Value::as_str).unwrap_or("");
        let (handle, view) = match known_room(req, room) {
            Ok(r) => r,
            Err(_) => {
                // Unknown or invalid room: rejected, and reported (OQ-37).
                fail(&mut failed, id_of(lm, obj), format!("unknown room {room:?}"));
                continue;
            }
        };
        let version = view.version;
        let is_hub = view.is_hub(&req.node.name);
        if Lpdu::looks_like_lpdu(obj) {
            if !is_hub {
                continue; // item 165: LPDUs for rooms we do not hub are dropped
            }
            match accept_lpdu(req, version, obj).await {
                Ok(lpdu) => match handle.ask(|reply| RoomCmd::Lpdu { lpdu, with_state: false, reply }).await {
                    Ok(_) => {}
                    Err(e) => fail(&mut failed, id_of(version, obj), e.to_string()),
                },
                Err(why) => fail(&mut failed, id_of(version, obj), why),
            }
            continue;
        }
        if is_hub {
            fail(&mut failed, id_of(version, obj), "the hub takes LPDUs, not PDUs, for its LM rooms".into());
            continue;
        }
        // Participants take room events from the room's hub only (OQ-21).
        if req.origin != view.hub {
            continue;
        }
        match checked_pdu(&req.node, version, obj.clone()).await {
            Ok(pdu) => match from_hub.iter_mut().find(|(r, _)| r == &view.room_id) {
                Some((_, list)) => list.push(pdu),
                None => from_hub.push((view.room_id.clone(), vec![pdu])),
            },
            Err(why) => fail(&mut failed, id_of(version, obj), why),
        }
    }
    for (room, list) in from_hub {
        let Some(handle) = req.node.rooms.get(&room) else {
            continue;
        };
        let ids: Vec<String> = list.iter().map(|p| p.event_id().to_string()).collect();
        match handle.ask(|reply| RoomCmd::FromHub { pdus: list, reply }).await {
            Ok(results) => {
                for (id, r) in ids.into_iter().zip(results) {
                    if let Err(e) = r {
                        failed.insert(id, json!({ "error": e.to_string() }));
                    }
                }
            }
            Err(e) => {
                for id in ids {
                    failed.insert(id, json!({ "error": e.to_string() }));
                }
            }
        }
    }
    failed
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

impl From<RoomError> for ApiError {
    fn from(e: RoomError) -> Self {
        match e {
            RoomError::Forbidden(m) => ApiError::forbidden(m),
            RoomError::BadEvent(m) => ApiError::bad_json(m),
            RoomError::TooLarge(m) => ApiError::too_large(m),
            RoomError::NotHub => {
                ApiError::new(http::StatusCode::BAD_REQUEST, "M_WRONG_SERVER", "This server is not the room's hub")
            }
            RoomError::Pending => ApiError::limit_exceeded("The room's hub has not sequenced the event yet", 1000),
            RoomError::Remote(m) => ApiError::new(http::StatusCode::BAD_GATEWAY, "M_UNKNOWN", m),
            RoomError::Storage(m) => ApiError::unknown(format!("storage: {m}")),
            RoomError::Gone => ApiError::unknown("room task stopped"),
        }
    }
}
