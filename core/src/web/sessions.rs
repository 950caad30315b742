//! Sign-in state, without I/O or clocks of its own (every call takes `now`), so the
//! rules are unit-tested: sessions that end when idle or when their user changes, the
//! lock-out after failed sign-ins, and TOTP codes that work once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsipd_plugin_api::api::Role;

use super::users::{User, Users};

/// Failed sign-ins in a row that lock a user out (per client address).
pub const FAILURES_TO_LOCK: u32 = 5;
/// Sessions kept at most; past it the least recently used goes. A bound on memory,
/// not a limit anyone should meet.
const MAX_SESSIONS: usize = 10_000;

/// A signed-in person, as a request is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedIn {
    pub user: Arc<str>,
    pub role: Role,
}

struct Session {
    /// The account as it was at sign-in; any change to it (password, role, TOTP, a
    /// deletion) ends the session at its next use.
    account: Arc<User>,
    last_used: Instant,
}

#[derive(Default)]
struct Failures {
    count: u32,
    last: Option<Instant>,
    locked_until: Option<Instant>,
}

/// What a sign-in attempt may do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Gate {
    Open,
    /// Locked out for this much longer.
    Locked(Duration),
}

#[derive(Default)]
pub struct Sessions {
    by_id: HashMap<String, Session>,
    failures: HashMap<(String, IpAddr), Failures>,
    /// The last TOTP step each user signed in with: a code works once.
    totp_steps: HashMap<String, u64>,
}

