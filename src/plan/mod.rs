//! The work plan: users x windows -> cells, grouped into checkpoint units.
//!
//! The users come from a [`PlanUsers`] source, a page at a time in id order (the run's are in
//! the state store, [`ListedReader`]: a plan of a million users holds one unit's cells, not a
//! list of users), with the start of each one's range.
//!
//! A **cell** is one user's messages in one window: the unit of fetching (pages are read until
//! a short page; adaptive windows split a busy cell by time as its pages show, see
//! `engati::seek`). Windows lie on a [`Grid`] clipped to each user's range: fixed windows on
//! the UTC grid of `window_ms` (aligned to the Unix epoch, so `1d` windows are UTC days and
//! never straddle a date partition), adaptive ones on a grid of `max_window` aligned to the
//! range's start.
//! A **unit** is up to `checkpoint_users` cells of one grid window, in `channel_user_id` order:
//! the unit of commit (its files appear atomically with its state) and of resume. Units are
//! planned window by window (window-major), so output partitions fill one date at a time and
//! a user's cells commit in time order. The same users and range always give the same units
//! and unit keys, which name the output files: re-running a window rewrites the same files.
//! A sharded run's unit keys carry its shard's tag (`shard`), so N shards writing one output
//! never name two files alike.
//!
//! [`estimate`] and [`sample`] are the `plan` command's: requests, bytes and time before a run.

pub mod estimate;
pub mod sample;

use std::sync::Arc;

use xxhash_rust::xxh3::Xxh3Default;

use crate::grid::Grid;
use crate::model::User;
use crate::model::Window;
use crate::shard::Shard;
use crate::state::{ListedReader, StateError};
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

/// How a run cuts each user's range into requests (`range.window`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Windowing {
    /// Windows of `window_ms` on the epoch grid; each cell is paged by `page_number`.
    Fixed,
    /// `window = "auto"`: windows of up to `window_ms` (`max_window`) on a grid anchored at
    /// the range's start; a cell whose first page comes back full is split at the time its
    /// page ends (`engati::seek`), and a 400 for a too-long range halves the span asked.
    Auto,
}

/// The range of a run, validated (`config::range`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeSpec {
    /// Fixed or incremental.
    pub mode: Mode,
    /// Window length (the grid step), ms: `window`, or `max_window` with adaptive windows.
    pub window_ms: i64,
    /// Fixed or adaptive windows.
    pub windowing: Windowing,
}

impl RangeSpec {
    /// The windows as people write them: `1d`, or `auto up to 31d` (reports, `plan`,
    /// `validate`).
    pub fn window_text(&self) -> String {
        let len = crate::time::format_duration_ms(self.window_ms);
        match self.windowing {
            Windowing::Fixed => len,
            Windowing::Auto => format!("auto up to {len}"),
        }
    }

    /// The run's window grid: the epoch grid of `window_ms` for fixed windows, the grid of
    /// `max_window` anchored at the range's start for adaptive ones.
    pub fn grid(&self) -> Grid {
        match self.windowing {
            Windowing::Fixed => Grid::epoch(self.window_ms),
            Windowing::Auto => Grid::anchored(self.mode.start_ms(), self.window_ms),
        }
    }
}

/// A user as the plan needs it: who, on which channel, from when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedUser {
    /// Channel-user id.
    pub id: Arc<str>,
    /// Channel, when known (the `channel` column).
    pub channel: Option<Arc<str>>,
    /// Start of the user's range, ms since epoch UTC (inclusive).
    pub from_ms: i64,
}

