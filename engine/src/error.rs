//! The engine's one error type. Every error carries a [`ErrorKind`] so that the Flight layer can map it to a gRPC
//! status in one place without parsing messages.

use datafusion::common::SchemaError;
use datafusion::error::DataFusionError;

/// What kind of failure this is, independent of where it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Malformed SQL, a plan error, a type mismatch, a bad value (wrong vector length, NaN …).
    InvalidInput,
    /// A table, view or column that does not exist.
    NotFound,
    /// Creating something that exists already.
    AlreadyExists,
    /// A primary-key (uniqueness) or NOT NULL violation.
    Constraint,
    /// A path outside the configured import/export roots, or file access that is switched off.
    PermissionDenied,
    /// A feature Marrow does not implement.
    Unsupported,
    /// The data directory is held by another process, or another writer committed to the table first; nothing
    /// was changed and the same statement can be retried.
    Locked,
    /// A memory limit was hit, or the server is at its limit of concurrent work.
    ResourcesExhausted,
    /// A query ran past `marrow.statement_timeout`; it was stopped and nothing was changed.
    Timeout,
    /// Anything else: a bug or an I/O failure.
    Internal,
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    pub fn message(&self) -> &str {
        &self.message
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
    pub fn constraint(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Constraint, message)
    }
    pub fn denied(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::PermissionDenied, message)
    }
}

/// The message a panic carried (what `panic!` and failed `unwrap`s put in it).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown cause")
}

fn classify_datafusion(e: &DataFusionError) -> ErrorKind {
    match e {
        DataFusionError::SchemaError(s, _) => match s.as_ref() {
            SchemaError::FieldNotFound { .. } => ErrorKind::NotFound,
            _ => ErrorKind::InvalidInput,
        },
        // DataFusion raises a missing table or function as a plain planning error: its text is all there is.
        DataFusionError::Plan(msg)
            if msg.contains("not found") || msg.contains("does not exist") =>
        {
            ErrorKind::NotFound
        }
        DataFusionError::SQL(..) | DataFusionError::Plan(_) => ErrorKind::InvalidInput,
        DataFusionError::Execution(_) | DataFusionError::ArrowError(..) => ErrorKind::InvalidInput,
        DataFusionError::NotImplemented(_) => ErrorKind::Unsupported,
        // SET/RESET of an unknown option or a value of the wrong type.
        DataFusionError::Configuration(_) => ErrorKind::InvalidInput,
        DataFusionError::ResourcesExhausted(_) => ErrorKind::ResourcesExhausted,
        DataFusionError::Context(_, inner) => classify_datafusion(inner),
        DataFusionError::Shared(inner) => classify_datafusion(inner),
        DataFusionError::Diagnostic(_, inner) => classify_datafusion(inner),
        DataFusionError::Collection(errs) => errs
            .first()
            .map(classify_datafusion)
            .unwrap_or(ErrorKind::Internal),
        DataFusionError::External(inner) => classify_boxed(inner.as_ref()),
        // A file the statement names that is not what it claims to be (a text file read as Parquet).
        DataFusionError::ParquetError(_) => ErrorKind::InvalidInput,
        DataFusionError::ObjectStore(e)
            if matches!(e.as_ref(), datafusion::object_store::Error::NotFound { .. }) =>
        {
            ErrorKind::NotFound
        }
        DataFusionError::ObjectStore(e)
            if matches!(
                e.as_ref(),
                datafusion::object_store::Error::PermissionDenied { .. }
            ) =>
        {
            ErrorKind::PermissionDenied
        }
        DataFusionError::IoError(e) if e.kind() == std::io::ErrorKind::NotFound => {
            ErrorKind::NotFound
        }
        _ => ErrorKind::Internal,
    }
}

