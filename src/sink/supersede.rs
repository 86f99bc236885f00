//! Exactly-once across runs: before a commit puts new files in place, the rows it re-exports
//! are taken out of the files already in the output.
//!
//! A commit covers cells (user, window). Any existing file whose ledger bounds (time span and
//! user range) overlap those cells is a candidate. A file written by the same unit and cell
//! range is replaced whole without reading it (the common "re-run the same window" case).
//! Otherwise the file's `channel_user_id` and `sent_at` columns are read: if none of its rows
//! is re-exported it stays; if all are, it is removed; if some are, the rest is rewritten to
//! a new file (a remnant) that replaces it in the same commit. Dead-letter files are handled
//! the same way, by user and window.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMillisecondType;
use arrow_array::{BooleanArray, RecordBatch};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Deserialize;

use super::SinkError;
use super::part::{Counting, Encoding, Finished, PartWriter};
use crate::model::Window;
use crate::schema;
use crate::state::FileRecord;

/// The re-exported cells of a commit: user -> window.
pub type CellMap<'a> = HashMap<&'a str, Window>;

/// What a commit does to existing files.
#[derive(Debug, Default)]
pub struct Replacement {
    /// Files removed (relative paths).
    pub removes: Vec<String>,
    /// Remnants: (staged relative path, record with the final path).
    pub remnants: Vec<(String, FileRecord)>,
    /// Rows taken out of the output.
    pub rows_removed: u64,
}

/// Decides, for each candidate file, keep / remove / rewrite. `remnant_name(n)` gives the
/// (staged, final) relative paths of the n-th remnant.
///
/// # Errors
/// [`SinkError`] reading or writing files.
pub fn replace(
    out_dir: &Path,
    enc: &Encoding,
    candidates: Vec<FileRecord>,
    cells: &CellMap<'_>,
    same_unit: impl Fn(&FileRecord) -> bool,
    mut remnant_name: impl FnMut(&FileRecord) -> (String, String),
) -> Result<Replacement, SinkError> {
    let mut out = Replacement::default();
    for f in candidates {
        if same_unit(&f) {
            out.rows_removed += f.rows;
            out.removes.push(f.path);
            continue;
        }
        let abs = out_dir.join(&f.path);
        let drop = match f.stream.as_str() {
            "dead_letter" => dead_letter_mask(&abs, cells)?,
            _ if f.path.ends_with(".parquet") => parquet_mask(&abs, cells)?,
            _ => jsonl_mask(&abs, cells)?,
        };
        let dropped = drop.iter().filter(|d| **d).count() as u64;
        if dropped == 0 {
            continue;
        }
        out.rows_removed += dropped;
        if dropped as usize == drop.len() {
            out.removes.push(f.path);
            continue;
        }
        let (staged, fin) = remnant_name(&f);
        let staged_abs = out_dir.join(&staged);
        let (rows, done) = if f.path.ends_with(".parquet") {
            rewrite_parquet(&abs, &staged_abs, enc, &drop)?
        } else {
            rewrite_lines(&abs, &staged_abs, &drop)?
        };
        out.remnants.push((
            staged,
            FileRecord {
                path: fin,
                unit_key: if f.unit_key.starts_with("remnant:") {
                    f.unit_key.clone()
                } else {
                    format!("remnant:{}", f.unit_key)
                },
                rows,
                bytes: done.bytes,
                // The remnant's own bytes, not the replaced file's.
                checksum: Some(done.checksum),
                ..f.clone()
            },
        ));
        out.removes.push(f.path);
    }
    Ok(out)
}

fn open(path: &Path) -> Result<File, SinkError> {
    File::open(path).map_err(|source| SinkError::Io {
        action: "reading",
        path: path.to_owned(),
        source,
    })
}

