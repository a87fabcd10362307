//! A participant's gap: the hub sent an event whose prev event our list
//! lacks. The missing events are fetched from the hub's backfill beside the
//! writer (`Fetch::Gap`), which goes on with everything else (local users'
//! LPDUs, waits); only the hub's events, which cannot be placed before the
//! gap closes, queue behind it, and their senders are answered once they
//! are durable.

use std::collections::VecDeque;

use super::{Effects, Fetch, Machine, Reply, RoomError, Ticket};
use crate::core::event::Pdu;
use crate::core::ids::EventId;

/// One `FromHub` input, maybe part-way through.
pub struct HubEvents {
    done: Vec<Result<(), RoomError>>,
    rest: VecDeque<Pdu>,
    ticket: Ticket,
}

/// A gap being filled: the hub's events waiting for it, oldest first.
#[derive(Default)]
pub struct Gap {
    missing: Option<EventId>,
    waiting: VecDeque<HubEvents>,
}

impl Gap {
    /// Events waiting to be placed (stream positions they may take).
    pub fn waiting_events(&self) -> usize {
        self.waiting.iter().map(|w| w.rest.len()).sum()
    }
}

impl Machine {
    pub(super) fn take_from_hub(&mut self, pdus: Vec<Pdu>, ticket: Ticket, out: &mut Effects) {
        let events = HubEvents { done: Vec::with_capacity(pdus.len()), rest: pdus.into(), ticket };
        match &mut self.gap {
            Some(gap) => gap.waiting.push_back(events),
            None => self.place_hub_events(events, out, None),
        }
    }

    /// Appends the hub's events in order until one needs a gap filled;
    /// that one and the rest wait for the fill. `just_filled`: the event a
    /// fill was for, not fetched again if the hub's answer left it missing.
    fn place_hub_events(&mut self, mut events: HubEvents, out: &mut Effects, just_filled: Option<&EventId>) {
        while let Some(pdu) = events.rest.pop_front() {
            match self.missing_before(&pdu, out) {
                Some(missing) if Some(&missing) != just_filled => {
                    events.rest.push_front(pdu);
                    self.gap.get_or_insert_with(Gap::default).missing = Some(missing.clone());
                    out.fetches.push(Fetch::Gap { view: Box::new(self.cur.clone()), missing });
                    self.gap.get_or_insert_with(Gap::default).waiting.push_front(events);
                    return;
                }
                Some(missing) => {
                    let e = RoomError::Remote(format!("the hub's backfill did not lead to {missing}"));
                    events.done.push(Err(e));
                }
                None => {
                    let r = self.accept_from_hub(pdu, out);
                    events.done.push(r);
                }
            }
        }
        out.answer(events.ticket, Reply::FromHub(events.done));
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
    pub(super) fn gap_fetched(&mut self, fetched: Result<Vec<Pdu>, RoomError>, out: &mut Effects) {
        let Gap { missing, mut waiting } = self.gap.take().unwrap_or_default();
        match fetched {
            Ok(newest_first) => {
                tracing::info!(room_id = %self.cur.room_id, events = newest_first.len(), "filled a gap from the hub");
                for pdu in newest_first.into_iter().rev() {
                    if self.knows(out, pdu.event_id()) {
                        continue;
                    }
                    if let Err(e) = self.append_audited(pdu, out) {
                        tracing::warn!(error = %e, "an event of the hub's backfill does not continue the list");
                        break;
                    }
                }
            }
            Err(e) => {
                tracing::info!(room_id = %self.cur.room_id, error = %e, "could not fill a gap from the hub");
                // The events that needed it fail; later ones are tried.
                if let Some(mut first) = waiting.pop_front() {
                    first.done.extend(first.rest.drain(..).map(|_| Err(e.clone())));
                    self.place_hub_events(first, out, None);
                }
            }
        }
        while let Some(events) = waiting.pop_front() {
            self.place_hub_events(events, out, missing.as_ref());
            if let Some(gap) = &mut self.gap {
                gap.waiting.extend(waiting.drain(..));
                return;
            }
        }
    }
}
