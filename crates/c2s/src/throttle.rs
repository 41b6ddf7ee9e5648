//! Progressive delays for failed logins, per IP address and per account (DESIGN "Security
//! defaults": auth failures throttled per IP).
//!
//! The per-stream cap in [`crate::negotiate`] (a few failures, then `policy-violation`) does
//! not stop a client that reconnects. This table remembers failures across connections:
//! after `auth_address_failures_free` failures from an address, or
//! `auth_account_failures_free` for an account, within `auth_failure_window_secs`, every further
//! attempt waits before it is checked — `auth_failure_delay_ms`, doubled per failure, at
//! most `auth_failure_max_delay_ms` — whether it then succeeds or not, so the delay does not
//! tell a guesser early that a guess was wrong.
//!
//! - **Per address** (IPv4, or the /64 of an IPv6 address) attempts also wait *in turn*:
//!   parallel connections from one address do not multiply its guessing rate. When the
//!   queue of an address is already longer than the maximum delay, the attempt is refused
//!   at once with `temporary-auth-failure` (RFC 6120 §6.5.13: try again later).
//! - **Per account** the delay applies to each attempt but attempts do not queue: a guesser
//!   spread over many addresses is slowed down, while the account's owner is delayed by at
//!   most the maximum delay and never locked out. A success forgets the account's failures;
//!   it does not forget the address's (one valid account must not launder a guesser's IP).
//!
//! Memory is bounded: each table holds at most [`MAX_ENTRIES`] keys; expired keys are swept
//! when it is full, and if it is still full the key with the oldest failure is forgotten.
//! Ejabberd's mod_fail2ban bans an address after N failures; Prosody's mod_limit_auth
//! tarpits. A delay keeps working behind carrier-grade NAT, where a ban would lock out
//! everyone sharing the address, so the delays come first.
//!
//! **The penalty box** is the last resort, for what the delays do not stop: an address with
//! `auth_address_ban_after` failures within the window (a guesser patient enough to sit
//! through the delays), or one opening more than `connections_per_ip_per_minute` new client
//! connections in a minute (a connection flood of short-lived connections, which the cap on
//! *simultaneous* connections per address does not see), has its new connections refused
//! for `address_ban_secs`. The ban is logged once when it starts; connections already open
//! are left alone. Generous defaults keep a NAT's users in.
//!
//! One table serves every transport that carries client streams, so an address banned on
//! one is banned on all, and failures and connections add up across them: every door asks
//! [`AuthThrottle::admit`] before anything else — the TCP listeners for each accepted
//! connection (refused with `policy-violation`), and [`crate::C2sEntry::open`] for each
//! WebSocket upgrade and each new BOSH session (refused as crates/http says: HTTP 429, BOSH
//! `policy-violation`). Failed logins are recorded by the SASL code of every stream,
//! whatever carries it. A BOSH request within an existing session is not a new connection.
//!
//! The address is the socket peer's. There is no trusted-proxy setting (no `X-Forwarded-For`
//! is read): behind a reverse proxy every HTTP client has the proxy's address and shares its
//! limits, as it already shares `max_connections_per_ip`; such a deployment must raise the
//! limits (or turn the connection-rate trigger off with 0).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::Duration;

use parking_lot::Mutex;
use starling_core::config::LimitsConfig;
use tokio::time::Instant;

/// Most addresses and most accounts remembered (each).
pub(crate) const MAX_ENTRIES: usize = 10_000;

/// The window in which new connections per address are counted.
const CONNECTION_WINDOW: Duration = Duration::from_secs(60);

/// The configured policy, copied from `[limits]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    free_address: u32,
    free_account: u32,
    base: Duration,
    max: Duration,
    window: Duration,
    /// New connections per address per [`CONNECTION_WINDOW`]; 0 = unlimited.
    connections_per_window: u32,
    /// Failures from an address that put it in the penalty box; 0 = never.
    ban_after_failures: u32,
    /// How long the penalty box lasts.
    ban: Duration,
}

