//! Storage in domain terms. `Store` is the seam: roles talk to it, never to
//! sled or PostgreSQL. `KvStore` implements it over an ordered key-value
//! layer: `SledKv` on disk, `PgKv` in a PostgreSQL database, `MemKv` for
//! unit tests.

pub mod backup;
pub mod check;
mod format;
mod group_flush;
mod keys;
mod kv;
mod kv_store;
mod kv_writes;
mod pg_kv;
mod pg_lease;
mod pg_owners;
mod pg_stream;
mod pg_tls;
mod positions;
pub mod record;
mod sled_kv;
mod typed;

pub use kv::{for_each_page, BoxFuture, Entries, Kv, KvWrite, MemKv, ALL_KEYS_END};
pub use kv_store::KvStore;
pub use pg_kv::{Access, PgKv};
pub use pg_lease::LeaseHolder;
pub use positions::{Allocation, Handout, Others, OthersWatcher, Positions, SharedStream};
pub use sled_kv::SledKv;

/// The records kept in the store (generated from `proto/lmx/store.proto`).
pub mod records {
    include!(concat!(env!("OUT_DIR"), "/lmx.store.rs"));
}

use records::{
    AccessToken, AliasRecord, ClientTxn, DestinationState, DeviceKeysRecord, DeviceRecord, EventRecord,
    FallbackKeyRecord, MediaRecord, Membership, OneTimeKeyRecord, PendingLpdu, PushItem, PusherRecord, QueueItem,
    Receipt, RefreshToken, RegistrationTokenRecord, RelationEntry, ReportRecord, RoomRecord, ServerKeys, SideEntry,
    StateSnapshot, ThumbnailRecord, ToDeviceRecord, TxnResponse, UserKeyEntry, UserRecord,
};

use crate::core::ids::{EventId, RoomId, ServerName, UserId};
use std::sync::Arc;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("storage backend: {0}")]
    Backend(String),
    #[error("corrupt record at {0}")]
    Corrupt(String),
    #[error("the store has format {found}; this lmx reads formats up to {supported}")]
    NewerFormat { found: u32, supported: u32 },
    #[error("another lmx process serves this database: {0}")]
    Leased(LeaseHolder),
    #[error("the database has schema version {found}; this lmx knows versions up to {supported}")]
    NewerSchema { found: u32, supported: u32 },
    /// Another process of this server owns what was claimed (or took it
    /// over).
    #[error("owned by another lmx process: {0}")]
    Elsewhere(Owner),
}

/// The process of this server that owns what this one was refused, as the
/// store knew it then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub describe: String,
    /// Its client and federation listeners (`host:port`), once announced.
    pub client_addr: Option<String>,
    pub federation_addr: Option<String>,
}

impl Owner {
    /// An owner whose addresses are not known.
    pub fn unknown(describe: impl Into<String>) -> Owner {
        Owner { describe: describe.into(), client_addr: None, federation_addr: None }
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe)
    }
}

/// The layout and meaning of stored records. 1: the first (unmarked);
/// 2: access tokens kept as hashes; 3: the stream indexed by room and the
/// side stream by topic.
pub const FORMAT_VERSION: u32 = 3;

/// What the store keeps of an access token: its SHA-256, so a copy of the
/// store does not hand out sessions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenHash(String);

impl TokenHash {
    pub fn of(token: &str) -> TokenHash {
        TokenHash(crate::core::crypto::b64_encode(&crate::core::crypto::sha256(token.as_bytes())))
    }

