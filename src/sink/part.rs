//! One output file being written: Parquet (zstd) or JSONL (optionally gzip), staged under a
//! hidden temporary name, fsynced on close. Rotation and naming are the caller's (`files`).
//! The bytes are counted and hashed on their way to the file ([`Counting`]), so the ledger's
//! size and checksum of a file cost no second read of it.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_json::writer::{LineDelimited, LineDelimitedWriter, WriterBuilder};
use flate2::write::GzEncoder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use super::SinkError;
use crate::schema;
use crate::state::checksum;

/// Output file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Apache Parquet, zstd-compressed.
    Parquet,
    /// JSON Lines.
    Jsonl,
}

/// Encoding settings shared by all files of a run.
#[derive(Debug, Clone)]
pub struct Encoding {
    /// The format.
    pub format: Format,
    /// Gzip JSONL files (`.jsonl.gz`).
    pub gzip: bool,
    /// Parquet writer properties (zstd level, row-group size in bytes).
    pub parquet: Arc<WriterProperties>,
    /// Gzip level 0-9.
    pub gzip_level: u32,
}

impl Encoding {
    /// Builds the settings. `row_group_bytes`: a row group is flushed when its estimated encoded
    /// size passes this; `zstd_level`: 1-22.
    ///
    /// # Errors
    /// A message naming the bad zstd level.
    pub fn new(
        format: Format,
        gzip: bool,
        zstd_level: i32,
        row_group_bytes: usize,
        gzip_level: u32,
    ) -> Result<Self, String> {
        let zstd = ZstdLevel::try_new(zstd_level)
            .map_err(|e| format!("zstd_level {zstd_level} is out of range (1..=22): {e}"))?;
        let mut props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(zstd))
            .set_max_row_group_row_count(None)
            .set_max_row_group_bytes(Some(row_group_bytes.max(1)))
            .set_statistics_enabled(EnabledStatistics::Page)
            // Pages (the unit of compression) of 256 KiB instead of 1 MiB: each column holds
            // one page uncompressed while it fills, so this bounds the writer's memory.
            .set_data_page_size_limit(256 * 1024)
            .set_dictionary_page_size_limit(256 * 1024)
            .set_created_by(concat!("engati-etl ", env!("CARGO_PKG_VERSION")).to_owned());
        // Unique-per-row text: a dictionary never pays off (the writer would build one per
        // column chunk, then fall back to plain), and min/max statistics of long texts are
        // useless for pruning. Low-cardinality columns keep dictionaries and statistics.
        for col in [
            schema::MESSAGE_ID,
            schema::CONTENT,
            schema::TEXT,
            schema::RAW_JSON,
        ] {
            let path = ColumnPath::from(col);
            props = props
                .set_column_dictionary_enabled(path.clone(), false)
                .set_column_statistics_enabled(path, EnabledStatistics::None);
        }
        // Columns that are constant or nearly so within a file (dictionary-encoded: one short
        // dictionary page and run-length encoded indices): zstd saves a few bytes per file there
        // but costs a context reset (~0.8 MB of hash tables cleared) per page. Measured on a
        // 70k-message export with 60-day windows: +0.6% bytes, 11 of ~31 zstd frames per file
        // fewer.
        for col in [
            schema::PROVIDER,
            schema::CUSTOMER_ID,
            schema::BOT_KEY,
            schema::CHANNEL,
            schema::SENDER,
            schema::DIRECTION,
            schema::MESSAGE_TYPE,
            schema::FILE_MIME_TYPE,
            schema::RUN_ID,
            schema::EXTRACTED_AT,
        ] {
            props = props.set_column_compression(ColumnPath::from(col), Compression::UNCOMPRESSED);
        }
        let props = props.build();
        Ok(Encoding {
            format,
            gzip,
            parquet: Arc::new(props),
            gzip_level: gzip_level.min(9),
        })
    }

    /// File extension: `parquet`, `jsonl` or `jsonl.gz`.
    pub fn extension(&self) -> &'static str {
        match (self.format, self.gzip) {
            (Format::Parquet, _) => "parquet",
            (Format::Jsonl, false) => "jsonl",
            (Format::Jsonl, true) => "jsonl.gz",
        }
    }
}

/// A `Write` that counts and hashes ([`checksum`]) the bytes that reach the file: every
/// writer of a data file (Parquet's too: it only appends) writes through one.
pub struct Counting<W> {
    inner: W,
    count: u64,
    hash: checksum::Hasher,
}

