//! The server context and the routing rules of RFC 6120 §10 and RFC 6121 §8.
//!
//! [`Server::route`] takes a stanza whose `from` has been validated by the session that read it
//! and whose `to` is set, and decides: a module (IQs to the server or an account, hooks for
//! messages and presence), a local session (one full JID, or the bare-JID delivery rules), or an
//! error back to the sender. Domains served by a module as a whole (chat rooms on
//! `conference.<host>`) go to that module; other domains go to the federation route when one
//! is installed ([`RemoteRoute`]) and bounce with `remote-server-not-found` otherwise.

use starling_proto::Attr;
use std::collections::HashMap;
use std::sync::{Arc, Weak};

use minidom::Element;
use starling_proto::error::{error_reply, StanzaError, StanzaErrorCondition as Cond};
use starling_proto::jid::Jid;
use starling_proto::ns;
use starling_proto::stanza::IqType;
use starling_storage::Storage;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::module::{AfterRoute, Hook, HookContext, IqRequest, Module, Outcome, SessionEvent};
use crate::router::Router;
use crate::session::{SessionHandle, SharedStanza};
use crate::xml::BuilderExt;

/// Where stanzas for domains that are neither ours nor served by a module go: the
/// server-to-server connection pool (federation). Installed once with
/// [`Server::set_remote`]; without one, such stanzas bounce with `remote-server-not-found`.
#[async_trait::async_trait]
pub trait RemoteRoute: Send + Sync + 'static {
    /// Sends `stanza` (whose `from` is local and validated) towards `to`'s domain. The
    /// implementation queues, connects, and bounces through [`Server::bounce`] on failure.
    async fn send(&self, server: &Server, stanza: Element, to: Jid);
}

/// Everything a session or module needs: configuration, storage, the session table, modules.
pub struct Server {
    config: Arc<Config>,
    storage: Arc<dyn Storage>,
    router: Router,
    modules: Vec<Arc<dyn Module>>,
    /// namespace -> element name -> index in `modules`, for IQ payloads.
    iq_table: HashMap<&'static str, HashMap<&'static str, usize>>,
    /// hook point -> the modules that asked for it, in module order.
    hook_table: HashMap<Hook, Vec<Arc<dyn Module>>>,
    /// Some module at [`Hook::Accepted`] may edit a message ([`Module::edits_at`]).
    accepted_edits: bool,
    /// domain -> index in `modules`, for [`Module::served_domains`].
    domain_table: HashMap<String, usize>,
    /// Federation, when enabled ([`Server::set_remote`]).
    remote: std::sync::OnceLock<Arc<dyn RemoteRoute>>,
    shutdown: CancellationToken,
    /// This server itself, for modules that start background work ([`Server::arc`]).
    this: Weak<Server>,
}

impl Server {
    /// Builds the context and the IQ dispatch table. Two modules claiming the same IQ payload
    /// is a programming error, reported at start.
    pub fn new(
        config: Arc<Config>,
        storage: Arc<dyn Storage>,
        modules: Vec<Arc<dyn Module>>,
    ) -> Result<Arc<Server>, String> {
        let mut iq_table: HashMap<&'static str, HashMap<&'static str, usize>> = HashMap::new();
        for (i, m) in modules.iter().enumerate() {
            for payload in m.iq_payloads() {
                if let Some(prev) = iq_table.entry(payload.0).or_default().insert(payload.1, i) {
                    return Err(format!(
                        "modules {} and {} both handle IQ {{{}}}{}",
                        modules[prev].name(),
                        m.name(),
                        payload.0,
                        payload.1
                    ));
                }
            }
        }
        let mut domain_table: HashMap<String, usize> = HashMap::new();
        for (i, m) in modules.iter().enumerate() {
            for domain in m.served_domains() {
                if config.is_local_host(&domain) {
                    return Err(format!(
                        "module {} serves {domain}, which is also a user host",
                        m.name()
                    ));
                }
                if let Some(prev) = domain_table.insert(domain.clone(), i) {
                    return Err(format!(
                        "modules {} and {} both serve the domain {domain}",
                        modules[prev].name(),
                        m.name()
                    ));
                }
            }
        }
        let mut hook_table: HashMap<Hook, Vec<Arc<dyn Module>>> = HashMap::new();
        for m in &modules {
            for h in m.hooks() {
                hook_table.entry(h).or_default().push(m.clone());
            }
        }
        let accepted_edits = hook_table
            .get(&Hook::Accepted)
            .is_some_and(|list| list.iter().any(|m| m.edits_at(Hook::Accepted)));
        Ok(Arc::new_cyclic(|this| Server {
            this: this.clone(),
            hook_table,
            accepted_edits,
            config,
            storage,
            router: Router::new(),
            modules,
            iq_table,
            domain_table,
            remote: std::sync::OnceLock::new(),
            shutdown: CancellationToken::new(),
        }))
    }

