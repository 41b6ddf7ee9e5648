//! Token buckets that pace how fast one peer's input is read (DESIGN principle 3: "rate
//! limits per connection").
//!
//! The policy is backpressure, not punishment, as in ejabberd's shapers and Prosody's
//! mod_limits: when a bucket is empty [`crate::XmlStream`] simply stops reading the socket
//! until it has refilled, so the kernel's receive window closes and the peer's writes block.
//! Nothing is dropped and no error is sent; a flooding client only slows itself down, while
//! its session keeps receiving (the outbound side is not paced).
//!
//! A bucket may go into debt: a read of `n` bytes takes `n` tokens even if fewer are left,
//! and the next read waits until the debt is repaid. The rate is thus exact on average, and
//! one read (or one stanza) never has to be split.
//!
//! Pacing alone lets an abuser keep a session busy forever at exactly the limit. So a bucket
//! also tracks *sustained* abuse: it counts as over its limit from the first pause until it
//! is seen refilled to at least half its burst (which takes a pause in the peer's sending).
//! A peer over its limit for longer than [`RateLimits::disconnect_after`] is cut off with
//! `policy-violation` ([`crate::XmlStream::next_event`]); a burst followed by quiet, or any
//! rate at or below the limit, never is.

use std::time::Duration;

use tokio::time::Instant;

/// Limits for one stream. A `None` bucket means no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RateLimits {
    /// (bytes per second, burst bytes).
    pub bytes: Option<(u64, u64)>,
    /// (stanzas per second, burst stanzas).
    pub stanzas: Option<(u64, u64)>,
    /// Close the stream once a bucket has been over its limit this long (`None`: never).
    pub disconnect_after: Option<Duration>,
}

impl RateLimits {
    /// Limits from configured values, where a rate of 0 means unlimited.
    pub fn from_config(
        bytes_per_sec: u64,
        bytes_burst: u64,
        stanzas_per_sec: u64,
        stanzas_burst: u64,
    ) -> RateLimits {
        RateLimits {
            bytes: (bytes_per_sec > 0).then_some((bytes_per_sec, bytes_burst.max(1))),
            stanzas: (stanzas_per_sec > 0).then_some((stanzas_per_sec, stanzas_burst.max(1))),
            disconnect_after: None,
        }
    }

    /// Also disconnects a peer that stays over a limit for `secs` seconds (0: never).
    pub fn disconnect_after_secs(mut self, secs: u64) -> RateLimits {
        self.disconnect_after = (secs > 0).then(|| Duration::from_secs(secs));
        self
    }
}

/// One token bucket: `rate` tokens per second, holding at most `burst`.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    /// Tokens at `updated`; negative while in debt.
    tokens: f64,
    updated: Instant,
    /// Since when the bucket has been over its limit (see the module docs).
    over_since: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(rate: u64, burst: u64) -> TokenBucket {
        TokenBucket {
            rate: rate as f64,
            burst: burst as f64,
            tokens: burst as f64,
            updated: Instant::now(),
            over_since: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.updated = now;
        if self.tokens * 2.0 >= self.burst {
            self.over_since = None;
        }
    }

    /// How long the bucket has been over its limit (zero when it is not).
    pub(crate) fn over_for(&self) -> Duration {
        self.over_since.map_or(Duration::ZERO, |t| {
            Instant::now().saturating_duration_since(t)
        })
    }

    /// Takes `n` tokens, going into debt if needed.
    pub(crate) fn take(&mut self, n: u64) {
        self.refill(Instant::now());
        self.tokens -= n as f64;
    }

    /// How long until the bucket holds a positive amount again (zero if it does now).
    pub(crate) fn wait_time(&mut self) -> Duration {
        self.refill(Instant::now());
        if self.tokens > 0.0 {
            Duration::ZERO
        } else {
            self.over_since.get_or_insert(self.updated);
            // Until the debt is repaid plus one token, so that a wake-up makes progress.
            Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_full_bucket_allows_its_burst_then_paces_at_the_rate() {
        let mut b = TokenBucket::new(10, 5);
        for _ in 0..4 {
            b.take(1);
            assert_eq!(b.wait_time(), Duration::ZERO);
        }
        b.take(1);
        // Empty: one token takes 1/10 s.
        assert_eq!(b.wait_time(), Duration::from_millis(100));
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(b.wait_time(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn debt_is_repaid_before_more_is_allowed_and_refill_is_capped_at_the_burst() {
        let mut b = TokenBucket::new(1000, 1000);
        b.take(3000);
        assert_eq!(b.wait_time(), Duration::from_millis(2001));
        tokio::time::advance(Duration::from_secs(3600)).await;
        b.take(0);
        assert_eq!(b.tokens, 1000.0, "never more than the burst");
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_at_the_limit_stays_over_it_and_a_quiet_one_recovers() {
        let mut b = TokenBucket::new(10, 10);
        assert_eq!(b.over_for(), Duration::ZERO);
        b.take(10);
        assert!(!b.wait_time().is_zero());
        // Sending exactly as fast as the bucket refills: over the limit all along.
        for _ in 0..50 {
            let w = b.wait_time();
            tokio::time::advance(w).await;
            b.take(1);
        }
        assert!(b.over_for() >= Duration::from_secs(4), "{:?}", b.over_for());
        // Quiet until the bucket is half full: no longer over.
        tokio::time::advance(Duration::from_millis(600)).await;
        assert!(b.wait_time().is_zero());
        assert_eq!(b.over_for(), Duration::ZERO);
        // A burst that empties the bucket starts the count again from zero.
        b.take(10);
        assert!(!b.wait_time().is_zero());
        assert!(b.over_for() < Duration::from_millis(10));
    }

    #[test]
    fn zero_rates_mean_no_limit() {
        let l = RateLimits::from_config(0, 10, 5, 0);
        assert_eq!(l.bytes, None);
        assert_eq!(l.stanzas, Some((5, 1)));
        assert_eq!(l.disconnect_after, None);
        assert_eq!(l.disconnect_after_secs(0).disconnect_after, None);
        assert_eq!(
            l.disconnect_after_secs(9).disconnect_after,
            Some(Duration::from_secs(9))
        );
    }
}
