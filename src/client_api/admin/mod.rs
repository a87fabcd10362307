//! The admin API. Synapse's admin paths that tools and scripts use (users,
//! registration tokens, rooms, media, federation destinations, event
//! reports, server notices), in Synapse's shapes; lmx's own under
//! `/_lmx/admin/v1` (server facts, each destination's backlog and retry,
//! the linked list around an event, cache flushes, the log filter); and the
//! status page. All of it on the admin listener, opened by the admin token
//! or an admin user's access token; the Synapse paths also on the client
//! listener for admin users, where Synapse serves them.

mod backup;
mod lmx;
mod media;
mod notices;
mod rooms;
mod servers;
mod users;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::Value;

use super::{token_of, Call};
use crate::core::ids::{ServerName, UserId};
use crate::core::json::{NumberPolicy, Object};
use crate::http::{json_object, path_segments, query_get, query_pairs, read_body, Body, BodyBudget, Handler, MAX_BODY};
use crate::store::{BoxFuture, TokenHash};
use crate::wire::{self, Failure, Surface};

/// An answer with its status (Synapse answers some creations `201`).
pub type Reply = (StatusCode, Value);

fn ok(v: Value) -> Result<Reply, Failure> {
    Ok((StatusCode::OK, v))
}

/// Who opened the admin API: an admin user, or the holder of the admin
/// token (`None`).
pub type Acting = Option<UserId>;

/// The admin listener's handler.
pub struct AdminHandler {
    client: Arc<super::ClientHandler>,
    started: Instant,
}

impl AdminHandler {
    pub fn new(client: Arc<super::ClientHandler>) -> Self {
        AdminHandler { client, started: Instant::now() }
    }
}

/// Byte-wise equality in time independent of where the inputs differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Handler for AdminHandler {
    fn handle(self: Arc<Self>, req: Request<Incoming>, _remote: SocketAddr) -> BoxFuture<'static, Response<Body>> {
        Box::pin(async move {
            let html = req.method() == Method::GET && matches!(req.uri().path(), "/" | "/status");
            match self.route(req).await {
                Ok((status, Answer::Json(v))) => {
                    let mut resp = crate::http::ok_json(&v);
                    *resp.status_mut() = status;
                    resp
                }
                Ok((_, Answer::Backup(body, estimate))) => {
                    let mut resp = Response::new(body);
                    let h = resp.headers_mut();
                    h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/octet-stream"));
                    if let Ok(v) = http::HeaderValue::from_str(&estimate.to_string()) {
                        h.insert("x-lmx-backup-estimate", v);
                    }
                    resp
                }
                Ok((_, Answer::Html(page))) => {
                    let mut resp = Response::new(crate::http::full(page));
                    let h = resp.headers_mut();
                    h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/html; charset=utf-8"));
                    h.insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
                    h.insert(
                        "content-security-policy",
                        http::HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
                    );
                    resp
                }
                Err(e) => {
                    e.log_internal();
                    let mut resp = wire::answer(Surface::Client, &e).into_response();
                    if html && matches!(e, Failure::MissingToken | Failure::UnknownToken) {
                        resp.headers_mut()
                            .insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
                    }
                    resp
                }
            }
        })
    }
}

enum Answer {
    Json(Value),
    Html(String),
    /// A backup: its body and size estimate.
    Backup(Body, u64),
}

impl AdminHandler {
    /// The caller, if the token opens the admin API.
    fn authorize(&self, token: Option<&str>) -> Result<Acting, Failure> {
        let token = token.filter(|t| !t.is_empty()).ok_or(Failure::MissingToken)?;
        let server = &self.client.server;
        if let Some(admin) = &server.config.admin.token {
            if same_secret(admin.as_bytes(), token.as_bytes()) {
                return Ok(None);
            }
        }
        let rec = server.store.access_token(&TokenHash::of(token))?.ok_or(Failure::UnknownToken)?;
        if rec.expires_ts != 0 && rec.expires_ts <= crate::sys::now_ms() {
            return Err(Failure::ExpiredToken);
        }
        let user = rec.user()?;
        if !server.store.user(&user)?.is_some_and(|u| u.admin) {
            return Err(Failure::forbidden("You are not a server admin"));
        }
        Ok(Some(user))
    }

