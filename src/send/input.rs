//! The input table, streamed with bounded memory: a Parquet file or directory (the arrow
//! reader, one record batch at a time), a CSV file (`csv`, with a header row), or a JSONL /
//! JSONL.gz file (one object per line). Only the columns a campaign names are read, and every
//! value is handed on as text (`None` for null, missing or empty).
//!
//! A column name may reach into a nested value with a dot when no column has that exact name:
//! `attributes.opt1` reads key `opt1` of a map column (this tool's `users` table) or field
//! `opt1` of a struct column or JSON object.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::DataType;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

/// The values of the requested columns for one row, in the order they were requested.
pub type Values = Vec<Option<String>>;

/// Rows per Parquet record batch.
const BATCH_ROWS: usize = 4096;

/// An input file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    /// A Parquet file, or a directory of `*.parquet` files (read in path order).
    Parquet,
    /// CSV with a header row.
    Csv,
    /// JSON Lines: one object per line.
    Jsonl,
    /// Gzipped JSON Lines.
    #[serde(rename = "jsonl.gz")]
    JsonlGz,
}

impl InputFormat {
    /// The format from a path: a directory or `.parquet` -> Parquet; `.csv`; `.jsonl`,
    /// `.ndjson`, `.json`; the same with `.gz`.
    pub fn detect(path: &Path) -> Option<Self> {
        if path.is_dir() {
            return Some(InputFormat::Parquet);
        }
        let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
        let plain = name.strip_suffix(".gz");
        Some(match plain.unwrap_or(&name) {
            n if n.ends_with(".parquet") && plain.is_none() => InputFormat::Parquet,
            n if n.ends_with(".csv") && plain.is_none() => InputFormat::Csv,
            n if n.ends_with(".jsonl") || n.ends_with(".ndjson") || n.ends_with(".json") => {
                if plain.is_some() {
                    InputFormat::JsonlGz
                } else {
                    InputFormat::Jsonl
                }
            }
            _ => return None,
        })
    }

    /// Parses `--input-format`: `parquet`, `csv`, `jsonl`, `jsonl.gz`.
    ///
    /// # Errors
    /// A message naming the value.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "parquet" => Ok(InputFormat::Parquet),
            "csv" => Ok(InputFormat::Csv),
            "jsonl" | "ndjson" => Ok(InputFormat::Jsonl),
            "jsonl.gz" | "ndjson.gz" => Ok(InputFormat::JsonlGz),
            _ => Err(format!(
                "input format `{s}` must be parquet, csv, jsonl or jsonl.gz"
            )),
        }
    }
}

/// Reading the input failed (exit 2: the input is the user's).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The file or directory cannot be opened.
    #[error("input {path}: {source}")]
    Open {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Columns named by the campaign are not in the input.
    #[error("input {path}: no column {} (columns: {})", quoted(.missing), .available.join(", "))]
    MissingColumns {
        /// The file.
        path: PathBuf,
        /// The columns asked for and not found.
        missing: Vec<String>,
        /// The columns the file has.
        available: Vec<String>,
    },
    /// The content cannot be read.
    #[error("input {path}, {at}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Where (`line 12`, `row group`).
        at: String,
        /// The reader's message.
        message: String,
    },
    /// A directory without Parquet files.
    #[error("input {0}: no *.parquet files in this directory")]
    Empty(PathBuf),
}

