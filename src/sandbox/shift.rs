//! Data that changes while the sandbox serves it, and the order it is served in:
//!
//! - **live arrivals** ([`LiveConfig`]): new messages on a timer, for random users, as a live
//!   bot gets them;
//! - **shifting pages** ([`ShiftConfig`]): while a window is being paged (a request for page 2
//!   or later), a message is inserted into that window before the reading position (or one
//!   already served is deleted), so the pages after it shift by one, as docs/engati-api.md,
//!   "Pages that shift", describes;
//! - **page order** ([`PageOrder`]): oldest first (the decided default) or newest first.
//!
//! Where an insert goes depends on the order, as on a real server: oldest first, a backdated
//! message (the timestamp of a message already served, so it sorts before the reading
//! position); newest first, a new newest message (the front of page 1, like a live arrival).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::dataset::{Dataset, StoredMessage, select};

/// The order of a window's messages across its pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PageOrder {
    /// Ascending by time, page 1 oldest (docs/engati-api.md, the decided default).
    #[default]
    OldestFirst,
    /// Descending by time, page 1 newest.
    NewestFirst,
}

impl std::str::FromStr for PageOrder {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "oldest-first" => Ok(PageOrder::OldestFirst),
            "newest-first" => Ok(PageOrder::NewestFirst),
            _ => Err(format!(
                "unknown page order `{s}`: use oldest-first or newest-first"
            )),
        }
    }
}

/// Live arrivals: every `interval_ms`, `per_tick` new messages for random users, timestamped
/// between `backdate_ms` before the sandbox clock and the clock itself (late delivery).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LiveConfig {
    /// Tick, ms.
    pub interval_ms: u64,
    /// Messages per tick.
    pub per_tick: usize,
    /// How far back an arrival may be timestamped, ms.
    pub backdate_ms: i64,
}

/// Shifting pages: each request for page 2 or later of a window changes that window with
/// probability `rate`, at most `max_per_window` times per (user, window) (0: no limit).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShiftConfig {
    /// Chance per request for page 2 or later, 0..=1.
    pub rate: f64,
    /// Changes per (user, window) at most; 0 = no limit (the window never settles).
    pub max_per_window: u32,
    /// Delete a message already served instead of inserting one.
    pub delete: bool,
    /// Seed of the dice.
    pub seed: u64,
}

/// A window as asked: (user index, `start_date`, `end_date`).
type WindowKey = (usize, Option<i64>, i64);

/// The shifting-pages state of a running sandbox.
pub(super) struct Shifter {
    config: ShiftConfig,
    rng: Mutex<ChaCha8Rng>,
    /// Changes made per window.
    per_window: Mutex<HashMap<WindowKey, u32>>,
    /// Messages inserted so far (names their content).
    inserted: AtomicU64,
    /// Changes made, in all.
    changes: AtomicU64,
    /// The messages deleted: (user index, message).
    deleted: Mutex<Vec<(usize, StoredMessage)>>,
}

/// One Conversations request's selection: user `index`, `start`..`end` read with the bound
/// flags.
#[derive(Debug, Clone, Copy)]
pub(super) struct Selection {
    pub index: usize,
    pub start: Option<i64>,
    pub end: i64,
    pub start_exclusive: bool,
    pub end_inclusive: bool,
}

impl Shifter {
    pub(super) fn new(config: ShiftConfig) -> Self {
        Shifter {
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(config.seed)),
            config,
            per_window: Mutex::new(HashMap::new()),
            inserted: AtomicU64::new(0),
            changes: AtomicU64::new(0),
            deleted: Mutex::new(Vec::new()),
        }
    }

    /// Changes made so far.
    pub(super) fn changes(&self) -> u64 {
        self.changes.load(Ordering::SeqCst)
    }

    /// The messages deleted so far: (user index, message).
    pub(super) fn deleted(&self) -> Vec<(usize, StoredMessage)> {
        self.deleted.lock().expect("shift lock").clone()
    }

    /// Before page `page` of `size` messages of `sel` is served: maybe changes the window.
    pub(super) fn before_page(
        &self,
        data: &Dataset,
        sel: Selection,
        page: usize,
        size: usize,
        order: PageOrder,
    ) {
        if page < 2 {
            return;
        }
        let key = (sel.index, sel.start, sel.end);
        let mut per_window = self.per_window.lock().expect("shift lock");
        let made = per_window.entry(key).or_default();
        if self.config.max_per_window > 0 && *made >= self.config.max_per_window {
            return;
        }
        let mut rng = self.rng.lock().expect("shift lock");
        if rng.random::<f64>() >= self.config.rate {
            return;
        }
        let mut msgs = data.messages[sel.index].write().expect("sandbox lock");
        let range = select(
            &msgs,
            sel.start,
            sel.end,
            sel.start_exclusive,
            sel.end_inclusive,
        );
        let served = ((page - 1) * size).min(range.len());
        if served == 0 {
            return;
        }
        // The `pick`-th message served, in serving order.
        let pick = rng.random_range(0..served);
        let at = match order {
            PageOrder::OldestFirst => range.start + pick,
            PageOrder::NewestFirst => range.end - 1 - pick,
        };
        if self.config.delete {
            let gone = msgs.remove(at);
            self.deleted
                .lock()
                .expect("shift lock")
                .push((sel.index, gone));
        } else {
            // Inside the cell window the exporter asks for (`start_date` is its start - 1 ms).
            let lowest = sel.start.map_or(i64::MIN, |s| s + 1);
            let ts = match order {
                PageOrder::OldestFirst => msgs[at].ts_ms,
                PageOrder::NewestFirst => msgs[range.end - 1].ts_ms + 1,
            }
            .clamp(lowest, (sel.end - 1).max(lowest));
            let n = self.inserted.fetch_add(1, Ordering::SeqCst) + 1;
            let msg = data.live_message(sel.index, ts, 1_000_000 + n);
            let pos = msgs.partition_point(|m| m.ts_ms < ts);
            msgs.insert(pos, msg);
        }
        *made += 1;
        self.changes.fetch_add(1, Ordering::SeqCst);
    }
}

impl Dataset {
    /// Inserts a message for user `index` at its time position (after equal timestamps): a
    /// live arrival.
    pub fn insert(&self, index: usize, msg: StoredMessage) {
        let mut msgs = self.messages[index].write().expect("sandbox lock");
        let at = msgs.partition_point(|m| m.ts_ms <= msg.ts_ms);
        msgs.insert(at, msg);
    }
}

/// Adds live messages until the server is gone. `clock` gives the sandbox clock (ms since
/// epoch UTC); `paused` stops arrivals while true.
pub(super) async fn live_arrivals<S: Send + Sync + 'static>(
    shared: std::sync::Weak<S>,
    live: LiveConfig,
    parts: impl Fn(&S) -> (&Dataset, i64, bool) + Send + 'static,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(0x11fe);
    let mut n = 0u64;
    loop {
        tokio::time::sleep(Duration::from_millis(live.interval_ms.max(1))).await;
        let Some(s) = shared.upgrade() else { return };
        let (data, now, paused) = parts(&s);
        if paused {
            continue;
        }
        let users = data.user_count();
        if users == 0 {
            return;
        }
        for _ in 0..live.per_tick {
            let i = rng.random_range(0..users);
            let ts = now - rng.random_range(0..=live.backdate_ms.max(0));
            n += 1;
            let msg = data.live_message(i, ts, n);
            data.insert(i, msg);
        }
    }
}
