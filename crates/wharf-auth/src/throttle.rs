//! Failed sign-in throttling: who may try again, and who must wait.
//!
//! The model (documented in `docs/security.md`): nobody can lock an account
//! out from another address. Hard limits are kept per client address and per
//! (account, address) pair, so an attacker exhausts only their own budget; the
//! account as a whole only gets a soft budget, past which every attempt on it
//! is slowed but never refused, so the right password from a clean address
//! always gets in.
//!
//! An attempt is counted *before* its password is hashed (a reservation), and
//! the reservation is released when the credentials turn out to be right:
//! a burst of concurrent guesses therefore meets the limit at once instead of
//! after every guess has already paid for an argon2 verification.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys with recent failures tracked before stale ones are pruned.
const MAX_TRACKED_KEYS: usize = 100_000;

/// What a failure is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    /// Every attempt from one client address.
    Address(Option<IpAddr>),
    /// Attempts on one account from one client address.
    Pair(String, Option<IpAddr>),
    /// Attempts on one account from anywhere (soft budget only).
    Account(String),
}

/// The limits in force.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Failures allowed per (account, address) within `window`.
    pub per_pair: u32,
    /// Failures allowed per address within `window`.
    pub per_address: u32,
    /// Failures on one account within `window` beyond which attempts are slowed.
    pub account_soft: u32,
    /// The sliding window.
    pub window: Duration,
}

/// An attempt that was counted before its verification.
#[derive(Debug)]
pub(crate) struct Reservation {
    keys: Vec<Key>,
    at: Instant,
    /// The account is over its soft budget: slow this attempt down.
    pub slow: bool,
}

/// The throttle state of one server process.
pub(crate) struct Throttle {
    limits: Limits,
    failures: Mutex<HashMap<Key, Vec<Instant>>>,
}

