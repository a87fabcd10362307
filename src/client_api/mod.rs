//! The Matrix Client-Server API lmx serves (a first subset; see README for
//! the list). Every endpoint but `versions`, `login` and `register` needs
//! an access token.

mod account;
mod events;
mod rooms;
mod sync;

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::Value;
use tracing::Instrument;

use crate::core::ids::UserId;
use crate::core::json::{NumberPolicy, Object};
use crate::http::{json_object, ok_json, path_segments, query_pairs, read_body, ApiError, Body, Handler, MAX_BODY};
use crate::node::Node;
use crate::store::BoxFuture;

pub use account::RegistrationNonces;

/// A request after routing: the caller (if authenticated) and its inputs.
pub struct Call {
    pub node: Arc<Node>,
    pub query: Vec<(String, String)>,
    pub body: Object,
    pub user: Option<(UserId, String)>,
    pub token: Option<String>,
    pub nonces: Arc<RegistrationNonces>,
}

impl Call {
    /// The authenticated user and device.
    pub fn who(&self) -> Result<(&UserId, &str), ApiError> {
        self.user
            .as_ref()
            .map(|(u, d)| (u, d.as_str()))
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN", "Missing access token"))
    }
}

pub struct ClientHandler {
    pub node: Arc<Node>,
    pub nonces: Arc<RegistrationNonces>,
}

impl Handler for ClientHandler {
    fn handle(self: Arc<Self>, req: Request<Incoming>, remote: SocketAddr) -> BoxFuture<'static, Response<Body>> {
        let span = tracing::debug_span!("client", method = %req.method(), path = %req.uri().path(), %remote);
        Box::pin(
            async move {
                let mut resp = match self.route(req).await {
                    Ok(v) => ok_json(&v),
                    Err(e) => e.into_response(),
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
    async fn route(&self, req: Request<Incoming>) -> Result<Value, ApiError> {
        if req.method() == Method::OPTIONS {
            return Ok(serde_json::json!({}));
        }
        let segs = path_segments(req.uri().path()).ok_or_else(ApiError::unrecognized)?;
        let query = query_pairs(req.uri().query());
        let token = token_of(&req, &query);
        let method = req.method().clone();
        let bytes = read_body(req.into_body(), MAX_BODY).await?;
        let body = json_object(&bytes, NumberPolicy::Ieee754, true)?;
        let user = match &token {
            Some(t) => {
                let rec = self.node.store.access_token(t)?.ok_or_else(|| {
                    ApiError::new(StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN", "Unknown access token")
                        .with("soft_logout", false.into())
                })?;
                let user = UserId::parse(&rec.user_id).map_err(|e| ApiError::unknown(e.to_string()))?;
                Some((user, rec.device_id))
            }
            None => None,
        };
        let call = Call { node: self.node.clone(), query, body, user, token, nonces: self.nonces.clone() };
        let s: Vec<&str> = segs.iter().map(String::as_str).collect();
        // `/_matrix/client/{v3,r0}/…`: r0 is the alias older clients call.
        let rest = match s.as_slice() {
            ["_matrix", "client", "versions"] => return only(&method, Method::GET).map(|_| account::versions()),
            ["_synapse", "admin", "v1", "register"] => return account::shared_secret_register(&method, call).await,
            ["_matrix", "client", "v3" | "r0", rest @ ..] => rest,
            _ => return Err(ApiError::unrecognized()),
        };
        dispatch(&method, rest, call).await
    }
}

fn only(method: &Method, want: Method) -> Result<(), ApiError> {
    if *method == want {
        Ok(())
    } else {
        Err(ApiError::method_not_allowed())
    }
}

async fn dispatch(method: &Method, rest: &[&str], call: Call) -> Result<Value, ApiError> {
    use Method as M;
    match (rest, method) {
        (["login"], &M::GET) => Ok(account::login_flows()),
        (["login"], &M::POST) => account::login(call).await,
        (["register"], &M::POST) => account::register(call).await,
        (["register", "available"], &M::GET) => account::available(call),
        (["account", "whoami"], &M::GET) => account::whoami(call),
        (["logout"], &M::POST) => account::logout(call),
        (["capabilities"], &M::GET) => Ok(account::capabilities()),
        (["createRoom"], &M::POST) => rooms::create_room(call).await,
        (["join", room], &M::POST) | (["rooms", room, "join"], &M::POST) => rooms::join(call, room).await,
        (["rooms", room, "invite"], &M::POST) => rooms::invite(call, room).await,
        (["rooms", room, "leave"], &M::POST) => rooms::leave(call, room).await,
        (["rooms", room, "send", ty, txn], &M::PUT) => rooms::send(call, room, ty, txn).await,
        (["rooms", room, "state", ty], &M::PUT) => rooms::put_state(call, room, ty, "").await,
        (["rooms", room, "state", ty, key], &M::PUT) => rooms::put_state(call, room, ty, key).await,
        (["rooms", room, "state"], &M::GET) => events::full_state(call, room),
        (["rooms", room, "state", ty], &M::GET) => events::state_event(call, room, ty, ""),
        (["rooms", room, "state", ty, key], &M::GET) => events::state_event(call, room, ty, key),
        (["rooms", room, "messages"], &M::GET) => events::messages(call, room),
        (["sync"], &M::GET) => sync::sync(call).await,
        (["joined_rooms"], &M::GET) => events::joined_rooms(call),
        // Known paths with another method.
        (["login"] | ["register"] | ["createRoom"] | ["sync"] | ["joined_rooms"], _) => {
            Err(ApiError::method_not_allowed())
        }
        (["rooms", _, "send" | "state" | "messages" | "invite" | "leave" | "join", ..], _) => {
            Err(ApiError::method_not_allowed())
        }
        _ => Err(ApiError::unrecognized()),
    }
}
