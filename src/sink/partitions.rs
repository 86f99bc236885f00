//! A unit's rows split by the UTC date of `sent_at` into one [`RotatingWriter`] per date
//! partition (`<prefix>=YYYY-MM-DD/`), shared by the file and Delta sinks.
//!
//! For a Parquet unit whose window spans several days, rows wait per date in memory, up to
//! [`MAX_PENDING_BYTES`] for the whole unit; beyond it the date holding the most is written out
//! as one row group. Why not keep one Parquet writer building a row group per date: each
//! column of each open row group holds a zstd context (about 1 MB), so 31 dates x 20 columns
//! would cost hundreds of MB; this way one row group is encoded at a time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use super::SinkError;
use super::part::{Encoding, Format};
use super::rotating::{RotatingWriter, StagedFile};
use crate::schema;
use crate::time::{DAY_MS, date_string, day_of};

/// Arrow memory, bytes, that a multi-day unit may hold in rows waiting for their date
/// partition (Parquet only). Tests lower it with the failpoint
/// `files::pending_limit=return(BYTES)` (feature `fault-injection`) to make the spill path run
/// on small data.
pub const MAX_PENDING_BYTES: usize = 32 * 1024 * 1024;

fn pending_limit() -> usize {
    fail::fail_point!("files::pending_limit", |v| {
        v.and_then(|s| s.parse().ok()).unwrap_or(MAX_PENDING_BYTES)
    });
    MAX_PENDING_BYTES
}

/// How a unit's files are laid out.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Where the staged files go (the output directory, or a local staging directory).
    pub root: PathBuf,
    /// The partition directory prefix: `messages/date` (files) or `date` (Delta).
    pub dir_prefix: &'static str,
    /// File name stem (`part-<unit>-<cell>`); the writer appends `-<seq>`.
    pub stem: String,
    /// The run's staged-name marker.
    pub run8: String,
    /// Format and encoding.
    pub encoding: Encoding,
    /// The files' schema.
    pub schema: SchemaRef,
    /// Rotate at this many (estimated) bytes.
    pub target_bytes: u64,
    /// Track exact min/max of the user and time columns per file (Delta's statistics).
    pub stats: bool,
    /// Applied to each batch before it is written (Delta: its column types).
    pub transform: Option<fn(RecordBatch) -> Result<RecordBatch, SinkError>>,
}

/// One date partition of the unit.
struct DayPart {
    writer: RotatingWriter,
    /// Rows of a multi-day unit waiting to be written, in arrival order.
    pending: Vec<RecordBatch>,
    /// Their Arrow memory, bytes.
    pending_bytes: usize,
}

/// The unit's date partitions.
pub struct DayPartitions {
    layout: Layout,
    parts: BTreeMap<i64, DayPart>,
    /// Sum of the partitions' `pending_bytes`.
    pending_bytes: usize,
    /// True when the unit spans several UTC days and the format is Parquet.
    multi_day: bool,
    pending_limit: usize,
}

impl DayPartitions {
    /// The partitions of a unit whose window is `window_ms` long.
    pub fn new(layout: Layout, window_ms: i64) -> Self {
        let multi_day = layout.encoding.format == Format::Parquet && window_ms > DAY_MS;
        DayPartitions {
            layout,
            parts: BTreeMap::new(),
            pending_bytes: 0,
            multi_day,
            pending_limit: pending_limit(),
        }
    }

    /// Routes rows to their date's file (or its pending rows).
    ///
    /// # Errors
    /// [`SinkError`] for encoding or I/O failures.
    pub fn write(&mut self, rows: RecordBatch) -> Result<(), SinkError> {
        let parts = by_day(rows)?;
        // Several days in date runs: each is a slice of the batch's buffers. Rows that wait (multi-day
        // Parquet) are copied out, so that a waiting slice does not keep the whole batch alive
        // and the pending bytes count what is held.
        for (day, batch, slice) in parts {
            let batch = if slice && self.multi_day {
                compact(&batch)?
            } else {
                batch
            };
            self.write_day(day, batch)?;
        }
        Ok(())
    }

