//! `--metrics-file PATH`: the run's metrics in the Prometheus text format (OpenMetrics, as the
//! `prometheus-client` crate encodes it), for node_exporter's textfile collector or any scraper
//! that reads a file. Written atomically (temp file, fsync, rename: the collector never reads a
//! half file) at the end of every run, and every `--metrics-interval-secs` during one.
//!
//! Every series has the label `pipeline` (the pipeline's `name`, else its file name, else the
//! command). Counters count this run (they restart at 0 with the next run, which `rate()` and
//! `increase()` treat as a counter reset). The series:
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `engati_etl_up` | gauge | | 1 while a run is going, 0 once it ended |
//! | `engati_etl_run_info` | gauge | `command`, `run_id`, `outcome` | 1; `outcome` is `running` until the end |
//! | `engati_etl_exit_code` | gauge | | the run's exit code (-1 while running) |
//! | `engati_etl_messages_total` | counter | `status` = `written`, `rejected`, `outside_window` | messages |
//! | `engati_etl_users` | gauge | | users in the plan |
//! | `engati_etl_cells_total` | counter | `status` = `planned`, `skipped`, `committed` | cells (user x window) |
//! | `engati_etl_requests_total` | counter | `class` = `2xx` ... `5xx`, `transport_error` | API requests (attempts) |
//! | `engati_etl_throttled_requests_total` | counter | | 429 responses |
//! | `engati_etl_retries_total` | counter | | retried attempts |
//! | `engati_etl_request_seconds_total` | counter | | response times of answered attempts, summed |
//! | `engati_etl_answered_requests_total` | counter | | answered attempts (mean latency = the ratio of the two rates) |
//! | `engati_etl_received_bytes_total` | counter | | response bytes |
//! | `engati_etl_written_bytes_total` | counter | | bytes of files put in place |
//! | `engati_etl_files_written_total` | counter | | files put in place |
//! | `engati_etl_run_start_timestamp_seconds` | gauge | | run start (Unix time) |
//! | `engati_etl_run_duration_seconds` | gauge | | wall time so far |
//! | `engati_etl_last_success_timestamp_seconds` | gauge | | end of the pipeline's last run that exported everything (`succeeded` or `completed_with_rejects`), from the state store; absent if none |

use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::pipeline::RunControl;
use crate::report::RunReport;

/// Default seconds between metrics-file writes during a run.
pub const DEFAULT_INTERVAL_SECS: u64 = 15;

/// The figures a metrics file shows: from the live counters during a run, from the report at
/// its end.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Pipeline label.
    pub pipeline: String,
    /// `run`, `export`, `backfill`.
    pub command: String,
    /// Run id (empty before the run has one).
    pub run_id: String,
    /// `running`, or the report's status.
    pub outcome: String,
    /// Exit code (`None` while running).
    pub exit_code: Option<u8>,
    /// Messages written, rejected, outside the window.
    pub messages: [u64; 3],
    /// Users in the plan.
    pub users: u64,
    /// Cells planned, skipped, committed.
    pub cells: [u64; 3],
    /// Requests by class 2xx..5xx (index 0..4: 1xx..5xx) and transport errors (index 5).
    pub requests: [u64; 6],
    /// 429 responses.
    pub throttled: u64,
    /// Retries.
    pub retries: u64,
    /// Response-time sum, seconds, and answered attempts.
    pub latency: (f64, u64),
    /// Bytes received, bytes written.
    pub bytes: (u64, u64),
    /// Files written.
    pub files_written: u64,
    /// Run start, Unix seconds.
    pub started_s: f64,
    /// Wall time, seconds.
    pub duration_s: f64,
    /// Last success, Unix seconds.
    pub last_success_s: Option<f64>,
}

