//! Back-off for failed enrolment attempts (trust password or token), per source address.
//!
//! After `FREE_FAILURES` failures an address must wait before its next attempt, the wait doubling
//! with each further failure up to `MAX_DELAY`. Successes by trusted clients never pass through
//! here, so they are never slowed. The table is bounded; when full, the oldest entry is dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

const FREE_FAILURES: u32 = 3;
const BASE_DELAY: Duration = Duration::from_secs(1);
const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
/// Entries idle this long are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(60 * 60);
const MAX_ENTRIES: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last_failure: Instant,
    blocked_until: Instant,
}

#[derive(Debug, Default)]
pub struct Throttle {
    entries: HashMap<IpAddr, Entry>,
}

impl Throttle {
    /// `Err(retry_after)` when `addr` must wait before trying again.
    pub fn check(&self, addr: IpAddr, now: Instant) -> Result<(), Duration> {
        match self.entries.get(&addr) {
            Some(e) if e.blocked_until > now => Err(e.blocked_until - now),
            _ => Ok(()),
        }
    }

    /// Record a failed attempt; returns how long the address is now blocked (zero if not).
    pub fn failure(&mut self, addr: IpAddr, now: Instant) -> Duration {
        if self.entries.len() >= MAX_ENTRIES && !self.entries.contains_key(&addr) {
            self.entries
                .retain(|_, e| now.duration_since(e.last_failure) < FORGET_AFTER);
            if self.entries.len() >= MAX_ENTRIES {
                if let Some(oldest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.last_failure)
                    .map(|(a, _)| *a)
                {
                    self.entries.remove(&oldest);
                }
            }
        }
        let e = self.entries.entry(addr).or_insert(Entry {
            failures: 0,
            last_failure: now,
            blocked_until: now,
        });
        if now.duration_since(e.last_failure) >= FORGET_AFTER {
            e.failures = 0;
        }
        e.failures = e.failures.saturating_add(1);
        e.last_failure = now;
        let delay = if e.failures <= FREE_FAILURES {
            Duration::ZERO
        } else {
            let doublings = (e.failures - FREE_FAILURES - 1).min(20);
            (BASE_DELAY * 2u32.pow(doublings)).min(MAX_DELAY)
        };
        e.blocked_until = now + delay;
        delay
    }

    /// A successful enrolment clears the address's record.
    pub fn success(&mut self, addr: IpAddr) {
        self.entries.remove(&addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_table() {
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        let mut t = Throttle::default();
        // (failure number, expected delay in seconds)
        for (n, secs) in [(1, 0), (2, 0), (3, 0), (4, 1), (5, 2), (6, 4), (7, 8)] {
            let now = t0 + Duration::from_secs(100 * n);
            assert!(
                t.check(a, now).is_ok(),
                "attempt {n} allowed once the wait is over"
            );
            assert_eq!(t.failure(a, now), Duration::from_secs(secs), "failure {n}");
        }
        let now = t0 + Duration::from_secs(700);
        assert_eq!(t.check(a, now), Err(Duration::from_secs(8)));
        assert!(t.check(b, now).is_ok(), "other addresses are not affected");
        t.success(a);
        assert!(t.check(a, now).is_ok());
    }

    #[test]
    fn delay_is_capped_and_forgotten() {
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        let mut t = Throttle::default();
        let mut last = Duration::ZERO;
        for i in 0..40 {
            last = t.failure(a, t0 + Duration::from_secs(i));
        }
        assert_eq!(last, MAX_DELAY);
        assert_eq!(
            t.failure(a, t0 + Duration::from_secs(40) + FORGET_AFTER),
            Duration::ZERO
        );
    }
}
