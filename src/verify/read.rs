//! Reading data files for `verify`: row counts, and the `message_id` column (with the user and
//! `sent_at` when a cell is compared), streamed batch by batch or line by line.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMillisecondType;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Deserialize;

use crate::schema;

/// A message row's key fields: `(message_id, channel_user_id, sent_at ms)`.
pub(super) type RowKey<'a> = (&'a str, &'a str, i64);

/// Opens a JSONL file, gunzipping `.gz`.
fn lines(path: &Path) -> Result<Box<dyn BufRead>, String> {
    let f = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    Ok(if path.to_string_lossy().ends_with(".gz") {
        Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(f)))
    } else {
        Box::new(BufReader::with_capacity(256 * 1024, f))
    })
}

/// Calls `each` with every non-empty line; returns the lines.
fn for_each_line(
    path: &Path,
    mut each: impl FnMut(&str) -> Result<(), String>,
) -> Result<u64, String> {
    let mut r = lines(path)?;
    let (mut line, mut n) = (String::new(), 0u64);
    loop {
        line.clear();
        let read = r
            .read_line(&mut line)
            .map_err(|e| format!("line {}: {e}", n + 1))?;
        if read == 0 {
            return Ok(n);
        }
        let l = line.trim_end_matches(['\n', '\r']);
        if l.is_empty() {
            continue;
        }
        n += 1;
        each(l).map_err(|e| format!("line {n}: {e}"))?;
    }
}

/// Rows of a data file of any stream: a Parquet footer's row count, or JSONL lines.
pub(super) fn row_count(path: &Path) -> Result<u64, String> {
    if path.to_string_lossy().ends_with(".parquet") {
        let f = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
        let b = ParquetRecordBatchReaderBuilder::try_new(f)
            .map_err(|e| format!("not a readable Parquet file: {e}"))?;
        return Ok(b.metadata().file_metadata().num_rows().max(0) as u64);
    }
    for_each_line(path, |_| Ok(()))
}

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    message_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    channel_user_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    sent_at: Option<Cow<'a, str>>,
}

/// Streams a `messages` file's rows to `each` as `(message_id, channel_user_id, sent_at)`;
/// with `keys_only == false` the user is `""` and the time 0 (only the id column is read).
/// Returns the rows; a Parquet file's streamed rows must equal its footer's count.
///
/// # Errors
/// A message saying why the file cannot be read.
pub(super) fn for_each_row(
    path: &Path,
    with_keys: bool,
    mut each: impl FnMut(RowKey<'_>),
) -> Result<u64, String> {
    if !path.to_string_lossy().ends_with(".parquet") {
        return for_each_line(path, |l| {
            let line: Line<'_> = serde_json::from_str(l).map_err(|e| e.to_string())?;
            let id = line.message_id.ok_or("no message_id")?;
            let user = line.channel_user_id.unwrap_or_default();
            let t = match (with_keys, line.sent_at.as_deref()) {
                (false, _) => 0,
                (true, Some(s)) => crate::time::parse_rfc3339_ms(s).ok_or("bad sent_at")?,
                (true, None) => return Err("no sent_at".into()),
            };
            each((&id, &user, t));
            Ok(())
        });
    }
    let f = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let b = ParquetRecordBatchReaderBuilder::try_new(f)
        .map_err(|e| format!("not a readable Parquet file: {e}"))?;
    let footer = b.metadata().file_metadata().num_rows().max(0) as u64;
    let cols: &[&str] = if with_keys {
        &[schema::MESSAGE_ID, schema::CHANNEL_USER_ID, schema::SENT_AT]
    } else {
        &[schema::MESSAGE_ID]
    };
    let mask = ProjectionMask::columns(b.parquet_schema(), cols.iter().copied());
    let reader = b
        .with_projection(mask)
        .with_batch_size(64 * 1024)
        .build()
        .map_err(|e| format!("not a readable Parquet file: {e}"))?;
    let mut n = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| format!("unreadable row group: {e}"))?;
        n += batch.num_rows() as u64;
        each_row(&batch, with_keys, &mut each)?;
    }
    if n != footer {
        return Err(format!("its footer says {footer} rows, its data has {n}"));
    }
    Ok(footer)
}

