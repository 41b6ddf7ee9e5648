//! Micro-benchmark of routing (issue 7, item 4): a chat message from one local session to
//! another through [`Server::route`] (RFC 6121 §8.5 rules, the sharded session table, the
//! hooks of the enabled modules — none here) into the receiving session's bounded queue.
//! The clone of the stanza is measured too: a session hands the router a stanza it owns.
//! `cargo bench -p starling-core`; CI only compiles it.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use minidom::Element;
use starling_core::config::ResourceConflict;
use starling_core::session::{Outbound, SessionHandle};
use starling_core::{Config, Server};
use starling_proto::jid::Jid;

fn message(to: &str) -> Element {
    format!(
        "<message xmlns='jabber:client' type='chat' from='alice@localhost/r' to='{to}' id='m1'>\
         <body>12345 67890</body></message>"
    )
    .parse()
    .expect("a valid message")
}

fn route(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let storage = rt
        .block_on(starling_storage::open("sqlite::memory:"))
        .expect("in-memory storage");
    let server: Arc<Server> =
        Server::new(Arc::new(Config::default()), storage, Vec::new()).expect("a server");
    let bob = Jid::parse("bob@localhost/r").unwrap();
    let (handle, mut inbox) = SessionHandle::new(1024);
    server
        .router()
        .bind(&bob, handle, ResourceConflict::KickOld, 10)
        .expect("bound");
    server.router().set_presence(&bob, true, 0);
    // Other sessions in the table, so the lookup is not in an empty map.
    let mut others = Vec::new();
    for i in 0..1000 {
        let jid = Jid::parse(&format!("user{i}@localhost/r")).unwrap();
        let (h, inbox) = SessionHandle::new(16);
        server
            .router()
            .bind(&jid, h, ResourceConflict::KickOld, 10)
            .unwrap();
        others.push(inbox);
    }

    let mut g = c.benchmark_group("route");
    g.throughput(Throughput::Elements(1));
    for (name, to) in [
        ("to_full_jid", "bob@localhost/r"),
        ("to_bare_jid", "bob@localhost"),
    ] {
        let msg = message(to);
        g.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(server.route(msg.clone()));
                match inbox.rx.try_recv() {
                    Ok(Outbound::Stanza(el)) => black_box(el),
                    other => panic!("not delivered: {other:?}"),
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, route);
criterion_main!(benches);
