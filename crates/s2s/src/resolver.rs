//! Where a remote domain's server is: RFC 6120 §3.2 and XEP-0368, behind our own
//! [`Resolver`] trait so tests and private deployments answer from a static table and never
//! from the machine's resolver.
//!
//! [`StaticRoutes`] answers from `[[s2s.route]]`. [`DnsResolver`] (when `s2s.dns` is on)
//! looks up `_xmpps-server._tcp` (direct TLS) and `_xmpp-server._tcp` SRV records, tries
//! them by priority and weight, and falls back to the domain's A/AAAA records on port 5269
//! when there are none; an SRV answer of "." means the service is decidedly not available.

use std::net::SocketAddr;

use async_trait::async_trait;
use starling_core::config::S2sRoute;

/// One address to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// IP address and port.
    pub address: SocketAddr,
    /// TLS from the first byte (XEP-0368) instead of STARTTLS.
    pub direct_tls: bool,
}

/// Why no address was found.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The domain has no server we can reach (no route, no records, or SRV ".").
    #[error("no server found for {0}")]
    NotFound(String),
    /// The lookup itself failed.
    #[error("lookup for {domain} failed: {message}")]
    Failed { domain: String, message: String },
}

/// Finds the addresses of a remote domain's server, best first.
#[async_trait]
pub trait Resolver: Send + Sync + 'static {
    /// The targets to try in order for `domain`.
    async fn resolve(&self, domain: &str) -> Result<Vec<Target>, ResolveError>;
}

/// The `[[s2s.route]]` table, consulted before anything else.
pub struct StaticRoutes {
    routes: Vec<S2sRoute>,
    /// Asked for domains without a static route; `None`: they are not found.
    fallback: Option<Box<dyn Resolver>>,
}

impl StaticRoutes {
    /// Routes from the configuration, with an optional resolver for other domains.
    pub fn new(routes: Vec<S2sRoute>, fallback: Option<Box<dyn Resolver>>) -> StaticRoutes {
        StaticRoutes { routes, fallback }
    }
}

#[async_trait]
impl Resolver for StaticRoutes {
    async fn resolve(&self, domain: &str) -> Result<Vec<Target>, ResolveError> {
        let found: Vec<Target> = self
            .routes
            .iter()
            .filter(|r| r.domain.eq_ignore_ascii_case(domain))
            .map(|r| Target {
                address: r.address,
                direct_tls: r.direct_tls,
            })
            .collect();
        if !found.is_empty() {
            return Ok(found);
        }
        match &self.fallback {
            Some(f) => f.resolve(domain).await,
            None => Err(ResolveError::NotFound(domain.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn static_routes_answer_and_others_are_not_found() {
        let r = StaticRoutes::new(
            vec![S2sRoute {
                domain: "b.test".into(),
                address: "127.0.0.2:5269".parse().unwrap(),
                direct_tls: false,
            }],
            None,
        );
        let t = r.resolve("B.test").await.unwrap();
        assert_eq!(t[0].address, "127.0.0.2:5269".parse().unwrap());
        assert!(matches!(
            r.resolve("c.test").await,
            Err(ResolveError::NotFound(_))
        ));
    }
}
