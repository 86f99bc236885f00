//! The work plan: users x windows -> cells, grouped into checkpoint units.
//!
//! A **cell** is one user's messages in one window: the unit of fetching (pages are read until
//! a short page). Windows lie on a fixed UTC grid of `window_ms` (aligned to the Unix epoch, so
//! `1d` windows are UTC days and never straddle a date partition) clipped to each user's range.
//! A **unit** is up to `checkpoint_users` cells of one grid window, in `channel_user_id` order:
//! the unit of commit (its files appear atomically with its state) and of resume. Units are
//! planned window by window (window-major), so output partitions fill one date at a time and
//! a user's cells commit in time order. The same users and range always give the same units
//! and unit keys, which name the output files: re-running a window rewrites the same files.

use std::sync::Arc;

use xxhash_rust::xxh3::Xxh3Default;

use crate::model::User;
use crate::model::Window;
use crate::time::{DAY_MS, date_string};

/// Which range a run exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A fixed range `[since_ms, until_ms)` (export, fixed pipelines, backfill), ms since
    /// epoch UTC.
    Range {
        /// Start, ms since epoch UTC (inclusive).
        since_ms: i64,
        /// End, ms since epoch UTC (exclusive).
        until_ms: i64,
    },
    /// Per user from its watermark minus `lookback_ms` (or `start_ms` for a new user) to
    /// `until_ms`.
    Incremental {
        /// Where a new user's history starts, ms since epoch UTC.
        start_ms: i64,
        /// Re-read this much before the watermark, for late messages, ms.
        lookback_ms: i64,
        /// End, ms since epoch UTC (exclusive).
        until_ms: i64,
    },
}

impl Mode {
    /// The end of every user's range, ms since epoch UTC (exclusive).
    pub fn until_ms(&self) -> i64 {
        match *self {
            Mode::Range { until_ms, .. } | Mode::Incremental { until_ms, .. } => until_ms,
        }
    }

    /// The range's start as configured (`since` or the incremental `start`), ms since epoch.
    pub fn start_ms(&self) -> i64 {
        match *self {
            Mode::Range { since_ms, .. } => since_ms,
            Mode::Incremental { start_ms, .. } => start_ms,
        }
    }
}

/// The range of a run, validated (`config::range`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeSpec {
    /// Fixed or incremental.
    pub mode: Mode,
    /// Window length (the grid step), ms.
    pub window_ms: i64,
}

/// One user's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    /// Index into [`Plan::users`].
    pub user: u32,
    /// The window, clipped to the user's range: `[start_ms, end_ms)`.
    pub window: Window,
}

/// Identity of a unit: its grid window and a hash of its cells. Names its files.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UnitKey(pub String);

/// Cells committed together.
#[derive(Debug, Clone)]
pub struct Unit {
    /// The unit's identity.
    pub key: UnitKey,
    /// The grid window all its cells lie in.
    pub window: Window,
    /// Position of this unit among the window's units (0-based).
    pub chunk: u32,
    /// Cells, in `channel_user_id` order.
    pub cells: Vec<Cell>,
}

/// The plan of a run: who, from when to when, in which windows.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Users to export, sorted by `channel_user_id`.
    pub users: Arc<Vec<User>>,
    /// Per user (same index): start of its range, ms since epoch UTC (inclusive).
    pub from_ms: Arc<Vec<i64>>,
    /// End of every user's range (exclusive), ms since epoch UTC.
    pub until_ms: i64,
    /// Grid step, ms.
    pub window_ms: i64,
    /// Cells per unit at most.
    pub checkpoint_users: usize,
}

impl Plan {
    /// A plan where every user has the same range `[since_ms, until_ms)`.
    pub fn uniform(
        users: Vec<User>,
        since_ms: i64,
        until_ms: i64,
        window_ms: i64,
        checkpoint_users: usize,
    ) -> Self {
        let n = users.len();
        Plan {
            users: Arc::new(users),
            from_ms: Arc::new(vec![since_ms; n]),
            until_ms,
            window_ms,
            checkpoint_users: checkpoint_users.max(1),
        }
    }

    /// Grid window containing `t`.
    pub fn grid_window(&self, t: i64) -> Window {
        let start = t.div_euclid(self.window_ms) * self.window_ms;
        Window {
            start_ms: start,
            end_ms: start + self.window_ms,
        }
    }

    /// Number of cells in the plan (for progress).
    pub fn cell_count(&self) -> u64 {
        self.from_ms
            .iter()
            .filter(|&&f| f < self.until_ms)
            .map(|&f| {
                let first = f.div_euclid(self.window_ms);
                let last = (self.until_ms - 1).div_euclid(self.window_ms);
                (last - first + 1) as u64
            })
            .sum()
    }