impl Snapshot {
    /// The figures of a finished run's report.
    pub fn from_report(r: &RunReport, pipeline: &str, command: &str, exit_code: u8) -> Self {
        let class = |c: char| {
            r.requests
                .by_status
                .iter()
                .filter(|(k, _)| k.starts_with(c))
                .map(|(_, v)| *v)
                .sum::<u64>()
        };
        let t = r.timeline.total();
        Snapshot {
            pipeline: pipeline.into(),
            command: command.into(),
            run_id: r.run_id.clone(),
            outcome: r.status.as_str().into(),
            exit_code: Some(exit_code),
            messages: [
                r.messages.written,
                r.messages.rejected,
                r.messages.outside_window,
            ],
            users: r.users,
            cells: [r.cells.planned, r.cells.skipped, r.cells.committed],
            requests: [
                class('1'),
                class('2'),
                class('3'),
                class('4'),
                class('5'),
                r.requests.transport_errors,
            ],
            throttled: r.requests.by_status.get("429").copied().unwrap_or(0),
            retries: r.requests.retries,
            latency: (t.latency_us as f64 / 1e6, t.latency_count),
            bytes: (r.requests.bytes_received, r.sink.bytes_written),
            files_written: r.sink.files_written,
            started_s: crate::time::parse_rfc3339_ms(&r.started_at).unwrap_or(0) as f64 / 1000.0,
            duration_s: r.duration_ms as f64 / 1000.0,
            last_success_s: None,
        }
    }

    /// The figures of a run still going.
    pub fn live(c: &RunControl, pipeline: &str, command: &str, started_ms: i64) -> Self {
        let class = c.requests.by_class();
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Snapshot {
            pipeline: pipeline.into(),
            command: command.into(),
            outcome: "running".into(),
            messages: [r(&c.sink.rows), r(&c.sink.rejects), 0],
            cells: [r(&c.cells_planned), 0, r(&c.sink.cells)],
            requests: [
                class[1],
                class[2],
                class[3],
                class[4],
                class[5],
                r(&c.requests.transport_errors),
            ],
            throttled: r(&c.requests.throttled),
            retries: r(&c.requests.retries),
            latency: (
                r(&c.requests.latency_us) as f64 / 1e6,
                r(&c.requests.latency_count),
            ),
            bytes: (r(&c.requests.bytes), 0),
            started_s: started_ms as f64 / 1000.0,
            duration_s: (crate::time::now_ms() - started_ms).max(0) as f64 / 1000.0,
            ..Snapshot::default()
        }
    }

    /// The metrics file's text.
    pub fn render(&self) -> String {
        let mut r = Reg::new(&self.pipeline);
        r.gauge(
            "up",
            "1 while a run is going, 0 once it ended",
            f64::from(u8::from(self.exit_code.is_none())),
        );
        let info = [
            ("command", self.command.as_str()),
            ("run_id", self.run_id.as_str()),
            ("outcome", self.outcome.as_str()),
        ];
        r.gauge_with(
            "run_info",
            "The run: command, run id, outcome (running until the end)",
            &info,
            1.0,
        );
        r.gauge(
            "exit_code",
            "The run's exit code (-1 while running)",
            self.exit_code.map_or(-1.0, f64::from),
        );
        let statuses = ["written", "rejected", "outside_window"];
        r.counters(
            "messages",
            "Messages, by what became of them",
            "status",
            &statuses,
            &self.messages,
        );
        r.gauge("users", "Users in the plan", self.users as f64);
        let cells = ["planned", "skipped", "committed"];
        r.counters(
            "cells",
            "Cells (user x window): planned, skipped (already committed), committed",
            "status",
            &cells,
            &self.cells,
        );
        let classes = ["1xx", "2xx", "3xx", "4xx", "5xx", "transport_error"];
        r.counters(
            "requests",
            "API requests (attempts), by status class",
            "class",
            &classes,
            &self.requests,
        );
        r.counter("throttled_requests", "429 responses", self.throttled);
        r.counter("retries", "Retried attempts", self.retries);
        let f = Family::<Labels, Counter<f64, AtomicU64>>::default();
        r.reg.register(
            "request_seconds",
            "Response times of answered attempts, summed",
            f.clone(),
        );
        f.get_or_create(&r.base).inc_by(self.latency.0);
        r.counter(
            "answered_requests",
            "Answered attempts (in request_seconds)",
            self.latency.1,
        );
        self.render_output(&mut r);
        let mut out = String::new();
        encode(&mut out, &r.reg).expect("writing to a String cannot fail");
        out
    }

