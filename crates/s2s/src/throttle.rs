//! The stanza rate limit of a peer (`s2s.stanzas_per_second`): a token bucket that refills at
//! that rate and holds up to twice it, so short bursts pass and a steady flood is read more
//! slowly. Used wherever a peer's stanzas enter: inbound streams, and outbound streams the
//! peer made bidirectional (XEP-0288).

use std::time::Duration;

use tokio::time::Instant;

/// One peer's token bucket.
pub(crate) struct Throttle {
    rate: f64,
    tokens: f64,
    refilled: Instant,
}

impl Throttle {
    pub(crate) fn new(stanzas_per_second: u32) -> Throttle {
        let rate = f64::from(stanzas_per_second.max(1));
        Throttle {
            rate,
            tokens: rate * 2.0,
            refilled: Instant::now(),
        }
    }

    /// Takes one token, first sleeping until there is one. Returns how long it slept.
    pub(crate) async fn take(&mut self) -> Option<Duration> {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.refilled).as_secs_f64() * self.rate)
            .min(self.rate * 2.0);
        self.refilled = now;
        let mut slept = None;
        if self.tokens < 1.0 {
            let wait = Duration::from_secs_f64((1.0 - self.tokens) / self.rate);
            tokio::time::sleep(wait).await;
            self.tokens = 1.0;
            self.refilled = Instant::now();
            slept = Some(wait);
        }
        self.tokens -= 1.0;
        slept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bursts_pass_and_floods_are_paced() {
        let mut t = Throttle::new(10);
        // The burst allowance: twice the rate, without waiting.
        for _ in 0..20 {
            assert_eq!(t.take().await, None);
        }
        // Then the bucket is (nearly) empty: the next stanza waits for a token.
        let waited = t.take().await.expect("the bucket is empty");
        assert!(waited <= Duration::from_millis(100), "{waited:?}");
    }
}
