//! Does a PDU extend a room's linked list? (digest 5.1-5.2; items 25, 69,
//! 73, 215.)

use std::collections::BTreeSet;

use super::auth::{authorize, AuthError};
use super::selection::{auth_types_for, EventSketch};
use super::state::StateView;
use crate::core::event::Pdu;
use crate::core::ids::EventId;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    #[error("the first event of a room must be its m.room.create")]
    NotCreate,
    #[error("prev_events must be exactly [{expected}]")]
    NotOnTail { expected: EventId },
    #[error("auth_events differ from the selection against current state")]
    AuthEventsMismatch,
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// Checks that `pdu` may be appended after `tail` given `state`, the state
/// after `tail`: one prev event (the tail), the auth events the selection
/// picks from that state (compared as a set), and the authorization rules.
pub fn check_append(tail: Option<&EventId>, state: &impl StateView, pdu: &Pdu) -> Result<(), AppendError> {
    let Some(tail) = tail else {
        if pdu.event_type() != "m.room.create" || pdu.state_key() != Some("") {
            return Err(AppendError::NotCreate);
        }
        authorize(pdu, state)?;
        return Ok(());
    };
    if pdu.prev_events() != std::slice::from_ref(tail) {
        return Err(AppendError::NotOnTail { expected: tail.clone() });
    }
    if !auth_events_match(state, pdu) {
        return Err(AppendError::AuthEventsMismatch);
    }
    authorize(pdu, state)?;
    Ok(())
}

/// `auth_events` names exactly the current events the selection picks.
/// Receiving rules apply, so an LM knock may also name the join rules.
pub fn auth_events_match(state: &impl StateView, pdu: &Pdu) -> bool {
    let named: BTreeSet<&EventId> = pdu.auth_events().iter().collect();
    if named.len() != pdu.auth_events().len() {
        return false;
    }
    let version = pdu.version();
    let required: BTreeSet<&EventId> = super::selection::auth_types(version, EventSketch::of(pdu), false)
        .iter()
        .filter_map(|(t, k)| state.get(t, k))
        .map(Pdu::event_id)
        .collect();
    let tolerated: BTreeSet<&EventId> =
        auth_types_for(pdu, true).iter().filter_map(|(t, k)| state.get(t, k)).map(Pdu::event_id).collect();
    required.is_subset(&named) && named.is_subset(&tolerated)
}
