//! The Matrix Client-Server API (README lists what is served). Every
//! endpoint but `versions`, `login` and `register` needs an access token.

mod account;
mod account_changes;
mod account_data;
mod admin;
mod backup;
mod cross_signing;
mod deps;
mod devices;
mod directory;
mod events;
pub mod filter;
mod hierarchy;
mod keys;
mod media;
mod membership;
mod messages;
mod mls;
mod newest;
pub mod passwords;
mod presence;
mod profile;
mod public_rooms;
mod pushers;
mod ratelimit;
pub(crate) mod relations;
mod reports;
mod rooms;
mod search;
mod sync;
mod tags;
mod timestamp;
mod tokens;
mod upgrade;
mod voip;

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Request, Response};
use hyper::body::Incoming;
use serde_json::Value;
use tracing::Instrument;

use crate::core::ids::UserId;
use crate::core::json::{NumberPolicy, Object};
use crate::http::{json_object, ok_json, path_segments, query_pairs, read_body, Body, BodyBudget, Handler, MAX_BODY};
use crate::store::{BoxFuture, TokenHash};
use crate::wire::{self, Failure, Surface};

pub use account::Accounts;
pub use admin::AdminHandler;
pub use deps::ClientDeps;
pub use ratelimit::RateLimits;

/// A request after routing: the caller (if authenticated) and its inputs.
#[derive(Clone)]
pub struct Call {
    pub server: Arc<ClientDeps>,
    pub query: Vec<(String, String)>,
    /// The JSON body, parsed only to be kept: a bad one is refused by the
    /// endpoint that reads it, so a path that does not exist answers
    /// `M_UNRECOGNIZED` whatever came with it.
    body: Result<Object, crate::http::BodyError>,
    pub user: Option<(UserId, String)>,
    pub token: Option<String>,
    pub accounts: Arc<Accounts>,
    pub sliding: Arc<sync::sliding::Connections>,
}

impl Call {
    /// The authenticated user and device.
    pub fn who(&self) -> Result<(&UserId, &str), Failure> {
        self.user.as_ref().map(|(u, d)| (u, d.as_str())).ok_or(Failure::MissingToken)
    }

    /// The request's JSON object (`{}` for an empty body).
    pub fn body(&self) -> Result<&Object, Failure> {
        self.body.as_ref().map_err(|e| Failure::from(e.clone()))
    }

    /// The same request made as `user` (the admin API acting on an
    /// account), with no device.
    pub(crate) fn as_user(&self, user: &UserId) -> Call {
        Call { user: Some((user.clone(), String::new())), token: None, ..self.clone() }
    }

    /// The same request made as `user` with another body.
    pub(crate) fn as_user_with(&self, user: &UserId, body: Object) -> Call {
        Call { body: Ok(body), ..self.as_user(user) }
    }
}

pub struct ClientHandler {
    server: Arc<ClientDeps>,
    accounts: Arc<Accounts>,
    sliding: Arc<sync::sliding::Connections>,
    limits: Arc<RateLimits>,
}

impl ClientHandler {
    /// `limits`: shared with whoever reloads the configuration.
    pub fn new(server: Arc<ClientDeps>, limits: Arc<RateLimits>) -> Self {
        let hashing_threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(2);
        ClientHandler {
            limits,
            accounts: Accounts::new(passwords::Passwords::new(hashing_threads)),
            sliding: Arc::default(),
            server,
        }
    }
}

impl Handler for ClientHandler {
    fn handle(self: Arc<Self>, req: Request<Incoming>, remote: SocketAddr) -> BoxFuture<'static, Response<Body>> {
        let span = tracing::debug_span!("client", method = %req.method(), path = %req.uri().path(), %remote);
        Box::pin(
            async move {
                let mut resp = match self.route(req, remote).await {
                    Ok(r) => r,
                    Err(e) => {
                        e.log_internal();
                        wire::answer(Surface::Client, &e).into_response()
                    }
                };
                // Browser clients call from other origins.
                let h = resp.headers_mut();
                h.insert("access-control-allow-origin", http::HeaderValue::from_static("*"));
                h.insert(
                    "access-control-allow-methods",
                    http::HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS"),
                );
                h.insert(
                    "access-control-allow-headers",
                    http::HeaderValue::from_static("X-Requested-With, Content-Type, Authorization"),
                );
                resp
            }
            .instrument(span),
        )
    }
}

