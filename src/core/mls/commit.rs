//! The hub's check of an `m.mls.commit` (§9.4, items 105, 111-113; OQ-32).
//!
//! The hub follows each room's group from the commits it accepts: the
//! group after a commit is the one its `public_group_state` (an MLS
//! GroupInfo with the ratchet tree) describes, and a commit is processed
//! against the group of the commit before it, so that its adds and
//! removes are known with the devices they name, removals by leaf index
//! included. The first commit creates the group: its members are its
//! adds. The hub never decrypts anything.

use openmls::prelude::{
    ContentType, LeafNode, LeafNodeIndex, MlsMessageBodyIn, MlsMessageIn, ProcessedMessageContent, Proposal,
    ProposalOrRefType, ProposalStore, ProtocolMessage, PublicGroup, Sender,
};
use openmls_rust_crypto::{MemoryStorage, RustCrypto};
use tls_codec::Deserialize as _;

use super::{b64_field, err, DeviceCredential, DeviceRef, MlsError, CIPHERSUITE};
use crate::core::json::Object;

/// A room's MLS group as the hub follows it.
pub struct GroupTrack {
    group: PublicGroup,
}

impl std::fmt::Debug for GroupTrack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupTrack").field("epoch", &self.epoch()).finish()
    }
}

fn leaf_device(leaf: &LeafNode) -> Result<DeviceRef, MlsError> {
    DeviceCredential::of_leaf(leaf.credential(), leaf.signature_key().as_slice())
}

impl GroupTrack {
    /// The group a commit's `public_group_state` describes: its signature,
    /// tree and suite checked by the library, its id the room's.
    pub fn from_group_state(room_id: &str, bytes: &[u8]) -> Result<Self, MlsError> {
        let message = MlsMessageIn::tls_deserialize_exact(bytes)
            .map_err(|e| err(format!("malformed public_group_state: {e}")))?;
        let MlsMessageBodyIn::GroupInfo(info) = message.extract() else {
            return Err(err("public_group_state is not a GroupInfo"));
        };
        if info.group_id().as_slice() != room_id.as_bytes() {
            return Err(err("public_group_state is of another group than the room's"));
        }
        let tree = info
            .extensions()
            .ratchet_tree()
            .ok_or_else(|| err("public_group_state lacks the ratchet tree"))?
            .ratchet_tree()
            .clone();
        let (group, _) = PublicGroup::from_external(
            &RustCrypto::default(),
            &MemoryStorage::default(),
            tree,
            info,
            ProposalStore::new(),
        )
        .map_err(|e| err(format!("public_group_state does not hold: {e}")))?;
        if group.ciphersuite() != CIPHERSUITE {
            return Err(err("the group does not use the room's suite"));
        }
        Ok(GroupTrack { group })
    }

    pub fn epoch(&self) -> u64 {
        self.group.group_context().epoch().as_u64()
    }

    /// Every member's leaf index and device.
    pub fn members(&self) -> Result<Vec<(u32, DeviceRef)>, MlsError> {
        self.group
            .members()
            .map(|m| {
                let device = DeviceCredential::of_leaf(&m.credential, &m.signature_key)?;
                Ok((m.index.u32(), device))
            })
            .collect()
    }

    fn device_at(&self, index: LeafNodeIndex) -> Result<DeviceRef, MlsError> {
        leaf_device(self.group.leaf(index).ok_or_else(|| err(format!("no member at leaf {}", index.u32())))?)
    }
}

/// The epoch a commit's `message` says it starts from, if readable.
pub fn commit_epoch(content: &Object) -> Option<u64> {
    let bytes = b64_field(content, "message").ok()?;
    let message = MlsMessageIn::tls_deserialize_exact(bytes.as_slice()).ok()?;
    Some(message.try_into_protocol_message().ok()?.epoch().as_u64())
}

/// What a commit does, once it is known to be well formed.
#[derive(Debug)]
pub struct CommitFacts {
    /// The committing device (for an external commit, the joining one).
    pub committer: DeviceRef,
    pub adds: Vec<DeviceRef>,
    pub removes: Vec<DeviceRef>,
    /// The group after the commit.
    pub after: GroupTrack,
}

