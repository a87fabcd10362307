//! Who receives an appended event (digest 5.4; items 57, 158-159; OQ-19,
//! OQ-42).

use std::collections::{BTreeSet, HashMap};

use crate::core::event::Pdu;
use crate::core::ids::{ServerName, UserId};
use crate::core::rooms::StateMap;

/// Servers with joined users, counted so membership changes are O(1).
#[derive(Debug, Default, Clone)]
pub struct JoinedServers {
    counts: HashMap<ServerName, usize>,
}

impl JoinedServers {
    pub fn from_state(state: &StateMap) -> Self {
        let mut s = Self::default();
        for user in state.joined_members() {
            *s.counts.entry(user.server_name()).or_default() += 1;
        }
        s
    }

    pub fn contains(&self, server: &ServerName) -> bool {
        self.counts.contains_key(server)
    }

    pub fn servers(&self) -> impl Iterator<Item = &ServerName> {
        self.counts.keys()
    }

    /// Records that `user` went from `old` to `new` membership.
    pub fn update(&mut self, user: &UserId, old: &str, new: &str) {
        let server = user.server_name();
        if old == "join" && new != "join" {
            if let Some(n) = self.counts.get_mut(&server) {
                *n -= 1;
                if *n == 0 {
                    self.counts.remove(&server);
                }
            }
        } else if old != "join" && new == "join" {
            *self.counts.entry(server).or_default() += 1;
        }
    }
}

/// Every server with a joined user before or after the event, the sender's
/// server (its echo), and the target of a kick or ban even though it has no
/// joined user left; never this server.
pub fn destinations(
    me: &ServerName,
    after: &JoinedServers,
    pdu: &Pdu,
    old_membership: Option<&str>,
) -> BTreeSet<ServerName> {
    let mut out: BTreeSet<ServerName> = after.servers().cloned().collect();
    out.insert(pdu.sender().server_name());
    if let (Some(target), Some(new)) = (pdu.state_key(), pdu.membership()) {
        if pdu.event_type() == "m.room.member" {
            let was_joined = old_membership == Some("join");
            if was_joined || new == "leave" || new == "ban" {
                if let Ok(user) = UserId::parse(target) {
                    out.insert(user.server_name());
                }
            }
        }
    }
    out.remove(me);
    out
}