fn each_row(
    batch: &RecordBatch,
    with_keys: bool,
    each: &mut impl FnMut(RowKey<'_>),
) -> Result<(), String> {
    let text = |name: &str| -> Result<ArrayRef, String> {
        let c = batch
            .column_by_name(name)
            .ok_or_else(|| format!("no {name} column"))?;
        arrow_cast::cast(c, &DataType::Utf8).map_err(|e| e.to_string())
    };
    let ids = text(schema::MESSAGE_ID)?;
    let ids = ids.as_string::<i32>();
    if !with_keys {
        for i in 0..ids.len() {
            each((ids.value(i), "", 0));
        }
        return Ok(());
    }
    let users = text(schema::CHANNEL_USER_ID)?;
    let users = users.as_string::<i32>();
    let ms = DataType::Timestamp(TimeUnit::Millisecond, None);
    let sent = batch
        .column_by_name(schema::SENT_AT)
        .ok_or("no sent_at column")?;
    let sent = arrow_cast::cast(sent, &ms).map_err(|e| e.to_string())?;
    let sent = sent.as_primitive::<TimestampMillisecondType>();
    for i in 0..ids.len() {
        each((ids.value(i), users.value(i), sent.value(i)));
    }
    Ok(())
}

/// The 128-bit key of a `message_id`: the id itself when it is 32 hex digits (the ids this
/// tool writes: lossless), else its xxh3-128.
pub(super) fn id_key(id: &str) -> u128 {
    if id.len() == 32
        && id.bytes().all(|b| b.is_ascii_hexdigit())
        && let Ok(v) = u128::from_str_radix(id, 16)
    {
        return v;
    }
    xxhash_rust::xxh3::xxh3_128(id.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_ids_are_their_own_keys_and_others_are_hashed() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(id_key(id), 0x0123456789abcdef0123456789abcdef);
        // A sign is not a hex digit: hashed, not parsed.
        let signed = "+123456789abcdef0123456789abcdef";
        assert_ne!(id_key(signed), 0x123456789abcdef0123456789abcdef);
        assert_eq!(id_key("x"), xxhash_rust::xxh3::xxh3_128(b"x"));
    }

    #[test]
    fn jsonl_rows_and_ids_are_read_from_plain_and_gzip_files() {
        let dir = tempfile::tempdir().unwrap();
        let text = "{\"message_id\":\"a\",\"channel_user_id\":\"u\",\"sent_at\":\"2026-08-01T00:00:01.000Z\"}\n\n{\"message_id\":\"b\",\"channel_user_id\":\"v\",\"sent_at\":\"2026-08-01T00:00:02.000Z\"}\n";
        let plain = dir.path().join("p.jsonl");
        std::fs::write(&plain, text).unwrap();
        let gz = dir.path().join("p.jsonl.gz");
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut e, text.as_bytes()).unwrap();
        std::fs::write(&gz, e.finish().unwrap()).unwrap();
        for p in [&plain, &gz] {
            assert_eq!(row_count(p).unwrap(), 2);
            let mut seen = Vec::new();
            let n = for_each_row(p, true, |(id, u, t)| {
                seen.push((id.to_owned(), u.to_owned(), t))
            })
            .unwrap();
            assert_eq!(n, 2);
            assert_eq!(seen[1], ("b".into(), "v".into(), 1_785_542_402_000));
        }
        std::fs::write(&plain, "{\"message_id\":\"a\"}\nnot json\n").unwrap();
        assert!(
            for_each_row(&plain, false, |_| {})
                .unwrap_err()
                .contains("line 2")
        );
    }
}
