//! Progress on stderr, never on stdout, never with `--quiet`: a bar redrawn ten times a second
//! when stderr is a terminal; otherwise (a log file, a scheduler) a heartbeat line every
//! `heartbeat_secs` seconds. Both show cells written to the sink and committed, and messages
//! written and committed.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::pipeline::RunControl;

/// Default seconds between heartbeat lines when stderr is not a terminal.
pub const DEFAULT_HEARTBEAT_SECS: u64 = 30;

/// A running progress display; [`Progress::finish`] removes it.
pub struct Progress {
    bar: Option<ProgressBar>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// The counters as one line: `120/775 cells (96 committed), 3,400 messages (2,900 committed)`.
fn status(c: &RunControl) -> String {
    format!(
        "{}/{} cells ({} committed), {} messages ({} committed)",
        c.cells_done.load(Ordering::Relaxed),
        c.cells_planned.load(Ordering::Relaxed),
        c.sink.cells.load(Ordering::Relaxed),
        c.rows.load(Ordering::Relaxed),
        c.sink.rows.load(Ordering::Relaxed),
    )
}

impl Progress {
    /// Starts showing `control`'s counters: a bar on a terminal, else a heartbeat line every
    /// `heartbeat_secs` (0: none); nothing when `quiet`.
    pub fn start(control: Arc<RunControl>, quiet: bool, heartbeat_secs: u64) -> Self {
        let none = Progress {
            bar: None,
            task: None,
        };
        if quiet {
            return none;
        }
        if !std::io::stderr().is_terminal() || crate::logging::is_json() {
            if heartbeat_secs == 0 {
                return none;
            }
            let task = tokio::spawn(async move {
                let started = Instant::now();
                let every = Duration::from_secs(heartbeat_secs);
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                loop {
                    tick.tick().await;
                    crate::logging::notice(&format!(
                        "engati-etl: {} s: {}",
                        started.elapsed().as_secs(),
                        status(&control)
                    ));
                }
            });
            return Progress {
                bar: None,
                task: Some(task),
            };
        }
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(10));
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar:.cyan/blue} {pos}/{len} cells  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        let b = bar.clone();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            loop {
                let planned = control.cells_planned.load(Ordering::Relaxed);
                if planned > 0 {
                    b.set_length(planned);
                }
                b.set_position(control.cells_done.load(Ordering::Relaxed));
                let rows = control.rows.load(Ordering::Relaxed);
                let secs = started.elapsed().as_secs_f64().max(0.001);
                b.set_message(format!(
                    "{} committed; {rows} messages ({:.0}/s), {} committed",
                    control.sink.cells.load(Ordering::Relaxed),
                    rows as f64 / secs,
                    control.sink.rows.load(Ordering::Relaxed)
                ));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Progress {
            bar: Some(bar),
            task: Some(task),
        }
    }

    /// Stops and clears the bar.
    pub fn finish(self) {
        if let Some(t) = self.task {
            t.abort();
        }
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}
