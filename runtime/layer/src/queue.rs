//! [`channel`]: a bounded queue from many senders to one receiver that holds
//! no memory while it is empty.
//!
//! Every open channel has one (its inbox), and so does every socket (its
//! outbound queue), so an idle socket, a hibernated one too, pays for two.
//! tokio's `mpsc` allocates a block of 32 slots when a channel is created
//! and keeps it (for an inbox, about 2.7 KiB with the channel's own state);
//! this queue allocates on the first value and gives the memory back once
//! drained. A std mutex guards it: every critical section is one push or
//! one pop, and nothing awaits while holding it.

use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::lock_unpoisoned;

/// Slots a drained queue keeps, so a connection that gets one event at a
/// time does not allocate for each; a burst's larger buffer is freed.
const KEPT_WHEN_EMPTY: usize = 4;

/// A queue holding at most `capacity` values (at least one).
pub fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            receiver_open: true,
            waker: None,
        }),
        senders: AtomicUsize::new(1),
        capacity: capacity.max(1),
    });
    (Sender(Arc::clone(&shared)), Receiver(shared))
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Counted outside the lock: the layer clones a sender for every
    /// member a group send reaches. Only the last sender's drop locks, to
    /// wake the receiver; the receiver reads the count under the lock, so
    /// it either sees zero or is woken by that drop.
    senders: AtomicUsize,
    capacity: usize,
}

struct State<T> {
    queue: VecDeque<T>,
    receiver_open: bool,
    /// The receiver waiting in `recv`.
    waker: Option<Waker>,
}

/// Why [`Sender::try_send`] gave the value back.
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The queue holds `capacity` values.
    Full(T),
    /// The receiver is gone.
    Closed(T),
}

/// The sending end; clone it for more senders.
pub struct Sender<T>(Arc<Shared<T>>);

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("capacity", &self.0.capacity)
            .finish_non_exhaustive()
    }
}

impl<T> Sender<T> {
    /// Queue `value` without waiting.
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        let waker = {
            let mut state = lock_unpoisoned(&self.0.state);
            if !state.receiver_open {
                return Err(TrySendError::Closed(value));
            }
            if state.queue.len() >= self.0.capacity {
                return Err(TrySendError::Full(value));
            }
            state.queue.push_back(value);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.0.senders.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(&self.0))
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if self.0.senders.fetch_sub(1, Ordering::AcqRel) > 1 {
            return;
        }
        // The last sender: a waiting receiver learns the queue has ended.
        let waker = lock_unpoisoned(&self.0.state).waker.take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The receiving end.
pub struct Receiver<T>(Arc<Shared<T>>);

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("queued", &self.len())
            .field("capacity", &self.0.capacity)
            .finish()
    }
}

/// What a look at the queue found.
enum Next<T> {
    Value(T),
    Empty,
    /// Empty, and every sender is gone.
    Ended,
}

impl<T> Receiver<T> {
    /// The next value, waiting for one; `None` once every sender is gone and
    /// the queue is drained.
    ///
    /// # Cancel safety
    /// Cancel safe: a value leaves the queue only when it is returned.
    pub async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        match self.next(Some(cx.waker())) {
            Next::Value(value) => Poll::Ready(Some(value)),
            Next::Ended => Poll::Ready(None),
            Next::Empty => Poll::Pending,
        }
    }

    /// The next value if one is queued now.
    pub fn try_recv(&mut self) -> Option<T> {
        match self.next(None) {
            Next::Value(value) => Some(value),
            Next::Empty | Next::Ended => None,
        }
    }

    /// Pop the front value; when there is none, remember `waker` (under the
    /// same lock a sender pushes under, so no value is missed).
    fn next(&mut self, waker: Option<&Waker>) -> Next<T> {
        let mut state = lock_unpoisoned(&self.0.state);
        if let Some(value) = state.queue.pop_front() {
            if state.queue.is_empty() && state.queue.capacity() > KEPT_WHEN_EMPTY {
                state.queue = VecDeque::new();
            }
            return Next::Value(value);
        }
        if self.0.senders.load(Ordering::Acquire) == 0 {
            return Next::Ended;
        }
        if let Some(waker) = waker {
            match &mut state.waker {
                Some(kept) if kept.will_wake(waker) => {}
                slot => *slot = Some(waker.clone()),
            }
        }
        Next::Empty
    }

    /// Values queued now.
    pub fn len(&self) -> usize {
        lock_unpoisoned(&self.0.state).queue.len()
    }

    /// Whether no value is queued now.
    pub fn is_empty(&self) -> bool {
        lock_unpoisoned(&self.0.state).queue.is_empty()
    }

    /// Most values the queue holds.
    pub fn capacity(&self) -> usize {
        self.0.capacity
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let dropped = {
            let mut state = lock_unpoisoned(&self.0.state);
            state.receiver_open = false;
            std::mem::take(&mut state.queue)
        };
        // Dropped outside the lock: a value's drop may do anything.
        drop(dropped);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_no_memory_until_the_first_value() {
        let (tx, rx) = channel::<u64>(100);
        assert_eq!(lock_unpoisoned(&rx.0.state).queue.capacity(), 0);
        assert_eq!(tx.try_send(1), Ok(()));
        assert!(lock_unpoisoned(&rx.0.state).queue.capacity() > 0);
    }

    #[test]
    fn refuses_past_capacity_and_after_the_receiver_is_gone() {
        let (tx, rx) = channel(2);
        assert_eq!(tx.try_send(1), Ok(()));
        assert_eq!(tx.try_send(2), Ok(()));
        assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
        drop(rx);
        assert_eq!(tx.try_send(4), Err(TrySendError::Closed(4)));
    }

    #[tokio::test]
    async fn delivers_in_order_and_ends_when_every_sender_is_gone() {
        let (tx, mut rx) = channel(8);
        let other = tx.clone();
        assert_eq!(tx.try_send(1), Ok(()));
        assert_eq!(other.try_send(2), Ok(()));
        drop(tx);
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.try_recv(), Some(2));
        assert_eq!(rx.try_recv(), None);
        drop(other);
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_a_send() {
        let (tx, mut rx) = channel(1);
        let waiting = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        assert_eq!(tx.try_send("event"), Ok(()));
        assert_eq!(waiting.await.expect("the receiver task ran"), Some("event"));
    }

    #[test]
    fn a_drained_queue_gives_back_a_burst_buffer() {
        let (tx, mut rx) = channel(100);
        for value in 0..50 {
            assert_eq!(tx.try_send(value), Ok(()));
        }
        assert!(lock_unpoisoned(&rx.0.state).queue.capacity() >= 50);
        while rx.try_recv().is_some() {}
        assert_eq!(lock_unpoisoned(&rx.0.state).queue.capacity(), 0);
        assert_eq!(rx.len(), 0);
    }
}