impl<W: Write> Counting<W> {
    /// Counts and hashes what is written to `inner`.
    pub fn new(inner: W) -> Self {
        Counting {
            inner,
            count: 0,
            hash: checksum::Hasher::new(),
        }
    }

    /// The writer, the bytes written and their checksum.
    pub fn into_parts(self) -> (W, u64, String) {
        let hex = self.hash.hex();
        (self.inner, self.count, hex)
    }
}

/// A file finished: its size and checksum, as the ledger records them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// Bytes on disk.
    pub bytes: u64,
    /// xxh3-128 of those bytes ([`checksum`]).
    pub checksum: String,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

type FileOut = Counting<BufWriter<File>>;

enum Kind {
    Parquet(ArrowWriter<FileOut>),
    Jsonl(LineDelimitedWriter<FileOut>),
    JsonlGz(LineDelimitedWriter<GzEncoder<FileOut>>),
}

/// An open staged file.
pub struct PartWriter {
    kind: Kind,
    path: PathBuf,
    rows: u64,
    /// For JSONL: the schema with `UTC` timestamps relabelled `+00:00` (see [`for_json`]).
    json_schema: Option<arrow_schema::SchemaRef>,
}

/// arrow-json resolves named time zones only with chrono-tz; `+00:00` is the same instant
/// and needs nothing. The arrays are shared, not copied.
pub(super) fn json_schema(schema: &arrow_schema::SchemaRef) -> arrow_schema::SchemaRef {
    use arrow_schema::{DataType, Field, Schema};
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Timestamp(unit, Some(tz)) if tz.as_ref() == "UTC" => f
                .as_ref()
                .clone()
                .with_data_type(DataType::Timestamp(*unit, Some("+00:00".into()))),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

fn for_json(
    batch: &RecordBatch,
    schema: &arrow_schema::SchemaRef,
) -> Result<RecordBatch, arrow_schema::ArrowError> {
    use arrow_array::{Array, TimestampMillisecondArray};
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            match (
                c.as_any().downcast_ref::<TimestampMillisecondArray>(),
                f.data_type(),
            ) {
                (Some(ts), arrow_schema::DataType::Timestamp(_, Some(tz))) => {
                    Arc::new(ts.clone().with_timezone(tz.clone())) as arrow_array::ArrayRef
                }
                _ => c.clone(),
            }
        })
        .collect();
    RecordBatch::try_new(schema.clone(), columns)
}

/// JSONL writer options: explicit nulls, RFC 3339 UTC timestamps with milliseconds.
pub fn jsonl_writer<W: Write>(w: W) -> LineDelimitedWriter<W> {
    WriterBuilder::new()
        .with_explicit_nulls(true)
        .with_timestamp_tz_format("%Y-%m-%dT%H:%M:%S%.3fZ".to_owned())
        .build::<W, LineDelimited>(w)
}

impl PartWriter {
    /// Creates `path` (its directory must exist) for batches of `schema`.
    ///
    /// # Errors
    /// [`SinkError`] for I/O or Parquet setup failures.
    pub fn create(
        path: &Path,
        enc: &Encoding,
        schema: arrow_schema::SchemaRef,
    ) -> Result<Self, SinkError> {
        let file = File::create(path).map_err(|source| SinkError::Io {
            action: "creating",
            path: path.to_owned(),
            source,
        })?;
        let out = Counting::new(BufWriter::with_capacity(64 * 1024, file));
        let json_schema = (enc.format == Format::Jsonl).then(|| json_schema(&schema));
        let kind = match (enc.format, enc.gzip) {
            (Format::Parquet, _) => Kind::Parquet(
                ArrowWriter::try_new(out, schema, Some((*enc.parquet).clone()))
                    .map_err(|e| SinkError::parquet(path, e))?,
            ),
            (Format::Jsonl, false) => Kind::Jsonl(jsonl_writer(out)),
            (Format::Jsonl, true) => Kind::JsonlGz(jsonl_writer(GzEncoder::new(
                out,
                flate2::Compression::new(enc.gzip_level),
            ))),
        };
        Ok(PartWriter {
            kind,
            path: path.to_owned(),
            rows: 0,
            json_schema,
        })
    }

