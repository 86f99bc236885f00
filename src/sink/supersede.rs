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
use super::part::{Encoding, PartWriter};
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
        let (rows, bytes) = if f.path.ends_with(".parquet") {
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
                bytes,
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
) -> Result<(u64, u64), SinkError> {
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
    let bytes = w.finish()?;
    Ok((rows, bytes))
}

fn rewrite_lines(src: &Path, dst: &Path, drop: &[bool]) -> Result<(u64, u64), SinkError> {
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
    let (rows, buf) = if gz {
        let mut w =
            flate2::write::GzEncoder::new(BufWriter::new(file), flate2::Compression::default());
        let rows = copy_kept_lines(src, &mut w, drop).map_err(io("writing", dst))?;
        (rows, w.finish().map_err(io("writing", dst))?)
    } else {
        let mut w = BufWriter::new(file);
        let rows = copy_kept_lines(src, &mut w, drop).map_err(io("writing", dst))?;
        (rows, w)
    };
    let file = buf
        .into_inner()
        .map_err(|e| io("writing", dst)(e.into_error()))?;
    file.sync_all().map_err(io("syncing", dst))?;
    let bytes = file.metadata().map_err(io("reading", dst))?.len();
    Ok((rows, bytes))
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
