//! Server-server API: the endpoints lmx serves (digest E1-E16 and the
//! Matrix ones listed in README), the calls it makes, request signing,
//! discovery, keys, and durable delivery.

pub mod backlog;
pub mod client;
pub mod dag;
pub mod device_lists;
pub mod discovery;
pub mod edu;
pub mod fetch;
pub mod handlers;
pub mod inbound;
pub mod invite;
pub mod join;
pub mod keyring;
pub mod media;
pub mod node;
pub mod outbound;
pub mod policy;
pub mod queries;
pub mod relay;
pub mod remote;
pub mod room_network;
pub mod web;
pub mod xmatrix;

pub use backlog::{Backlog, BACKLOG_COUNT_LIMIT};
pub use node::Node;
pub use outbound::DeliveryStatus;
pub use remote::Remote;

/// Path prefix of the `.02` room version's unstable endpoints (digest 6.0).
pub const UNSTABLE: &str = "/_matrix/federation/unstable/org.matrix.i-d.ralston-mimi-linearized-matrix.02";
/// The same prefix as path segments, for routing.
pub const UNSTABLE_SEGMENTS: [&str; 4] =
    ["_matrix", "federation", "unstable", "org.matrix.i-d.ralston-mimi-linearized-matrix.02"];
