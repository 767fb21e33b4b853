//! Throttling of repeated failed logins from one address.
//!
//! Online password guessing costs an attacker one connection per guess; without a limit a
//! single host can try thousands a second. After `limit` failed AMQP logins (wrong
//! password, unknown user, refused EXTERNAL) from one IP address within `window`, that
//! address is *cooled down* for `cooldown`: the listener closes its new connections at
//! accept, before a byte is read or a TLS handshake is run (so the broker spends almost
//! nothing on them), and a connection it opened earlier that now sends its login is
//! refused without the password being checked. Other addresses and connections already
//! logged in are never touched.
//!
//! The table is bounded ([`MAX_TRACKED`] addresses): entries expire when their window
//! and cool-down have passed, and when the table is full a counting (not cooled-down)
//! entry makes room. Cooled-down entries are never evicted; if every slot holds one, a
//! new address is not tracked until one expires (the broker fails open rather than
//! growing). Time is passed in, so the rules are unit-tested without waiting.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most addresses tracked at once (about 64 bytes each).
pub const MAX_TRACKED: usize = 16_384;

/// The operator's settings: `limit` failures within `window` cool an address down for
/// `cooldown`; a `limit` of 0 turns throttling off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleSettings {
    /// Failures that trigger a cool-down (0: never).
    pub limit: u32,
    /// How long failures are counted from the first one.
    pub window: Duration,
    /// How long a cooled-down address is refused.
    pub cooldown: Duration,
}

/// One address's record.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// When the current counting window started (its first failure).
    since: Instant,
    /// Failures in that window.
    failures: u32,
    /// Refused until then, when cooled down.
    until: Option<Instant>,
}

impl Entry {
    fn cooling(&self, now: Instant) -> bool {
        self.until.is_some_and(|u| now < u)
    }

    /// Nothing left to remember: the window and any cool-down are over.
    fn stale(&self, now: Instant, s: &ThrottleSettings) -> bool {
        !self.cooling(now) && now.duration_since(self.since) >= s.window
    }
}

/// What [`LoginThrottle::failed`] did with a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Counted; the address may go on.
    Counted(u32),
    /// This failure reached the limit: the address is cooled down from now on.
    CooledDown(u32),
    /// Not tracked (throttling off, or the table full of cooled-down addresses).
    Ignored,
}

/// The per-address failure table and its counters (shown in `/metrics`).
#[derive(Debug)]
pub struct LoginThrottle {
    settings: ThrottleSettings,
    table: Mutex<HashMap<IpAddr, Entry>>,
    /// Failed logins seen (counted or not).
    pub failures_total: AtomicU64,
    /// Times an address was cooled down.
    pub cooldowns_total: AtomicU64,
    /// Connections and logins refused because their address was cooling down.
    pub refused_total: AtomicU64,
}

