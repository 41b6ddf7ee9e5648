//! The Starling server assembled: configuration -> storage -> modules -> listeners. The
//! binary (`main.rs`) is a thin command-line front end over this; the end-to-end tests start
//! servers in-process through [`start`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use starling_c2s::{Listeners, TlsSettings};
use starling_core::{Config, Server};

pub mod accounts;
pub mod bench;
pub mod cert;

/// A running server.
pub struct Running {
    /// The server context (router, storage, modules).
    pub server: Arc<Server>,
    /// The bound listeners.
    pub listeners: Listeners,
    /// The SIP gateway's UDP/TCP address, when `[sip] enabled`.
    pub sip: Option<std::net::SocketAddr>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Storage could not be opened.
    #[error("storage: {0}")]
    Storage(#[from] starling_storage::StorageError),
    /// TLS material could not be loaded or generated.
    #[error("{0}")]
    Tls(String),
    /// A listener could not bind.
    #[error("{0}")]
    Listen(#[from] std::io::Error),
    /// The module set is inconsistent.
    #[error("modules: {0}")]
    Modules(String),
}

/// The certificate and key files the server uses: configured ones, or the generated
/// self-signed pair in the data directory (created on first use).
pub fn tls_files(config: &Config) -> Result<(PathBuf, PathBuf), StartError> {
    match (&config.tls.cert, &config.tls.key) {
        (Some(c), Some(k)) => Ok((c.clone(), k.clone())),
        _ => {
            let dir = config.server.data_dir.join("tls");
            let cert = dir.join("cert.pem");
            let key = dir.join("key.pem");
            if !cert.exists() || !key.exists() {
                cert::generate_self_signed(&config.server.hosts, &dir).map_err(|e| {
                    StartError::Tls(format!(
                        "cannot generate a certificate in {}: {e}",
                        dir.display()
                    ))
                })?;
                tracing::warn!(
                    path = %cert.display(),
                    "generated a self-signed certificate; clients will not trust it (fine for testing)"
                );
            }
            Ok((cert, key))
        }
    }
}

/// Opens storage, builds the server and binds its listeners.
pub async fn start(config: Config) -> Result<Running, StartError> {
    std::fs::create_dir_all(&config.server.data_dir).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!(
                "cannot create data directory {}: {e}",
                config.server.data_dir.display()
            ),
        )
    })?;
    let (cert, key) = tls_files(&config)?;
    let tls =
        TlsSettings::from_pem_files(&cert, &key).map_err(|e| StartError::Tls(e.to_string()))?;
    let storage = starling_storage::open(&config.storage_url()).await?;
    let mut modules = starling_modules::default_modules(&config);
    // The SIP/SIMPLE gateway (RFC 3922) serves its own domain; its sockets open below.
    let gateway = if config.sip.enabled {
        let g = starling_sipgw::Gateway::new(&config)
            .map_err(|e| StartError::Modules(e.to_string()))?;
        modules.push(g.clone());
        Some(g)
    } else {
        None
    };
    let server = Server::new(Arc::new(config), storage, modules).map_err(StartError::Modules)?;
    let sip = match &gateway {
        Some(g) => Some(g.start(server.clone()).await?),
        None => None,
    };
    let listeners = starling_c2s::start_listeners(server.clone(), tls).await?;
    Ok(Running {
        server,
        listeners,
        sip,
    })
}

impl Running {
    /// Graceful shutdown: every stream ends with `system-shutdown`, then storage closes.
    pub async fn shutdown(self) {
        self.server.shutdown_token().cancel();
        self.listeners.join().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.server.router().session_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Let the session tasks finish writing their closing tags.
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.server.storage().close().await;
    }
}

/// Loads the configuration named on the command line, or the built-in defaults.
pub fn load_config(path: Option<&Path>) -> Result<Config, String> {
    match path {
        None => Ok(Config::default()),
        Some(p) => Config::load(p).map_err(|problems| {
            let mut out = format!(
                "{}: configuration has {} problem(s):",
                p.display(),
                problems.len()
            );
            for pr in problems {
                out.push_str(&format!("\n  {pr}"));
            }
            out
        }),
    }
}
