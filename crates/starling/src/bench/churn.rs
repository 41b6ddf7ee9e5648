//! `churn`: is the server as fast after many logins and logouts as before? (Issue 7: the
//! `chat` figure after 10,000 logins and logouts within 5% of the one before; Prosody drops
//! from 5-9k to 2k messages/s.) `chat`, then N logins and logouts over the accounts in turn,
//! then the same `chat` again -> both figures and after / before.

use super::chat::{chat, check_pairs, ChatReport};
use super::login::{logins, LoginReport};
use super::report::Summary;
use super::BenchOptions;

/// `churn` figures.
#[derive(Debug, Clone)]
pub struct ChurnReport {
    pub before: ChatReport,
    pub logins: LoginReport,
    pub after: ChatReport,
    /// after.messages_per_sec / before.messages_per_sec.
    pub ratio: f64,
}

impl ChurnReport {
    /// The issue 7 target: the figure after the churn is at least 95% of the one before.
    pub fn within_5_percent(&self) -> bool {
        self.ratio >= 0.95
    }

    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        s.line(
            "chat before",
            format!(
                "{:.1} delivered/s (p99 {:.3} ms, lost {}, duplicated {}, reordered {})",
                self.before.messages_per_sec,
                self.before.latency.p99_us as f64 / 1000.0,
                self.before.lost,
                self.before.duplicated,
                self.before.reordered
            ),
        )
        .line(
            "logins and logouts",
            format!(
                "{} of {} ({} failed), {:.1} logins/s",
                self.logins.succeeded,
                self.logins.attempted,
                self.logins.failed,
                self.logins.logins_per_sec
            ),
        )
        .line(
            "chat after",
            format!(
                "{:.1} delivered/s (p99 {:.3} ms, lost {}, duplicated {}, reordered {})",
                self.after.messages_per_sec,
                self.after.latency.p99_us as f64 / 1000.0,
                self.after.lost,
                self.after.duplicated,
                self.after.reordered
            ),
        )
        .line("after / before", format!("{:.3}", self.ratio))
        .line(
            "within 5% (issue 7)",
            if self.within_5_percent() { "yes" } else { "no" },
        );
        s.field("pairs", self.before.pairs)
            .field("window", self.before.window)
            .field(
                "before_per_sec",
                format!("{:.3}", self.before.messages_per_sec),
            )
            .field("before_p99_us", self.before.latency.p99_us)
            .field("before_lost", self.before.lost)
            .field("before_duplicated", self.before.duplicated)
            .field("before_reordered", self.before.reordered)
            .field("logins", self.logins.succeeded)
            .field("logins_failed", self.logins.failed)
            .field(
                "logins_per_sec",
                format!("{:.3}", self.logins.logins_per_sec),
            )
            .field(
                "after_per_sec",
                format!("{:.3}", self.after.messages_per_sec),
            )
            .field("after_p99_us", self.after.latency.p99_us)
            .field("after_lost", self.after.lost)
            .field("after_duplicated", self.after.duplicated)
            .field("after_reordered", self.after.reordered)
            .field("ratio", format!("{:.4}", self.ratio))
            .field("within_5pct", u8::from(self.within_5_percent()));
        s
    }
}

/// `chat`, `login_count` logins and logouts, `chat` again. Each phase has the duration.
pub async fn churn(
    opts: &BenchOptions,
    pairs: usize,
    window: u64,
    max_messages: u64,
    login_count: usize,
) -> Result<ChurnReport, String> {
    check_pairs(opts, pairs, window, max_messages)?;
    if login_count == 0 {
        return Err("logins must be at least 1".into());
    }
    let before = chat(opts, pairs, window, max_messages, None).await?;
    let logins = logins(opts, login_count).await?;
    if let Some(e) = &logins.first_error {
        eprintln!("bench churn: first login failure: {e}");
    }
    let after = chat(opts, pairs, window, max_messages, None).await?;
    let ratio = if before.messages_per_sec > 0.0 {
        after.messages_per_sec / before.messages_per_sec
    } else {
        0.0
    };
    Ok(ChurnReport {
        before,
        logins,
        after,
        ratio,
    })
}