fn token_of(req: &Request<Incoming>, query: &[(String, String)]) -> Option<String> {
    let header = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned());
    header.or_else(|| crate::http::query_get(query, "access_token").map(str::to_owned))
}

impl ClientHandler {
    /// A call made through the admin API, as `user` or as nobody.
    fn call(
        &self,
        query: Vec<(String, String)>,
        body: Result<Object, crate::http::BodyError>,
        user: Option<UserId>,
    ) -> Call {
        Call {
            server: self.server.clone(),
            query,
            body,
            user: user.map(|u| (u, String::new())),
            token: None,
            accounts: self.accounts.clone(),
            sliding: self.sliding.clone(),
        }
    }

    async fn route(&self, req: Request<Incoming>, remote: SocketAddr) -> Result<Response<Body>, Failure> {
        if req.method() == Method::OPTIONS {
            return Ok(ok_json(&serde_json::json!({})));
        }
        let segs = path_segments(req.uri().path()).ok_or(Failure::Unrecognized)?;
        let query = query_pairs(req.uri().query());
        let token = token_of(&req, &query);
        let method = req.method().clone();
        let address = crate::http::client_ip(remote.ip(), req.headers(), &self.server.config.client.trusted_proxies);
        // Who is asking is settled before the body is read.
        // A refresh needs no access token: an expired one must not stop it.
        let refreshing = matches!(segs.as_slice(), [_, _, _, last] if last == "refresh");
        let user = match &token {
            Some(t) if !refreshing => {
                let rec = self.server.store.access_token(&TokenHash::of(t))?.ok_or(Failure::UnknownToken)?;
                if rec.expires_ts != 0 && rec.expires_ts <= crate::sys::now_ms() {
                    return Err(Failure::ExpiredToken);
                }
                let user = rec.user()?;
                crate::http::observe::Caller::record(req.extensions(), user.as_str());
                Some((user, rec.device_id))
            }
            _ => None,
        };
        let s: Vec<&str> = segs.iter().map(String::as_str).collect();
        // Media is routed before a body is read: uploads stream to disk.
        if let Some(media_route) = media::route(&method, &s) {
            let content_type =
                req.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let call = media::MediaCall {
                deps: &self.server,
                uploads: &self.limits.uploads,
                user: user.as_ref().map(|(u, _)| u),
                query: &query,
                content_type: content_type.as_deref(),
            };
            return media::serve(call, media_route?, req.into_body()).await;
        }
        let budget = BodyBudget::of(&req);
        let (bytes, _held) = read_body(req.into_body(), MAX_BODY, &budget).await?;
        let body = json_object(&bytes, NumberPolicy::Ieee754, true);
        let call = Call {
            server: self.server.clone(),
            query,
            body,
            user,
            token,
            accounts: self.accounts.clone(),
            sliding: self.sliding.clone(),
        };
        // `/_matrix/client/{v3,r0}/…`: r0 is the alias older clients call.
        let rest = match s.as_slice() {
            ["_matrix", "client", "versions"] => {
                return only(&method, Method::GET).map(|_| ok_json(&account::versions()))
            }
            ["_synapse", "admin", "v1", "register"] => {
                return account::shared_secret_register(&method, call).await.map(|v| ok_json(&v))
            }
            ["_synapse", "admin", "v1", "server_version"] => {
                let v = admin::server_version(&method, &segs).ok_or(Failure::MethodNotAllowed)?;
                return Ok(ok_json(&v));
            }
            ["_synapse", "admin", rest @ ..] => {
                // Synapse's admin paths, for users who are server admins.
                let (user, _) = call.who()?;
                if !self.server.store.user(user)?.is_some_and(|u| u.admin) {
                    return Err(Failure::forbidden("You are not a server admin"));
                }
                let acting = Some(user.clone());
                let (status, v) = admin::synapse(&method, rest, call, &acting).await?;
                let mut resp = ok_json(&v);
                *resp.status_mut() = status;
                return Ok(resp);
            }
            ["_matrix", "client", "v1", rest @ ..] => {
                if let ["register", ..] = rest {
                    self.limits.logins.check(&address.to_string())?;
                }
                return dispatch_v1(&method, rest, call).await.map(|v| ok_json(&v));
            }
            ["_matrix", "client", "v3" | "r0", rest @ ..] => rest,
            ["_matrix", "client", "unstable", "org.matrix.simplified_msc3575", "sync"] => {
                only(&method, Method::POST)?;
                return sync::sliding::sliding_sync(call).await.map(|v| ok_json(&v));
            }
            ["_matrix", "client", "unstable", "org.lmx.mls", "keys", what @ ("upload" | "query" | "claim")] => {
                only(&method, Method::POST)?;
                let answer = match *what {
                    "upload" => mls::upload(call).await,
                    "query" => mls::query(call).await,
                    _ => keys::claim(call).await,
                };
                return answer.map(|v| ok_json(&v));
            }
            _ => return Err(Failure::Unrecognized),
        };
        match rest {
            ["login"] | ["register"] | ["refresh"] if method == Method::POST => {
                self.limits.logins.check(&address.to_string())?
            }
            ["rooms", _, "send" | "state" | "redact", ..] if method == Method::PUT => {
                if let Some((u, _)) = &call.user {
                    self.limits.sends.check(u.as_str())?;
                }
            }
            _ => {}
        }
        dispatch(&method, rest, call).await.map(|v| ok_json(&v))
    }
}

