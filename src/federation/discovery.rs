//! Finding a server: `federation.resolve` overrides, explicit ports and IP
//! literals, then `/.well-known/matrix/server`, then port 8448 (digest 8.2;
//! items 134-140; OQ-28). SRV records are not consulted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::core::ids::ServerName;

/// Where and how to reach a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host:port` to connect to (resolved later unless `addr` is set).
    pub connect_host: String,
    pub port: u16,
    /// A fixed address from `federation.resolve`.
    pub addr: Option<SocketAddr>,
    /// Name the certificate must carry (the server name's or the delegated
    /// host, never an SRV target).
    pub tls_name: String,
    /// `Host` header value.
    pub host_header: String,
}

/// Successful well-known answers are kept up to 24 h, failures 1 h (the
/// digest's defaults).
const WELL_KNOWN_OK: Duration = Duration::from_secs(24 * 3600);
const WELL_KNOWN_ERR: Duration = Duration::from_secs(3600);
/// Hosts whose well-known answer is remembered.
pub const MAX_WELL_KNOWN_ENTRIES: usize = 10_000;

#[derive(Default)]
pub struct WellKnownCache {
    entries: Mutex<HashMap<String, (Instant, Option<String>)>>,
}

impl WellKnownCache {
    /// Forgets every answer (an operator's flush); how many there were.
    pub fn clear(&self) -> usize {
        let mut map = self.entries.lock().expect("poisoned");
        let n = map.len();
        map.clear();
        n
    }

    pub fn get(&self, host: &str) -> Option<Option<String>> {
        let map = self.entries.lock().expect("poisoned");
        map.get(host).filter(|(until, _)| *until > Instant::now()).map(|(_, v)| v.clone())
    }

    pub fn put(&self, host: &str, value: Option<String>) {
        let ttl = if value.is_some() { WELL_KNOWN_OK } else { WELL_KNOWN_ERR };
        let now = Instant::now();
        let mut map = self.entries.lock().expect("poisoned");
        // Host names come from strangers' requests: keep the map bounded,
        // dropping expired answers first, then arbitrary ones.
        if map.len() >= MAX_WELL_KNOWN_ENTRIES && !map.contains_key(host) {
            map.retain(|_, (until, _)| *until > now);
            let excess: Vec<String> =
                map.keys().take((map.len() + 1).saturating_sub(MAX_WELL_KNOWN_ENTRIES)).cloned().collect();
            for k in excess {
                map.remove(&k);
            }
        }
        map.insert(host.to_owned(), (now + ttl, value));
    }

    pub fn len(&self) -> usize {
        self.entries.lock().expect("poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Looks a name up in `federation.resolve`: `host:port` first, then `host`.
pub fn resolve_override(resolve: &HashMap<String, SocketAddr>, host: &str, port: u16) -> Option<SocketAddr> {
    resolve.get(&format!("{host}:{port}")).or_else(|| resolve.get(host)).copied()
}

fn split(name: &str) -> (String, Option<u16>) {
    let n = ServerName::parse(name).ok();
    match n {
        Some(n) => (n.host().to_owned(), n.port()),
        None => (name.to_owned(), None),
    }
}

/// The target for a name that needs no well-known lookup, if any.
pub fn direct_target(resolve: &HashMap<String, SocketAddr>, name: &ServerName) -> Option<Target> {
    let host = name.host().to_owned();
    let bare = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    if let Some(port) = name.port() {
        return Some(Target {
            addr: resolve_override(resolve, &host, port),
            connect_host: bare,
            port,
            tls_name: host.clone(),
            host_header: name.as_str().to_owned(),
        });
    }
    if name.is_ip_literal() {
        return Some(Target {
            addr: None,
            connect_host: bare,
            port: 8448,
            tls_name: host,
            host_header: name.as_str().to_owned(),
        });
    }
    None
}

/// The target after a well-known lookup: the delegated name (with its port,
/// or 8448), or the server name on port 8448 when there is none.
pub fn delegated_target(resolve: &HashMap<String, SocketAddr>, name: &ServerName, delegated: Option<&str>) -> Target {
    let (host, port) = match delegated {
        Some(d) => split(d),
        None => (name.host().to_owned(), None),
    };
    let port = port.unwrap_or(8448);
    let host_header = match delegated {
        Some(d) => d.to_owned(),
        None => name.as_str().to_owned(),
    };
    Target {
        addr: resolve_override(resolve, &host, port),
        connect_host: host.trim_start_matches('[').trim_end_matches(']').to_owned(),
        port,
        tls_name: host,
        host_header,
    }
}

/// Parses a well-known body: `{"m.server": "host[:port]"}`, whatever the
/// content type (item 140).
pub fn parse_well_known(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let s = v.get("m.server")?.as_str()?;
    ServerName::parse(s).ok().map(|_| s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let mut resolve = HashMap::new();
        resolve.insert("hub.test".to_owned(), "127.0.0.1:9000".parse().unwrap());
        resolve.insert("fed.test:8449".to_owned(), "127.0.0.1:9001".parse().unwrap());
        let explicit = direct_target(&resolve, &ServerName::parse("hub.test:8448").unwrap()).unwrap();
        assert_eq!(explicit.addr, Some("127.0.0.1:9000".parse().unwrap()));
        assert_eq!(explicit.host_header, "hub.test:8448");
        assert!(direct_target(&resolve, &ServerName::parse("hub.test").unwrap()).is_none());
        let name = ServerName::parse("hub.test").unwrap();
        let t = delegated_target(&resolve, &name, Some("fed.test:8449"));
        assert_eq!((t.tls_name.as_str(), t.port, t.addr), ("fed.test", 8449, Some("127.0.0.1:9001".parse().unwrap())));
        let t = delegated_target(&resolve, &name, None);
        assert_eq!((t.port, t.host_header.as_str()), (8448, "hub.test"));
        assert_eq!(parse_well_known(br#"{"m.server":"fed.test:8449"}"#).as_deref(), Some("fed.test:8449"));
        assert_eq!(parse_well_known(b"nope"), None);
    }

    #[test]
    fn the_well_known_cache_stays_bounded() {
        let c = WellKnownCache::default();
        for i in 0..MAX_WELL_KNOWN_ENTRIES + 50 {
            c.put(&format!("h{i}.example"), None);
        }
        assert_eq!(c.len(), MAX_WELL_KNOWN_ENTRIES);
        assert_eq!(c.get(&format!("h{}.example", MAX_WELL_KNOWN_ENTRIES + 49)), Some(None), "the newest is kept");
    }
}
