//! Durable delivery: one worker per destination reads its queue from the
//! persisted cursor, sends transactions of at most 50 PDUs and 100 EDUs in
//! queue order (one in flight), and backs off on failure: 10 s, doubling,
//! jittered ×0.8-1.4, capped at 1 h, cut short by any signed request from
//! that server or a 429's `retry_after_ms` (items 160-161, 168).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Method;
use serde_json::{json, Value};
use tokio::sync::Notify;
use tracing::Instrument;

use super::handlers::send::{MAX_EDUS, MAX_PDUS};
use crate::core::event::{Lpdu, RoomVersion};
use crate::core::ids::{RoomId, ServerName};
use crate::core::json::{self, NumberPolicy, Object};
use crate::federation::client::SignedRequest;
use crate::federation::Node;
use crate::http::encode_segment;
use crate::room::RoomCmd;
use crate::store::records::queue_item::Item;
use crate::store::records::DestinationState;
use crate::store::{Batch, Claim, Claimed, Op, StoreError};

struct Worker {
    notify: Notify,
    /// Set by a signed request from the destination: retry now.
    reset: AtomicBool,
    status: Mutex<DeliveryStatus>,
}

/// How delivery to a destination is going, as its worker last saw it (in
/// memory: a restart starts it afresh).
#[derive(Debug, Clone, Default)]
pub struct DeliveryStatus {
    /// Failed attempts in a row; 0 when the last one succeeded.
    pub failures: u32,
    pub last_error: Option<String>,
    /// Milliseconds since the epoch; 0: never.
    pub last_success_ts: i64,
    pub last_failure_ts: i64,
    /// The first failure of the current run of them; 0 when healthy.
    pub failing_since_ts: i64,
    /// When the next attempt is due while backing off; 0: not backing off.
    pub retry_at_ts: i64,
    /// The backoff being waited out, ms.
    pub retry_interval_ms: u64,
    /// Round trip of the last delivered transaction, ms.
    pub last_round_trip_ms: u64,
    /// Since when the queue has held undelivered work (0: drained). The
    /// lag an operator sees, measured by this server's clock and not by
    /// timestamps other servers wrote in events.
    pub waiting_since_ts: i64,
}

pub struct Outbound {
    base_ms: u64,
    max_ms: u64,
    workers: Mutex<HashMap<ServerName, Arc<Worker>>>,
}

impl Outbound {
    pub fn new(base_ms: u64, max_ms: u64) -> Self {
        Outbound { base_ms, max_ms, workers: Mutex::new(HashMap::new()) }
    }

    fn worker(&self, node: &Arc<Node>, dest: &ServerName) -> Arc<Worker> {
        let mut map = self.workers.lock().expect("poisoned");
        if let Some(w) = map.get(dest) {
            return w.clone();
        }
        let w = Arc::new(Worker {
            notify: Notify::new(),
            reset: AtomicBool::new(false),
            status: Mutex::new(DeliveryStatus::default()),
        });
        map.insert(dest.clone(), w.clone());
        // Not under the span of whatever woke it first (a room, a request).
        let span = tracing::info_span!(parent: None, "deliver", destination = %dest);
        node.spawn(deliver(node.clone(), dest.clone(), w.clone()).instrument(span));
        w
    }

    /// New work for `dest`.
    pub fn wake(&self, node: &Arc<Node>, dest: &ServerName) {
        if node.is_me(dest) {
            return;
        }
        self.worker(node, dest).notify.notify_one();
    }

    /// `dest` just reached us: cut any backoff short. Starts no worker.
    pub fn wake_now(&self, _node: &Arc<Node>, dest: &ServerName) {
        let map = self.workers.lock().expect("poisoned");
        if let Some(w) = map.get(dest) {
            w.reset.store(true, Ordering::SeqCst);
            w.notify.notify_one();
        }
    }

