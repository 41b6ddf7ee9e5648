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

use std::time::Duration;

use tokio::time::Instant;

/// Limits for one stream. A `None` bucket means no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RateLimits {
    /// (bytes per second, burst bytes).
    pub bytes: Option<(u64, u64)>,
    /// (stanzas per second, burst stanzas).
    pub stanzas: Option<(u64, u64)>,
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
        }
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
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(rate: u64, burst: u64) -> TokenBucket {
        TokenBucket {
            rate: rate as f64,
            burst: burst as f64,
            tokens: burst as f64,
            updated: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.updated = now;
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

    #[test]
    fn zero_rates_mean_no_limit() {
        let l = RateLimits::from_config(0, 10, 5, 0);
        assert_eq!(l.bytes, None);
        assert_eq!(l.stanzas, Some((5, 1)));
    }
}
