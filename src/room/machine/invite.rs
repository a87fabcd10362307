//! Invites to a server that does not take part in the room yet (E10; items
//! 184-190; OQ-24): the invitee's server counter-signs the event before the
//! hub appends it. The request runs beside the writer (`Fetch::Invite`),
//! which goes on sequencing the room's other events; the answer comes back
//! as an input, and only the invite waits for it.

use super::build::{self, Draft};
use super::{Effects, Fetch, Machine, RoomError, Ticket};
use crate::core::event::{Lpdu, Pdu};
use crate::core::ids::{ServerName, UserId};

/// Whose invite it is, and whom to answer.
pub enum InviteFor {
    Local { draft: Draft, ticket: Ticket },
    Lpdu { lpdu: Lpdu, with_state: bool, ticket: Ticket },
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

    fn ticket(&self) -> Ticket {
        match self {
            InviteFor::Local { ticket, .. } | InviteFor::Lpdu { ticket, .. } => *ticket,
        }
    }
}

/// The user an event invites.
fn invite_target(pdu: &Pdu) -> Option<UserId> {
    if pdu.event_type() != "m.room.member" || pdu.membership() != Some("invite") {
        return None;
    }
    pdu.state_key().and_then(|s| UserId::parse(s).ok())
}

impl Machine {
    /// The server to ask first, when `pdu` invites a user of a server that
    /// does not take part in the room.
    pub(super) fn invitee_to_ask(&self, pdu: &Pdu) -> Option<ServerName> {
        let server = invite_target(pdu)?.server_name();
        (server != *self.me() && !self.joined.contains(&server)).then_some(server)
    }

    /// Sends the invite to the invitee's server once this batch is durable
    /// (the invitee may fetch the events it references), without waiting.
    pub(super) fn ask_invitee(&mut self, pdu: Pdu, origin: InviteFor, out: &mut Effects) {
        if let Some(key) = origin.retry_key() {
            if !self.inviting.insert(key) {
                return out.refuse(origin.ticket(), RoomError::Pending);
            }
        }
        out.fetches.push(Fetch::Invite { view: Box::new(self.cur.clone()), pdu: Box::new(pdu), origin });
    }

    /// Appends a counter-signed invite. Should the list have moved on
    /// meanwhile, the same invite is built again on the current tail and
    /// checked against the current state: the invitee's server consented to
    /// this membership (its signature was checked, OQ-24), and its
    /// signature, which covered the old place, is not carried over.
    pub(super) fn invite_answered(&mut self, origin: InviteFor, answer: Result<Pdu, RoomError>, out: &mut Effects) {
        if let Some(key) = origin.retry_key() {
            self.inviting.remove(&key);
        }
        let signed = match answer {
            Ok(p) => p,
            Err(e) => {
                tracing::info!(reason = %e, "an invite was not counter-signed");
                return out.refuse(origin.ticket(), e);
            }
        };
        let in_place = self.rules.still_fits(self, &signed);
        match origin {
            InviteFor::Local { draft, ticket } => {
                let pdu = if in_place { Ok(signed) } else { self.rules.build_local(self, &draft) };
                match pdu {
                    Ok(pdu) => self.finish_local(draft, ticket, pdu, out),
                    Err(e) => out.refuse(ticket, e),
                }
            }
            InviteFor::Lpdu { lpdu, with_state, ticket } => {
                let pdu =
                    if in_place { Ok(signed) } else { build::hub_event_from_lpdu(&self.cur, &self.env.key, &lpdu) };
                match pdu {
                    Ok(pdu) => self.finish_lpdu(lpdu, with_state, ticket, pdu, out),
                    Err(e) => {
                        tracing::info!(lpdu = %lpdu.lpdu_hash(), reason = %e, "refused an event");
                        out.refuse(ticket, e)
                    }
                }
            }
        }
    }
}