/// Where a plan's users come from, a page at a time in `channel_user_id` order (byte order).
pub trait PlanUsers: Send + Sync + std::fmt::Debug {
    /// Up to `limit` users after `after` (by id) whose range starts before `before_ms`.
    ///
    /// # Errors
    /// The store's errors.
    fn page(
        &self,
        after: Option<&str>,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<PlannedUser>, StateError>;
}

impl PlanUsers for ListedReader {
    fn page(
        &self,
        after: Option<&str>,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<PlannedUser>, StateError> {
        Ok(ListedReader::page(self, after, before_ms, limit)?
            .into_iter()
            .map(|r| PlannedUser {
                id: r.user.into(),
                channel: r.channel.map(Into::into),
                from_ms: r.from_ms,
            })
            .collect())
    }
}

/// Users held in memory, sorted by id (tests, benchmarks).
#[derive(Debug, Clone)]
pub struct UsersInMemory(Vec<PlannedUser>);

impl UsersInMemory {
    /// The users, sorted here by id.
    pub fn new(mut users: Vec<PlannedUser>) -> Self {
        users.sort_by(|a, b| a.id.cmp(&b.id));
        UsersInMemory(users)
    }
}

impl PlanUsers for UsersInMemory {
    fn page(
        &self,
        after: Option<&str>,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<PlannedUser>, StateError> {
        let start = after.map_or(0, |a| self.0.partition_point(|u| &*u.id <= a));
        Ok(self.0[start..]
            .iter()
            .filter(|u| u.from_ms < before_ms)
            .take(limit)
            .cloned()
            .collect())
    }
}

/// One user's window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    /// Channel-user id.
    pub user: Arc<str>,
    /// The user's channel, when known.
    pub channel: Option<Arc<str>>,
    /// The window, clipped to the user's range: `[start_ms, end_ms)`.
    pub window: Window,
}

/// Identity of a unit: its grid window and a hash of its cells (and a sharded run's tag).
/// Names its files.
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
    /// The users, with the start of each one's range.
    pub users: Arc<dyn PlanUsers>,
    /// Users in the plan (cells or not).
    pub user_count: u64,
    /// Cells in the plan.
    pub cells: u64,
    /// The earliest start of a user's range that has a cell, ms since epoch UTC.
    pub earliest_ms: Option<i64>,
    /// End of every user's range (exclusive), ms since epoch UTC.
    pub until_ms: i64,
    /// The window grid.
    pub grid: Grid,
    /// Cells per unit at most.
    pub checkpoint_users: usize,
    /// The shard this run exports, if sharded (tags the unit keys).
    pub shard: Option<Shard>,
}

impl Plan {
    /// A plan where every user has the same range `[since_ms, until_ms)`, users in memory.
    pub fn uniform(
        users: Vec<User>,
        since_ms: i64,
        until_ms: i64,
        window_ms: i64,
        checkpoint_users: usize,
    ) -> Self {
        let users = users
            .into_iter()
            .map(|u| PlannedUser {
                id: u.channel_user_id.into(),
                channel: u.channel.map(Into::into),
                from_ms: since_ms,
            })
            .collect();
        Plan::in_memory(users, until_ms, Grid::epoch(window_ms), checkpoint_users)
    }

    /// A plan over users held in memory, each with its own range start.
    pub fn in_memory(
        users: Vec<PlannedUser>,
        until_ms: i64,
        grid: Grid,
        checkpoint_users: usize,
    ) -> Self {
        let live = || users.iter().filter(|u| u.from_ms < until_ms);
        let cells = live()
            .map(|u| grid.windows_between(u.from_ms, until_ms))
            .sum();
        Plan {
            user_count: users.len() as u64,
            cells,
            earliest_ms: live().map(|u| u.from_ms).min(),
            users: Arc::new(UsersInMemory::new(users)),
            until_ms,
            grid,
            checkpoint_users: checkpoint_users.max(1),
            shard: None,
        }
    }

    /// Grid window containing `t`.
    pub fn grid_window(&self, t: i64) -> Window {
        self.grid.window_of(t)
    }

    /// Number of cells in the plan (for progress).
    pub fn cell_count(&self) -> u64 {
        self.cells
    }

    /// The units, in commit order (window by window; in each window, users in id order), read
    /// from the users source one unit at a time.
    pub fn units(&self) -> Units<'_> {
        let earliest = self.earliest_ms.unwrap_or(self.until_ms);
        Units {
            plan: self,
            next_window_start: self.grid_window(earliest).start_ms,
            current: None,
        }
    }
}

/// The grid window being cut into units: the last user read and the next unit's position.
struct WindowCursor {
    window: Window,
    after: Option<Arc<str>>,
    chunk: u32,
    done: bool,
}

/// Iterator over a plan's units; holds one unit's cells at a time.
pub struct Units<'p> {
    plan: &'p Plan,
    next_window_start: i64,
    current: Option<WindowCursor>,
}

impl Iterator for Units<'_> {
    type Item = Result<Unit, StateError>;
    fn next(&mut self) -> Option<Self::Item> {
        let plan = self.plan;
        loop {
            if self.current.as_ref().is_none_or(|c| c.done) {
                if self.next_window_start >= plan.until_ms {
                    return None;
                }
                let window = Window {
                    start_ms: self.next_window_start,
                    end_ms: self.next_window_start + plan.grid.step_ms(),
                };
                self.next_window_start = window.end_ms;
                self.current = Some(WindowCursor {
                    window,
                    after: None,
                    chunk: 0,
                    done: false,
                });
            }
            let cur = self.current.as_mut().expect("set above");
            let g = cur.window;
            let end = g.end_ms.min(plan.until_ms);
            let page = match plan
                .users
                .page(cur.after.as_deref(), end, plan.checkpoint_users)
            {
                Ok(p) => p,
                Err(e) => return Some(Err(e)),
            };
            cur.done = page.len() < plan.checkpoint_users;
            let Some(last) = page.last() else {
                continue;
            };
            cur.after = Some(last.id.clone());
            let cells: Vec<Cell> = page
                .into_iter()
                .map(|u| Cell {
                    window: Window {
                        start_ms: g.start_ms.max(u.from_ms),
                        end_ms: end,
                    },
                    user: u.id,
                    channel: u.channel,
                })
                .collect();
            let chunk = cur.chunk;
            cur.chunk += 1;
            return Some(Ok(Unit {
                key: unit_key(g, &cells, plan.shard),
                window: g,
                chunk,
                cells,
            }));
        }
    }
}

