//! `engati-etl report (PIPELINE.toml | --out DIR) --html FILE`: one self-contained HTML page
//! about an output, for people who would rather look than read JSON (what `dlt pipeline NAME
//! show` is for dlt users).
//!
//! The page has no script, no style sheet, image or font from elsewhere, and makes no request:
//! inline CSS and inline SVG charts drawn with `plotters` ([`charts`]). It shows the last
//! finished run's figures (each cell carries `data-k="<path in the run report>"`, so a test or a
//! scraper can compare them with `_run_report.json`), then charts: messages per UTC day per
//! channel and the largest users (from the output's files, [`data`]), requests per second and
//! mean latency, retries and 429s, cells and rows committed over the run (from the report's
//! `timeline`), and the runs of the output with their outcome.

pub mod charts;
pub mod data;

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::error::Error;
use crate::timeline::Timeline;
use charts::Line;
use data::ReportData;

/// The figures of the last run shown on the page: (label, path in the run report).
pub const FIGURES: [(&str, &str); 17] = [
    ("run id", "run_id"),
    ("outcome", "status"),
    ("started", "started_at"),
    ("wall time, ms", "duration_ms"),
    ("users", "users"),
    ("cells planned", "cells.planned"),
    ("cells skipped (already committed)", "cells.skipped"),
    ("cells committed", "cells.committed"),
    ("messages written", "messages.written"),
    ("messages rejected (dead letter)", "messages.rejected"),
    ("messages outside window", "messages.outside_window"),
    ("requests", "requests.total"),
    ("retries", "requests.retries"),
    ("429 responses", "requests.by_status.429"),
    ("bytes received", "requests.bytes_received"),
    ("files written", "sink.files_written"),
    ("bytes written", "sink.bytes_written"),
];

/// The page for the output in `out_dir` with its state in `state_dir`; `runs` runs listed.
///
/// # Errors
/// State errors; output files that cannot be read.
pub fn build(out_dir: &Path, state_dir: &Path, runs: usize) -> Result<String, Error> {
    let d = data::gather(out_dir, state_dir, runs)?;
    Ok(render(&d))
}

/// A value at a dotted path of the report (`requests.by_status.429`); 0 for a missing count.
pub fn at<'a>(report: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(report, |v, k| v.get(k))
}

fn esc(s: &str) -> String {
    html_escape::encode_text(s).into_owned()
}

const STYLE: &str = "body{font-family:sans-serif;margin:24px auto;max-width:1000px;color:#222}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}.muted{color:#777}
.succeeded{color:#2a7d2a}.failed,.crashed{color:#b22}.completed_with_rejects,.interrupted{color:#b60}
figure{margin:12px 0}";

/// The HTML text.
pub fn render(d: &ReportData) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>engati-etl report: {out}</title><style>{STYLE}</style></head><body>\
         <h1>engati-etl report: {out}</h1>\
         <p class=\"muted\">Generated {now}. Messages in the output: \
         <span data-k=\"output.messages\">{rows}</span>, users: \
         <span data-k=\"output.users\">{users}</span>.</p>",
        out = esc(&d.out_dir),
        now = crate::time::rfc3339_ms(crate::time::now_ms()),
        rows = d.total_rows,
        users = d.total_users,
    );
    last_run(&mut h, d.last.as_ref());
    h.push_str("<h2>Messages per UTC day and channel</h2><figure>");
    h.push_str(&charts::stacked_bars(
        "Messages in the output per UTC day, by channel",
        "messages",
        &d.per_day,
    ));
    h.push_str("</figure>");
    if let Some(t) = &d.timeline {
        over_time(&mut h, t);
    }
    h.push_str("<h2>Largest users</h2><figure>");
    h.push_str(&charts::horizontal_bars(
        "Users with the most messages in the output",
        "messages",
        &d.top_users,
    ));
    h.push_str("</figure>");
    runs(&mut h, d);
    h.push_str("</body></html>\n");
    h
}

fn last_run(h: &mut String, last: Option<&Value>) {
    h.push_str("<h2>Last run</h2>");
    let Some(r) = last else {
        h.push_str("<p>No finished run yet.</p>");
        return;
    };
    h.push_str("<table>");
    for (label, path) in FIGURES {
        let v = at(r, path);
        let text = match v {
            Some(Value::String(s)) => esc(s),
            Some(v) => v.to_string(),
            None => "0".into(),
        };
        let class = match (path, v) {
            ("status", _) => format!(" class=\"{text}\""),
            (_, Some(Value::Number(_)) | None) => " class=\"n\"".into(),
            _ => String::new(),
        };
        let _ = write!(
            h,
            "<tr><th>{label}</th><td data-k=\"{path}\"{class}>{text}</td></tr>"
        );
    }
    if let Some(e) = r["error"].as_str() {
        let _ = write!(h, "<tr><th>error</th><td>{}</td></tr>", esc(e));
    }
    let privacy = match r.get("privacy") {
        Some(p) if !p.is_null() => esc(&p.to_string()),
        _ => "none".into(),
    };
    let _ = write!(
        h,
        "<tr><th>privacy policy</th><td>{privacy}</td></tr></table>"
    );
}

