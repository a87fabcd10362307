//! Room versions as data: what differs between versions is a table entry,
//! not an `if` (digest section 4.9; Matrix spec `content/rooms/v1-v12`).

use crate::core::json::{Canonical, NumberPolicy};

/// The LM room version implementations test with (OQ-1).
pub const LM_VERSION: &str = "org.matrix.i-d.ralston-mimi-linearized-matrix.02";
/// The draft's placeholder name, accepted as an alias.
pub const LM_VERSION_ALIAS: &str = "I.1";

/// How an event's id is obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventIdFormat {
    /// v1, v2: the `event_id` field chosen by the origin.
    InEvent,
    /// v3: reference hash, standard base64.
    HashStd,
    /// v4+ and LM: reference hash, URL-safe base64.
    HashUrl,
}

/// A key kept by redaction inside `content`.
#[derive(Debug, Clone, Copy)]
pub enum KeepKey {
    Key(&'static str),
    /// `parent.child`, kept only when `parent` is an object.
    Child(&'static str, &'static str),
}

#[derive(Debug, Clone, Copy)]
pub enum ContentKeep {
    All,
    Keys(&'static [KeepKey]),
}

#[derive(Debug)]
pub struct RedactionRules {
    pub top_level: &'static [&'static str],
    pub content: &'static [(&'static str, ContentKeep)],
}

/// Differences in the authorization rules, per version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthRules {
    /// The LM draft's rule set (digest section 4.5) instead of Matrix's.
    pub lm: bool,
    /// v1-v10: the creator is `content.creator`; v11+: the create `sender`.
    pub creator_in_content: bool,
    /// v7+: `knock` membership and join rule.
    pub knocking: bool,
    /// v8+: `restricted` join rule.
    pub restricted: bool,
    /// v10+: `knock_restricted` join rule.
    pub knock_restricted: bool,
    /// v10+: power-level values must be JSON integers, not strings.
    pub integer_power_levels: bool,
    /// v6+: `notifications` power levels are checked.
    pub notifications: bool,
    /// v12: creators have infinite power, room id from the create event.
    pub creators_infinite: bool,
}

#[derive(Debug)]
pub struct RoomVersion {
    pub id: &'static str,
    /// LM event format: `hub_server`, `hashes.lpdu`, no `depth`.
    pub lm: bool,
    pub canonical: Canonical,
    /// How event JSON's numbers are parsed.
    pub numbers: NumberPolicy,
    pub event_ids: EventIdFormat,
    pub redaction: &'static RedactionRules,
    pub auth: AuthRules,
    /// Whether lmx hosts and joins rooms of this version (others only for
    /// hashing, redaction and signature checks).
    pub hostable: bool,
    /// v12: the create event has no `room_id`; the room id is its hash.
    pub room_id_from_create: bool,
    /// v12: state resolution v2.1 (empty start, conflicted state subgraph).
    pub state_res_v21: bool,
}

impl RoomVersion {
    /// A standard Matrix version lmx hubs as a mixed room (DAG servers can
    /// join; DESIGN "Room kinds").
    pub fn is_mixed(&self) -> bool {
        self.hostable && !self.lm
    }
}

impl RoomVersion {
    /// Looks a version up by id, accepting `I.1` for the LM version.
    pub fn find(id: &str) -> Option<&'static RoomVersion> {
        if id == LM_VERSION_ALIAS {
            return Some(&LM_ALIAS);
        }
        ALL.iter().copied().find(|v| v.id == id)
    }

    pub fn lm() -> &'static RoomVersion {
        &LM
    }

    /// All versions with distinct ids, for `inspect` and tests.
    pub fn all() -> &'static [&'static RoomVersion] {
        ALL
    }
}

use KeepKey::{Child, Key};

