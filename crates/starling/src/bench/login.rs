//! `login`: accounts log in (TLS, SASL, bind, presence, one ping round trip) and out again,
//! at most `concurrency` at a time -> logins/s and login time. [`logins`] also serves `churn`,
//! which cycles through the accounts more times than there are accounts.

use std::sync::Arc;
use std::time::Duration;

use starling_client::SaltedPasswordCache;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::report::{micros, ms, rate, Percentiles, Summary};
use super::BenchOptions;

/// `login` figures.
#[derive(Debug, Clone)]
pub struct LoginReport {
    pub attempted: usize,
    pub succeeded: usize,
    pub failed: usize,
    /// The first failure, if any.
    pub first_error: Option<String>,
    pub elapsed: Duration,
    pub logins_per_sec: f64,
    /// Connect + TLS + SASL + bind + presence + ping round trip.
    pub login_time: Percentiles,
}

impl LoginReport {
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        s.line("attempted", self.attempted)
            .line("succeeded", self.succeeded)
            .line("failed", self.failed)
            .line("elapsed", format!("{:.3} s", self.elapsed.as_secs_f64()))
            .line("logins/s", format!("{:.1}", self.logins_per_sec))
            .line("login p50", ms(self.login_time.p50_us))
            .line("login p99", ms(self.login_time.p99_us))
            .line("login max", ms(self.login_time.max_us));
        s.field("attempted", self.attempted)
            .field("succeeded", self.succeeded)
            .field("failed", self.failed)
            .field("elapsed_s", format!("{:.6}", self.elapsed.as_secs_f64()))
            .field("logins_per_sec", format!("{:.3}", self.logins_per_sec))
            .field("p50_us", self.login_time.p50_us)
            .field("p99_us", self.login_time.p99_us)
            .field("max_us", self.login_time.max_us);
        s
    }
}

/// Every account logs in once, at most `concurrency` at a time; no new login starts after
/// the duration.
pub async fn login(opts: &BenchOptions) -> Result<LoginReport, String> {
    logins(opts, opts.users).await
}

/// [`login`] as a returning client: every account first logs in once, untimed, and the
/// SCRAM SaltedPassword is kept ([`SaltedPasswordCache`]); the timed logins then skip
/// PBKDF2, so the figure is the server's side of a login (TLS, SASL, bind, presence), not
/// the load generator's hashing. The warm-up has its own time bound (the same duration).
pub async fn login_with_cache(opts: &BenchOptions) -> Result<LoginReport, String> {
    if opts.mechanism.scram_hash().is_none() {
        return Err(format!(
            "--scram-cache needs a SCRAM mechanism, not {}",
            opts.mechanism.name()
        ));
    }
    let mut opts = opts.clone();
    let cache = SaltedPasswordCache::new();
    opts.scram_cache = Some(cache.clone());
    let warm = logins(&opts, opts.users).await?;
    if warm.failed > 0 || warm.succeeded < opts.users {
        return Err(format!(
            "warming the SCRAM cache: {} of {} logins succeeded ({})",
            warm.succeeded,
            opts.users,
            warm.first_error.as_deref().unwrap_or("out of time")
        ));
    }
    let report = logins(&opts, opts.users).await?;
    if cache.len() < opts.users {
        return Err(format!(
            "only {} of {} accounts were cached",
            cache.len(),
            opts.users
        ));
    }
    Ok(report)
}

/// `count` logins and logouts over the accounts in turn (account `n % users` for the n-th),
/// at most `concurrency` at a time; no new login starts after the duration.
pub async fn logins(opts: &BenchOptions, count: usize) -> Result<LoginReport, String> {
    opts.check()?;
    let opts = Arc::new(opts.clone());
    let start = Instant::now();
    let deadline = start + opts.duration;
    let gate = Arc::new(Semaphore::new(opts.concurrency));
    let mut tasks = JoinSet::new();
    let mut attempted = 0;
    for n in 0..count {
        let permit = tokio::select! {
            p = gate.clone().acquire_owned() => p.map_err(|e| e.to_string())?,
            _ = tokio::time::sleep_until(deadline) => break,
        };
        attempted += 1;
        let opts = opts.clone();
        let i = n % opts.users;
        // When accounts are reused, each login binds a resource of its own, so that two
        // logins of one account at once never replace each other.
        let resource = (count > opts.users).then(|| format!("bench-{i}-{n}"));
        tasks.spawn(async move {
            let t0 = Instant::now();
            let result = opts.open_session_as(i, resource).await;
            let took = t0.elapsed();
            // Release the slot before the orderly close: the close is not part of a login.
            drop(permit);
            match result {
                Ok(client) => {
                    let _ = client.close().await;
                    Ok(took)
                }
                Err(e) => Err(e),
            }
        });
    }
    let mut times = Vec::with_capacity(attempted);
    let mut failed = 0;
    let mut first_error = None;
    let mut end = start;
    while let Some(r) = tasks.join_next().await {
        match r.map_err(|e| e.to_string())? {
            Ok(t) => times.push(micros(t)),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
        end = Instant::now();
    }
    let elapsed = end - start;
    let succeeded = times.len();
    Ok(LoginReport {
        attempted,
        succeeded,
        failed,
        first_error,
        elapsed,
        logins_per_sec: rate(succeeded as u64, elapsed),
        login_time: Percentiles::of(times),
    })
}
