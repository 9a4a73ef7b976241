//! The one place where errors become gRPC statuses (see DESIGN.md, "Errors").
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
//! that the server is in a transient state.) Authentication failures are `UNAUTHENTICATED` and are produced by the
//! session layer ([`crate::auth`]), never by the engine.

use arrow_flight::error::FlightError;
use datafusion::error::DataFusionError;
use marrow_engine::{Error, ErrorKind};
use tonic::{Code, Status};

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
        ErrorKind::Internal => Code::Internal,
    }
}

/// Map an engine error to a status. Internal errors are logged with their details.
pub fn to_status(e: Error) -> Status {
    let code = code_for(e.kind());
    if code == Code::Internal {
        tracing::error!(error = %e.message(), "internal error");
    } else {
        tracing::debug!(code = ?code, error = %e.message(), "request failed");
    }
    Status::new(code, e.message().to_string())
}

/// A DataFusion error raised while a result streams (after planning): classified by the engine's rules.
pub fn from_datafusion(e: DataFusionError) -> Status {
    to_status(Error::from(e))
}

/// An error while reading Arrow data a client sent (a DoPut stream): the client's data is malformed, unless the
/// transport itself failed, in which case its status is kept.
pub fn from_client_data(e: FlightError) -> Status {
    match e {
        FlightError::Tonic(status) => *status,
        other => Status::invalid_argument(format!("could not read the Arrow data sent: {other}")),
    }
}

/// A failure building a response batch or encoding a schema on the server: a bug, logged.
pub fn internal(context: &str, e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "{context}");
    Status::internal(format!("{context}: {e}"))
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
            (ErrorKind::Internal, Code::Internal),
        ];
        for (kind, code) in cases {
            let status = to_status(Error::new(kind, "boom"));
            assert_eq!(status.code(), code, "{kind:?}");
            assert_eq!(status.message(), "boom");
        }
    }

    #[test]
    fn datafusion_errors_keep_their_class() {
        let s = from_datafusion(DataFusionError::ResourcesExhausted("memory".into()));
        assert_eq!(s.code(), Code::ResourceExhausted);
        let s = from_datafusion(DataFusionError::NotImplemented("x".into()));
        assert_eq!(s.code(), Code::Unimplemented);
    }

    #[test]
    fn client_data_errors_are_invalid_argument() {
        let s = from_client_data(FlightError::DecodeError("bad".into()));
        assert_eq!(s.code(), Code::InvalidArgument);
        let s = from_client_data(FlightError::Tonic(Box::new(Status::cancelled("gone"))));
        assert_eq!(s.code(), Code::Cancelled);
    }
}