const V1_TOP: &[&str] = &[
    "event_id",
    "type",
    "room_id",
    "sender",
    "state_key",
    "content",
    "hashes",
    "signatures",
    "depth",
    "prev_events",
    "prev_state",
    "auth_events",
    "origin",
    "origin_server_ts",
    "membership",
];
const V11_TOP: &[&str] = &[
    "event_id",
    "type",
    "room_id",
    "sender",
    "state_key",
    "content",
    "hashes",
    "signatures",
    "depth",
    "prev_events",
    "auth_events",
    "origin_server_ts",
];
const LM_TOP: &[&str] = &[
    "type",
    "room_id",
    "sender",
    "state_key",
    "content",
    "origin_server_ts",
    "hashes",
    "signatures",
    "prev_events",
    "auth_events",
    "hub_server",
];

const PL_KEYS: &[KeepKey] = &[
    Key("ban"),
    Key("events"),
    Key("events_default"),
    Key("kick"),
    Key("redact"),
    Key("state_default"),
    Key("users"),
    Key("users_default"),
];
const PL_KEYS_INVITE: &[KeepKey] = &[
    Key("ban"),
    Key("events"),
    Key("events_default"),
    Key("kick"),
    Key("redact"),
    Key("state_default"),
    Key("users"),
    Key("users_default"),
    Key("invite"),
];
const MEMBER: &[KeepKey] = &[Key("membership")];
const MEMBER_V9: &[KeepKey] = &[Key("membership"), Key("join_authorised_via_users_server")];
const MEMBER_V11: &[KeepKey] =
    &[Key("membership"), Key("join_authorised_via_users_server"), Child("third_party_invite", "signed")];
const JOIN_RULE: &[KeepKey] = &[Key("join_rule")];
const JOIN_RULE_ALLOW: &[KeepKey] = &[Key("join_rule"), Key("allow")];
const HISTORY: (&str, ContentKeep) = ("m.room.history_visibility", ContentKeep::Keys(&[Key("history_visibility")]));
const CREATOR: (&str, ContentKeep) = ("m.room.create", ContentKeep::Keys(&[Key("creator")]));

static REDACT_V1: RedactionRules = RedactionRules {
    top_level: V1_TOP,
    content: &[
        ("m.room.member", ContentKeep::Keys(MEMBER)),
        CREATOR,
        ("m.room.join_rules", ContentKeep::Keys(JOIN_RULE)),
        ("m.room.power_levels", ContentKeep::Keys(PL_KEYS)),
        ("m.room.aliases", ContentKeep::Keys(&[Key("aliases")])),
        HISTORY,
    ],
};
static REDACT_V6: RedactionRules = RedactionRules {
    top_level: V1_TOP,
    content: &[
        ("m.room.member", ContentKeep::Keys(MEMBER)),
        CREATOR,
        ("m.room.join_rules", ContentKeep::Keys(JOIN_RULE)),
        ("m.room.power_levels", ContentKeep::Keys(PL_KEYS)),
        HISTORY,
    ],
};
static REDACT_V8: RedactionRules = RedactionRules {
    top_level: V1_TOP,
    content: &[
        ("m.room.member", ContentKeep::Keys(MEMBER)),
        CREATOR,
        ("m.room.join_rules", ContentKeep::Keys(JOIN_RULE_ALLOW)),
        ("m.room.power_levels", ContentKeep::Keys(PL_KEYS)),
        HISTORY,
    ],
};
static REDACT_V9: RedactionRules = RedactionRules {
    top_level: V1_TOP,
    content: &[
        ("m.room.member", ContentKeep::Keys(MEMBER_V9)),
        CREATOR,
        ("m.room.join_rules", ContentKeep::Keys(JOIN_RULE_ALLOW)),
        ("m.room.power_levels", ContentKeep::Keys(PL_KEYS)),
        HISTORY,
    ],
};
static REDACT_V11: RedactionRules = RedactionRules {
    top_level: V11_TOP,
    content: &[
        ("m.room.member", ContentKeep::Keys(MEMBER_V11)),
        ("m.room.create", ContentKeep::All),
        ("m.room.join_rules", ContentKeep::Keys(JOIN_RULE_ALLOW)),
        ("m.room.power_levels", ContentKeep::Keys(PL_KEYS_INVITE)),
        HISTORY,
        ("m.room.redaction", ContentKeep::Keys(&[Key("redacts")])),
    ],
};
// The draft's list (section 4.8); eigen's extra `allow` is not kept (OQ-53).
static REDACT_LM: RedactionRules = RedactionRules {
    top_level: LM_TOP,
    content: &[
        ("m.room.create", ContentKeep::All),
        ("m.room.member", ContentKeep::Keys(MEMBER)),
        ("m.room.join_rules", ContentKeep::Keys(JOIN_RULE)),
        ("m.room.power_levels", ContentKeep::Keys(PL_KEYS_INVITE)),
        HISTORY,
    ],
};