    /// Bytes, files, when and how long; the last success.
    fn render_output(&self, r: &mut Reg) {
        r.counter("received_bytes", "Response bytes received", self.bytes.0);
        r.counter("written_bytes", "Bytes of files put in place", self.bytes.1);
        r.counter("files_written", "Files put in place", self.files_written);
        r.gauge(
            "run_start_timestamp_seconds",
            "Run start, Unix time",
            self.started_s,
        );
        r.gauge(
            "run_duration_seconds",
            "Wall time of the run so far",
            self.duration_s,
        );
        if let Some(t) = self.last_success_s {
            r.gauge(
                "last_success_timestamp_seconds",
                "End of the pipeline's last run that exported everything",
                t,
            );
        }
    }
}

type Labels = Vec<(String, String)>;

/// A registry whose series all carry the `pipeline` label.
struct Reg {
    reg: Registry,
    base: Labels,
}

impl Reg {
    fn new(pipeline: &str) -> Self {
        Reg {
            reg: Registry::with_prefix("engati_etl"),
            base: vec![("pipeline".to_owned(), pipeline.to_owned())],
        }
    }

    fn labels(&self, more: &[(&str, &str)]) -> Labels {
        let mut l = self.base.clone();
        l.extend(more.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        l
    }

    fn gauge_with(&mut self, name: &str, help: &str, more: &[(&str, &str)], v: f64) {
        let f = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        self.reg.register(name, help, f.clone());
        f.get_or_create(&self.labels(more)).set(v);
    }

    fn gauge(&mut self, name: &str, help: &str, v: f64) {
        self.gauge_with(name, help, &[], v);
    }

    fn counters(&mut self, name: &str, help: &str, key: &str, names: &[&str], values: &[u64]) {
        let f = Family::<Labels, Counter>::default();
        self.reg.register(name, help, f.clone());
        for (n, v) in names.iter().zip(values) {
            f.get_or_create(&self.labels(&[(key, n)])).inc_by(*v);
        }
    }

    fn counter(&mut self, name: &str, help: &str, v: u64) {
        let f = Family::<Labels, Counter>::default();
        self.reg.register(name, help, f.clone());
        f.get_or_create(&self.base).inc_by(v);
    }
}

/// The content type of [`Snapshot::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `--metrics-listen ADDR`: serves `GET /metrics` (what `render` returns now) until the
/// returned task is aborted. Any other path is a 404.
///
/// # Errors
/// The address cannot be bound.
pub async fn serve(
    addr: std::net::SocketAddr,
    render: impl Fn() -> String + Send + Sync + 'static,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use axum::http::header;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let render = std::sync::Arc::new(render);
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let render = render.clone();
            async move { ([(header::CONTENT_TYPE, CONTENT_TYPE)], render()) }
        }),
    );
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    }))
}

/// Writes `text` to `path` atomically: a temp file beside it, fsynced, renamed over it.
///
/// # Errors
/// I/O errors (the temp file is removed).
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_has_every_series_with_the_pipeline_label() {
        let s = Snapshot {
            pipeline: "nightly".into(),
            command: "run".into(),
            run_id: "r1".into(),
            outcome: "succeeded".into(),
            exit_code: Some(0),
            messages: [10, 1, 2],
            requests: [0, 7, 0, 1, 2, 3],
            last_success_s: Some(1.5),
            ..Snapshot::default()
        };
        let text = s.render();
        assert!(text.ends_with("# EOF\n"), "{text}");
        for line in [
            "engati_etl_messages_total{pipeline=\"nightly\",status=\"written\"} 10",
            "engati_etl_requests_total{pipeline=\"nightly\",class=\"transport_error\"} 3",
            "engati_etl_exit_code{pipeline=\"nightly\"} 0.0",
            "engati_etl_up{pipeline=\"nightly\"} 0.0",
            "engati_etl_last_success_timestamp_seconds{pipeline=\"nightly\"} 1.5",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }

    #[test]
    fn a_live_snapshot_says_running() {
        let c = RunControl::default();
        c.sink.rows.store(42, Ordering::Relaxed);
        let text = Snapshot::live(&c, "nightly", "run", crate::time::now_ms()).render();
        for line in [
            "engati_etl_up{pipeline=\"nightly\"} 1.0",
            "engati_etl_exit_code{pipeline=\"nightly\"} -1.0",
            "engati_etl_messages_total{pipeline=\"nightly\",status=\"written\"} 42",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        assert!(text.contains("outcome=\"running\""));
    }

    #[test]
    fn an_atomic_write_replaces_the_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("engati.prom");
        write_atomic(&p, "a\n").unwrap();
        write_atomic(&p, "b\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "b\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