    fn write_day(&mut self, day: i64, batch: RecordBatch) -> Result<(), SinkError> {
        let batch = match self.layout.transform {
            Some(f) => f(batch)?,
            None => batch,
        };
        let l = &self.layout;
        let part = self.parts.entry(day).or_insert_with(|| DayPart {
            writer: RotatingWriter::new(
                &l.root,
                format!("{}={}", l.dir_prefix, date_string(day * DAY_MS)),
                l.stem.clone(),
                &l.run8,
                &l.encoding,
                l.schema.clone(),
                l.target_bytes,
            )
            .with_stats(l.stats),
            pending: Vec::new(),
            pending_bytes: 0,
        });
        if !self.multi_day {
            return part.writer.write(&batch);
        }
        let bytes = batch.get_array_memory_size();
        part.pending.push(batch);
        part.pending_bytes += bytes;
        self.pending_bytes += bytes;
        while self.pending_bytes > self.pending_limit {
            let largest = self
                .parts
                .iter()
                .max_by_key(|(_, p)| p.pending_bytes)
                .map(|(d, _)| *d)
                .expect("pending rows are in some partition");
            self.drain(largest)?;
        }
        Ok(())
    }

    /// Writes a partition's pending rows as one row group (or more, past the row-group size)
    /// and ends it, so that no row group stays open in memory.
    fn drain(&mut self, day: i64) -> Result<(), SinkError> {
        let part = self.parts.get_mut(&day).expect("a partition with rows");
        self.pending_bytes -= std::mem::take(&mut part.pending_bytes);
        for b in std::mem::take(&mut part.pending) {
            part.writer.write(&b)?;
        }
        part.writer.flush_row_group()
    }

    /// Writes what is pending and finishes every file: `(UTC day number, file)` in date order.
    ///
    /// # Errors
    /// [`SinkError`] for encoding or I/O failures.
    pub fn finish(mut self) -> Result<Vec<(i64, StagedFile)>, SinkError> {
        let waiting: Vec<i64> = self
            .parts
            .iter()
            .filter(|(_, p)| !p.pending.is_empty())
            .map(|(d, _)| *d)
            .collect();
        for day in waiting {
            self.drain(day)?;
        }
        let mut staged = Vec::new();
        for (day, p) in std::mem::take(&mut self.parts) {
            staged.extend(p.writer.finish()?.into_iter().map(|f| (day, f)));
        }
        Ok(staged)
    }

    /// Deletes every file written.
    pub fn discard(self) {
        for (_, p) in self.parts {
            p.writer.discard();
        }
    }

    /// The staging root.
    pub fn root(&self) -> &Path {
        &self.layout.root
    }
}

/// A slice's rows in buffers of their own.
fn compact(batch: &RecordBatch) -> Result<RecordBatch, SinkError> {
    let all = arrow_array::UInt32Array::from_iter_values(0..batch.num_rows() as u32);
    arrow_select::take::take_record_batch(batch, &all)
        .map_err(|e| SinkError::arrow(Path::new("messages"), e))
}

