//! lmx: a Linearized Matrix homeserver.
//!
//! `core` is the pure protocol (identifiers, canonical JSON, crypto, events,
//! room rules); `cli` exposes it on the command line.

pub mod cli;
pub mod core;
