//! `churn`: is the server as fast after many logins and logouts as before? (Issue 7: the
//! `chat` figure after 10,000 logins and logouts within 5% of the one before; Prosody drops
//! from 5-9k to 2k messages/s.) `chat` R times, then N logins and logouts over the accounts
//! in turn, then `chat` R times again -> the mean figure of each side and after / before.
//!
//! Why R rounds and the server's CPU: on the shared 2-core benchmark machine two `chat` runs
//! in a row, with nothing between them, differ by up to 9% (session 10: 1.09 and 0.92), so one
//! run on each side cannot tell a 5% change from noise. The mean of R runs narrows that, and
//! with `--server-pid` the server's CPU time per delivered message before and after (from
//! `/proc/PID/stat`) shows whether the server itself does more work per message after the
//! churn, which throughput alone cannot separate from the load generator's share of the
//! machine.

use super::chat::{chat, check_pairs, ChatReport};
use super::login::{logins, LoginReport};
use super::report::Summary;
use super::BenchOptions;

/// `churn` figures.
#[derive(Debug, Clone)]
pub struct ChurnReport {
    /// The `chat` runs before the logins, in order.
    pub before: Vec<ChatReport>,
    pub logins: LoginReport,
    /// The `chat` runs after the logins, in order.
    pub after: Vec<ChatReport>,
    /// Server CPU time per delivered message before and after, in microseconds (with the
    /// server's pid).
    pub cpu_us_per_message: Option<(f64, f64)>,
}

/// One side's runs taken together.
struct Side<'a>(&'a [ChatReport]);

impl Side<'_> {
    fn mean_per_sec(&self) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.iter().map(|r| r.messages_per_sec).sum::<f64>() / self.0.len() as f64
    }

    fn worst_p99_us(&self) -> u64 {
        self.0.iter().map(|r| r.latency.p99_us).max().unwrap_or(0)
    }

    fn sum(&self, f: impl Fn(&ChatReport) -> u64) -> u64 {
        self.0.iter().map(f).sum()
    }

    /// Each run's messages/s, joined by `/` (a field value has no spaces).
    fn runs(&self) -> String {
        self.0
            .iter()
            .map(|r| format!("{:.0}", r.messages_per_sec))
            .collect::<Vec<_>>()
            .join("/")
    }

    fn line(&self) -> String {
        format!(
            "{:.1} delivered/s, mean of {} (runs {}; worst p99 {:.3} ms, lost {}, duplicated {}, reordered {})",
            self.mean_per_sec(),
            self.0.len(),
            self.runs(),
            self.worst_p99_us() as f64 / 1000.0,
            self.sum(|r| r.lost),
            self.sum(|r| r.duplicated),
            self.sum(|r| r.reordered)
        )
    }
}

impl ChurnReport {
    /// Mean messages/s after over mean messages/s before.
    pub fn ratio(&self) -> f64 {
        let before = Side(&self.before).mean_per_sec();
        if before > 0.0 {
            Side(&self.after).mean_per_sec() / before
        } else {
            0.0
        }
    }

    /// The issue 7 target: the figure after the churn is at least 95% of the one before.
    pub fn within_5_percent(&self) -> bool {
        self.ratio() >= 0.95
    }

