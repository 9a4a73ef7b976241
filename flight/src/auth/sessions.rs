//! Client sessions: each owns one engine session, and the store keeps them by secret (token or cookie value).
//!
//! The store has two pools with separate budgets, so that new traffic competes only with new traffic:
//!
//! - **Pending**: every session starts here, created by a handshake (token) or by a call that presented no session
//!   and needed one (cookie, auth off). At most [`Limits::max_pending`]; a new one pushes out the least recently used
//!   pending session. Dropped after [`Limits::pending_idle`] unused.
//! - **Established**: a session moves here when its client presents its token or cookie on a later call. At most
//!   [`Limits::max_sessions`]; when full, a newcomer takes the place of the least recently used established session
//!   only if that one has been unused for [`Limits::evict_after`], and is refused (`RESOURCE_EXHAUSTED`) otherwise:
//!   a session in use is never dropped to make room. Dropped after [`Limits::idle`] unused.
//!
//! A flood of handshakes or of calls without a token or cookie therefore churns the pending pool only; it cannot
//! end a session whose client is using it. Clients that send neither token nor cookie have no identity to protect:
//! their one-call sessions (and the prepared statements made in them) live in the pending pool, used by handle.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use marrow_engine::{Database, PreparedStatement};

use crate::error::{Error, Result};

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
    closed: AtomicBool,
    /// Statements run by SQL text with [`ClientSession::statement`], least recently used first.
    statements: Mutex<VecDeque<PreparedStatement>>,
}

/// How many statements a session keeps prepared by SQL text.
const STATEMENTS_KEPT: usize = 64;

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

    /// `sql` prepared in this session: the statement prepared for the same text before, while the database has not
    /// changed since (see [`PreparedStatement::is_current`]), or else a fresh one, kept for next time.
    pub async fn statement(&self, sql: &str) -> Result<PreparedStatement> {
        {
            let mut kept = self.statements.lock().expect("session statements");
            if let Some(at) = kept.iter().position(|s| s.sql() == sql) {
                let statement = kept.remove(at).expect("position is in range");
                if statement.is_current(&self.engine) {
                    kept.push_back(statement.clone());
                    return Ok(statement);
                }
            }
        }
        let statement = self.engine.prepare_statement(sql).await?;
        let mut kept = self.statements.lock().expect("session statements");
        kept.retain(|s| s.sql() != sql);
        kept.push_back(statement.clone());
        while kept.len() > STATEMENTS_KEPT {
            kept.pop_front();
        }
        Ok(statement)
    }

    /// Dropped by expiry or eviction: its prepared statements and tickets are gone with it.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    pub(crate) fn touch(&self) {
        *self.last_used.lock().expect("session clock") = Instant::now();
    }

    fn last_used(&self) -> Instant {
        *self.last_used.lock().expect("session clock")
    }

    fn close(&self, why: &str) {
        self.closed.store(true, Ordering::Relaxed);
        tracing::debug!(session = self.id, "session {why}");
    }
}

/// Budgets and lifetimes of sessions (see the module doc).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// An established session unused for this long is dropped.
    pub idle: Duration,
    /// A pending session (its client never came back with its token or cookie) unused for this long is dropped.
    pub pending_idle: Duration,
    /// At most this many established sessions.
    pub max_sessions: usize,
    /// At most this many pending sessions; a new one pushes out the least recently used pending one.
    pub max_pending: usize,
    /// With [`Self::max_sessions`] established, a newcomer replaces the least recently used one only if that one has
    /// been unused this long; otherwise it is refused with `RESOURCE_EXHAUSTED`.
    pub evict_after: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(12 * 3600),
            pending_idle: Duration::from_secs(10 * 60),
            max_sessions: 4096,
            max_pending: 1024,
            evict_after: Duration::from_secs(10 * 60),
        }
    }
}

type Pool = HashMap<String, Arc<ClientSession>>;

struct Pools {
    established: Pool,
    pending: Pool,
    last_sweep: Instant,
    /// The session (its secret) of each open transport connection whose calls carry no token or cookie.
    connections: HashMap<u64, String>,
}

