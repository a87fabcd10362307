//! E1-E4 and `/version`: well-known, our keys, the notary.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt;

use http::Response;
use serde_json::{json, Value};

use crate::core::ids::ServerName;
use crate::core::json::Canonical;
use crate::federation::keyring::{own_key_response, Keep};
use crate::federation::Node;
use crate::http::{ok_json, query_get, Body};
use crate::sys::now_ms;
use crate::wire::federation::KeyQuery;
use crate::wire::{self, Failure};

pub fn well_known(node: &Node) -> Result<Response<Body>, Failure> {
    match &node.config.federation.well_known_server {
        Some(s) => Ok(ok_json(&json!({ "m.server": s }))),
        None => Err(Failure::not_found("No delegation configured")),
    }
}

pub fn server_keys(node: &Node) -> Response<Body> {
    ok_json(&own_key_response(&node.key, now_ms()))
}

pub fn version() -> Response<Body> {
    ok_json(&json!({"server": {"name": "lmx", "version": env!("CARGO_PKG_VERSION")}}))
}

/// Server names one notary request may ask about.
pub const MAX_NOTARY_NAMES: usize = 100;
/// Key fetches one notary request runs at once.
const NOTARY_PARALLEL: usize = 8;

/// A key response countersigned by us, if it satisfies `min_valid`. Keys
/// fetched for a notary query are not stored: anyone may ask about anyone.
async fn notarised(node: &Node, server: &ServerName, min_valid: i64) -> Option<Value> {
    let now = now_ms();
    let info = node.keyring.info_kept(server, None, now, Keep::MemoryOnly).await?;
    if info.valid_until_ts < min_valid {
        return None;
    }
    let mut raw = info.raw.clone();
    node.key.sign_object(&mut raw, Canonical::Matrix).ok()?;
    Some(Value::Object(raw))
}

/// E3.
pub async fn query_one(node: &Arc<Node>, server: &str, query: &[(String, String)]) -> Result<Response<Body>, Failure> {
    let server = ServerName::parse(server).map_err(|e| Failure::bad_json(e.to_string()))?;
    let min = query_get(query, "minimum_valid_until_ts").and_then(|v| v.parse().ok()).unwrap_or(0);
    let keys: Vec<Value> = notarised(node, &server, min).await.into_iter().collect();
    Ok(ok_json(&json!({ "server_keys": keys })))
}

/// E4: `{"server_keys": {server: {key_id: {minimum_valid_until_ts}}}}`.
pub async fn query_batch(node: &Arc<Node>, body: crate::core::json::Object) -> Result<Response<Body>, Failure> {
    let asked: KeyQuery = wire::read(&body)?;
    // One entry per name, however it is spelt.
    let mut names: BTreeMap<String, (ServerName, i64)> = BTreeMap::new();
    for (server, wanted) in &asked.server_keys {
        let Ok(name) = ServerName::parse(server) else {
            continue;
        };
        let min = wanted.values().filter_map(|k| k.minimum_valid_until_ts).max().unwrap_or(0);
        let entry = names.entry(name.as_str().to_ascii_lowercase()).or_insert((name, min));
        entry.1 = entry.1.max(min);
    }
    if names.len() > MAX_NOTARY_NAMES {
        return Err(Failure::too_large(format!("At most {MAX_NOTARY_NAMES} server names per query")));
    }
    let out: Vec<Value> = futures_util::stream::iter(names.into_values())
        .map(|(name, min)| async move { notarised(node, &name, min).await })
        .buffer_unordered(NOTARY_PARALLEL)
        .filter_map(|v| async move { v })
        .collect()
        .await;
    Ok(ok_json(&json!({ "server_keys": out })))
}
