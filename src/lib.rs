//! lmx: a Linearized Matrix homeserver.
//!
//! `core` is the pure protocol (identifiers, canonical JSON, crypto, events,
//! room rules). Around it: `store` (durable state), `room` (one writer task
//! per room, hub and participant roles), `federation` and `client_api` (the
//! two HTTP surfaces), `app` (composition) and `cli`.

pub mod admin;
pub mod app;
pub mod bench;
pub mod cli;
pub mod client_api;
pub mod config;
pub mod core;
pub mod crash;
pub mod e2ee;
pub mod ephemeral;
pub mod federation;
pub mod http;
pub mod media;
pub mod push;
pub mod room;
pub mod store;
pub mod sys;
pub mod wire;
