//! Typed bodies of the Server-Server API (LM's and Matrix's forms).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::core::json::Object;

/// `PUT /send/{txnId}`. PDUs and EDUs stay JSON values here: one that is
/// malformed is refused or ignored on its own, not with its transaction.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Transaction {
    pub origin: Option<String>,
    pub origin_server_ts: Option<i64>,
    pub pdus: Vec<Value>,
    pub edus: Vec<Value>,
}

/// An EDU's envelope: its type as `edu_type` (Matrix) or `type` (LM), and
/// its content.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Edu<'a> {
    #[serde(borrow)]
    pub edu_type: Option<&'a str>,
    #[serde(rename = "type")]
    pub lm_type: Option<&'a str>,
    pub content: Option<Object>,
    /// LM's envelope sender, spelt either way (OQ-33).
    sender: Option<&'a str>,
    sender_id: Option<&'a str>,
}

impl<'a> Edu<'a> {
    pub fn kind(&self) -> &'a str {
        self.edu_type.or(self.lm_type).unwrap_or("")
    }

    pub fn sender(&self) -> Option<&'a str> {
        self.sender.or(self.sender_id)
    }
}

/// What became of one PDU: nothing to say, or why it was not taken.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PduResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The answer to a transaction: LM lists only the refused PDUs
/// (`failed_pdus`), Matrix's v1 every PDU (`pdus`).
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum TxnAnswer {
    Lm { failed_pdus: BTreeMap<String, PduResult> },
    Matrix { pdus: BTreeMap<String, PduResult> },
}

impl TxnAnswer {
    /// `outcomes`: each PDU's id and the reason it was refused, if it was.
    pub fn new(matrix: bool, outcomes: impl IntoIterator<Item = (String, Result<(), String>)>) -> Self {
        let results = outcomes.into_iter().map(|(id, r)| (id, PduResult { error: r.err() }));
        if matrix {
            TxnAnswer::Matrix { pdus: results.collect() }
        } else {
            TxnAnswer::Lm { failed_pdus: results.filter(|(_, r)| r.error.is_some()).collect() }
        }
    }
}

/// `PUT /invite/{txnId}` (v2, and LM's): the event and the room's version.
#[derive(Debug, Deserialize)]
pub struct Invite {
    pub event: Object,
    #[serde(default)]
    pub room_version: String,
    #[serde(default)]
    pub invite_room_state: Vec<Value>,
}

/// `POST /get_missing_events/{roomId}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct MissingEvents {
    pub earliest_events: Vec<String>,
    pub latest_events: Vec<String>,
    pub limit: Option<u64>,
    pub min_depth: Option<i64>,
}

/// `POST /_matrix/key/v2/query`: per server, per key id, the least
/// validity wanted.
#[derive(Debug, Deserialize)]
pub struct KeyQuery {
    pub server_keys: BTreeMap<String, BTreeMap<String, KeyCriteria>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct KeyCriteria {
    pub minimum_valid_until_ts: Option<i64>,
}

/// `make_join`, `make_leave`, `make_knock`: the template and its version
/// (OQ-25: always both).
#[derive(Debug, Serialize)]
pub struct MakeAnswer<'a> {
    pub event: &'a Value,
    pub room_version: &'a str,
}

/// `send_join`: the join, the state before it and the auth chain of both,
/// in replayable order.
#[derive(Debug, Serialize)]
pub struct SendJoinAnswer<'a> {
    pub event: &'a Object,
    pub state: Vec<&'a Object>,
    pub auth_chain: Vec<&'a Object>,
    pub members_omitted: bool,
    pub origin: &'a str,
}
