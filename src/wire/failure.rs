//! What a request failed on, by cause. The words a variant carries are
//! for the caller; causes inside this server are `Internal`, whose details
//! are only logged.

use crate::http::BodyError;
use crate::room::RoomError;
use crate::store::StoreError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Failure {
    #[error("no such endpoint")]
    Unrecognized,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("body: {0:?}")]
    Body(BodyError),
    /// JSON of the wrong shape: a field missing or of the wrong type.
    #[error("bad JSON: {0}")]
    BadJson(String),
    #[error("missing parameter: {0}")]
    MissingParam(String),
    #[error("invalid parameter: {0}")]
    InvalidParam(String),
    /// A well-formed request this server will not carry out as asked.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The request conflicts with one still being handled.
    #[error("bad state: {0}")]
    BadState(String),
    #[error("missing access token")]
    MissingToken,
    #[error("unknown access token")]
    UnknownToken,
    /// An access token past its lifetime: the client may refresh it.
    #[error("expired access token")]
    ExpiredToken,
    #[error("user deactivated")]
    UserDeactivated,
    /// A sliding sync position this server no longer knows.
    #[error("unknown sliding sync position")]
    UnknownPos,
    /// Email and phone numbers are not served.
    #[error("third-party identifiers are not supported")]
    ThreepidUnsupported,
    /// User-interactive authentication: complete `stage` in `session`.
    #[error("authentication needed: {why}")]
    /// `failed`: an attempt at the stage was made and failed (the answer
    /// then carries `errcode` and `error`, as the spec has it; a first
    /// challenge carries neither).
    AuthNeeded { stage: &'static str, session: String, why: &'static str, failed: bool },
    /// An `X-Matrix` authorization that authenticates nothing.
    #[error("bad request signature: {0}")]
    BadSignature(String),
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("taken: {0:?}")]
    Taken(Taken),
    #[error("invalid user name: {0}")]
    InvalidUsername(String),
    #[error("weak password: {0}")]
    WeakPassword(String),
    #[error("rate limited: {why}")]
    LimitExceeded { why: String, retry_after_ms: u64 },
    #[error("too large: {0}")]
    TooLarge(String),
    /// Another server's file is over what this server takes.
    #[error("remote content too large: {0}")]
    RemoteTooLarge(String),
    /// A media id reserved for an upload that has not come.
    #[error("media not yet uploaded")]
    NotYetUploaded,
    /// An upload to a media id that has its file.
    #[error("media already uploaded")]
    CannotOverwriteMedia,
    /// A signature that does not verify (signed keys a client uploads).
    #[error("invalid signature: {0}")]
    InvalidSignature(String),
    /// Key backup written to a version that is not the current one (named).
    #[error("backup version {0} is the current one")]
    WrongRoomKeysVersion(String),
    /// A hub's request sent to a server that is not the room's hub.
    #[error("not the hub; the hub is {hub}")]
    WrongServer { hub: String },
    #[error("unsupported room version {0}")]
    UnsupportedRoomVersion(String),
    #[error("room: {0}")]
    Room(RoomError),
    /// This process cannot serve the request now (a standby with no
    /// serving process to pass it to).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Another server failed or refused; its words are passed on.
    #[error("remote: {0}")]
    Remote(String),
    #[error("internal: {0}")]
    Internal(Internal),
}

/// A name that is in use already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    UserId,
    /// The alias `createRoom` was asked to give the new room.
    AliasOnCreate,
    /// The alias a directory `PUT` names.
    Alias,
}

/// A failure of this server itself: logged, never described to the caller.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Internal {
    #[error("storage: {0}")]
    Store(String),
    /// A stored record that does not read back as what it should be.
    #[error("stored data: {0}")]
    Corrupt(String),
    /// A worker this request needed has stopped.
    #[error("stopped: {0}")]
    Stopped(&'static str),
    /// Signing or building something this server makes itself failed.
    #[error("{0}")]
    Failed(String),
}

impl Failure {
    pub fn bad_json(why: impl Into<String>) -> Self {
        Failure::BadJson(why.into())
    }
    pub fn invalid_param(why: impl std::fmt::Display) -> Self {
        Failure::InvalidParam(why.to_string())
    }
    pub fn forbidden(why: impl Into<String>) -> Self {
        Failure::Forbidden(why.into())
    }
    pub fn not_found(why: impl Into<String>) -> Self {
        Failure::NotFound(why.into())
    }
    pub fn too_large(why: impl Into<String>) -> Self {
        Failure::TooLarge(why.into())
    }
    pub fn limit_exceeded(why: impl Into<String>, retry_after_ms: u64) -> Self {
        Failure::LimitExceeded { why: why.into(), retry_after_ms }
    }
    /// Stored data that does not parse as it should.
    pub fn corrupt(what: impl std::fmt::Display) -> Self {
        Failure::Internal(Internal::Corrupt(what.to_string()))
    }
    pub fn failed(what: impl std::fmt::Display) -> Self {
        Failure::Internal(Internal::Failed(what.to_string()))
    }
    pub fn stopped(worker: &'static str) -> Self {
        Failure::Internal(Internal::Stopped(worker))
    }

    /// Logs a cause inside this server; the surfaces call it once, where
    /// the answer is sent. A room's storage failure was logged where it
    /// became a `RoomError`.
    pub fn log_internal(&self) {
        if let Failure::Internal(cause) = self {
            tracing::error!(error = %cause, "request failed inside this server");
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Internal(Internal::Store(e.to_string()))
    }
}

impl From<RoomError> for Failure {
    fn from(e: RoomError) -> Self {
        Failure::Room(e)
    }
}

impl From<BodyError> for Failure {
    fn from(e: BodyError) -> Self {
        Failure::Body(e)
    }
}
