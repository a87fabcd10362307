//! Other servers as the client API reaches them: joins, leaves and knocks
//! through a room's hub, history fetched from it, events of a mixed room
//! offered to it, and EDUs. The client API holds this and not the
//! federation layer's `Node`, so what it can ask of the network is exactly
//! what is listed here.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::Value;

use super::Node;
use crate::core::event::Pdu;
use crate::core::ids::{EventId, RoomId, ServerName, UserId};
use crate::core::json::Object;
use crate::room::{RoomError, RoomHandle, RoomView};
use crate::store::StoreError;

#[derive(Clone)]
pub struct Remote(Arc<Node>);

impl Remote {
    pub fn new(node: Arc<Node>) -> Self {
        Remote(node)
    }

    /// Candidate hubs of `room` in order (OQ-27): the servers named, then
    /// the room id's domain.
    pub fn candidates(room: &RoomId, named: &[ServerName]) -> Vec<ServerName> {
        super::join::candidates(room, named)
    }

    /// Joins `user` to a room hubbed elsewhere (asking `servers` in turn)
    /// and starts following it.
    pub async fn join(
        &self,
        room: &RoomId,
        user: &UserId,
        servers: &[ServerName],
        content: &Object,
    ) -> Result<EventId, RoomError> {
        super::join::join_remote(&self.0, room, user, servers, content).await
    }

    /// Leaves (or rejects an invite to) a room we do not take part in.
    pub async fn leave(&self, room: &RoomId, user: &UserId, servers: &[ServerName]) -> Result<(), RoomError> {
        super::join::leave_remote(&self.0, room, user, servers).await
    }

    /// Knocks; answers the hub, the room's stripped state and its version.
    pub async fn knock(
        &self,
        room: &RoomId,
        user: &UserId,
        servers: &[ServerName],
        content: &Object,
    ) -> Result<(ServerName, Value, &'static str), RoomError> {
        super::join::knock_remote(&self.0, room, user, servers, content).await
    }

    /// A page of the hub's history from `from` back (checked events).
    pub async fn backfill(&self, room: &RoomView, from: &EventId, limit: usize) -> Result<Vec<Pdu>, String> {
        super::fetch::backfill(&self.0, room, from, limit).await
    }

    /// A mixed room's events built here, offered to the room like any
    /// server's.
    pub async fn offer_own(&self, handle: &RoomHandle, pdus: Vec<Pdu>) -> Result<super::dag::Outcome, RoomError> {
        super::dag::offer(&self.0, handle, &self.0.name, pdus).await
    }

    /// Asks `server` about its users' keys: `what` is `query` or `claim`
    /// (`/user/keys/{what}`), answered within `timeout` or not at all.
    pub async fn user_keys(
        &self,
        server: &ServerName,
        what: &'static str,
        body: &Value,
        timeout: std::time::Duration,
    ) -> Result<Value, String> {
        let path = format!("/_matrix/federation/v1/user/keys/{what}");
        let lm = super::fetch::lm_peer(&self.0, server).await;
        let call = self.0.fed.request(server, http::Method::POST, &path, Some(body), lm);
        let resp = tokio::time::timeout(timeout, call).await.map_err(|_| "timed out".to_owned())?;
        resp.and_then(|r| r.json(server.as_str())).map_err(|e| e.to_string())
    }

    /// E17: one device object of `user` from their server, within `timeout`.
    pub async fn device_object(
        &self,
        user: &UserId,
        device: &str,
        timeout: std::time::Duration,
    ) -> Result<Value, String> {
        use crate::http::encode_segment;
        let server = user.server_name();
        let path =
            format!("/_matrix/federation/v1/user/{}/device/{}", encode_segment(user.as_str()), encode_segment(device));
        let lm = super::fetch::lm_peer(&self.0, &server).await;
        let call = self.0.fed.request(&server, http::Method::GET, &path, None, lm);
        let resp = tokio::time::timeout(timeout, call).await.map_err(|_| "timed out".to_owned())?;
        resp.and_then(|r| r.json(server.as_str())).map_err(|e| e.to_string())
    }

    /// Another server's public room directory.
    pub async fn public_rooms(&self, server: &ServerName, body: &Value) -> Result<Value, crate::wire::Failure> {
        super::queries::public_rooms(&self.0, server, body).await
    }

    /// The room another server's alias names, and servers to join through.
    pub async fn resolve_alias(&self, alias: &str) -> Result<(RoomId, Vec<ServerName>), crate::wire::Failure> {
        super::queries::directory(&self.0, alias).await
    }

    /// A web page for a URL preview, within the preview address policy.
    pub async fn fetch_page(&self, url: &str, limit: usize) -> Result<super::web::Page, crate::wire::Failure> {
        let policy = super::policy::AddressPolicy::new(self.0.config.media.preview_allow_ip_ranges.clone());
        super::web::fetch(url, &policy, limit).await
    }

