//! `[range]` and the range flags: which messages, in which windows. Validates into a
//! [`plan::RangeSpec`](crate::plan::RangeSpec).

use clap::Args;
use serde::Deserialize;

use super::values::date_text;
use super::{Command, DEFAULT_LOOKBACK, DEFAULT_WINDOW, Problems, merge_fields};
use crate::plan::{Mode, RangeSpec, Windowing};
use crate::shard::Shard;
use crate::time::{parse_duration_ms, parse_user_instant, rfc3339_ms};

/// `range.mode`: a fixed range or per-user watermarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RangeMode {
    /// A fixed range `[since, until)` (the default).
    #[default]
    Range,
    /// Each user from its watermark (minus `lookback`) to `until`; new users from `start`.
    Incremental,
}

/// `[range]`: which messages. Also the range flags.
#[derive(Debug, Clone, Default, Deserialize, Args)]
#[serde(deny_unknown_fields)]
#[command(next_help_heading = "Range")]
pub struct RangeSection {
    /// `range` (fixed `since`..`until`, the default) or `incremental` (per-user watermarks).
    #[arg(skip)]
    pub mode: Option<RangeMode>,
    /// Start (inclusive): 2026-01-31 (UTC midnight), an RFC 3339 timestamp, now, today,
    /// yesterday, tomorrow, today-7d.
    #[arg(long, value_name = "DATE")]
    #[serde(default, deserialize_with = "date_text")]
    pub since: Option<String>,
    /// End (exclusive), same forms (incremental default: today, UTC midnight).
    #[arg(long, value_name = "DATE")]
    #[serde(default, deserialize_with = "date_text")]
    pub until: Option<String>,
    /// Incremental: where a new user's history starts.
    #[arg(skip)]
    #[serde(default, deserialize_with = "date_text")]
    pub start: Option<String>,
    /// Incremental: re-read this much before each watermark for late messages. Default `1d`.
    #[arg(skip)]
    pub lookback: Option<String>,
    /// Window length per request range: 1d, 6h, 30m, or `auto` (windows of up to
    /// --max-window, split where a full page ends) [default: 1d].
    #[arg(long, value_name = "DURATION|auto")]
    pub window: Option<String>,
    /// With `--window auto`: the longest window asked [default: 31d]. A 400 from the API for a
    /// range this long halves it for the rest of the run.
    #[arg(long, value_name = "DURATION")]
    pub max_window: Option<String>,
}

merge_fields!(RangeSection; mode, since, until, start, lookback, window, max_window);

fn duration(p: &mut Problems, key: &str, v: Option<&str>, default: &str) -> i64 {
    parse_duration_ms(v.unwrap_or(default)).unwrap_or_else(|e| {
        p.push(format!("{key}: {e}"));
        1
    })
}

/// The latest instant a range may name: 9999-12-31T23:59:59.999Z.
const MAX_INSTANT_MS: i64 = 253_402_300_799_999;

fn instant(p: &mut Problems, now_ms: i64, key: &str, v: Option<&str>) -> Option<i64> {
    let v = v?;
    let t = parse_user_instant(v, now_ms)
        .map_err(|e| p.push(format!("{key}: {e}")))
        .ok()?;
    if t < 0 {
        p.push(format!(
            "{key} {v} is before 1970-01-01T00:00:00Z: the API takes UTC epoch milliseconds, which start there"
        ));
        return None;
    }
    if t > MAX_INSTANT_MS {
        p.push(format!("{key} {v} is after the year 9999"));
        return None;
    }
    Some(t)
}

/// The shortest window: each (user, window) costs at least one request.
const MIN_WINDOW_MS: i64 = 60_000;

/// `range.max_window` when `window = "auto"` and it is not set.
pub const DEFAULT_MAX_WINDOW: &str = "31d";

/// The state namespace of a run: `export`, `range`, `incremental` or
/// `backfill:<from>:<to>` (each keeps its own runs and watermarks); a shard's ends with
/// `@s<I>of<N>`.
pub fn namespace(command: Command, mode: &Mode, shard: Option<Shard>) -> String {
    let ns = namespace_unsharded(command, mode);
    match shard {
        Some(s) => format!("{ns}@{}", s.tag()),
        None => ns,
    }
}