impl Policy {
    pub(crate) fn from_config(l: &LimitsConfig) -> Policy {
        Policy {
            free_address: l.auth_address_failures_free,
            free_account: l.auth_account_failures_free,
            base: Duration::from_millis(l.auth_failure_delay_ms),
            max: Duration::from_millis(l.auth_failure_max_delay_ms),
            window: Duration::from_secs(l.auth_failure_window_secs),
            connections_per_window: l.connections_per_ip_per_minute,
            ban_after_failures: l.auth_address_ban_after,
            ban: Duration::from_secs(l.address_ban_secs),
        }
    }

    /// The delay after `failures` failures when `free` of them are free.
    fn delay(&self, failures: u32, free: u32) -> Duration {
        if failures == 0 || failures < free {
            return Duration::ZERO;
        }
        let doublings = (failures - free.max(1)).min(20);
        self.base.saturating_mul(1 << doublings).min(self.max)
    }
}

#[derive(Debug, Clone)]
struct Entry {
    failures: u32,
    last_failure: Instant,
    /// When the last queued attempt of this key may proceed (addresses only).
    next_turn: Instant,
}

/// The attempt must wait this long before it is checked, or is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Turn {
    /// Wait, then check the credentials (zero: no wait).
    Wait(Duration),
    /// Too many attempts are already waiting: answer `temporary-auth-failure`.
    Busy,
}

/// New connections of one address, and its ban.
#[derive(Debug, Clone)]
struct Admission {
    /// Start of the current counting window.
    window_start: Instant,
    /// Connections opened in it.
    connections: u32,
    /// Refused until then, when in the penalty box.
    banned_until: Option<Instant>,
}

/// Why [`AuthThrottle::admit`] refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Banned {
    /// Time left in the penalty box.
    pub(crate) left: Duration,
}

/// Failures per address and per account, and the penalty box; shared by every connection.
#[derive(Default)]
pub(crate) struct AuthThrottle {
    addresses: Mutex<HashMap<IpAddr, Entry>>,
    accounts: Mutex<HashMap<String, Entry>>,
    admissions: Mutex<HashMap<IpAddr, Admission>>,
}

/// The throttle key of an address: IPv4 as is (IPv4-mapped IPv6 too), IPv6 by its /64.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut seg = v6.segments();
                seg[4..].fill(0);
                IpAddr::V6(seg.into())
            }
        },
    }
}

fn live<'a, K: Eq + Hash>(
    map: &'a mut HashMap<K, Entry>,
    key: &K,
    policy: &Policy,
    now: Instant,
) -> Option<&'a mut Entry> {
    let expired = map
        .get(key)
        .is_some_and(|e| now.duration_since(e.last_failure) > policy.window);
    if expired {
        map.remove(key);
    }
    map.get_mut(key)
}

fn record<K: Eq + Hash + Clone>(map: &mut HashMap<K, Entry>, key: K, policy: &Policy) -> u32 {
    let now = Instant::now();
    if live(map, &key, policy, now).is_none() && map.len() >= MAX_ENTRIES {
        map.retain(|_, e| now.duration_since(e.last_failure) <= policy.window);
        if map.len() >= MAX_ENTRIES {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, e)| e.last_failure)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
    }
    let entry = map.entry(key).or_insert(Entry {
        failures: 0,
        last_failure: now,
        next_turn: now,
    });
    entry.failures = entry.failures.saturating_add(1);
    entry.last_failure = now;
    entry.failures
}

/// Makes room for one more admission entry: forgets entries that are neither banned nor in
/// a current window, then (still full) the one with the oldest window that is not banned,
/// then the one whose ban ends first.
/// The admission record of `key`, a fresh one (room made first) if it has none.
fn admission(map: &mut HashMap<IpAddr, Admission>, key: IpAddr, now: Instant) -> &mut Admission {
    if !map.contains_key(&key) {
        make_room(map, now);
    }
    map.entry(key).or_insert(Admission {
        window_start: now,
        connections: 0,
        banned_until: None,
    })
}