    async fn route(&self, req: Request<Incoming>) -> Result<(StatusCode, Answer), Failure> {
        let segs = path_segments(req.uri().path()).ok_or(Failure::Unrecognized)?;
        if let Some(v) = server_version(req.method(), &segs) {
            return Ok((StatusCode::OK, Answer::Json(v)));
        }
        let query = query_pairs(req.uri().query());
        let acting = self.authorize(token_of(&req, &query).as_deref())?;
        if let Some(user) = &acting {
            crate::http::observe::Caller::record(req.extensions(), user.as_str());
        } else {
            crate::http::observe::Caller::record(req.extensions(), "admin-token");
        }
        let method = req.method().clone();
        let budget = BodyBudget::of(&req);
        let (bytes, _held) = read_body(req.into_body(), MAX_BODY, &budget).await?;
        let call = self.client.call(query, json_object(&bytes, NumberPolicy::Ieee754, true), acting.clone());
        let s: Vec<&str> = segs.iter().map(String::as_str).collect();
        let reply = match s.as_slice() {
            // The whole store and the signing key: the operator's token
            // only, not an admin user's (a token a browser held).
            ["_lmx", "admin", "v1", "backup"] if acting.is_some() => {
                return Err(Failure::forbidden("Backups need the admin token"))
            }
            ["_lmx", "admin", "v1", "backup"] if method == Method::GET => {
                let (body, estimate) = backup::stream(self.client.server.clone());
                return Ok((StatusCode::OK, Answer::Backup(body, estimate)));
            }
            [] | ["status"] if method == Method::GET => {
                let facts = lmx::facts(&call, self.started)?;
                return Ok((StatusCode::OK, Answer::Html(crate::admin::status::render(&facts))));
            }
            ["_synapse", "admin", rest @ ..] => synapse(&method, rest, call, &acting).await?,
            ["_lmx", "admin", "v1", rest @ ..] => lmx::dispatch(&method, rest, call, self.started).await?,
            _ => return Err(Failure::Unrecognized),
        };
        Ok((reply.0, Answer::Json(reply.1)))
    }
}

/// `GET /_synapse/admin/v1/server_version`, which Synapse answers without
/// a token (tools ask it first).
pub fn server_version(method: &Method, segs: &[String]) -> Option<Value> {
    let asked =
        method == Method::GET && segs.iter().map(String::as_str).eq(["_synapse", "admin", "v1", "server_version"]);
    asked.then(|| serde_json::json!({"server_version": env!("CARGO_PKG_VERSION")}))
}

