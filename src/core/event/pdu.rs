//! The two event shapes: PDUs (fully formed events) and LPDUs (partial
//! events a participant sends its hub). Both are parsed once into checked
//! fields while keeping the JSON they were built from, since hashes and
//! signatures cover every key, known or not (digest 3.1-3.2; items 20-32).

use serde_json::Value;

use super::hash::event_id;
use super::version::RoomVersion;
use super::{EventError, MAX_AUTH_EVENTS, MAX_FIELD_CHARS, MAX_PDU_BYTES, MAX_PREV_EVENTS};
use crate::core::ids::{EventId, RoomId, ServerName, UserId};
use crate::core::json::{self, object_to_canonical, Object};

/// How much of the event format a parse insists on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// A fully formed event as servers exchange it (receive step 1).
    Full,
    /// Only what the authorization rules read (type, sender, room, content,
    /// state key, prev events); for tools and test vectors.
    Loose,
}

/// Fields common to PDUs and LPDUs.
#[derive(Debug, Clone)]
struct Header {
    room_id: RoomId,
    sender: UserId,
    event_type: String,
    state_key: Option<String>,
    origin_server_ts: i64,
    hub_server: Option<ServerName>,
}

fn field<'a>(o: &'a Object, k: &'static str) -> Result<&'a Value, EventError> {
    o.get(k).ok_or(EventError::Missing(k))
}

fn str_field<'a>(o: &'a Object, k: &'static str) -> Result<&'a str, EventError> {
    field(o, k)?.as_str().ok_or(EventError::Missing(k))
}

fn limited(o: &Object, k: &'static str) -> Result<Option<String>, EventError> {
    match o.get(k) {
        None => Ok(None),
        Some(Value::String(s)) if s.chars().count() <= MAX_FIELD_CHARS => Ok(Some(s.clone())),
        Some(Value::String(_)) => Err(EventError::TooLong { field: k, max: MAX_FIELD_CHARS }),
        Some(_) => Err(EventError::Missing(k)),
    }
}

fn check_size(json: &Object, version: &RoomVersion) -> Result<(), EventError> {
    let len = object_to_canonical(json, version.canonical)?.len();
    if len > MAX_PDU_BYTES {
        return Err(EventError::TooLarge(len));
    }
    Ok(())
}

fn event_refs(o: &Object, k: &'static str, required: bool) -> Result<Vec<EventId>, EventError> {
    let items = match o.get(k) {
        None if !required => return Ok(Vec::new()),
        None => return Err(EventError::Missing(k)),
        Some(v) => v.as_array().ok_or(EventError::Missing(k))?,
    };
    items
        .iter()
        .map(|item| {
            // v1/v2 reference events as `[event_id, {hashes}]`.
            let s = item
                .as_str()
                .or_else(|| item.as_array().and_then(|a| a.first()).and_then(Value::as_str))
                .ok_or(EventError::Missing(k))?;
            EventId::parse(s).map_err(EventError::Id)
        })
        .collect()
}

impl Header {
    fn parse(version: &RoomVersion, o: &Object, schema: Schema) -> Result<Self, EventError> {
        let event_type = limited(o, "type")?.ok_or(EventError::Missing("type"))?;
        let state_key = limited(o, "state_key")?;
        let sender = UserId::parse(str_field(o, "sender")?)?;
        if version.lm && schema == Schema::Full && !sender.is_lm_valid() {
            return Err(EventError::Invalid("sender is not a valid LM user id"));
        }
        let room_id = match o.get("room_id") {
            Some(Value::String(s)) => RoomId::parse(s)?,
            Some(_) => return Err(EventError::Missing("room_id")),
            // v12 create events carry no room id: it is their own hash.
            None if version.room_id_from_create && event_type == "m.room.create" => event_id(version, o)?.to_room_id(),
            None => return Err(EventError::Missing("room_id")),
        };
        if version.lm && schema == Schema::Full && !room_id.is_lm_valid() {
            return Err(EventError::Invalid("room_id is not a valid LM room id"));
        }
        let origin_server_ts = match (o.get("origin_server_ts"), schema) {
            (Some(v), _) => v.as_i64().ok_or(EventError::Missing("origin_server_ts"))?,
            (None, Schema::Loose) => 0,
            (None, Schema::Full) => return Err(EventError::Missing("origin_server_ts")),
        };
        if !matches!(o.get("content"), Some(Value::Object(_))) {
            return Err(EventError::Missing("content"));
        }
        let hub_server = match (version.lm, o.get("hub_server")) {
            (true, Some(v)) => {
                let s = v.as_str().ok_or(EventError::Missing("hub_server"))?;
                Some(ServerName::parse_lm(s)?)
            }
            _ => None,
        };
        if schema == Schema::Full {
            for k in ["hashes", "signatures"] {
                if !matches!(o.get(k), Some(Value::Object(_))) {
                    return Err(EventError::Missing(k));
                }
            }
        }
        Ok(Header { room_id, sender, event_type, state_key, origin_server_ts, hub_server })
    }
}

