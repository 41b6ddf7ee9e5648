//! `relay` and `relay-server`: the machine's limit, for comparison with `chat`.
//!
//! The relay knows nothing of XMPP. A connection's first line is `PAIR name`; when a second
//! connection sends the same line the two are paired: both get `OK` and a line feed, and
//! from then on bytes are copied both ways until either side closes. Unpaired connections and
//! first lines are bounded (count, 256 bytes, 10 s).
//!
//! The `relay` load mode drives it like `chat`: the same pairs, the same window and the same
//! message bytes (the `<message/>` chat's sender serialises, with a line feed after it). It
//! does not pay chat's per-message XML costs on the load generator's side: the sender fills
//! the body into bytes serialised once, the receiver finds the body by its tags, and the
//! connections are plain TCP. The figure is what the loopback and one load generator can
//! move at the least cost per message: the ceiling for any server.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use starling_client::chat_message;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use starling_proto::framer::{Framer, Limits, StreamEvent};

use super::chat::{check_pairs, collect, parse_body, ChatReport, PairState, SeqTally};
use super::report::micros;
use super::{BenchOptions, CONNECT_TIMEOUT, DRAIN};

/// Longest first line.
const MAX_LINE: usize = 256;
/// The stream the `xml` receiver's reader is opened with.
const STREAM_HEADER: &str = "<stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";
/// How long a connection may take to send its first line.
const LINE_TIMEOUT: Duration = Duration::from_secs(10);

/// The byte relay.
pub struct RelayServer {
    listener: TcpListener,
    max_connections: usize,
}

