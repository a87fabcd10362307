//! Server signing keys: our own key file and key response (E2), and the
//! ring of other servers' keys, fetched from the servers themselves, cached
//! within their validity and refreshed on an unknown key id (digest 8.3;
//! items 141-150; OQ-14, OQ-29).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::client::{FedClient, MAX_KEY_RESPONSE};
use crate::core::crypto::{b64_decode, b64_encode, signature_key_ids, verify_object, PublicKey, SigningKey};
use crate::core::event::{required_signers, verify_event_signature, RoomVersion};
use crate::core::ids::{KeyId, ServerName};
use crate::core::json::{Canonical, Object};
use crate::store::records::ServerKeys;
use crate::store::{Batch, Op, Store};

/// How long our key response says it is valid (item 144).
pub const KEY_VALIDITY_MS: i64 = 12 * 3600 * 1000;
/// Validity is capped at fetch time + 7 days (item 145).
const MAX_VALIDITY_MS: i64 = 7 * 24 * 3600 * 1000;
/// A server whose keys we just failed to find is not asked again sooner.
const REFETCH_AFTER_MS: i64 = 10_000;
/// Servers remembered in memory (keys, recent misses). Names come from
/// strangers' requests, so the maps are bounded; the store keeps the keys
/// of servers we deal with, and a forgotten one is read back from it.
const MAX_REMEMBERED: usize = 10_000;
/// Key fetches under way at once; more wait their turn.
const MAX_CONCURRENT_FETCHES: usize = 32;

/// Whether fetched keys go to the store: yes for servers that sign
/// requests or events we accept, no for notary look-ups on anyone's behalf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    Stored,
    MemoryOnly,
}

/// Makes room in a map that must not grow without bound: first what
/// `expired` says is stale, then anything.
fn make_room<K: Clone + Eq + std::hash::Hash, V>(map: &mut HashMap<K, V>, expired: impl Fn(&V) -> bool) {
    if map.len() < MAX_REMEMBERED {
        return;
    }
    map.retain(|_, v| !expired(v));
    if map.len() >= MAX_REMEMBERED {
        let drop: Vec<K> = map.keys().take(MAX_REMEMBERED / 10).cloned().collect();
        for k in drop {
            map.remove(&k);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}: expected `ed25519 <version> <base64 seed>`")]
    Format(String),
}

/// Loads our signing key, creating it on first start. The file has
/// Synapse's format: `ed25519 <version> <unpadded base64 seed>`.
pub fn load_or_create_signing_key(path: &Path, server: &ServerName) -> Result<SigningKey, KeyFileError> {
    let shown = path.display().to_string();
    if !path.exists() {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed)
            .map_err(|e| KeyFileError::Io(shown.clone(), std::io::Error::other(e.to_string())))?;
        let version = crate::sys::random_string(6);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| KeyFileError::Io(shown.clone(), e))?;
        }
        let line = format!("ed25519 {version} {}\n", b64_encode(&seed));
        crate::http::tls::write_private(path, line.as_bytes())
            .map_err(|e| KeyFileError::Io(shown.clone(), std::io::Error::other(e.to_string())))?;
    }
    load_signing_key(path, server)
}

/// Loads our signing key; a missing file is an error.
pub fn load_signing_key(path: &Path, server: &ServerName) -> Result<SigningKey, KeyFileError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| KeyFileError::Io(shown.clone(), e))?;
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [alg, version, seed] = parts.as_slice() else {
        return Err(KeyFileError::Format(shown));
    };
    if *alg != "ed25519" {
        return Err(KeyFileError::Format(shown));
    }
    let key_id = KeyId::ed25519(version).map_err(|_| KeyFileError::Format(shown.clone()))?;
    let seed = b64_decode(seed).map_err(|_| KeyFileError::Format(shown.clone()))?;
    SigningKey::from_seed(server.clone(), key_id, &seed).map_err(|_| KeyFileError::Format(shown))
}