fn has_lpdu_hash(o: &Object) -> bool {
    o.get("hashes").and_then(|h| h.get("lpdu")).and_then(|l| l.get("sha256")).is_some_and(Value::is_string)
}

/// A fully formed event: `auth_events`, `prev_events`, `hashes.sha256` and
/// the signatures of its origin (and hub).
#[derive(Debug, Clone)]
pub struct Pdu {
    version: &'static RoomVersion,
    json: Object,
    event_id: EventId,
    header: Header,
    prev_events: Vec<EventId>,
    auth_events: Vec<EventId>,
    depth: Option<i64>,
    /// Received with content that did not match its hash, so only its
    /// redacted form is held.
    hash_redacted: bool,
}

impl Pdu {
    /// Parses event JSON text with the room version's number rules.
    pub fn from_bytes(version: &'static RoomVersion, bytes: &[u8], schema: Schema) -> Result<Self, EventError> {
        let json = json::parse_object(bytes, version.numbers)?;
        Self::from_object(version, json, schema)
    }

    /// Checks the event format (receive step 1) and computes the event id.
    pub fn from_object(version: &'static RoomVersion, mut json: Object, schema: Schema) -> Result<Self, EventError> {
        // Never hashed or signed; served fresh by whoever serves the event.
        json.remove("unsigned");
        if version.lm {
            json.remove("event_id");
        }
        let header = Header::parse(version, &json, schema)?;
        let full = schema == Schema::Full;
        let prev_events = event_refs(&json, "prev_events", full)?;
        let auth_events = event_refs(&json, "auth_events", full)?;
        let depth = match json.get("depth") {
            Some(v) => Some(v.as_i64().filter(|d| *d >= 0).ok_or(EventError::Missing("depth"))?),
            None if full && !version.lm => return Err(EventError::Missing("depth")),
            None => None,
        };
        if full {
            if version.lm {
                // Item 24: hub_server and hashes.lpdu come together.
                match (header.hub_server.is_some(), has_lpdu_hash(&json)) {
                    (true, false) => return Err(EventError::Missing("hashes.lpdu.sha256")),
                    (false, true) => return Err(EventError::Forbidden("hashes.lpdu")),
                    _ => {}
                }
                // Item 215: hub-built events extend the list by one link.
                if header.hub_server.is_some() && prev_events.len() != 1 {
                    return Err(EventError::Invalid("hub_server events need exactly one prev_event"));
                }
            }
            if prev_events.len() > MAX_PREV_EVENTS {
                return Err(EventError::TooLong { field: "prev_events", max: MAX_PREV_EVENTS });
            }
            if auth_events.len() > MAX_AUTH_EVENTS {
                return Err(EventError::TooLong { field: "auth_events", max: MAX_AUTH_EVENTS });
            }
        }
        check_size(&json, version)?;
        let event_id = event_id(version, &json)?;
        Ok(Pdu { version, json, event_id, header, prev_events, auth_events, depth, hash_redacted: false })
    }

    /// Marks an event kept in redacted form because its content hash did
    /// not match (receive step 3).
    pub fn kept_redacted(mut self) -> Self {
        self.hash_redacted = true;
        self
    }

    pub fn hash_redacted(&self) -> bool {
        self.hash_redacted
    }

    /// Re-reads an event this server checked and stored earlier: the id is
    /// taken as stored, not recomputed (hashing every read would dominate
    /// sync and history reads).
    pub fn from_trusted(version: &'static RoomVersion, json: Object, event_id: EventId) -> Result<Self, EventError> {
        let header = Header::parse(version, &json, Schema::Loose)?;
        let prev_events = event_refs(&json, "prev_events", false)?;
        let auth_events = event_refs(&json, "auth_events", false)?;
        let depth = json.get("depth").and_then(Value::as_i64);
        Ok(Pdu { version, json, event_id, header, prev_events, auth_events, depth, hash_redacted: false })
    }