/// `/_matrix/client/v1/…`: the endpoints the spec added there.
async fn dispatch_v1(method: &Method, rest: &[&str], call: Call) -> Result<Value, Failure> {
    use Method as M;
    match (rest, method) {
        (["login", "get_token"], &M::POST) => tokens::get_login_token(call).await,
        (["rooms", room, "timestamp_to_event"], &M::GET) => timestamp::timestamp_to_event(call, room).await,
        (["rooms", room, "relations", event], &M::GET) => relations::relations(call, room, event, None, None).await,
        (["rooms", room, "relations", event, rel], &M::GET) => {
            relations::relations(call, room, event, Some(rel), None).await
        }
        (["rooms", room, "relations", event, rel, ty], &M::GET) => {
            relations::relations(call, room, event, Some(rel), Some(ty)).await
        }
        (["rooms", room, "threads"], &M::GET) => relations::threads(call, room).await,
        (["rooms", room, "hierarchy"], &M::GET) => hierarchy::hierarchy(call, room).await,
        (["register", "m.login.registration_token", "validity"], &M::GET) => tokens::validity(call),
        (["login", "get_token"], _) | (["register", "m.login.registration_token", "validity"], _) => {
            Err(Failure::MethodNotAllowed)
        }
        _ => Err(Failure::Unrecognized),
    }
}

fn only(method: &Method, want: Method) -> Result<(), Failure> {
    if *method == want {
        Ok(())
    } else {
        Err(Failure::MethodNotAllowed)
    }
}

