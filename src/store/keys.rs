//! Every key layout of the key-value store, in one place.
//!
//! A key is a one-byte table tag followed by its parts. Strings are written
//! with a two-byte length prefix so no character (not even NUL in a state
//! key) can make two keys collide; numbers are big-endian so byte order is
//! numeric order.

/// Table tags.
pub mod table {
    pub const ROOM: u8 = b'r';
    pub const EVENT: u8 = b'e';
    pub const LIST: u8 = b'l';
    pub const STATE: u8 = b's';
    pub const STREAM: u8 = b't';
    pub const LPDU_INDEX: u8 = b'h';
    pub const USER: u8 = b'u';
    pub const TOKEN: u8 = b'a';
    pub const MEMBERSHIP: u8 = b'm';
    pub const QUEUE: u8 = b'q';
    pub const DESTINATION: u8 = b'c';
    pub const TXN: u8 = b'x';
    pub const PENDING: u8 = b'p';
    pub const CLIENT_TXN: u8 = b'n';
    pub const SERVER_KEYS: u8 = b'k';
    pub const POSITION: u8 = b'z';
    pub const USER_TOKEN: u8 = b'b';
    pub const ACCOUNT_DATA: u8 = b'd';
    pub const FILTER: u8 = b'f';
    pub const RECEIPT: u8 = b'i';
    pub const DEVICE: u8 = b'v';
    pub const ALIAS: u8 = b'w';
    /// Format 2's side stream, moved under `SIDE_TOPIC` by format 3.
    pub const SIDE: u8 = b'o';
    pub const STATE_AFTER: u8 = b'g';
    pub const DEVICE_KEYS: u8 = b'K';
    pub const ONE_TIME_KEY: u8 = b'O';
    pub const FALLBACK_KEY: u8 = b'F';
    pub const TO_DEVICE: u8 = b'T';
    pub const TO_DEVICE_SEEN: u8 = b'M';
    pub const TO_DEVICE_TXN: u8 = b'N';
    pub const ROOM_STREAM: u8 = b'y';
    pub const SIDE_TOPIC: u8 = b'j';
    pub const USER_KEY: u8 = b'E';
    pub const MEDIA: u8 = b'D';
    pub const REFRESH_TOKEN: u8 = b'Q';
    pub const REPORT: u8 = b'V';
    pub const PUBLISHED_ROOM: u8 = b'W';
    pub const RELATION: u8 = b'P';
    pub const REGISTRATION_TOKEN: u8 = b'G';
    pub const THUMBNAIL: u8 = b'H';
    pub const MEDIA_BY_USER: u8 = b'U';
    pub const MEDIA_REMOTE: u8 = b'R';
    pub const MEDIA_FILE_REF: u8 = b'S';
    pub const PUSHER: u8 = b'B';
    pub const PUSH_QUEUE: u8 = b'C';
    pub const META: u8 = b'_';
}

/// Builds a key part by part.
#[derive(Debug, Clone)]
pub struct Key(Vec<u8>);

impl Key {
    pub fn new(table: u8) -> Self {
        let mut v = Vec::with_capacity(64);
        v.push(table);
        Key(v)
    }

    pub fn s(mut self, part: &str) -> Self {
        let len = u16::try_from(part.len()).unwrap_or(u16::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(&part.as_bytes()[..len as usize]);
        self
    }

    pub fn n(mut self, n: u64) -> Self {
        self.0.extend_from_slice(&n.to_be_bytes());
        self
    }

    pub fn build(self) -> Vec<u8> {
        self.0
    }
}

/// Reads the parts of a key back, in the order they were written.
pub struct KeyReader<'a> {
    rest: &'a [u8],
}

impl<'a> KeyReader<'a> {
    /// Skips the table tag.
    pub fn new(key: &'a [u8]) -> Self {
        KeyReader { rest: key.get(1..).unwrap_or_default() }
    }

    pub fn s(&mut self) -> Option<&'a str> {
        let len = u16::from_be_bytes(self.rest.get(..2)?.try_into().ok()?) as usize;
        let part = self.rest.get(2..2 + len)?;
        self.rest = &self.rest[2 + len..];
        std::str::from_utf8(part).ok()
    }

    pub fn n(&mut self) -> Option<u64> {
        let n = u64::from_be_bytes(self.rest.get(..8)?.try_into().ok()?);
        self.rest = &self.rest[8..];
        Some(n)
    }
}

pub fn room(room: &str) -> Vec<u8> {
    Key::new(table::ROOM).s(room).build()
}

pub fn event(id: &str) -> Vec<u8> {
    Key::new(table::EVENT).s(id).build()
}

