//! Federation endpoint handlers, one module per group of the digest's
//! endpoint table.

pub mod dag;
pub mod events;
pub mod keys;
pub mod membership;
pub mod send;
pub mod visibility;

use crate::core::event::RoomVersion;
use crate::core::ids::RoomId;
use crate::http::ApiError;
use crate::room::{RoomHandle, RoomView};

use super::inbound::Req;

/// The room named in a path, if this server knows it.
pub(crate) fn known_room(req: &Req, room: &str) -> Result<(RoomHandle, std::sync::Arc<RoomView>), ApiError> {
    let id = RoomId::parse(room).map_err(|e| ApiError::bad_json(e.to_string()))?;
    let handle = req.node.rooms.get(&id).ok_or_else(|| ApiError::not_found("Unknown room"))?;
    let view = handle.view();
    Ok((handle, view))
}

/// `400 M_WRONG_SERVER` unless this server hubs the room (items 179, 196).
pub(crate) fn require_hub(req: &Req, view: &RoomView) -> Result<(), ApiError> {
    if view.is_hub(&req.node.name) {
        Ok(())
    } else {
        Err(ApiError::new(http::StatusCode::BAD_REQUEST, "M_WRONG_SERVER", "This server is not the room's hub")
            .with("hub_server", serde_json::json!(view.hub.as_str())))
    }
}

pub(crate) fn incompatible(version: &str) -> ApiError {
    ApiError::new(
        http::StatusCode::BAD_REQUEST,
        "M_INCOMPATIBLE_ROOM_VERSION",
        format!("Room version {version} is not supported"),
    )
    .with("room_version", serde_json::json!(version))
}

pub(crate) fn supported(version: &str) -> Option<&'static RoomVersion> {
    RoomVersion::find(version).filter(|v| v.hostable)
}