async fn dispatch(method: &Method, rest: &[&str], call: Call) -> Result<Value, Failure> {
    use Method as M;
    match (rest, method) {
        // Accounts, devices, profiles.
        (["login"], &M::GET) => Ok(account::login_flows()),
        (["login"], &M::POST) => account::login(call).await,
        (["register"], &M::POST) => account::register(call).await,
        (["register", "available"], &M::GET) => account::available(call),
        (["account", "whoami"], &M::GET) => account::whoami(call),
        (["logout"], &M::POST) => account::logout(call).await,
        (["logout", "all"], &M::POST) => account::logout_all(call).await,
        (["refresh"], &M::POST) => tokens::refresh(call).await,
        (["account", "password"], &M::POST) => account_changes::password(call).await,
        (["account", "deactivate"], &M::POST) => account_changes::deactivate(call).await,
        (["account", "3pid"], &M::GET) => account_changes::threepids(call),
        (["account", "3pid", "delete" | "unbind"], &M::POST) => account_changes::threepid_removed(call),
        (["account", "3pid", "add" | "bind"], &M::POST)
        | (["account", "3pid" | "password", "email" | "msisdn", "requestToken"], &M::POST)
        | (["register", "email" | "msisdn", "requestToken"], &M::POST) => Err(Failure::ThreepidUnsupported),
        (["capabilities"], &M::GET) => Ok(account::capabilities()),
        (["devices"], &M::GET) => devices::list(call),
        (["devices", id], &M::GET) => devices::get(call, id),
        (["devices", id], &M::PUT) => devices::update(call, id).await,
        (["devices", id], &M::DELETE) => devices::delete(call, id).await,
        (["delete_devices"], &M::POST) => devices::delete_many(call).await,
        (["profile", user], &M::GET) => profile::get(call, user, None).await,
        (["profile", user, field], &M::GET) => profile::get(call, user, Some(field)).await,
        (["profile", user, field], &M::PUT) => profile::put(call, user, field).await,
        // Account data, filters, push rules, presence.
        (["user", user, "account_data", kind], &M::GET) => account_data::get(call, user, None, kind),
        (["user", user, "account_data", kind], &M::PUT) => account_data::put(call, user, None, kind).await,
        (["user", user, "rooms", room, "account_data", kind], &M::GET) => {
            account_data::get(call, user, Some(room), kind)
        }
        (["user", user, "rooms", room, "account_data", kind], &M::PUT) => {
            account_data::put(call, user, Some(room), kind).await
        }
        (["user", user, "rooms", room, "tags"], &M::GET) => tags::get(call, user, room),
        (["user", user, "rooms", room, "tags", tag], &M::PUT) => tags::change(call, user, room, tag, true).await,
        (["user", user, "rooms", room, "tags", tag], &M::DELETE) => tags::change(call, user, room, tag, false).await,
        (["rooms", room, "report"], &M::POST) => reports::room_or_event(call, room, None).await,
        (["rooms", room, "report", event], &M::POST) => reports::room_or_event(call, room, Some(event)).await,
        (["users", user, "report"], &M::POST) => reports::user(call, user).await,
        (["voip", "turnServer"], &M::GET) => voip::turn_server(call),
        (["search"], &M::POST) => search::search(call).await,
        (["rooms", room, "upgrade"], &M::POST) => upgrade::upgrade(call, room).await,
        (["user", user, "filter"], &M::POST) => filter::create(call, user),
        (["user", user, "filter", id], &M::GET) => filter::get(call, user, id),
        (["pushrules", rest @ ..], &M::GET) if rest.first().is_none_or(|s| s.is_empty() || *s == "global") => {
            account_data::push_rules(call, rest)
        }
        (["pushrules", "global", kind, id], &M::PUT) => account_data::put_push_rule(call, kind, id, None).await,
        (["pushrules", "global", kind, id, attr @ ("enabled" | "actions")], &M::PUT) => {
            account_data::put_push_rule(call, kind, id, Some(attr)).await
        }
        (["pushrules", "global", kind, id], &M::DELETE) => account_data::delete_push_rule(call, kind, id).await,
        (["pushers"], &M::GET) => pushers::list(call),
        (["pushers", "set"], &M::POST) => pushers::set(call).await,
        (["notifications"], &M::GET) => pushers::notifications(call),
        (["presence", user, "status"], &M::GET) => presence::get_status(call, user),
        (["presence", user, "status"], &M::PUT) => presence::put_status(call, user),
        // Rooms.
        (["createRoom"], &M::POST) => rooms::create_room(call).await,
        (["join", room], &M::POST) | (["rooms", room, "join"], &M::POST) => membership::join(call, room).await,
        (["knock", room], &M::POST) => membership::knock(call, room).await,
        (["rooms", room, "invite"], &M::POST) => membership::change_other(call, room, "invite").await,
        (["rooms", room, "kick"], &M::POST) => membership::change_other(call, room, "leave").await,
        (["rooms", room, "ban"], &M::POST) => membership::change_other(call, room, "ban").await,
        (["rooms", room, "unban"], &M::POST) => membership::change_other(call, room, "unban").await,
        (["rooms", room, "leave"], &M::POST) => membership::leave(call, room).await,
        (["rooms", room, "forget"], &M::POST) => membership::forget(call, room).await,
        (["rooms", room, "send", ty, txn], &M::PUT) => rooms::send(call, room, ty, txn).await,
        (["rooms", room, "redact", event, txn], &M::PUT) => rooms::redact(call, room, event, txn).await,
        (["rooms", room, "state", ty], &M::PUT) => rooms::put_state(call, room, ty, "").await,
        (["rooms", room, "state", ty, key], &M::PUT) => rooms::put_state(call, room, ty, key).await,
        (["rooms", room, "state"], &M::GET) => events::full_state(call, room),
        (["rooms", room, "state", ty], &M::GET) => events::state_event(call, room, ty, ""),
        (["rooms", room, "state", ty, key], &M::GET) => events::state_event(call, room, ty, key),
        (["rooms", room, "event", id], &M::GET) => events::event(call, room, id).await,
        (["rooms", room, "context", id], &M::GET) => events::context(call, room, id).await,
        (["rooms", room, "members"], &M::GET) => events::members(call, room),
        (["rooms", room, "joined_members"], &M::GET) => events::joined_members(call, room),
        (["rooms", room, "messages"], &M::GET) => messages::messages(call, room).await,
        (["rooms", room, "typing", user], &M::PUT) => presence::typing(call, room, user),
        (["rooms", room, "receipt", kind, event], &M::POST) => presence::receipt(call, room, kind, event).await,
        (["rooms", room, "read_markers"], &M::POST) => presence::read_markers(call, room).await,
        (["directory", "room", alias], &M::GET) => directory::get(call, alias).await,
        (["directory", "list", "room", room], &M::GET) => public_rooms::listing(call, room),
        (["directory", "list", "room", room], &M::PUT) => public_rooms::set_listing(call, room).await,
        (["publicRooms"], &M::GET) => public_rooms::public_rooms(call, false).await,
        (["publicRooms"], &M::POST) => public_rooms::public_rooms(call, true).await,
        (["user_directory", "search"], &M::POST) => public_rooms::search_users(call),
        (["directory", "room", alias], &M::PUT) => directory::put(call, alias),
        (["directory", "room", alias], &M::DELETE) => directory::delete(call, alias),
        (["joined_rooms"], &M::GET) => events::joined_rooms(call),
        (["sync"], &M::GET) => sync::sync(call).await,
        (["keys", "upload"], &M::POST) => keys::upload(call).await,
        (["keys", "query"], &M::POST) => keys::query(call).await,
        (["keys", "claim"], &M::POST) => keys::claim(call).await,
        (["sendToDevice", ty, txn], &M::PUT) => keys::send(call, ty, txn).await,
        (["keys", "changes"], &M::GET) => sync::keys_changes(call),
        (["keys", "device_signing", "upload"], &M::POST) => cross_signing::upload(call).await,
        (["keys", "signatures", "upload"], &M::POST) => cross_signing::signatures(call).await,
        (["room_keys", "version"], &M::POST) => backup::create(call).await,
        (["room_keys", "version"], &M::GET) => backup::info(call, None),
        (["room_keys", "version", v], &M::GET) => backup::info(call, Some(v)),
        (["room_keys", "version", v], &M::PUT) => backup::update(call, v).await,
        (["room_keys", "version", v], &M::DELETE) => backup::delete(call, v).await,
        (["room_keys", "keys", scope @ ..], method) if scope.len() <= 2 => backup::keys(call, method, scope).await,
        // Known paths with another method.
        (
            ["login"]
            | ["refresh"]
            | ["account", "password" | "deactivate" | "3pid"]
            | ["register"]
            | ["createRoom"]
            | ["sync"]
            | ["joined_rooms"]
            | ["devices", ..]
            | ["keys", "upload" | "query" | "claim" | "changes"]
            | ["keys", "device_signing" | "signatures", "upload"]
            | ["room_keys", "version"]
            | ["room_keys", "version", _]
            | ["room_keys", "keys"]
            | ["room_keys", "keys", _]
            | ["room_keys", "keys", _, _]
            | ["sendToDevice", _, _]
            | ["pushers" | "notifications"]
            | ["pushers", "set"],
            _,
        ) => Err(Failure::MethodNotAllowed),
        (["rooms", _, "send" | "state" | "messages" | "invite" | "leave" | "join" | "kick" | "ban", ..], _) => {
            Err(Failure::MethodNotAllowed)
        }
        _ => Err(Failure::Unrecognized),
    }
}