/// Our `/_matrix/key/v2/server` answer, self-signed.
pub fn own_key_response(key: &SigningKey, now_ms: i64) -> Value {
    let mut o = Object::new();
    o.insert("server_name".into(), json!(key.server().as_str()));
    o.insert("valid_until_ts".into(), json!(now_ms + KEY_VALIDITY_MS));
    o.insert("verify_keys".into(), json!({ key.key_id().as_str(): {"key": key.public_key().to_base64()} }));
    o.insert("old_verify_keys".into(), json!({}));
    o.insert("m.linearized".into(), json!(true));
    key.sign_object(&mut o, Canonical::Matrix).expect("integers only");
    Value::Object(o)
}

/// What we know of another server's keys.
#[derive(Debug, Clone)]
pub struct ServerKeyInfo {
    verify: HashMap<String, (PublicKey, i64)>,
    old: HashMap<String, (PublicKey, i64)>,
    /// `m.linearized: true` in its key response (OQ-50).
    pub linearized: bool,
    /// The response as fetched, for notary answers.
    pub raw: Object,
    pub valid_until_ts: i64,
}

impl ServerKeyInfo {
    /// A current or old key by id, whatever its validity (for checking
    /// stored events offline).
    pub fn public_key(&self, key_id: &str) -> Option<PublicKey> {
        self.verify.get(key_id).or_else(|| self.old.get(key_id)).map(|(pk, _)| *pk)
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum KeyError {
    #[error("no usable key {key_id} for {server}")]
    Unknown { server: String, key_id: String },
    #[error("{0}")]
    Signature(String),
}

/// Checks a key response: it names the server and every current key signs it.
pub fn parse_key_response(server: &ServerName, raw: Object, fetched_ms: i64) -> Option<ServerKeyInfo> {
    if raw.get("server_name").and_then(Value::as_str) != Some(server.as_str()) {
        return None;
    }
    let valid_until = raw.get("valid_until_ts").and_then(Value::as_i64)?.min(fetched_ms + MAX_VALIDITY_MS);
    let mut verify = HashMap::new();
    for (id, k) in raw.get("verify_keys")?.as_object()? {
        let Some(pk) = k.get("key").and_then(Value::as_str).and_then(|b| PublicKey::from_base64(b).ok()) else {
            continue;
        };
        if !id.starts_with("ed25519:") || verify_object(&raw, server.as_str(), id, &pk, Canonical::Matrix).is_err() {
            return None;
        }
        verify.insert(id.clone(), (pk, valid_until));
    }
    if verify.is_empty() {
        return None;
    }
    let mut old = HashMap::new();
    if let Some(olds) = raw.get("old_verify_keys").and_then(Value::as_object) {
        for (id, k) in olds {
            let pk = k.get("key").and_then(Value::as_str).and_then(|b| PublicKey::from_base64(b).ok());
            let expired = k.get("expired_ts").and_then(Value::as_i64);
            if let (Some(pk), Some(expired)) = (pk, expired) {
                old.insert(id.clone(), (pk, expired));
            }
        }
    }
    let linearized = raw.get("m.linearized") == Some(&Value::Bool(true));
    Some(ServerKeyInfo { verify, old, linearized, raw, valid_until_ts: valid_until })
}

pub struct KeyRing {
    own: SigningKey,
    client: Arc<FedClient>,
    store: Arc<dyn Store>,
    cache: Mutex<HashMap<ServerName, (Arc<ServerKeyInfo>, i64)>>,
    misses: Mutex<HashMap<ServerName, i64>>,
    fetch_locks: Mutex<HashMap<ServerName, Arc<tokio::sync::Mutex<()>>>>,
    fetches: tokio::sync::Semaphore,
    /// Our own keys as other servers see them: signing and checking that
    /// answer costs more than the signature checks it serves.
    own_cached: Mutex<Option<Arc<ServerKeyInfo>>>,
    /// Keys fetched before this (an operator's flush) are fetched again.
    refetch_before: std::sync::atomic::AtomicI64,
}

impl KeyRing {
    /// Has other servers' keys fetched again at their next use (those
    /// held stay in use while a server cannot be reached); how many were
    /// held in memory.
    pub fn forget_remembered(&self) -> usize {
        self.refetch_before.store(crate::sys::now_ms(), std::sync::atomic::Ordering::Relaxed);
        let mut cache = self.cache.lock().expect("poisoned");
        let n = cache.len();
        cache.clear();
        self.misses.lock().expect("poisoned").clear();
        n
    }

    pub fn new(own: SigningKey, client: Arc<FedClient>, store: Arc<dyn Store>) -> Self {
        KeyRing {
            own,
            client,
            store,
            cache: Mutex::new(HashMap::new()),
            misses: Mutex::new(HashMap::new()),
            fetch_locks: Mutex::new(HashMap::new()),
            fetches: tokio::sync::Semaphore::new(MAX_CONCURRENT_FETCHES),
            own_cached: Mutex::new(None),
            refetch_before: std::sync::atomic::AtomicI64::new(0),
        }
    }

    fn remember(&self, server: &ServerName, info: Arc<ServerKeyInfo>, fetched: i64) {
        let mut cache = self.cache.lock().expect("poisoned");
        let now = crate::sys::now_ms();
        make_room(&mut cache, |(i, _)| i.valid_until_ts < now);
        cache.insert(server.clone(), (info, fetched));
    }

    /// Rebuilt once half its validity has passed, so it always has at
    /// least six hours left, as a freshly built one would.
    fn own_info(&self, now: i64) -> Arc<ServerKeyInfo> {
        let mut cached = self.own_cached.lock().expect("poisoned");
        if let Some(info) = cached.as_ref().filter(|i| i.valid_until_ts - KEY_VALIDITY_MS / 2 > now) {
            return info.clone();
        }
        let raw = own_key_response(&self.own, now);
        let info = Arc::new(
            parse_key_response(self.own.server(), raw.as_object().cloned().unwrap_or_default(), now)
                .expect("own key response is valid"),
        );
        *cached = Some(info.clone());
        info
    }

    fn cached(&self, server: &ServerName) -> Option<Arc<ServerKeyInfo>> {
        self.cached_at(server).map(|(info, _)| info)
    }

    /// Held keys with when they were fetched.
    fn cached_at(&self, server: &ServerName) -> Option<(Arc<ServerKeyInfo>, i64)> {
        if let Some((info, at)) = self.cache.lock().expect("poisoned").get(server) {
            return Some((info.clone(), *at));
        }
        let stored = self.store.server_keys(server).ok()??;
        let raw: Object = serde_json::from_slice(&stored.response_json).ok()?;
        let info = Arc::new(parse_key_response(server, raw, stored.fetched_ts)?);
        self.remember(server, info.clone(), stored.fetched_ts);
        Some((info, stored.fetched_ts))
    }

    /// Held keys good for use now without asking their server: not
    /// expired, holding `want_key`, and fetched after the last flush.
    fn usable(&self, server: &ServerName, want_key: Option<&str>, now: i64) -> Option<Arc<ServerKeyInfo>> {
        let flushed = self.refetch_before.load(std::sync::atomic::Ordering::Relaxed);
        let (info, at) = self.cached_at(server)?;
        let fresh = info.valid_until_ts > now
            && at >= flushed
            && want_key.is_none_or(|k| info.verify.contains_key(k) || info.old.contains_key(k));
        fresh.then_some(info)
    }

    /// Keys of `server`: cached, or fetched (and stored) when absent,
    /// expired, or when `want_key` is not among them.
    pub async fn info(&self, server: &ServerName, want_key: Option<&str>, now: i64) -> Option<Arc<ServerKeyInfo>> {
        self.info_kept(server, want_key, now, Keep::Stored).await
    }

    /// As `info`, saying whether freshly fetched keys go to the store.
    pub async fn info_kept(
        &self,
        server: &ServerName,
        want_key: Option<&str>,
        now: i64,
        keep: Keep,
    ) -> Option<Arc<ServerKeyInfo>> {
        if server == self.own.server() {
            return Some(self.own_info(now));
        }
        if let Some(i) = self.usable(server, want_key, now) {
            return Some(i);
        }
        let recently_missed =
            |r: &Self| r.misses.lock().expect("poisoned").get(server).is_some_and(|t| now - t < REFETCH_AFTER_MS);
        if recently_missed(self) {
            return self.cached(server);
        }
        let lock = {
            let mut locks = self.fetch_locks.lock().expect("poisoned");
            // A lock nobody else holds is stale; drop such ones first.
            make_room(&mut locks, |l| Arc::strong_count(l) == 1);
            locks.entry(server.clone()).or_default().clone()
        };
        let fetched = {
            let _guard = lock.lock().await;
            // Another caller may have fetched while we waited.
            match self.usable(server, want_key, now) {
                Some(i) => Some(i),
                None if recently_missed(self) => None,
                None => {
                    let got = self.fetch(server, now, keep).await;
                    if got.is_none() {
                        let mut misses = self.misses.lock().expect("poisoned");
                        make_room(&mut misses, |t| now - *t >= REFETCH_AFTER_MS);
                        misses.insert(server.clone(), now);
                    }
                    got
                }
            }
        };
        {
            let mut locks = self.fetch_locks.lock().expect("poisoned");
            if locks.get(server).is_some_and(|l| Arc::ptr_eq(l, &lock) && Arc::strong_count(l) == 2) {
                locks.remove(server);
            }
        }
        // Keep using what we had when the server cannot be reached.
        fetched.or_else(|| self.cached(server))
    }

    async fn fetch(&self, server: &ServerName, now: i64, keep: Keep) -> Option<Arc<ServerKeyInfo>> {
        let _turn = self.fetches.acquire().await.ok()?;
        let resp = match self.client.get_unsigned(server, "/_matrix/key/v2/server", MAX_KEY_RESPONSE).await {
            Ok(r) => r,
            Err(e) => {
                metrics::counter!("lmx_key_fetches_total", "result" => "unreachable").increment(1);
                tracing::info!(%server, error = %e, "key fetch failed");
                return None;
            }
        };
        let raw = resp.json(server.as_str()).ok().and_then(|v| v.as_object().cloned());
        let Some(info) = raw.clone().and_then(|raw| parse_key_response(server, raw, now)) else {
            metrics::counter!("lmx_key_fetches_total", "result" => "refused").increment(1);
            tracing::warn!(%server, "key response failed its checks");
            return None;
        };
        metrics::counter!("lmx_key_fetches_total", "result" => "ok").increment(1);
        let raw = raw.unwrap_or_default();
        if keep == Keep::Stored {
            let mut b = Batch::new();
            b.push(Op::PutServerKeys {
                server: server.clone(),
                keys: ServerKeys {
                    response_json: serde_json::to_vec(&raw).unwrap_or_default(),
                    fetched_ts: now,
                    valid_until_ts: info.valid_until_ts,
                },
            });
            if let Err(e) = self.store.write(b) {
                tracing::warn!(error = %e, "could not store server keys");
            }
        }
        let info = Arc::new(info);
        self.remember(server, info.clone(), now);
        Some(info)
    }

    /// A key that may authenticate a request now: current `verify_keys` only
    /// (item 155).
    pub async fn request_key(&self, server: &ServerName, key_id: &str, now: i64) -> Result<PublicKey, KeyError> {
        let unknown = || KeyError::Unknown { server: server.to_string(), key_id: key_id.to_owned() };
        let info = self.info(server, Some(key_id), now).await.ok_or_else(unknown)?;
        match info.verify.get(key_id) {
            Some((pk, until)) if *until > now => Ok(*pk),
            _ => Err(unknown()),
        }
    }

    /// Whether `server` said it is an LM server (`m.linearized: true`).
    pub async fn is_lm_peer(&self, server: &ServerName, now: i64) -> bool {
        self.info(server, None, now).await.is_some_and(|i| i.linearized)
    }

    /// `m.linearized` of a server whose keys are at hand, without fetching.
    pub fn cached_linearized(&self, server: &ServerName) -> Option<bool> {
        if server == self.own.server() {
            return Some(true);
        }
        self.cached(server).map(|i| i.linearized)
    }

    /// A key that may verify an event signature made at `event_ts` (OQ-29).
    async fn event_key(&self, server: &ServerName, key_id: &str, event_ts: i64, now: i64) -> Option<PublicKey> {
        let info = self.info(server, Some(key_id), now).await?;
        if let Some((pk, until)) = info.verify.get(key_id) {
            if *until >= event_ts {
                return Some(*pk);
            }
        }
        info.old.get(key_id).filter(|(_, expired)| *expired > event_ts).map(|(pk, _)| *pk)
    }

    /// Receive step 2: every required signer (sender's server, hub) has at
    /// least one verifying signature from a known key, and none fails
    /// (OQ-14). Other signatures are ignored (item 62).
    pub async fn verify_event(&self, version: &RoomVersion, event: &Object, now: i64) -> Result<(), KeyError> {
        let signers = required_signers(version, event).map_err(|e| KeyError::Signature(e.to_string()))?;
        self.verify_signers(version, event, &signers, now).await
    }

    /// Checks the signatures of the given servers only (an LPDU at the hub
    /// carries only its sender's server's).
    pub async fn verify_signers(
        &self,
        version: &RoomVersion,
        event: &Object,
        signers: &[ServerName],
        now: i64,
    ) -> Result<(), KeyError> {
        let ts = event.get("origin_server_ts").and_then(Value::as_i64).unwrap_or(0);
        for signer in signers {
            let signer = signer.clone();
            let ids: Vec<String> =
                signature_key_ids(event, signer.as_str()).into_iter().filter(|k| k.starts_with("ed25519:")).collect();
            if ids.is_empty() {
                return Err(KeyError::Signature(format!("no signature from {signer}")));
            }
            let mut verified = false;
            for id in ids {
                let Some(pk) = self.event_key(&signer, &id, ts, now).await else {
                    continue;
                };
                verify_event_signature(version, event, signer.as_str(), &id, &pk)
                    .map_err(|e| KeyError::Signature(e.to_string()))?;
                verified = true;
            }
            if !verified {
                return Err(KeyError::Unknown { server: signer.to_string(), key_id: "any".into() });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_keys_are_built_once_and_rebuilt_at_half_their_validity() {
        let name = ServerName::parse("own.test").unwrap();
        let key = SigningKey::from_seed(name, crate::core::ids::KeyId::parse("ed25519:a").unwrap(), &[7; 32]).unwrap();
        let fed = Arc::new(FedClient::new(
            key.clone(),
            None,
            HashMap::new(),
            crate::federation::policy::AddressPolicy::default(),
            std::time::Duration::from_secs(1),
        ));
        let store: Arc<dyn Store> = Arc::new(crate::store::KvStore::new(crate::store::MemKv::new()));
        let ring = KeyRing::new(key, fed, store);
        let first = ring.own_info(1_000);
        assert!(Arc::ptr_eq(&first, &ring.own_info(1_000 + KEY_VALIDITY_MS / 2 - 1)), "reused");
        let later = ring.own_info(1_000 + KEY_VALIDITY_MS / 2);
        assert!(!Arc::ptr_eq(&first, &later), "rebuilt");
        assert_eq!(later.valid_until_ts, 1_000 + KEY_VALIDITY_MS / 2 + KEY_VALIDITY_MS);
    }

    #[test]
    fn remembered_names_stay_bounded_and_stale_ones_go_first() {
        let mut map: HashMap<String, i64> = HashMap::new();
        for i in 0..MAX_REMEMBERED {
            map.insert(format!("s{i}"), if i % 2 == 0 { 0 } else { 100 });
        }
        make_room(&mut map, |t| *t == 0);
        assert_eq!(map.len(), MAX_REMEMBERED / 2, "the stale half went");
        assert!(map.values().all(|t| *t == 100));
        for i in 0..MAX_REMEMBERED {
            make_room(&mut map, |_| false);
            map.insert(format!("n{i}"), 100);
        }
        assert!(map.len() <= MAX_REMEMBERED, "never beyond the bound: {}", map.len());
    }
}