const fn matrix_auth(v: u8) -> AuthRules {
    AuthRules {
        lm: false,
        creator_in_content: v <= 10,
        knocking: v >= 7,
        restricted: v >= 8,
        knock_restricted: v >= 10,
        integer_power_levels: v >= 10,
        notifications: v >= 6,
        creators_infinite: v >= 12,
    }
}

const LM_AUTH: AuthRules = AuthRules {
    lm: true,
    creator_in_content: false,
    knocking: true,
    restricted: false,
    knock_restricted: false,
    integer_power_levels: true,
    notifications: false,
    creators_infinite: false,
};

const fn matrix(id: &'static str, v: u8, redaction: &'static RedactionRules) -> RoomVersion {
    RoomVersion {
        id,
        lm: false,
        canonical: Canonical::Matrix,
        numbers: if v >= 6 { NumberPolicy::MatrixStrict } else { NumberPolicy::MatrixLenient },
        event_ids: match v {
            1 | 2 => EventIdFormat::InEvent,
            3 => EventIdFormat::HashStd,
            _ => EventIdFormat::HashUrl,
        },
        redaction,
        auth: matrix_auth(v),
        hostable: v >= 10,
        room_id_from_create: v >= 12,
        state_res_v21: v >= 12,
    }
}

const fn lm(id: &'static str) -> RoomVersion {
    RoomVersion {
        id,
        lm: true,
        canonical: Canonical::Rfc8785,
        numbers: NumberPolicy::LmStrict,
        event_ids: EventIdFormat::HashUrl,
        redaction: &REDACT_LM,
        auth: LM_AUTH,
        hostable: true,
        room_id_from_create: false,
        state_res_v21: false,
    }
}

static V1: RoomVersion = matrix("1", 1, &REDACT_V1);
static V2: RoomVersion = matrix("2", 2, &REDACT_V1);
static V3: RoomVersion = matrix("3", 3, &REDACT_V1);
static V4: RoomVersion = matrix("4", 4, &REDACT_V1);
static V5: RoomVersion = matrix("5", 5, &REDACT_V1);
static V6: RoomVersion = matrix("6", 6, &REDACT_V6);
static V7: RoomVersion = matrix("7", 7, &REDACT_V6);
static V8: RoomVersion = matrix("8", 8, &REDACT_V8);
static V9: RoomVersion = matrix("9", 9, &REDACT_V9);
static V10: RoomVersion = matrix("10", 10, &REDACT_V9);
static V11: RoomVersion = matrix("11", 11, &REDACT_V11);
static V12: RoomVersion = matrix("12", 12, &REDACT_V11);
static LM: RoomVersion = lm(LM_VERSION);
static LM_ALIAS: RoomVersion = lm(LM_VERSION_ALIAS);

static ALL: &[&RoomVersion] = &[&V1, &V2, &V3, &V4, &V5, &V6, &V7, &V8, &V9, &V10, &V11, &V12, &LM, &LM_ALIAS];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup() {
        assert!(RoomVersion::find("11").unwrap().hostable);
        assert!(!RoomVersion::find("9").unwrap().hostable);
        assert!(RoomVersion::find("12").unwrap().is_mixed());
        assert!(!RoomVersion::find("I.1").unwrap().is_mixed());
        assert!(RoomVersion::find("I.1").unwrap().lm);
        assert!(RoomVersion::find(LM_VERSION).unwrap().lm);
        assert!(RoomVersion::find("13").is_none());
        assert_eq!(RoomVersion::find("3").unwrap().event_ids, EventIdFormat::HashStd);
    }
}