/// `YYYYMMDDTHHMM-<12 hex>`: the grid window start and a hash of the cells (user ids and
/// their clipped windows); `YYYYMMDDTHHMM-s<I>of<N>-<12 hex>` in a sharded run.
fn unit_key(g: Window, cells: &[Cell], shard: Option<Shard>) -> UnitKey {
    let mut h = Xxh3Default::new();
    h.update(&g.start_ms.to_le_bytes());
    h.update(&g.end_ms.to_le_bytes());
    for c in cells {
        let id = c.user.as_bytes();
        h.update(&(id.len() as u64).to_le_bytes());
        h.update(id);
        h.update(&c.window.start_ms.to_le_bytes());
        h.update(&c.window.end_ms.to_le_bytes());
    }
    let date = date_string(g.start_ms).replace('-', "");
    let in_day = g.start_ms.rem_euclid(DAY_MS);
    let tag = shard.map(|s| format!("{}-", s.tag())).unwrap_or_default();
    UnitKey(format!(
        "{date}T{:02}{:02}-{tag}{:012x}",
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
        let units: Vec<Unit> = plan.units().map(Result::unwrap).collect();
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
            .map(|u| u.unwrap().key)
            .collect();
        let b: Vec<_> = Plan::uniform(users(3), 0, DAY_MS, DAY_MS, 10)
            .units()
            .map(|u| u.unwrap().key)
            .collect();
        let c: Vec<_> = Plan::uniform(users(4), 0, DAY_MS, DAY_MS, 10)
            .units()
            .map(|u| u.unwrap().key)
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn per_user_ranges_start_late_users_late() {
        let user = |id: &str, from_ms| PlannedUser {
            id: id.into(),
            channel: None,
            from_ms,
        };
        let plan = Plan::in_memory(
            vec![
                user("u1", 2 * DAY_MS),
                user("u0", 0),
                user("u2", 5 * DAY_MS),
            ],
            3 * DAY_MS,
            Grid::epoch(DAY_MS),
            10,
        );
        let per_window: Vec<usize> = plan.units().map(|u| u.unwrap().cells.len()).collect();
        assert_eq!(per_window, vec![1, 1, 2]);
        assert_eq!(plan.cell_count(), 4);
        assert_eq!(plan.earliest_ms, Some(0));
    }

    /// Unit keys name the output files: these were computed by the plan before users came
    /// from the state store (and checked with Python's `xxhash`), and must not change.
    #[test]
    fn unit_keys_are_pinned() {
        let keys: Vec<String> = Plan::uniform(users(5), DAY_MS / 2, 2 * DAY_MS, DAY_MS, 2)
            .units()
            .map(|u| u.unwrap().key.0)
            .collect();
        assert_eq!(keys, GOLDEN_KEYS);
        let mut sharded = Plan::uniform(users(5), DAY_MS / 2, 2 * DAY_MS, DAY_MS, 2);
        sharded.shard = Some(Shard { index: 1, count: 3 });
        let tagged: Vec<String> = sharded.units().map(|u| u.unwrap().key.0).collect();
        for (k, t) in GOLDEN_KEYS.iter().zip(&tagged) {
            assert_eq!(t, &k.replacen('-', "-s1of3-", 1));
        }
    }

    const GOLDEN_KEYS: [&str; 6] = [
        "19700101T0000-b72424014502",
        "19700101T0000-9f2fbd31ba71",
        "19700101T0000-3f730020aaea",
        "19700102T0000-1b4c669a1c1e",
        "19700102T0000-d28758778a41",
        "19700102T0000-afd2df2f77d3",
    ];

    #[test]
    fn a_unit_holds_at_most_checkpoint_users_cells_and_windows_skip_idle_users() {
        let plan = Plan::uniform(users(5), 0, 2 * DAY_MS, DAY_MS, 5);
        let units: Vec<Unit> = plan.units().map(Result::unwrap).collect();
        assert_eq!(units.len(), 2, "exactly one full page per window");
        assert!(units.iter().all(|u| u.cells.len() == 5));
        assert_eq!(units[1].chunk, 0);
    }
}
