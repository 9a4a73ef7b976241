//! Back-off after failed logins, per client address and per user name.
//!
//! Each key (a client address; the configured user's name) counts its failed logins. The first
//! [`LoginLimits::free_failures_per_peer`] (per user: [`LoginLimits::free_failures_per_user`]) cost nothing; each one
//! after that makes the key wait before its next attempt, [`LoginLimits::first_delay`] doubling up to
//! [`LoginLimits::max_delay`]. An attempt during a wait is refused with `RESOURCE_EXHAUSTED` without looking at the
//! password (checking it would let an attacker go on guessing at full speed), and does not count as a failure. The
//! count is forgotten after [`LoginLimits::forget_after`] without a failure, and a successful login clears its
//! address's count and the user's.
//!
//! What keeps an attacker from locking the legitimate user out: every wait is bounded by `max_delay`, and the
//! per-user wait (the one an attacker on other addresses can cause) does not apply to an address the user logged
//! in from within [`LoginLimits::trust_for`]. An attacker who shares the user's address (the same host, or one NAT)
//! can make that address wait, `max_delay` at a time.
//!
//! IPv6 clients are counted by /64 network (one host usually has a whole /64 to pick addresses from), IPv4-mapped
//! IPv6 addresses as the IPv4 address. The table is bounded ([`MAX_TRACKED`] addresses): when it is full, the
//! record whose last failure is oldest is forgotten first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// The most client addresses whose failures are remembered at once.
pub const MAX_TRACKED: usize = 65_536;
/// The most (user, address) pairs remembered as trusted at once.
const MAX_TRUSTED: usize = 4096;

/// How failed logins are slowed down (see the module doc).
#[derive(Debug, Clone, Copy)]
pub struct LoginLimits {
    /// Failed logins from one client address before it has to wait.
    pub free_failures_per_peer: u32,
    /// Failed logins for the user name (from any address) before it has to wait.
    pub free_failures_per_user: u32,
    /// The first wait; each further failure doubles it.
    pub first_delay: Duration,
    /// The longest wait.
    pub max_delay: Duration,
    /// Failures are forgotten after this long without one.
    pub forget_after: Duration,
    /// After a successful login, the address is exempt from the user's wait (not from its own) this long.
    pub trust_for: Duration,
}

impl Default for LoginLimits {
    fn default() -> Self {
        Self {
            free_failures_per_peer: 5,
            free_failures_per_user: 10,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            forget_after: Duration::from_secs(15 * 60),
            trust_for: Duration::from_secs(24 * 3600),
        }
    }
}

/// A client address as counted: IPv4, or an IPv6 /64 network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    V4([u8; 4]),
    V6Net([u8; 8]),
}

impl From<IpAddr> for Peer {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Peer::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Peer::V4(v4.octets()),
                None => {
                    let o = v6.octets();
                    Peer::V6Net(o[..8].try_into().expect("8 of 16 bytes"))
                }
            },
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::V4(o) => write!(f, "{}", std::net::Ipv4Addr::from(*o)),
            Peer::V6Net(o) => {
                let mut full = [0u8; 16];
                full[..8].copy_from_slice(o);
                write!(f, "{}/64", std::net::Ipv6Addr::from(full))
            }
        }
    }
}

/// One key's failures.
#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    last_failure: Instant,
    /// No attempt before this.
    wait_until: Instant,
}

#[derive(Default)]
struct State {
    peers: HashMap<Peer, Record>,
    user: HashMap<String, Record>,
    /// When a user last logged in from an address.
    trusted: HashMap<(String, Peer), Instant>,
}