pub(super) fn parquet_mask(path: &Path, cells: &CellMap<'_>) -> Result<Vec<bool>, SinkError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(open(path)?)
        .map_err(|e| SinkError::parquet(path, e))?;
    let mask = ProjectionMask::columns(
        builder.parquet_schema(),
        [schema::CHANNEL_USER_ID, schema::SENT_AT],
    );
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|e| SinkError::parquet(path, e))?;
    let mut drop = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| SinkError::arrow(path, e))?;
        let users = batch
            .column_by_name(schema::CHANNEL_USER_ID)
            .map(|c| c.as_string::<i32>().clone());
        // Millisecond timestamps (our Parquet) or microseconds (our Delta tables).
        let ms = arrow_schema::DataType::Timestamp(arrow_schema::TimeUnit::Millisecond, None);
        let sent = batch
            .column_by_name(schema::SENT_AT)
            .and_then(|c| arrow_cast::cast(c, &ms).ok())
            .map(|c| c.as_primitive::<TimestampMillisecondType>().clone());
        let (Some(users), Some(sent)) = (users, sent) else {
            return Err(SinkError::Foreign(path.to_owned()));
        };
        for i in 0..batch.num_rows() {
            drop.push(
                cells
                    .get(users.value(i))
                    .is_some_and(|w| w.contains(sent.value(i))),
            );
        }
    }
    Ok(drop)
}

fn lines(path: &Path) -> Result<Box<dyn BufRead>, SinkError> {
    let f = open(path)?;
    let r: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(f))
    } else {
        Box::new(f)
    };
    Ok(Box::new(BufReader::with_capacity(1 << 20, r)))
}

#[derive(Deserialize)]
struct MessageKey<'a> {
    #[serde(borrow)]
    channel_user_id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    sent_at: std::borrow::Cow<'a, str>,
}

#[derive(Deserialize)]
struct DeadKey<'a> {
    #[serde(borrow)]
    channel_user_id: std::borrow::Cow<'a, str>,
    window_start_ms: i64,
    window_end_ms: i64,
}

fn for_each_line(
    path: &Path,
    mut f: impl FnMut(&str) -> Result<bool, SinkError>,
) -> Result<Vec<bool>, SinkError> {
    let mut out = Vec::new();
    for line in lines(path)?.lines() {
        let line = line.map_err(|source| SinkError::Io {
            action: "reading",
            path: path.to_owned(),
            source,
        })?;
        if line.is_empty() {
            continue;
        }
        out.push(f(&line)?);
    }
    Ok(out)
}

fn jsonl_mask(path: &Path, cells: &CellMap<'_>) -> Result<Vec<bool>, SinkError> {
    for_each_line(path, |line| {
        let k: MessageKey<'_> =
            serde_json::from_str(line).map_err(|_| SinkError::Foreign(path.to_owned()))?;
        let t = crate::time::parse_rfc3339_ms(&k.sent_at)
            .ok_or_else(|| SinkError::Foreign(path.to_owned()))?;
        Ok(cells
            .get(k.channel_user_id.as_ref())
            .is_some_and(|w| w.contains(t)))
    })
}

fn dead_letter_mask(path: &Path, cells: &CellMap<'_>) -> Result<Vec<bool>, SinkError> {
    for_each_line(path, |line| {
        let k: DeadKey<'_> =
            serde_json::from_str(line).map_err(|_| SinkError::Foreign(path.to_owned()))?;
        let w = Window {
            start_ms: k.window_start_ms,
            end_ms: k.window_end_ms,
        };
        Ok(cells
            .get(k.channel_user_id.as_ref())
            .is_some_and(|c| c.overlaps(&w)))
    })
}

pub(super) fn rewrite_parquet(
    src: &Path,
    dst: &Path,
    enc: &Encoding,
    drop: &[bool],
) -> Result<(u64, Finished), SinkError> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(open(src)?)
        .and_then(|b| b.build())
        .map_err(|e| SinkError::parquet(src, e))?;
    let mut writer: Option<PartWriter> = None;
    let mut offset = 0usize;
    for batch in reader {
        let batch: RecordBatch = batch.map_err(|e| SinkError::arrow(src, e))?;
        let keep: BooleanArray = drop[offset..offset + batch.num_rows()]
            .iter()
            .map(|d| Some(!d))
            .collect();
        offset += batch.num_rows();
        let kept = arrow_select::filter::filter_record_batch(&batch, &keep)
            .map_err(|e| SinkError::arrow(src, e))?;
        if kept.num_rows() == 0 {
            continue;
        }
        if writer.is_none() {
            writer = Some(PartWriter::create(dst, enc, kept.schema())?);
        }
        if let Some(w) = writer.as_mut() {
            w.write(&kept)?;
        }
    }
    let w = writer.ok_or_else(|| SinkError::Foreign(src.to_owned()))?;
    let rows = w.rows();
    Ok((rows, w.finish()?))
}