/// `(room, index) → event id`: the room's list.
pub fn list(room: &str, index: u64) -> Vec<u8> {
    Key::new(table::LIST).s(room).n(index).build()
}

/// `(room, type, state_key) → event id`: current state.
pub fn state(room: &str, event_type: &str, state_key: &str) -> Vec<u8> {
    Key::new(table::STATE).s(room).s(event_type).s(state_key).build()
}

/// `event id → StateSnapshot`: mixed rooms' state after each event.
pub fn state_after(event: &str) -> Vec<u8> {
    Key::new(table::STATE_AFTER).s(event).build()
}

pub fn state_prefix(room: &str) -> Vec<u8> {
    Key::new(table::STATE).s(room).build()
}

/// `position → (room, event id)`: this server's stream, for /sync.
pub fn stream(pos: u64) -> Vec<u8> {
    Key::new(table::STREAM).n(pos).build()
}

/// `(room, position) → event id`: one room's part of the stream, so a
/// sync reads only the rooms of its user.
pub fn room_stream(room: &str, pos: u64) -> Vec<u8> {
    Key::new(table::ROOM_STREAM).s(room).n(pos).build()
}

/// `(room, lpdu hash) → event id`: LPDUs a hub already sequenced (OQ-43).
pub fn lpdu_index(room: &str, lpdu_hash: &str) -> Vec<u8> {
    Key::new(table::LPDU_INDEX).s(room).s(lpdu_hash).build()
}

pub fn user(user: &str) -> Vec<u8> {
    Key::new(table::USER).s(user).build()
}

pub fn user_prefix() -> Vec<u8> {
    Key::new(table::USER).build()
}

pub fn token(token: &str) -> Vec<u8> {
    Key::new(table::TOKEN).s(token).build()
}

pub fn membership(user: &str, room: &str) -> Vec<u8> {
    Key::new(table::MEMBERSHIP).s(user).s(room).build()
}

pub fn membership_prefix(user: &str) -> Vec<u8> {
    Key::new(table::MEMBERSHIP).s(user).build()
}

/// `(destination, position) → item`: outbound queue.
pub fn queue(dest: &str, pos: u64) -> Vec<u8> {
    Key::new(table::QUEUE).s(dest).n(pos).build()
}

pub fn queue_prefix(dest: &str) -> Vec<u8> {
    Key::new(table::QUEUE).s(dest).build()
}

pub fn destination(dest: &str) -> Vec<u8> {
    Key::new(table::DESTINATION).s(dest).build()
}

pub fn txn(origin: &str, endpoint: &str, txn: &str) -> Vec<u8> {
    Key::new(table::TXN).s(origin).s(endpoint).s(txn).build()
}

pub fn pending(lpdu_hash: &str) -> Vec<u8> {
    Key::new(table::PENDING).s(lpdu_hash).build()
}

pub fn client_txn(user: &str, device: &str, txn: &str) -> Vec<u8> {
    Key::new(table::CLIENT_TXN).s(user).s(device).s(txn).build()
}

pub fn server_keys(server: &str) -> Vec<u8> {
    Key::new(table::SERVER_KEYS).s(server).build()
}

/// `(user, device) → token`, to end a device's or every session.
pub fn user_token(user: &str, device: &str) -> Vec<u8> {
    Key::new(table::USER_TOKEN).s(user).s(device).build()
}

/// `(user, room or "", type) → content`.
pub fn account_data(user: &str, room: &str, kind: &str) -> Vec<u8> {
    Key::new(table::ACCOUNT_DATA).s(user).s(room).s(kind).build()
}

pub fn account_data_prefix(user: &str, room: &str) -> Vec<u8> {
    Key::new(table::ACCOUNT_DATA).s(user).s(room).build()
}

pub fn filter(user: &str, id: &str) -> Vec<u8> {
    Key::new(table::FILTER).s(user).s(id).build()
}

/// `(room, receipt type, user) → receipt`.
/// `(room, kind, user[, thread]) → Receipt`: an unthreaded receipt's key
/// is the prefix of the same user's receipts in threads.
pub fn receipt(room: &str, kind: &str, user: &str, thread: &str) -> Vec<u8> {
    let k = Key::new(table::RECEIPT).s(room).s(kind).s(user);
    if thread.is_empty() {
        k.build()
    } else {
        k.s(thread).build()
    }
}

pub fn receipt_prefix(room: &str) -> Vec<u8> {
    Key::new(table::RECEIPT).s(room).build()
}

pub fn device(user: &str, device: &str) -> Vec<u8> {
    Key::new(table::DEVICE).s(user).s(device).build()
}

pub fn device_prefix(user: &str) -> Vec<u8> {
    Key::new(table::DEVICE).s(user).build()
}

