//! Invites to a server that does not take part in the room yet (E10; items
//! 184-190; OQ-24): the invitee's server counter-signs the event before the
//! hub appends it. The request runs beside the writer, which goes on
//! sequencing the room's other events; the answer comes back to the inbox,
//! and only the invite waits for it.

use std::sync::Arc;

use super::actor::{RoomActor, Work};
use super::build::{self, Draft};
use super::{Appended, LocalOutcome, Reply, RoomCmd, RoomError, RoomView};
use crate::core::event::{Lpdu, Pdu};
use crate::core::ids::{ServerName, UserId};
use crate::node::Node;

/// Whose invite it is, and whom to answer.
pub enum InviteFor {
    Local { draft: Draft, reply: Reply<LocalOutcome> },
    Lpdu { lpdu: Lpdu, with_state: bool, reply: Reply<Appended> },
}

impl InviteFor {
    /// What a retry of the same request carries, so one invite is out at
    /// a time per request.
    fn retry_key(&self) -> Option<String> {
        match self {
            InviteFor::Local { draft, .. } => {
                draft.txn.as_ref().map(|(device, txn)| format!("txn {} {device} {txn}", draft.sender))
            }
            InviteFor::Lpdu { lpdu, .. } => Some(format!("lpdu {}", lpdu.lpdu_hash())),
        }
    }

    fn fail(self, e: RoomError) {
        match self {
            InviteFor::Local { reply, .. } => {
                let _ = reply.send(Err(e));
            }
            InviteFor::Lpdu { reply, .. } => {
                let _ = reply.send(Err(e));
            }
        }
    }
}

/// The invitee's server's answer, back at the room's inbox.
pub struct InviteAnswer {
    origin: InviteFor,
    answer: Result<Pdu, RoomError>,
}

/// The user an event invites.
fn invite_target(pdu: &Pdu) -> Option<UserId> {
    if pdu.event_type() != "m.room.member" || pdu.membership() != Some("invite") {
        return None;
    }
    pdu.state_key().and_then(|s| UserId::parse(s).ok())
}

async fn countersign(node: Arc<Node>, view: RoomView, pdu: Pdu) -> Result<Pdu, RoomError> {
    crate::federation::invite::send_invite(&node, &view, pdu).await
}

impl RoomActor {
    /// The server to ask first, when `pdu` invites a user of a server that
    /// does not take part in the room.
    pub(super) fn invitee_to_ask(&self, pdu: &Pdu) -> Option<ServerName> {
        let server = invite_target(pdu)?.server_name();
        (!self.node.is_me(&server) && !self.joined.contains(&server)).then_some(server)
    }

    /// Sends the invite to the invitee's server once this batch is durable
    /// (the invitee may fetch the events it references), without waiting.
    pub(super) fn ask_invitee(&mut self, pdu: Pdu, origin: InviteFor, work: &mut Work) {
        if let Some(key) = origin.retry_key() {
            if !self.inviting.insert(key) {
                origin.fail(RoomError::Pending);
                return;
            }
        }
        let (node, view) = (self.node.clone(), self.cur.clone());
        self.beside(work, move |written| async move {
            let answer = match written {
                Ok(()) => countersign(node, view, pdu).await,
                Err(e) => Err(e),
            };
            RoomCmd::InviteAnswered(Box::new(InviteAnswer { origin, answer }))
        });
    }

    /// Appends a counter-signed invite. Should the list have moved on
    /// meanwhile, the same invite is built again on the current tail and
    /// checked against the current state: the invitee's server consented to
    /// this membership (its signature was checked, OQ-24), and its
    /// signature, which covered the old place, is not carried over.
    pub(super) fn invite_answered(&mut self, answer: InviteAnswer, work: &mut Work) {
        let InviteAnswer { origin, answer } = answer;
        if let Some(key) = origin.retry_key() {
            self.inviting.remove(&key);
        }
        let signed = match answer {
            Ok(p) => p,
            Err(e) => {
                tracing::info!(reason = %e, "an invite was not counter-signed");
                return origin.fail(e);
            }
        };
        let in_place = self.cur.version.is_mixed() || signed.prev_events() == self.cur.tail.as_slice();
        match origin {
            InviteFor::Local { draft, reply } => {
                let pdu = if in_place { Ok(signed) } else { self.build_local(&draft) };
                match pdu {
                    Ok(pdu) => self.finish_local(draft, reply, pdu, work),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            InviteFor::Lpdu { lpdu, with_state, reply } => {
                let pdu =
                    if in_place { Ok(signed) } else { build::hub_event_from_lpdu(&self.cur, &self.node.key, &lpdu) };
                match pdu {
                    Ok(pdu) => self.finish_lpdu(lpdu, with_state, reply, pdu, work),
                    Err(e) => {
                        tracing::info!(lpdu = %lpdu.lpdu_hash(), reason = %e, "refused an event");
                        let _ = reply.send(Err(e));
                    }
                }
            }
        }
    }
}
