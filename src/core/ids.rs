//! Validated identifiers. Each type is parsed once at the edge and carried as a
//! checked string afterwards (checklist items 1-18; digest section 2).
//!
//! Two grammars exist for server names and user ids: the Linearized Matrix
//! draft's (no IP literals, no upper case in localparts) and Matrix's (IP
//! literals and historical user ids allowed). The types accept the union so
//! that events of every room version can be represented; the stricter checks
//! are explicit (`ServerName::validate_own`, `UserId::is_lm_valid`).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest identifier the protocol allows (room, user and event ids, types).
pub const MAX_ID_LEN: usize = 255;
/// Longest room version string (`1*128room_version_char`).
pub const MAX_ROOM_VERSION_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {reason}")]
pub struct IdError {
    pub kind: &'static str,
    pub value: String,
    pub reason: &'static str,
}

fn err(kind: &'static str, value: &str, reason: &'static str) -> IdError {
    let mut value = value.to_owned();
    if value.len() > 80 {
        let mut cut = 80;
        while !value.is_char_boundary(cut) {
            cut -= 1;
        }
        value.truncate(cut);
        value.push('…');
    }
    IdError { kind, value, reason }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", $kind, self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(&s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// `hostname [":" port]`, or a Matrix IP literal (`1.2.3.4`, `[::1]`).
    ServerName,
    "ServerName"
);
string_id!(
    /// `@localpart:server`.
    UserId,
    "UserId"
);
string_id!(
    /// `!opaque:server`, or (room version 12) `!` + reference hash.
    RoomId,
    "RoomId"
);
string_id!(
    /// `$` + reference hash (v3+, LM), or `$opaque:server` (v1, v2).
    EventId,
    "EventId"
);
string_id!(
    /// `algorithm:version`, e.g. `ed25519:0`.
    KeyId,
    "KeyId"
);
string_id!(
    /// `1*(ALPHA / DIGIT / "_")` (OQ-20).
    DeviceId,
    "DeviceId"
);
string_id!(
    /// `1*128[0-9a-z.-]`, plus the draft's literal `I.1` (OQ-1).
    RoomVersionId,
    "RoomVersionId"
);

fn is_dns_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'.'
}

/// RFC 1123 section 2.1 host name: dot-separated labels of letters, digits
/// and inner hyphens, each 1-63 characters, 255 in all.
fn is_rfc1123_hostname(host: &str) -> bool {
    if host.is_empty() || host.len() > 255 || !host.bytes().all(is_dns_char) {
        return false;
    }
    // A single trailing dot (fully qualified form) is not part of the grammar.
    host.split('.').all(|label| {
        let b = label.as_bytes();
        !b.is_empty()
            && b.len() <= 63
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
            && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
    })
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|c| c.is_ascii_digit())
}

fn is_ipv4(host: &str) -> bool {
    host.parse::<std::net::Ipv4Addr>().is_ok()
}

/// Splits `host[:port]`, where host may be a bracketed IPv6 literal.
fn split_host_port(s: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let close = rest.find(']')?;
        let host = &s[..close + 2];
        let after = &rest[close + 1..];
        if after.is_empty() {
            return Some((host, None));
        }
        return after.strip_prefix(':').map(|p| (host, Some(p)));
    }
    match s.rsplit_once(':') {
        Some((h, p)) => Some((h, Some(p))),
        None => Some((s, None)),
    }
}