fn make_room(map: &mut HashMap<IpAddr, Admission>, now: Instant) {
    if map.len() < MAX_ENTRIES {
        return;
    }
    map.retain(|_, a| {
        a.banned_until.is_some_and(|u| u > now)
            || now.duration_since(a.window_start) < CONNECTION_WINDOW
    });
    if map.len() < MAX_ENTRIES {
        return;
    }
    let victim = map
        .iter()
        .min_by_key(|(_, a)| (a.banned_until.is_some(), a.banned_until, a.window_start))
        .map(|(k, _)| *k);
    if let Some(k) = victim {
        map.remove(&k);
    }
}

impl AuthThrottle {
    /// Admits a new connection from `ip` over `via` (named in the log line when a flood
    /// starts a ban: "c2s", "websocket", "bosh"), counting it against the address's
    /// connection rate; refuses it while the address is in the penalty box (and puts it there
    /// when this connection is one too many).
    pub(crate) fn admit(
        &self,
        ip: IpAddr,
        via: &'static str,
        policy: &Policy,
    ) -> Result<(), Banned> {
        let key = address_key(ip);
        let now = Instant::now();
        let mut map = self.admissions.lock();
        if let Some(a) = map.get_mut(&key) {
            match a.banned_until {
                Some(until) if until > now => return Err(Banned { left: until - now }),
                Some(_) => {
                    tracing::info!(address = %key, "penalty box over; accepting connections again");
                    a.banned_until = None;
                    a.connections = 0;
                    a.window_start = now;
                }
                None => {}
            }
        }
        if policy.connections_per_window == 0 {
            return Ok(());
        }
        let a = admission(&mut map, key, now);
        if now.duration_since(a.window_start) >= CONNECTION_WINDOW {
            a.window_start = now;
            a.connections = 0;
        }
        a.connections = a.connections.saturating_add(1);
        if a.connections > policy.connections_per_window && !policy.ban.is_zero() {
            a.banned_until = Some(now + policy.ban);
            tracing::warn!(
                address = %key,
                via,
                connections_per_minute = policy.connections_per_window,
                ban_secs = policy.ban.as_secs(),
                "connection flood: address refused for a while (penalty box)"
            );
            return Err(Banned { left: policy.ban });
        }
        Ok(())
    }

    /// Puts the address of `ip` in the penalty box (after too many failed logins).
    fn ban(&self, ip: IpAddr, policy: &Policy, failures: u32) {
        if policy.ban.is_zero() {
            return;
        }
        let key = address_key(ip);
        let now = Instant::now();
        let mut map = self.admissions.lock();
        let a = admission(&mut map, key, now);
        if a.banned_until.is_some_and(|u| u > now) {
            return;
        }
        a.banned_until = Some(now + policy.ban);
        tracing::warn!(
            address = %key,
            failures,
            ban_secs = policy.ban.as_secs(),
            "too many failed logins: address refused for a while (penalty box)"
        );
    }

    /// Takes a turn for an attempt from `ip`: how long it must wait, or [`Turn::Busy`].
    pub(crate) fn address_turn(&self, ip: IpAddr, policy: &Policy) -> Turn {
        let now = Instant::now();
        let mut map = self.addresses.lock();
        let Some(entry) = live(&mut map, &address_key(ip), policy, now) else {
            return Turn::Wait(Duration::ZERO);
        };
        let delay = policy.delay(entry.failures, policy.free_address);
        if delay.is_zero() {
            return Turn::Wait(Duration::ZERO);
        }
        let turn = entry.next_turn.max(now) + delay;
        if turn - now > policy.max {
            return Turn::Busy;
        }
        entry.next_turn = turn;
        Turn::Wait(turn - now)
    }