impl Throttle {
    pub(crate) fn new(limits: Limits) -> Throttle {
        Throttle {
            limits,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Vec<Instant>>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn hard_limit(&self, key: &Key) -> Option<u32> {
        match key {
            Key::Address(_) => Some(self.limits.per_address),
            Key::Pair(..) => Some(self.limits.per_pair),
            Key::Account(_) => None,
        }
    }

    /// The keys an attempt by `account` (if named) from `address` counts against.
    pub(crate) fn keys(account: Option<&str>, address: Option<IpAddr>) -> Vec<Key> {
        let mut keys = vec![Key::Address(address)];
        if let Some(account) = account {
            keys.push(Key::Pair(account.to_owned(), address));
            keys.push(Key::Account(account.to_owned()));
        }
        keys
    }

    /// Seconds to wait if any hard limit of `keys` is reached.
    fn over_limit(
        &self,
        state: &mut HashMap<Key, Vec<Instant>>,
        keys: &[Key],
        now: Instant,
    ) -> Option<u64> {
        let window = self.limits.window;
        for key in keys {
            let Some(limit) = self.hard_limit(key) else {
                continue;
            };
            let Some(list) = state.get_mut(key) else {
                continue;
            };
            list.retain(|t| now.duration_since(*t) < window);
            if list.len() as u32 >= limit {
                let oldest = list.first().copied().unwrap_or(now);
                return Some(
                    window
                        .saturating_sub(now.duration_since(oldest))
                        .as_secs()
                        .max(1),
                );
            }
        }
        None
    }

    /// Refuses (with the seconds to wait) when a hard limit is reached; counts nothing.
    pub(crate) fn check(&self, keys: &[Key]) -> Result<(), u64> {
        let mut state = self.state();
        match self.over_limit(&mut state, keys, Instant::now()) {
            Some(retry) => Err(retry),
            None => Ok(()),
        }
    }

    /// Checks the hard limits and, in the same step, counts the attempt as a
    /// failure until [`Throttle::release`] says otherwise.
    pub(crate) fn begin(&self, keys: Vec<Key>) -> Result<Reservation, u64> {
        let now = Instant::now();
        let mut state = self.state();
        if let Some(retry) = self.over_limit(&mut state, &keys, now) {
            return Err(retry);
        }
        if state.len() >= MAX_TRACKED_KEYS {
            // Bound the memory an attacker spraying names or addresses can make
            // us hold: forget keys whose failures are all out of the window.
            let window = self.limits.window;
            state.retain(|_, list| list.last().is_some_and(|t| now.duration_since(*t) < window));
        }
        let mut slow = false;
        for key in &keys {
            let list = state.entry(key.clone()).or_default();
            if let Key::Account(_) = key {
                let window = self.limits.window;
                list.retain(|t| now.duration_since(*t) < window);
                slow = list.len() as u32 >= self.limits.account_soft;
            }
            list.push(now);
        }
        Ok(Reservation {
            keys,
            at: now,
            slow,
        })
    }

    /// The attempt was not a failure (right credentials, or the check could not run).
    pub(crate) fn release(&self, reservation: Reservation) {
        let mut state = self.state();
        for key in &reservation.keys {
            if let Some(list) = state.get_mut(key) {
                if let Some(i) = list.iter().rposition(|t| *t == reservation.at) {
                    list.remove(i);
                }
                if list.is_empty() {
                    state.remove(key);
                }
            }
        }
    }

    /// Forgets failures: of `account` (from anywhere), from `address` (for any
    /// account), of `account` from `address`, or every failure when both are `None`.
    /// Returns how many throttle keys were cleared.
    pub(crate) fn unlock(&self, account: Option<&str>, address: Option<IpAddr>) -> usize {
        let mut state = self.state();
        let before = state.len();
        state.retain(|key, _| {
            let cleared = match (account, address) {
                (None, None) => true,
                (Some(a), None) => {
                    matches!(key, Key::Pair(n, _) | Key::Account(n) if n == a)
                }
                (None, Some(ip)) => {
                    matches!(key, Key::Address(Some(x)) | Key::Pair(_, Some(x)) if *x == ip)
                }
                (Some(a), Some(ip)) => match key {
                    Key::Pair(n, Some(x)) => n == a && *x == ip,
                    Key::Account(n) => n == a,
                    Key::Address(Some(x)) => *x == ip,
                    _ => false,
                },
            };
            !cleared
        });
        before - state.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> Throttle {
        Throttle::new(Limits {
            per_pair: 3,
            per_address: 5,
            account_soft: 4,
            window: Duration::from_secs(60),
        })
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn another_address_is_never_locked_out() {
        let t = throttle();
        for _ in 0..3 {
            t.begin(Throttle::keys(Some("admin"), ip("127.0.0.2")))
                .unwrap();
        }
        assert!(t
            .begin(Throttle::keys(Some("admin"), ip("127.0.0.2")))
            .is_err());
        // The clean address may still try, although slowed once the account is over its soft budget.
        let r = t
            .begin(Throttle::keys(Some("admin"), ip("127.0.0.3")))
            .unwrap();
        assert!(!r.slow);
        t.begin(Throttle::keys(Some("admin"), ip("127.0.0.4")))
            .unwrap();
        let r = t
            .begin(Throttle::keys(Some("admin"), ip("127.0.0.5")))
            .unwrap();
        assert!(r.slow);
    }

    #[test]
    fn reservations_count_until_released() {
        let t = throttle();
        let held: Vec<_> = (0..3)
            .map(|_| t.begin(Throttle::keys(Some("a"), ip("10.0.0.1"))).unwrap())
            .collect();
        // Three attempts in flight fill the pair's budget before any of them finished.
        assert!(t.check(&Throttle::keys(Some("a"), ip("10.0.0.1"))).is_err());
        for r in held {
            t.release(r);
        }
        assert!(t.check(&Throttle::keys(Some("a"), ip("10.0.0.1"))).is_ok());
    }

    #[test]
    fn per_address_budget_spans_accounts_and_unlock_clears() {
        let t = throttle();
        for name in ["a", "b", "c", "d", "e"] {
            t.begin(Throttle::keys(Some(name), ip("10.0.0.1"))).unwrap();
        }
        assert!(t.check(&Throttle::keys(Some("f"), ip("10.0.0.1"))).is_err());
        assert!(t.check(&Throttle::keys(Some("f"), ip("10.0.0.2"))).is_ok());
        assert!(t.unlock(None, ip("10.0.0.1")) > 0);
        assert!(t.check(&Throttle::keys(Some("f"), ip("10.0.0.1"))).is_ok());
        // Token failures carry no account: keyed by address alone.
        for _ in 0..5 {
            t.begin(Throttle::keys(None, ip("10.0.0.9"))).unwrap();
        }
        assert!(t.check(&Throttle::keys(None, ip("10.0.0.9"))).is_err());
        assert!(t.check(&Throttle::keys(None, ip("10.0.0.8"))).is_ok());
        t.unlock(None, None);
        assert!(t.check(&Throttle::keys(None, ip("10.0.0.9"))).is_ok());
    }
}
