//! The federation listener: routing (stable and `.02` unstable paths),
//! request authentication, and one transaction in flight per origin.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::Value;
use tokio::sync::Notify;
use tracing::Instrument;

use super::handlers;
use super::xmatrix;
use crate::core::crypto::PublicKey;
use crate::core::ids::ServerName;
use crate::core::json::{NumberPolicy, Object};
use crate::federation::Node;
use crate::http::{
    json_object, path_segments, query_pairs, read_body, Body, BodyBudget, Handler, MAX_BODY, MAX_SEND_BODY,
};
use crate::store::BoxFuture;
use crate::sys::now_ms;
use crate::wire::{self, Failure, Surface};

/// Bodies larger than this are parsed on the blocking pool.
const PARSE_ELSEWHERE: usize = 256 << 10;

/// `Authorization` headers looked at per request (each may cost a key
/// fetch).
const MAX_AUTH_HEADERS: usize = 4;

/// One transaction in flight per origin (digest E5; OQ-38).
#[derive(Default)]
pub struct InboundTxns {
    inflight: Mutex<HashMap<String, (String, Arc<Notify>)>>,
}

pub enum Begin<'a> {
    Started(TxnGuard<'a>),
    /// The same transaction is being processed: wait, then read its answer.
    Running(Arc<Notify>),
    /// Another transaction of this origin is being processed.
    Busy,
}

pub struct TxnGuard<'a> {
    owner: &'a InboundTxns,
    origin: String,
}

impl Drop for TxnGuard<'_> {
    fn drop(&mut self) {
        if let Some((_, n)) = self.owner.inflight.lock().expect("poisoned").remove(&self.origin) {
            n.notify_waiters();
        }
    }
}

impl InboundTxns {
    pub fn begin(&self, origin: &str, txn: &str) -> Begin<'_> {
        let mut map = self.inflight.lock().expect("poisoned");
        match map.get(origin) {
            Some((t, n)) if t == txn => Begin::Running(n.clone()),
            Some(_) => Begin::Busy,
            None => {
                map.insert(origin.to_owned(), (txn.to_owned(), Arc::new(Notify::new())));
                Begin::Started(TxnGuard { owner: self, origin: origin.to_owned() })
            }
        }
    }
}

/// An authenticated request, as handlers see it.
pub struct Req {
    pub node: Arc<Node>,
    pub origin: ServerName,
    pub query: Vec<(String, String)>,
    pub body: Object,
}

pub struct FedHandler {
    pub node: Arc<Node>,
}

impl Handler for FedHandler {
    fn handle(self: Arc<Self>, req: Request<Incoming>, remote: SocketAddr) -> BoxFuture<'static, Response<Body>> {
        let span = tracing::debug_span!("federation", method = %req.method(), path = %req.uri().path(), %remote);
        Box::pin(
            async move {
                match self.route(req).await {
                    Ok(r) => r,
                    Err(e) => {
                        e.log_internal();
                        let answer = wire::answer(Surface::Federation, &e);
                        tracing::debug!(errcode = answer.errcode, error = %e, "federation request refused");
                        answer.into_response()
                    }
                }
            }
            .instrument(span),
        )
    }
}

fn segs_after<'a>(segs: &'a [String], prefix: &[&str]) -> Option<Vec<&'a str>> {
    if segs.len() < prefix.len() || segs.iter().zip(prefix).any(|(a, b)| a != b) {
        return None;
    }
    Some(segs[prefix.len()..].iter().map(String::as_str).collect())
}