    /// A counted reference to this server, for work that outlives a hook call (a module
    /// spawning a task). `None` only while the server is being dropped.
    pub fn arc(&self) -> Option<Arc<Server>> {
        self.this.upgrade()
    }

    /// The configuration the server started with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The storage backend.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The session table.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The enabled modules.
    pub fn modules(&self) -> &[Arc<dyn Module>] {
        &self.modules
    }

    /// Installs the federation route for remote domains. Only the first call takes effect;
    /// returns false when one was already installed.
    pub fn set_remote(&self, remote: Arc<dyn RemoteRoute>) -> bool {
        self.remote.set(remote).is_ok()
    }

    /// Whether `domain` is served by a module as a whole (see [`Module::served_domains`]).
    pub fn is_served_domain(&self, domain: &str) -> bool {
        self.domain_table.contains_key(domain)
    }

    /// Every domain served by a module, for disco#items of the server.
    pub fn served_domains(&self) -> Vec<&str> {
        let mut d: Vec<&str> = self.domain_table.keys().map(String::as_str).collect();
        d.sort_unstable();
        d
    }

    /// Cancelled when the server shuts down; every task selects on it.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Every disco feature of the enabled modules, sorted and deduplicated.
    pub fn disco_features(&self) -> Vec<&'static str> {
        let mut f: Vec<_> = self
            .modules
            .iter()
            .flat_map(|m| m.disco_features())
            .collect();
        f.sort_unstable();
        f.dedup();
        f
    }

    /// Every account disco feature of the enabled modules, sorted and deduplicated.
    pub fn account_disco_features(&self) -> Vec<&'static str> {
        let mut f: Vec<_> = self
            .modules
            .iter()
            .flat_map(|m| m.account_disco_features())
            .collect();
        f.sort_unstable();
        f.dedup();
        f
    }

    /// Stream features offered to a bound client.
    pub fn stream_features(&self) -> Vec<Element> {
        self.modules
            .iter()
            .flat_map(|m| m.stream_features())
            .collect()
    }

    /// Tells every module about a session event.
    pub async fn session_event(&self, event: SessionEvent) {
        for m in &self.modules {
            m.on_session(self, &event).await;
        }
    }

    /// Records that the client bound to `full` became inactive or active again (XEP-0352)
    /// on its handle, then tells every module ([`Module::on_client_state`]).
    pub async fn client_state(&self, session: &SessionHandle, full: &Jid, inactive: bool) {
        session.set_inactive(inactive);
        for m in &self.modules {
            m.on_client_state(self, full, inactive).await;
        }
    }

    /// Routes a stanza with a validated `from` and a `to`.
    pub async fn route(&self, stanza: Element) {
        let Some(to) = stanza.jid_attribute("to") else {
            // Sessions set and validate `to` before routing; this is a bug, not a peer error.
            tracing::error!("route() called without a valid 'to'");
            return;
        };
        if !self.config.is_local_host(to.domain()) {
            if let Some(&i) = self.domain_table.get(to.domain()) {
                let module = self.modules[i].clone();
                module.on_domain_stanza(self, stanza, to).await;
                return;
            }
            match self.remote.get() {
                Some(remote) => remote.clone().send(self, stanza, to).await,
                // No federation: RFC 6120 §10.4.3.
                None => self.bounce(&stanza, Cond::RemoteServerNotFound).await,
            }
            return;
        }
        match stanza.name() {
            "iq" => self.route_iq(stanza, to).await,
            "message" => self.route_message(stanza, to).await,
            "presence" => self.route_presence(stanza, to).await,
            _ => tracing::warn!(name = stanza.name(), "not a stanza; dropped"),
        }
    }

    /// Sends an error reply for `stanza` back to its sender (never for an error stanza).
    pub async fn bounce(&self, stanza: &Element, condition: Cond) {
        self.bounce_with(stanza, StanzaError::new(condition)).await;
    }

    /// Like [`Server::bounce`] with a prepared error.
    pub async fn bounce_with(&self, stanza: &Element, error: StanzaError) {
        if let Some(reply) = error_reply(stanza, &error) {
            // An error reply is addressed to a local sender in every case we produce one.
            Box::pin(self.route(reply)).await;
        }
    }

    async fn route_iq(&self, iq: Element, to: Jid) {
        let kind = IqType::parse(iq.attribute("type"));
        if to.resource().is_some() {
            let delivered = match self.router.session(&to) {
                Some(s) => self.deliver_to(&s, &to, iq.clone()).await,
                None => false,
            };
            if !delivered && matches!(kind, Some(IqType::Get | IqType::Set)) {
                self.bounce(&iq, Cond::ServiceUnavailable).await;
            }
            return;
        }
        let kind = match kind {
            Some(k @ (IqType::Get | IqType::Set)) => k,
            // Results and errors to the server or a bare JID answer a request a module sent
            // (or nothing we asked: dropped).
            _ => {
                self.hooks(&iq, Hook::IqResponse).await;
                return;
            }
        };
        if let Some(node) = to.node() {
            // IQ to an account's bare JID is served by the server on the account's behalf
            // (RFC 6120 §10.5.3.1 / §10.3): only for existing accounts. A bound resource
            // proves the account exists, so online users skip the storage round trip.
            let online = self.router.with_resources(&to, |l| !l.is_empty());
            let exists = if online {
                Ok(true)
            } else {
                self.storage.account_exists(to.domain(), node).await
            };
            match exists {
                Ok(true) => {}
                Ok(false) => {
                    self.bounce(&iq, Cond::ServiceUnavailable).await;
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, "storage error checking account");
                    self.bounce(&iq, Cond::InternalServerError).await;
                    return;
                }
            }
            // The account's inbound rules (privacy lists, blocking) see IQs the server answers
            // on its behalf too, so a blocked contact cannot read its vCard or PEP nodes.
            if self.hooks(&iq, Hook::Account).await == Outcome::Handled {
                return;
            }
        }
        let Some(payload) = iq.children().next() else {
            self.bounce(&iq, Cond::BadRequest).await;
            return;
        };
        let module = self
            .iq_table
            .get(payload.ns().as_str())
            .and_then(|names| names.get(payload.name()))
            .map(|&i| self.modules[i].clone());
        let Some(module) = module else {
            // RFC 6120 §8.4: an unhandled get/set gets service-unavailable.
            self.bounce(&iq, Cond::ServiceUnavailable).await;
            return;
        };
        let from = match iq.jid_attribute("from") {
            Some(f) => f,
            None => return,
        };
        let response = module
            .handle_iq(
                self,
                IqRequest {
                    from: &from,
                    to: &to,
                    kind,
                    payload,
                    stanza: &iq,
                },
            )
            .await;
        match response {
            Ok(payload) => {
                let mut result = Element::builder("iq", ns::CLIENT)
                    .with_attr("type", "result")
                    .with_attr("from", to.as_str())
                    .with_attr("to", from.as_str())
                    .with_attr("id", iq.attribute("id").unwrap_or_default())
                    .build();
                if let Some(p) = payload {
                    result.append_child(p);
                }
                Box::pin(self.route(result)).await;
            }
            Err(e) => self.bounce_with(&iq, e).await,
        }
    }

    /// Runs the modules registered for `hook` until one handles the stanza.
    pub async fn run_hooks(&self, stanza: &Element, hook: Hook, ctx: HookContext<'_>) -> Outcome {
        let Some(list) = self.hook_table.get(&hook) else {
            return Outcome::Pass;
        };
        for m in list {
            match m.on_stanza(self, stanza, hook, ctx).await {
                Outcome::Pass => {}
                Outcome::Consumed if hook == Hook::Delivery => return Outcome::Consumed,
                Outcome::Handled | Outcome::Consumed => return Outcome::Handled,
            }
        }
        Outcome::Pass
    }

    /// Runs the modules registered for the editing point `hook` ([`Hook::Sent`],
    /// [`Hook::Accepted`]) until one handles the stanza; each sees the edits before it.
    pub async fn run_edit_hooks(
        &self,
        stanza: &mut Element,
        hook: Hook,
        ctx: HookContext<'_>,
    ) -> Outcome {
        let Some(list) = self.hook_table.get(&hook) else {
            return Outcome::Pass;
        };
        for m in list {
            if m.edit_stanza(self, stanza, hook, ctx).await == Outcome::Handled {
                return Outcome::Handled;
            }
        }
        Outcome::Pass
    }

    /// Edits a message accepted for an account ([`Hook::Accepted`]). `Some(original)` when a
    /// module may have edited it, so that an error bounced to the sender carries what the
    /// sender sent (not, say, the recipient's archive id); `Err(())` when a module took it.
    async fn accept(&self, msg: &mut Element) -> Result<Option<Element>, ()> {
        if !self.hook_table.contains_key(&Hook::Accepted) {
            return Ok(None);
        }
        let original = self.accepted_edits.then(|| msg.clone());
        match self
            .run_edit_hooks(msg, Hook::Accepted, HookContext::default())
            .await
        {
            Outcome::Handled | Outcome::Consumed => Err(()),
            Outcome::Pass => Ok(original),
        }
    }

    /// Tells the [`Hook::Delivered`] modules which sessions queued `msg`.
    async fn delivered(&self, msg: &Element, sessions: &[Jid]) {
        if self.hook_table.contains_key(&Hook::Delivered) {
            let ctx = HookContext {
                delivered: sessions,
                ..HookContext::default()
            };
            self.run_hooks(msg, Hook::Delivered, ctx).await;
        }
    }

    async fn hooks(&self, stanza: &Element, hook: Hook) -> Outcome {
        self.run_hooks(stanza, hook, HookContext::default()).await
    }

    /// Queues a stanza for one session after the [`Hook::Delivery`] filters. Returns whether
    /// it was queued (false: filtered out, slow consumer or gone).
    /// Takes an element or a shared one (`Arc`): the router passes one `Arc` to every
    /// resource a message goes to and to the [`Hook::Delivered`] modules, without copies.
    pub async fn deliver_to(
        &self,
        session: &SessionHandle,
        full: &Jid,
        stanza: impl Into<Arc<Element>>,
    ) -> bool {
        let stanza = stanza.into();
        if self.hook_table.contains_key(&Hook::Delivery) {
            let ctx = HookContext {
                session: Some(full),
                ..HookContext::default()
            };
            match self.run_hooks(&stanza, Hook::Delivery, ctx).await {
                Outcome::Pass => {}
                Outcome::Handled => return false,
                Outcome::Consumed => return true,
            }
        }
        session.deliver(stanza).is_ok()
    }

    /// Queues a stanza serialised once for many sessions ([`SharedStanza`]) for one of them,
    /// addressed to `full`, after the [`Hook::Delivery`] filters: like [`Self::deliver_to`].
    /// The filters see the unaddressed element and `full` as the session; one that keeps the
    /// stanza (returns [`Outcome::Consumed`] and holds it) must address its copy.
    pub async fn deliver_shared_to(
        &self,
        session: &SessionHandle,
        full: &Jid,
        stanza: &Arc<SharedStanza>,
    ) -> bool {
        if self.hook_table.contains_key(&Hook::Delivery) {
            let ctx = HookContext {
                session: Some(full),
                ..HookContext::default()
            };
            match self.run_hooks(stanza.element(), Hook::Delivery, ctx).await {
                Outcome::Pass => {}
                Outcome::Handled => return false,
                Outcome::Consumed => return true,
            }
        }
        session.deliver_shared(stanza.clone(), full.clone()).is_ok()
    }

    /// Routes a stanza sent by a local client: [`Hook::Outbound`] first, then the
    /// [`Hook::Sent`] edits, then [`Server::route`], side by side with the work the edits
    /// left in an [`AfterRoute`]; returns once both are done.
    pub async fn route_from_client(&self, mut stanza: Element) {
        if self.hooks(&stanza, Hook::Outbound).await == Outcome::Handled {
            return;
        }
        if !self.hook_table.contains_key(&Hook::Sent) {
            return self.route(stanza).await;
        }
        let after = AfterRoute::default();
        let ctx = HookContext {
            after_route: Some(&after),
            ..HookContext::default()
        };
        let outcome = self.run_edit_hooks(&mut stanza, Hook::Sent, ctx).await;
        let work = after.take();
        if outcome == Outcome::Handled {
            // Not routed: the work that was started still finishes before the next stanza.
            futures_util::future::join_all(work).await;
            return;
        }
        if work.is_empty() {
            return self.route(stanza).await;
        }
        // The work first: what it starts (a storage write) is queued before the routing's.
        tokio::join!(futures_util::future::join_all(work), self.route(stanza));
    }

    async fn account_exists(&self, jid: &Jid) -> Option<bool> {
        let node = jid.node()?;
        match self.storage.account_exists(jid.domain(), node).await {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::error!(error = %e, "storage error checking account");
                None
            }
        }
    }

    /// Routes again a stanza that was queued for a local session which ended before the
    /// client received it (or acknowledged it, XEP-0198 §4). Messages were already accepted
    /// for the account — checked, archived, given their ids — so they skip the
    /// [`Hook::Account`] and [`Hook::Accepted`] modules this time (otherwise the archive would
    /// hold them twice), and go to the resource that now holds their full JID, else to the
    /// account's other available resources, else to [`Hook::Undeliverable`] (offline
    /// storage), else back to the sender. A message to the bare JID may thus reach a resource
    /// that already had a copy (one of equal priority); it carries the same stanza id there,
    /// by which clients recognise it, and a duplicate is better than a loss. Other stanzas are
    /// routed as new.
    pub async fn reroute(&self, stanza: Element) {
        if stanza.name() != "message" {
            return self.route(stanza).await;
        }
        let Some(to) = stanza.jid_attribute("to") else {
            return;
        };
        if !self.config.is_local_host(to.domain()) || to.node().is_none() {
            return self.route(stanza).await;
        }
        let mtype = stanza.attribute("type").unwrap_or("normal");
        if mtype == "error" {
            return;
        }
        let bounce = matches!(mtype, "normal" | "chat");
        let stanza = Arc::new(stanza);
        if to.resource().is_some() {
            if let Some(session) = self.router.session(&to) {
                if self.deliver_to(&session, &to, Arc::clone(&stanza)).await {
                    return;
                }
            }
        }
        let bare = to.bare();
        let available: Vec<(SessionHandle, Jid)> = self.router.with_resources(&bare, |list| {
            let top = list
                .iter()
                .filter(|r| r.available && r.priority >= 0)
                .map(|r| r.priority)
                .max();
            list.iter()
                .filter(|r| r.available && Some(r.priority) == top)
                .map(|r| (r.handle.clone(), r.jid.clone()))
                .collect()
        });
        if !available.is_empty() {
            for (handle, full) in available {
                self.deliver_to(&handle, &full, Arc::clone(&stanza)).await;
            }
            return;
        }
        if self.hooks(&stanza, Hook::Undeliverable).await == Outcome::Handled {
            return;
        }
        if bounce {
            self.bounce(&stanza, Cond::ServiceUnavailable).await;
        }
    }

    async fn route_message(&self, msg: Element, to: Jid) {
        // 'static so that `msg` can be edited below; an unknown type matches no rule.
        let mtype = match msg.attribute("type") {
            None | Some("normal") => "normal",
            Some("chat") => "chat",
            Some("error") => "error",
            Some("groupchat") => "groupchat",
            Some("headline") => "headline",
            Some(_) => "unknown",
        };
        if to.node().is_none() {
            // To the server itself (RFC 6121 §8.5.1 for the domain): modules may take it.
            if self.hooks(&msg, Hook::Server).await == Outcome::Pass
                && !matches!(mtype, "error" | "headline" | "groupchat")
            {
                self.bounce(&msg, Cond::ServiceUnavailable).await;
            }
            return;
        }
        if to.resource().is_some() {
            if let Some(session) = self.router.session(&to) {
                let mut msg = msg;
                let Ok(original) = self.accept(&mut msg).await else {
                    return;
                };
                let msg = Arc::new(msg);
                let ok = self.deliver_to(&session, &to, Arc::clone(&msg)).await;
                let sessions = if ok { std::slice::from_ref(&to) } else { &[] };
                self.delivered(&msg, sessions).await;
                if !ok && mtype != "error" {
                    self.bounce(original.as_ref().unwrap_or(&msg), Cond::ServiceUnavailable)
                        .await;
                }
                return;
            }
            // RFC 6121 §8.5.3.2.1: no such resource.
            match mtype {
                "groupchat" => {
                    self.bounce(&msg, Cond::ServiceUnavailable).await;
                    return;
                }
                "error" => return,
                _ => {} // normal, chat, headline: treat as addressed to the bare JID.
            }
        }
        let bare = to.bare();
        // Skip the storage round trip when the user is online: a bound resource proves the
        // account exists (the fast path of DESIGN principle 2).
        let online = self.router.with_resources(&bare, |l| !l.is_empty());
        if !online && self.account_exists(&bare).await != Some(true) {
            // RFC 6121 §8.5.1: no such user.
            if matches!(mtype, "normal" | "chat") {
                self.bounce(&msg, Cond::ServiceUnavailable).await;
            }
            return;
        }
        if self.hooks(&msg, Hook::Account).await == Outcome::Handled {
            return;
        }
        if mtype == "groupchat" {
            // RFC 6121 §8.5.2.1.2
            self.bounce(&msg, Cond::ServiceUnavailable).await;
            return;
        }
        let mut msg = msg;
        let Ok(original) = self.accept(&mut msg).await else {
            return;
        };
        let msg = Arc::new(msg);
        let targets = self.router.with_resources(&bare, |list| {
            let eligible = list.iter().filter(|r| r.available && r.priority >= 0);
            if mtype == "headline" {
                // §8.5.2.1.3: every available resource with non-negative priority.
                eligible
                    .map(|r| (r.handle.clone(), r.jid.clone()))
                    .collect::<Vec<_>>()
            } else {
                // §8.5.2.1.1 (normal, chat), and errors: the most available resources, i.e. all
                // of those sharing the highest non-negative priority.
                let top = list
                    .iter()
                    .filter(|r| r.available && r.priority >= 0)
                    .map(|r| r.priority)
                    .max();
                match top {
                    Some(p) => eligible
                        .filter(|r| r.priority == p)
                        .map(|r| (r.handle.clone(), r.jid.clone()))
                        .collect(),
                    None => Vec::new(),
                }
            }
        });
        let mut delivered = Vec::new();
        for (handle, full) in targets {
            if self.deliver_to(&handle, &full, Arc::clone(&msg)).await {
                delivered.push(full);
            }
        }
        self.delivered(&msg, &delivered).await;
        if !delivered.is_empty() {
            return;
        }
        // §8.5.2.2: no available resource. Offline storage hooks in here.
        if self.hooks(&msg, Hook::Undeliverable).await == Outcome::Handled {
            return;
        }
        if matches!(mtype, "normal" | "chat") {
            self.bounce(original.as_ref().unwrap_or(&msg), Cond::ServiceUnavailable)
                .await;
        }
    }

    async fn route_presence(&self, pres: Element, to: Jid) {
        if to.node().is_none() {
            self.hooks(&pres, Hook::Server).await;
            return;
        }
        if self.hooks(&pres, Hook::Account).await == Outcome::Handled {
            return;
        }
        if to.resource().is_some() {
            // Directed presence to a full JID (RFC 6121 §4.6): delivered if that session
            // exists, silently ignored otherwise (§8.5.3.2.2).
            if let Some(s) = self.router.session(&to) {
                self.deliver_to(&s, &to, pres).await;
            }
            return;
        }
        // To a bare JID: every available resource (RFC 6121 §8.5.2.1.1 for presence).
        let targets = self.router.with_resources(&to, |list| {
            list.iter()
                .filter(|r| r.available)
                .map(|r| (r.handle.clone(), r.jid.clone()))
                .collect::<Vec<_>>()
        });
        let pres = Arc::new(pres);
        for (handle, full) in targets {
            self.deliver_to(&handle, &full, Arc::clone(&pres)).await;
        }
    }

    /// Presence broadcast by a client (no `to`): record it in the session table and let the
    /// presence modules fan it out.
    pub async fn broadcast_presence(&self, from: &Jid, pres: Element) {
        let available = pres.attribute("type").is_none();
        let priority = pres
            .get_child("priority", ns::CLIENT)
            .and_then(|p| p.text().trim().parse::<i8>().ok())
            .unwrap_or(0);
        let mut initial = false;
        if available || pres.attribute("type") == Some("unavailable") {
            let was_available = self.router.set_presence(from, available, priority);
            initial = available && !was_available;
        }
        let ctx = HookContext {
            initial,
            ..HookContext::default()
        };
        self.run_hooks(&pres, Hook::Broadcast, ctx).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use async_trait::async_trait;
    use tokio::sync::Notify;

    use super::*;
    use crate::config::ResourceConflict;

    /// At [`Hook::Sent`], leaves work that waits for `release` and then counts itself done.
    struct Slow {
        release: Arc<Notify>,
        done: Arc<AtomicBool>,
    }

    #[async_trait]
    impl Module for Slow {
        fn name(&self) -> &'static str {
            "slow"
        }

        fn hooks(&self) -> Vec<Hook> {
            vec![Hook::Sent]
        }

        async fn edit_stanza(
            &self,
            _server: &Server,
            _stanza: &mut Element,
            _hook: Hook,
            ctx: HookContext<'_>,
        ) -> Outcome {
            let (release, done) = (self.release.clone(), self.done.clone());
            ctx.after_route
                .expect("route_from_client passes one")
                .push(async move {
                    release.notified().await;
                    done.store(true, Ordering::SeqCst);
                });
            Outcome::Pass
        }
    }

    #[tokio::test]
    async fn a_client_stanza_is_routed_while_its_after_route_work_runs_and_waited_for() {
        let storage = starling_storage::open("sqlite::memory:").await.unwrap();
        let release = Arc::new(Notify::new());
        let done = Arc::new(AtomicBool::new(false));
        let slow = Arc::new(Slow {
            release: release.clone(),
            done: done.clone(),
        });
        let server = Server::new(Arc::new(Config::default()), storage, vec![slow]).unwrap();
        let bob = Jid::parse("bob@localhost/pc").unwrap();
        let (handle, mut inbox) = SessionHandle::new(8);
        server
            .router()
            .bind(&bob, handle, ResourceConflict::KickOld, 10)
            .unwrap();
        let msg: Element = "<message xmlns='jabber:client' from='alice@localhost/phone' \
            to='bob@localhost/pc' type='chat'><body>hi</body></message>"
            .parse()
            .unwrap();
        let routing = tokio::spawn({
            let server = server.clone();
            async move { server.route_from_client(msg).await }
        });
        // Delivered while the work still waits...
        let got = tokio::time::timeout(Duration::from_secs(10), inbox.rx.recv())
            .await
            .expect("delivered before the work finished")
            .unwrap();
        assert!(matches!(got, crate::Outbound::Stanza(s) if s.name() == "message"));
        // ...and route_from_client returns only once the work is done.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!routing.is_finished());
        assert!(!done.load(Ordering::SeqCst));
        release.notify_one();
        tokio::time::timeout(Duration::from_secs(10), routing)
            .await
            .unwrap()
            .unwrap();
        assert!(done.load(Ordering::SeqCst));
    }
}
