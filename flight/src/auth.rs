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
//!   cookie gets a fresh session on each call; it can still use the prepared statements and tickets it was given,
//!   which run in the session that created them (their 128-bit ids are unguessable).
//!
//! Tokens and cookies are 256-bit random values. Sessions idle for longer than [`Limits::idle`] are dropped with
//! their prepared statements; sessions that were created but never presented again (cookie-less clients) are
//! dropped after [`Limits::unconfirmed_idle`], and at most [`Limits::max_sessions`] are kept (least recently used
//! first out).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use marrow_engine::Database;
use tonic::codegen::http::{self, HeaderMap, HeaderValue};
use tonic::codegen::{BoxFuture, Service};
use tonic::server::NamedService;
use tonic::Status;

/// Name of the session cookie used when auth is off.
pub const SESSION_COOKIE: &str = "marrow_session";

const HANDSHAKE_PATH: &str = "/arrow.flight.protocol.FlightService/Handshake";

/// The one user a server accepts when auth is on.
#[derive(Clone)]
pub struct Credentials {
    user: String,
    password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            password: password.into(),
        }
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    /// Compare without an early exit, so that timing does not reveal how much of a guess was right.
    pub fn matches(&self, user: &str, password: &str) -> bool {
        let u = constant_time_eq(self.user.as_bytes(), user.as_bytes());
        let p = constant_time_eq(self.password.as_bytes(), password.as_bytes());
        u & p
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() != b.len()) as u8;
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

/// Decode `user:password` from the value of an `authorization: Basic …` header. Padding is optional (ADBC's Go
/// driver sends none) and the URL-safe alphabet is accepted too.
pub fn parse_basic(header: &str) -> Option<(String, String)> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let encoded: String = rest.chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = STANDARD_LENIENT
        .decode(&encoded)
        .or_else(|_| URL_SAFE_LENIENT.decode(&encoded))
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// The token of an `authorization: Bearer …` header value.
pub fn parse_bearer(header: &str) -> Option<&str> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(char::is_whitespace)?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// The session cookie among the request's `cookie` headers (HTTP/2 may split them into several).
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim().to_string())
}

/// A fresh 256-bit secret, hex-encoded.
fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How a session is presented by its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// `authorization: Bearer <token>`, issued by a handshake.
    Token,
    /// `cookie: marrow_session=<value>`, issued when auth is off.
    Cookie,
}

/// One client's session.
pub struct ClientSession {
    id: u64,
    secret: String,
    kind: SessionKind,
    engine: marrow_engine::Session,
    last_used: Mutex<Instant>,
    /// The client presented the secret at least once (cookie-less clients never do).
    confirmed: AtomicBool,
    closed: AtomicBool,
}

impl std::fmt::Debug for ClientSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSession")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl ClientSession {
    /// A small number for logs (never the secret).
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn kind(&self) -> SessionKind {
        self.kind
    }

    pub(crate) fn secret(&self) -> &str {
        &self.secret
    }

    pub fn engine(&self) -> &marrow_engine::Session {
        &self.engine
    }

    /// Dropped by expiry or eviction: its prepared statements and tickets are gone with it.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    pub(crate) fn touch(&self) {
        *self.last_used.lock().expect("session clock") = Instant::now();
    }

    fn idle_since(&self) -> Instant {
        *self.last_used.lock().expect("session clock")
    }
}

/// Lifetimes of sessions.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A session unused for this long is dropped.
    pub idle: Duration,
    /// A session whose client never presented its token or cookie is dropped after this much idle time.
    pub unconfirmed_idle: Duration,
    /// At most this many sessions; the least recently used go first.
    pub max_sessions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(12 * 3600),
            unconfirmed_idle: Duration::from_secs(10 * 60),
            max_sessions: 4096,
        }
    }
}

/// All live sessions, by secret.
pub struct SessionStore {
    db: Database,
    limits: Limits,
    sessions: Mutex<HashMap<String, Arc<ClientSession>>>,
    next_id: AtomicU64,
    last_sweep: Mutex<Instant>,
}

impl std::fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStore")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

const SWEEP_EVERY: Duration = Duration::from_secs(10);

impl SessionStore {
    pub fn new(db: Database, limits: Limits) -> Self {
        Self {
            db,
            limits,
            sessions: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            last_sweep: Mutex::new(Instant::now()),
        }
    }

