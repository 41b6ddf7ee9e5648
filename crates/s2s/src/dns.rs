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

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
    use hickory_resolver::net::runtime::TokioRuntimeProvider;
    use std::collections::HashMap;

    /// A resolver that asks only `server` (UDP).
    fn asking(server: SocketAddr) -> DnsResolver {
        let mut udp = ConnectionConfig::udp();
        udp.port = server.port();
        let ns = NameServerConfig::new(server.ip(), true, vec![udp]);
        let config = ResolverConfig::from_name_servers(vec![ns]);
        let inner = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .build()
            .unwrap();
        DnsResolver { inner: Some(inner) }
    }

    fn name(n: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for label in n.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
        out
    }

    /// A minimal authoritative DNS server on loopback answering from `records`
    /// ((lowercase name, type) -> rdata list); NXDOMAIN for other names.
    async fn dns_server(records: HashMap<(String, u16), Vec<Vec<u8>>>) -> SocketAddr {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            // Bounded: a test makes a handful of queries.
            for _ in 0..200 {
                let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                    return;
                };
                let q = &buf[..n];
                let mut i = 12;
                let mut labels = Vec::new();
                while q[i] != 0 {
                    let l = q[i] as usize;
                    labels.push(String::from_utf8_lossy(&q[i + 1..i + 1 + l]).to_lowercase());
                    i += 1 + l;
                }
                let qname = labels.join(".");
                let qtype = u16::from_be_bytes([q[i + 1], q[i + 2]]);
                let question = &q[12..i + 5];
                let known = records.keys().any(|(n, _)| *n == qname);
                let answers = records.get(&(qname, qtype)).cloned().unwrap_or_default();
                let mut r = Vec::new();
                r.extend_from_slice(&q[0..2]);
                let rcode: u16 = if known { 0 } else { 3 };
                r.extend_from_slice(&(0x8580u16 | rcode).to_be_bytes());
                r.extend_from_slice(&1u16.to_be_bytes());
                r.extend_from_slice(&(answers.len() as u16).to_be_bytes());
                r.extend_from_slice(&[0, 0, 0, 0]);
                r.extend_from_slice(question);
                for rdata in answers {
                    r.extend_from_slice(&[0xc0, 0x0c]);
                    r.extend_from_slice(&qtype.to_be_bytes());
                    r.extend_from_slice(&1u16.to_be_bytes());
                    r.extend_from_slice(&60u32.to_be_bytes());
                    r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
                    r.extend_from_slice(&rdata);
                }
                let _ = sock.send_to(&r, peer).await;
            }
        });
        addr
    }

    fn srv(prio: u16, weight: u16, port: u16, target: &str) -> Vec<u8> {
        let mut d = Vec::new();
        d.extend_from_slice(&prio.to_be_bytes());
        d.extend_from_slice(&weight.to_be_bytes());
        d.extend_from_slice(&port.to_be_bytes());
        d.extend_from_slice(&name(target));
        d
    }

    #[tokio::test]
    async fn srv_records_then_address_fallback() {
        let mut rec: HashMap<(String, u16), Vec<Vec<u8>>> = HashMap::new();
        // b.example: STARTTLS on two hosts (priority order) and direct TLS at priority 5.
        rec.insert(
            ("_xmpp-server._tcp.b.example".into(), 33),
            vec![
                srv(20, 0, 5300, "slow.b.example"),
                srv(10, 0, 5269, "xmpp.b.example"),
            ],
        );
        rec.insert(
            ("_xmpps-server._tcp.b.example".into(), 33),
            vec![srv(5, 0, 5270, "xmpp.b.example")],
        );
        rec.insert(("xmpp.b.example".into(), 1), vec![vec![127, 0, 0, 2]]);
        rec.insert(("slow.b.example".into(), 1), vec![vec![127, 0, 0, 3]]);
        // c.example: no SRV at all, just an address.
        rec.insert(("c.example".into(), 1), vec![vec![127, 0, 0, 4]]);
        // d.example: the service is decidedly not offered.
        rec.insert(
            ("_xmpp-server._tcp.d.example".into(), 33),
            vec![srv(0, 0, 0, ".")],
        );
        rec.insert(("d.example".into(), 1), vec![vec![127, 0, 0, 5]]);
        let r = asking(dns_server(rec).await);

        let b = r.resolve("b.example").await.unwrap();
        let got: Vec<(String, bool)> = b
            .iter()
            .map(|t| (t.address.to_string(), t.direct_tls))
            .collect();
        assert_eq!(
            got,
            [
                ("127.0.0.2:5270".to_owned(), true),
                ("127.0.0.2:5269".to_owned(), false),
                ("127.0.0.3:5300".to_owned(), false),
            ]
        );
        let c = r.resolve("c.example").await.unwrap();
        assert_eq!(c[0].address.to_string(), "127.0.0.4:5269");
        assert!(!c[0].direct_tls);
        assert!(matches!(
            r.resolve("d.example").await,
            Err(ResolveError::NotFound(_))
        ));
        assert!(matches!(
            r.resolve("nowhere.example").await,
            Err(ResolveError::NotFound(_))
        ));
    }
}