impl LoginThrottle {
    /// A throttle with these settings.
    pub fn new(settings: ThrottleSettings) -> LoginThrottle {
        LoginThrottle {
            settings,
            table: Mutex::new(HashMap::new()),
            failures_total: AtomicU64::new(0),
            cooldowns_total: AtomicU64::new(0),
            refused_total: AtomicU64::new(0),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> ThrottleSettings {
        self.settings
    }

    fn on(&self) -> bool {
        self.settings.limit > 0
    }

    /// Whether `ip` is cooling down now; counts a refusal when it is. Takes the lock only
    /// when throttling is on; with an empty table this is one hash lookup.
    pub fn refuses(&self, ip: IpAddr, now: Instant) -> bool {
        if !self.on() {
            return false;
        }
        let cooling = self
            .table
            .lock()
            .map(|t| t.get(&ip).is_some_and(|e| e.cooling(now)))
            .unwrap_or(false);
        if cooling {
            self.refused_total.fetch_add(1, Ordering::Relaxed);
        }
        cooling
    }

    /// Records a failed login from `ip`.
    pub fn failed(&self, ip: IpAddr, now: Instant) -> Verdict {
        self.failures_total.fetch_add(1, Ordering::Relaxed);
        if !self.on() {
            return Verdict::Ignored;
        }
        let Ok(mut table) = self.table.lock() else {
            return Verdict::Ignored;
        };
        let s = self.settings;
        if !table.contains_key(&ip) && !make_room(&mut table, now, &s) {
            return Verdict::Ignored;
        }
        let e = table.entry(ip).or_insert(Entry {
            since: now,
            failures: 0,
            until: None,
        });
        if e.stale(now, &s) {
            *e = Entry {
                since: now,
                failures: 0,
                until: None,
            };
        }
        if e.cooling(now) {
            return Verdict::Counted(e.failures);
        }
        e.failures = e.failures.saturating_add(1);
        if e.failures >= s.limit {
            // the next window starts when the cool-down ends
            e.until = Some(now + s.cooldown);
            e.since = now + s.cooldown;
            let n = e.failures;
            e.failures = 0;
            self.cooldowns_total.fetch_add(1, Ordering::Relaxed);
            return Verdict::CooledDown(n);
        }
        Verdict::Counted(e.failures)
    }

    /// Addresses cooling down now (a gauge for `/metrics`).
    pub fn cooling_addresses(&self, now: Instant) -> usize {
        self.table
            .lock()
            .map(|t| t.values().filter(|e| e.cooling(now)).count())
            .unwrap_or(0)
    }

    /// Addresses tracked (counting or cooling down).
    pub fn tracked(&self) -> usize {
        self.table.lock().map(|t| t.len()).unwrap_or(0)
    }
}

/// Frees a slot in a full table: drops stale entries, then, if still full, one counting
/// entry. False when every entry is cooling down.
fn make_room(table: &mut HashMap<IpAddr, Entry>, now: Instant, s: &ThrottleSettings) -> bool {
    if table.len() < MAX_TRACKED {
        return true;
    }
    table.retain(|_, e| !e.stale(now, s));
    if table.len() < MAX_TRACKED {
        return true;
    }
    let victim = table
        .iter()
        .filter(|(_, e)| !e.cooling(now))
        .min_by_key(|(_, e)| e.failures)
        .map(|(ip, _)| *ip);
    match victim {
        Some(ip) => {
            table.remove(&ip);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn throttle(limit: u32) -> LoginThrottle {
        LoginThrottle::new(ThrottleSettings {
            limit,
            window: Duration::from_secs(60),
            cooldown: Duration::from_secs(30),
        })
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(n))
    }

    #[test]
    fn the_limit_cools_an_address_down_for_the_cooldown_only() {
        let t = throttle(3);
        let t0 = Instant::now();
        assert_eq!(t.failed(ip(1), t0), Verdict::Counted(1));
        assert_eq!(t.failed(ip(1), t0), Verdict::Counted(2));
        assert!(!t.refuses(ip(1), t0));
        assert_eq!(t.failed(ip(1), t0), Verdict::CooledDown(3));
        assert!(t.refuses(ip(1), t0 + Duration::from_secs(29)));
        assert!(!t.refuses(ip(2), t0), "other addresses are not affected");
        assert!(!t.refuses(ip(1), t0 + Duration::from_secs(30)));
        // a fresh window after the cool-down
        let t1 = t0 + Duration::from_secs(31);
        assert_eq!(t.failed(ip(1), t1), Verdict::Counted(1));
        assert_eq!(t.cooldowns_total.load(Ordering::Relaxed), 1);
        assert_eq!(t.refused_total.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn failures_outside_the_window_start_a_new_count() {
        let t = throttle(3);
        let t0 = Instant::now();
        t.failed(ip(1), t0);
        t.failed(ip(1), t0);
        assert_eq!(
            t.failed(ip(1), t0 + Duration::from_secs(61)),
            Verdict::Counted(1)
        );
    }

    #[test]
    fn zero_turns_it_off() {
        let t = throttle(0);
        let t0 = Instant::now();
        for _ in 0..100 {
            assert_eq!(t.failed(ip(1), t0), Verdict::Ignored);
        }
        assert!(!t.refuses(ip(1), t0));
        assert_eq!(t.tracked(), 0);
        assert_eq!(t.failures_total.load(Ordering::Relaxed), 100);
    }

    #[test]
    fn the_table_is_bounded_and_keeps_cooled_down_addresses() {
        let t = throttle(2);
        let t0 = Instant::now();
        t.failed(ip(0), t0);
        t.failed(ip(0), t0);
        for n in 1..(MAX_TRACKED as u32 + 100) {
            t.failed(ip(n), t0);
        }
        assert_eq!(t.tracked(), MAX_TRACKED);
        assert!(t.refuses(ip(0), t0), "the cooled-down address was kept");
        // stale entries go when room is needed
        let later = t0 + Duration::from_secs(120);
        t.failed(ip(u32::MAX), later);
        assert_eq!(t.tracked(), 1);
    }
}
