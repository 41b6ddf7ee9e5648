//! HTTP file upload (XEP-0363): how clients share files (photos, voice messages) in chats.
//!
//! The service has its own JID per host, `upload.<host>`, served through the core's
//! whole-domain hook ([`Module::served_domains`]) and listed in the server's `disco#items`.
//! A local user asks it for a slot (`<request filename size content-type/>`); the answer holds
//! a PUT URL and a GET URL on Starling's HTTP listener, both signed (see [`slot`]): the PUT
//! URL for the next `put_ttl_secs`, the GET URL for as long as the file is kept
//! (`file_ttl_days`). [`http::router`] serves those URLs; [`store`] keeps the files in the
//! data directory and each account's usage for the quota.
//!
//! Limits: `max_file_bytes` per file (refused at slot time with `<file-too-large/>`, §4.2),
//! `quota_bytes` per account (checked at slot time and again when the file arrives), PUT
//! bodies must be exactly the announced size, only local accounts get slots.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use minidom::Element;
use starling_core::config::{Config, UploadConfig};
use starling_core::module::Module;
use starling_core::xml::BuilderExt;
use starling_core::Server;
use starling_proto::error::{StanzaError, StanzaErrorCondition as Cond};
use starling_proto::jid::Jid;
use starling_proto::ns;

pub mod http;
pub mod slot;
pub mod store;

use slot::{check_filename, new_slot_id, PutGrant, Signer, SlotError};
use store::{now_ms, FileStore};

/// The namespace of XEP-0363.
pub const NS_UPLOAD: &str = "urn:xmpp:http:upload:0";
const NS_DATA: &str = "jabber:x:data";

/// The upload service: a module for the slot IQs and the state the HTTP handlers share.
pub struct Upload {
    config: UploadConfig,
    domains: Vec<String>,
    signer: Signer,
    store: FileStore,
    /// Where the HTTP listener is reached, known once it has bound.
    base_url: OnceLock<String>,
}

impl Upload {
    /// The service for `config`, with files and the signing key in the data directory, or
    /// `None` when upload is disabled.
    pub fn from_config(
        config: &Config,
        storage: Arc<dyn starling_storage::Storage>,
    ) -> std::io::Result<Option<Arc<Upload>>> {
        if !config.upload.enabled {
            return Ok(None);
        }
        let data = &config.server.data_dir;
        let key = starling_core::secret::load_or_create(&data.join("upload-secret"))?;
        let service = Upload {
            config: config.upload.clone(),
            domains: config
                .server
                .hosts
                .iter()
                .map(|h| format!("upload.{h}"))
                .collect(),
            signer: Signer::new(key),
            store: FileStore::new(data.join("upload"), storage)?,
            base_url: OnceLock::new(),
        };
        if let Some(url) = &config.upload.public_url {
            let _ = service.base_url.set(url.trim_end_matches('/').to_owned());
        }
        Ok(Some(Arc::new(service)))
    }

    /// Records where the HTTP listener is reached (unless `public_url` was configured).
    pub fn set_base_url(&self, url: &str) {
        let _ = self.base_url.set(url.trim_end_matches('/').to_owned());
    }

    /// The base URL in use, if known.
    pub fn base_url(&self) -> Option<&str> {
        self.base_url.get().map(String::as_str)
    }

    /// Starts the hourly deletion of expired files.
    pub fn start_expiry(self: &Arc<Self>, server: &Server) {
        tokio::spawn(http::expiry_loop(
            self.clone(),
            Duration::from_secs(3600),
            server.shutdown_token().clone(),
        ));
    }

    fn disco_info(&self) -> Element {
        let form = Element::builder("x", NS_DATA)
            .with_attr("type", "result")
            .append(
                Element::builder("field", NS_DATA)
                    .with_attr("var", "FORM_TYPE")
                    .with_attr("type", "hidden")
                    .append(Element::builder("value", NS_DATA).append(NS_UPLOAD)),
            )
            .append(
                Element::builder("field", NS_DATA)
                    .with_attr("var", "max-file-size")
                    .append(
                        Element::builder("value", NS_DATA)
                            .append(self.config.max_file_bytes.to_string()),
                    ),
            )
            .build();
        Element::builder("query", ns::DISCO_INFO)
            .append(
                Element::builder("identity", ns::DISCO_INFO)
                    .with_attr("category", "store")
                    .with_attr("type", "file")
                    .with_attr("name", "HTTP File Upload"),
            )
            .append(Element::builder("feature", ns::DISCO_INFO).with_attr("var", ns::DISCO_INFO))
            .append(Element::builder("feature", ns::DISCO_INFO).with_attr("var", NS_UPLOAD))
            .append(form)
            .build()
    }

