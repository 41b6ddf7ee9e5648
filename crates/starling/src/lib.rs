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
pub mod compliance;

/// A running server.
pub struct Running {
    /// The server context (router, storage, modules).
    pub server: Arc<Server>,
    /// The bound listeners.
    pub listeners: Listeners,
    /// Where components (XEP-0114) connect, when any is configured.
    pub component_listener: Option<std::net::SocketAddr>,
    /// The HTTP upload service (XEP-0363), when enabled.
    pub upload: Option<Arc<starling_upload::Upload>>,
    /// The HTTP listeners (WebSocket, BOSH, host-meta, upload).
    pub http: starling_http::HttpListeners,
    /// Federation (listeners and outbound pool), when `[s2s] enabled`.
    pub s2s: Option<starling_s2s::S2s>,
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
    /// Federation could not start.
    #[error("{0}")]
    S2s(#[from] starling_s2s::StartError),
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

/// Where clients reach the upload URLs: `[upload] public_url`, else `[http] public_url`, else
/// the HTTPS (or, failing that, HTTP) listener: its IP when it is bound to one, the first
/// host's name when it listens on every address.
fn upload_base_url(config: &Config, http: &starling_http::HttpListeners) -> Option<String> {
    use starling_core::config::ListenerKind;
    if let Some(url) = config
        .upload
        .public_url
        .as_ref()
        .or(config.http.public_url.as_ref())
    {
        return Some(url.clone());
    }
    let (scheme, address) = match http.address(ListenerKind::Https) {
        Some(a) => ("https", a),
        None => ("http", http.address(ListenerKind::Http)?),
    };
    let host = if address.ip().is_unspecified() {
        config.server.hosts.first()?.clone()
    } else if address.is_ipv6() {
        format!("[{}]", address.ip())
    } else {
        address.ip().to_string()
    };
    Some(format!("{scheme}://{host}:{}", address.port()))
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
    starling_modules::check_disabled(&config).map_err(StartError::Modules)?;
    let mut modules = starling_modules::default_modules(&config);
    let components = starling_component::Components::from_config(&config);
    if let Some(c) = &components {
        modules.push(c.clone());
    }
    let upload = starling_upload::Upload::from_config(&config, storage.clone())?;
    if let Some(u) = &upload {
        modules.push(u.clone());
    }
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
    let tls_config = tls.config.clone();
    let listeners = starling_c2s::start_listeners(server.clone(), tls).await?;
    let component_listener = match components {
        Some(c) => Some(starling_component::start(server.clone(), c).await?),
        None => None,
    };
    let extra_routes = match &upload {
        Some(u) => starling_upload::http::router(u.clone()),
        None => axum::Router::new(),
    };
    let http =
        starling_http::start_with_routes(listeners.entry(), tls_config, extra_routes).await?;
    if let Some(u) = &upload {
        if let Some(url) = upload_base_url(server.config(), &http) {
            u.set_base_url(&url);
        }
        u.start_expiry(&server);
    }
    let s2s = if server.config().s2s.enabled {
        Some(starling_s2s::start(server.clone(), &cert, &key).await?)
    } else {
        None
    };
    Ok(Running {
        server,
        listeners,
        component_listener,
        upload,
        http,
        s2s,
        sip,
    })
}

impl Running {
    /// Graceful shutdown: every stream ends with `system-shutdown`, then storage closes.
    pub async fn shutdown(self) {
        self.server.shutdown_token().cancel();
        self.listeners.join().await;
        self.http.join().await;
        if let Some(s2s) = self.s2s {
            s2s.join().await;
        }
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
