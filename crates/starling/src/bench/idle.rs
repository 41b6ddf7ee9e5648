//! `idle`: N authenticated sessions held for the duration -> server RSS per session, read
//! from `/proc/PID/status` (VmRSS) before and after when the server's pid is given.

use std::time::Duration;

use tokio::time::Instant;

use super::report::Summary;
use super::{close_all, open_many, BenchOptions};

/// `idle` figures.
#[derive(Debug, Clone)]
pub struct IdleReport {
    pub sessions: usize,
    pub failed: usize,
    pub first_error: Option<String>,
    pub held: Duration,
    /// Server VmRSS in KiB before connecting, once all were connected, and at the end.
    pub rss_before_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    pub rss_end_kib: Option<u64>,
    /// (after - before) / sessions, in bytes.
    pub bytes_per_session: Option<f64>,
}

impl IdleReport {
    pub fn summary(&self) -> Summary {
        let kib = |v: Option<u64>| v.map_or("-".to_owned(), |v| format!("{v} KiB"));
        let opt = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
        let mut s = Summary::default();
        s.line("sessions", self.sessions)
            .line("failed", self.failed)
            .line("held", format!("{:.3} s", self.held.as_secs_f64()))
            .line("server RSS before", kib(self.rss_before_kib))
            .line("server RSS after", kib(self.rss_after_kib))
            .line("server RSS at end", kib(self.rss_end_kib))
            .line(
                "RSS per session",
                self.bytes_per_session
                    .map_or("- (no --server-pid)".to_owned(), |b| format!("{b:.0} B")),
            );
        s.field("sessions", self.sessions)
            .field("failed", self.failed)
            .field("held_s", format!("{:.3}", self.held.as_secs_f64()))
            .field("rss_before_kib", opt(self.rss_before_kib))
            .field("rss_after_kib", opt(self.rss_after_kib))
            .field("rss_end_kib", opt(self.rss_end_kib))
            .field(
                "bytes_per_session",
                self.bytes_per_session
                    .map_or("-".to_owned(), |b| format!("{b:.1}")),
            );
        s
    }
}

/// The VmRSS of a process, in KiB.
pub fn rss_kib(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("{path}: no VmRSS"))
}

/// Opens every account's session, holds them all for the duration, then closes them.
pub async fn idle(opts: &BenchOptions, server_pid: Option<u32>) -> Result<IdleReport, String> {
    opts.check()?;
    let rss = |pid: Option<u32>| pid.map(rss_kib).transpose();
    let rss_before_kib = rss(server_pid)?;
    let (clients, failed, first_error) = open_many(opts, 0..opts.users).await?;
    let sessions = clients.len();
    // Let the server settle (buffers released after negotiation) before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after_kib = rss(server_pid)?;
    let held_from = Instant::now();
    tokio::time::sleep(opts.duration).await;
    let held = held_from.elapsed();
    let rss_end_kib = rss(server_pid)?;
    close_all(clients, opts.concurrency).await;
    let bytes_per_session = match (rss_before_kib, rss_after_kib) {
        (Some(b), Some(a)) if sessions > 0 => {
            Some((a as f64 - b as f64) * 1024.0 / sessions as f64)
        }
        _ => None,
    };
    Ok(IdleReport {
        sessions,
        failed,
        first_error,
        held,
        rss_before_kib,
        rss_after_kib,
        rss_end_kib,
        bytes_per_session,
    })
}