/// `(user, device) → DeviceKeysRecord`.
pub fn device_keys(user: &str, device: &str) -> Vec<u8> {
    Key::new(table::DEVICE_KEYS).s(user).s(device).build()
}

pub fn device_keys_prefix(user: &str) -> Vec<u8> {
    Key::new(table::DEVICE_KEYS).s(user).build()
}

/// `(user, device, algorithm, key id) → OneTimeKeyRecord`.
pub fn one_time_key(user: &str, device: &str, algorithm: &str, key_id: &str) -> Vec<u8> {
    Key::new(table::ONE_TIME_KEY).s(user).s(device).s(algorithm).s(key_id).build()
}

pub fn one_time_key_prefix(user: &str, device: &str) -> Vec<u8> {
    Key::new(table::ONE_TIME_KEY).s(user).s(device).build()
}

/// `(user, device, algorithm) → FallbackKeyRecord`.
pub fn fallback_key(user: &str, device: &str, algorithm: &str) -> Vec<u8> {
    Key::new(table::FALLBACK_KEY).s(user).s(device).s(algorithm).build()
}

pub fn fallback_key_prefix(user: &str, device: &str) -> Vec<u8> {
    Key::new(table::FALLBACK_KEY).s(user).s(device).build()
}

/// `(user, device, position) → ToDeviceRecord`: a device's inbox.
pub fn to_device(user: &str, device: &str, pos: u64) -> Vec<u8> {
    Key::new(table::TO_DEVICE).s(user).s(device).n(pos).build()
}

pub fn to_device_prefix(user: &str, device: &str) -> Vec<u8> {
    Key::new(table::TO_DEVICE).s(user).s(device).build()
}

/// `(origin, message id) → time seen`: `m.direct_to_device` EDUs taken.
pub fn to_device_seen(origin: &str, message_id: &str) -> Vec<u8> {
    Key::new(table::TO_DEVICE_SEEN).s(origin).s(message_id).build()
}

/// `(user, device, event type, txn id)`: a client's `sendToDevice` done.
pub fn to_device_txn(user: &str, device: &str, event_type: &str, txn: &str) -> Vec<u8> {
    Key::new(table::TO_DEVICE_TXN).s(user).s(device).s(event_type).s(txn).build()
}

pub fn alias(alias: &str) -> Vec<u8> {
    Key::new(table::ALIAS).s(alias).build()
}

/// `(user, kind, a, b) → UserKeyEntry`: a user's encryption objects.
pub fn user_key(user: &str, kind: &str, a: &str, b: &str) -> Vec<u8> {
    Key::new(table::USER_KEY).s(user).s(kind).s(a).s(b).build()
}

/// Every `(a, b)` of one kind, or of one `a` of it.
pub fn user_key_prefix(user: &str, kind: &str, a: Option<&str>) -> Vec<u8> {
    let k = Key::new(table::USER_KEY).s(user).s(kind);
    match a {
        Some(a) => k.s(a).build(),
        None => k.build(),
    }
}

/// `(topic, position) → side entry`: the side stream by what it is about.
pub fn side_topic(topic: &super::SideTopic<'_>, pos: u64) -> Vec<u8> {
    let (kind, id) = topic.parts();
    Key::new(table::SIDE_TOPIC).s(kind).s(id).n(pos).build()
}

/// The store's format version (`FORMAT_VERSION`).
pub fn format_version() -> Vec<u8> {
    Key::new(table::META).s("format").build()
}

/// The last readiness probe's write.
pub fn probe() -> Vec<u8> {
    Key::new(table::META).s("probe").build()
}

/// The stream position through which events were looked at for pushers.
pub fn push_cursor() -> Vec<u8> {
    Key::new(table::META).s("push_cursor").build()
}

/// `(user, app_id, pushkey) → PusherRecord`.
pub fn pusher(user: &str, app_id: &str, pushkey: &str) -> Vec<u8> {
    Key::new(table::PUSHER).s(user).s(app_id).s(pushkey).build()
}

/// Every pusher, or one user's.
pub fn pusher_prefix(user: Option<&str>) -> Vec<u8> {
    let k = Key::new(table::PUSHER);
    match user {
        Some(u) => k.s(u).build(),
        None => k.build(),
    }
}

/// `(user, app_id, pushkey, position) → PushItem`: a pusher's queue.
pub fn push_item(user: &str, app_id: &str, pushkey: &str, pos: u64) -> Vec<u8> {
    Key::new(table::PUSH_QUEUE).s(user).s(app_id).s(pushkey).n(pos).build()
}

pub fn push_queue_prefix(user: &str, app_id: &str, pushkey: &str) -> Vec<u8> {
    Key::new(table::PUSH_QUEUE).s(user).s(app_id).s(pushkey).build()
}

