//! The progress bar: on stderr, only when stderr is a terminal and not `--quiet`; never on
//! stdout. Redrawn from the run's counters ten times a second by a small task.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::pipeline::RunControl;

/// A running progress display; [`Progress::finish`] removes it.
pub struct Progress {
    bar: Option<ProgressBar>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// Starts drawing `control`'s counters (hidden when `quiet` or stderr is not a terminal).
    pub fn start(control: Arc<RunControl>, quiet: bool) -> Self {
        if quiet || !std::io::stderr().is_terminal() {
            return Progress {
                bar: None,
                task: None,
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
            let started = std::time::Instant::now();
            loop {
                let planned = control.cells_planned.load(Ordering::Relaxed);
                if planned > 0 {
                    b.set_length(planned);
                }
                b.set_position(control.cells_done.load(Ordering::Relaxed));
                let rows = control.rows.load(Ordering::Relaxed);
                let secs = started.elapsed().as_secs_f64().max(0.001);
                b.set_message(format!(
                    "{rows} messages ({:.0}/s), {} committed",
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