impl Sessions {
    /// A new session for `account`; returns its id (32 random bytes, base64url).
    pub fn create(&mut self, account: Arc<User>, now: Instant) -> Result<String, String> {
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|e| format!("no randomness for a session id: {e}"))?;
        let id = data_encoding::BASE64URL_NOPAD.encode(&raw);
        if self.by_id.len() >= MAX_SESSIONS {
            if let Some(oldest) = self
                .by_id
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(id, _)| id.clone())
            {
                self.by_id.remove(&oldest);
            }
        }
        self.by_id.insert(
            id.clone(),
            Session {
                account,
                last_used: now,
            },
        );
        Ok(id)
    }

    /// Who holds session `id`, if it is still good: not idle past `idle`, and its user
    /// unchanged in `users`. A good session's idle clock restarts; a bad one is removed.
    pub fn check(
        &mut self,
        id: &str,
        users: &Users,
        idle: Duration,
        now: Instant,
    ) -> Option<SignedIn> {
        let session = self.by_id.get_mut(id)?;
        let current = users.get(&session.account.name);
        let fresh = now.saturating_duration_since(session.last_used) <= idle;
        if !fresh || current != Some(&session.account) {
            self.by_id.remove(id);
            return None;
        }
        session.last_used = now;
        Some(SignedIn {
            user: Arc::from(session.account.name.as_str()),
            role: session.account.role,
        })
    }

    /// Ends session `id`; returns its user.
    pub fn remove(&mut self, id: &str) -> Option<String> {
        self.by_id.remove(id).map(|s| s.account.name.clone())
    }

    /// Removes sessions idle past `idle`.
    pub fn sweep(&mut self, idle: Duration, now: Instant) {
        self.by_id
            .retain(|_, s| now.saturating_duration_since(s.last_used) <= idle);
    }

    pub fn count(&self) -> usize {
        self.by_id.len()
    }

    /// Whether `user` may try to sign in from `from` now.
    pub fn gate(&mut self, user: &str, from: IpAddr, now: Instant) -> Gate {
        let key = (user.to_string(), from);
        match self.failures.get(&key).and_then(|f| f.locked_until) {
            Some(until) if until > now => Gate::Locked(until - now),
            Some(_) => {
                // The lock ended: a fresh start.
                self.failures.remove(&key);
                Gate::Open
            }
            None => Gate::Open,
        }
    }

    /// A failed attempt; `true` when it locked the user out (for `lockout`).
    ///
    /// Runs of failures older than `lockout`, and ended lock-outs, are forgotten here, so
    /// the table holds only what the last `lockout` of guessing made (made-up names
    /// from many addresses cannot grow it without bound; the hash limits their rate).
    pub fn failed(&mut self, user: &str, from: IpAddr, lockout: Duration, now: Instant) -> bool {
        self.failures.retain(|_, f| {
            f.locked_until.is_some_and(|t| t > now)
                || f.last
                    .is_some_and(|l| now.saturating_duration_since(l) < lockout)
        });
        let f = self.failures.entry((user.to_string(), from)).or_default();
        f.count += 1;
        f.last = Some(now);
        if f.count >= FAILURES_TO_LOCK {
            f.count = 0;
            f.locked_until = Some(now + lockout);
            return true;
        }
        false
    }

    /// A successful sign-in ends the run of failures.
    pub fn succeeded(&mut self, user: &str, from: IpAddr) {
        self.failures.remove(&(user.to_string(), from));
    }

    /// Takes TOTP step `step` for `user`; `false` when it (or a later one) was used.
    pub fn use_totp_step(&mut self, user: &str, step: u64) -> bool {
        match self.totp_steps.get(user) {
            Some(&last) if step <= last => false,
            _ => {
                self.totp_steps.insert(user.to_string(), step);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, role: Role, hash: &str) -> User {
        User {
            name: name.into(),
            role,
            hash: hash.into(),
            totp: None,
        }
    }

    fn users(list: &[User]) -> Users {
        let mut u = Users::default();
        for x in list {
            u.insert(x.clone());
        }
        u
    }

    const IDLE: Duration = Duration::from_secs(60);

    #[test]
    fn a_session_lasts_while_used_and_ends_when_idle() {
        let t0 = Instant::now();
        let all = users(&[user("alice", Role::Operator, "$h1")]);
        let mut s = Sessions::default();
        let id = s.create(all.get("alice").unwrap().clone(), t0).unwrap();
        assert_eq!(id.len(), 43);
        let who = s.check(&id, &all, IDLE, t0 + IDLE).unwrap();
        assert_eq!((&*who.user, who.role), ("alice", Role::Operator));
        // Used at t0+IDLE, so good until t0+2*IDLE.
        assert!(s.check(&id, &all, IDLE, t0 + 2 * IDLE).is_some());
        assert!(s.check(&id, &all, IDLE, t0 + 4 * IDLE).is_none());
        assert!(s.check(&id, &all, IDLE, t0).is_none(), "removed for good");
        assert!(s.check("made-up", &all, IDLE, t0).is_none());
    }

    #[test]
    fn a_changed_password_or_role_or_a_deleted_user_ends_the_session() {
        let t0 = Instant::now();
        let before = users(&[user("alice", Role::Operator, "$h1")]);
        for after in [
            users(&[user("alice", Role::Operator, "$h2")]),
            users(&[user("alice", Role::Viewer, "$h1")]),
            users(&[]),
        ] {
            let mut s = Sessions::default();
            let id = s.create(before.get("alice").unwrap().clone(), t0).unwrap();
            assert!(s.check(&id, &before, IDLE, t0).is_some());
            assert!(s.check(&id, &after, IDLE, t0).is_none());
            assert!(s.check(&id, &before, IDLE, t0).is_none(), "not back");
        }
        // Re-reading an unchanged file keeps sessions.
        let mut s = Sessions::default();
        let id = s.create(before.get("alice").unwrap().clone(), t0).unwrap();
        let reread = users(&[user("alice", Role::Operator, "$h1")]);
        assert!(s.check(&id, &reread, IDLE, t0).is_some());
    }

    #[test]
    fn five_failures_lock_that_user_from_that_address_until_the_lock_ends() {
        let t0 = Instant::now();
        let lockout = Duration::from_secs(300);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let mut s = Sessions::default();
        for i in 1..FAILURES_TO_LOCK {
            assert_eq!(s.gate("alice", a, t0), Gate::Open);
            assert!(!s.failed("alice", a, lockout, t0), "failure {i}");
        }
        assert!(s.failed("alice", a, lockout, t0));
        assert_eq!(
            s.gate("alice", a, t0 + Duration::from_secs(1)),
            Gate::Locked(Duration::from_secs(299))
        );
        assert_eq!(s.gate("alice", b, t0), Gate::Open, "another address");
        assert_eq!(s.gate("bob", a, t0), Gate::Open, "another user");
        assert_eq!(s.gate("alice", a, t0 + lockout), Gate::Open);
        // A success in between resets the run.
        for _ in 1..FAILURES_TO_LOCK {
            s.failed("alice", b, lockout, t0);
        }
        s.succeeded("alice", b);
        assert!(!s.failed("alice", b, lockout, t0));
        // So does time: a run older than the lock-out is forgotten.
        for _ in 2..FAILURES_TO_LOCK {
            s.failed("alice", b, lockout, t0);
        }
        assert!(!s.failed("alice", b, lockout, t0 + lockout));
        assert_eq!(s.failures.len(), 1, "only the fresh run is kept");
    }

    #[test]
    fn a_totp_step_works_once() {
        let mut s = Sessions::default();
        assert!(s.use_totp_step("alice", 100));
        assert!(!s.use_totp_step("alice", 100));
        assert!(!s.use_totp_step("alice", 99));
        assert!(s.use_totp_step("bob", 100));
        assert!(s.use_totp_step("alice", 101));
    }
}
