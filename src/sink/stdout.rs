//! `--out -`: messages as JSON Lines on standard output, rejects as JSON lines on stderr.
//!
//! No files, no state, no atomicity: a stream for pipes (`| jq`, `| head`). A closed pipe
//! stops the export cleanly ([`SinkError::OutputClosed`]).

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;

use super::part::jsonl_writer;
use super::{SinkCounters, SinkError, SinkMsg, SinkReport, UnitInfo, dead_letter};

/// Starts the stdout sink thread.
pub fn spawn(
    run_id: String,
    counters: Arc<SinkCounters>,
    capacity: usize,
) -> (
    mpsc::Sender<SinkMsg>,
    std::thread::JoinHandle<(SinkReport, Option<SinkError>)>,
) {
    let (tx, mut rx) = mpsc::channel::<SinkMsg>(capacity.max(1));
    let handle = std::thread::Builder::new()
        .name("engati-etl-stdout".into())
        .spawn(move || {
            let mut report = SinkReport::default();
            let stdout = std::io::stdout().lock();
            let mut writer = jsonl_writer(std::io::BufWriter::with_capacity(1 << 16, stdout));
            let mut unit: Option<Arc<UnitInfo>> = None;
            let mut pending_rows = 0u64;
            let mut pending_rejects = 0u64;
            let mut error = None;
            while let Some(msg) = rx.blocking_recv() {
                match msg {
                    SinkMsg::BeginUnit(info) => unit = Some(info),
                    SinkMsg::Page {
                        cell,
                        rows,
                        rejects,
                    } => {
                        if let (Some(info), false) = (&unit, rejects.is_empty())
                            && let Some(c) = info.cells.get(cell as usize)
                        {
                            let mut buf = Vec::new();
                            for r in &rejects {
                                dead_letter::encode(&mut buf, &run_id, &c.user, c.window, r);
                            }
                            let _ = std::io::stderr().write_all(&buf);
                            pending_rejects += rejects.len() as u64;
                        }
                        if let Some(batch) = rows {
                            let batch = match super::part::json_ready(&batch) {
                                Ok(b) => b,
                                Err(e) => {
                                    error = Some(stdout_error(e));
                                    break;
                                }
                            };
                            if let Err(e) = writer.write(&batch) {
                                error = Some(stdout_error(e));
                                break;
                            }
                            pending_rows += batch.num_rows() as u64;
                        }
                    }
                    SinkMsg::EndUnit { cells_done } => {
                        if let Err(e) = writer.get_mut().flush() {
                            error = Some(stdout_error(arrow_schema::ArrowError::IoError(
                                e.to_string(),
                                e,
                            )));
                            break;
                        }
                        report.rows_written += pending_rows;
                        report.rejects_written += pending_rejects;
                        report.cells_committed += u64::from(cells_done);
                        report.units_committed += 1;
                        counters.rows.fetch_add(pending_rows, Ordering::Relaxed);
                        counters
                            .cells
                            .fetch_add(u64::from(cells_done), Ordering::Relaxed);
                        counters
                            .rejects
                            .fetch_add(pending_rejects, Ordering::Relaxed);
                        pending_rows = 0;
                        pending_rejects = 0;
                    }
                    SinkMsg::AbortUnit | SinkMsg::WriteUsers { .. } => {}
                }
            }
            if error.is_none() {
                if let Err(e) = writer.finish() {
                    error = Some(stdout_error(e));
                } else if let Err(e) = writer.get_mut().flush() {
                    error = Some(stdout_error(arrow_schema::ArrowError::IoError(
                        e.to_string(),
                        e,
                    )));
                }
            }
            (report, error)
        })
        .expect("spawning a thread");
    (tx, handle)
}

fn stdout_error(e: arrow_schema::ArrowError) -> SinkError {
    match &e {
        arrow_schema::ArrowError::IoError(_, io) if io.kind() == std::io::ErrorKind::BrokenPipe => {
            SinkError::OutputClosed
        }
        _ => SinkError::Arrow {
            path: "<stdout>".into(),
            source: e,
        },
    }
}