fn quoted(v: &[String]) -> String {
    v.iter()
        .map(|c| format!("`{c}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A streaming reader of the requested columns.
pub struct InputReader {
    inner: Inner,
}

enum Inner {
    Parquet(ParquetRows),
    Csv(CsvRows),
    Jsonl(JsonRows),
}

impl InputReader {
    /// Opens `path` and checks that every column in `columns` exists.
    ///
    /// # Errors
    /// [`InputError`] for a missing file, unknown columns or unreadable content.
    pub fn open(path: &Path, format: InputFormat, columns: &[String]) -> Result<Self, InputError> {
        let inner = match format {
            InputFormat::Parquet => Inner::Parquet(ParquetRows::open(path, columns)?),
            InputFormat::Csv => Inner::Csv(CsvRows::open(path, columns)?),
            InputFormat::Jsonl | InputFormat::JsonlGz => Inner::Jsonl(JsonRows::open(
                path,
                columns,
                format == InputFormat::JsonlGz,
            )?),
        };
        Ok(InputReader { inner })
    }
}

impl Iterator for InputReader {
    type Item = Result<Values, InputError>;
    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            Inner::Parquet(r) => r.next(),
            Inner::Csv(r) => r.next(),
            Inner::Jsonl(r) => r.next(),
        }
    }
}

fn open_file(path: &Path) -> Result<File, InputError> {
    File::open(path).map_err(|source| InputError::Open {
        path: path.to_owned(),
        source,
    })
}

fn blank_to_none(s: String) -> Option<String> {
    (!s.trim().is_empty()).then_some(s)
}

/// CSV with a header row; flat columns only.
struct CsvRows {
    path: PathBuf,
    reader: csv::Reader<BufReader<File>>,
    indexes: Vec<usize>,
    record: csv::StringRecord,
}

impl CsvRows {
    fn open(path: &Path, columns: &[String]) -> Result<Self, InputError> {
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .from_reader(BufReader::with_capacity(256 * 1024, open_file(path)?));
        let read_err = |e: csv::Error| InputError::Read {
            path: path.to_owned(),
            at: "header".into(),
            message: e.to_string(),
        };
        let headers: Vec<String> = reader
            .headers()
            .map_err(read_err)?
            .iter()
            .map(|h| h.trim_start_matches('\u{feff}').trim().to_owned())
            .collect();
        let mut indexes = Vec::new();
        let mut missing = Vec::new();
        for c in columns {
            match headers.iter().position(|h| h == c) {
                Some(i) => indexes.push(i),
                None => missing.push(c.clone()),
            }
        }
        if !missing.is_empty() {
            return Err(InputError::MissingColumns {
                path: path.to_owned(),
                missing,
                available: headers,
            });
        }
        Ok(CsvRows {
            path: path.to_owned(),
            reader,
            indexes,
            record: csv::StringRecord::new(),
        })
    }

    fn next(&mut self) -> Option<Result<Values, InputError>> {
        match self.reader.read_record(&mut self.record) {
            Ok(false) => None,
            Ok(true) => Some(Ok(self
                .indexes
                .iter()
                .map(|&i| {
                    self.record
                        .get(i)
                        .map(str::to_owned)
                        .and_then(blank_to_none)
                })
                .collect())),
            Err(e) => Some(Err(InputError::Read {
                path: self.path.clone(),
                at: e
                    .position()
                    .map(|p| format!("line {}", p.line()))
                    .unwrap_or_else(|| "a record".into()),
                message: e.to_string(),
            })),
        }
    }
}

/// JSON Lines (optionally gzipped): one object per line; blank lines are skipped.
struct JsonRows {
    path: PathBuf,
    lines: Box<dyn BufRead + Send>,
    columns: Vec<String>,
    line_no: u64,
    first: Option<serde_json::Map<String, serde_json::Value>>,
    buf: String,
}

impl JsonRows {
    fn open(path: &Path, columns: &[String], gz: bool) -> Result<Self, InputError> {
        let file = open_file(path)?;
        let lines: Box<dyn BufRead + Send> = if gz {
            Box::new(BufReader::with_capacity(
                256 * 1024,
                flate2::read::MultiGzDecoder::new(file),
            ))
        } else {
            Box::new(BufReader::with_capacity(256 * 1024, file))
        };
        let mut rows = JsonRows {
            path: path.to_owned(),
            lines,
            columns: columns.to_vec(),
            line_no: 0,
            first: None,
            buf: String::new(),
        };
        // The columns are checked against the first object (JSONL has no header).
        if let Some(first) = rows.read_object().transpose()? {
            let missing: Vec<String> = columns
                .iter()
                .filter(|c| lookup(&first, c).is_none())
                .cloned()
                .collect();
            if !missing.is_empty() {
                return Err(InputError::MissingColumns {
                    path: path.to_owned(),
                    missing,
                    available: first.keys().cloned().collect(),
                });
            }
            rows.first = Some(first);
        }
        Ok(rows)
    }

    fn read_object(
        &mut self,
    ) -> Option<Result<serde_json::Map<String, serde_json::Value>, InputError>> {
        loop {
            self.buf.clear();
            self.line_no += 1;
            let err = |at: u64, message: String| InputError::Read {
                path: self.path.clone(),
                at: format!("line {at}"),
                message,
            };
            match self.lines.read_line(&mut self.buf) {
                Ok(0) => return None,
                Ok(_) if self.buf.trim().is_empty() => continue,
                Ok(_) => {
                    return Some(match serde_json::from_str::<serde_json::Value>(&self.buf) {
                        Ok(serde_json::Value::Object(m)) => Ok(m),
                        Ok(_) => Err(err(self.line_no, "not a JSON object".into())),
                        Err(e) => Err(err(self.line_no, e.to_string())),
                    });
                }
                Err(e) => return Some(Err(err(self.line_no, e.to_string()))),
            }
        }
    }

    fn next(&mut self) -> Option<Result<Values, InputError>> {
        let obj = match self.first.take() {
            Some(o) => o,
            None => match self.read_object()? {
                Ok(o) => o,
                Err(e) => return Some(Err(e)),
            },
        };
        Some(Ok(self
            .columns
            .iter()
            .map(|c| lookup(&obj, c).and_then(json_text))
            .collect()))
    }
}

/// `obj[name]`, else the dotted path `a.b.c` through nested objects.
fn lookup<'a>(
    obj: &'a serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Option<&'a serde_json::Value> {
    if let Some(v) = obj.get(name) {
        return Some(v);
    }
    let (head, rest) = name.split_once('.')?;
    match obj.get(head)? {
        serde_json::Value::Object(inner) => lookup(inner, rest),
        _ => None,
    }
}

fn json_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => blank_to_none(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Where a requested column is in a Parquet file's schema.
#[derive(Debug, Clone)]
enum Accessor {
    /// A top-level column (its index in the projected batch).
    Plain(usize),
    /// Key `key` of a map column, or field `key` of a struct column.
    Nested(usize, String),
}

/// A Parquet file or a directory of them.
struct ParquetRows {
    files: VecDeque<PathBuf>,
    columns: Vec<String>,
    current: Option<(PathBuf, ParquetRecordBatchReader, Vec<Accessor>)>,
    rows: VecDeque<Values>,
}

impl ParquetRows {
    fn open(path: &Path, columns: &[String]) -> Result<Self, InputError> {
        let files: VecDeque<PathBuf> = if path.is_dir() {
            let mut f = Vec::new();
            collect_parquet(path, &mut f)?;
            f.sort();
            if f.is_empty() {
                return Err(InputError::Empty(path.to_owned()));
            }
            f.into()
        } else {
            VecDeque::from([path.to_owned()])
        };
        let mut rows = ParquetRows {
            files,
            columns: columns.to_vec(),
            current: None,
            rows: VecDeque::new(),
        };
        // Open the first file now, so that missing columns are reported before any work.
        rows.open_next()?;
        Ok(rows)
    }

    fn open_next(&mut self) -> Result<bool, InputError> {
        let Some(path) = self.files.pop_front() else {
            self.current = None;
            return Ok(false);
        };
        let perr = |e: parquet::errors::ParquetError| InputError::Read {
            path: path.clone(),
            at: "file".into(),
            message: e.to_string(),
        };
        let builder = ParquetRecordBatchReaderBuilder::try_new(open_file(&path)?).map_err(perr)?;
        let schema = builder.schema().clone();
        let mut roots: Vec<usize> = Vec::new();
        let mut found: Vec<(usize, Option<String>)> = Vec::new();
        let mut missing = Vec::new();
        for c in &self.columns {
            let hit = match schema.index_of(c) {
                Ok(i) => Some((i, None)),
                Err(_) => c.split_once('.').and_then(|(head, key)| {
                    let i = schema.index_of(head).ok()?;
                    matches!(
                        schema.field(i).data_type(),
                        DataType::Map(..) | DataType::Struct(_)
                    )
                    .then(|| (i, Some(key.to_owned())))
                }),
            };
            match hit {
                Some((i, key)) => {
                    if !roots.contains(&i) {
                        roots.push(i);
                    }
                    found.push((i, key));
                }
                None => missing.push(c.clone()),
            }
        }
        if !missing.is_empty() {
            return Err(InputError::MissingColumns {
                path,
                missing,
                available: schema.fields().iter().map(|f| f.name().clone()).collect(),
            });
        }
        roots.sort_unstable();
        // In the projected batch, columns keep their file order.
        let accessors = found
            .into_iter()
            .map(|(i, key)| {
                let pos = roots.binary_search(&i).expect("projected");
                match key {
                    None => Accessor::Plain(pos),
                    Some(k) => Accessor::Nested(pos, k),
                }
            })
            .collect();
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        let reader = builder
            .with_projection(mask)
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(perr)?;
        self.current = Some((path, reader, accessors));
        Ok(true)
    }

    fn next(&mut self) -> Option<Result<Values, InputError>> {
        loop {
            if let Some(v) = self.rows.pop_front() {
                return Some(Ok(v));
            }
            let (path, reader, accessors) = self.current.as_mut()?;
            match reader.next() {
                Some(Ok(batch)) => match batch_values(&batch, accessors) {
                    Ok(rows) => self.rows = rows.into(),
                    Err(message) => {
                        return Some(Err(InputError::Read {
                            path: path.clone(),
                            at: "record batch".into(),
                            message,
                        }));
                    }
                },
                Some(Err(e)) => {
                    return Some(Err(InputError::Read {
                        path: path.clone(),
                        at: "record batch".into(),
                        message: e.to_string(),
                    }));
                }
                None => {
                    if let Err(e) = self.open_next() {
                        return Some(Err(e));
                    }
                }
            }
        }
    }
}

fn collect_parquet(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), InputError> {
    let rd = std::fs::read_dir(dir).map_err(|source| InputError::Open {
        path: dir.to_owned(),
        source,
    })?;
    for e in rd.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.starts_with('_') {
            continue; // staged files, `_state`, `_dead_letter`
        }
        if p.is_dir() {
            collect_parquet(&p, out)?;
        } else if name.ends_with(".parquet") {
            out.push(p);
        }
    }
    Ok(())
}

/// Every row of a batch as text values, in accessor order.
fn batch_values(batch: &RecordBatch, accessors: &[Accessor]) -> Result<Vec<Values>, String> {
    let opts = FormatOptions::default();
    let mut columns: Vec<Vec<Option<String>>> = Vec::with_capacity(accessors.len());
    for a in accessors {
        let col = match a {
            Accessor::Plain(i) => {
                let array = batch.column(*i);
                let f =
                    ArrayFormatter::try_new(array.as_ref(), &opts).map_err(|e| e.to_string())?;
                (0..batch.num_rows())
                    .map(|r| {
                        (!array.is_null(r))
                            .then(|| f.value(r).to_string())
                            .and_then(blank_to_none)
                    })
                    .collect()
            }
            Accessor::Nested(i, key) => nested_values(batch.column(*i).as_ref(), key, &opts)?,
        };
        columns.push(col);
    }
    Ok((0..batch.num_rows())
        .map(|r| columns.iter_mut().map(|c| c[r].take()).collect())
        .collect())
}

/// Values of map key / struct field `key` for each row of `array`.
fn nested_values(
    array: &dyn Array,
    key: &str,
    opts: &FormatOptions<'_>,
) -> Result<Vec<Option<String>>, String> {
    let n = array.len();
    match array.data_type() {
        DataType::Struct(_) => {
            let s = array.as_struct();
            let Some(child) = s.column_by_name(key) else {
                return Ok(vec![None; n]);
            };
            let f = ArrayFormatter::try_new(child.as_ref(), opts).map_err(|e| e.to_string())?;
            Ok((0..n)
                .map(|r| {
                    (!s.is_null(r) && !child.is_null(r))
                        .then(|| f.value(r).to_string())
                        .and_then(blank_to_none)
                })
                .collect())
        }
        DataType::Map(..) => {
            let m = array.as_map();
            let keys =
                ArrayFormatter::try_new(m.keys().as_ref(), opts).map_err(|e| e.to_string())?;
            let values = m.values();
            let vf = ArrayFormatter::try_new(values.as_ref(), opts).map_err(|e| e.to_string())?;
            let offsets = m.value_offsets();
            Ok((0..n)
                .map(|r| {
                    if m.is_null(r) {
                        return None;
                    }
                    let (lo, hi) = (offsets[r] as usize, offsets[r + 1] as usize);
                    (lo..hi)
                        .find(|&j| keys.value(j).to_string() == key)
                        .filter(|&j| !values.is_null(j))
                        .map(|j| vf.value(j).to_string())
                        .and_then(blank_to_none)
                })
                .collect())
        }
        other => Err(format!("column type {other} has no key `{key}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_detected_from_the_name() {
        let d = |s: &str| InputFormat::detect(Path::new(s));
        assert_eq!(d("a.csv"), Some(InputFormat::Csv));
        assert_eq!(d("a.parquet"), Some(InputFormat::Parquet));
        assert_eq!(d("a.jsonl"), Some(InputFormat::Jsonl));
        assert_eq!(d("a.NDJSON.gz"), Some(InputFormat::JsonlGz));
        assert_eq!(d("a.txt"), None);
        assert_eq!(d("a.csv.gz"), None);
    }

    #[test]
    fn csv_and_jsonl_give_the_same_text_values() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("t.csv");
        std::fs::write(
            &csv,
            "\u{feff}phone,name,ok\n+919565428256,Asha,yes\n919,,0\n",
        )
        .unwrap();
        let cols = vec!["phone".to_string(), "ok".into(), "name".into()];
        let rows: Vec<Values> = InputReader::open(&csv, InputFormat::Csv, &cols)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let want = vec![
            vec![
                Some("+919565428256".to_string()),
                Some("yes".into()),
                Some("Asha".into()),
            ],
            vec![Some("919".into()), Some("0".into()), None],
        ];
        assert_eq!(rows, want);
        let jsonl = dir.path().join("t.jsonl");
        std::fs::write(
            &jsonl,
            "{\"phone\":\"+919565428256\",\"name\":\"Asha\",\"ok\":\"yes\"}\n\n{\"phone\":919,\"ok\":0,\"name\":null}\n",
        )
        .unwrap();
        let rows: Vec<Values> = InputReader::open(&jsonl, InputFormat::Jsonl, &cols)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows, want);
        let e = InputReader::open(&csv, InputFormat::Csv, &["mobile".to_string()])
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("`mobile`") && e.contains("phone, name, ok"),
            "{e}"
        );
    }

    #[test]
    fn dotted_names_read_nested_json() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("u.jsonl");
        std::fs::write(&p, "{\"id\":\"1\",\"attributes\":{\"opt1\":\"yes\"}}\n").unwrap();
        let rows: Vec<Values> =
            InputReader::open(&p, InputFormat::Jsonl, &["attributes.opt1".to_string()])
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
        assert_eq!(rows, vec![vec![Some("yes".to_string())]]);
    }
}