    /// Appends a batch.
    ///
    /// # Errors
    /// [`SinkError`] for encoding or I/O failures.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), SinkError> {
        let path = &self.path;
        let json = |b: &RecordBatch| match &self.json_schema {
            Some(s) => for_json(b, s).map_err(|e| SinkError::arrow(path, e)),
            None => Ok(b.clone()),
        };
        match &mut self.kind {
            Kind::Parquet(w) => w.write(batch).map_err(|e| SinkError::parquet(path, e))?,
            Kind::Jsonl(w) => w
                .write(&json(batch)?)
                .map_err(|e| SinkError::arrow(path, e))?,
            Kind::JsonlGz(w) => w
                .write(&json(batch)?)
                .map_err(|e| SinkError::arrow(path, e))?,
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Bytes this file will have if closed now (for rotation by size; estimates the
    /// row group or compressor buffer still in memory).
    pub fn size_estimate(&self) -> u64 {
        match &self.kind {
            Kind::Parquet(w) => (w.bytes_written() + w.in_progress_size()) as u64,
            Kind::Jsonl(w) => w.get_ref().count,
            Kind::JsonlGz(w) => w.get_ref().get_ref().count,
        }
    }

    /// Ends the row group being built now (Parquet), releasing its memory.
    ///
    /// # Errors
    /// [`SinkError`] for encoding or I/O failures.
    pub fn flush_row_group(&mut self) -> Result<(), SinkError> {
        if let Kind::Parquet(w) = &mut self.kind {
            w.flush().map_err(|e| SinkError::parquet(&self.path, e))?;
        }
        Ok(())
    }

    /// Rows written.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The staged path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Finishes the file (Parquet footer, gzip trailer), flushes and fsyncs it. Returns its
    /// size and checksum.
    ///
    /// # Errors
    /// [`SinkError`] for encoding or I/O failures.
    pub fn finish(self) -> Result<Finished, SinkError> {
        let path = self.path;
        let io = |source| SinkError::Io {
            action: "writing",
            path: path.clone(),
            source,
        };
        let out: FileOut = match self.kind {
            Kind::Parquet(w) => w.into_inner().map_err(|e| SinkError::parquet(&path, e))?,
            Kind::Jsonl(mut w) => {
                w.finish().map_err(|e| SinkError::arrow(&path, e))?;
                w.into_inner()
            }
            Kind::JsonlGz(mut w) => {
                w.finish().map_err(|e| SinkError::arrow(&path, e))?;
                w.into_inner().finish().map_err(io)?
            }
        };
        let (buf, bytes, checksum) = out.into_parts();
        let file = buf.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        Ok(Finished { bytes, checksum })
    }

    /// Abandons the file and deletes it.
    pub fn discard(self) {
        let path = self.path.clone();
        drop(self);
        let _ = std::fs::remove_file(path);
    }
}

/// A batch ready for arrow-json: `UTC` timestamps relabelled `+00:00` (same instants).
///
/// # Errors
/// Arrow errors (none expected for our schemas).
pub fn json_ready(batch: &RecordBatch) -> Result<RecordBatch, arrow_schema::ArrowError> {
    for_json(batch, &json_schema(&batch.schema()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{ArrayRef, Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Schema};

    #[test]
    fn the_checksum_hashed_while_writing_is_the_files() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("s", DataType::Utf8, false),
        ]));
        let n: ArrayRef = Arc::new(Int64Array::from_iter_values(0..5000));
        let s: ArrayRef = Arc::new(StringArray::from_iter_values(
            (0..5000).map(|i| format!("row {i}")),
        ));
        let batch = RecordBatch::try_new(schema.clone(), vec![n, s]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        for (format, gzip) in [
            (Format::Parquet, false),
            (Format::Jsonl, false),
            (Format::Jsonl, true),
        ] {
            let enc = Encoding::new(format, gzip, 3, 1 << 16, 6).unwrap();
            let path = dir.path().join(format!("f.{}", enc.extension()));
            let mut w = PartWriter::create(&path, &enc, schema.clone()).unwrap();
            for _ in 0..3 {
                w.write(&batch).unwrap();
                w.flush_row_group().unwrap();
            }
            let done = w.finish().unwrap();
            let on_disk = std::fs::read(&path).unwrap();
            assert_eq!(done.bytes, on_disk.len() as u64, "{path:?}");
            assert_eq!(done.checksum, checksum::of_bytes(&on_disk), "{path:?}");
        }
    }
}