fn namespace_unsharded(command: Command, mode: &Mode) -> String {
    match (command, mode) {
        (Command::Export, _) => "export".to_owned(),
        (Command::Backfill, Mode::Range { since_ms, until_ms }) => {
            format!(
                "backfill:{}:{}",
                rfc3339_ms(*since_ms),
                rfc3339_ms(*until_ms)
            )
        }
        (_, Mode::Incremental { .. }) => "incremental".to_owned(),
        _ => "range".to_owned(),
    }
}

impl RangeSection {
    /// Validates the section for `command` (only `run` honours `mode = "incremental"`);
    /// `now_ms` resolves `today`, `yesterday`, `now`.
    pub fn validate(&self, command: Command, now_ms: i64, p: &mut Problems) -> Option<RangeSpec> {
        let (windowing, window_ms) = self.windows(p);
        let incremental = self.mode == Some(RangeMode::Incremental) && command == Command::Run;
        let mode = if incremental {
            self.incremental(now_ms, p)
        } else {
            self.fixed(now_ms, p)
        };
        Some(RangeSpec {
            mode: mode?,
            window_ms,
            windowing,
        })
    }

    /// `window` and `max_window`: fixed windows of `window`, or adaptive ones of up to
    /// `max_window`; the length is the grid step, ms.
    fn windows(&self, p: &mut Problems) -> (Windowing, i64) {
        let auto = self.window.as_deref().map(str::trim) == Some("auto");
        let (windowing, key, text) = if auto {
            let text = self.max_window.as_deref().unwrap_or(DEFAULT_MAX_WINDOW);
            (Windowing::Auto, "max_window (--max-window)", text)
        } else {
            if let Some(m) = &self.max_window {
                p.push(format!(
                    "max_window (--max-window) {m} applies only to window = \"auto\" (--window auto); remove it or set window = \"auto\""
                ));
            }
            let text = self.window.as_deref().unwrap_or(DEFAULT_WINDOW);
            (Windowing::Fixed, "window (--window)", text)
        };
        let window_ms = duration(p, key, Some(text), text);
        if window_ms < MIN_WINDOW_MS {
            p.push(format!(
                "{key} {text} is too short (at least 1m): every user costs one request per window"
            ));
        }
        (windowing, window_ms)
    }

    fn incremental(&self, now_ms: i64, p: &mut Problems) -> Option<Mode> {
        let lookback_ms = duration(
            p,
            "range.lookback",
            self.lookback.as_deref(),
            DEFAULT_LOOKBACK,
        );
        let start = instant(p, now_ms, "range.start", self.start.as_deref());
        let until = instant(
            p,
            now_ms,
            "range.until (--until)",
            self.until.as_deref().or(Some("today")),
        );
        if self.start.is_none() {
            p.push("range.start is required for incremental mode: where a new user's history begins, e.g. start = \"2025-01-01\"");
        }
        if self.since.is_some() {
            p.push("range.since is for mode = \"range\"; incremental runs start from each user's watermark (use range.start)");
        }
        match (start, until) {
            (Some(s0), Some(u)) if s0 >= u => {
                p.push(format!(
                    "range.start {} must be before range.until {}",
                    rfc3339_ms(s0),
                    rfc3339_ms(u)
                ));
                None
            }
            (Some(s0), Some(u)) => Some(Mode::Incremental {
                start_ms: s0,
                lookback_ms,
                until_ms: u,
            }),
            _ => None,
        }
    }

    fn fixed(&self, now_ms: i64, p: &mut Problems) -> Option<Mode> {
        let since = instant(p, now_ms, "since (--since)", self.since.as_deref());
        let until = instant(p, now_ms, "until (--until)", self.until.as_deref());
        if self.since.is_none() {
            p.push(
                "since (--since) is required: a UTC date like 2026-01-31 or an RFC 3339 timestamp",
            );
        }
        if self.until.is_none() {
            p.push("until (--until) is required: a UTC date like 2026-02-01 or an RFC 3339 timestamp (exclusive)");
        }
        match (since, until) {
            (Some(a), Some(b)) if a >= b => {
                p.push(format!(
                    "since {} must be before until {} (the range is [since, until) in UTC)",
                    self.since.as_deref().unwrap_or_default(),
                    self.until.as_deref().unwrap_or_default()
                ));
                None
            }
            (Some(a), Some(b)) => Some(Mode::Range {
                since_ms: a,
                until_ms: b,
            }),
            _ => None,
        }
    }
}