/// An error behind a `dyn Error` (DataFusion's `External`, Lance's `External`/`IO`), by its type.
fn classify_boxed(inner: &(dyn std::error::Error + Send + Sync + 'static)) -> ErrorKind {
    if let Some(marrow) = inner.downcast_ref::<Error>() {
        marrow.kind
    } else if let Some(l) = inner.downcast_ref::<lance::Error>() {
        classify_lance(l)
    } else if let Some(df) = inner.downcast_ref::<DataFusionError>() {
        classify_datafusion(df)
    } else if let Some(a) = inner.downcast_ref::<arrow::error::ArrowError>() {
        classify_arrow(a)
    } else if inner.is::<std::num::ParseIntError>()
        || inner.is::<std::num::ParseFloatError>()
        || inner.is::<std::str::ParseBoolError>()
    {
        // A setting's value of the wrong type (`SET datafusion.execution.batch_size = 'abc'`).
        ErrorKind::InvalidInput
    } else {
        ErrorKind::Internal
    }
}

fn classify_arrow(e: &arrow::error::ArrowError) -> ErrorKind {
    use arrow::error::ArrowError as A;
    match e {
        A::IoError(..) | A::ExternalError(_) | A::MemoryError(_) => ErrorKind::Internal,
        _ => ErrorKind::InvalidInput,
    }
}

/// Lance errors by variant. Commit conflicts are `Locked`: another writer won the race, nothing was changed and
/// the statement can be retried as it is.
fn classify_lance(e: &lance::Error) -> ErrorKind {
    use lance::Error as L;
    match e {
        L::Shared { source } => classify_lance(source),
        L::External { source } | L::Wrapped { error: source, .. } | L::IO { source, .. } => {
            classify_boxed(source.as_ref())
        }
        // Lance keeps only the text of a DataFusion execution error (a division by zero in a pushed-down filter).
        L::Execution { .. } => ErrorKind::InvalidInput,
        _ if e.is_not_found() => ErrorKind::NotFound,
        L::DatasetNotFound { .. }
        | L::NotFound { .. }
        | L::IndexNotFound { .. }
        | L::RefNotFound { .. }
        | L::VersionNotFound { .. }
        | L::FieldNotFound { .. } => ErrorKind::NotFound,
        L::DatasetAlreadyExists { .. } | L::RefConflict { .. } => ErrorKind::AlreadyExists,
        L::InvalidInput { .. }
        | L::SchemaMismatch { .. }
        | L::Schema { .. }
        | L::Arrow { .. }
        | L::InvalidRef { .. }
        | L::InvalidTableLocation { .. } => ErrorKind::InvalidInput,
        L::NotSupported { .. } => ErrorKind::Unsupported,
        L::CommitConflict { .. }
        | L::RetryableCommitConflict { .. }
        | L::IncompatibleTransaction { .. }
        | L::TooMuchWriteContention { .. }
        | L::VersionConflict { .. }
        | L::Backpressure { .. } => ErrorKind::Locked,
        L::DiskCapExceeded { .. } => ErrorKind::ResourcesExhausted,
        _ => ErrorKind::Internal,
    }
}

/// Strip DataFusion's nested "Error during planning: " style prefixes down to one readable line.
fn df_message(e: &DataFusionError) -> String {
    match e {
        DataFusionError::External(inner) => match inner.downcast_ref::<Error>() {
            Some(marrow) => marrow.message.clone(),
            None => inner.to_string(),
        },
        // An error Marrow raised inside an optimizer rule reads as itself.
        DataFusionError::Context(ctx, inner) if ctx.starts_with("Optimizer rule") => {
            df_message(inner)
        }
        DataFusionError::Context(ctx, inner) => format!("{ctx}: {}", df_message(inner)),
        DataFusionError::Shared(inner) => df_message(inner),
        DataFusionError::Diagnostic(_, inner) => df_message(inner),
        DataFusionError::SQL(e, _) => format!(
            "SQL syntax: {}",
            e.to_string().trim_start_matches("sql parser error: ")
        ),
        other => other.to_string(),
    }
}

/// Lance appends the source location of an error (`…, /root/.cargo/registry/…/filtered_read.rs:1666:33`): a server
/// path that means nothing to a client.
pub(crate) fn without_locations(message: &str) -> String {
    static LOCATION: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r",?\s*(/|[A-Za-z]:\\)[^\s,]*\.rs:\d+:\d+").expect("valid pattern")
    });
    LOCATION.replace_all(message, "").into_owned()
}

impl From<DataFusionError> for Error {
    fn from(e: DataFusionError) -> Self {
        let message = without_locations(&df_message(&e));
        // A full disk is the operator's to fix, not a server fault.
        if message.contains("No space left on device") {
            return Self::new(ErrorKind::ResourcesExhausted, message);
        }
        Self::new(classify_datafusion(&e), message)
    }
}

impl From<lance::Error> for Error {
    fn from(e: lance::Error) -> Self {
        match classify_lance(&e) {
            ErrorKind::Locked => Self::new(
                ErrorKind::Locked,
                format!("another writer changed the table at the same time; nothing was changed, retry: {e}"),
            ),
            kind => Self::new(kind, format!("storage: {}", without_locations(&e.to_string()))),
        }
    }
}

impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Self {
        Self::invalid(e.to_string())
    }
}

impl From<datafusion::sql::sqlparser::parser::ParserError> for Error {
    fn from(e: datafusion::sql::sqlparser::parser::ParserError) -> Self {
        Self::invalid(format!("SQL syntax: {e}"))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Self::internal(format!("I/O: {e}"))
    }
}

impl From<Error> for DataFusionError {
    fn from(e: Error) -> Self {
        DataFusionError::External(Box::new(e))
    }
}
