//! An idle stream gives back the parser's scratch memory: measured with a counting global
//! allocator (this test binary's own), on a single-threaded runtime.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use starling_proto::framer::{Limits, StreamEvent};
use starling_stream::XmlStream;
use tokio::io::AsyncWriteExt;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[tokio::test]
async fn an_idle_stream_releases_the_parsers_scratch_buffers() {
    let (ours, mut theirs) = tokio::io::duplex(64 * 1024);
    let mut stream = XmlStream::new(ours, Limits::default());
    let input = "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>\
                 <message to='juliet@capulet.lit' id='m1'><body>wherefore art thou &amp; why</body></message>";
    theirs.write_all(input.as_bytes()).await.unwrap();
    assert!(matches!(
        stream.next_event().await,
        Ok(StreamEvent::Open(_))
    ));
    let Ok(StreamEvent::Stanza(message)) = stream.next_event().await else {
        panic!("no message");
    };
    assert_eq!(message.attr("id"), Some("m1"));
    drop(message);
    // The timer's first use allocates; do it before measuring.
    tokio::time::sleep(Duration::from_millis(1)).await;

    let busy = LIVE.load(Ordering::Relaxed);
    // Nothing more comes: the stream waits in a read, and gives its scratch memory back.
    let waited = tokio::time::timeout(Duration::from_millis(20), stream.next_event()).await;
    assert!(waited.is_err(), "no event was expected");
    let idle = LIVE.load(Ordering::Relaxed);
    assert!(
        busy - idle >= 8 * 1024,
        "waiting released only {} bytes of scratch memory (rxml keeps 8 KiB per token buffer)",
        busy - idle
    );

    // And it still parses what comes next, from the middle of the stream.
    theirs
        .write_all(b"<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await
        .unwrap();
    let Ok(StreamEvent::Stanza(iq)) = stream.next_event().await else {
        panic!("no iq after the idle time");
    };
    assert_eq!(iq.attr("id"), Some("p1"));
}
