//! Outbound routing (RFC 6120 §10.4): one stream per (local domain, remote domain) pair,
//! opened on demand and re-used. Stanzas wait in a bounded queue while the stream is being
//! set up; when setup fails they bounce with `remote-server-not-found` (or
//! `remote-server-timeout` when it took longer than `connect_timeout_secs`). A stream idle
//! for `idle_timeout_secs` is closed and re-opened when needed. Queued stanzas stay in
//! `jabber:client` (so that a bounce can be delivered locally) and are moved to
//! `jabber:server` as they are written.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use minidom::Element;
use parking_lot::Mutex;
use starling_core::{RemoteRoute, Server};
use starling_proto::error::StanzaErrorCondition as Cond;
use starling_proto::framer::StreamEvent;
use starling_proto::jid::Jid;
use starling_proto::{ns, writer};
use tokio::sync::mpsc;

use crate::connector::{self, ConnectError};
use crate::Ctx;
use starling_core::xml::rename_namespace;

type Key = (String, String);

/// The outbound streams, one per domain pair.
pub struct Pool {
    /// This pool, for the stream tasks it spawns.
    this: std::sync::Weak<Pool>,
    ctx: Arc<Ctx>,
    queues: Mutex<HashMap<Key, mpsc::Sender<Element>>>,
}

impl Pool {
    pub(crate) fn new(ctx: Arc<Ctx>) -> Arc<Pool> {
        Arc::new_cyclic(|this| Pool {
            this: this.clone(),
            ctx,
            queues: Mutex::new(HashMap::new()),
        })
    }

    /// How many outbound streams exist (connected or being set up).
    pub fn stream_count(&self) -> usize {
        self.queues.lock().len()
    }

    /// Forgets `key`'s queue if it is still `tx` (a newer stream may have replaced it).
    fn forget(&self, key: &Key, tx: &mpsc::Sender<Element>) {
        let mut q = self.queues.lock();
        if q.get(key).is_some_and(|cur| cur.same_channel(tx)) {
            q.remove(key);
        }
    }
}

#[async_trait]
impl RemoteRoute for Pool {
    async fn send(&self, server: &Server, stanza: Element, to: Jid) {
        let Some(from) = stanza.attr("from").and_then(|f| Jid::parse(f).ok()) else {
            tracing::warn!("stanza for a remote domain without 'from'; dropped");
            return;
        };
        if !(server.config().is_local_host(from.domain()) || server.is_served_domain(from.domain()))
        {
            // Only stanzas from our own domains (hosts, and domains served by a module such
            // as chat rooms) leave through our streams.
            server.bounce(&stanza, Cond::NotAllowed).await;
            return;
        }
        let key = (from.domain().to_owned(), to.domain().to_owned());
        let mut stanza = stanza;
        for _ in 0..2 {
            let tx = {
                let mut q = self.queues.lock();
                match q.get(&key) {
                    Some(tx) if !tx.is_closed() => tx.clone(),
                    _ => {
                        let Some(server) = server.arc() else { return };
                        let Some(pool) = self.this.upgrade() else {
                            return;
                        };
                        let (tx, rx) = mpsc::channel(self.ctx.config.queue_size);
                        q.insert(key.clone(), tx.clone());
                        tokio::spawn(run_stream(
                            self.ctx.clone(),
                            pool,
                            server,
                            key.clone(),
                            tx.clone(),
                            rx,
                        ));
                        tx
                    }
                }
            };
            match tx.try_send(stanza) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(s)) => {
                    tracing::warn!(local = %key.0, remote = %key.1, limit = self.ctx.config.queue_size, "s2s queue full; bouncing");
                    server.bounce(&s, Cond::ResourceConstraint).await;
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(s)) => {
                    self.forget(&key, &tx);
                    stanza = s;
                }
            }
        }
        server.bounce(&stanza, Cond::RemoteServerNotFound).await;
    }
}

/// One outbound stream's life: connect, drain the queue, close when idle.
async fn run_stream(
    ctx: Arc<Ctx>,
    pool: Arc<Pool>,
    server: Arc<Server>,
    key: Key,
    tx: mpsc::Sender<Element>,
    mut rx: mpsc::Receiver<Element>,
) {
    let (local, remote) = (&key.0, &key.1);
    let timeout = Duration::from_secs(ctx.config.connect_timeout_secs);
    let shutdown = server.shutdown_token().clone();
    let connected = tokio::select! {
        r = tokio::time::timeout(timeout, connector::connect(&ctx, local, remote)) => {
            r.unwrap_or(Err(ConnectError::Timeout))
        }
        _ = shutdown.cancelled() => Err(ConnectError::NotFound("shutting down".into())),
    };
    let mut stream = match connected {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%local, %remote, error = %e, "cannot reach remote server; bouncing queued stanzas");
            let condition = match e {
                ConnectError::Timeout => Cond::RemoteServerTimeout,
                _ => Cond::RemoteServerNotFound,
            };
            pool.forget(&key, &tx);
            drop(tx);
            rx.close();
            while let Some(stanza) = rx.recv().await {
                server.bounce(&stanza, condition.clone()).await;
            }
            return;
        }
    };
    let idle = Duration::from_secs(ctx.config.idle_timeout_secs);
    loop {
        tokio::select! {
            next = rx.recv() => {
                let Some(stanza) = next else { break };
                stream.queue(&rename_namespace(stanza, ns::CLIENT, ns::SERVER));
                // Write everything already waiting in one flush.
                while let Ok(more) = rx.try_recv() {
                    stream.queue(&rename_namespace(more, ns::CLIENT, ns::SERVER));
                }
                if let Err(e) = stream.flush().await {
                    tracing::info!(%local, %remote, error = %e, "outbound s2s stream failed");
                    break;
                }
            }
            ev = stream.next_event() => match ev {
                Ok(StreamEvent::Stanza(el)) if el.is("error", ns::STREAM) => {
                    tracing::info!(%local, %remote, error = ?el, "outbound s2s stream closed with an error");
                    break;
                }
                Ok(StreamEvent::Stanza(_)) => {
                    // Streams are one-way: the peer sends its stanzas on its own stream.
                }
                Ok(_) | Err(_) => {
                    tracing::info!(%local, %remote, "outbound s2s stream closed by peer");
                    break;
                }
            },
            _ = tokio::time::sleep(idle) => {
                tracing::info!(%local, %remote, "closing idle outbound s2s stream");
                break;
            }
            _ = shutdown.cancelled() => break,
        }
    }
    pool.forget(&key, &tx);
    drop(tx);
    rx.close();
    stream.queue_raw(writer::STREAM_CLOSE);
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.shutdown()).await;
    // Stanzas that arrived while closing get a new stream.
    while let Some(stanza) = rx.recv().await {
        if shutdown.is_cancelled() {
            server.bounce(&stanza, Cond::RemoteServerNotFound).await;
        } else {
            server.route(stanza).await;
        }
    }
}
