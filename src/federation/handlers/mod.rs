//! Federation endpoint handlers, one module per group of the digest's
//! endpoint table.

pub mod dag;
pub mod directory;
pub mod e2ee;
pub mod events;
pub mod hierarchy;
pub mod keys;
pub mod media;
pub mod membership;
pub mod send;
pub mod visibility;

use crate::core::event::RoomVersion;
use crate::core::ids::RoomId;
use crate::room::{RoomHandle, RoomView};
use crate::wire::Failure;

use super::inbound::Req;

/// The room named in a path, if this server knows it, to write to.
pub(crate) fn known_room(req: &Req, room: &str) -> Result<(RoomHandle, std::sync::Arc<RoomView>), Failure> {
    let id = RoomId::parse(room).map_err(|e| Failure::bad_json(e.to_string()))?;
    let handle = req.node.rooms.find(&id)?.ok_or_else(|| Failure::not_found("Unknown room"))?;
    let view = handle.view();
    Ok((handle, view))
}

/// The room named in a path, if this server knows it, to read (its writer
/// is not started for it).
pub(crate) fn known_view(req: &Req, room: &str) -> Result<std::sync::Arc<RoomView>, Failure> {
    let id = RoomId::parse(room).map_err(|e| Failure::bad_json(e.to_string()))?;
    req.node.rooms.find_view(&id)?.ok_or_else(|| Failure::not_found("Unknown room"))
}

/// `400 M_WRONG_SERVER` unless this server hubs the room (items 179, 196).
pub(crate) fn require_hub(req: &Req, view: &RoomView) -> Result<(), Failure> {
    if view.is_hub(&req.node.name) {
        Ok(())
    } else {
        Err(Failure::WrongServer { hub: view.hub.as_str().to_owned() })
    }
}

pub(crate) fn supported(version: &str) -> Option<&'static RoomVersion> {
    RoomVersion::find(version).filter(|v| v.hostable)
}