/// Reads an `m.mls.commit`'s content against the group before it (`None`:
/// the group's first commit). Refuses what the draft forbids whatever the
/// room's membership: a `PrivateMessage` (item 105), anything but a
/// commit, proposals by reference or from another member (item 113), and
/// a `public_group_state` that is not the group the commit makes.
pub fn check_commit(prev: Option<&GroupTrack>, room_id: &str, content: &Object) -> Result<CommitFacts, MlsError> {
    let message = b64_field(content, "message")?;
    let state = b64_field(content, "public_group_state")?;
    let message =
        MlsMessageIn::tls_deserialize_exact(message.as_slice()).map_err(|e| err(format!("malformed message: {e}")))?;
    let message = match message.try_into_protocol_message() {
        Ok(ProtocolMessage::PublicMessage(m)) => ProtocolMessage::PublicMessage(m),
        Ok(ProtocolMessage::PrivateMessage(_)) => return Err(err("a commit must be an MLS PublicMessage")),
        Err(_) => return Err(err("message is not an MLS handshake message")),
    };
    if message.content_type() != ContentType::Commit {
        return Err(err("message is not a commit (proposals travel inside their committer's commit)"));
    }
    if message.group_id().as_slice() != room_id.as_bytes() {
        return Err(err("the commit is for another group than the room's"));
    }
    let after = GroupTrack::from_group_state(room_id, &state)?;
    match prev {
        Some(prev) => against(prev, message, after),
        None => first(message, after),
    }
}

/// The group's first commit: made by its creator alone at epoch 0, so the
/// members it leaves besides the creator are what it added.
fn first(message: ProtocolMessage, after: GroupTrack) -> Result<CommitFacts, MlsError> {
    if message.epoch().as_u64() != 0 || after.epoch() != 1 {
        return Err(err("the group's first commit must take epoch 0 to 1"));
    }
    let ProtocolMessage::PublicMessage(public) = &message else { unreachable!("checked above") };
    if public.sender() != &Sender::Member(LeafNodeIndex::new(0)) {
        return Err(err("the group's first commit must come from its creator"));
    }
    let mut members = after.members()?.into_iter();
    let committer = members.next().filter(|(i, _)| *i == 0).ok_or_else(|| err("the group has no creator"))?.1;
    let adds = members.map(|(_, d)| d).collect();
    Ok(CommitFacts { committer, adds, removes: Vec::new(), after })
}

fn against(prev: &GroupTrack, message: ProtocolMessage, after: GroupTrack) -> Result<CommitFacts, MlsError> {
    let processed = prev
        .group
        .process_message(&RustCrypto::default(), message)
        .map_err(|e| err(format!("the commit does not apply to the room's group: {e}")))?;
    let sender = processed.sender().clone();
    let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else {
        return Err(err("message is not a commit"));
    };
    for q in staged.queued_proposals() {
        if q.proposal_or_ref_type() == ProposalOrRefType::Reference || q.sender() != &sender {
            return Err(err("a commit may carry only its committer's own proposals"));
        }
        if matches!(q.proposal(), Proposal::ReInit(_)) {
            return Err(err("a room's group cannot be re-initialised"));
        }
    }
    if staged.group_context() != after.group.group_context() {
        return Err(err("public_group_state is not the group this commit makes"));
    }
    let path_leaf = staged.update_path_leaf_node().map(leaf_device).transpose()?;
    let committer = match &sender {
        Sender::Member(index) => {
            let committer = prev.device_at(*index)?;
            if path_leaf.as_ref().is_some_and(|d| d != &committer) {
                return Err(err("a committer's new leaf must keep its device's credential"));
            }
            committer
        }
        Sender::NewMemberCommit => path_leaf.ok_or_else(|| err("an external commit has no path"))?,
        _ => return Err(err("a commit must come from a member or a joining device")),
    };
    let adds = staged
        .add_proposals()
        .map(|a| leaf_device(a.add_proposal().key_package().leaf_node()))
        .collect::<Result<_, _>>()?;
    let removes =
        staged.remove_proposals().map(|r| prev.device_at(r.remove_proposal().removed())).collect::<Result<_, _>>()?;
    for u in staged.update_proposals() {
        let Sender::Member(index) = u.sender() else { return Err(err("an update from a non-member")) };
        if leaf_device(u.update_proposal().leaf_node())? != prev.device_at(*index)? {
            return Err(err("an update must keep its device's credential"));
        }
    }
    Ok(CommitFacts { committer, adds, removes, after })
}

/// The membership rules of a commit (items 111, 112): it is sent by its
/// committer's user; it adds only devices of joined users (any, in a
/// world-readable room); it removes only its own user's devices or those
/// of users no longer joined.
pub fn commit_allowed(
    facts: &CommitFacts,
    sender: &str,
    membership: impl Fn(&str) -> String,
    world_readable: bool,
) -> Result<(), MlsError> {
    if facts.committer.user != sender {
        return Err(err(format!("the commit is {}'s, sent by {sender}", facts.committer.user)));
    }
    if let Some(a) = facts.adds.iter().find(|a| !world_readable && membership(&a.user) != "join") {
        return Err(err(format!("the commit adds a device of {}, who is not joined", a.user)));
    }
    if let Some(r) = facts.removes.iter().find(|r| r.user != sender && membership(&r.user) == "join") {
        return Err(err(format!("the commit removes a device of {}, who is still joined", r.user)));
    }
    Ok(())
}
