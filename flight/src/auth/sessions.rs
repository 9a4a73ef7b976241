//! Client sessions: each owns one engine session, and the store keeps them by secret (token or cookie value),
//! expiring idle ones and evicting the least recently used.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use marrow_engine::Database;

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
    pub(super) caller: Option<Arc<ClientSession>>,
    pub(super) store: Arc<SessionStore>,
    /// A session created for this call (auth off, no cookie): its cookie goes into the response headers.
    pub(super) created: Arc<Mutex<Option<Arc<ClientSession>>>>,
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