fn rewrite_lines(src: &Path, dst: &Path, drop: &[bool]) -> Result<(u64, Finished), SinkError> {
    let io = |action, path: &Path| {
        let path = path.to_owned();
        move |source| SinkError::Io {
            action,
            path,
            source,
        }
    };
    let file = File::create(dst).map_err(io("creating", dst))?;
    let gz = dst.to_string_lossy().contains(".gz");
    // Counted and hashed below the compressor: the bytes as they are on disk.
    let out = Counting::new(BufWriter::new(file));
    let (rows, out) = if gz {
        let mut w = flate2::write::GzEncoder::new(out, flate2::Compression::default());
        let rows = copy_kept_lines(src, &mut w, drop).map_err(io("writing", dst))?;
        (rows, w.finish().map_err(io("writing", dst))?)
    } else {
        let mut w = out;
        let rows = copy_kept_lines(src, &mut w, drop).map_err(io("writing", dst))?;
        (rows, w)
    };
    let (buf, bytes, checksum) = out.into_parts();
    let file = buf
        .into_inner()
        .map_err(|e| io("writing", dst)(e.into_error()))?;
    file.sync_all().map_err(io("syncing", dst))?;
    Ok((rows, Finished { bytes, checksum }))
}

fn copy_kept_lines(src: &Path, w: &mut impl Write, drop: &[bool]) -> std::io::Result<u64> {
    let reader = lines(src).map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut rows = 0u64;
    let mut i = 0usize;
    for line in reader.lines() {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        if !drop.get(i).copied().unwrap_or(false) {
            w.write_all(line.as_bytes())?;
            w.write_all(b"\n")?;
            rows += 1;
        }
        i += 1;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, StringArray, TimestampMillisecondArray};
    use arrow_schema::{DataType, Field, Schema, TimeUnit};

    use super::*;
    use crate::sink::Format;
    use crate::state::checksum;

    #[test]
    fn a_remnant_is_recorded_with_its_own_size_and_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let utc = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        let schema = Arc::new(Schema::new(vec![
            Field::new(schema::CHANNEL_USER_ID, DataType::Utf8, false),
            Field::new(schema::SENT_AT, utc, false),
        ]));
        let users: ArrayRef = Arc::new(StringArray::from(vec!["a", "b", "a", "b"]));
        let sent: ArrayRef = Arc::new(
            TimestampMillisecondArray::from(vec![1000, 2000, 3000, 4000]).with_timezone("UTC"),
        );
        let batch = RecordBatch::try_new(schema.clone(), vec![users, sent]).unwrap();
        // User `a` is re-exported: half of each file goes, the rest is a remnant.
        let cells: CellMap<'_> = [(
            "a",
            Window {
                start_ms: 0,
                end_ms: 10_000,
            },
        )]
        .into_iter()
        .collect();
        for (format, gzip) in [
            (Format::Parquet, false),
            (Format::Jsonl, false),
            (Format::Jsonl, true),
        ] {
            let enc = Encoding::new(format, gzip, 3, 1 << 20, 6).unwrap();
            let name = format!("f.{}", enc.extension());
            let path = dir.path().join(&name);
            let mut w = PartWriter::create(&path, &enc, schema.clone()).unwrap();
            w.write(&batch).unwrap();
            let old = w.finish().unwrap();
            let candidate = FileRecord {
                path: name.clone(),
                stream: "messages".into(),
                unit_key: "u1".into(),
                cells_from: 0,
                cells_to: 1,
                min_user: "a".into(),
                max_user: "b".into(),
                min_ms: 0,
                max_ms: 10_000,
                rows: 4,
                bytes: old.bytes,
                checksum: Some(old.checksum.clone()),
            };
            let r = replace(
                dir.path(),
                &enc,
                vec![candidate],
                &cells,
                |_| false,
                |_| (format!(".r-{name}.tmp"), format!("r-{name}")),
            )
            .unwrap();
            assert_eq!((r.rows_removed, r.removes.clone()), (2, vec![name.clone()]));
            let (staged, rec) = &r.remnants[0];
            assert_eq!(
                (rec.path.as_str(), rec.rows),
                (format!("r-{name}").as_str(), 2)
            );
            assert_eq!(rec.unit_key, "remnant:u1");
            let bytes = std::fs::read(dir.path().join(staged)).unwrap();
            assert_eq!(rec.bytes, bytes.len() as u64, "{name}");
            assert_eq!(rec.checksum, Some(checksum::of_bytes(&bytes)), "{name}");
            assert_ne!(rec.checksum, Some(old.checksum), "{name}");
        }
    }
}
