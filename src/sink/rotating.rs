//! A rotating file writer for one partition of one unit (delta-rs's `PartitionWriter` idea):
//! the file is opened lazily by its first rows (so no empty file is ever written), files are
//! named deterministically (`<dir>/<stem>-<seq>.<ext>`, staged as the hidden
//! `<dir>/.<stem>-<seq>.<ext>.<run8>.tmp`), and a file is closed and the next one started when
//! its estimated size reaches the target.

use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use super::SinkError;
use super::part::{Encoding, PartWriter};
use crate::state::STAGED_SUFFIX;

/// A finished, fsynced file under its staged name, waiting for its commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedFile {
    /// Staged path, relative to the output directory.
    pub staged: String,
    /// Final path, relative to the output directory.
    pub path: String,
    /// Rows in the file.
    pub rows: u64,
    /// Bytes on disk.
    pub bytes: u64,
    /// xxh3-128 of its bytes (`state::checksum`), for the ledger.
    pub checksum: String,
    /// Exact bounds of its users and times, when asked for ([`RotatingWriter::with_stats`]).
    pub bounds: Option<RowBounds>,
}

/// The modulus of [`RowBounds::residues`]: `lcm(1..=10)`, so the users of any shard `i/N` with
/// `N` dividing it (every N up to 10, and 12, 14, 15, 18, 20, 24, ...) fall on residues
/// `≡ i (mod N)` only, and files of different shards have disjoint residue sets.
pub const RESIDUE_MODULUS: u64 = 2520;

/// The smallest and largest `channel_user_id` and `sent_at` (ms since epoch UTC) of some rows,
/// and which residues `xxh3_64(channel_user_id) mod 2520` their users have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowBounds {
    /// Smallest user id.
    pub min_user: String,
    /// Largest user id.
    pub max_user: String,
    /// Earliest `sent_at`, ms since epoch UTC.
    pub min_ms: i64,
    /// Latest `sent_at`, ms since epoch UTC.
    pub max_ms: i64,
    /// Bit `r` set when a user's `xxh3_64(id) mod 2520` is `r` (the shard hash, `shard.rs`).
    pub residues: Vec<u64>,
}

/// The residue of a user among [`RESIDUE_MODULUS`].
pub fn residue(user: &str) -> usize {
    (xxhash_rust::xxh3::xxh3_64(user.as_bytes()) % RESIDUE_MODULUS) as usize
}

impl RowBounds {
    /// The bounds of `batch` (its `channel_user_id` and `sent_at` columns, `sent_at` in ms or
    /// µs); `None` for no rows.
    pub fn of(batch: &RecordBatch) -> Option<RowBounds> {
        use arrow_array::Array;
        use arrow_array::cast::AsArray;
        use arrow_array::types::{TimestampMicrosecondType, TimestampMillisecondType};
        let users = batch
            .column_by_name(crate::schema::CHANNEL_USER_ID)?
            .as_string::<i32>();
        let sent = batch.column_by_name(crate::schema::SENT_AT)?;
        let times: Vec<i64> = match sent.data_type() {
            arrow_schema::DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, _) => sent
                .as_primitive::<TimestampMicrosecondType>()
                .values()
                .iter()
                .map(|t| t.div_euclid(1000))
                .collect(),
            _ => sent
                .as_primitive::<TimestampMillisecondType>()
                .values()
                .to_vec(),
        };
        if users.is_empty() {
            return None;
        }
        let (mut lo, mut hi) = (users.value(0), users.value(0));
        let mut residues = vec![0u64; (RESIDUE_MODULUS as usize).div_ceil(64)];
        let mut last = "";
        for u in users.iter().flatten() {
            lo = lo.min(u);
            hi = hi.max(u);
            if u != last {
                let r = residue(u);
                residues[r / 64] |= 1 << (r % 64);
                last = u;
            }
        }
        Some(RowBounds {
            min_user: lo.to_owned(),
            max_user: hi.to_owned(),
            min_ms: times.iter().copied().min()?,
            max_ms: times.iter().copied().max()?,
            residues,
        })
    }

    /// These bounds widened by `other`'s.
    pub fn union(self, other: RowBounds) -> RowBounds {
        RowBounds {
            min_user: self.min_user.min(other.min_user),
            max_user: self.max_user.max(other.max_user),
            min_ms: self.min_ms.min(other.min_ms),
            max_ms: self.max_ms.max(other.max_ms),
            residues: self
                .residues
                .iter()
                .zip(&other.residues)
                .map(|(a, b)| a | b)
                .collect(),
        }
    }

    /// The residues as hex (a Delta file tag).
    pub fn residues_hex(&self) -> String {
        self.residues.iter().map(|w| format!("{w:016x}")).collect()
    }

    /// Reads [`residues_hex`](Self::residues_hex) back (`None` if malformed).
    pub fn residues_from_hex(hex: &str) -> Option<Vec<u64>> {
        if hex.len() != 16 * (RESIDUE_MODULUS as usize).div_ceil(64) {
            return None;
        }
        (0..hex.len())
            .step_by(16)
            .map(|i| u64::from_str_radix(&hex[i..i + 16], 16).ok())
            .collect()
    }
}

/// The files of one partition of one unit.
pub struct RotatingWriter {
    out_dir: PathBuf,
    dir: String,
    stem: String,
    run8: String,
    encoding: Encoding,
    schema: SchemaRef,
    target_bytes: u64,
    seq: u32,
    open: Option<(PartWriter, String, String)>,
    done: Vec<StagedFile>,
    /// Track [`RowBounds`] of each file.
    stats: bool,
    /// The open file's bounds so far.
    bounds: Option<RowBounds>,
}