    pub fn len(&self) -> usize {
        self.sessions.lock().expect("sessions").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Open a new session with its own engine session.
    pub fn create(&self, kind: SessionKind) -> Arc<ClientSession> {
        let session = Arc::new(ClientSession {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            secret: new_secret(),
            kind,
            engine: self.db.session(),
            last_used: Mutex::new(Instant::now()),
            confirmed: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        });
        let now = Instant::now();
        let mut sessions = self.sessions.lock().expect("sessions");
        let due = {
            let mut last = self.last_sweep.lock().expect("sweep clock");
            let due = now.duration_since(*last) >= SWEEP_EVERY
                || sessions.len() >= self.limits.max_sessions;
            if due {
                *last = now;
            }
            due
        };
        if due {
            self.sweep_locked(&mut sessions, now);
        }
        sessions.insert(session.secret.clone(), session.clone());
        tracing::debug!(session = session.id, kind = ?kind, "session opened");
        session
    }

    fn expired(&self, s: &ClientSession, now: Instant) -> bool {
        let ttl = if s.confirmed.load(Ordering::Relaxed) {
            self.limits.idle
        } else {
            self.limits.unconfirmed_idle
        };
        now.duration_since(s.idle_since()) > ttl
    }

    fn sweep_locked(&self, sessions: &mut HashMap<String, Arc<ClientSession>>, now: Instant) {
        sessions.retain(|_, s| {
            let keep = !self.expired(s, now);
            if !keep {
                s.closed.store(true, Ordering::Relaxed);
                tracing::debug!(session = s.id, "session expired");
            }
            keep
        });
        // Make room for the session about to be inserted.
        if sessions.len() >= self.limits.max_sessions {
            let mut by_age: Vec<(Instant, String)> = sessions
                .iter()
                .map(|(k, s)| (s.idle_since(), k.clone()))
                .collect();
            by_age.sort();
            let excess = sessions.len() + 1 - self.limits.max_sessions;
            for (_, key) in by_age.into_iter().take(excess) {
                if let Some(s) = sessions.remove(&key) {
                    s.closed.store(true, Ordering::Relaxed);
                    tracing::debug!(session = s.id, "session evicted (too many sessions)");
                }
            }
        }
    }

    /// The live session a client presents (token or cookie value); marks it used.
    pub fn lookup(&self, secret: &str, kind: SessionKind) -> Option<Arc<ClientSession>> {
        let now = Instant::now();
        let mut sessions = self.sessions.lock().expect("sessions");
        let session = sessions.get(secret)?.clone();
        if session.kind != kind {
            return None;
        }
        if self.expired(&session, now) {
            sessions.remove(secret);
            session.closed.store(true, Ordering::Relaxed);
            return None;
        }
        session.confirmed.store(true, Ordering::Relaxed);
        session.touch();
        Some(session)
    }

    /// Drop a session now.
    pub fn close(&self, session: &ClientSession) {
        self.sessions
            .lock()
            .expect("sessions")
            .remove(&session.secret);
        session.closed.store(true, Ordering::Relaxed);
    }
}

/// What the session layer learned about a call, handed to the service through the request's extensions.
#[derive(Clone)]
pub struct CallContext {
    caller: Option<Arc<ClientSession>>,
    store: Arc<SessionStore>,
    /// A session created for this call (auth off, no cookie): its cookie goes into the response headers.
    created: Arc<Mutex<Option<Arc<ClientSession>>>>,
}

impl CallContext {
    /// The session the caller presented, if any.
    pub fn caller(&self) -> Option<&Arc<ClientSession>> {
        self.caller.as_ref()
    }

    /// The caller's session, or a new cookie session for a caller that presented none (auth off).
    pub fn session(&self) -> Arc<ClientSession> {
        if let Some(s) = &self.caller {
            return s.clone();
        }
        let mut created = self.created.lock().expect("created session");
        created
            .get_or_insert_with(|| self.store.create(SessionKind::Cookie))
            .clone()
    }

    /// The session in which to use a resource (prepared statement, ticket) owned by `owner`: the owner itself
    /// when the caller is that session or presented none; `None` when the caller is another session.
    pub fn session_for(&self, owner: &Arc<ClientSession>) -> Option<Arc<ClientSession>> {
        if owner.is_closed() {
            return None;
        }
        match &self.caller {
            Some(caller) if caller.id != owner.id => None,
            _ => {
                owner.touch();
                Some(owner.clone())
            }
        }
    }