/// Failed-login counts and waits (see the module doc).
#[derive(Debug)]
pub struct LoginThrottle {
    limits: LoginLimits,
    state: Mutex<State>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

/// Whole seconds, rounded up ("try again in 0 s" would be wrong).
pub(crate) fn seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl LoginThrottle {
    pub fn new(limits: LoginLimits) -> Self {
        Self {
            limits,
            state: Mutex::new(State::default()),
        }
    }

    /// Refuse an attempt (`RESOURCE_EXHAUSTED`, saying how long to wait) while its address or the user must wait.
    /// `user` is the configured user's name when the attempt names it, else `None` (only the one user is counted).
    pub fn check(&self, peer: Option<IpAddr>, user: Option<&str>) -> Result<()> {
        self.check_at(peer.map(Peer::from), user, Instant::now())
    }

    /// Count a failed login; the wait it starts, if any.
    pub fn failed(&self, peer: Option<IpAddr>, user: Option<&str>) -> Option<Duration> {
        self.failed_at(peer.map(Peer::from), user, Instant::now())
    }

    /// A successful login: clear the counts of its address and user, and trust the address for the user.
    pub fn succeeded(&self, peer: Option<IpAddr>, user: &str) {
        self.succeeded_at(peer.map(Peer::from), user, Instant::now())
    }

    fn check_at(&self, peer: Option<Peer>, user: Option<&str>, now: Instant) -> Result<()> {
        let state = self.state.lock().expect("login throttle");
        if let Some(peer) = peer {
            if let Some(r) = state.peers.get(&peer).filter(|r| r.wait_until > now) {
                return Err(Error::resource_exhausted(format!(
                    "too many failed logins from {peer}: try again in {} s",
                    seconds(r.wait_until - now)
                )));
            }
        }
        if let Some(user) = user {
            let trusted = peer
                .and_then(|p| state.trusted.get(&(user.to_string(), p)))
                .is_some_and(|since| now.duration_since(*since) < self.limits.trust_for);
            if let Some(r) = state.user.get(user).filter(|r| r.wait_until > now) {
                if !trusted {
                    return Err(Error::resource_exhausted(format!(
                        "too many failed logins for user '{user}': try again in {} s",
                        seconds(r.wait_until - now)
                    )));
                }
            }
        }
        Ok(())
    }

    /// One more failure on `record`: the wait it starts, if any.
    fn count(&self, record: &mut Record, free: u32, now: Instant) -> Option<Duration> {
        if now.duration_since(record.last_failure) > self.limits.forget_after {
            record.failures = 0;
        }
        record.failures = record.failures.saturating_add(1);
        record.last_failure = now;
        let over = record.failures.checked_sub(free)?;
        // first_delay × 2^over, capped: 2^over overflows nothing with the shift bounded.
        let delay = self
            .limits
            .first_delay
            .saturating_mul(1u32 << over.min(20))
            .min(self.limits.max_delay);
        record.wait_until = now + delay;
        Some(delay)
    }

    fn failed_at(&self, peer: Option<Peer>, user: Option<&str>, now: Instant) -> Option<Duration> {
        let mut state = self.state.lock().expect("login throttle");
        let fresh = Record {
            failures: 0,
            last_failure: now,
            wait_until: now,
        };
        let mut wait = None;
        if let Some(peer) = peer {
            if !state.peers.contains_key(&peer) && state.peers.len() >= MAX_TRACKED {
                self.make_room(&mut state.peers, now);
            }
            let record = state.peers.entry(peer).or_insert(fresh);
            wait = self.count(record, self.limits.free_failures_per_peer, now);
            if let Some(d) = wait {
                tracing::warn!(peer = %peer, "failed logins: this address waits {} s", seconds(d));
            }
        }
        if let Some(user) = user {
            let record = state.user.entry(user.to_string()).or_insert(fresh);
            if let Some(d) = self.count(record, self.limits.free_failures_per_user, now) {
                tracing::warn!(user, "failed logins: this user waits {} s", seconds(d));
                wait = Some(wait.map_or(d, |w| w.max(d)));
            }
        }
        wait
    }

    /// Forget records that no longer count, or else the one whose last failure is oldest.
    fn make_room(&self, peers: &mut HashMap<Peer, Record>, now: Instant) {
        let forget = self.limits.forget_after;
        peers.retain(|_, r| r.wait_until > now || now.duration_since(r.last_failure) <= forget);
        if peers.len() >= MAX_TRACKED {
            if let Some(oldest) = peers
                .iter()
                .min_by_key(|(_, r)| r.last_failure)
                .map(|(k, _)| *k)
            {
                peers.remove(&oldest);
            }
        }
    }

    fn succeeded_at(&self, peer: Option<Peer>, user: &str, now: Instant) {
        let mut state = self.state.lock().expect("login throttle");
        state.user.remove(user);
        if let Some(peer) = peer {
            state.peers.remove(&peer);
            let trust_for = self.limits.trust_for;
            if state.trusted.len() >= MAX_TRUSTED {
                state
                    .trusted
                    .retain(|_, since| now.duration_since(*since) < trust_for);
            }
            if state.trusted.len() >= MAX_TRUSTED {
                if let Some(oldest) = state
                    .trusted
                    .iter()
                    .min_by_key(|(_, since)| **since)
                    .map(|(k, _)| k.clone())
                {
                    state.trusted.remove(&oldest);
                }
            }
            state.trusted.insert((user.to_string(), peer), now);
        }
    }

    #[cfg(test)]
    fn tracked_peers(&self) -> usize {
        self.state.lock().expect("login throttle").peers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> LoginLimits {
        LoginLimits {
            free_failures_per_peer: 3,
            free_failures_per_user: 5,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            forget_after: Duration::from_secs(900),
            trust_for: Duration::from_secs(3600),
        }
    }

    fn peer(s: &str) -> Option<Peer> {
        Some(Peer::from(s.parse::<IpAddr>().unwrap()))
    }

    fn refused(r: Result<()>) -> String {
        let status = tonic::Status::from(r.unwrap_err());
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        status.message().to_string()
    }

    #[test]
    fn an_address_waits_longer_after_each_failure_up_to_the_limit() {
        let t = LoginThrottle::new(limits());
        let p = peer("10.0.0.1");
        let mut now = Instant::now();
        for _ in 0..2 {
            assert_eq!(t.failed_at(p, None, now), None);
            assert!(t.check_at(p, None, now).is_ok());
        }
        // The third failure starts a wait of 1 s, refused without looking at the password.
        assert_eq!(t.failed_at(p, None, now), Some(Duration::from_secs(1)));
        let message = refused(t.check_at(p, None, now));
        assert!(
            message.contains("from 10.0.0.1: try again in 1 s"),
            "{message}"
        );
        // Other addresses are not affected.
        assert!(t.check_at(peer("10.0.0.2"), None, now).is_ok());
        // The wait ends; each further failure doubles it, up to max_delay.
        let mut waits = vec![];
        for _ in 0..10 {
            now += Duration::from_secs(61);
            assert!(t.check_at(p, None, now).is_ok());
            waits.push(t.failed_at(p, None, now).unwrap().as_secs());
            assert!(t.check_at(p, None, now).is_err());
        }
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60, 60, 60, 60]);
        // Many failures later the wait is still bounded.
        for _ in 0..100 {
            now += Duration::from_secs(61);
            t.failed_at(p, None, now);
        }
        assert!(t.check_at(p, None, now + Duration::from_secs(60)).is_ok());
        // Failures are forgotten after a quiet spell.
        now += Duration::from_secs(901);
        assert_eq!(t.failed_at(p, None, now), None);
    }