impl RelayServer {
    /// Listens on `addr` (loopback only), with at most `max_connections` at once.
    pub async fn bind(addr: SocketAddr, max_connections: usize) -> Result<RelayServer, String> {
        if !addr.ip().is_loopback() {
            return Err(format!(
                "--listen {addr}: the relay only listens on loopback"
            ));
        }
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        Ok(RelayServer {
            listener,
            max_connections: max_connections.max(2),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Relays until `stop` completes; returns how many pairs were made.
    pub async fn run_until(
        self,
        stop: impl Future<Output = Result<(), String>>,
    ) -> Result<u64, String> {
        let slots = Arc::new(Semaphore::new(self.max_connections));
        let waiting: Arc<Mutex<HashMap<String, TcpStream>>> = Arc::default();
        let pairs = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        tokio::pin!(stop);
        loop {
            let (conn, _) = tokio::select! {
                r = &mut stop => { r?; break; }
                r = self.listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("relay: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                // Over the cap: refused by closing.
                continue;
            };
            let waiting = waiting.clone();
            let pairs = pairs.clone();
            tasks.spawn(async move {
                let _slot = slot;
                let mut conn = conn;
                let _ = conn.set_nodelay(true);
                let Ok(Ok(line)) = tokio::time::timeout(LINE_TIMEOUT, first_line(&mut conn)).await
                else {
                    return;
                };
                // Look up and register under one lock: two halves arriving together must not
                // both find the slot empty (the second would replace the first and wait
                // forever).
                let mut peer = {
                    let mut waiting = waiting.lock().await;
                    match waiting.remove(&line) {
                        Some(peer) => peer,
                        None => {
                            waiting.insert(line, conn);
                            return;
                        }
                    }
                };
                pairs.fetch_add(1, Ordering::Relaxed);
                if peer.write_all(b"OK\n").await.is_err() || conn.write_all(b"OK\n").await.is_err()
                {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut peer, &mut conn).await;
            });
            // Reap finished relays so the set does not grow.
            while tasks.try_join_next().is_some() {}
        }
        tasks.abort_all();
        Ok(pairs.load(Ordering::Relaxed))
    }
}

/// Reads up to and without the first line feed, one byte at a time so that nothing after it
/// is consumed.
async fn first_line(conn: &mut TcpStream) -> Result<String, String> {
    let mut line = Vec::new();
    loop {
        let b = conn.read_u8().await.map_err(|e| e.to_string())?;
        if b == b'\n' {
            break;
        }
        if line.len() >= MAX_LINE {
            return Err("first line too long".into());
        }
        line.push(b);
    }
    String::from_utf8(line).map_err(|e| e.to_string())
}

/// Starts a relay on `addr` in this process (for tests); it stops when the runtime does.
pub async fn relay_server(addr: SocketAddr) -> Result<SocketAddr, String> {
    let server = RelayServer::bind(addr, 10_000).await?;
    let bound = server.local_addr();
    tokio::spawn(server.run_until(std::future::pending()));
    Ok(bound)
}

/// Connects to the relay as one side of pair `name` and waits until it is paired.
async fn connect(server: SocketAddr, name: &str) -> Result<TcpStream, String> {
    let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(server))
        .await
        .map_err(|_| format!("{server}: connect timed out"))?
        .map_err(|e| format!("{server}: {e}"))?;
    let _ = conn.set_nodelay(true);
    conn.write_all(format!("PAIR {name}\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    Ok(conn)
}

async fn expect_ok(conn: &mut TcpStream) -> Result<(), String> {
    let mut ok = [0u8; 3];
    tokio::time::timeout(CONNECT_TIMEOUT, conn.read_exact(&mut ok))
        .await
        .map_err(|_| "the relay did not pair us".to_owned())?
        .map_err(|e| e.to_string())?;
    if &ok != b"OK\n" {
        return Err("the relay answered something else than OK".into());
    }
    Ok(())
}

/// `chat` through the byte relay at `opts.server`. With `xml`, the load generator does chat's
/// per-message XML work too: it builds and serialises each message as an element and parses
/// each received line with the client's XML reader, so that only the server differs from
/// `chat`; without, it copies bytes (the machine's limit).
pub async fn relay(
    opts: &BenchOptions,
    pairs: usize,
    window: u64,
    max_messages: u64,
    xml: bool,
) -> Result<ChatReport, String> {
    check_pairs(opts, pairs, window, max_messages)?;
    let mut conns = Vec::with_capacity(pairs);
    for p in 0..pairs {
        let name = opts.localpart(2 * p);
        let sender = connect(opts.server, &name).await?;
        let receiver = connect(opts.server, &name).await?;
        conns.push((sender, receiver));
    }
    for (s, r) in &mut conns {
        expect_ok(s).await?;
        expect_ok(r).await?;
    }
    let base = Instant::now();
    let deadline = base + opts.duration;
    let mut senders = JoinSet::new();
    let mut receivers = JoinSet::new();
    for (p, (sender, receiver)) in conns.into_iter().enumerate() {
        let state = Arc::new(PairState::default());
        // The full JID chat's sender addresses (the receiver's bound resource).
        let to = format!("{}/bench-{}", opts.account(2 * p + 1), 2 * p + 1);
        let pace = Pace {
            base,
            deadline,
            window,
            max_messages,
            xml,
        };
        senders.spawn(send_loop(sender, to, state.clone(), pace));
        receivers.spawn(receive_loop(receiver, state, base, deadline + DRAIN, xml));
    }
    collect(
        ("relay", "connection"),
        senders,
        receivers,
        (pairs, window),
        base,
    )
    .await
}

/// How a relay sender sends.
#[derive(Clone, Copy)]
struct Pace {
    /// Timestamps are microseconds since `base`.
    base: Instant,
    deadline: Instant,
    window: u64,
    max_messages: u64,
    /// Build and serialise an element per message, as chat's sender does.
    xml: bool,
}

async fn send_loop(
    mut conn: TcpStream,
    to: String,
    state: Arc<PairState>,
    pace: Pace,
) -> Result<u64, (u64, String)> {
    let Pace {
        base,
        deadline,
        window,
        max_messages,
        xml,
    } = pace;
    let (head, tail) = template(&to);
    let mut seq = 0u64;
    let mut buf = Vec::new();
    let mut outcome = Ok(());
    while seq < max_messages && Instant::now() < deadline {
        let room = state.room_for(seq, window, max_messages);
        if room > 0 {
            buf.clear();
            for _ in 0..room {
                let body = format!("{seq} {}", micros(base.elapsed()));
                if xml {
                    starling_proto::writer::write_element(&chat_message(&to, &body), &mut buf);
                    buf.push(b'\n');
                } else {
                    buf.extend_from_slice(&head);
                    buf.extend_from_slice(body.as_bytes());
                    buf.extend_from_slice(&tail);
                }
                seq += 1;
            }
            state.sent.store(seq, Ordering::Release);
            if let Err(e) = conn.write_all(&buf).await {
                outcome = Err(e.to_string());
                break;
            }
            continue;
        }
        tokio::select! {
            _ = state.room.notified() => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
    state.finish(seq);
    let _ = conn.shutdown().await;
    outcome.map(|()| seq).map_err(|e| (seq, e))
}

async fn receive_loop(
    conn: TcpStream,
    state: Arc<PairState>,
    base: Instant,
    drain_deadline: Instant,
    xml: bool,
) -> (SeqTally, Option<String>) {
    let mut t = SeqTally::new(base);
    let mut framer = xml.then(|| {
        let mut f = Framer::new(Limits::default());
        f.feed(STREAM_HEADER.as_bytes());
        let _ = f.next_event();
        f
    });
    let mut reader = BufReader::with_capacity(64 * 1024, conn);
    let mut line = Vec::new();
    let mut problem = None;
    loop {
        if state.all_received(t.distinct) {
            break;
        }
        // read_until keeps what it read when the select cancels it: `line` is cleared only
        // once a whole line was handled.
        let n = tokio::select! {
            r = reader.read_until(b'\n', &mut line) => match r {
                Ok(n) => n,
                Err(e) => {
                    problem = Some(e.to_string());
                    break;
                }
            },
            _ = state.finished.notified() => continue,
            _ = tokio::time::sleep_until(drain_deadline) => break,
        };
        if n == 0 {
            break;
        }
        let now = micros(base.elapsed());
        let parsed = match &mut framer {
            Some(f) => parsed_body(f, &line),
            None => body_of(&line).and_then(parse_body),
        };
        line.clear();
        let Some((seq, sent_at)) = parsed else {
            t.errors += 1;
            continue;
        };
        if t.observe(seq, sent_at, now) {
            state.received.store(t.distinct, Ordering::Release);
            state.room.notify_one();
        }
    }
    (t, problem)
}

/// The bytes chat's sender writes for a message to `to`, split around the body text (and
/// with a line feed after the tail): built once by the same writer, so the relay's messages
/// have chat's bytes without building an element per message.
fn template(to: &str) -> (Vec<u8>, Vec<u8>) {
    const MARK: &str = "BENCHBODY";
    let mut bytes = Vec::new();
    starling_proto::writer::write_element(&chat_message(to, MARK), &mut bytes);
    let text = String::from_utf8(bytes).expect("the writer emits UTF-8");
    let (head, tail) = text
        .split_once(MARK)
        .expect("the body text appears in the serialised message");
    (head.as_bytes().to_vec(), format!("{tail}\n").into_bytes())
}

/// What chat's client does with a received message: the XML reader makes an element of it,
/// and the body is taken from the element.
fn parsed_body(framer: &mut Framer, line: &[u8]) -> Option<(u64, u64)> {
    framer.feed(line);
    let mut found = None;
    while let Ok(Some(ev)) = framer.next_event() {
        if let StreamEvent::Stanza(el) = ev {
            found = el
                .get_child("body", starling_proto::ns::CLIENT)
                .and_then(|b| parse_body(&b.text()));
        }
    }
    found
}

/// The text between `<body>` and `</body>` (bench bodies need no unescaping).
fn body_of(line: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(line).ok()?;
    let start = s.find("<body>")? + "<body>".len();
    let end = start + s[start..].find("</body>")?;
    Some(&s[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_messages_have_chat_bytes() {
        let to = "bench1@localhost/bench-1";
        let (head, tail) = template(to);
        let mut ours = head.clone();
        ours.extend_from_slice(b"17 123456");
        ours.extend_from_slice(&tail);
        let mut chat = Vec::new();
        starling_proto::writer::write_element(&chat_message(to, "17 123456"), &mut chat);
        chat.push(b'\n');
        assert_eq!(ours, chat);
        assert_eq!(body_of(&ours), Some("17 123456"));
        assert_eq!(body_of(b"<message/>\n"), None);
        let mut f = Framer::new(Limits::default());
        f.feed(STREAM_HEADER.as_bytes());
        assert!(matches!(f.next_event(), Ok(Some(StreamEvent::Open(_)))));
        assert_eq!(parsed_body(&mut f, &ours), Some((17, 123456)));
        assert_eq!(parsed_body(&mut f, &ours), Some((17, 123456)));
    }
}
