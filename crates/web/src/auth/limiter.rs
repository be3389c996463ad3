//! Failed logins per user name: after `max_failures` failures in a row, that
//! name is locked for `lockout`. Bounded in memory: at most `MAX_NAMES`
//! names are tracked; when full, stale entries go first, then the oldest.
//!
//! Unknown names are tracked like real ones, so a lockout does not reveal
//! whether a user exists. Pure: the caller passes the time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

const MAX_NAMES: usize = 10_000;

struct Failures {
    count: u32,
    last: Instant,
}

pub struct Limiter {
    max_failures: u32,
    lockout: Duration,
    names: HashMap<String, Failures>,
}

impl Limiter {
    pub fn new(max_failures: u32, lockout: Duration) -> Self {
        Limiter { max_failures: max_failures.max(1), lockout, names: HashMap::new() }
    }

    /// How long `name` is still locked, if it is.
    pub fn locked_for(&self, name: &str, now: Instant) -> Option<Duration> {
        let f = self.names.get(name)?;
        let until = f.last + self.lockout;
        (f.count >= self.max_failures && now < until).then(|| until - now)
    }

    pub fn failed(&mut self, name: &str, now: Instant) {
        if !self.names.contains_key(name) && self.names.len() >= MAX_NAMES {
            self.make_room(now);
        }
        let f = self.names.entry(name.to_string()).or_insert(Failures { count: 0, last: now });
        // Failures older than a lockout no longer count: a locked name starts afresh once it ends.
        if now.saturating_duration_since(f.last) >= self.lockout {
            f.count = 0;
        }
        f.count += 1;
        f.last = now;
    }

    pub fn succeeded(&mut self, name: &str) {
        self.names.remove(name);
    }

    fn make_room(&mut self, now: Instant) {
        let lockout = self.lockout;
        self.names.retain(|_, f| now.saturating_duration_since(f.last) < lockout);
        if self.names.len() >= MAX_NAMES {
            let oldest = self.names.iter().min_by_key(|(_, f)| f.last).map(|(n, _)| n.clone());
            if let Some(n) = oldest {
                self.names.remove(&n);
            }
        }
    }

    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.names.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_max_failures_and_unlocks_after_lockout() {
        let t0 = Instant::now();
        let mut l = Limiter::new(3, Duration::from_secs(30));
        for i in 0..2 {
            l.failed("bob", t0 + Duration::from_secs(i));
            assert_eq!(l.locked_for("bob", t0 + Duration::from_secs(i)), None);
        }
        l.failed("bob", t0 + Duration::from_secs(2));
        assert_eq!(l.locked_for("bob", t0 + Duration::from_secs(12)), Some(Duration::from_secs(20)));
        assert_eq!(l.locked_for("alice", t0 + Duration::from_secs(12)), None);
        assert_eq!(l.locked_for("bob", t0 + Duration::from_secs(32)), None);
        // After the lockout the count starts again.
        l.failed("bob", t0 + Duration::from_secs(33));
        assert_eq!(l.locked_for("bob", t0 + Duration::from_secs(33)), None);
    }

    #[test]
    fn success_clears() {
        let t0 = Instant::now();
        let mut l = Limiter::new(2, Duration::from_secs(30));
        l.failed("bob", t0);
        l.succeeded("bob");
        l.failed("bob", t0);
        assert_eq!(l.locked_for("bob", t0), None);
    }

    #[test]
    fn bounded() {
        let t0 = Instant::now();
        let mut l = Limiter::new(5, Duration::from_secs(30));
        for i in 0..MAX_NAMES + 10 {
            l.failed(&format!("u{i}"), t0);
        }
        assert_eq!(l.tracked(), MAX_NAMES);
        // Stale entries are dropped first when room is needed.
        l.failed("late", t0 + Duration::from_secs(60));
        assert_eq!(l.tracked(), 1);
    }
}