/// Synapse's admin paths (after `/_synapse/admin/`), for a caller already
/// known to be an admin.
pub async fn synapse(method: &Method, rest: &[&str], call: Call, acting: &Acting) -> Result<Reply, Failure> {
    use Method as M;
    match (rest, method) {
        (["v2", "users"], &M::GET) => users::list(&call),
        (["v2", "users", user], &M::GET) => users::get(&call, user),
        (["v2", "users", user], &M::PUT) => users::put(&call, user, acting).await,
        (["v1", "deactivate", user], &M::POST) => users::deactivate(&call, user).await,
        (["v1", "reset_password", user], &M::POST) => users::reset_password(&call, user).await,
        (["v1", "users", user, "admin"], &M::GET) => users::admin_flag(&call, user),
        (["v1", "users", user, "admin"], &M::PUT) => users::set_admin_flag(&call, user, acting),
        (["v2", "users", user, "devices"], &M::GET) => users::devices(&call, user),
        (["v2", "users", user, "devices", device], &M::GET) => users::device(&call, user, device),
        (["v2", "users", user, "devices", device], &M::DELETE) => users::delete_device(&call, user, device).await,
        (["v1", "whois", user], &M::GET) => users::whois(&call, user),
        (["v1", "users", user, "media"], &M::GET) => media::user_media(&call, user),
        (["v1", "media", "quarantine", server, id], &M::POST) => media::quarantine(&call, server, id, acting, true),
        (["v1", "media", "unquarantine", server, id], &M::POST) => media::quarantine(&call, server, id, acting, false),
        (["v1", "media", server, id], &M::DELETE) => media::delete(&call, server, id).await,
        (["v1", "rooms"], &M::GET) => rooms::list(&call),
        (["v1", "rooms", room], &M::GET) => rooms::details(&call, room),
        (["v1", "rooms", room, "members"], &M::GET) => rooms::members(&call, room),
        (["v1", "rooms", room, "state"], &M::GET) => rooms::state(&call, room),
        (["v1", "federation", "destinations"], &M::GET) => servers::list(&call),
        (["v1", "federation", "destinations", dest], &M::GET) => servers::get(&call, dest),
        (["v1", "federation", "destinations", dest, "rooms"], &M::GET) => servers::rooms(&call, dest),
        (["v1", "federation", "destinations", dest, "reset_connection"], &M::POST) => {
            servers::reset_connection(&call, dest)
        }
        (["v1", "registration_tokens", rest @ ..], _) => ok(super::tokens::admin(call, method, rest).await?),
        (["v1", "event_reports"], &M::GET) => ok(super::reports::admin_list(call)?),
        (["v1", "event_reports", id], &M::GET) => ok(super::reports::admin_get(&call, id)?),
        (["v1", "event_reports", id], &M::DELETE) => ok(super::reports::admin_delete(&call, id).await?),
        (["v1", "user", user, "media", "quarantine"], &M::POST) => media::quarantine_user(&call, user, acting),
        (["v1", "room", room, "media", "quarantine"], &M::POST) => media::quarantine_room(&call, room, acting),
        (["v1", "send_server_notice", txn], &M::PUT) => notices::send_once(&call, txn).await,
        (["v1", "send_server_notice"], &M::POST) => notices::send(&call).await,
        _ => Err(Failure::Unrecognized),
    }
}

/// `from` and `limit` of a list request (Synapse's defaults: 0 and 100).
fn paging(call: &Call) -> Result<(usize, usize), Failure> {
    let number = |key: &str, default: usize| -> Result<usize, Failure> {
        match query_get(&call.query, key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| Failure::invalid_param(format!("{key} must be a non-negative integer"))),
        }
    };
    Ok((number("from", 0)?, number("limit", 100)?.min(10_000)))
}

/// Where the next page starts, when there is one after `[from, from+limit)`.
fn next_from(from: usize, limit: usize, total: usize) -> Option<usize> {
    Some(from.saturating_add(limit)).filter(|n| *n < total)
}

/// A boolean query parameter (`true` or `false`).
fn flag(call: &Call, key: &str) -> Result<Option<bool>, Failure> {
    match query_get(&call.query, key) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => Err(Failure::invalid_param(format!("{key} must be true or false"))),
    }
}

/// `dir`: `f` (default) or `b`.
fn backwards(call: &Call) -> Result<bool, Failure> {
    match query_get(&call.query, "dir") {
        None | Some("f") => Ok(false),
        Some("b") => Ok(true),
        Some(_) => Err(Failure::invalid_param("dir must be f or b")),
    }
}

/// A user of this server named in a path.
fn local_user(call: &Call, user: &str) -> Result<UserId, Failure> {
    let user = UserId::parse(user).map_err(|_| Failure::invalid_param(format!("{user:?} is not a user id")))?;
    if user.server_name() != call.server.name {
        return Err(Failure::BadRequest("This endpoint can only be used with local users".into()));
    }
    Ok(user)
}

fn server_name(s: &str) -> Result<ServerName, Failure> {
    ServerName::parse(s).map_err(|_| Failure::invalid_param(format!("{s:?} is not a server name")))
}

/// The JSON object of a body.
fn body(call: &Call) -> Result<&Object, Failure> {
    call.body()
}