    pub fn summary(&self) -> Summary {
        let (before, after) = (Side(&self.before), Side(&self.after));
        let mut s = Summary::default();
        s.line("chat before", before.line())
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
            .line("chat after", after.line())
            .line("after / before", format!("{:.3}", self.ratio()))
            .line(
                "within 5% (issue 7)",
                if self.within_5_percent() { "yes" } else { "no" },
            );
        if let Some((b, a)) = self.cpu_us_per_message {
            s.line(
                "server CPU per message",
                format!("{b:.3} µs before, {a:.3} µs after"),
            );
        }
        let first = self.before.first();
        s.field("pairs", first.map_or(0, |r| r.pairs))
            .field("window", first.map_or(0, |r| r.window))
            .field("rounds", self.before.len())
            .field("before_per_sec", format!("{:.3}", before.mean_per_sec()))
            .field("before_runs", before.runs())
            .field("before_p99_us", before.worst_p99_us())
            .field("before_lost", before.sum(|r| r.lost))
            .field("before_duplicated", before.sum(|r| r.duplicated))
            .field("before_reordered", before.sum(|r| r.reordered))
            .field("logins", self.logins.succeeded)
            .field("logins_failed", self.logins.failed)
            .field(
                "logins_per_sec",
                format!("{:.3}", self.logins.logins_per_sec),
            )
            .field("after_per_sec", format!("{:.3}", after.mean_per_sec()))
            .field("after_runs", after.runs())
            .field("after_p99_us", after.worst_p99_us())
            .field("after_lost", after.sum(|r| r.lost))
            .field("after_duplicated", after.sum(|r| r.duplicated))
            .field("after_reordered", after.sum(|r| r.reordered))
            .field("ratio", format!("{:.4}", self.ratio()))
            .field("within_5pct", u8::from(self.within_5_percent()));
        if let Some((b, a)) = self.cpu_us_per_message {
            s.field("server_us_per_msg_before", format!("{b:.3}"))
                .field("server_us_per_msg_after", format!("{a:.3}"))
                .field(
                    "cpu_ratio",
                    format!("{:.4}", if b > 0.0 { a / b } else { 0.0 }),
                );
        }
        s
    }
}

/// The CPU time (user and system, all threads, exited ones included) `pid` has used, in
/// seconds. `/proc/PID/stat` counts it in USER_HZ ticks, which Linux fixes at 100 per second
/// for user space whatever the kernel's own tick rate.
pub fn cpu_seconds(pid: u32) -> Result<f64, String> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    // The command name (field 2) may hold spaces and parentheses: count from its end.
    let rest = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or_else(|| format!("{path}: unreadable"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15.
    let tick = |i: usize| -> Result<f64, String> {
        fields
            .get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .map(|t| t as f64 / 100.0)
            .ok_or_else(|| format!("{path}: no field {i}"))
    };
    Ok(tick(14)? + tick(15)?)
}

/// `rounds` `chat` runs; with `pid`, the server's CPU time per delivered message across them.
async fn side(
    opts: &BenchOptions,
    pairs: usize,
    window: u64,
    max_messages: u64,
    rounds: usize,
    pid: Option<u32>,
) -> Result<(Vec<ChatReport>, Option<f64>), String> {
    let start = pid.map(cpu_seconds).transpose()?;
    let mut runs = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        runs.push(chat(opts, pairs, window, max_messages, None).await?);
    }
    let delivered: u64 = runs.iter().map(|r| r.delivered).sum();
    let cpu = match (pid, start) {
        (Some(pid), Some(start)) if delivered > 0 => {
            Some((cpu_seconds(pid)? - start) * 1e6 / delivered as f64)
        }
        _ => None,
    };
    Ok((runs, cpu))
}

/// `chat` `rounds` times, `login_count` logins and logouts, `chat` `rounds` times again.
/// Each phase has the duration.
pub async fn churn(
    opts: &BenchOptions,
    pairs: usize,
    window: u64,
    max_messages: u64,
    login_count: usize,
    rounds: usize,
    server_pid: Option<u32>,
) -> Result<ChurnReport, String> {
    check_pairs(opts, pairs, window, max_messages)?;
    if login_count == 0 {
        return Err("logins must be at least 1".into());
    }
    if rounds == 0 {
        return Err("rounds must be at least 1".into());
    }
    let (before, cpu_before) = side(opts, pairs, window, max_messages, rounds, server_pid).await?;
    let logins = logins(opts, login_count).await?;
    if let Some(e) = &logins.first_error {
        eprintln!("bench churn: first login failure: {e}");
    }
    let (after, cpu_after) = side(opts, pairs, window, max_messages, rounds, server_pid).await?;
    Ok(ChurnReport {
        before,
        logins,
        after,
        cpu_us_per_message: cpu_before.zip(cpu_after),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_cpu_time_is_read_and_grows() {
        let pid = std::process::id();
        let a = cpu_seconds(pid).unwrap();
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < std::time::Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let b = cpu_seconds(pid).unwrap();
        assert!(b - a >= 0.15, "{a} -> {b}: 300 ms of spinning should show");
        assert!(b - a < 5.0, "{a} -> {b}");
    }

    #[test]
    fn a_missing_process_is_an_error() {
        assert!(cpu_seconds(u32::MAX).is_err());
    }
}
