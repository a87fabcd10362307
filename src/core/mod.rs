//! The protocol core: pure functions and types, no I/O, clock or randomness
//! (time and keys are arguments). Modules depend only on those listed
//! above them: ids → json → crypto → event → rooms, and mls (MLS objects
//! and commits, read with openmls) beside rooms.

pub mod crypto;
pub mod event;
pub mod ids;
pub mod json;
pub mod mls;
pub mod push;
pub mod rooms;