    #[test]
    fn a_success_clears_the_count() {
        let t = LoginThrottle::new(limits());
        let p = peer("10.0.0.1");
        let now = Instant::now();
        t.failed_at(p, Some("ada"), now);
        t.failed_at(p, Some("ada"), now);
        t.succeeded_at(p, "ada", now);
        t.failed_at(p, Some("ada"), now);
        t.failed_at(p, Some("ada"), now);
        assert!(t.check_at(p, Some("ada"), now).is_ok());
    }

    #[test]
    fn the_user_waits_but_not_at_an_address_it_logged_in_from() {
        let t = LoginThrottle::new(limits());
        let now = Instant::now();
        let home = peer("192.168.1.5");
        t.succeeded_at(home, "ada", now);
        // An attacker tries from many addresses, two guesses each (under the per-address limit).
        for i in 0..3 {
            let attacker = peer(&format!("10.0.0.{i}"));
            t.failed_at(attacker, Some("ada"), now);
            t.failed_at(attacker, Some("ada"), now);
        }
        // The user's count (6 > 5) makes every new address wait...
        let message = refused(t.check_at(peer("10.9.9.9"), Some("ada"), now));
        assert!(message.contains("for user 'ada'"), "{message}");
        // ...but not the address ada logged in from, and not for other user names.
        assert!(t.check_at(home, Some("ada"), now).is_ok());
        assert!(t.check_at(peer("10.9.9.9"), None, now).is_ok());
        // The user's wait is bounded too.
        assert!(t
            .check_at(peer("10.9.9.9"), Some("ada"), now + Duration::from_secs(60))
            .is_ok());
        // Trust ends.
        let later = now + Duration::from_secs(3600);
        for i in 0..6 {
            t.failed_at(peer(&format!("10.0.1.{i}")), Some("ada"), later);
        }
        assert!(t.check_at(home, Some("ada"), later).is_err());
    }

    #[test]
    fn ipv6_counts_by_network_and_mapped_ipv4_as_ipv4() {
        assert_eq!(peer("2001:db8::1"), peer("2001:db8::ffff:2"));
        assert_ne!(peer("2001:db8::1"), peer("2001:db8:0:1::1"));
        assert_eq!(peer("::ffff:10.0.0.1"), peer("10.0.0.1"));
        assert_eq!(peer("2001:db8::1").unwrap().to_string(), "2001:db8::/64");
    }

    #[test]
    fn the_table_is_bounded() {
        let t = LoginThrottle::new(limits());
        let now = Instant::now();
        let first = peer("10.0.0.1");
        for _ in 0..3 {
            t.failed_at(first, None, now);
        }
        for i in 0..(MAX_TRACKED as u32 + 10) {
            let p = Some(Peer::V4((i + (1 << 24)).to_be_bytes()));
            t.failed_at(p, None, now + Duration::from_secs(1));
        }
        assert!(t.tracked_peers() <= MAX_TRACKED);
        // The oldest record went first.
        assert!(t
            .check_at(first, None, now + Duration::from_millis(1))
            .is_ok());
    }
}