impl ServerName {
    /// Accepts the LM grammar and, for Matrix room versions, IP literals.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        const K: &str = "server name";
        if s.is_empty() {
            return Err(err(K, s, "empty"));
        }
        if s.len() > MAX_ID_LEN {
            return Err(err(K, s, "longer than 255 bytes"));
        }
        let (host, port) = split_host_port(s).ok_or_else(|| err(K, s, "malformed host"))?;
        if let Some(p) = port {
            if !is_port(p) {
                return Err(err(K, s, "port must be 1-5 digits"));
            }
        }
        if let Some(inner) = host.strip_prefix('[') {
            let inner = inner.trim_end_matches(']');
            if inner.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(err(K, s, "invalid IPv6 literal"));
            }
            return Ok(Self(s.to_owned()));
        }
        if !is_rfc1123_hostname(host) {
            return Err(err(K, s, "not an RFC 1123 host name"));
        }
        Ok(Self(s.to_owned()))
    }

    /// Parses with the LM grammar only: `hostname [":" port]` (item 1).
    /// IPv4 dotted quads fit its characters and are accepted for peers.
    pub fn parse_lm(s: &str) -> Result<Self, IdError> {
        if s.starts_with('[') {
            return Err(err("server name", s, "IP literals are not LM server names"));
        }
        Self::parse(s)
    }

    /// Checks a name this server may take as its own (item 2): no IP literal.
    pub fn validate_own(s: &str) -> Result<Self, IdError> {
        let name = Self::parse_lm(s)?;
        if is_ipv4(name.host()) {
            return Err(err("server name", s, "a server must not use an IP literal as its name"));
        }
        Ok(name)
    }

    /// The host part, without port (brackets kept for IPv6).
    pub fn host(&self) -> &str {
        split_host_port(&self.0).map(|(h, _)| h).unwrap_or(&self.0)
    }

    pub fn port(&self) -> Option<u16> {
        split_host_port(&self.0).and_then(|(_, p)| p).and_then(|p| p.parse().ok())
    }

    pub fn is_ip_literal(&self) -> bool {
        self.host().starts_with('[') || is_ipv4(self.host())
    }
}

/// Characters the LM draft allows in user localparts (no upper case).
fn is_lm_user_char(c: u8) -> bool {
    c.is_ascii_digit() || c.is_ascii_lowercase() || b"-.=_/+".contains(&c)
}

/// Matrix "historical" user ids: printable ASCII except `:`.
fn is_historical_user_char(c: u8) -> bool {
    (0x21..=0x7e).contains(&c) && c != b':'
}

/// Splits `sigil local ":" server` at the first colon.
fn split_sigil<'a>(kind: &'static str, s: &'a str, sigil: char) -> Result<(&'a str, &'a str), IdError> {
    if s.len() > MAX_ID_LEN {
        return Err(err(kind, s, "longer than 255 bytes"));
    }
    let rest = s.strip_prefix(sigil).ok_or_else(|| err(kind, s, "wrong sigil"))?;
    rest.split_once(':').ok_or_else(|| err(kind, s, "missing ':server'"))
}

impl UserId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        const K: &str = "user id";
        let (local, server) = split_sigil(K, s, '@')?;
        if local.is_empty() || !local.bytes().all(is_historical_user_char) {
            return Err(err(K, s, "invalid localpart"));
        }
        ServerName::parse(server).map_err(|_| err(K, s, "invalid server name"))?;
        Ok(Self(s.to_owned()))
    }

    /// Parses with the LM grammar: lower-case localpart (item 15).
    pub fn parse_lm(s: &str) -> Result<Self, IdError> {
        let id = Self::parse(s)?;
        if !id.is_lm_valid() {
            return Err(err("user id", s, "localpart has characters LM forbids"));
        }
        Ok(id)
    }

    pub fn is_lm_valid(&self) -> bool {
        self.localpart().bytes().all(is_lm_user_char) && ServerName::parse_lm(self.server_name_str()).is_ok()
    }

    pub fn localpart(&self) -> &str {
        &self.0[1..self.0.find(':').unwrap_or(1)]
    }

    fn server_name_str(&self) -> &str {
        &self.0[self.0.find(':').map_or(self.0.len(), |i| i + 1)..]
    }

    /// The server the user belongs to (the "origin" of their events).
    pub fn server_name(&self) -> ServerName {
        ServerName(self.server_name_str().to_owned())
    }

    /// Compares the user's server with `server` without allocating.
    pub fn is_on(&self, server: &ServerName) -> bool {
        self.server_name_str() == server.as_str()
    }
}

fn is_lm_opaque(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-.~_".contains(&c)
}

