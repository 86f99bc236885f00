//! The fetch gate: bounds the page bodies fetched ahead of the cell being written.
//!
//! The budget is a `tokio::sync::Semaphore` of KiB permits. Before a cell sends a request it
//! reserves the expected body size (the last body's size, at least 4 KiB) with
//! `acquire_many`, waiting in FIFO order (so the cells nearest the writer go first, and a
//! freed page wakes one waiter, not all of them). Reserving before sending bounds the
//! overshoot by the misestimates of the requests in flight (at most `concurrency` pages),
//! however many cells wait. When the body arrives the reservation is trued up to its size
//! ([`Ticket::settle`]): a smaller body gives permits back at once, a larger one takes what
//! is free; the page holds its permits until the writer has normalized it
//! ([`FetchGate::release`]).
//!
//! The cell being written (the *head*) never waits: it does not take permits, and a cell that
//! becomes the head while waiting is let through at once (`became_head`). So the writer always
//! progresses and the gate cannot deadlock.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use tokio::sync::{Notify, Semaphore};

/// Bytes per permit.
const UNIT: u64 = 1024;
/// The smallest reservation, in permits (4 KiB).
const MIN_UNITS: u32 = 4;

/// The gate shared by the cells of a run.
#[derive(Debug)]
pub struct FetchGate {
    permits: Semaphore,
    /// The budget, in permits.
    budget: u32,
    /// Permits a request reserves: the last body's size (at least [`MIN_UNITS`]).
    expected: AtomicU32,
    /// Sequence number of the cell being written.
    head: AtomicU64,
}

/// Permits held for one page (zero for the head's pages).
#[derive(Debug, PartialEq, Eq)]
#[must_use = "permits must be given back with FetchGate::release"]
pub struct Ticket {
    units: u32,
}

impl FetchGate {
    /// A gate of `budget_bytes` (rounded up to KiB, at least 64 KiB), first guessing 64 KiB
    /// per page.
    pub fn new(budget_bytes: u64) -> Self {
        let budget = budget_bytes.div_ceil(UNIT).clamp(
            64,
            u64::from(Semaphore::MAX_PERMITS.min(u32::MAX as usize) as u32),
        ) as u32;
        FetchGate {
            permits: Semaphore::new(budget as usize),
            budget,
            expected: AtomicU32::new(64),
            head: AtomicU64::new(u64::MAX),
        }
    }

    /// Makes cell `seq` the head (the cell being written).
    pub fn set_head(&self, seq: u64) {
        self.head.store(seq, Ordering::Release);
    }

    /// True when cell `seq` is the head.
    pub fn is_head(&self, seq: u64) -> bool {
        self.head.load(Ordering::Acquire) == seq
    }

    /// Waits until cell `seq` may send a request: at once for the head, else once the expected
    /// body fits in the budget (or the cell becomes the head: `became_head` is notified).
    pub async fn reserve(&self, seq: u64, became_head: &Notify) -> Ticket {
        if self.is_head(seq) {
            return Ticket { units: 0 };
        }
        let want = self.expected.load(Ordering::Relaxed).min(self.budget);
        tokio::select! {
            biased;
            () = became_head.notified() => Ticket { units: 0 },
            permit = self.permits.acquire_many(want) => {
                permit.expect("the gate's semaphore is never closed").forget();
                Ticket { units: want }
            }
        }
    }

    /// Gives back a ticket's permits (a page normalized, or a request that failed).
    pub fn release(&self, ticket: Ticket) {
        if ticket.units > 0 {
            self.permits.add_permits(ticket.units as usize);
        }
    }

    /// Permits free now (for tests and logs).
    pub fn available_bytes(&self) -> u64 {
        self.permits.available_permits() as u64 * UNIT
    }
}

impl Ticket {
    /// Trues the reservation up to the body actually received (`bytes`) and learns the size
    /// for the next reservations. The head's pages (no permits) stay free.
    pub fn settle(mut self, gate: &FetchGate, bytes: u64) -> Ticket {
        let units = bytes.div_ceil(UNIT).min(u64::from(gate.budget)) as u32;
        gate.expected.store(units.max(MIN_UNITS), Ordering::Relaxed);
        if self.units == 0 {
            return self;
        }
        if units < self.units {
            gate.permits.add_permits((self.units - units) as usize);
            self.units = units;
        } else if units > self.units
            && let Ok(p) = gate.permits.try_acquire_many(units - self.units)
        {
            p.forget();
            self.units = units;
        }
        self
    }