    /// Each destination a worker delivers to, with how it is going.
    pub fn statuses(&self) -> Vec<(ServerName, DeliveryStatus)> {
        let map = self.workers.lock().expect("poisoned");
        let mut all: Vec<_> =
            map.iter().map(|(d, w)| (d.clone(), w.status.lock().expect("poisoned").clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Drops `worker` (still `dest`'s): it stopped, and the next wake starts
    /// another.
    fn forget(&self, dest: &ServerName, worker: &Arc<Worker>) {
        let mut map = self.workers.lock().expect("poisoned");
        if map.get(dest).is_some_and(|w| Arc::ptr_eq(w, worker)) {
            map.remove(dest);
        }
    }

    /// Retries `dest` now if it is backing off (an operator's `retry`);
    /// `false` when no worker delivers to it.
    pub fn retry_now(&self, dest: &ServerName) -> bool {
        let map = self.workers.lock().expect("poisoned");
        let Some(w) = map.get(dest) else { return false };
        w.reset.store(true, Ordering::SeqCst);
        w.notify.notify_one();
        true
    }

    /// Resumes delivery to every destination with queued work (start-up).
    pub fn resume_all(&self, node: &Arc<Node>) -> Result<(), StoreError> {
        for dest in node.store.destinations_with_work()? {
            self.wake(node, &dest);
        }
        Ok(())
    }

    fn delay(&self, failures: u32) -> Duration {
        let exp = self.base_ms.saturating_mul(1u64 << failures.saturating_sub(1).min(20));
        let mut b = [0u8; 1];
        let _ = getrandom::getrandom(&mut b);
        let jitter = 0.8 + 0.6 * (b[0] as f64 / 255.0);
        Duration::from_millis(((exp.min(self.max_ms)) as f64 * jitter) as u64)
    }
}

/// One transaction's contents, with the LPDUs it carries (to map
/// `failed_pdus` back to the rooms that wait on them).
struct Txn {
    id: String,
    last: u64,
    /// It carries as much as a transaction may: more is waiting.
    full: bool,
    request: SignedRequest,
    lpdus: Vec<(String, RoomId, String)>,
}

/// A PDU or EDU for a transaction: stored text that is canonical in both
/// JSON forms goes out as it is; anything else is parsed (and re-written).
enum Piece {
    Canonical(Vec<u8>),
    Parsed(Value),
}

impl Piece {
    fn read(bytes: Vec<u8>, canonical: bool) -> Option<Piece> {
        match canonical {
            _ if bytes.is_empty() => None,
            true => Some(Piece::Canonical(bytes)),
            false => json::parse(&bytes, NumberPolicy::Ieee754).ok().map(Piece::Parsed),
        }
    }

    fn canonical(&self) -> Option<&[u8]> {
        match self {
            Piece::Canonical(bytes) => Some(bytes),
            Piece::Parsed(_) => None,
        }
    }

    fn into_value(self) -> Option<Value> {
        match self {
            Piece::Canonical(bytes) => json::parse(&bytes, NumberPolicy::Ieee754).ok(),
            Piece::Parsed(v) => Some(v),
        }
    }
}

/// A transaction body made of pieces canonical in both forms, written in
/// canonical form itself (keys in order, no spaces), so that it is signed
/// and sent as built.
fn canonical_body(origin: &str, ts: i64, pdus: &[&[u8]], edus: &[&[u8]]) -> Vec<u8> {
    fn list(out: &mut Vec<u8>, items: &[&[u8]]) {
        out.push(b'[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(item);
        }
        out.push(b']');
    }
    let size: usize = pdus.iter().chain(edus).map(|p| p.len() + 1).sum();
    let mut out = Vec::with_capacity(size + 128);
    out.push(b'{');
    if !edus.is_empty() {
        out.extend_from_slice(b"\"edus\":");
        list(&mut out, edus);
        out.push(b',');
    }
    out.extend_from_slice(b"\"origin\":");
    json::write_canonical_string(&mut out, origin);
    out.extend_from_slice(b",\"origin_server_ts\":");
    out.extend_from_slice(ts.to_string().as_bytes());
    out.extend_from_slice(b",\"pdus\":");
    list(&mut out, pdus);
    out.push(b'}');
    out
}

/// Queue items read for a transaction.
#[derive(Default)]
struct Contents {
    pdus: Vec<Piece>,
    edus: Vec<Piece>,
    lpdus: Vec<(String, RoomId, String)>,
    /// The last queue position taken (the start position when none was).
    last: u64,
}

impl Contents {
    fn is_full(&self) -> bool {
        self.pdus.len() >= MAX_PDUS || self.edus.len() >= MAX_EDUS
    }

    /// The transaction, signed for `dest` (`lm`: an LM peer).
    fn into_txn(self, node: &Node, dest: &ServerName, id: String, lm: bool) -> Txn {
        let full = self.is_full();
        let (path, ts) = (txn_path(lm, &id), crate::sys::now_ms());
        let spliced: Option<Vec<&[u8]>> = self.pdus.iter().map(Piece::canonical).collect();
        let spliced_edus: Option<Vec<&[u8]>> = self.edus.iter().map(Piece::canonical).collect();
        let request = match (spliced, spliced_edus) {
            (Some(pdus), Some(edus)) => {
                let body = canonical_body(node.name.as_str(), ts, &pdus, &edus);
                node.fed.sign_canonical(dest, Method::PUT, &path, body)
            }
            _ => {
                // Moved in, not copied (as `json!` would).
                let mut body = Object::new();
                body.insert("origin".into(), Value::String(node.name.to_string()));
                body.insert("origin_server_ts".into(), Value::from(ts));
                body.insert("pdus".into(), self.pdus.into_iter().filter_map(Piece::into_value).collect());
                if !self.edus.is_empty() {
                    body.insert("edus".into(), self.edus.into_iter().filter_map(Piece::into_value).collect());
                }
                node.fed.sign(dest, Method::PUT, &path, Some(&Value::Object(body)), lm)
            }
        };
        Txn { id, last: self.last, full, request, lpdus: self.lpdus }
    }
}

/// How far a transaction reaches into the queue: the one in flight is
/// rebuilt up to the position recorded when it was first sent, whatever
/// its size; a new one takes what is durable, up to the limits.
#[derive(Clone, Copy)]
enum Reach {
    Retry(u64),
    Durable { watermark: u64 },
}

/// The next transaction, read while the one before it was in flight: built
/// and signed already when it is full, else kept open for a top-up.
enum Prepared {
    Built(Txn),
    Open {
        contents: Contents,
        /// Where it starts: the previous transaction's last position.
        after: u64,
        /// The durable position it was read up to.
        watermark: u64,
    },
}

fn txn_path(lm: bool, id: &str) -> String {
    // LM peers take the LM send; DAG servers Matrix's v1 (digest 11.2).
    if lm {
        format!("{}/send/{}", super::UNSTABLE, encode_segment(id))
    } else {
        format!("/_matrix/federation/v1/send/{}", encode_segment(id))
    }
}

/// Delivers to `dest` while this process owns its delivery (`Claimed::
/// Destination`: on a store several processes write, one of them at a
/// time); stops when another process has it.
async fn deliver(node: Arc<Node>, dest: ServerName, worker: Arc<Worker>) {
    let claim = loop {
        match node.store.claim(Claimed::Destination(dest.clone())) {
            Ok(claim) => break claim,
            Err(e @ StoreError::Elsewhere(_)) => {
                tracing::warn!(error = %e, "not delivering here");
                node.outbound.forget(&dest, &worker);
                return;
            }
            // The work is still there: try again, as a failed read does.
            Err(e) => {
                tracing::error!(error = %e, "cannot claim delivery");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let moved = deliver_under(&node, &dest, &worker, &claim).await;
    tracing::warn!(error = %moved, "delivery moved to another process; stopping here");
    node.outbound.forget(&dest, &worker);
}

/// Runs until another process takes `dest`'s delivery over; the refusal.
async fn deliver_under(node: &Arc<Node>, dest: &ServerName, worker: &Worker, claim: &Claim) -> StoreError {
    let mut failures: u32 = 0;
    let mut positions = node.positions.subscribe();
    // A transaction whose in-flight record is written and that goes next.
    let mut ready: Option<Txn> = None;
    loop {
        let txn = match ready.take() {
            Some(t) => t,
            None => match next_txn(node, dest, claim) {
                Ok(Some((id, contents))) => {
                    {
                        let mut st = worker.status.lock().expect("poisoned");
                        if st.waiting_since_ts == 0 {
                            st.waiting_since_ts = crate::sys::now_ms();
                        }
                    }
                    let lm = super::fetch::lm_peer(node, dest).await;
                    contents.into_txn(node, dest, id, lm)
                }
                Ok(None) => {
                    worker.status.lock().expect("poisoned").waiting_since_ts = 0;
                    tokio::select! {
                        _ = worker.notify.notified() => {}
                        _ = positions.changed() => {}
                    }
                    continue;
                }
                Err(e @ StoreError::Elsewhere(_)) => return e,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the outbound queue");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        // With a backlog (this transaction is full), what follows it is read
        // while it is in flight (items 160-161 still hold: nothing is sent
        // before its answer). Without one, reading ahead would only add a
        // thread hop to each small transaction's path.
        let prepare = if txn.full {
            let lm = super::fetch::lm_peer(node, dest).await;
            let (node, dest, after) = (node.clone(), dest.clone(), txn.last);
            Some((lm, tokio::task::spawn_blocking(move || prepare_next(&node, &dest, after, lm))))
        } else {
            None
        };
        crate::crash::point("deliver.before_send");
        let sent_at = std::time::Instant::now();
        // Only a retry asked for from here on cuts a backoff after this
        // send short (one asked before was met by this very attempt).
        worker.reset.store(false, Ordering::SeqCst);
        match node.fed.send_signed(&txn.request).await {
            Ok(resp) => {
                crate::crash::point("deliver.after_send");
                tracing::debug!(destination = %dest, txn_id = %txn.id, answered_us = sent_at.elapsed().as_micros() as u64, "transaction delivered");
                failures = 0;
                let round_trip = sent_at.elapsed();
                metrics::histogram!("lmx_federation_transaction_seconds", "direction" => "out")
                    .record(round_trip.as_secs_f64());
                {
                    let mut st = worker.status.lock().expect("poisoned");
                    st.failures = 0;
                    st.failing_since_ts = 0;
                    st.last_success_ts = crate::sys::now_ms();
                    st.retry_at_ts = 0;
                    st.retry_interval_ms = 0;
                    st.last_round_trip_ms = round_trip.as_millis() as u64;
                }
                let answer = resp.json(dest.as_str()).unwrap_or_else(|_| json!({}));
                report_refused_lpdus(node, &txn, &answer).await;
                let next = match prepare {
                    Some((lm, p)) => match p.await.ok().and_then(Result::ok).flatten() {
                        Some(p) => complete(node, dest, p, lm)
                            .map_err(|e| tracing::error!(error = %e, "cannot read the outbound queue"))
                            .ok(),
                        None => None,
                    },
                    None => None,
                };
                let mut state = DestinationState { acked: txn.last, ..Default::default() };
                if let Some(next) = &next {
                    state.inflight_txn = next.id.clone();
                    state.inflight_last = next.last;
                }
                let mut b = Batch::new();
                b.push(Op::Dequeue { dest: dest.clone(), up_to: txn.last })
                    .push(Op::PutDestination { dest: dest.clone(), state });
                b.claim = Some(claim.clone());
                match node.store.write(b) {
                    Ok(()) => ready = next,
                    Err(e @ StoreError::Elsewhere(_)) => return e,
                    Err(e) => tracing::error!(error = %e, "cannot record delivery"),
                }
            }
            Err(e) => {
                failures += 1;
                let retry_after = e
                    .error_body()
                    .and_then(|b| b.get("retry_after_ms").and_then(Value::as_u64))
                    .filter(|_| e.status().map(|s| s.as_u16()) == Some(429));
                let wait = retry_after.map(Duration::from_millis).unwrap_or_else(|| node.outbound.delay(failures));
                tracing::info!(error = %e, failures, wait_ms = wait.as_millis() as u64, "delivery failed; backing off");
                {
                    let now = crate::sys::now_ms();
                    let mut st = worker.status.lock().expect("poisoned");
                    st.failures = failures;
                    st.last_error = Some(e.to_string());
                    st.last_failure_ts = now;
                    if st.failing_since_ts == 0 {
                        st.failing_since_ts = now;
                    }
                    st.retry_interval_ms = wait.as_millis() as u64;
                    st.retry_at_ts = now.saturating_add(wait.as_millis() as i64);
                }
                // A retry asked for while this send was out goes at once.
                if worker.reset.swap(false, Ordering::SeqCst) {
                    failures = 0;
                    worker.status.lock().expect("poisoned").retry_at_ts = 0;
                    continue;
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = async {
                        loop {
                            worker.notify.notified().await;
                            if worker.reset.swap(false, Ordering::SeqCst) { break; }
                        }
                    } => { failures = 0; }
                }
                worker.status.lock().expect("poisoned").retry_at_ts = 0;
            }
        }
    }
}

/// Reads what would follow a transaction ending at `after`, if anything.
fn prepare_next(node: &Node, dest: &ServerName, after: u64, lm: bool) -> Result<Option<Prepared>, StoreError> {
    let watermark = node.positions.watermark();
    let contents = collect(node, dest, after, Reach::Durable { watermark }, Contents::default())?;
    if contents.last == after {
        return Ok(None);
    }
    if contents.is_full() {
        let id = format!("{}.{}", after + 1, contents.last);
        return Ok(Some(Prepared::Built(contents.into_txn(node, dest, id, lm))));
    }
    Ok(Some(Prepared::Open { contents, after, watermark }))
}

/// A prepared transaction, topped up with what became durable while its
/// predecessor was in flight (read from where it stopped, not again).
fn complete(node: &Node, dest: &ServerName, p: Prepared, lm: bool) -> Result<Txn, StoreError> {
    let (mut contents, after, read_upto) = match p {
        Prepared::Built(txn) => return Ok(txn),
        Prepared::Open { contents, after, watermark } => (contents, after, watermark),
    };
    let watermark = node.positions.watermark();
    if watermark > read_upto {
        contents = collect(node, dest, contents.last, Reach::Durable { watermark }, contents)?;
    }
    let id = format!("{}.{}", after + 1, contents.last);
    Ok(contents.into_txn(node, dest, id, lm))
}

/// The transaction to send next: the one in flight (same id, same body,
/// even after a restart), or a new one from the queue.
fn next_txn(node: &Node, dest: &ServerName, claim: &Claim) -> Result<Option<(String, Contents)>, StoreError> {
    let state = node.store.destination(dest)?;
    let retrying = !state.inflight_txn.is_empty() && state.inflight_last > state.acked;
    let reach = if retrying {
        Reach::Retry(state.inflight_last)
    } else {
        Reach::Durable { watermark: node.positions.watermark() }
    };
    let contents = collect(node, dest, state.acked, reach, Contents::default())?;
    if contents.last == state.acked {
        if retrying {
            // The transaction in flight has nothing left to repeat (its
            // items left the queue): it is done with, and what came after
            // it goes out instead of waiting behind it for ever.
            let mut b = Batch::new();
            b.push(Op::PutDestination {
                dest: dest.clone(),
                state: DestinationState { acked: state.inflight_last, ..Default::default() },
            });
            b.claim = Some(claim.clone());
            node.store.write(b)?;
            return next_txn(node, dest, claim);
        }
        return Ok(None);
    }
    let id = if retrying { state.inflight_txn.clone() } else { format!("{}.{}", state.acked + 1, contents.last) };
    if !retrying {
        let mut b = Batch::new();
        b.push(Op::PutDestination {
            dest: dest.clone(),
            state: DestinationState { acked: state.acked, inflight_txn: id.clone(), inflight_last: contents.last },
        });
        b.claim = Some(claim.clone());
        node.store.write(b)?;
    }
    Ok(Some((id, contents)))
}

/// Reads queue items after position `after` into `into` (which may hold
/// some already: a top-up), within the transaction limits unless retrying.
fn collect(
    node: &Node,
    dest: &ServerName,
    after: u64,
    reach: Reach,
    mut into: Contents,
) -> Result<Contents, StoreError> {
    let retrying = matches!(reach, Reach::Retry(_));
    let items = node.store.queue(dest, after, MAX_PDUS + MAX_EDUS)?;
    into.last = after;
    for (pos, item) in items {
        let in_range = match reach {
            Reach::Retry(last) => pos <= last,
            Reach::Durable { watermark } => pos <= watermark,
        };
        if !in_range {
            break;
        }
        let is_edu = matches!(item.item, Some(Item::EduJson(_) | Item::EduCanonical(_)));
        let full = if is_edu { into.edus.len() >= MAX_EDUS } else { into.pdus.len() >= MAX_PDUS };
        if full && !retrying {
            break;
        }
        match item.item {
            Some(Item::EventId(id)) => {
                let Ok(id) = crate::core::ids::EventId::parse(&id) else {
                    continue;
                };
                if let Some(rec) = node.store.event(&id)? {
                    into.pdus.extend(Piece::read(rec.json, rec.canonical));
                }
            }
            Some(Item::LpduHash(hash)) => {
                // Settled since (sequenced or refused): the hub has had it.
                if let Some(p) = node.store.pending_lpdu(&hash)? {
                    match p.room() {
                        Ok(room) if !p.sent_id.is_empty() => {
                            into.lpdus.push((p.sent_id, room, hash));
                            into.pdus.extend(Piece::read(p.json, p.canonical));
                        }
                        _ => {
                            if let Ok(Value::Object(o)) = json::parse(&p.json, NumberPolicy::Ieee754) {
                                into.lpdus.extend(own_event(node, &o));
                                into.pdus.push(Piece::Parsed(Value::Object(o)));
                            }
                        }
                    }
                }
            }
            Some(Item::LpduJson(bytes)) => {
                if let Ok(Value::Object(o)) = json::parse(&bytes, NumberPolicy::Ieee754) {
                    if let Some(sent) = own_event(node, &o) {
                        into.lpdus.push(sent);
                    }
                    into.pdus.push(Piece::Parsed(Value::Object(o)));
                }
            }
            Some(Item::EduJson(bytes)) => into.edus.extend(Piece::read(bytes, false)),
            Some(Item::EduCanonical(bytes)) => into.edus.extend(Piece::read(bytes, true)),
            None => {}
        }
        into.last = pos;
    }
    Ok(into)
}

/// An event of ours sent to a hub, read back from its text (queue items
/// and pending records written before the pending record kept its id):
/// `(id in the answer, room, the key its room waits on)`. LM rooms: the
/// LPDU's id and hash; mixed rooms: the event id for both.
fn own_event(node: &Node, o: &crate::core::json::Object) -> Option<(String, RoomId, String)> {
    let room = o.get("room_id").and_then(Value::as_str).and_then(|r| RoomId::parse(r).ok())?;
    let version = node.rooms.get_view(&room).map(|v| v.version).unwrap_or_else(RoomVersion::lm);
    if version.lm {
        let l = Lpdu::from_object(version, o.clone()).ok()?;
        return Some((l.lpdu_id().to_string(), room, l.lpdu_hash().to_owned()));
    }
    let id = crate::core::event::event_id(version, o).ok()?.to_string();
    Some((id.clone(), room, id))
}

/// A hub refused some of our events: tell the rooms, which tell the
/// clients. LM answers list `failed_pdus`; Matrix's v1 lists every PDU.
async fn report_refused_lpdus(node: &Node, txn: &Txn, answer: &Value) {
    let Some(failed) = answer.get("failed_pdus").or_else(|| answer.get("pdus")).and_then(Value::as_object) else {
        return;
    };
    for (lpdu_id, room, hash) in &txn.lpdus {
        let Some(error) = failed.get(lpdu_id).and_then(|f| f.get("error")) else {
            continue;
        };
        let error = error.as_str().unwrap_or("refused").to_owned();
        tracing::info!(%room, lpdu = %lpdu_id, %error, "the hub refused an LPDU");
        if let Some(h) = node.rooms.get(room) {
            let _ = h.send(RoomCmd::LpduRefused { lpdu_hash: hash.clone(), error }).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::json::{object_canonical_in_both_forms, to_canonical, Canonical};

    fn slices(b: &[Vec<u8>]) -> Vec<&[u8]> {
        b.iter().map(Vec::as_slice).collect()
    }

    #[test]
    fn a_spliced_body_is_the_canonical_form_of_the_transaction() {
        let pdus = [json!({"type": "m.room.message", "content": {"body": "é😀\n"}, "depth": 3}), json!({"a": []})];
        let edus = [json!({"edu_type": "m.typing", "content": {"typing": true}})];
        let bytes = |v: &Value| object_canonical_in_both_forms(v.as_object().unwrap()).unwrap();
        let (pdu_bytes, edu_bytes): (Vec<_>, Vec<_>) =
            (pdus.iter().map(bytes).collect(), edus.iter().map(bytes).collect());
        for with_edus in [true, false] {
            let edus_in = if with_edus { slices(&edu_bytes) } else { Vec::new() };
            let spliced = canonical_body("hub.test", 1_700_000_000_000, &slices(&pdu_bytes), &edus_in);
            let mut whole = json!({"origin": "hub.test", "origin_server_ts": 1_700_000_000_000i64, "pdus": pdus});
            if with_edus {
                whole["edus"] = json!(edus);
            }
            for form in [Canonical::Matrix, Canonical::Rfc8785] {
                assert_eq!(
                    String::from_utf8_lossy(&spliced),
                    String::from_utf8_lossy(&to_canonical(&whole, form).unwrap())
                );
            }
        }
    }

    #[test]
    fn stored_text_goes_out_unparsed_only_when_marked_canonical() {
        let text = br#"{"a":1}"#.to_vec();
        assert!(matches!(Piece::read(text.clone(), true), Some(Piece::Canonical(b)) if b == text));
        assert!(
            matches!(Piece::read(br#"{ "a" : 1 }"#.to_vec(), false), Some(Piece::Parsed(v)) if v == json!({"a": 1}))
        );
        assert!(Piece::read(Vec::new(), true).is_none(), "a pruned record has no text to send");
        assert!(Piece::read(b"{".to_vec(), false).is_none());
    }
}