/// Splits a batch by the UTC date of `sent_at`, in date order.
///
/// A cell's messages come in time order (oldest or newest first), so a batch's dates are
/// normally runs of rows: a date that is one run is a zero-copy slice (`true`). When dates recur
/// (a batch of several cells, or an API that does not sort), each date's rows are gathered
/// with one `take` (`false`: a copy), in their order in the batch.
fn by_day(batch: RecordBatch) -> Result<Vec<(i64, RecordBatch, bool)>, SinkError> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::TimestampMillisecondType;
    let sent = batch
        .column_by_name(schema::SENT_AT)
        .map(|c| c.as_primitive::<TimestampMillisecondType>().clone())
        .ok_or_else(|| SinkError::Crashed("batch without sent_at".into()))?;
    let values = sent.values();
    let first_day = day_of(values[0]);
    if values.iter().all(|&t| day_of(t) == first_day) {
        return Ok(vec![(first_day, batch, false)]);
    }
    // Runs of equal dates: (day, start, len).
    let mut runs: Vec<(i64, usize, usize)> = Vec::new();
    for (i, &t) in values.iter().enumerate() {
        let day = day_of(t);
        match runs.last_mut() {
            Some((d, _, len)) if *d == day => *len += 1,
            _ => runs.push((day, i, 1)),
        }
    }
    // By date, then row: a date's rows keep their order.
    runs.sort_unstable_by_key(|r| (r.0, r.1));
    if runs.windows(2).all(|w| w[0].0 < w[1].0) {
        // One run per date (oldest-first or newest-first pages): slices.
        return Ok(runs
            .into_iter()
            .map(|(day, start, len)| (day, batch.slice(start, len), true))
            .collect());
    }
    // A date in several runs (the batch holds several cells, each in time order): gather each
    // date's runs with one `take` (one pass over the rows in all, not one mask per date).
    let mut out = Vec::new();
    let mut i = 0;
    while i < runs.len() {
        let day = runs[i].0;
        let mut idx: Vec<u32> = Vec::new();
        while i < runs.len() && runs[i].0 == day {
            let (_, start, len) = runs[i];
            idx.extend(start as u32..(start + len) as u32);
            i += 1;
        }
        let rows = arrow_array::UInt32Array::from(idx);
        let b = arrow_select::take::take_record_batch(&batch, &rows)
            .map_err(|e| SinkError::arrow(Path::new("messages"), e))?;
        out.push((day, b, false));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::cast::AsArray;
    use arrow_array::types::TimestampMillisecondType;
    use arrow_array::{RecordBatch, TimestampMillisecondArray, UInt32Array};

    use super::*;

    fn batch(times: &[i64]) -> RecordBatch {
        let sent = TimestampMillisecondArray::from(times.to_vec()).with_timezone("UTC");
        let pos = UInt32Array::from((0..times.len() as u32).collect::<Vec<_>>());
        RecordBatch::try_from_iter([
            (schema::SENT_AT, Arc::new(sent) as arrow_array::ArrayRef),
            (schema::POSITION, Arc::new(pos) as arrow_array::ArrayRef),
        ])
        .expect("batch")
    }

    fn positions(parts: &[(i64, RecordBatch, bool)]) -> Vec<(i64, Vec<u32>)> {
        parts
            .iter()
            .map(|(d, b, _)| {
                let p = b.column_by_name(schema::POSITION).expect("position");
                (
                    *d,
                    p.as_primitive::<arrow_array::types::UInt32Type>()
                        .values()
                        .to_vec(),
                )
            })
            .collect()
    }

    #[test]
    fn rows_in_date_order_split_into_slices_by_day() {
        let (d0, d1, d2) = (10 * DAY_MS, 11 * DAY_MS, 13 * DAY_MS);
        let parts = by_day(batch(&[d0 + 5, d0 + 9, d1, d1 + 1, d2 + 7])).expect("split");
        assert_eq!(
            positions(&parts),
            vec![(10, vec![0, 1]), (11, vec![2, 3]), (13, vec![4])]
        );
        assert!(parts.iter().all(|p| p.2));
        let sent = parts[1].1.column_by_name(schema::SENT_AT).expect("sent_at");
        assert_eq!(
            sent.as_primitive::<TimestampMillisecondType>()
                .values()
                .to_vec(),
            vec![d1, d1 + 1]
        );
    }

    #[test]
    fn rows_out_of_date_order_are_gathered_per_day() {
        let (d0, d1) = (10 * DAY_MS, 11 * DAY_MS);
        let parts = by_day(batch(&[d1, d0, d1 + 3, d0 + 1])).expect("split");
        assert_eq!(positions(&parts), vec![(10, vec![1, 3]), (11, vec![0, 2])]);
        assert!(parts.iter().all(|p| !p.2));
        // Newest first: slices, in date order.
        let parts = by_day(batch(&[d1 + 3, d1, d0 + 1, d0])).expect("split");
        assert_eq!(positions(&parts), vec![(10, vec![2, 3]), (11, vec![0, 1])]);
        assert!(parts.iter().all(|p| p.2));
        let one = by_day(batch(&[d0, d0 + 1])).expect("one day");
        assert_eq!(positions(&one), vec![(10, vec![0, 1])]);
    }
}