    /// The units, in commit order (window by window; in each window, users in id order).
    pub fn units(&self) -> Units<'_> {
        let earliest = self.from_ms.iter().copied().min().unwrap_or(self.until_ms);
        Units {
            plan: self,
            next_window_start: self.grid_window(earliest).start_ms,
            pending: std::collections::VecDeque::new(),
        }
    }
}

/// Iterator over a plan's units; builds one window's units at a time.
pub struct Units<'p> {
    plan: &'p Plan,
    next_window_start: i64,
    pending: std::collections::VecDeque<Unit>,
}

impl Iterator for Units<'_> {
    type Item = Unit;
    fn next(&mut self) -> Option<Unit> {
        let plan = self.plan;
        while self.pending.is_empty() {
            if self.next_window_start >= plan.until_ms {
                return None;
            }
            let g = Window {
                start_ms: self.next_window_start,
                end_ms: self.next_window_start + plan.window_ms,
            };
            self.next_window_start = g.end_ms;
            let cells: Vec<Cell> = plan
                .from_ms
                .iter()
                .enumerate()
                .filter_map(|(i, &from)| {
                    let w = Window {
                        start_ms: g.start_ms.max(from),
                        end_ms: g.end_ms.min(plan.until_ms),
                    };
                    (w.start_ms < w.end_ms).then_some(Cell {
                        user: i as u32,
                        window: w,
                    })
                })
                .collect();
            for (chunk, part) in cells.chunks(plan.checkpoint_users).enumerate() {
                self.pending.push_back(Unit {
                    key: unit_key(g, part, &plan.users),
                    window: g,
                    chunk: chunk as u32,
                    cells: part.to_vec(),
                });
            }
        }
        self.pending.pop_front()
    }
}

/// `YYYYMMDDTHHMM-<12 hex>`: the grid window start and a hash of the cells (user ids and
/// their clipped windows).
fn unit_key(g: Window, cells: &[Cell], users: &[User]) -> UnitKey {
    let mut h = Xxh3Default::new();
    h.update(&g.start_ms.to_le_bytes());
    h.update(&g.end_ms.to_le_bytes());
    for c in cells {
        let id = users[c.user as usize].channel_user_id.as_bytes();
        h.update(&(id.len() as u64).to_le_bytes());
        h.update(id);
        h.update(&c.window.start_ms.to_le_bytes());
        h.update(&c.window.end_ms.to_le_bytes());
    }
    let date = date_string(g.start_ms).replace('-', "");
    let in_day = g.start_ms.rem_euclid(DAY_MS);
    UnitKey(format!(
        "{date}T{:02}{:02}-{:012x}",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        h.digest() & 0xffff_ffff_ffff
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(n: usize) -> Vec<User> {
        (0..n)
            .map(|i| User {
                channel_user_id: format!("u{i:03}"),
                channel: None,
                user_name: None,
                attributes: vec![],
                matched_filters: vec![],
            })
            .collect()
    }

    #[test]
    fn windows_are_utc_grid_cells_clipped_to_the_range() {
        let since = 10 * DAY_MS + 3_600_000; // day 10, 01:00
        let until = 12 * DAY_MS;
        let plan = Plan::uniform(users(3), since, until, DAY_MS, 2);
        let units: Vec<Unit> = plan.units().collect();
        assert_eq!(units.len(), 4); // 2 windows x (2 + 1) users
        assert_eq!(
            units[0].cells[0].window,
            Window {
                start_ms: since,
                end_ms: 11 * DAY_MS
            }
        );
        assert_eq!(units[0].cells.len(), 2);
        assert_eq!(units[1].cells.len(), 1);
        assert_eq!(
            units[2].window,
            Window {
                start_ms: 11 * DAY_MS,
                end_ms: 12 * DAY_MS
            }
        );
        assert_eq!(plan.cell_count(), 6);
        assert!(units[0].key.0.starts_with("19700111T0000-"));
    }

    #[test]
    fn unit_keys_are_stable_and_depend_on_the_cells() {
        let a: Vec<_> = Plan::uniform(users(3), 0, DAY_MS, DAY_MS, 10)
            .units()
            .map(|u| u.key)
            .collect();
        let b: Vec<_> = Plan::uniform(users(3), 0, DAY_MS, DAY_MS, 10)
            .units()
            .map(|u| u.key)
            .collect();
        let c: Vec<_> = Plan::uniform(users(4), 0, DAY_MS, DAY_MS, 10)
            .units()
            .map(|u| u.key)
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn per_user_ranges_start_late_users_late() {
        let mut plan = Plan::uniform(users(2), 0, 3 * DAY_MS, DAY_MS, 10);
        plan.from_ms = Arc::new(vec![0, 2 * DAY_MS]);
        let per_window: Vec<usize> = plan.units().map(|u| u.cells.len()).collect();
        assert_eq!(per_window, vec![1, 1, 2]);
        assert_eq!(plan.cell_count(), 4);
    }
}