    /// Answers a slot request from `from` (XEP-0363 §4).
    async fn slot(
        &self,
        server: &Server,
        from: &Jid,
        request: &Element,
    ) -> Result<Element, StanzaError> {
        if from.node().is_none() || !server.config().is_local_host(from.domain()) {
            return Err(StanzaError::with_text(
                Cond::NotAllowed,
                "only accounts of this server may upload",
            ));
        }
        let Some(base) = self.base_url() else {
            return Err(StanzaError::with_text(
                Cond::ServiceUnavailable,
                "no HTTP listener serves uploads",
            ));
        };
        let filename = request.attr("filename").unwrap_or_default();
        let size: u64 = request
            .attr("size")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                StanzaError::with_text(Cond::BadRequest, "size is missing or not a number")
            })?;
        let content_type = request.attr("content-type").unwrap_or_default();
        if content_type.len() > 255 || content_type.chars().any(|c| c.is_control()) {
            return Err(StanzaError::with_text(
                Cond::BadRequest,
                "unusable content-type",
            ));
        }
        let check = || -> Result<(), SlotError> {
            check_filename(filename)?;
            if size == 0 || size > self.config.max_file_bytes {
                return Err(SlotError::TooLarge(self.config.max_file_bytes));
            }
            Ok(())
        };
        match check() {
            Ok(()) => {}
            Err(SlotError::BadFilename) => {
                return Err(StanzaError::with_text(
                    Cond::BadRequest,
                    "unusable file name",
                ))
            }
            Err(SlotError::TooLarge(max)) if size > 0 => {
                tracing::info!(%from, size, max, "upload slot refused: file too large");
                let detail = Element::builder("file-too-large", NS_UPLOAD)
                    .append(Element::builder("max-file-size", NS_UPLOAD).append(max.to_string()))
                    .build();
                return Err(StanzaError::with_app(Cond::NotAcceptable, detail));
            }
            Err(_) => {
                return Err(StanzaError::with_text(
                    Cond::BadRequest,
                    "size must be positive",
                ))
            }
        }
        let owner = from.bare().to_string();
        if self.config.quota_bytes > 0 {
            let used = self.store.usage(&owner).await.map_err(|e| {
                tracing::error!(error = %e, "reading upload usage");
                StanzaError::new(Cond::InternalServerError)
            })?;
            if used.saturating_add(size) > self.config.quota_bytes {
                tracing::info!(%from, used, size, "upload slot refused: quota exceeded");
                return Err(StanzaError::with_text(
                    Cond::ResourceConstraint,
                    "upload quota exceeded",
                ));
            }
        }
        let grant = PutGrant {
            slot: new_slot_id(),
            filename: filename.to_owned(),
            owner,
            size,
            content_type: content_type.to_owned(),
            expires: now_ms() / 1000 + self.config.put_ttl_secs,
        };
        let get_expires = if self.config.file_ttl_days == 0 {
            0
        } else {
            // The GET URL outlives the PUT window by the file's whole lifetime.
            grant.expires + self.config.file_ttl_days * 86_400
        };
        let put_url = format!("{base}{}", grant.path_and_query(&self.signer));
        let get_url = format!(
            "{base}{}",
            slot::get_path_and_query(&self.signer, &grant.slot, &grant.filename, get_expires)
        );
        Ok(Element::builder("slot", NS_UPLOAD)
            .append(Element::builder("put", NS_UPLOAD).with_attr("url", put_url))
            .append(Element::builder("get", NS_UPLOAD).with_attr("url", get_url))
            .build())
    }
}

#[async_trait]
impl Module for Upload {
    fn name(&self) -> &'static str {
        "upload"
    }

    fn served_domains(&self) -> Vec<String> {
        self.domains.clone()
    }

    async fn on_domain_stanza(&self, server: &Server, stanza: Element, _to: Jid) {
        if stanza.name() != "iq" {
            if stanza.name() == "message" {
                server.bounce(&stanza, Cond::ServiceUnavailable).await;
            }
            return;
        }
        let kind = stanza.attr("type").unwrap_or_default();
        if !matches!(kind, "get" | "set") {
            return; // results and errors: nothing of ours to answer
        }
        let Some(from) = stanza.attr("from").and_then(|f| Jid::parse(f).ok()) else {
            return;
        };
        let payload = stanza.children().next();
        let answer = match payload {
            Some(p)
                if kind == "get" && p.is("query", ns::DISCO_INFO) && p.attr("node").is_none() =>
            {
                Ok(Some(self.disco_info()))
            }
            Some(p) if kind == "get" && p.is("query", ns::DISCO_ITEMS) => {
                Ok(Some(Element::builder("query", ns::DISCO_ITEMS).build()))
            }
            Some(p) if kind == "get" && p.is("request", NS_UPLOAD) => {
                self.slot(server, &from, p).await.map(Some)
            }
            _ => Err(StanzaError::new(Cond::ServiceUnavailable)),
        };
        match answer {
            Ok(payload) => {
                let mut result = Element::builder("iq", ns::CLIENT)
                    .with_attr("type", "result")
                    .with_attr("id", stanza.attr("id").unwrap_or_default())
                    .with_attr("from", stanza.attr("to").unwrap_or_default())
                    .with_attr("to", from.as_str())
                    .build();
                if let Some(p) = payload {
                    result.append_child(p);
                }
                server.route(result).await;
            }
            Err(e) => server.bounce_with(&stanza, e).await,
        }
    }
}
