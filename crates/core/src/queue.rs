//! A bounded many-to-one queue that holds no memory while it is empty: each session's outbound
//! queue (what the router and modules deliver, and the session task writes).
//!
//! Why not tokio's mpsc: it allocates its first block of 32 slots when the channel is made
//! and keeps it for the channel's life, about 1 KiB per session even when nothing is ever
//! queued, and most sessions are idle most of the time (issue 7: at most 10 KiB per idle
//! session). Here the items live in a `VecDeque` that starts unallocated, grows with a burst,
//! and is freed when the receiver takes the last item. One mutex guards the items, the
//! receiver's waker and the counts; it is held only for a push or a pop, never across an
//! await.
//!
//! Semantics follow tokio's bounded mpsc where the server relies on them:
//! - [`Sender::try_send`] never waits: [`TrySendError::Full`] at the capacity,
//!   [`TrySendError::Closed`] once the receiver closed or is gone.
//! - [`Receiver::recv`] returns the items in order, then `None` once every sender is gone or
//!   the receiver closed the queue and took what was left.
//! - [`Receiver::close`] refuses new items but keeps the queued ones for `try_recv`.
//! - Dropping the receiver drops what is still queued.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Poll, Waker};

use parking_lot::Mutex;

/// Why [`Sender::try_send`] did not queue the item (given back).
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The queue holds its capacity.
    Full(T),
    /// The receiver closed the queue or is gone.
    Closed(T),
}

/// Why [`Receiver::try_recv`] returned nothing.
#[derive(Debug, PartialEq, Eq)]
pub enum TryRecvError {
    /// Nothing is queued now.
    Empty,
    /// Nothing is queued and nothing will be: every sender is gone, or the queue was closed.
    Disconnected,
}

struct State<T> {
    items: VecDeque<T>,
    /// The receiver closed the queue or was dropped.
    closed: bool,
    senders: usize,
    /// The receiver waiting in `recv`, woken by the next send.
    waker: Option<Waker>,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    capacity: usize,
}

/// The sending half; clone it for each producer.
pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

/// The receiving half.
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

/// A queue of at most `capacity` items (at least 1).
pub fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            closed: false,
            senders: 1,
            waker: None,
        }),
        capacity: capacity.max(1),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