impl RoomId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        const K: &str = "room id";
        if s.len() > MAX_ID_LEN {
            return Err(err(K, s, "longer than 255 bytes"));
        }
        let rest = s.strip_prefix('!').ok_or_else(|| err(K, s, "wrong sigil"))?;
        match rest.split_once(':') {
            Some((local, server)) => {
                if local.is_empty() || local.bytes().any(|c| c.is_ascii_control()) {
                    return Err(err(K, s, "invalid localpart"));
                }
                ServerName::parse(server).map_err(|_| err(K, s, "invalid server name"))?;
            }
            // Room version 12: `!` + URL-safe reference hash, no server part.
            None if !rest.is_empty() && rest.bytes().all(is_urlsafe_b64_char) => {}
            None => return Err(err(K, s, "missing ':server'")),
        }
        Ok(Self(s.to_owned()))
    }

    /// LM grammar: `"!" 1*opaque ":" server_name`.
    pub fn is_lm_valid(&self) -> bool {
        match self.0[1..].split_once(':') {
            Some((local, server)) => local.bytes().all(is_lm_opaque) && ServerName::parse_lm(server).is_ok(),
            None => false,
        }
    }

    /// The namespace domain, if the id has one. Never use it to find a hub
    /// (item 7); auth rule 3.2 is its only use.
    pub fn domain(&self) -> Option<&str> {
        self.0.split_once(':').map(|(_, d)| d)
    }

    /// Room version 12: the id of the create event this room id is the
    /// hash of; `None` for ids with a server part.
    pub fn create_event_id(&self) -> Option<EventId> {
        if self.domain().is_some() {
            return None;
        }
        Some(EventId(format!("${}", &self.0[1..])))
    }
}

fn is_urlsafe_b64_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

fn is_std_b64_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'+' || c == b'/'
}

impl EventId {
    /// Accepts every room version's form; reference-hash ids are checked
    /// against their alphabet, v1/v2 ids need `:server`.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        const K: &str = "event id";
        if s.len() > MAX_ID_LEN {
            return Err(err(K, s, "longer than 255 bytes"));
        }
        let rest = s.strip_prefix('$').ok_or_else(|| err(K, s, "wrong sigil"))?;
        if rest.is_empty() {
            return Err(err(K, s, "empty"));
        }
        let ok = rest.bytes().all(is_urlsafe_b64_char)
            || rest.bytes().all(is_std_b64_char)
            || rest.split_once(':').is_some_and(|(l, d)| !l.is_empty() && ServerName::parse(d).is_ok());
        if !ok {
            return Err(err(K, s, "not a reference hash or $local:server"));
        }
        Ok(Self(s.to_owned()))
    }

    /// Builds an id from a reference hash already encoded by the caller.
    pub(crate) fn from_reference_hash(hash: &str) -> Self {
        Self(format!("${hash}"))
    }

    /// The room id of a room version 12 room whose create event has this id.
    pub fn to_room_id(&self) -> RoomId {
        RoomId(format!("!{}", &self.0[1..]))
    }
}

fn is_key_version_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

impl KeyId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        const K: &str = "key id";
        if s.len() > MAX_ID_LEN {
            return Err(err(K, s, "longer than 255 bytes"));
        }
        let (alg, ver) = s.split_once(':').ok_or_else(|| err(K, s, "expected algorithm:version"))?;
        if alg.is_empty() || ver.is_empty() || !ver.bytes().all(is_key_version_char) {
            return Err(err(K, s, "expected algorithm:version with [A-Za-z0-9_] version"));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn ed25519(version: &str) -> Result<Self, IdError> {
        Self::parse(&format!("ed25519:{version}"))
    }

    pub fn algorithm(&self) -> &str {
        self.0.split_once(':').map_or("", |(a, _)| a)
    }

    pub fn version(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, v)| v)
    }

    pub fn is_ed25519(&self) -> bool {
        self.algorithm() == "ed25519"
    }
}

