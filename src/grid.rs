//! The window grid: where a plan's windows start and end.
//!
//! Fixed windows (`window = "1d"`, `"6h"`, ...) lie on a grid aligned to the Unix epoch, so
//! `1d` windows are UTC days and never straddle a date partition. Adaptive windows
//! (`window = "auto"`) lie on a grid of `max_window` aligned to the range's start (`since`,
//! or the incremental `start`): a range no longer than `max_window` is one window per user,
//! which is what makes a sparse user cost one request (README, "Adaptive windows").

use crate::model::Window;

/// A grid of windows of `step_ms`, one starting at every `origin_ms + k * step_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    /// A window start in `[0, step_ms)`, ms since epoch UTC (0: aligned to the epoch).
    origin_ms: i64,
    /// Window length, ms (at least 1).
    step_ms: i64,
}

impl Grid {
    /// Windows of `step_ms` aligned to the Unix epoch (fixed windows).
    pub fn epoch(step_ms: i64) -> Self {
        Grid::anchored(0, step_ms)
    }

    /// Windows of `step_ms`, one of which starts at `anchor_ms` (ms since epoch UTC).
    pub fn anchored(anchor_ms: i64, step_ms: i64) -> Self {
        let step_ms = step_ms.max(1);
        Grid {
            origin_ms: anchor_ms.rem_euclid(step_ms),
            step_ms,
        }
    }

    /// Window length, ms.
    pub fn step_ms(&self) -> i64 {
        self.step_ms
    }

    /// The first window start at or after the epoch, in `[0, step_ms)`, ms since epoch UTC.
    pub fn origin_ms(&self) -> i64 {
        self.origin_ms
    }

    /// The index of the window holding `t` (ms since epoch UTC); consecutive windows have
    /// consecutive indexes.
    pub fn index(&self, t: i64) -> i64 {
        (t - self.origin_ms).div_euclid(self.step_ms)
    }

    /// The window with index `i`.
    pub fn window(&self, i: i64) -> Window {
        let start_ms = self.origin_ms + i * self.step_ms;
        Window {
            start_ms,
            end_ms: start_ms + self.step_ms,
        }
    }

    /// The window holding `t`.
    pub fn window_of(&self, t: i64) -> Window {
        self.window(self.index(t))
    }

    /// Windows that `[from_ms, until_ms)` touches (0 when empty).
    pub fn windows_between(&self, from_ms: i64, until_ms: i64) -> u64 {
        if from_ms >= until_ms {
            return 0;
        }
        (self.index(until_ms - 1) - self.index(from_ms) + 1) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::DAY_MS;

    #[test]
    fn an_epoch_grid_of_days_is_utc_days() {
        let g = Grid::epoch(DAY_MS);
        let w = g.window_of(10 * DAY_MS + 5);
        assert_eq!((w.start_ms, w.end_ms), (10 * DAY_MS, 11 * DAY_MS));
        assert_eq!(g.windows_between(10 * DAY_MS + 1, 12 * DAY_MS), 2);
        assert_eq!(g.windows_between(5, 5), 0);
    }

    #[test]
    fn an_anchored_grid_starts_a_window_at_its_anchor() {
        let year = 365 * DAY_MS;
        let since = 20_089 * DAY_MS; // 2025-01-01
        let g = Grid::anchored(since, 366 * DAY_MS);
        assert_eq!(g.window_of(since).start_ms, since);
        assert_eq!(g.windows_between(since, since + year), 1);
        // Times before the origin's first window still fall in a window.
        let w = g.window_of(3);
        assert!(w.start_ms <= 3 && 3 < w.end_ms);
        assert_eq!(g.index(w.end_ms), g.index(3) + 1);
    }
}
