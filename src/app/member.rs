//! A member process (`storage.postgres.member`): it never takes the lease,
//! and from its start writes rooms of its own beside the serving process.
//! It serves itself what writes or reads one room (creating a room, sends,
//! state, redactions, the room's reads): a room is written by the process
//! that created it, and a command for a room another process owns is
//! relayed to that process (`federation/relay.rs`), as are the room
//! commands relayed to it. Everything else is per user or per server
//! (accounts, devices and keys, sync, typing, presence, push, media,
//! federation transactions...) and goes on to the serving process
//! (`forward.rs`), which holds that state for the whole server; so two
//! processes never race on it.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http::{Method, Request, Response};
use hyper::body::Incoming;
use tokio::sync::watch;

use super::forward::{unavailable, Forwarder, Hop};
use crate::http::{Body, Handler};
use crate::store::{BoxFuture, LeaseHolder, Store};

/// Whether a member serves `method path` itself (on its client listener,
/// or its federation listener when `federation`).
pub fn serves_here(method: &Method, path: &str, federation: bool) -> bool {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if matches!(segs.as_slice(), ["health"] | ["ready"]) {
        return true;
    }
    if federation {
        return matches!(segs.as_slice(), ["_lmx", "internal", "v1", "rooms", _, "relay"]);
    }
    let rest = match segs.as_slice() {
        ["_matrix", "client", "v3" | "r0", rest @ ..] => rest,
        _ => return false,
    };
    matches!(
        (method, rest),
        (&Method::POST, ["createRoom"])
            | (&Method::PUT, ["rooms", _, "send" | "state" | "redact", ..])
            | (
                &Method::GET,
                ["rooms", _, "messages" | "members" | "joined_members" | "state" | "event" | "context", ..]
            )
    )
}

/// Where the serving process said it serves.
#[derive(Default, PartialEq)]
struct Upstream {
    client: Option<String>,
    federation: Option<String>,
}

/// A member's listeners: its own handler for what it serves, the serving
/// process for the rest.
pub struct MemberHandler {
    local: Arc<dyn Handler>,
    federation: bool,
    following: Arc<Following>,
    forwarder: Forwarder,
    retry_after_secs: u64,
}

/// The serving process as the member last found it.
pub struct Following {
    upstream: RwLock<Upstream>,
    /// Bumped when the serving process moves: requests to the old one end.
    moved: watch::Sender<u64>,
}

impl Following {
    pub fn new() -> Arc<Following> {
        Arc::new(Following { upstream: RwLock::default(), moved: watch::channel(0).0 })
    }

    fn follow(&self, holder: Option<&LeaseHolder>) {
        let now = Upstream {
            client: holder.and_then(|h| h.client_addr.clone()),
            federation: holder.and_then(|h| h.federation_addr.clone()),
        };
        let mut up = self.upstream.write().expect("poisoned");
        if *up != now {
            *up = now;
            self.moved.send_modify(|n| *n += 1);
        }
    }

    /// Looks for the serving process once a second until `stop`.
    pub async fn keep_following(self: Arc<Self>, store: Arc<dyn Store>, mut stop: watch::Receiver<bool>) {
        loop {
            let reader = store.clone();
            match tokio::task::spawn_blocking(move || reader.lease_holder()).await {
                Ok(Ok(holder)) => self.follow(holder.as_ref()),
                Ok(Err(e)) => tracing::warn!(error = %e, "member: could not read who serves"),
                Err(_) => {}
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => return,
            }
        }
    }
}

impl MemberHandler {
    pub fn new(
        local: Arc<dyn Handler>,
        federation: Option<Hop>,
        following: Arc<Following>,
        in_flight: Arc<super::forward::InFlight>,
        retry_after_secs: u64,
    ) -> Arc<MemberHandler> {
        let is_federation = federation.is_some();
        let forwarder = Forwarder::new(federation.unwrap_or(Hop::Plain), in_flight);
        Arc::new(MemberHandler { local, federation: is_federation, following, forwarder, retry_after_secs })
    }
}

impl Handler for MemberHandler {
    fn handle(self: Arc<Self>, req: Request<Incoming>, remote: SocketAddr) -> BoxFuture<'static, Response<Body>> {
        if serves_here(req.method(), req.uri().path(), self.federation) {
            return self.local.clone().handle(req, remote);
        }
        let moved = self.following.moved.subscribe();
        let to = {
            let up = self.following.upstream.read().expect("poisoned");
            if self.federation {
                up.federation.clone()
            } else {
                up.client.clone()
            }
        };
        match to {
            Some(to) => Box::pin(async move { self.forwarder.forward(req, remote, &to, moved).await }),
            None => {
                let resp = unavailable("no process serves this server now; try again", self.retry_after_secs);
                Box::pin(async move { resp })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_serves_what_one_room_is_about_and_passes_the_rest_on() {
        let here = |m: Method, p: &str| serves_here(&m, p, false);
        assert!(here(Method::POST, "/_matrix/client/v3/createRoom"));
        assert!(here(Method::PUT, "/_matrix/client/v3/rooms/!r:hub.test/send/m.room.message/t1"));
        assert!(here(Method::PUT, "/_matrix/client/r0/rooms/!r:hub.test/state/m.room.topic/"));
        assert!(here(Method::PUT, "/_matrix/client/v3/rooms/!r:hub.test/redact/$e/t2"));
        assert!(here(Method::GET, "/_matrix/client/v3/rooms/!r:hub.test/messages"));
        assert!(here(Method::GET, "/ready"));
        // Per user or per server: the serving process holds that state.
        for (m, p) in [
            (Method::GET, "/_matrix/client/v3/sync"),
            (Method::POST, "/_matrix/client/v3/register"),
            (Method::POST, "/_matrix/client/v3/login"),
            (Method::PUT, "/_matrix/client/v3/rooms/!r:hub.test/typing/@a:hub.test"),
            (Method::POST, "/_matrix/client/v3/rooms/!r:hub.test/receipt/m.read/$e"),
            (Method::POST, "/_matrix/client/v3/join/!r:hub.test"),
            (Method::POST, "/_matrix/client/v3/keys/claim"),
            (Method::GET, "/_matrix/client/versions"),
            (Method::POST, "/_matrix/media/v3/upload"),
            (Method::GET, "/_matrix/client/v3/rooms/!r:hub.test/send/x/y"),
        ] {
            assert!(!here(m.clone(), p), "{m} {p}");
        }
        let fed = |p: &str| serves_here(&Method::POST, p, true);
        assert!(fed("/_lmx/internal/v1/rooms/!r:hub.test/relay"));
        assert!(!fed("/_matrix/federation/v1/send/t1"));
        assert!(!fed("/_matrix/key/v2/server"));
    }
}