impl DeviceId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.is_empty() || s.len() > MAX_ID_LEN || !s.bytes().all(is_key_version_char) {
            return Err(err("device id", s, "expected 1-255 of [A-Za-z0-9_]"));
        }
        Ok(Self(s.to_owned()))
    }
}

impl RoomVersionId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s == "I.1" {
            return Ok(Self(s.to_owned()));
        }
        let ok = !s.is_empty()
            && s.len() <= MAX_ROOM_VERSION_LEN
            && s.bytes().all(|c| c.is_ascii_digit() || c.is_ascii_lowercase() || c == b'-' || c == b'.');
        if !ok {
            return Err(err("room version", s, "expected 1-128 of [0-9a-z.-]"));
        }
        Ok(Self(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names() {
        for ok in ["example.org", "example.org:8448", "127.0.0.1:3000", "a-b.c", "[::1]:80", "[2001:db8::1]"] {
            assert!(ServerName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a.org", "a-.org", "a..org", "ex ample", "a.org:", "a.org:123456", "[::zz]", "a_b.org"] {
            assert!(ServerName::parse(bad).is_err(), "{bad}");
        }
        assert!(ServerName::parse_lm("[::1]").is_err());
        assert!(ServerName::parse_lm("127.0.0.1:3000").is_ok());
        assert!(ServerName::validate_own("127.0.0.1").is_err());
        assert!(ServerName::validate_own("localhost:8448").is_ok());
        let long = format!("{}.org", "a.".repeat(130));
        assert!(ServerName::parse(&long).is_err());
        let n = ServerName::parse("h.example:99").unwrap();
        assert_eq!((n.host(), n.port()), ("h.example", Some(99)));
    }

    #[test]
    fn user_ids() {
        let u = UserId::parse("@alice:example.org").unwrap();
        assert_eq!(u.localpart(), "alice");
        assert_eq!(u.server_name().as_str(), "example.org");
        assert!(u.is_lm_valid());
        let upper = UserId::parse("@Alice:example.org").unwrap();
        assert!(!upper.is_lm_valid());
        assert!(UserId::parse_lm("@Alice:example.org").is_err());
        assert!(UserId::parse("@:example.org").is_err());
        assert!(UserId::parse("alice:example.org").is_err());
        assert!(UserId::parse(&format!("@{}:a.org", "x".repeat(250))).is_err());
    }

    #[test]
    fn room_and_event_ids() {
        assert!(RoomId::parse("!abc:hub.example").unwrap().is_lm_valid());
        assert!(RoomId::parse("!31hneApxJ_1o-63DmFrpeqnkFfWppnzWso1JvH3ogLM").is_ok());
        assert!(!RoomId::parse("!a b:hub.example").unwrap().is_lm_valid());
        assert!(EventId::parse("$Jo_lmFR-e6lzrimzCA7DevIn2OwhuQYmd9xkcJBoqAA").is_ok());
        assert!(EventId::parse("$RrGxF28UrHLmoASHndYb9Jb/1SFww2ptmtur9INS438").is_ok());
        assert!(EventId::parse("$15660585693272iEryv:maunium.net").is_ok());
        assert!(EventId::parse("$a b").is_err());
        assert!(EventId::parse("$").is_err());
    }

    #[test]
    fn key_device_version_ids() {
        let k = KeyId::parse("ed25519:a_nZvP").unwrap();
        assert!(k.is_ed25519());
        assert_eq!(k.version(), "a_nZvP");
        assert!(KeyId::parse("ed25519:").is_err());
        assert!(KeyId::parse("ed25519:a-b").is_err());
        assert!(DeviceId::parse("ABCDEF_1").is_ok());
        assert!(DeviceId::parse("AB-CD").is_err());
        assert!(RoomVersionId::parse("org.matrix.i-d.ralston-mimi-linearized-matrix.02").is_ok());
        assert!(RoomVersionId::parse("I.1").is_ok());
        assert!(RoomVersionId::parse("I.2").is_err());
        assert!(RoomVersionId::parse(&"1".repeat(129)).is_err());
    }
}