impl RotatingWriter {
    /// Files `out_dir/<dir>/<stem>-000.<ext>`, `-001`, ... of `schema`, rotated at
    /// `target_bytes` (estimated encoded bytes). `run8` marks the staged names of this run.
    pub fn new(
        out_dir: &Path,
        dir: String,
        stem: String,
        run8: &str,
        encoding: &Encoding,
        schema: SchemaRef,
        target_bytes: u64,
    ) -> Self {
        RotatingWriter {
            out_dir: out_dir.to_owned(),
            dir,
            stem,
            run8: run8.to_owned(),
            encoding: encoding.clone(),
            schema,
            target_bytes,
            seq: 0,
            open: None,
            done: Vec::new(),
            stats: false,
            bounds: None,
        }
    }

    /// Tracks each file's exact [`RowBounds`] (for a table format's file statistics).
    pub fn with_stats(mut self, stats: bool) -> Self {
        self.stats = stats;
        self
    }

    /// The partition directory, relative to the output.
    pub fn dir(&self) -> &str {
        &self.dir
    }

    /// Appends rows, opening a file on the first rows and rotating after the target size.
    ///
    /// # Errors
    /// [`SinkError`] for I/O or encoding failures.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), SinkError> {
        if self.open.is_none() {
            self.open = Some(self.create()?);
        }
        if self.stats
            && let Some(b) = RowBounds::of(batch)
        {
            self.bounds = Some(match self.bounds.take() {
                Some(old) => old.union(b),
                None => b,
            });
        }
        let (w, _, _) = self.open.as_mut().expect("opened above");
        w.write(batch)?;
        if w.size_estimate() >= self.target_bytes {
            self.close()?;
        }
        Ok(())
    }

    /// Ends the open file's row group (Parquet), releasing its memory.
    ///
    /// # Errors
    /// [`SinkError`] for encoding or I/O failures.
    pub fn flush_row_group(&mut self) -> Result<(), SinkError> {
        match self.open.as_mut() {
            Some((w, _, _)) => w.flush_row_group(),
            None => Ok(()),
        }
    }

    /// Closes the open file; returns every file written, in order.
    ///
    /// # Errors
    /// [`SinkError`] for encoding or I/O failures.
    pub fn finish(mut self) -> Result<Vec<StagedFile>, SinkError> {
        self.close()?;
        Ok(std::mem::take(&mut self.done))
    }

    /// Deletes every file written or open.
    pub fn discard(mut self) {
        if let Some((w, _, _)) = self.open.take() {
            w.discard();
        }
        for f in &self.done {
            let _ = std::fs::remove_file(self.out_dir.join(&f.staged));
        }
    }

    fn create(&mut self) -> Result<(PartWriter, String, String), SinkError> {
        let ext = self.encoding.extension();
        let name = format!("{}-{:03}.{ext}", self.stem, self.seq);
        let staged = format!("{}/.{name}.{}{STAGED_SUFFIX}", self.dir, self.run8);
        let path = format!("{}/{name}", self.dir);
        super::durable::create_dir(&self.out_dir.join(&self.dir))?;
        let w = PartWriter::create(
            &self.out_dir.join(&staged),
            &self.encoding,
            self.schema.clone(),
        )?;
        Ok((w, staged, path))
    }

    fn close(&mut self) -> Result<(), SinkError> {
        let Some((w, staged, path)) = self.open.take() else {
            return Ok(());
        };
        let rows = w.rows();
        let done = w.finish()?;
        self.seq += 1;
        self.done.push(StagedFile {
            staged,
            path,
            rows,
            bytes: done.bytes,
            checksum: done.checksum,
            bounds: self.bounds.take(),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::Format;
    use arrow_array::{ArrayRef, Int64Array};
    use arrow_schema::{DataType, Field, Schema};
    use std::sync::Arc;

    fn batch(n: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let col: ArrayRef = Arc::new(Int64Array::from_iter_values(0..n));
        RecordBatch::try_new(schema, vec![col]).unwrap()
    }

    #[test]
    fn opens_lazily_rotates_at_the_target_and_never_writes_an_empty_file() {
        let dir = tempfile::tempdir().unwrap();
        let enc = Encoding::new(Format::Jsonl, false, 3, 1 << 20, 6).unwrap();
        let b = batch(100);
        let w = RotatingWriter::new(
            dir.path(),
            "p".into(),
            "part-u".into(),
            "run1",
            &enc,
            b.schema(),
            1000,
        );
        assert!(w.finish().unwrap().is_empty(), "no rows, no file");
        assert!(!dir.path().join("p").exists(), "not even its directory");
        let mut w = RotatingWriter::new(
            dir.path(),
            "p".into(),
            "part-u".into(),
            "run1",
            &enc,
            b.schema(),
            1000,
        );
        for _ in 0..5 {
            w.write(&b).unwrap();
        }
        let files = w.finish().unwrap();
        // Each batch is ~900 bytes of JSONL: a file closes once it passes 1000 bytes.
        assert_eq!(
            files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
            [
                "p/part-u-000.jsonl",
                "p/part-u-001.jsonl",
                "p/part-u-002.jsonl"
            ]
        );
        assert_eq!(files[0].staged, "p/.part-u-000.jsonl.run1.tmp");
        assert_eq!(files.iter().map(|f| f.rows).sum::<u64>(), 500);
        for f in &files {
            let on_disk = dir.path().join(&f.staged);
            assert_eq!(std::fs::metadata(&on_disk).unwrap().len(), f.bytes);
            // Hashed as written: the same as hashing the file afterwards.
            let sum = crate::state::checksum::of_file(&on_disk).unwrap();
            assert_eq!(sum, f.checksum);
            assert!(f.rows > 0);
        }
    }
}