    /// How long an attempt for `account` (`user@host`) must wait.
    pub(crate) fn account_delay(&self, account: &str, policy: &Policy) -> Duration {
        let now = Instant::now();
        let mut map = self.accounts.lock();
        live(&mut map, &account.to_owned(), policy, now).map_or(Duration::ZERO, |e| {
            policy.delay(e.failures, policy.free_account)
        })
    }

    /// Records a failed attempt from `ip`, and for `account` when the username was known.
    /// Returns the failure counts (address, account) after it.
    pub(crate) fn failed(&self, ip: IpAddr, account: Option<&str>, policy: &Policy) -> (u32, u32) {
        let by_ip = record(&mut self.addresses.lock(), address_key(ip), policy);
        let by_account = account.map_or(0, |a| {
            record(&mut self.accounts.lock(), a.to_owned(), policy)
        });
        if policy.ban_after_failures > 0 && by_ip >= policy.ban_after_failures {
            self.ban(ip, policy, by_ip);
        }
        let next_delay = policy
            .delay(by_ip, policy.free_address)
            .max(policy.delay(by_account, policy.free_account));
        if !next_delay.is_zero() {
            tracing::warn!(
                address = %address_key(ip),
                account = account.unwrap_or("-"),
                failures_from_address = by_ip,
                failures_for_account = by_account,
                next_delay_ms = next_delay.as_millis() as u64,
                "repeated authentication failures; delaying further attempts"
            );
        }
        (by_ip, by_account)
    }

    /// A successful login forgets the account's failures (not the address's).
    pub(crate) fn succeeded(&self, account: &str) {
        self.accounts.lock().remove(account);
    }

    #[cfg(test)]
    fn sizes(&self) -> (usize, usize) {
        (self.addresses.lock().len(), self.accounts.lock().len())
    }