/// All live sessions, by secret.
pub struct SessionStore {
    db: Database,
    limits: Limits,
    pools: Mutex<Pools>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStore")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// The least recently used session of a pool, and when it was last used.
fn least_recently_used(pool: &Pool) -> Option<(Instant, String)> {
    pool.iter()
        .map(|(k, s)| (s.last_used(), k))
        .min()
        .map(|(t, k)| (t, k.clone()))
}

fn format_duration(d: Duration) -> String {
    match d.as_secs() {
        s if s >= 3600 && s % 3600 == 0 => format!("{} h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

impl SessionStore {
    pub fn new(db: Database, limits: Limits) -> Self {
        Self {
            db,
            limits,
            pools: Mutex::new(Pools {
                established: HashMap::new(),
                pending: HashMap::new(),
                last_sweep: Instant::now(),
                connections: HashMap::new(),
            }),
            next_id: AtomicU64::new(1),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Sessions in both pools.
    pub fn len(&self) -> usize {
        let pools = self.pools.lock().expect("sessions");
        pools.established.len() + pools.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Established sessions (their clients came back with their token or cookie).
    pub fn established(&self) -> usize {
        self.pools.lock().expect("sessions").established.len()
    }

    /// Open a new pending session with its own engine session. It never fails: when the pending pool is full, the
    /// least recently used pending session is dropped.
    pub fn create(&self, kind: SessionKind) -> Arc<ClientSession> {
        let session = Arc::new(ClientSession {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            secret: new_secret(),
            kind,
            engine: self.db.session(),
            last_used: Mutex::new(Instant::now()),
            closed: AtomicBool::new(false),
            statements: Mutex::new(VecDeque::new()),
        });
        let now = Instant::now();
        let mut pools = self.pools.lock().expect("sessions");
        if now.duration_since(pools.last_sweep) >= SWEEP_EVERY
            || pools.pending.len() >= self.limits.max_pending
        {
            self.sweep_locked(&mut pools, now);
        }
        while pools.pending.len() >= self.limits.max_pending.max(1) {
            let Some((_, key)) = least_recently_used(&pools.pending) else {
                break;
            };
            if let Some(s) = pools.pending.remove(&key) {
                s.close("dropped (too many pending sessions)");
            }
        }
        pools
            .pending
            .insert(session.secret.clone(), session.clone());
        tracing::debug!(session = session.id, kind = ?kind, "session opened");
        session
    }

    /// Drop expired sessions of both pools.
    fn sweep_locked(&self, pools: &mut Pools, now: Instant) {
        pools.last_sweep = now;
        let expire = |pool: &mut Pool, ttl: Duration| {
            pool.retain(|_, s| {
                let keep = now.duration_since(s.last_used()) <= ttl;
                if !keep {
                    s.close("expired");
                }
                keep
            })
        };
        expire(&mut pools.established, self.limits.idle);
        expire(&mut pools.pending, self.limits.pending_idle);
    }

    /// Make room for one more established session: drop expired ones, then the least recently used one if it has
    /// been unused for [`Limits::evict_after`]; RESOURCE_EXHAUSTED when every one is in use.
    fn room_locked(&self, pools: &mut Pools, now: Instant) -> Result<()> {
        if pools.established.len() < self.limits.max_sessions {
            return Ok(());
        }
        self.sweep_locked(pools, now);
        while pools.established.len() >= self.limits.max_sessions {
            match least_recently_used(&pools.established) {
                Some((used, key)) if now.duration_since(used) >= self.limits.evict_after => {
                    if let Some(s) = pools.established.remove(&key) {
                        s.close("evicted (too many sessions)");
                    }
                }
                Some((used, _)) => {
                    let wait = self.limits.evict_after - now.duration_since(used);
                    tracing::warn!(
                        max_sessions = self.limits.max_sessions,
                        "refusing a new session: all sessions are in use"
                    );
                    return Err(Error::resource_exhausted(format!(
                        "too many sessions: the server keeps at most {} and all of them were used in the last {}; \
                         try again in {} s, or reuse an existing session",
                        self.limits.max_sessions,
                        format_duration(self.limits.evict_after),
                        wait.as_secs().max(1)
                    )));
                }
                None => break,
            }
        }
        Ok(())
    }

    /// Whether a new session could be established now (checked before a login, so that a full server refuses the
    /// login itself rather than the first call after it).
    pub fn check_room(&self) -> Result<()> {
        let mut pools = self.pools.lock().expect("sessions");
        self.room_locked(&mut pools, Instant::now())
    }

    /// The live session a client presents (token or cookie value); marks it used, and establishes a pending one.
    /// `Ok(None)` for an unknown, expired or other-kind secret; RESOURCE_EXHAUSTED when a pending session cannot be
    /// established because every established one is in use (it stays pending, and may try again).
    pub fn lookup(&self, secret: &str, kind: SessionKind) -> Result<Option<Arc<ClientSession>>> {
        let now = Instant::now();
        let mut pools = self.pools.lock().expect("sessions");
        let live = |pool: &mut Pool, ttl: Duration| -> Option<Arc<ClientSession>> {
            let session = pool.get(secret)?.clone();
            if session.kind != kind {
                return None;
            }
            if now.duration_since(session.last_used()) > ttl {
                pool.remove(secret);
                session.close("expired");
                return None;
            }
            Some(session)
        };
        if let Some(session) = live(&mut pools.established, self.limits.idle) {
            session.touch();
            return Ok(Some(session));
        }
        let Some(session) = live(&mut pools.pending, self.limits.pending_idle) else {
            return Ok(None);
        };
        self.room_locked(&mut pools, now)?;
        pools.pending.remove(secret);
        pools
            .established
            .insert(session.secret.clone(), session.clone());
        session.touch();
        tracing::debug!(session = session.id, "session established");
        Ok(Some(session))
    }

    /// The session bound to a transport connection, if it is still live (see [`Self::lookup`]).
    pub fn for_connection(&self, connection: u64) -> Result<Option<Arc<ClientSession>>> {
        let secret = {
            let pools = self.pools.lock().expect("sessions");
            match pools.connections.get(&connection) {
                Some(secret) => secret.clone(),
                None => return Ok(None),
            }
        };
        let found = match self.lookup(&secret, SessionKind::Cookie) {
            Ok(found) => found,
            // A full server: the connection goes on in its session, left pending (evictable) until there is room.
            Err(
                e @ Error::Request {
                    code: tonic::Code::ResourceExhausted,
                    ..
                },
            ) => {
                let pools = self.pools.lock().expect("sessions");
                match pools.pending.get(&secret) {
                    Some(s) => {
                        s.touch();
                        Some(s.clone())
                    }
                    None => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        if found.is_none() {
            self.pools
                .lock()
                .expect("sessions")
                .connections
                .remove(&connection);
        }
        Ok(found)
    }

    /// Bind a session to a transport connection: later calls on it without token or cookie run in that session.
    pub fn bind_connection(&self, connection: u64, session: &ClientSession) {
        self.pools
            .lock()
            .expect("sessions")
            .connections
            .insert(connection, session.secret.clone());
    }

    /// A connection ended: forget its binding. Its session is not closed (a client may have kept its cookie and come
    /// back on another connection); unused, it expires like any other.
    pub fn connection_closed(&self, connection: u64) {
        if let Ok(mut pools) = self.pools.lock() {
            pools.connections.remove(&connection);
        }
    }

    /// Drop a session now.
    pub fn close(&self, session: &ClientSession) {
        let mut pools = self.pools.lock().expect("sessions");
        pools.established.remove(&session.secret);
        pools.pending.remove(&session.secret);
        session.close("closed");
    }
}

/// What the session layer learned about a call, handed to the service through the request's extensions.
#[derive(Clone)]
pub struct CallContext {
    pub(super) caller: Option<Arc<ClientSession>>,
    pub(super) store: Arc<SessionStore>,
    /// A session created for this call (auth off, no cookie): its cookie goes into the response headers.
    pub(super) created: Arc<Mutex<Option<Arc<ClientSession>>>>,
    /// The transport connection of the call: a session created for it is bound to it.
    pub(super) connection: Option<u64>,
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
            .get_or_insert_with(|| {
                let session = self.store.create(SessionKind::Cookie);
                if let Some(connection) = self.connection {
                    self.store.bind_connection(connection, &session);
                }
                session
            })
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

#[cfg(test)]
mod tests {
    use super::*;

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

    async fn store(limits: Limits) -> (TempDir, SessionStore) {
        let dir = TempDir(std::env::temp_dir().join(format!("marrow-auth-test-{}", new_secret())));
        let db = Database::open(marrow_engine::Config::new(&dir.0))
            .await
            .unwrap();
        (dir, SessionStore::new(db, limits))
    }

    /// Short lifetimes, so that tests backdate by minutes only (an `Instant` cannot go back beyond boot).
    fn limits(max_sessions: usize, max_pending: usize) -> Limits {
        Limits {
            idle: Duration::from_secs(180),
            pending_idle: Duration::from_secs(60),
            max_sessions,
            max_pending,
            evict_after: Duration::from_secs(60),
        }
    }

    /// Pretend `s` was last used `ago`.
    fn backdate(s: &ClientSession, ago: Duration) {
        *s.last_used.lock().unwrap() = Instant::now().checked_sub(ago).expect("uptime");
    }

    fn lookup(store: &SessionStore, s: &ClientSession) -> Option<u64> {
        store.lookup(s.secret(), s.kind()).unwrap().map(|s| s.id())
    }

    #[tokio::test]
    async fn new_sessions_push_out_only_pending_ones() {
        let (_dir, store) = store(limits(2, 2)).await;
        let a = store.create(SessionKind::Token);
        let b = store.create(SessionKind::Cookie);
        // A token is not a cookie and the other way round.
        assert!(store
            .lookup(a.secret(), SessionKind::Cookie)
            .unwrap()
            .is_none());
        assert!(store
            .lookup(b.secret(), SessionKind::Token)
            .unwrap()
            .is_none());
        // `a` is presented again: established.
        assert_eq!(lookup(&store, &a), Some(a.id()));
        assert_eq!(store.established(), 1);
        // A flood of new sessions pushes out pending ones (least recently used first), never `a`, however long
        // `a` has been idle.
        backdate(&a, Duration::from_secs(150));
        let flood: Vec<_> = (0..50).map(|_| store.create(SessionKind::Token)).collect();
        assert!(b.is_closed() && !a.is_closed());
        assert_eq!(store.len(), 3);
        assert!(flood[..48].iter().all(|s| s.is_closed()));
        assert_eq!(lookup(&store, &a), Some(a.id()));
        assert_eq!(lookup(&store, &flood[49]), Some(flood[49].id()));
        assert_eq!(lookup(&store, &b), None);
        store.close(&a);
        assert!(a.is_closed());
        assert_eq!(lookup(&store, &a), None);
        // flood[49] established, flood[48] pending.
        assert_eq!((store.len(), store.established()), (2, 1));
    }

    #[tokio::test]
    async fn a_full_server_refuses_rather_than_dropping_sessions_in_use() {
        let (_dir, store) = store(limits(2, 4)).await;
        let (a, b, c) = (
            store.create(SessionKind::Token),
            store.create(SessionKind::Cookie),
            store.create(SessionKind::Token),
        );
        assert!(lookup(&store, &a).is_some() && lookup(&store, &b).is_some());
        assert!(store.check_room().is_err());
        // Both established sessions were used just now: `c` is refused and stays pending.
        for _ in 0..2 {
            let status = tonic::Status::from(store.lookup(c.secret(), c.kind()).unwrap_err());
            assert_eq!(status.code(), tonic::Code::ResourceExhausted);
            assert!(
                status.message().contains("at most 2") && status.message().contains("1 min"),
                "{}",
                status.message()
            );
        }
        assert!(!a.is_closed() && !b.is_closed() && !c.is_closed());
        assert_eq!(store.established(), 2);
        // Once one has been unused for evict_after, the least recently used one makes room.
        backdate(&a, Duration::from_secs(61));
        backdate(&b, Duration::from_secs(90));
        assert!(store.check_room().is_ok());
        assert_eq!(lookup(&store, &c), Some(c.id()));
        assert!(b.is_closed() && !a.is_closed());
        assert_eq!(lookup(&store, &a), Some(a.id()));
    }

    #[tokio::test]
    async fn idle_sessions_expire() {
        let (_dir, store) = store(limits(10, 10)).await;
        let established = store.create(SessionKind::Token);
        lookup(&store, &established).unwrap();
        let pending = store.create(SessionKind::Cookie);
        backdate(&established, Duration::from_secs(61));
        backdate(&pending, Duration::from_secs(61));
        // Pending sessions expire after pending_idle, established ones after idle.
        assert_eq!(lookup(&store, &pending), None);
        assert!(pending.is_closed());
        assert_eq!(lookup(&store, &established), Some(established.id()));
        backdate(&established, Duration::from_secs(181));
        assert_eq!(lookup(&store, &established), None);
        assert!(established.is_closed());
    }

    #[tokio::test]
    async fn resources_are_used_in_their_owner_session_only() {
        let (_dir, store) = store(Limits::default()).await;
        let store = Arc::new(store);
        let owner = store.create(SessionKind::Token);
        let other = store.create(SessionKind::Token);
        let ctx = |caller: Option<Arc<ClientSession>>| CallContext {
            caller,
            store: store.clone(),
            created: Arc::new(Mutex::new(None)),
            connection: None,
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

    #[tokio::test]
    async fn a_connection_keeps_its_session_until_it_closes() {
        let (_dir, store) = store(limits(8, 8)).await;
        let store = Arc::new(store);
        let call = |connection: u64| {
            let caller = store.for_connection(connection).unwrap();
            CallContext {
                caller,
                store: store.clone(),
                created: Arc::new(Mutex::new(None)),
                connection: Some(connection),
            }
        };
        let first = call(1).session();
        assert_eq!(
            call(1).session().id(),
            first.id(),
            "same connection, same session"
        );
        let other = call(2).session();
        assert_ne!(
            other.id(),
            first.id(),
            "another connection is another session"
        );
        store.connection_closed(1);
        assert!(store.for_connection(1).unwrap().is_none());
        // Closing the connection unbinds the session but does not end it: a cookie still reaches it.
        assert_eq!(
            store
                .lookup(first.secret(), SessionKind::Cookie)
                .unwrap()
                .map(|s| s.id()),
            Some(first.id())
        );
        assert_eq!(call(2).session().id(), other.id());
    }
}
