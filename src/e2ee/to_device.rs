//! To-device messages: a device's inbox, filled by local senders and by
//! other servers' `m.direct_to_device` EDUs, read by its `/sync`, and
//! emptied only once a later `since` shows the client has what was sent.

use serde_json::{json, Value};

use super::E2ee;
use crate::core::ids::{ServerName, UserId};
use crate::core::json::{self, NumberPolicy, Object};
use crate::store::records::ToDeviceRecord;
use crate::store::{Batch, Op, StoreError, StoreResult};

/// Messages one `/sync` answer carries; the rest wait for the next.
pub const TO_DEVICE_PER_SYNC: usize = 100;
/// The largest message content taken (canonical JSON bytes), as Synapse.
pub const MAX_TO_DEVICE_BYTES: usize = 65_536;

/// Messages for local devices, collected then written in one batch at one
/// stream position (so a waiting `/sync` wakes once for all of them).
pub struct ToDeviceBatch<'a> {
    e2ee: &'a E2ee,
    sender: String,
    event_type: String,
    messages: Vec<(UserId, String, Vec<u8>)>,
}

/// What a `/sync` hands a device: its messages in order, and the position
/// of the last one when more are waiting behind it.
#[derive(Debug, Default)]
pub struct Inbox {
    pub events: Vec<Value>,
    pub more_after: Option<u64>,
}

impl E2ee {
    pub fn to_device_batch(&self, sender: &str, event_type: &str) -> ToDeviceBatch<'_> {
        ToDeviceBatch { e2ee: self, sender: sender.to_owned(), event_type: event_type.to_owned(), messages: Vec::new() }
    }

    /// Whether `(origin, message_id)` was taken before; EDUs may come again
    /// when their transaction's answer was lost.
    pub fn seen(&self, origin: &ServerName, message_id: &str) -> StoreResult<bool> {
        self.store.to_device_seen(origin, message_id)
    }

    /// A device's messages in `(after, upto]`, at most a sync's worth.
    pub fn inbox(&self, user: &UserId, device: &str, after: u64, upto: u64) -> StoreResult<Inbox> {
        let mut got = self.store.to_device(user, device, after, upto, TO_DEVICE_PER_SYNC + 1)?;
        let more = got.len() > TO_DEVICE_PER_SYNC;
        got.truncate(TO_DEVICE_PER_SYNC);
        let more_after = if more { got.last().map(|(pos, _)| *pos) } else { None };
        let mut events = Vec::with_capacity(got.len());
        for (_, m) in got {
            let content = json::parse(&m.content, NumberPolicy::Ieee754)
                .map_err(|e| StoreError::Corrupt(format!("to-device message: {e}")))?;
            events.push(json!({"sender": m.sender, "type": m.r#type, "content": content}));
        }
        Ok(Inbox { events, more_after })
    }

    /// The client has everything up to `upto`: those messages go.
    pub fn acknowledge(&self, user: &UserId, device: &str, upto: u64) -> StoreResult<()> {
        if self.store.to_device(user, device, 0, upto, 1)?.is_empty() {
            return Ok(());
        }
        let mut b = Batch::new();
        b.push(Op::DeleteToDevice { user: user.clone(), device: device.to_owned(), up_to: upto });
        self.store.write(b)
    }
}

impl ToDeviceBatch<'_> {
    /// A message for a local user's device, or every device for `*`;
    /// unknown devices are skipped, as Matrix does.
    pub fn add(&mut self, user: &UserId, device: &str, content: &Object) -> StoreResult<()> {
        let bytes = serde_json::to_vec(content).unwrap_or_default();
        for (id, _) in self.e2ee.store.devices(user)? {
            if device == "*" || device == id {
                self.messages.push((user.clone(), id, bytes.clone()));
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// The batch's writes at stream position `pos`, plus `extra` (the
    /// client transaction or the EDU's mark, so they commit together).
    pub fn write(self, pos: u64, extra: Option<Op>) -> StoreResult<usize> {
        let count = self.messages.len();
        let mut b = Batch::new();
        for (user, device, content) in self.messages {
            let message = ToDeviceRecord { sender: self.sender.clone(), r#type: self.event_type.clone(), content };
            b.push(Op::PutToDevice { user, device, pos, message });
        }
        if let Some(op) = extra {
            b.push(op);
        }
        self.e2ee.store.write(b)?;
        Ok(count)
    }
}