/// The timeline with the buckets in which nothing happened put back (as zeros), so that a
/// rate drawn from it drops to 0 in a pause instead of bridging it.
fn dense(t: &Timeline) -> Timeline {
    let mut out = Timeline {
        bucket_ms: t.bucket_ms,
        buckets: Vec::with_capacity(t.buckets.len()),
    };
    for b in &t.buckets {
        let mut next = out.buckets.last().map_or(0, |l| l.t_ms + t.bucket_ms);
        while next < b.t_ms {
            out.buckets.push(crate::timeline::Bucket {
                t_ms: next,
                counts: Default::default(),
            });
            next += t.bucket_ms;
        }
        out.buckets.push(*b);
    }
    out
}

/// The timeline charts.
fn over_time(h: &mut String, t: &Timeline) {
    let t = &dense(t);
    let secs = t.bucket_ms as f64 / 1000.0;
    let x = |b: &crate::timeline::Bucket| b.t_ms as f64 / 1000.0;
    // Each bucket is drawn as a step over its length (a short run has one bucket).
    let series = |f: &dyn Fn(&crate::timeline::Bucket) -> Option<f64>| -> Vec<(f64, f64)> {
        t.buckets
            .iter()
            .filter_map(|b| f(b).map(|y| [(x(b), y), (x(b) + secs, y)]))
            .flatten()
            .collect()
    };
    let per_s =
        |f: fn(&crate::timeline::Counts) -> u64| series(&|b| Some(f(&b.counts) as f64 / secs));
    let _ = write!(
        h,
        "<h2>Over the run</h2><p class=\"muted\">Buckets of {secs} s (see the run report's timeline).</p><figure>"
    );
    h.push_str(&charts::lines(
        "Requests per second, by status class",
        "seconds since the start",
        "requests/s",
        &[
            Line {
                label: "2xx",
                points: per_s(|c| c.requests_2xx),
            },
            Line {
                label: "4xx",
                points: per_s(|c| c.requests_4xx),
            },
            Line {
                label: "5xx",
                points: per_s(|c| c.requests_5xx),
            },
            Line {
                label: "transport errors",
                points: per_s(|c| c.transport_errors),
            },
        ],
    ));
    h.push_str("</figure><figure>");
    let latency = series(&|b| {
        (b.counts.latency_count > 0)
            .then(|| b.counts.latency_us as f64 / b.counts.latency_count as f64 / 1000.0)
    });
    h.push_str(&charts::lines(
        "Mean response time",
        "seconds since the start",
        "ms",
        &[Line {
            label: "mean latency",
            points: latency,
        }],
    ));
    h.push_str("</figure>");
    commits_over_time(h, t);
}

/// Retries and 429s per bucket; cells and rows committed, cumulated.
fn commits_over_time(h: &mut String, t: &Timeline) {
    let secs = t.bucket_ms as f64 / 1000.0;
    let x = |b: &crate::timeline::Bucket| b.t_ms as f64 / 1000.0;
    let count = |f: fn(&crate::timeline::Counts) -> u64| -> Vec<(f64, f64)> {
        t.buckets
            .iter()
            .flat_map(|b| {
                let y = f(&b.counts) as f64;
                [(x(b), y), (x(b) + secs, y)]
            })
            .collect()
    };
    h.push_str("<figure>");
    h.push_str(&charts::lines(
        &format!("Retries and 429s per {secs} s"),
        "seconds since the start",
        "count",
        &[
            Line {
                label: "retries",
                points: count(|c| c.retries),
            },
            Line {
                label: "429 responses",
                points: count(|c| c.throttled),
            },
        ],
    ));
    h.push_str("</figure><figure>");
    let cumulative = |f: fn(&crate::timeline::Counts) -> u64| {
        let mut sum = 0u64;
        let mut pts = vec![(0.0, 0.0)];
        for b in &t.buckets {
            sum += f(&b.counts);
            pts.push((x(b) + secs, sum as f64));
        }
        pts
    };
    h.push_str(&charts::lines(
        "Cells committed over the run",
        "seconds since the start",
        "cells",
        &[Line {
            label: "cells committed",
            points: cumulative(|c| c.cells_committed),
        }],
    ));
    h.push_str("</figure><figure>");
    h.push_str(&charts::lines(
        "Rows committed over the run",
        "seconds since the start",
        "messages",
        &[Line {
            label: "rows committed",
            points: cumulative(|c| c.rows_committed),
        }],
    ));
    h.push_str("</figure>");
}

fn runs(h: &mut String, d: &ReportData) {
    h.push_str(
        "<h2>Runs of this output</h2><table><tr><th>started</th><th>run id</th>\
         <th>namespace</th><th>outcome</th><th>wall time, s</th><th>messages written</th>\
         <th>rejected</th><th>requests</th></tr>",
    );
    let n = |v: Option<u64>| v.map_or_else(|| "—".into(), |v| v.to_string());
    for r in &d.runs {
        let class = r.status.split_whitespace().next().unwrap_or("");
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{class}\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&r.started),
            esc(&r.run_id),
            esc(&r.namespace),
            esc(&r.status),
            r.duration_ms
                .map_or_else(|| "—".into(), |ms| format!("{:.1}", ms as f64 / 1000.0)),
            n(r.written),
            n(r.rejected),
            n(r.requests),
        );
    }
    h.push_str("</table>");
}