    pub fn version(&self) -> &'static RoomVersion {
        self.version
    }
    pub fn event_id(&self) -> &EventId {
        &self.event_id
    }
    pub fn room_id(&self) -> &RoomId {
        &self.header.room_id
    }
    pub fn sender(&self) -> &UserId {
        &self.header.sender
    }
    pub fn event_type(&self) -> &str {
        &self.header.event_type
    }
    pub fn state_key(&self) -> Option<&str> {
        self.header.state_key.as_deref()
    }
    pub fn is_state(&self) -> bool {
        self.header.state_key.is_some()
    }
    pub fn origin_server_ts(&self) -> i64 {
        self.header.origin_server_ts
    }
    pub fn hub_server(&self) -> Option<&ServerName> {
        self.header.hub_server.as_ref()
    }
    pub fn prev_events(&self) -> &[EventId] {
        &self.prev_events
    }
    pub fn auth_events(&self) -> &[EventId] {
        &self.auth_events
    }
    pub fn depth(&self) -> Option<i64> {
        self.depth
    }
    pub fn content(&self) -> &Object {
        self.json["content"].as_object().expect("checked at parse")
    }
    /// `content.membership` of a member event.
    pub fn membership(&self) -> Option<&str> {
        self.content().get("membership").and_then(Value::as_str)
    }
    pub fn json(&self) -> &Object {
        &self.json
    }
    pub fn into_json(self) -> Object {
        self.json
    }
    /// `hashes.lpdu.sha256`, which identifies the LPDU a hub built this from.
    pub fn lpdu_hash(&self) -> Option<&str> {
        self.json.get("hashes").and_then(|h| h.get("lpdu")).and_then(|l| l.get("sha256")).and_then(Value::as_str)
    }
}

/// A participant's partial event: no `auth_events`/`prev_events`, only
/// `hashes.lpdu`, `hub_server` naming the hub (OQ-2).
#[derive(Debug, Clone)]
pub struct Lpdu {
    version: &'static RoomVersion,
    json: Object,
    lpdu_id: EventId,
    header: Header,
}

impl Lpdu {
    /// Whether an object has the LPDU shape rather than the PDU one.
    pub fn looks_like_lpdu(o: &Object) -> bool {
        !o.contains_key("auth_events")
            && !o.contains_key("prev_events")
            && o.get("hashes").is_none_or(|h| h.get("sha256").is_none())
    }

    pub fn from_object(version: &'static RoomVersion, mut json: Object) -> Result<Self, EventError> {
        if !version.lm {
            return Err(EventError::Invalid("LPDUs exist only in LM rooms"));
        }
        json.remove("unsigned");
        json.remove("event_id");
        for k in ["auth_events", "prev_events"] {
            if json.contains_key(k) {
                return Err(EventError::Forbidden(k));
            }
        }
        let header = Header::parse(version, &json, Schema::Full)?;
        if header.hub_server.is_none() {
            return Err(EventError::Missing("hub_server"));
        }
        let hashes = json["hashes"].as_object().expect("checked by Header::parse");
        if hashes.keys().any(|k| k != "lpdu") {
            return Err(EventError::Forbidden("hashes other than lpdu"));
        }
        if !has_lpdu_hash(&json) {
            return Err(EventError::Missing("hashes.lpdu.sha256"));
        }
        check_size(&json, version)?;
        let lpdu_id = event_id(version, &json)?;
        Ok(Lpdu { version, json, lpdu_id, header })
    }

    pub fn version(&self) -> &'static RoomVersion {
        self.version
    }
    /// The LPDU's own reference hash, which keys `failed_pdus` (digest E5).
    pub fn lpdu_id(&self) -> &EventId {
        &self.lpdu_id
    }
    pub fn room_id(&self) -> &RoomId {
        &self.header.room_id
    }
    pub fn sender(&self) -> &UserId {
        &self.header.sender
    }
    pub fn event_type(&self) -> &str {
        &self.header.event_type
    }
    pub fn state_key(&self) -> Option<&str> {
        self.header.state_key.as_deref()
    }
    pub fn hub_server(&self) -> &ServerName {
        self.header.hub_server.as_ref().expect("checked at parse")
    }
    pub fn origin_server_ts(&self) -> i64 {
        self.header.origin_server_ts
    }
    pub fn content(&self) -> &Object {
        self.json["content"].as_object().expect("checked at parse")
    }
    pub fn lpdu_hash(&self) -> &str {
        self.json["hashes"]["lpdu"]["sha256"].as_str().expect("checked at parse")
    }
    pub fn json(&self) -> &Object {
        &self.json
    }
    pub fn into_json(self) -> Object {
        self.json
    }
}