    /// Permits held, in bytes.
    pub fn bytes(&self) -> u64 {
        u64::from(self.units) * UNIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    /// Polls `f` once: `Some` if it completed without waiting.
    async fn now<F: std::future::Future>(f: F) -> Option<F::Output> {
        tokio::time::timeout(Duration::ZERO, f).await.ok()
    }

    #[tokio::test]
    async fn the_head_never_waits_and_takes_nothing() {
        let gate = FetchGate::new(64 * 1024);
        gate.set_head(7);
        let wake = Notify::new();
        for _ in 0..100 {
            let t = now(gate.reserve(7, &wake)).await.expect("the head passes");
            let t = t.settle(&gate, 1 << 20);
            assert_eq!(t.bytes(), 0);
            gate.release(t);
        }
        assert_eq!(gate.available_bytes(), 64 * 1024);
    }

    #[tokio::test]
    async fn others_wait_once_the_budget_is_reserved() {
        let gate = FetchGate::new(64 * 1024);
        let wake = Notify::new();
        // The first guess is 64 KiB a page: one reservation fills the budget.
        let t1 = now(gate.reserve(1, &wake)).await.expect("room for one");
        assert_eq!(t1.bytes(), 64 * 1024);
        assert!(now(gate.reserve(2, &wake)).await.is_none(), "no room");
        // The body was 10 KiB: 54 KiB come back at once, and the next guess is 10 KiB.
        let t1 = t1.settle(&gate, 10 * 1024);
        assert_eq!(gate.available_bytes(), 54 * 1024);
        let held: Vec<Ticket> = (0..5)
            .map(|i| {
                futures_util::FutureExt::now_or_never(gate.reserve(10 + i, &wake))
                    .expect("five 10 KiB pages fit in 54 KiB")
            })
            .collect();
        assert!(
            now(gate.reserve(20, &wake)).await.is_none(),
            "the sixth waits"
        );
        gate.release(t1);
        for t in held {
            gate.release(t);
        }
        assert_eq!(gate.available_bytes(), 64 * 1024, "every permit came back");
    }

    #[tokio::test]
    async fn a_waiting_cell_that_becomes_the_head_goes_at_once() {
        let gate = Arc::new(FetchGate::new(64 * 1024));
        let full = now(gate.reserve(1, &Notify::new())).await.unwrap();
        let wake = Arc::new(Notify::new());
        let (g, w) = (gate.clone(), wake.clone());
        let waiting = tokio::spawn(async move { g.reserve(5, &w).await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        gate.set_head(5);
        wake.notify_one();
        let t = waiting.await.unwrap();
        assert_eq!(t.bytes(), 0, "the head holds no permits");
        gate.release(full);
        assert_eq!(gate.available_bytes(), 64 * 1024);
    }

    #[tokio::test]
    async fn waiters_are_served_in_order_as_pages_are_written() {
        let gate = Arc::new(FetchGate::new(64 * 1024));
        let first = now(gate.reserve(1, &Notify::new())).await.unwrap();
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for seq in 2..6u64 {
            let (g, o) = (gate.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let t = g.reserve(seq, &Notify::new()).await;
                o.lock().unwrap().push(seq);
                t
            }));
            tokio::task::yield_now().await;
        }
        // Each release lets exactly the next waiter through (64 KiB each).
        gate.release(first);
        for t in tasks {
            let ticket = t.await.unwrap();
            gate.release(ticket);
        }
        assert_eq!(*order.lock().unwrap(), vec![2, 3, 4, 5]);
        assert_eq!(gate.available_bytes(), 64 * 1024);
    }

    #[tokio::test]
    async fn a_larger_body_takes_what_is_free_and_never_over_counts() {
        let gate = FetchGate::new(100 * 1024);
        let wake = Notify::new();
        let t = now(gate.reserve(1, &wake)).await.unwrap(); // 64 KiB
        let t = t.settle(&gate, 80 * 1024);
        assert_eq!(t.bytes(), 80 * 1024);
        let u = now(gate.reserve(2, &wake)).await; // guess now 80 KiB: 20 KiB free
        assert!(u.is_none());
        let t = t.settle(&gate, 500 * 1024); // more than the budget: clamped
        assert!(t.bytes() <= 100 * 1024);
        gate.release(t);
        assert_eq!(gate.available_bytes(), 100 * 1024);
    }
}
