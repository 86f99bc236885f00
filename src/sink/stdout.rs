//! `--out -`: messages as JSON Lines on standard output, dead letters as JSON lines on stderr.
//!
//! No files, no state, no atomicity: a stream for pipes (`| jq`, `| head`). Each unit's lines
//! are flushed at its commit. A closed pipe stops the export cleanly
//! ([`SinkError::OutputClosed`], exit 0).

use std::io::{BufWriter, Stdout, Write};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_json::writer::{LineDelimited, Writer};

use super::part::{json_ready, jsonl_writer};
use super::{Committed, DeadLetters, Sink, SinkEnd, SinkError, UnitInfo};

/// Rows written to stdout at a time.
const SLICE_ROWS: usize = 64;

/// The stdout sink.
pub struct StdoutSink {
    writer: Writer<BufWriter<Stdout>, LineDelimited>,
    /// Rows written since the last commit.
    pending_rows: u64,
}

impl Default for StdoutSink {
    fn default() -> Self {
        StdoutSink {
            writer: jsonl_writer(BufWriter::with_capacity(1 << 16, std::io::stdout())),
            pending_rows: 0,
        }
    }
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

fn io_error(e: std::io::Error) -> SinkError {
    stdout_error(arrow_schema::ArrowError::IoError(e.to_string(), e))
}

impl Sink for StdoutSink {
    fn begin_unit(&mut self, _unit: Arc<UnitInfo>) -> Result<(), SinkError> {
        Ok(())
    }

    fn write(&mut self, rows: RecordBatch) -> Result<(), SinkError> {
        let batch = json_ready(&rows).map_err(stdout_error)?;
        // Written and flushed a slice at a time: a reader that closed the pipe (`| head`) is
        // noticed at once, and the rows that did get through are counted.
        let mut at = 0;
        while at < batch.num_rows() {
            let n = SLICE_ROWS.min(batch.num_rows() - at);
            self.writer
                .write(&batch.slice(at, n))
                .map_err(stdout_error)?;
            self.writer.get_mut().flush().map_err(io_error)?;
            self.pending_rows += n as u64;
            at += n;
        }
        Ok(())
    }

    fn commit(&mut self, _cells_done: u32, dead: DeadLetters) -> Result<Committed, SinkError> {
        if !dead.is_empty() {
            let _ = std::io::stderr().write_all(&dead.lines);
        }
        self.writer.get_mut().flush().map_err(io_error)?;
        Ok(Committed {
            rows: std::mem::take(&mut self.pending_rows),
            rejects: dead.rows,
            ..Committed::default()
        })
    }

    fn abort(&mut self) {}

    fn finish(mut self: Box<Self>) -> SinkEnd {
        let _ = self.writer.finish();
        let _ = self.writer.get_mut().flush();
        SinkEnd {
            rows_uncommitted: self.pending_rows,
            ..SinkEnd::default()
        }
    }
}
