//! Authentication and client sessions.
//!
//! Every Flight call runs in a *client session*, which owns one [`marrow_engine::Session`] (so `SET` applies to
//! that client only) and the client's prepared statements and tickets:
//!
//! - **Auth on** (`--user/--password`): a `Handshake` with HTTP Basic credentials (base64 with or without padding)
//!   creates a session and returns its bearer token in the `authorization: Bearer <token>` response header and as
//!   the handshake payload. Every other call must carry that header, or it fails with `UNAUTHENTICATED`.
//! - **Auth off**: a `Handshake` (any credentials) still creates a session and returns a bearer token, for clients
//!   that want one. Calls without a token are keyed by a server-issued cookie: the first call that needs a session
//!   gets `set-cookie: marrow_session=…`, and a client that sends it back (`cookie` header; ADBC's
//!   `adbc.flight.sql.rpc.with_cookie_middleware=true`) keeps its session. A client that sends neither token nor
//!   cookie keeps one session per transport connection ([`connection`]): the session made by its first call that
//!   needs one is bound to the connection, so `SET`, temporary settings and prepared statements persist across the
//!   calls of an ADBC, JDBC or pyarrow.flight connection without any client option, and other connections never
//!   see it. Prepared statements and tickets also run in the session that created them wherever they are
//!   presented (their 128-bit ids are unguessable).
//!
//! Tokens and cookies are 256-bit random values. A session starts *pending* and is *established* when its client
//! presents its token or cookie again; the two have separate budgets ([`Limits`]), so that a flood of logins or of
//! calls without a session can push out only other pending sessions, and a session in use is never dropped to make
//! room: a server whose [`Limits::max_sessions`] established sessions were all used within [`Limits::evict_after`]
//! refuses new ones with `RESOURCE_EXHAUSTED` (see [`sessions`]). Failed logins are slowed down per client address and
//! per user name ([`throttle`]).
//!
//! - [`credentials`]: the accepted user and the `authorization` header values (Basic, Bearer).
//! - [`sessions`]: client sessions and their store; [`CallContext`], what a call knows of its session.
//! - [`layer`]: the tower layer that identifies each call's session and sets the session cookie.
//! - [`throttle`]: back-off after failed logins, per client address and per user name.
//! - [`handshake`]: the Flight `Handshake` (login), which issues bearer tokens.

pub mod connection;
pub mod credentials;
pub mod handshake;
pub mod layer;
pub mod sessions;
pub mod throttle;

pub use credentials::{parse_basic, parse_bearer, Credentials};
pub use layer::SessionLayer;
pub use sessions::{CallContext, ClientSession, Limits, SessionKind, SessionStore};
pub use throttle::{LoginLimits, LoginThrottle};

/// Name of the session cookie used when auth is off.
pub const SESSION_COOKIE: &str = "marrow_session";