    /// A hash read back from the store.
    pub fn from_stored(hash: String) -> TokenHash {
        TokenHash(hash)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl StoreError {
    /// Damage rather than a passing condition (a lock still held): trying
    /// again will not help.
    pub fn is_damage(&self) -> bool {
        matches!(self, StoreError::Corrupt(_) | StoreError::NewerFormat { .. } | StoreError::NewerSchema { .. })
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// An event in this server's stream (what /sync reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEntry {
    pub pos: u64,
    pub room: RoomId,
    pub event: EventId,
}

/// An event's (or EDU's) text as stored, and whether it is canonical in
/// both JSON forms (`EventRecord.canonical`): delivery then sends it as it
/// is. Anything else is kept as serde_json writes it and parsed to send.
pub fn stored_json(obj: &crate::core::json::Object) -> (Vec<u8>, bool) {
    match crate::core::json::object_canonical_in_both_forms(obj) {
        Some(bytes) => (bytes, true),
        None => (serde_json::to_vec(obj).unwrap_or_default(), false),
    }
}

/// The user-key kind of a user's device-list version (and, for another
/// server's user, the cached list).
pub const DEVICE_LIST_KIND: &str = "device_list";
/// The user-key kind of MLS device objects (draft §9.2), by device id;
/// deleted with their device.
pub const MLS_DEVICE_KIND: &str = "mls_device";

/// What a side-stream entry is about; a sync reads only its user's topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SideTopic<'a> {
    Typing(&'a str),
    Receipts(&'a str),
    AccountData(&'a str),
    Presence,
    Devices,
    /// Keys changes one user alone is told of.
    DevicesSeenBy(&'a str),
}

impl<'a> SideTopic<'a> {
    pub fn of(entry: &'a SideEntry) -> Option<Self> {
        use records::side_entry::Kind;
        Some(match entry.kind.as_ref()? {
            Kind::TypingRoom(room) => SideTopic::Typing(room),
            Kind::ReceiptRoom(room) => SideTopic::Receipts(room),
            Kind::AccountData(change) => SideTopic::AccountData(&change.user_id),
            Kind::PresenceUser(_) => SideTopic::Presence,
            Kind::DeviceUser(_) => SideTopic::Devices,
            Kind::KeysSeenBy(k) => SideTopic::DevicesSeenBy(&k.viewer),
        })
    }

    /// The topic's kind and the room or user it is about (empty if none).
    pub fn parts(&self) -> (&'static str, &'a str) {
        match *self {
            SideTopic::Typing(room) => ("typing", room),
            SideTopic::Receipts(room) => ("receipts", room),
            SideTopic::AccountData(user) => ("account_data", user),
            SideTopic::Presence => ("presence", ""),
            SideTopic::Devices => ("devices", ""),
            SideTopic::DevicesSeenBy(viewer) => ("devices_seen_by", viewer),
        }
    }
}

/// One write in an atomic batch.
#[derive(Debug, Clone)]
pub enum Op {
    PutRoom(RoomRecord),
    PutEvent(EventId, EventRecord),
    ListEntry {
        room: RoomId,
        index: u64,
        event: EventId,
    },
    SetState {
        room: RoomId,
        event_type: String,
        state_key: String,
        event: EventId,
    },
    DeleteState {
        room: RoomId,
        event_type: String,
        state_key: String,
    },
    /// Mixed rooms: the state after an event.
    PutStateAfter {
        event: EventId,
        snapshot: StateSnapshot,
    },
    StreamEntry(StreamEntry),
    LpduIndex {
        room: RoomId,
        lpdu_hash: String,
        event: EventId,
    },
    PutMembership {
        user: UserId,
        room: RoomId,
        membership: Membership,
    },
    PutUser(UserRecord),
    /// A session: the token's hash, indexed by user and device too (and
    /// its refresh token, if it names one).
    PutToken {
        hash: TokenHash,
        record: AccessToken,
    },
    DeleteToken {
        hash: TokenHash,
        user: UserId,
        device: String,
    },
    PutDevice {
        user: UserId,
        device: String,
        record: DeviceRecord,
    },
    /// Removes the device with its keys and its to-device inbox.
    DeleteDevice {
        user: UserId,
        device: String,
    },
    PutDeviceKeys {
        user: UserId,
        device: String,
        keys: DeviceKeysRecord,
    },
    PutOneTimeKey {
        user: UserId,
        device: String,
        algorithm: String,
        key_id: String,
        key: OneTimeKeyRecord,
    },
    DeleteOneTimeKey {
        user: UserId,
        device: String,
        algorithm: String,
        key_id: String,
    },
    PutFallbackKey {
        user: UserId,
        device: String,
        algorithm: String,
        key: FallbackKeyRecord,
    },
    PutToDevice {
        user: UserId,
        device: String,
        pos: u64,
        message: ToDeviceRecord,
    },
    /// An `m.direct_to_device` EDU taken, so a repeat is not delivered twice.
    ToDeviceSeen {
        origin: ServerName,
        message_id: String,
        ts: i64,
    },
    /// A client's `sendToDevice` transaction done.
    ToDeviceTxn {
        user: UserId,
        device: String,
        event_type: String,
        txn: String,
    },
    /// Removes a device's to-device messages up to and including `up_to`.
    DeleteToDevice {
        user: UserId,
        device: String,
        up_to: u64,
    },
    /// A user's encryption object (`kind`, `a`, `b` name it).
    PutUserKey {
        user: UserId,
        kind: String,
        a: String,
        b: String,
        entry: UserKeyEntry,
    },
    /// Removes one object (`b` given), every one under `a`, or every one
    /// of the kind.
    DeleteUserKeys {
        user: UserId,
        kind: String,
        a: Option<String>,
        b: Option<String>,
    },
    /// Global (`room: None`) or room account data, as JSON text.
    PutAccountData {
        user: UserId,
        room: Option<RoomId>,
        kind: String,
        content: Vec<u8>,
    },
    PutFilter {
        user: UserId,
        id: String,
        json: Vec<u8>,
    },
    PutReceipt {
        room: RoomId,
        kind: String,
        user: UserId,
        receipt: Receipt,
    },
    PutAlias {
        alias: String,
        record: AliasRecord,
    },
    DeleteAlias(String),
    PutRegistrationToken {
        token: String,
        record: RegistrationTokenRecord,
    },
    DeleteRegistrationToken(String),
    /// A report an admin dismissed: its time and id.
    DeleteReport {
        ts: i64,
        id: String,
    },
    PutReport {
        id: String,
        record: ReportRecord,
    },
    /// An event relating to `parent`, at its stream position.
    PutRelation {
        room: RoomId,
        parent: String,
        pos: u64,
        entry: RelationEntry,
    },
    /// Lists a room in (`true`) or removes it from the public directory.
    PublishRoom(RoomId, bool),
    /// A media file's record, replacing one kept under the same id (its
    /// indexes follow).
    PutMedia {
        server: ServerName,
        id: String,
        record: MediaRecord,
    },
    /// A media record, its thumbnails and their indexes.
    DeleteMedia {
        server: ServerName,
        id: String,
    },
    PutThumbnail {
        server: ServerName,
        id: String,
        spec: String,
        record: ThumbnailRecord,
    },
    SideEntry {
        pos: u64,
        entry: SideEntry,
    },
    Enqueue {
        dest: ServerName,
        pos: u64,
        item: QueueItem,
    },
    /// Removes queue entries up to and including `up_to`.
    Dequeue {
        dest: ServerName,
        up_to: u64,
    },
    PutDestination {
        dest: ServerName,
        state: DestinationState,
    },
    PutTxnResponse {
        origin: String,
        endpoint: String,
        txn: String,
        response: TxnResponse,
    },
    PutPending {
        lpdu_hash: String,
        pending: PendingLpdu,
    },
    DeletePending(String),
    PutClientTxn {
        user: UserId,
        device: String,
        txn: String,
        record: ClientTxn,
    },
    PutServerKeys {
        server: ServerName,
        keys: ServerKeys,
    },
    /// Records the highest position handed out (see `Positions`).
    PositionHighWater(u64),
    /// Adds or replaces a pusher.
    PutPusher {
        user: UserId,
        app_id: String,
        pushkey: String,
        record: PusherRecord,
    },
    /// Removes a pusher and its queue.
    DeletePusher {
        user: UserId,
        app_id: String,
        pushkey: String,
    },
    /// A notification for a pusher's gateway, under the event's position.
    PushQueued {
        user: UserId,
        app_id: String,
        pushkey: String,
        pos: u64,
        item: PushItem,
    },
    /// A notification the gateway took (or refused for good).
    PushDone {
        user: UserId,
        app_id: String,
        pushkey: String,
        pos: u64,
    },
    /// Events through this stream position were looked at for pushers.
    PushCursor(u64),
    /// A readiness probe's write (its time), to see the store takes writes.
    Probe(i64),
}

/// Writes applied together or not at all.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    pub ops: Vec<Op>,
    /// The writer's claim (a room's writer, a destination's delivery): the
    /// batch applies only while that is still this process's (`Store::claim`).
    pub claim: Option<Claim>,
}

/// What one process at a time writes, on a store several processes share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// A room's list and state.
    Room(RoomId),
    /// Delivery to a server: its queue's cursor.
    Destination(ServerName),
}

impl Claimed {
    /// Its name in the store's claims.
    pub fn key(&self) -> String {
        match self {
            Claimed::Room(room) => format!("room {room}"),
            Claimed::Destination(dest) => format!("destination {dest}"),
        }
    }
}

/// A process's hold on something it writes; the epoch moves on whenever
/// another process takes it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub what: Claimed,
    pub epoch: i64,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, op: Op) -> &mut Self {
        self.ops.push(op);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Appends another batch's writes after ours.
    pub fn extend(&mut self, other: Batch) -> &mut Self {
        self.ops.extend(other.ops);
        self
    }
}

pub trait Store: Send + Sync + 'static {
    // Rooms and events.
    fn room(&self, room: &RoomId) -> StoreResult<Option<RoomRecord>>;
    fn rooms(&self) -> StoreResult<Vec<RoomRecord>>;
    fn event(&self, id: &EventId) -> StoreResult<Option<EventRecord>>;
    /// Event ids at list positions `[from, to)`.
    fn list(&self, room: &RoomId, from: u64, to: u64) -> StoreResult<Vec<EventId>>;
    fn state_ids(&self, room: &RoomId) -> StoreResult<Vec<EventId>>;
    /// Mixed rooms: the stored state after an event (maybe a delta).
    fn state_after(&self, event: &EventId) -> StoreResult<Option<StateSnapshot>>;
    fn lpdu_event(&self, room: &RoomId, lpdu_hash: &str) -> StoreResult<Option<EventId>>;
    /// Stream entries after `after`, ascending, at most `limit`.
    fn stream_after(&self, after: u64, limit: usize) -> StoreResult<Vec<StreamEntry>>;
    /// Stream entries before `before`, descending, at most `limit`.
    fn stream_before(&self, before: u64, limit: usize) -> StoreResult<Vec<StreamEntry>>;
    /// One room's stream entries in `(after, upto]`, newest first, at most
    /// `limit`.
    fn room_stream(&self, room: &RoomId, after: u64, upto: u64, limit: usize) -> StoreResult<Vec<StreamEntry>>;
    fn position_high_water(&self) -> StoreResult<u64>;

    // Accounts.
    fn user(&self, user: &UserId) -> StoreResult<Option<UserRecord>>;
    /// Every account (the admin API's list).
    fn users(&self) -> StoreResult<Vec<UserRecord>>;
    fn access_token(&self, token: &TokenHash) -> StoreResult<Option<AccessToken>>;
    fn memberships(&self, user: &UserId) -> StoreResult<Vec<(RoomId, Membership)>>;
    fn membership(&self, user: &UserId, room: &RoomId) -> StoreResult<Option<Membership>>;
    fn client_txn(&self, user: &UserId, device: &str, txn: &str) -> StoreResult<Option<ClientTxn>>;
    fn devices(&self, user: &UserId) -> StoreResult<Vec<(String, DeviceRecord)>>;
    /// The access token (hash) of a user's device, if it has a session.
    fn device_token(&self, user: &UserId, device: &str) -> StoreResult<Option<TokenHash>>;
    fn account_data(&self, user: &UserId, room: Option<&RoomId>, kind: &str) -> StoreResult<Option<Vec<u8>>>;
    /// Every `(type, content)` of a user's global or room account data.
    fn account_data_all(&self, user: &UserId, room: Option<&RoomId>) -> StoreResult<Vec<(String, Vec<u8>)>>;
    fn filter(&self, user: &UserId, id: &str) -> StoreResult<Option<Vec<u8>>>;
    /// Every `(type, user, receipt)` of a room.
    fn receipts(&self, room: &RoomId) -> StoreResult<Vec<(String, UserId, Receipt)>>;
    /// The event that holds one entry of a room's current state.
    fn state_event(&self, room: &RoomId, event_type: &str, state_key: &str) -> StoreResult<Option<EventId>>;
    /// One user's receipts of one kind in a room: unthreaded, and one per
    /// thread.
    fn user_receipts(&self, room: &RoomId, kind: &str, user: &UserId) -> StoreResult<Vec<Receipt>>;
    fn alias(&self, alias: &str) -> StoreResult<Option<AliasRecord>>;
    fn refresh_token(&self, hash: &TokenHash) -> StoreResult<Option<RefreshToken>>;
    fn registration_token(&self, token: &str) -> StoreResult<Option<RegistrationTokenRecord>>;
    fn registration_tokens(&self) -> StoreResult<Vec<(String, RegistrationTokenRecord)>>;
    /// Events relating to `parent` with positions in `(after, before)`,
    /// newest first unless `forward`, at most `limit`.
    fn relations(
        &self,
        room: &RoomId,
        parent: &str,
        after: u64,
        before: u64,
        forward: bool,
        limit: usize,
    ) -> StoreResult<Vec<(u64, RelationEntry)>>;
    /// Every relation of a room: `(parent, position, entry)`, at most `limit`.
    fn room_relations(&self, room: &RoomId, limit: usize) -> StoreResult<Vec<(String, u64, RelationEntry)>>;
    /// Rooms in this server's public room directory.
    fn published_rooms(&self) -> StoreResult<Vec<RoomId>>;
    fn is_published(&self, room: &RoomId) -> StoreResult<bool>;
    /// Reports, newest first: `(id, record)`, at most `limit`.
    fn reports(&self, limit: usize) -> StoreResult<Vec<(String, ReportRecord)>>;
    fn media(&self, server: &ServerName, id: &str) -> StoreResult<Option<MediaRecord>>;
    fn thumbnail(&self, server: &ServerName, id: &str, spec: &str) -> StoreResult<Option<ThumbnailRecord>>;
    /// A media file's thumbnails: `(spec, record)`.
    fn thumbnails(&self, server: &ServerName, id: &str) -> StoreResult<Vec<(String, ThumbnailRecord)>>;
    /// A local user's media: `(id, size, pending)`.
    fn user_media(&self, user: &UserId) -> StoreResult<Vec<(String, u64, bool)>>;
    /// Remote media, oldest fetched first: `(server, id, size)`, at most
    /// `limit`.
    fn remote_media(&self, limit: usize) -> StoreResult<Vec<(ServerName, String, u64)>>;
    /// Whether a media record or thumbnail still uses the file `sha256`.
    fn media_file_used(&self, sha256: &str) -> StoreResult<bool>;

    // End-to-end encryption.
    fn device_keys(&self, user: &UserId, device: &str) -> StoreResult<Option<DeviceKeysRecord>>;
    /// Every device of the user that uploaded keys, with them.
    fn all_device_keys(&self, user: &UserId) -> StoreResult<Vec<(String, DeviceKeysRecord)>>;
    /// A device's unclaimed one-time keys: `(algorithm, key id, key)`.
    fn one_time_keys(&self, user: &UserId, device: &str) -> StoreResult<Vec<(String, String, OneTimeKeyRecord)>>;
    /// A device's fallback keys: `(algorithm, key)`.
    fn fallback_keys(&self, user: &UserId, device: &str) -> StoreResult<Vec<(String, FallbackKeyRecord)>>;
    fn to_device_seen(&self, origin: &ServerName, message_id: &str) -> StoreResult<bool>;
    fn to_device_txn_done(&self, user: &UserId, device: &str, event_type: &str, txn: &str) -> StoreResult<bool>;
    /// A device's to-device messages in `(after, upto]`, oldest first.
    fn to_device(
        &self,
        user: &UserId,
        device: &str,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> StoreResult<Vec<(u64, ToDeviceRecord)>>;
    fn user_key(&self, user: &UserId, kind: &str, a: &str, b: &str) -> StoreResult<Option<UserKeyEntry>>;
    /// A user's objects of one kind (under one `a` if given): `(a, b, entry)`
    /// in key order, at most `limit`.
    fn user_keys(
        &self,
        user: &UserId,
        kind: &str,
        a: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<(String, String, UserKeyEntry)>>;
    /// One topic's side-stream entries in `(after, upto]`, ascending, at
    /// most `limit`.
    fn side_entries(
        &self,
        topic: SideTopic<'_>,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> StoreResult<Vec<(u64, SideEntry)>>;

    // Federation.
    /// Queue entries for `dest` after position `after`, ascending.
    fn queue(&self, dest: &ServerName, after: u64, limit: usize) -> StoreResult<Vec<(u64, QueueItem)>>;
    fn destination(&self, dest: &ServerName) -> StoreResult<DestinationState>;
    /// Destinations with undelivered queue entries.
    fn destinations_with_work(&self) -> StoreResult<Vec<ServerName>>;
    fn txn_response(&self, origin: &str, endpoint: &str, txn: &str) -> StoreResult<Option<TxnResponse>>;
    fn pending_lpdus(&self) -> StoreResult<Vec<(String, PendingLpdu)>>;
    fn pending_lpdu(&self, lpdu_hash: &str) -> StoreResult<Option<PendingLpdu>>;
    fn server_keys(&self, server: &ServerName) -> StoreResult<Option<ServerKeys>>;
    /// A user's pushers, or everyone's, as `(user, app_id, pushkey, record)`.
    fn pushers(&self, user: Option<&UserId>) -> StoreResult<Vec<(UserId, String, String, PusherRecord)>>;
    /// The oldest `limit` notifications waiting for one pusher.
    fn push_queue(&self, user: &UserId, app_id: &str, pushkey: &str, limit: usize)
        -> StoreResult<Vec<(u64, PushItem)>>;
    /// Where the pusher task stopped; `None` before it first ran.
    fn push_cursor(&self) -> StoreResult<Option<u64>>;

    /// Applies a batch atomically (and, with a claim, only while what it
    /// claims is still this process's: else `StoreError::Elsewhere`).
    fn write(&self, batch: Batch) -> StoreResult<()>;
    /// Takes `what` for this process before it writes it (see `Kv::claim`);
    /// the claim goes with each of its batches.
    fn claim(&self, what: Claimed) -> StoreResult<Claim>;
    /// An online backup: every pair, as of one moment (`backup.rs`), to
    /// `out`; how many pairs the first pass read.
    fn backup(&self, out: &mut dyn FnMut(backup::Record) -> std::io::Result<()>) -> StoreResult<u64>;
    /// Resolves when every write made before the call is durable.
    fn flush(&self) -> BoxFuture<'_, StoreResult<()>>;
    /// Bytes the records take where they are kept (0 when not known).
    fn size_on_disk(&self) -> u64;
    /// Tells other processes of the same store where this one serves.
    fn announce(&self, client: &str, federation: &str) -> StoreResult<()>;
    /// The process holding a shared store's lease, when one does.
    fn lease_holder(&self) -> StoreResult<Option<LeaseHolder>>;
    /// See `Kv::shared_stream`.
    fn shared_stream(&self) -> Option<Arc<dyn SharedStream>>;
}
