//! Capacity mode: a server that works on `capacity` (K) requests at once, for the adaptive
//! concurrency benchmark. Up to K requests in flight are served at the configured latency;
//! past K, a request queues (first come, first served) for one of the K workers, so its round
//! trip grows with the queue; past 2K in flight, it is answered 429 at once (no
//! `Retry-After`). Throughput is at most K / latency, whatever the client's concurrency.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Semaphore, SemaphorePermit};

/// The server's capacity state.
pub(super) struct Capacity {
    k: usize,
    workers: Semaphore,
    in_flight: AtomicUsize,
    /// The most requests in flight at once so far (refused ones not counted).
    peak: AtomicUsize,
}

/// A request being worked on (or queued): counts as in flight until dropped.
pub(super) struct Slot<'a> {
    capacity: &'a Capacity,
    _worker: SemaphorePermit<'a>,
}

impl Capacity {
    /// A server of `k` workers.
    pub(super) fn new(k: usize) -> Self {
        let k = k.max(1);
        Capacity {
            k,
            workers: Semaphore::new(k),
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// The most requests in flight at once so far (working or queued; refused ones not
    /// counted).
    pub(super) fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    /// Admits a request: `None` when more than 2K are in flight (answer 429), else waits for
    /// a worker.
    pub(super) async fn admit(&self) -> Option<Slot<'_>> {
        let n = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        if n > 2 * self.k {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        self.peak.fetch_max(n, Ordering::SeqCst);
        // Counted in flight while queued: dropped with the request if the client gives up.
        let queued = Queued(self);
        let worker = self
            .workers
            .acquire()
            .await
            .expect("the semaphore is never closed");
        std::mem::forget(queued);
        Some(Slot {
            capacity: self,
            _worker: worker,
        })
    }
}

/// A request waiting for a worker: leaves the count if the wait is abandoned.
struct Queued<'a>(&'a Capacity);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.capacity.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn past_k_requests_queue_and_past_2k_they_are_refused() {
        let c = Capacity::new(2);
        let a = c.admit().await.expect("1st works");
        let b = c.admit().await.expect("2nd works");
        // The 3rd and 4th queue (in flight, waiting for a worker); the 5th is refused.
        let mut third = Box::pin(c.admit());
        assert!(futures_util::FutureExt::now_or_never(&mut third).is_none());
        let mut fourth = Box::pin(c.admit());
        assert!(futures_util::FutureExt::now_or_never(&mut fourth).is_none());
        assert!(c.admit().await.is_none(), "more than 2K in flight");
        drop(a);
        let t = third.await.expect("a worker came free");
        drop((b, t));
        assert!(fourth.await.is_some());
        assert_eq!(c.in_flight.load(Ordering::SeqCst), 0);
        assert_eq!(c.peak(), 4, "the refused 5th is not counted");
    }
}