    pub fn store(&self) -> &Arc<SessionStore> {
        &self.store
    }
}

/// The tower service in front of the Flight service: identifies the caller's session, enforces auth on every call
/// but `Handshake`, and adds the session cookie to responses.
#[derive(Clone)]
pub struct SessionLayer<S> {
    inner: S,
    store: Arc<SessionStore>,
    auth: Option<Credentials>,
}

impl<S> SessionLayer<S> {
    pub fn new(inner: S, store: Arc<SessionStore>, auth: Option<Credentials>) -> Self {
        Self { inner, store, auth }
    }

    fn identify(&self, headers: &HeaderMap) -> Result<Option<Arc<ClientSession>>, Status> {
        let authorization = headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or(""));
        if let Some(value) = authorization {
            if let Some(token) = parse_bearer(value) {
                return match self.store.lookup(token, SessionKind::Token) {
                    Some(s) => Ok(Some(s)),
                    None => Err(Status::unauthenticated(
                        "invalid or expired bearer token: perform a Handshake to get a new one",
                    )),
                };
            }
            if self.auth.is_some() {
                return Err(Status::unauthenticated(
                    "this server accepts a bearer token only: send Basic credentials in a Handshake first",
                ));
            }
        }
        if self.auth.is_some() {
            return Err(Status::unauthenticated(
                "authentication required: perform a Handshake with Basic credentials and send the bearer token",
            ));
        }
        Ok(session_cookie(headers).and_then(|c| self.store.lookup(&c, SessionKind::Cookie)))
    }
}

impl<S: NamedService> NamedService for SessionLayer<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for SessionLayer<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let caller = if req.uri().path() == HANDSHAKE_PATH {
            // The handshake authenticates itself; it may carry a stale token, which must not block a new login.
            Ok(None)
        } else {
            self.identify(req.headers())
        };
        let caller = match caller {
            Ok(c) => c,
            Err(status) => {
                tracing::debug!(path = req.uri().path(), "rejected: {}", status.message());
                return Box::pin(async move { Ok(status.into_http()) });
            }
        };
        let created = Arc::new(Mutex::new(None));
        req.extensions_mut().insert(CallContext {
            caller,
            store: self.store.clone(),
            created: created.clone(),
        });
        // The inner service is always ready (tonic's generated servers are); take the ready one and leave a clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let mut response = inner.call(req).await?;
            let issued = created.lock().expect("created session").take();
            if let Some(session) = issued {
                let cookie = format!("{SESSION_COOKIE}={}; Path=/; HttpOnly", session.secret());
                if let Ok(v) = HeaderValue::from_str(&cookie) {
                    response.headers_mut().append(http::header::SET_COOKIE, v);
                }
            }
            rewrite_decode_errors(response.headers_mut());
            Ok(response)
        })
    }
}