    #[cfg(test)]
    fn admissions_len(&self) -> usize {
        self.admissions.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            free_address: 2,
            free_account: 3,
            base: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            window: Duration::from_secs(60),
            connections_per_window: 0,
            ban_after_failures: 0,
            ban: Duration::from_secs(30),
        }
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    #[test]
    fn delays_start_after_the_free_failures_and_double_up_to_the_maximum() {
        let p = policy();
        let d: Vec<_> = (0..9).map(|n| p.delay(n, 2).as_millis()).collect();
        assert_eq!(d, vec![0, 0, 100, 200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(p.delay(0, 0), Duration::ZERO);
        assert_eq!(p.delay(1, 0), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn an_address_waits_in_turn_and_a_long_queue_is_busy() {
        let t = AuthThrottle::default();
        let p = policy();
        assert_eq!(t.address_turn(IP, &p), Turn::Wait(Duration::ZERO));
        t.failed(IP, None, &p);
        t.failed(IP, None, &p);
        // Two failures: 100 ms per attempt, queued one after the other.
        let waits: Vec<_> = (0..10).map(|_| t.address_turn(IP, &p)).collect();
        let ms = |n| Turn::Wait(Duration::from_millis(n));
        assert_eq!(&waits[..3], &[ms(100), ms(200), ms(300)]);
        assert_eq!(waits[9], ms(1000));
        assert_eq!(
            t.address_turn(IP, &p),
            Turn::Busy,
            "queue longer than the max"
        );
        // Another address is not affected; an IPv6 /64 is one key.
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(t.address_turn(other, &p), Turn::Wait(Duration::ZERO));
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::2".parse().unwrap();
        t.failed(a, None, &p);
        t.failed(b, None, &p);
        assert_eq!(t.address_turn(b, &p), ms(100));
    }

    #[tokio::test(start_paused = true)]
    async fn account_delays_do_not_queue_and_success_forgets_them() {
        let t = AuthThrottle::default();
        let p = policy();
        for _ in 0..4 {
            t.failed(IP, Some("alice@localhost"), &p);
        }
        for _ in 0..5 {
            assert_eq!(
                t.account_delay("alice@localhost", &p),
                Duration::from_millis(200)
            );
        }
        assert_eq!(t.account_delay("bob@localhost", &p), Duration::ZERO);
        t.succeeded("alice@localhost");
        assert_eq!(t.account_delay("alice@localhost", &p), Duration::ZERO);
        // The address keeps its failures.
        assert_ne!(t.address_turn(IP, &p), Turn::Wait(Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_expire_after_the_window() {
        let t = AuthThrottle::default();
        let p = policy();
        for _ in 0..4 {
            t.failed(IP, Some("alice@localhost"), &p);
        }
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(t.address_turn(IP, &p), Turn::Wait(Duration::ZERO));
        assert_eq!(t.account_delay("alice@localhost", &p), Duration::ZERO);
        // Counting starts again.
        assert_eq!(t.failed(IP, None, &p), (1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn the_tables_are_bounded() {
        let t = AuthThrottle::default();
        let p = policy();
        for i in 0..(MAX_ENTRIES as u32 + 500) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            t.failed(ip, Some(&format!("u{i}@localhost")), &p);
        }
        assert_eq!(t.sizes(), (MAX_ENTRIES, MAX_ENTRIES));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_flood_puts_the_address_in_the_penalty_box() {
        let t = AuthThrottle::default();
        let p = Policy {
            connections_per_window: 5,
            ..policy()
        };
        for _ in 0..5 {
            assert_eq!(t.admit(IP, "c2s", &p), Ok(()));
        }
        assert_eq!(
            t.admit(IP, "c2s", &p),
            Err(Banned {
                left: Duration::from_secs(30)
            })
        );
        // Other addresses are not affected; a banned one stays refused until the end.
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(t.admit(other, "c2s", &p), Ok(()));
        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(
            t.admit(IP, "c2s", &p),
            Err(Banned {
                left: Duration::from_secs(1)
            })
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            t.admit(IP, "c2s", &p),
            Ok(()),
            "the ban is over and counting restarts"
        );
        // Connections spread over more than a window are not a flood.
        for _ in 0..20 {
            tokio::time::advance(Duration::from_secs(13)).await;
            assert_eq!(t.admit(IP, "c2s", &p), Ok(()));
        }
        // No limit: nothing is remembered.
        let q = policy();
        let fresh = AuthThrottle::default();
        for _ in 0..100 {
            assert_eq!(fresh.admit(IP, "c2s", &q), Ok(()));
        }
        assert_eq!(fresh.admissions_len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn repeated_failures_put_the_address_in_the_penalty_box() {
        let t = AuthThrottle::default();
        let p = Policy {
            free_address: 100,
            ban_after_failures: 4,
            ..policy()
        };
        for _ in 0..3 {
            t.failed(IP, Some("alice@localhost"), &p);
            assert_eq!(t.admit(IP, "c2s", &p), Ok(()));
        }
        t.failed(IP, Some("alice@localhost"), &p);
        assert!(t.admit(IP, "c2s", &p).is_err());
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(t.admit(other, "c2s", &p), Ok(()));
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(t.admit(IP, "c2s", &p), Ok(()));
        // Off when 0.
        let q = Policy {
            free_address: 100,
            ..policy()
        };
        let u = AuthThrottle::default();
        for _ in 0..50 {
            u.failed(IP, None, &q);
        }
        assert_eq!(u.admit(IP, "c2s", &q), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn the_penalty_box_is_bounded() {
        let t = AuthThrottle::default();
        let p = Policy {
            connections_per_window: 1,
            ..policy()
        };
        for i in 0..(MAX_ENTRIES as u32 + 500) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = t.admit(ip, "c2s", &p);
        }
        assert_eq!(t.admissions_len(), MAX_ENTRIES);
    }
}
