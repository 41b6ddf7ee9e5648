//! One spare `Vec` per thread for buffers a stream uses only in bursts (the framer's element
//! stack, the stream's output buffer): a stream gives its buffer up when it is empty, so an
//! idle stream holds none, and the next stream on the thread that needs one takes it back,
//! so a busy stream allocates nothing per stanza.

use std::cell::Cell;
use std::thread::LocalKey;

/// A thread's spare: declare with
/// `thread_local! { static S: Cell<Vec<T>> = const { Cell::new(Vec::new()) }; }`.
pub type Spare<T> = LocalKey<Cell<Vec<T>>>;

/// The thread's spare (empty, with whatever capacity it had), or an unallocated `Vec`.
pub fn take<T>(spare: &'static Spare<T>) -> Vec<T> {
    spare.with(Cell::take)
}

/// [`give`], for a buffer of at most `max_capacity` elements; a larger one is dropped, so a
/// burst does not leave the thread holding its high-water mark.
pub fn give_up_to<T>(spare: &'static Spare<T>, buf: Vec<T>, max_capacity: usize) {
    if buf.capacity() <= max_capacity {
        give(spare, buf);
    }
}

/// Offers `buf`, cleared, as the thread's spare; it is dropped if the thread already has one.
pub fn give<T>(spare: &'static Spare<T>, mut buf: Vec<T>) {
    if buf.capacity() == 0 {
        return;
    }
    buf.clear();
    spare.with(|slot| {
        let kept = slot.take();
        slot.set(if kept.capacity() > 0 { kept } else { buf });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static S: Cell<Vec<u32>> = const { Cell::new(Vec::new()) };
    }

    #[test]
    fn the_first_buffer_offered_is_kept_cleared() {
        assert_eq!(take(&S).capacity(), 0, "none yet");
        let a = Vec::with_capacity(16);
        let mut b = Vec::with_capacity(64);
        b.push(1);
        give(&S, b);
        give(&S, a);
        let got = take(&S);
        assert!(got.capacity() >= 64, "the first one offered stays");
        assert!(got.is_empty(), "cleared");
        assert_eq!(take(&S).capacity(), 0, "taken");
    }

    #[test]
    fn an_oversized_buffer_is_not_kept() {
        give_up_to(&S, Vec::with_capacity(1000), 100);
        assert_eq!(take(&S).capacity(), 0, "over the bound: dropped");
        give_up_to(&S, Vec::with_capacity(100), 100);
        assert!(take(&S).capacity() >= 100, "at the bound: kept");
    }
}
