//! The crate's one error type, and the one place where errors become gRPC statuses (see DESIGN.md, "Errors").
//!
//! | engine [`ErrorKind`]   | gRPC code             |
//! |------------------------|-----------------------|
//! | `InvalidInput`         | `INVALID_ARGUMENT`    |
//! | `NotFound`             | `NOT_FOUND`           |
//! | `AlreadyExists`        | `ALREADY_EXISTS`      |
//! | `Constraint`           | `INVALID_ARGUMENT`    |
//! | `PermissionDenied`     | `PERMISSION_DENIED`   |
//! | `Unsupported`          | `UNIMPLEMENTED`       |
//! | `Locked`               | `UNAVAILABLE`         |
//! | `ResourcesExhausted`   | `RESOURCE_EXHAUSTED`  |
//! | `Internal`             | `INTERNAL` (logged)   |
//!
//! A constraint violation (duplicate primary key, NULL in a NOT NULL column) is `INVALID_ARGUMENT`: the rows sent
//! are what is wrong, and sending the same request again fails the same way. (`FAILED_PRECONDITION` would suggest
//! that the server is in a transient state.) Protocol-level failures (a malformed ticket, an unknown handle, a
//! missing login) are raised by the Flight layer itself with the constructors below; authentication failures are
//! `UNAUTHENTICATED` and never come from the engine, and a server full of active sessions or a login refused after
//! too many failures is `RESOURCE_EXHAUSTED` (the message says when to try again).

use arrow_flight::error::FlightError;
use datafusion::error::DataFusionError;
use marrow_engine::ErrorKind;
use tonic::{Code, Status};

/// Why a Flight call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An engine error, classified by its [`ErrorKind`].
    #[error(transparent)]
    Engine(#[from] marrow_engine::Error),
    /// A request the Flight layer refuses: the code says why (malformed, unknown, unsupported, not logged in).
    #[error("{message}")]
    Request { code: Code, message: String },
    /// A failure building a response on the server: a bug, logged.
    #[error("{0}")]
    Internal(String),
    /// A status from the transport or from arrow-flight, passed on as it is.
    #[error("{0}")]
    Transport(Box<Status>),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::request(Code::InvalidArgument, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::request(Code::NotFound, message)
    }

    pub fn unimplemented(message: impl Into<String>) -> Self {
        Self::request(Code::Unimplemented, message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::request(Code::Unauthenticated, message)
    }

    /// A limit of the server's (sessions, login attempts) that the caller may try again after.
    pub fn resource_exhausted(message: impl Into<String>) -> Self {
        Self::request(Code::ResourceExhausted, message)
    }

    /// A server-side failure while `context`.
    pub fn internal(context: &str, e: impl std::fmt::Display) -> Self {
        Self::Internal(format!("{context}: {e}"))
    }

    fn request(code: Code, message: impl Into<String>) -> Self {
        Self::Request {
            code,
            message: message.into(),
        }
    }

    /// A ticket this server did not issue (or a command sent as a ticket).
    pub fn invalid_ticket() -> Self {
        Self::invalid("malformed ticket: not a ticket issued by this server")
    }

    pub fn unknown_ticket() -> Self {
        Self::not_found(
            "ticket not found: it expired, was already used, or belongs to another session",
        )
    }

    pub fn unknown_handle() -> Self {
        Self::not_found(
            "prepared statement not found: it was closed, or belongs to another or an expired session",
        )
    }

    pub fn no_transactions() -> Self {
        Self::unimplemented("transactions are not supported: every statement commits on its own")
    }

    /// An error while reading Arrow data a client sent (a DoPut stream): the client's data is malformed, unless
    /// the transport itself failed, in which case its status is kept.
    pub fn client_data(e: FlightError) -> Self {
        match e {
            FlightError::Tonic(status) => Self::Transport(status),
            other => Self::invalid(format!("could not read the Arrow data sent: {other}")),
        }
    }
}

/// A DataFusion error raised while a result streams (after planning): classified by the engine's rules.
impl From<DataFusionError> for Error {
    fn from(e: DataFusionError) -> Self {
        Self::Engine(e.into())
    }
}

/// The gRPC code for an engine error kind.
pub fn code_for(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::InvalidInput => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::Constraint => Code::InvalidArgument,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::Unsupported => Code::Unimplemented,
        ErrorKind::Locked => Code::Unavailable,
        ErrorKind::ResourcesExhausted => Code::ResourceExhausted,
        ErrorKind::Timeout => Code::DeadlineExceeded,
        ErrorKind::Internal => Code::Internal,
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let (code, message) = match e {
            Error::Transport(status) => return *status,
            Error::Engine(e) => (code_for(e.kind()), e.message().to_string()),
            Error::Request { code, message } => (code, message),
            Error::Internal(message) => (Code::Internal, message),
        };
        if code == Code::Internal {
            tracing::error!(error = %message, "internal error");
        } else {
            tracing::debug!(code = ?code, error = %message, "request failed");
        }
        Status::new(code, message)
    }
}

/// Statuses produced by arrow-flight's own request decoding before Marrow sees a request (a command whose Any
/// wrapper names a Flight SQL message but carries bytes that do not decode) come out as INTERNAL; they are the
/// client's fault, so the session layer rewrites them with this.
pub(crate) fn is_client_decode_error(status: &Status) -> bool {
    status.code() == Code::Internal
        && (status.message().contains("Unable to decode Any value")
            || status.message().contains("Unable to unpack")
            || status.message().contains("DecodeError"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_code() {
        let cases = [
            (ErrorKind::InvalidInput, Code::InvalidArgument),
            (ErrorKind::NotFound, Code::NotFound),
            (ErrorKind::AlreadyExists, Code::AlreadyExists),
            (ErrorKind::Constraint, Code::InvalidArgument),
            (ErrorKind::PermissionDenied, Code::PermissionDenied),
            (ErrorKind::Unsupported, Code::Unimplemented),
            (ErrorKind::Locked, Code::Unavailable),
            (ErrorKind::ResourcesExhausted, Code::ResourceExhausted),
            (ErrorKind::Timeout, Code::DeadlineExceeded),
            (ErrorKind::Internal, Code::Internal),
        ];
        for (kind, code) in cases {
            let status = Status::from(Error::from(marrow_engine::Error::new(kind, "boom")));
            assert_eq!(status.code(), code, "{kind:?}");
            assert_eq!(status.message(), "boom");
        }
    }

    #[test]
    fn datafusion_errors_keep_their_class() {
        let s = Status::from(Error::from(DataFusionError::ResourcesExhausted(
            "memory".into(),
        )));
        assert_eq!(s.code(), Code::ResourceExhausted);
        let s = Status::from(Error::from(DataFusionError::NotImplemented("x".into())));
        assert_eq!(s.code(), Code::Unimplemented);
    }

    #[test]
    fn client_data_errors_are_invalid_argument() {
        let s = Status::from(Error::client_data(FlightError::DecodeError("bad".into())));
        assert_eq!(s.code(), Code::InvalidArgument);
        let s = Status::from(Error::client_data(FlightError::Tonic(Box::new(
            Status::cancelled("gone"),
        ))));
        assert_eq!(s.code(), Code::Cancelled);
    }
}