/// arrow-flight reports an undecodable command inside a well-formed `Any` as INTERNAL; it is the client's error.
fn rewrite_decode_errors(headers: &mut HeaderMap) {
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    if crate::status::is_client_decode_error(&status) {
        let fixed = Status::invalid_argument(format!("malformed request: {}", status.message()));
        headers.remove("grpc-status");
        headers.remove("grpc-message");
        headers.remove("grpc-status-details-bin");
        if fixed.add_header(headers).is_err() {
            tracing::warn!("could not rewrite a decode error status");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_with_and_without_padding() {
        // "u:pw" encodes to "dTpwdw==".
        assert_eq!(
            parse_basic("Basic dTpwdw=="),
            Some(("u".into(), "pw".into()))
        );
        assert_eq!(parse_basic("Basic dTpwdw"), Some(("u".into(), "pw".into())));
        assert_eq!(
            parse_basic("basic   dTpwdw=="),
            Some(("u".into(), "pw".into()))
        );
        // A password may contain ':'.
        let enc = base64::engine::general_purpose::STANDARD.encode("alice:a:b");
        assert_eq!(
            parse_basic(&format!("Basic {enc}")),
            Some(("alice".into(), "a:b".into()))
        );
        // URL-safe alphabet.
        let enc = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("é?>:~~~?");
        assert_eq!(
            parse_basic(&format!("Basic {enc}")),
            Some(("é?>".into(), "~~~?".into()))
        );
        assert_eq!(parse_basic("Basic !!!"), None);
        assert_eq!(parse_basic("Bearer abc"), None);
        assert_eq!(parse_basic("Basic"), None);
        let enc = base64::engine::general_purpose::STANDARD.encode("nocolon");
        assert_eq!(parse_basic(&format!("Basic {enc}")), None);
    }

    #[test]
    fn bearer() {
        assert_eq!(parse_bearer("Bearer abc"), Some("abc"));
        assert_eq!(parse_bearer("bearer  abc "), Some("abc"));
        assert_eq!(parse_bearer("Basic abc"), None);
    }

    #[test]
    fn credentials_compare_fully() {
        let c = Credentials::new("alice", "secret");
        assert!(c.matches("alice", "secret"));
        assert!(!c.matches("alice", "secre"));
        assert!(!c.matches("alice", "secret2"));
        assert!(!c.matches("bob", "secret"));
        assert!(!c.matches("", ""));
        assert!(!format!("{c:?}").contains("secret"));
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            http::header::COOKIE,
            HeaderValue::from_static("a=1; marrow_session=xyz; b=2"),
        );
        assert_eq!(session_cookie(&h).as_deref(), Some("xyz"));
        let mut h = HeaderMap::new();
        h.append(http::header::COOKIE, HeaderValue::from_static("a=1"));
        h.append(
            http::header::COOKIE,
            HeaderValue::from_static("marrow_session=q"),
        );
        assert_eq!(session_cookie(&h).as_deref(), Some("q"));
        assert_eq!(session_cookie(&HeaderMap::new()), None);
    }

    #[test]
    fn secrets_are_distinct_and_long() {
        let a = new_secret();
        assert_eq!(a.len(), 64);
        assert_ne!(a, new_secret());
    }

    /// A throwaway data directory (the flight crate has no tempfile dependency).
    struct TempDir(std::path::PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[tokio::test]
    async fn sessions_are_evicted_least_recently_used_first() {
        let dir = TempDir(std::env::temp_dir().join(format!("marrow-auth-test-{}", new_secret())));
        let db = Database::open(marrow_engine::Config::new(&dir.0))
            .await
            .unwrap();
        let limits = Limits {
            max_sessions: 2,
            ..Default::default()
        };
        let store = SessionStore::new(db, limits);
        let a = store.create(SessionKind::Token);
        let b = store.create(SessionKind::Cookie);
        // A token is not a cookie and the other way round.
        assert!(store.lookup(a.secret(), SessionKind::Cookie).is_none());
        assert!(store.lookup(b.secret(), SessionKind::Token).is_none());
        // Using `a` makes `b` the least recently used one.
        assert_eq!(
            store.lookup(a.secret(), SessionKind::Token).unwrap().id(),
            a.id()
        );
        let c = store.create(SessionKind::Token);
        assert_eq!(store.len(), 2);
        assert!(b.is_closed() && !a.is_closed() && !c.is_closed());
        assert!(store.lookup(b.secret(), SessionKind::Cookie).is_none());
        store.close(&a);
        assert!(a.is_closed());
        assert!(store.lookup(a.secret(), SessionKind::Token).is_none());
        assert_eq!(store.len(), 1);
    }

    #[tokio::test]
    async fn resources_are_used_in_their_owner_session_only() {
        let dir = TempDir(std::env::temp_dir().join(format!("marrow-auth-test-{}", new_secret())));
        let db = Database::open(marrow_engine::Config::new(&dir.0))
            .await
            .unwrap();
        let store = Arc::new(SessionStore::new(db, Limits::default()));
        let owner = store.create(SessionKind::Token);
        let other = store.create(SessionKind::Token);
        let ctx = |caller: Option<Arc<ClientSession>>| CallContext {
            caller,
            store: store.clone(),
            created: Arc::new(Mutex::new(None)),
        };
        assert_eq!(
            ctx(Some(owner.clone())).session_for(&owner).unwrap().id(),
            owner.id()
        );
        assert!(ctx(Some(other.clone())).session_for(&owner).is_none());
        // A caller without a session (auth off, no cookie) uses the owner's.
        assert_eq!(ctx(None).session_for(&owner).unwrap().id(), owner.id());
        // Such a caller gets one new cookie session per call, however often it asks.
        let anonymous = ctx(None);
        let s1 = anonymous.session();
        assert_eq!(anonymous.session().id(), s1.id());
        assert_eq!(s1.kind(), SessionKind::Cookie);
        store.close(&owner);
        assert!(ctx(None).session_for(&owner).is_none());
    }
}
