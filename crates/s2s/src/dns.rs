//! DNS lookups for remote domains (RFC 6120 §3.2.1, XEP-0368 §3) with hickory-resolver and the
//! system's DNS configuration: SRV records for `_xmpps-server._tcp` (direct TLS) and
//! `_xmpp-server._tcp` (STARTTLS), ordered by priority and, within one priority, by weight
//! (heavier first; RFC 2782's random pick is not needed for correctness), each target's
//! addresses; then, when neither service has records, the domain's own A/AAAA records on port
//! 5269 (§3.2.2). A single SRV record with target "." means the service is decidedly not
//! offered (§3.2.1 step 6). Only used when `s2s.dns` is on; tests use static routes.

use std::net::SocketAddr;

use async_trait::async_trait;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;

use crate::resolver::{ResolveError, Resolver, Target};

/// Most addresses tried for one domain, so a hostile zone cannot make us try thousands.
const MAX_TARGETS: usize = 16;

/// Resolves through the system's DNS configuration.
pub(crate) struct DnsResolver {
    /// `None` when the system configuration could not be read: every lookup fails.
    inner: Option<TokioResolver>,
}

impl DnsResolver {
    pub(crate) fn new() -> DnsResolver {
        let inner = match TokioResolver::builder_tokio().and_then(|b| b.build()) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the system DNS configuration; s2s DNS lookups will fail");
                None
            }
        };
        DnsResolver { inner }
    }

    /// (priority, weight, port, target) of the SRV records of `name`, or None when there are
    /// none; `Some(empty)` when the service is explicitly not offered (".").
    async fn srv(
        resolver: &TokioResolver,
        name: &str,
    ) -> Result<Option<Vec<(u16, u16, u16, String)>>, ResolveError> {
        match resolver.srv_lookup(name).await {
            Ok(lookup) => {
                let mut records: Vec<(u16, u16, u16, String)> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::SRV(srv) => Some((
                            srv.priority,
                            srv.weight,
                            srv.port,
                            srv.target.to_ascii().trim_end_matches('.').to_owned(),
                        )),
                        _ => None,
                    })
                    .collect();
                if records.len() == 1 && records[0].3.is_empty() {
                    return Ok(Some(Vec::new()));
                }
                records.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
                Ok(if records.is_empty() {
                    None
                } else {
                    Some(records)
                })
            }
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(None),
            Err(e) => Err(ResolveError::Failed {
                domain: name.to_owned(),
                message: e.to_string(),
            }),
        }
    }

    async fn addresses(resolver: &TokioResolver, host: &str, port: u16) -> Vec<SocketAddr> {
        match resolver.lookup_ip(host).await {
            Ok(ips) => ips.iter().map(|ip| SocketAddr::new(ip, port)).collect(),
            Err(e) => {
                tracing::debug!(%host, error = %e, "address lookup failed");
                Vec::new()
            }
        }
    }
}

#[async_trait]
impl Resolver for DnsResolver {
    async fn resolve(&self, domain: &str) -> Result<Vec<Target>, ResolveError> {
        let Some(resolver) = &self.inner else {
            return Err(ResolveError::NotFound(domain.to_owned()));
        };
        let direct = Self::srv(resolver, &format!("_xmpps-server._tcp.{domain}.")).await?;
        let starttls = Self::srv(resolver, &format!("_xmpp-server._tcp.{domain}.")).await?;
        let mut targets = Vec::new();
        if direct.is_none() && starttls.is_none() {
            for address in Self::addresses(resolver, &format!("{domain}."), 5269).await {
                targets.push(Target {
                    address,
                    direct_tls: false,
                });
            }
        } else {
            // XEP-0368 §3: both lists merged by priority; direct TLS first on a tie.
            let mut all: Vec<(u16, u16, u16, String, bool)> = Vec::new();
            for (list, tls) in [(direct, true), (starttls, false)] {
                for (p, w, port, host) in list.unwrap_or_default() {
                    all.push((p, w, port, host, tls));
                }
            }
            all.sort_by(|a, b| a.0.cmp(&b.0).then(b.4.cmp(&a.4)).then(b.1.cmp(&a.1)));
            for (_, _, port, host, direct_tls) in all {
                for address in Self::addresses(resolver, &format!("{host}."), port).await {
                    targets.push(Target {
                        address,
                        direct_tls,
                    });
                }
                if targets.len() >= MAX_TARGETS {
                    break;
                }
            }
        }
        targets.truncate(MAX_TARGETS);
        if targets.is_empty() {
            return Err(ResolveError::NotFound(domain.to_owned()));
        }
        Ok(targets)
    }
}