impl<T> Sender<T> {
    /// Queues `item` now, or gives it back.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let mut state = self.shared.state.lock();
        if state.closed {
            return Err(TrySendError::Closed(item));
        }
        if state.items.len() >= self.shared.capacity {
            return Err(TrySendError::Full(item));
        }
        state.items.push_back(item);
        let waker = state.waker.take();
        drop(state);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Free slots: the capacity less what is queued (as tokio's `Sender::capacity`, also
    /// once the queue is closed; [`Sender::is_closed`] tells that).
    pub fn capacity(&self) -> usize {
        let queued = self.shared.state.lock().items.len();
        self.shared.capacity.saturating_sub(queued)
    }

    /// Whether the receiver closed the queue or is gone.
    pub fn is_closed(&self) -> bool {
        self.shared.state.lock().closed
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.state.lock().senders += 1;
        Sender {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut state = self.shared.state.lock();
        state.senders -= 1;
        let waker = if state.senders == 0 {
            state.waker.take()
        } else {
            None
        };
        drop(state);
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

impl<T> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}

impl<T> State<T> {
    /// The oldest item; frees the storage when that was the last one.
    fn pop(&mut self) -> Option<T> {
        let item = self.items.pop_front()?;
        if self.items.is_empty() {
            self.items = VecDeque::new();
        }
        Some(item)
    }

    /// Nothing queued, and nothing can be queued any more.
    fn finished(&self) -> bool {
        self.items.is_empty() && (self.senders == 0 || self.closed)
    }
}

impl<T> Receiver<T> {
    /// The next item; `None` once every sender is gone or the queue was closed, and
    /// everything queued was taken. Cancel-safe: an abandoned call takes nothing.
    pub async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| {
            let mut state = self.shared.state.lock();
            if let Some(item) = state.pop() {
                return Poll::Ready(Some(item));
            }
            if state.finished() {
                return Poll::Ready(None);
            }
            match &mut state.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }

    /// The next item if one is queued now.
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        let mut state = self.shared.state.lock();
        match state.pop() {
            Some(item) => Ok(item),
            None if state.finished() => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }

    /// Refuses new items; what is queued stays for [`Receiver::try_recv`].
    pub fn close(&mut self) {
        self.shared.state.lock().closed = true;
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = self.shared.state.lock();
        state.closed = true;
        let items = std::mem::take(&mut state.items);
        drop(state);
        // Dropped outside the lock: they may be large.
        drop(items);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn storage<T>(rx: &Receiver<T>) -> usize {
        rx.shared.state.lock().items.capacity()
    }

    #[test]
    fn an_empty_queue_holds_no_storage() {
        let (tx, mut rx) = channel::<u64>(8);
        assert_eq!(storage(&rx), 0, "nothing allocated for items at first");
        for i in 0..5 {
            tx.try_send(i).unwrap();
        }
        assert!(storage(&rx) >= 5);
        for i in 0..5 {
            assert_eq!(rx.try_recv(), Ok(i), "in order");
        }
        assert_eq!(storage(&rx), 0, "freed with the last item");
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    }

    #[test]
    fn the_capacity_bounds_the_queue() {
        let (tx, mut rx) = channel::<u8>(2);
        assert_eq!(tx.capacity(), 2);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert_eq!(tx.capacity(), 0);
        assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
        assert_eq!(rx.try_recv(), Ok(1));
        tx.try_send(3).unwrap();
        assert_eq!(rx.shared.state.lock().items.len(), 2);
        // A capacity of 0 is taken as 1.
        let (tx0, _rx0) = channel::<u8>(0);
        tx0.try_send(1).unwrap();
        assert_eq!(tx0.try_send(2), Err(TrySendError::Full(2)));
    }

    #[test]
    fn close_refuses_new_items_and_keeps_the_queued_ones() {
        let (tx, mut rx) = channel::<u8>(4);
        tx.try_send(1).unwrap();
        rx.close();
        assert!(tx.is_closed());
        assert_eq!(tx.capacity(), 3, "free slots, as before the close");
        assert_eq!(tx.try_send(2), Err(TrySendError::Closed(2)));
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    }

    #[test]
    fn a_dropped_receiver_closes_the_queue_and_drops_what_it_held() {
        let item = Arc::new(());
        let (tx, rx) = channel::<Arc<()>>(4);
        tx.try_send(item.clone()).unwrap();
        drop(rx);
        assert_eq!(Arc::strong_count(&item), 1, "the queued item was dropped");
        assert!(tx.is_closed());
        assert!(matches!(tx.try_send(item), Err(TrySendError::Closed(_))));
    }

    #[tokio::test]
    async fn recv_ends_when_every_sender_is_gone_after_the_queued_items() {
        let (tx, mut rx) = channel::<u8>(4);
        let tx2 = tx.clone();
        tx.try_send(1).unwrap();
        drop(tx);
        tx2.try_send(2).unwrap();
        assert_eq!(rx.recv().await, Some(1));
        let waiter = tokio::spawn(async move {
            let a = rx.recv().await;
            let b = rx.recv().await;
            (a, b)
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(tx2);
        assert_eq!(waiter.await.unwrap(), (Some(2), None));
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_a_send() {
        let (tx, mut rx) = channel::<u8>(4);
        let waiter = tokio::spawn(async move { rx.recv().await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished());
        tx.try_send(7).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken");
        assert_eq!(got.unwrap(), Some(7));
    }

    /// Many producers on other threads against one consumer: every item arrives once, each
    /// producer's in order, and no wake-up is lost (the run would hang otherwise; bounded by
    /// the timeout).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_producers_lose_nothing() {
        const PRODUCERS: u64 = 4;
        const EACH: u64 = 20_000;
        let (tx, mut rx) = channel::<(u64, u64)>(64);
        let mut handles = Vec::new();
        for p in 0..PRODUCERS {
            let tx = tx.clone();
            handles.push(tokio::spawn(async move {
                let mut i = 0;
                while i < EACH {
                    match tx.try_send((p, i)) {
                        Ok(()) => i += 1,
                        Err(TrySendError::Full(_)) => tokio::task::yield_now().await,
                        Err(TrySendError::Closed(_)) => panic!("closed"),
                    }
                }
            }));
        }
        drop(tx);
        let consumer = async {
            let mut next = [0u64; PRODUCERS as usize];
            let mut n = 0;
            while let Some((p, i)) = rx.recv().await {
                assert_eq!(i, next[p as usize], "producer {p} out of order");
                next[p as usize] += 1;
                n += 1;
            }
            n
        };
        let n = tokio::time::timeout(Duration::from_secs(60), consumer)
            .await
            .expect("no lost wake-up");
        assert_eq!(n, PRODUCERS * EACH);
        for h in handles {
            h.await.unwrap();
        }
    }
}