    /// A space held elsewhere, asked of `via`.
    pub async fn hierarchy(
        &self,
        via: &[ServerName],
        room: &RoomId,
        suggested_only: bool,
    ) -> Result<Value, crate::wire::Failure> {
        super::queries::hierarchy(&self.0, via, room, suggested_only).await
    }

    /// Another server's user's profile.
    pub async fn profile(&self, user: &UserId, field: Option<&str>) -> Result<Value, crate::wire::Failure> {
        super::queries::profile(&self.0, user, field).await
    }

    /// Another server's file (or a thumbnail of it), at most `limit` bytes.
    pub async fn fetch_media(
        &self,
        server: &ServerName,
        id: &str,
        thumbnail: Option<(u32, u32, crate::media::content::Method)>,
        limit: u64,
    ) -> Result<super::media::Fetched, crate::wire::Failure> {
        super::media::fetch(&self.0, server, id, thumbnail, limit).await
    }

    /// Whether `server` is known to speak LM, from its cached keys: a send
    /// is not held up, nor made to fetch keys from every server it names.
    pub fn known_lm_peer(&self, server: &ServerName) -> bool {
        self.0.keyring.cached_linearized(server) == Some(true)
    }

    /// Servers sharing a room with a local user that are not known to be
    /// DAG servers: where LM's device objects go.
    pub fn sharing_lm_servers(&self, user: &UserId) -> BTreeSet<ServerName> {
        let mut out = self.sharing_servers(user);
        out.retain(|s| self.0.keyring.cached_linearized(s) != Some(false));
        out
    }

    /// Queues `edu` for each of `dests` and wakes their delivery.
    pub fn send_edu(&self, dests: &BTreeSet<ServerName>, edu: &Value) -> Result<(), StoreError> {
        super::edu::send_edu(&self.0, dests, edu)
    }

    /// Where a room's EDUs go from here.
    pub fn room_destinations(&self, view: &RoomView, except: Option<&ServerName>) -> BTreeSet<ServerName> {
        super::edu::room_destinations(&self.0, view, except)
    }

    /// Judges what `user` may read of `view`'s history (its history
    /// visibility and the user's memberships at each event).
    pub async fn reader<'a>(
        &'a self,
        view: &'a RoomView,
        user: &'a UserId,
    ) -> Result<super::handlers::visibility::Viewer<'a>, crate::wire::Failure> {
        use super::handlers::visibility::{Audience, Viewer};
        Viewer::of(&self.0, view, Audience::User(user)).await
    }

    /// Servers sharing a room with a local user: where presence and device
    /// list changes go.
    pub fn sharing_servers(&self, user: &UserId) -> BTreeSet<ServerName> {
        super::edu::sharing_servers(&self.0, user)
    }

    /// The writes queueing `edu` for `dests` at `pos`, committed by the
    /// caller with its own; `wake` them after.
    pub fn queue_edu(&self, dests: &BTreeSet<ServerName>, pos: u64, edu: &Value, b: &mut crate::store::Batch) {
        super::edu::queue_edu(dests, pos, edu, b)
    }

    pub fn wake(&self, dests: &BTreeSet<ServerName>) {
        for d in dests {
            self.0.outbound.wake(&self.0, d);
        }
    }

    /// Fetches a remote user's device list now if none is cached (a local
    /// user asked for their keys, so they will be tracked).
    pub fn track_devices(&self, user: &UserId) {
        super::device_lists::resync(&self.0, user.clone())
    }

    /// Each destination a worker delivers to, with how it is going.
    pub fn deliveries(&self) -> Vec<(ServerName, super::DeliveryStatus)> {
        self.0.outbound.statuses()
    }

    /// Destinations with queued work, whether or not a worker runs.
    pub fn destinations_with_work(&self) -> Result<Vec<ServerName>, StoreError> {
        self.0.store.destinations_with_work()
    }

    /// What `dest` has not been sent yet.
    pub fn backlog(&self, dest: &ServerName) -> Result<super::Backlog, StoreError> {
        super::backlog::backlog(&self.0, dest)
    }

    /// Delivers to `dest` now: cuts a backoff short, or starts a worker.
    pub fn retry_now(&self, dest: &ServerName) {
        if !self.0.outbound.retry_now(dest) {
            self.0.outbound.wake(&self.0, dest);
        }
    }

    /// Forgets resolved well-known answers and other servers' keys held
    /// in memory: `(resolver entries, key entries)`.
    pub fn forget_caches(&self) -> (usize, usize) {
        (self.0.fed.forget_resolved(), self.0.keyring.forget_remembered())
    }
}
