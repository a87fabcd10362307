//! Room rules over events: state, auth events selection, authorization,
//! and the linked-list append check.

pub mod append;
pub mod auth;
pub mod order;
pub mod resolve;
pub mod selection;
pub mod state;

pub use append::{auth_events_match, check_append, AppendError};
pub use auth::{authorize, authorize_by_auth_events, check_auth_events, AuthError, PowerLevels};
pub use order::{replay_order, Place};
pub use resolve::{resolve, EventSource, ResolveError, StateIds, StateKey};
pub use selection::{auth_types, select_auth_events, EventSketch};
pub use state::{StateMap, StateView};
