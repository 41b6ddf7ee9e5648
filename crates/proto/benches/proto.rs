//! Micro-benchmarks of the protocol hot path (issue 7, item 4): the XML reader (framer), the
//! writer, and JID preparation. `cargo bench -p starling-proto`; not run by the tests (CI
//! only compiles them, through clippy --all-targets). Wall time on a shared machine is
//! noisy: for instruction counts run the bench binary under
//! `valgrind --tool=callgrind ... --bench --profile-time 5 NAME`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use minidom::Element;
use starling_proto::framer::{Framer, Limits, StreamEvent};
use starling_proto::jid::{self, Jid};
use starling_proto::writer;

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0' xml:lang='en'>";

/// A chat message as `starling bench chat` sends it, and one as the server delivers it
/// (from, id, a stanza-id and a chat state).
const CHAT: &str =
    "<message type='chat' to='bench1@localhost/bench-1'><body>12345 67890</body></message>";
const DELIVERED: &str = "<message xmlns='jabber:client' type='chat' to='bench1@localhost/bench-1' \
    from='bench0@localhost/bench-0' id='a8f3e2c1'><body>Hello there, how are you? &lt;3</body>\
    <active xmlns='http://jabber.org/protocol/chatstates'/>\
    <stanza-id xmlns='urn:xmpp:sid:0' id='01HZX3' by='bench1@localhost'/></message>";

/// Stanzas per measured batch.
const BATCH: usize = 100;

fn stream_of(stanza: &str) -> Vec<u8> {
    let mut s = String::new();
    for _ in 0..BATCH {
        s.push_str(stanza);
    }
    s.into_bytes()
}

/// Feeds a fresh framer the header, then `body` in 4 KiB reads, and counts the stanzas.
fn read_all(body: &[u8]) -> usize {
    let mut f = Framer::new(Limits::default());
    f.feed(HEADER.as_bytes());
    assert!(matches!(f.next_event(), Ok(Some(StreamEvent::Open(_)))));
    let mut n = 0;
    for chunk in body.chunks(4096) {
        f.feed(chunk);
        while let Some(ev) = f.next_event().expect("well-formed") {
            if let StreamEvent::Stanza(el) = ev {
                black_box(el);
                n += 1;
            }
        }
    }
    n
}

fn reader(c: &mut Criterion) {
    let mut g = c.benchmark_group("reader");
    for (name, stanza) in [("chat", CHAT), ("delivered", DELIVERED)] {
        let body = stream_of(stanza);
        g.throughput(Throughput::Elements(BATCH as u64));
        g.bench_function(name, |b| {
            b.iter(|| assert_eq!(read_all(black_box(&body)), BATCH))
        });
    }
    g.finish();
}

fn parsed(s: &str) -> Element {
    let body = format!("{HEADER}{s}");
    let mut f = Framer::new(Limits::default());
    f.feed(body.as_bytes());
    loop {
        if let Some(StreamEvent::Stanza(el)) = f.next_event().unwrap() {
            return el;
        }
    }
}

fn writer(c: &mut Criterion) {
    let mut g = c.benchmark_group("writer");
    g.throughput(Throughput::Elements(1));
    for (name, stanza) in [("chat", CHAT), ("delivered", DELIVERED)] {
        let el = parsed(stanza);
        let mut out = Vec::with_capacity(1024);
        g.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                writer::write_element(black_box(&el), &mut out);
                black_box(out.len())
            })
        });
    }
    g.finish();
}

fn jids(c: &mut Criterion) {
    let mut g = c.benchmark_group("jid");
    g.throughput(Throughput::Elements(1));
    for (name, s) in [
        ("full_ascii", "bench123@localhost/bench-123"),
        ("bare_ascii", "bench123@localhost"),
        ("full_mixed_case", "Juliet.Capulet@Example.COM/Balcony"),
        (
            "full_unicode",
            "\u{17E}lu\u{165}ou\u{10D}k\u{FD}@k\u{16F}\u{148}.example/\u{10D}aj",
        ),
    ] {
        g.bench_function(format!("parse_{name}"), |b| {
            b.iter(|| Jid::parse(black_box(s)).unwrap())
        });
    }
    g.bench_function("prep_localpart", |b| {
        b.iter(|| jid::prep_localpart(black_box("Bench123")).unwrap())
    });
    g.bench_function("prep_domain", |b| {
        b.iter(|| jid::prep_domain(black_box("Conference.Example.COM")).unwrap())
    });
    g.bench_function("prep_resource", |b| {
        b.iter(|| jid::prep_resource(black_box("bench-123")).unwrap())
    });
    let j = Jid::parse("bench123@localhost/bench-123").unwrap();
    g.bench_function("bare", |b| {
        b.iter_batched(|| j.clone(), |j| j.bare(), BatchSize::SmallInput)
    });
    g.finish();
}

criterion_group!(benches, reader, writer, jids);
criterion_main!(benches);
