//! A participant's gap: the hub sent an event whose prev event our list
//! lacks. The missing events are fetched from the hub's backfill beside the
//! writer, which goes on with everything else (local users' LPDUs, waits);
//! only the hub's events, which cannot be placed before the gap closes,
//! queue behind it, and their senders are answered once they are durable.

use std::collections::VecDeque;
use std::sync::Arc;

use super::actor::{RoomActor, Work};
use super::{Reply, RoomCmd, RoomError, RoomView};
use crate::core::event::Pdu;
use crate::core::ids::EventId;
use crate::node::Node;

/// Pages of backfill a gap may take before the participant gives up.
const MAX_GAP_PAGES: usize = 50;
const GAP_PAGE: usize = 100;

/// One `FromHub` command, maybe part-way through.
pub struct HubEvents {
    done: Vec<Result<(), RoomError>>,
    rest: VecDeque<Pdu>,
    reply: Reply<Vec<Result<(), RoomError>>>,
}

/// A gap being filled: the hub's events waiting for it, oldest first.
#[derive(Default)]
pub struct Gap {
    missing: Option<EventId>,
    waiting: VecDeque<HubEvents>,
}

/// The hub's backfill from `missing` back to an event we hold, newest
/// first.
async fn fetch(node: Arc<Node>, view: RoomView, missing: EventId) -> Result<Vec<Pdu>, RoomError> {
    let known = |id: &EventId| matches!(node.store.event(id), Ok(Some(r)) if !r.outlier);
    let mut newest_first: Vec<Pdu> = Vec::new();
    let mut from = missing;
    for _ in 0..MAX_GAP_PAGES {
        let page =
            crate::federation::fetch::backfill(&node, &view, &from, GAP_PAGE).await.map_err(RoomError::Remote)?;
        let mut reached = false;
        for pdu in page.into_iter().rev() {
            if known(pdu.event_id()) {
                reached = true;
                break;
            }
            if newest_first.iter().all(|p| p.event_id() != pdu.event_id()) {
                newest_first.push(pdu);
            }
        }
        match newest_first.last().and_then(|p| p.prev_events().first().cloned()) {
            Some(p) if !reached => from = p,
            _ => break,
        }
    }
    Ok(newest_first)
}

impl RoomActor {
    pub(super) fn take_from_hub(&mut self, pdus: Vec<Pdu>, reply: Reply<Vec<Result<(), RoomError>>>, work: &mut Work) {
        let events = HubEvents { done: Vec::with_capacity(pdus.len()), rest: pdus.into(), reply };
        match &mut self.gap {
            Some(gap) => gap.waiting.push_back(events),
            None => self.place_hub_events(events, work, None),
        }
    }

    /// Appends the hub's events in order until one needs a gap filled;
    /// that one and the rest wait for the fill. `just_filled`: the event a
    /// fill was for, not fetched again if the hub's answer left it missing.
    fn place_hub_events(&mut self, mut events: HubEvents, work: &mut Work, just_filled: Option<&EventId>) {
        while let Some(pdu) = events.rest.pop_front() {
            match self.missing_before(&pdu, work) {
                Some(missing) if Some(&missing) != just_filled => {
                    events.rest.push_front(pdu);
                    self.start_fill(missing, work);
                    self.gap.get_or_insert_with(Gap::default).waiting.push_front(events);
                    return;
                }
                Some(missing) => {
                    let e = RoomError::Remote(format!("the hub's backfill did not lead to {missing}"));
                    events.done.push(Err(e));
                }
                None => {
                    let r = self.accept_from_hub(pdu, work);
                    events.done.push(r);
                }
            }
        }
        let HubEvents { done, reply, .. } = events;
        work.on_done(move |r| {
            let _ = reply.send(r.map(|_| done));
        });
    }

    /// Asks the hub for the missing events once this batch is durable.
    fn start_fill(&mut self, missing: EventId, work: &mut Work) {
        self.gap.get_or_insert_with(Gap::default).missing = Some(missing.clone());
        let (node, view) = (self.node.clone(), self.cur.clone());
        self.beside(work, move |written| async move {
            RoomCmd::GapFetched(match written {
                Ok(()) => fetch(node, view, missing).await,
                Err(e) => Err(e),
            })
        });
    }

    /// A batch failed to write: answers held back for a gap must not
    /// report its events as taken.
    pub(super) fn fail_deferred(&mut self, error: &RoomError) {
        for events in self.gap.iter_mut().flat_map(|g| g.waiting.iter_mut()) {
            for done in events.done.iter_mut().filter(|d| d.is_ok()) {
                *done = Err(error.clone());
            }
        }
    }

    /// Appends what the hub's backfill returned, then the events that
    /// waited for it (which may open the next gap).
    pub(super) fn gap_fetched(&mut self, fetched: Result<Vec<Pdu>, RoomError>, work: &mut Work) {
        let Gap { missing, mut waiting } = self.gap.take().unwrap_or_default();
        match fetched {
            Ok(newest_first) => {
                tracing::info!(room = %self.cur.room_id, events = newest_first.len(), "filled a gap from the hub");
                for pdu in newest_first.into_iter().rev() {
                    if self.knows(work, pdu.event_id()) {
                        continue;
                    }
                    if let Err(e) = self.append_audited(pdu, work) {
                        tracing::warn!(error = %e, "an event of the hub's backfill does not continue the list");
                        break;
                    }
                }
            }
            Err(e) => {
                tracing::info!(room = %self.cur.room_id, error = %e, "could not fill a gap from the hub");
                // The events that needed it fail; later ones are tried.
                if let Some(mut first) = waiting.pop_front() {
                    first.done.extend(first.rest.drain(..).map(|_| Err(e.clone())));
                    self.place_hub_events(first, work, None);
                }
            }
        }
        while let Some(events) = waiting.pop_front() {
            self.place_hub_events(events, work, missing.as_ref());
            if let Some(gap) = &mut self.gap {
                gap.waiting.extend(waiting.drain(..));
                return;
            }
        }
    }
}
