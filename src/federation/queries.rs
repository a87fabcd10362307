//! Questions the client API asks other servers: their public rooms, what
//! their room aliases name, their users' profiles. Answers are bounded and
//! checked for shape before they reach a client.

use http::{Method, StatusCode};
use serde_json::{json, Value};

use super::client::FedError;
use super::Node;
use crate::core::ids::{RoomId, ServerName, UserId};
use crate::http::encode_segment;
use crate::wire::Failure;

fn failure(e: FedError, what: &str) -> Failure {
    match e.status() {
        Some(StatusCode::NOT_FOUND) => Failure::not_found(format!("{what} not found")),
        _ => {
            tracing::info!(error = %e, "a query to another server failed");
            Failure::Remote(e.public())
        }
    }
}

async fn ask(
    node: &Node,
    server: &ServerName,
    method: Method,
    path: &str,
    body: Option<&Value>,
    what: &str,
) -> Result<Value, Failure> {
    let lm = super::fetch::lm_peer(node, server).await;
    let resp = node.fed.request(server, method, path, body, lm).await.map_err(|e| failure(e, what))?;
    resp.json(server.as_str()).map_err(|e| Failure::Remote(e.public()))
}

/// Another server's public rooms (`POST /publicRooms`, which takes a
/// search term; `GET` for servers without it).
pub async fn public_rooms(node: &Node, server: &ServerName, body: &Value) -> Result<Value, Failure> {
    let path = "/_matrix/federation/v1/publicRooms";
    let answer = match ask(node, server, Method::POST, path, Some(body), "Room directory").await {
        Err(Failure::NotFound(_)) | Err(Failure::Remote(_)) if body.get("filter").is_none() => {
            let mut q = format!("{path}?limit={}", body["limit"].as_u64().unwrap_or(100));
            if let Some(s) = body.get("since").and_then(Value::as_str) {
                q.push_str(&format!("&since={}", encode_segment(s)));
            }
            ask(node, server, Method::GET, &q, None, "Room directory").await?
        }
        other => other?,
    };
    let chunk: Vec<Value> = answer
        .get("chunk")
        .and_then(Value::as_array)
        .ok_or_else(|| Failure::Remote(format!("{server} sent a room directory without a chunk")))?
        .iter()
        .filter(|e| e.get("room_id").and_then(Value::as_str).is_some_and(|r| RoomId::parse(r).is_ok()))
        .take(500)
        .cloned()
        .collect();
    let mut out = json!({"chunk": chunk});
    for k in ["next_batch", "prev_batch", "total_room_count_estimate"] {
        if let Some(v) = answer.get(k).filter(|v| v.is_string() || v.is_u64()) {
            out[k] = v.clone();
        }
    }
    Ok(out)
}

/// What another server's alias names: `(room, servers)`.
pub async fn directory(node: &Node, alias: &str) -> Result<(RoomId, Vec<ServerName>), Failure> {
    let server = alias
        .split_once(':')
        .and_then(|(_, s)| ServerName::parse(s).ok())
        .ok_or_else(|| Failure::invalid_param("An alias is #localpart:server"))?;
    let path = format!("/_matrix/federation/v1/query/directory?room_alias={}", encode_segment(alias));
    let answer = ask(node, &server, Method::GET, &path, None, "Room alias").await?;
    let room = answer
        .get("room_id")
        .and_then(Value::as_str)
        .and_then(|r| RoomId::parse(r).ok())
        .ok_or_else(|| Failure::Remote(format!("{server} sent an alias answer without a room id")))?;
    let mut servers: Vec<ServerName> = answer
        .get("servers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).filter_map(|s| ServerName::parse(s).ok()).take(20).collect())
        .unwrap_or_default();
    if !servers.contains(&server) {
        servers.push(server);
    }
    Ok((room, servers))
}

/// Another server's user's profile (`field`: one of it).
pub async fn profile(node: &Node, user: &UserId, field: Option<&str>) -> Result<Value, Failure> {
    let mut path = format!("/_matrix/federation/v1/query/profile?user_id={}", encode_segment(user.as_str()));
    if let Some(f) = field {
        path.push_str(&format!("&field={}", encode_segment(f)));
    }
    let answer = ask(node, &user.server_name(), Method::GET, &path, None, "Profile").await?;
    let mut out = json!({});
    for k in ["displayname", "avatar_url"] {
        if let Some(v) = answer.get(k).and_then(Value::as_str).filter(|v| v.len() <= 1024) {
            if field.is_none_or(|f| f == k) {
                out[k] = json!(v);
            }
        }
    }
    Ok(out)
}

/// A space another server holds, as a hierarchy entry (its children's
/// summaries are not kept: the walk asks for what it needs).
pub async fn hierarchy(node: &Node, via: &[ServerName], room: &RoomId, suggested_only: bool) -> Result<Value, Failure> {
    let path =
        format!("/_matrix/federation/v1/hierarchy/{}?suggested_only={suggested_only}", encode_segment(room.as_str()));
    let mut last = Failure::not_found("Room not found");
    for server in via.iter().filter(|s| **s != node.name).take(3) {
        match ask(node, server, Method::GET, &path, None, "Room").await {
            Ok(answer) => {
                let entry = answer.get("room").filter(|r| r.get("room_id") == Some(&json!(room.as_str())));
                match entry {
                    Some(e) if e.get("children_state").is_none_or(Value::is_array) => return Ok(e.clone()),
                    _ => last = Failure::Remote(format!("{server} sent a hierarchy for another room")),
                }
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}