/// Which authenticated endpoint a path names, with its parameters.
enum Endpoint {
    /// `true`: Matrix's v1 form (answer `pdus`), else LM's (`failed_pdus`).
    Send(String, bool),
    Event(String),
    EventV1(String),
    BackfillV1(String),
    MissingEvents(String),
    EventAuth(String, String),
    SendPdu(&'static str, String, String),
    State(String, bool),
    Backfill(String),
    Invite(String),
    Make(&'static str, String, String),
    SendMembership(&'static str, String),
    UserKeysQuery,
    UserKeysClaim,
    UserDevices(String),
    /// E17: one device's MLS device object.
    UserDevice(String, String),
    /// A local file (`true`: a thumbnail of it).
    Media(String, bool),
    /// `true`: POST, with a filter.
    PublicRooms(bool),
    QueryDirectory,
    QueryProfile,
    Hierarchy(String),
}

fn allow(method: &Method, want: Method) -> Result<(), Failure> {
    if *method == want {
        Ok(())
    } else {
        Err(Failure::MethodNotAllowed)
    }
}

fn endpoint(method: &Method, segs: &[String]) -> Result<Option<Endpoint>, Failure> {
    use Endpoint::*;
    // The LM unstable paths and the stable ones of the digest (E5-E16).
    let unstable = segs_after(segs, &super::UNSTABLE_SEGMENTS);
    let fed = segs_after(segs, &["_matrix", "federation"]);
    let m = |x: &str| -> &'static str {
        match x {
            "make_join" | "send_join" => "join",
            "make_leave" | "send_leave" => "leave",
            _ => "knock",
        }
    };
    let ep = match (unstable.as_deref(), fed.as_deref()) {
        (Some(["send", txn]), _) | (_, Some(["v2", "send", txn])) => {
            allow(method, Method::PUT)?;
            Send(txn.to_string(), false)
        }
        (_, Some(["v1", "send", txn])) => {
            allow(method, Method::PUT)?;
            Send(txn.to_string(), true)
        }
        (_, Some(["v1", "event", id])) => {
            allow(method, Method::GET)?;
            EventV1(id.to_string())
        }
        (_, Some(["v1", "backfill", room])) => {
            allow(method, Method::GET)?;
            BackfillV1(room.to_string())
        }
        (_, Some(["v1", "get_missing_events", room])) => {
            allow(method, Method::POST)?;
            MissingEvents(room.to_string())
        }
        (_, Some(["v1", "event_auth", room, event])) => {
            allow(method, Method::GET)?;
            EventAuth(room.to_string(), event.to_string())
        }
        (_, Some(["v2", which @ ("send_join" | "send_leave"), room, event]))
        | (_, Some(["v1", which @ "send_knock", room, event])) => {
            allow(method, Method::PUT)?;
            SendPdu(m(which), room.to_string(), event.to_string())
        }
        (_, Some(["v2", "invite", _room, event])) => {
            allow(method, Method::PUT)?;
            Invite(event.to_string())
        }
        (Some(["event", id]), _) | (_, Some(["v2", "event", id])) => {
            allow(method, Method::GET)?;
            Event(id.to_string())
        }
        (_, Some(["v1", "state", room])) => {
            allow(method, Method::GET)?;
            State(room.to_string(), false)
        }
        (_, Some(["v1", "state_ids", room])) => {
            allow(method, Method::GET)?;
            State(room.to_string(), true)
        }
        (Some(["backfill", room]), _) | (_, Some(["v2", "backfill", room])) => {
            allow(method, Method::GET)?;
            Backfill(room.to_string())
        }
        (Some(["invite", txn]), _) | (_, Some(["v3", "invite", txn])) => {
            allow(method, Method::POST)?;
            Invite(txn.to_string())
        }
        (_, Some(["v1", which @ ("make_join" | "make_leave" | "make_knock"), room, user])) => {
            allow(method, Method::GET)?;
            Make(m(which), room.to_string(), user.to_string())
        }
        (Some([which @ ("send_join" | "send_leave" | "send_knock"), txn]), _)
        | (_, Some(["v3", which @ ("send_join" | "send_leave" | "send_knock"), txn])) => {
            allow(method, Method::POST)?;
            SendMembership(m(which), txn.to_string())
        }
        (_, Some(["v1", "user", "keys", "query"])) => {
            allow(method, Method::POST)?;
            UserKeysQuery
        }
        (Some(["user", "keys", "claim"]), _) | (_, Some(["v1", "user", "keys", "claim"])) => {
            allow(method, Method::POST)?;
            UserKeysClaim
        }
        (_, Some(["v1", "user", "devices", user])) => {
            allow(method, Method::GET)?;
            UserDevices(user.to_string())
        }
        (_, Some(["v1", "user", user, "device", device])) => {
            allow(method, Method::GET)?;
            UserDevice(user.to_string(), device.to_string())
        }
        (_, Some(["v1", "publicRooms"])) => {
            if *method != Method::POST {
                allow(method, Method::GET)?;
            }
            PublicRooms(*method == Method::POST)
        }
        (_, Some(["v1", "hierarchy", room])) => {
            allow(method, Method::GET)?;
            Hierarchy(room.to_string())
        }
        (_, Some(["v1", "query", "directory"])) => {
            allow(method, Method::GET)?;
            QueryDirectory
        }
        (_, Some(["v1", "query", "profile"])) => {
            allow(method, Method::GET)?;
            QueryProfile
        }
        (_, Some(["v1", "media", which @ ("download" | "thumbnail"), id])) => {
            allow(method, Method::GET)?;
            Media(id.to_string(), *which == "thumbnail")
        }
        // The draft prints this path with PUT, its companion with POST
        // (OQ-26): all three are taken.
        (Some(["user", user, "device", device]), _) => {
            if ![Method::GET, Method::PUT, Method::POST].contains(method) {
                allow(method, Method::GET)?;
            }
            UserDevice(user.to_string(), device.to_string())
        }
        _ => return Ok(None),
    };
    Ok(Some(ep))
}

impl FedHandler {
    async fn route(&self, req: Request<Incoming>) -> Result<Response<Body>, Failure> {
        let budget = BodyBudget::of(&req);
        let (parts, body) = req.into_parts();
        let segs = path_segments(parts.uri.path()).ok_or(Failure::Unrecognized)?;
        let segs_ref: Vec<&str> = segs.iter().map(String::as_str).collect();
        let node = &self.node;
        // Unauthenticated endpoints (E1-E4, version): `Authorization` is
        // ignored there (item 157).
        match segs_ref.as_slice() {
            [".well-known", "matrix", "server"] => {
                allow(&parts.method, Method::GET)?;
                return handlers::keys::well_known(node);
            }
            ["_matrix", "key", "v2", "server"] | ["_matrix", "key", "v2", "server", _] => {
                allow(&parts.method, Method::GET)?;
                return Ok(handlers::keys::server_keys(node));
            }
            ["_matrix", "key", "v2", "query", server] => {
                allow(&parts.method, Method::GET)?;
                let q = query_pairs(parts.uri.query());
                return handlers::keys::query_one(node, server, &q).await;
            }
            ["_matrix", "key", "v2", "query"] => {
                allow(&parts.method, Method::POST)?;
                let (bytes, _held) = read_body(body, MAX_BODY, &budget).await?;
                return handlers::keys::query_batch(node, json_object(&bytes, NumberPolicy::Ieee754, false)?).await;
            }
            ["_matrix", "federation", "v1", "version"] => {
                allow(&parts.method, Method::GET)?;
                return Ok(handlers::keys::version());
            }
            ["_lmx", "internal", "v1", "rooms", room, "relay"] => {
                allow(&parts.method, Method::POST)?;
                let room =
                    crate::core::ids::RoomId::parse(room).map_err(|_| Failure::InvalidParam("Bad room id".into()))?;
                return self.relayed(&parts, body, budget, &room).await;
            }
            _ => {}
        }
        let Some(ep) = endpoint(&parts.method, &segs)? else {
            // Every other path: unknown endpoint (item 127).
            return Err(Failure::Unrecognized);
        };
        // The signature covers the body, but the header's shape, origin,
        // destination and key are checked first, so a stranger without a
        // key of a real server cannot make us read (or hold) a large body.
        let claimed = claimed_origin(node, &parts).await?;
        let limit = if matches!(ep, Endpoint::Send(..)) { MAX_SEND_BODY } else { MAX_BODY };
        let (bytes, _held) = read_body(body, limit, &budget).await?;
        let has_body = !bytes.iter().all(u8::is_ascii_whitespace);
        let empty_ok = !matches!(parts.method, Method::PUT | Method::POST);
        let body = if bytes.len() > PARSE_ELSEWHERE {
            // Parsing megabytes takes a while: not on a runtime worker.
            let bytes = bytes.clone();
            tokio::task::spawn_blocking(move || json_object(&bytes, NumberPolicy::Ieee754, empty_ok))
                .await
                .map_err(Failure::failed)??
        } else {
            json_object(&bytes, NumberPolicy::Ieee754, empty_ok)?
        };
        let body_value = has_body.then(|| Value::Object(body.clone()));
        let origin = claimed.verify(node, &parts, body_value.as_ref())?;
        crate::http::observe::Caller::record(&parts.extensions, origin.as_str());
        let req = Req { node: node.clone(), origin, query: query_pairs(parts.uri.query()), body };
        let answer = match ep {
            Endpoint::Media(id, thumbnail) => return handlers::media::serve(req, &id, thumbnail).await,
            Endpoint::Send(txn, v1) => handlers::send::send(req, &txn, v1).await,
            Endpoint::Event(id) => handlers::events::event(req, &id).await,
            Endpoint::EventV1(id) => handlers::dag::event(req, &id).await,
            Endpoint::BackfillV1(room) => handlers::dag::backfill(req, &room).await,
            Endpoint::MissingEvents(room) => handlers::dag::get_missing_events(req, &room).await,
            Endpoint::EventAuth(room, event) => handlers::dag::event_auth(req, &room, &event).await,
            Endpoint::SendPdu(kind, room, event) => handlers::membership::send_pdu(req, kind, &room, &event).await,
            Endpoint::State(room, ids_only) => handlers::events::state(req, &room, ids_only).await,
            Endpoint::Backfill(room) => handlers::events::backfill(req, &room).await,
            Endpoint::Invite(txn) => handlers::membership::invite(req, &txn).await,
            Endpoint::Make(kind, room, user) => handlers::membership::make(req, kind, &room, &user).await,
            Endpoint::SendMembership(kind, txn) => handlers::membership::send(req, kind, &txn).await,
            Endpoint::UserKeysQuery => handlers::e2ee::keys_query(req),
            Endpoint::UserKeysClaim => handlers::e2ee::keys_claim(req).await,
            Endpoint::UserDevices(user) => handlers::e2ee::user_devices(req, &user),
            Endpoint::UserDevice(user, device) => handlers::e2ee::user_device(req, &user, &device),
            Endpoint::PublicRooms(post) => handlers::directory::public_rooms(req, post),
            Endpoint::QueryDirectory => handlers::directory::query_directory(req),
            Endpoint::QueryProfile => handlers::directory::query_profile(req),
            Endpoint::Hierarchy(room) => handlers::hierarchy::hierarchy(req, &room),
        }?;
        Ok(crate::http::json_response(StatusCode::OK, &answer))
    }
}

impl FedHandler {
    /// A room command from another process of this server
    /// (`federation::relay`): only this server's own key may sign it.
    async fn relayed(
        &self,
        parts: &Parts,
        body: Incoming,
        budget: BodyBudget,
        room: &crate::core::ids::RoomId,
    ) -> Result<Response<Body>, Failure> {
        let node = &self.node;
        let claimed = claimed_origin(node, parts).await?;
        if claimed.origin != node.name {
            return Err(Failure::forbidden("Only this server's own processes relay room commands"));
        }
        let (bytes, _held) = read_body(body, MAX_SEND_BODY, &budget).await?;
        let command = json_object(&bytes, NumberPolicy::Ieee754, false)?;
        claimed.verify(node, parts, Some(&Value::Object(command.clone())))?;
        let answer = super::relay::serve(node, room, &command).await?;
        Ok(crate::http::json_response(StatusCode::OK, &answer))
    }
}

fn refuse(why: &str) -> Failure {
    Failure::BadSignature(why.to_owned())
}

/// `X-Matrix` headers whose shape, origin, destination and key passed;
/// their signatures are checked once the body is read.
pub struct Claimed {
    origin: ServerName,
    headers: Vec<(xmatrix::XMatrix, PublicKey)>,
}

/// The first half of request authentication (items 151-157): everything
/// but the signature over the body.
async fn claimed_origin(node: &Arc<Node>, parts: &Parts) -> Result<Claimed, Failure> {
    let headers: Vec<xmatrix::XMatrix> = parts
        .headers
        .get_all(http::header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(xmatrix::parse_header)
        .collect();
    let first = headers.first().ok_or_else(|| refuse("no X-Matrix authorization"))?;
    let origin = ServerName::parse(&first.origin).map_err(|_| refuse("bad origin"))?;
    if headers.len() > MAX_AUTH_HEADERS {
        return Err(refuse("too many X-Matrix headers"));
    }
    let mut keyed = Vec::with_capacity(headers.len());
    for h in headers {
        if h.origin != origin.as_str() {
            return Err(refuse("headers name different origins"));
        }
        if h.destination.as_deref().is_some_and(|d| d != node.name.as_str()) {
            return Err(refuse("destination is not this server"));
        }
        let key = node.keyring.request_key(&origin, &h.key, now_ms()).await.map_err(|e| refuse(&e.to_string()))?;
        keyed.push((h, key));
    }
    Ok(Claimed { origin, headers: keyed })
}

impl Claimed {
    /// The second half: every signature verifies over the request as
    /// received. A success also tells the delivery worker for that server
    /// that it is back (backoff reset).
    fn verify(self, node: &Arc<Node>, parts: &Parts, body: Option<&Value>) -> Result<ServerName, Failure> {
        // The request target exactly as sent: path and query, no re-encoding.
        let uri = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        for (h, key) in &self.headers {
            if !xmatrix::verify_request(h, key, parts.method.as_str(), uri, node.name.as_str(), body) {
                return Err(refuse("signature does not verify"));
            }
        }
        node.outbound.wake_now(node, &self.origin);
        Ok(self.origin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_transaction_in_flight_per_origin() {
        let t = InboundTxns::default();
        let guard = match t.begin("a.test", "1") {
            Begin::Started(g) => g,
            _ => panic!("first transaction starts"),
        };
        assert!(matches!(t.begin("a.test", "1"), Begin::Running(_)), "a retry waits for the running one");
        assert!(matches!(t.begin("a.test", "2"), Begin::Busy), "another one gets M_BAD_STATE");
        assert!(matches!(t.begin("b.test", "2"), Begin::Started(_)), "other origins are independent");
        drop(guard);
        assert!(matches!(t.begin("a.test", "2"), Begin::Started(_)));
    }
}