/// The highest position handed out, so a restart never reuses one.
pub fn position_high_water() -> Vec<u8> {
    Key::new(table::POSITION).build()
}

/// `(room, parent, position) → RelationEntry`: events relating to another,
/// in stream order.
pub fn relation(room: &str, parent: &str, pos: u64) -> Vec<u8> {
    Key::new(table::RELATION).s(room).s(parent).n(pos).build()
}

pub fn relation_prefix(room: &str, parent: Option<&str>) -> Vec<u8> {
    let k = Key::new(table::RELATION).s(room);
    match parent {
        Some(p) => k.s(p).build(),
        None => k.build(),
    }
}

/// `room → ()`: rooms in this server's public room directory.
pub fn published_room(room: &str) -> Vec<u8> {
    Key::new(table::PUBLISHED_ROOM).s(room).build()
}

pub fn published_room_prefix() -> Vec<u8> {
    Key::new(table::PUBLISHED_ROOM).build()
}

/// `(ts, id) → ReportRecord`: reports, oldest first.
pub fn report(ts: u64, id: &str) -> Vec<u8> {
    Key::new(table::REPORT).n(ts).s(id).build()
}

pub fn report_prefix() -> Vec<u8> {
    Key::new(table::REPORT).build()
}

/// `refresh token hash → RefreshToken`.
pub fn refresh_token(hash: &str) -> Vec<u8> {
    Key::new(table::REFRESH_TOKEN).s(hash).build()
}

/// `token → RegistrationTokenRecord`.
pub fn registration_token(token: &str) -> Vec<u8> {
    Key::new(table::REGISTRATION_TOKEN).s(token).build()
}

pub fn registration_token_prefix() -> Vec<u8> {
    Key::new(table::REGISTRATION_TOKEN).build()
}

/// `(server, media id) → MediaRecord`.
pub fn media(server: &str, id: &str) -> Vec<u8> {
    Key::new(table::MEDIA).s(server).s(id).build()
}

/// `(server, media id, size and method) → ThumbnailRecord`.
pub fn thumbnail(server: &str, id: &str, spec: &str) -> Vec<u8> {
    Key::new(table::THUMBNAIL).s(server).s(id).s(spec).build()
}

pub fn thumbnail_prefix(server: &str, id: &str) -> Vec<u8> {
    Key::new(table::THUMBNAIL).s(server).s(id).build()
}

/// `(user, media id) → size (8 bytes) and pending (1 byte)`: a local
/// user's uploads and reservations, for quotas.
pub fn media_by_user(user: &str, id: &str) -> Vec<u8> {
    Key::new(table::MEDIA_BY_USER).s(user).s(id).build()
}

pub fn media_usage(size: u64, pending: bool) -> Vec<u8> {
    let mut v = size.to_be_bytes().to_vec();
    v.push(u8::from(pending));
    v
}

pub fn media_usage_value(v: &[u8]) -> Option<(u64, bool)> {
    let size = u64::from_be_bytes(v.get(..8)?.try_into().ok()?);
    Some((size, *v.get(8)? == 1))
}

pub fn media_by_user_prefix(user: &str) -> Vec<u8> {
    Key::new(table::MEDIA_BY_USER).s(user).build()
}

/// `(fetched_ts, server, media id) → size`: remote media, oldest first.
pub fn media_remote(fetched_ts: u64, server: &str, id: &str) -> Vec<u8> {
    Key::new(table::MEDIA_REMOTE).n(fetched_ts).s(server).s(id).build()
}

pub fn media_remote_prefix() -> Vec<u8> {
    Key::new(table::MEDIA_REMOTE).build()
}

/// `(sha256, server, media id, thumbnail spec or "") → ()`: what uses a
/// file, so it is deleted with its last user.
pub fn media_file_ref(sha256: &str, server: &str, id: &str, spec: &str) -> Vec<u8> {
    Key::new(table::MEDIA_FILE_REF).s(sha256).s(server).s(id).s(spec).build()
}

pub fn media_file_ref_prefix(sha256: &str) -> Vec<u8> {
    Key::new(table::MEDIA_FILE_REF).s(sha256).build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_round_trip_and_order() {
        let k = state("!r:a", "m.room.member", "@u:\0x");
        let mut r = KeyReader::new(&k);
        assert_eq!((r.s(), r.s(), r.s()), (Some("!r:a"), Some("m.room.member"), Some("@u:\0x")));
        assert!(list("!r:a", 2) < list("!r:a", 10));
        let prefix = Key::new(table::LIST).s("!r:a").build();
        assert!(list("!r:a", 255).starts_with(&prefix));
        assert!(!list("!r:ab", 1).starts_with(&prefix));
    }
}
