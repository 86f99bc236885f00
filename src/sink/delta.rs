//! The Delta Lake sink (`--format delta`): a Delta table at a local path or on object storage,
//! partitioned by the UTC date of `sent_at` (partition column `date`), with the columns of the
//! Parquet output (Delta's types: `sent_at`/`extracted_at` are microsecond timestamps, the
//! unsigned `position` is a `long`).
//!
//! **One Delta commit per unit of work.** A unit's rows are written to local Parquet files
//! ([`DayPartitions`]), uploaded under the table (invisible to readers until the commit names
//! them), then committed in one Delta transaction: the new files' `add` actions, the `remove`
//! actions of the rows they replace, and a `txn` action (`app_id`
//! `engati-etl/<namespace>/<unit key>`, `version` = cells committed). Readers never see part of
//! a unit.
//!
//! **Exactly once without local state.** What a commit replaces is decided from the table's
//! own log, not from the local state store: every file's name carries the unit and cell range
//! that wrote it (`date=D/part-<unit>-<from>-<to>-<seq>-<run>.parquet`) and its statistics the
//! exact bounds of its users and times. A file of the same unit and cells is removed whole; a
//! file whose bounds overlap the commit's cells is read and its re-exported rows taken out
//! (the rest rewritten as a remnant file in the same commit). So a re-run, a retried pod or a
//! resumed crash replaces instead of duplicating, even from an empty `--state-dir`.
//!
//! **Concurrent writers** (shards) commit with delta-rs's optimistic concurrency: a commit is
//! written by conditional create of `_delta_log/<version>.json` (`PutMode::Create`, which S3,
//! GCS, Azure and S3-compatible stores such as MinIO and s3s-fs support), rebased and retried
//! on a concurrent append; a conflict that invalidates its plan (a file it replaces was
//! replaced meanwhile) re-plans from the new table state.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::CommitBuilder;
use deltalake::kernel::{Action, Add, Remove, StructField, StructType, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::{DeltaTable, DeltaTableBuilder};
use reqwest::Url;

use super::partitions::{DayPartitions, Layout};
use super::rotating::{RowBounds, StagedFile};
use super::supersede::{self, CellMap};
use super::{
    CellRef, Committed, DeadLetters, Sink, SinkEnd, SinkError, UnitInfo, WrittenFile,
    watermark_moves,
};
use crate::schema::{self, messages_schema};
use crate::state::{CommitPlan, StateStore};
use crate::storage::Remote;
use crate::time::{DAY_MS, rfc3339_ms};

/// The partition column.
pub const DATE: &str = "date";
/// The file tag holding [`RowBounds::residues_hex`].
const RESIDUES_TAG: &str = "engati.user_residues_2520";
/// Attempts at planning and committing one unit when concurrent writers keep invalidating it.
const MAX_PLANS: usize = 8;

/// The Delta output, validated (`config::sink`).
#[derive(Debug, Clone)]
pub struct DeltaSpec {
    /// The table: a local directory or an object-store URL (`s3://bucket/prefix/table`).
    pub location: String,
    /// The local state store (runs, resume) and the staging of files before upload.
    pub state_dir: PathBuf,
    /// Parquet encoding (zstd level, row-group size).
    pub encoding: super::Encoding,
    /// Rotate files at this many bytes.
    pub target_file_bytes: u64,
}

/// The schema of the table's data files: the messages schema in Delta's types.
pub fn file_schema() -> SchemaRef {
    let fields: Vec<Field> = messages_schema()
        .fields()
        .iter()
        .map(|f| {
            let f = f.as_ref().clone();
            match f.data_type() {
                DataType::Timestamp(_, tz) => {
                    let t = DataType::Timestamp(TimeUnit::Microsecond, tz.clone());
                    f.with_data_type(t)
                }
                DataType::UInt32 => f.with_data_type(DataType::Int64),
                _ => f,
            }
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// Casts a `messages` batch to [`file_schema`].
fn to_file_batch(batch: RecordBatch) -> Result<RecordBatch, SinkError> {
    let schema = file_schema();
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| arrow_cast::cast(c, f.data_type()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SinkError::arrow(Path::new("delta"), e))?;
    RecordBatch::try_new(schema, columns).map_err(|e| SinkError::arrow(Path::new("delta"), e))
}

/// The table schema: the file columns and the partition column `date`.
fn table_columns() -> Result<Vec<StructField>, SinkError> {
    let kernel: StructType = file_schema()
        .as_ref()
        .try_into_kernel()
        .map_err(|e| delta_err("the table schema", e))?;
    let mut cols: Vec<StructField> = kernel.fields().cloned().collect();
    cols.push(StructField::new(
        DATE,
        deltalake::kernel::DataType::DATE,
        false,
    ));
    Ok(cols)
}

fn delta_err(what: &str, e: impl std::fmt::Display) -> SinkError {
    SinkError::Crashed(format!("Delta table, {what}: {e}"))
}

/// A data file of the table as our names and statistics describe it.
#[derive(Debug, Clone)]
struct TableFile {
    path: String,
    size: i64,
    rows: u64,
    unit: String,
    cells_from: u32,
    cells_to: u32,
    bounds: Option<RowBounds>,
    partition: HashMap<String, Option<String>>,
}

/// Parses `date=D/part-<unit>-<from>-<to>-<seq>-<run>.parquet`.
fn parse_name(path: &str) -> Option<(String, u32, u32)> {
    let name = path.rsplit('/').next()?.strip_suffix(".parquet")?;
    let mut parts = name.rsplitn(5, '-');
    let (_run, _seq, to, from, rest) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    let unit = rest.strip_prefix("part-")?.to_owned();
    Some((unit, from.parse().ok()?, to.parse().ok()?))
}

/// The statistics of one of our files (`numRecords`, exact min/max of user and time).
fn stats_json(rows: u64, b: Option<&RowBounds>) -> String {
    let mut v = serde_json::json!({ "numRecords": rows });
    if let Some(b) = b {
        v["minValues"] = serde_json::json!({
            schema::CHANNEL_USER_ID: b.min_user, schema::SENT_AT: rfc3339_ms(b.min_ms) });
        v["maxValues"] = serde_json::json!({
            schema::CHANNEL_USER_ID: b.max_user, schema::SENT_AT: rfc3339_ms(b.max_ms) });
        v["nullCount"] = serde_json::json!({ schema::CHANNEL_USER_ID: 0, schema::SENT_AT: 0 });
    }
    v.to_string()
}

/// Reads the bounds back from a file's statistics.
fn parse_stats(stats: &str) -> (Option<u64>, Option<RowBounds>) {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(stats) else {
        return (None, None);
    };
    let rows = v["numRecords"].as_u64();
    let get = |side: &str, col: &str| v[side][col].as_str().map(str::to_owned);
    let time = |side| get(side, schema::SENT_AT).and_then(|t| crate::time::parse_rfc3339_ms(&t));
    let bounds = (|| {
        Some(RowBounds {
            min_user: get("minValues", schema::CHANNEL_USER_ID)?,
            max_user: get("maxValues", schema::CHANNEL_USER_ID)?,
            min_ms: time("minValues")?,
            max_ms: time("maxValues")?,
            residues: Vec::new(),
        })
    })();
    (rows, bounds)
}

/// The unit being written.
struct OpenUnit {
    info: Arc<UnitInfo>,
    parts: DayPartitions,
}

/// The Delta sink of one run.
pub struct DeltaSink {
    spec: DeltaSpec,
    run_id: String,
    /// Marks this process's file names: unique per process, so a file is never overwritten in
    /// place (a resumed run writes new names and removes the old).
    run8: String,
    namespace: String,
    watermarks: Option<String>,
    state: StateStore,
    staging: PathBuf,
    rt: Option<Arc<tokio::runtime::Runtime>>,
    table: Option<DeltaTable>,
    remote: Option<Remote>,
    unit: Option<OpenUnit>,
}

impl DeltaSink {
    /// The sink for run `run_id` of state `namespace`; `watermarks` is the namespace whose
    /// watermarks commits advance (incremental runs).
    pub fn new(
        spec: DeltaSpec,
        state: StateStore,
        run_id: &str,
        namespace: &str,
        watermarks: Option<String>,
    ) -> Self {
        DeltaSink {
            staging: spec.state_dir.join("staging"),
            spec,
            run8: format!(
                "{}{:06x}",
                super::run8(run_id),
                rand::random::<u32>() & 0xff_ffff
            ),
            run_id: run_id.to_owned(),
            namespace: namespace.to_owned(),
            watermarks,
            state,
            rt: None,
            table: None,
            remote: None,
            unit: None,
        }
    }

    /// The table's URL: the location as given, or `file://` of a local directory.
    fn url(&self) -> Result<Url, SinkError> {
        if crate::storage::is_remote(&self.spec.location) {
            let url = Url::parse(&self.spec.location).map_err(|e| delta_err("location", e))?;
            if url.scheme() == "file"
                && let Ok(dir) = url.to_file_path()
            {
                super::durable::create_dir(&dir)?;
            }
            return Ok(url);
        }
        let dir = Path::new(&self.spec.location);
        super::durable::create_dir(dir)?;
        let abs = std::fs::canonicalize(dir).map_err(|source| SinkError::Io {
            action: "resolving",
            path: dir.to_owned(),
            source,
        })?;
        Url::from_directory_path(&abs).map_err(|()| delta_err("location", abs.display()))
    }

    /// Opens the table, creating it (partitioned by `date`) when there is none yet; a table
    /// created meanwhile by another writer is opened instead.
    async fn open(&mut self) -> Result<(), SinkError> {
        register_log_stores();
        let url = self.url()?;
        let remote = Remote::open(url.as_str()).map_err(|e| delta_err("storage", e))?;
        let builder = DeltaTableBuilder::from_url(url.clone())
            .map_err(|e| delta_err("location", e))?
            .with_storage_backend(remote.store.clone(), url.clone());
        let mut table = builder.build().map_err(|e| delta_err("opening", e))?;
        for _ in 0..3 {
            match table.load().await {
                Ok(()) => break,
                Err(deltalake::DeltaTableError::NotATable(_)) => {
                    let created = deltalake::operations::create::CreateBuilder::new()
                        .with_log_store(table.log_store())
                        .with_columns(table_columns()?)
                        .with_partition_columns([DATE])
                        .with_save_mode(SaveMode::Ignore)
                        .await;
                    match created {
                        Ok(t) => {
                            table = t;
                            break;
                        }
                        Err(e) => {
                            tracing::info!(error = %e, "Delta table created by another writer; loading it.")
                        }
                    }
                }
                Err(e) => return Err(delta_err("loading", e)),
            }
        }
        self.table = Some(table);
        self.remote = Some(remote);
        Ok(())
    }
}

/// delta-rs's default log store for the cloud schemes: it commits `_delta_log/<v>.json` by
/// conditional create (`PutMode::Create`). The `deltalake` crate registers it for `file://`
/// only; its S3 store (the `s3` feature) would bring the AWS SDK and a DynamoDB lock that
/// stores with conditional writes do not need (AWS S3 since 2024, GCS, Azure, MinIO, s3s-fs).
struct ConditionalCreateLogStores;

impl deltalake::logstore::LogStoreFactory for ConditionalCreateLogStores {
    fn with_options(
        &self,
        prefixed_store: deltalake::logstore::ObjectStoreRef,
        root_store: deltalake::logstore::ObjectStoreRef,
        location: &Url,
        options: &deltalake::logstore::StorageConfig,
    ) -> deltalake::DeltaResult<Arc<dyn deltalake::logstore::LogStore>> {
        Ok(deltalake::logstore::default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

/// Registers [`ConditionalCreateLogStores`] for every scheme [`crate::storage`] opens (once;
/// a factory registered by someone else is kept).
fn register_log_stores() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let registry = deltalake::logstore::logstore_factories();
        for scheme in crate::storage::SCHEMES {
            if let Ok(url) = Url::parse(&format!("{scheme}://")) {
                registry
                    .entry(url)
                    .or_insert_with(|| Arc::new(ConditionalCreateLogStores));
            }
        }
    });
}

/// The files of a commit, with where they go in the table.
struct Upload {
    /// Local staged file, under the staging root.
    local: PathBuf,
    /// Path in the table.
    path: String,
    /// The partition (`date` value).
    date: String,
    rows: u64,
    bytes: u64,
    bounds: Option<RowBounds>,
}

impl Upload {
    fn add(&self, now: i64) -> Add {
        Add {
            path: self.path.clone(),
            partition_values: HashMap::from([(DATE.to_owned(), Some(self.date.clone()))]),
            size: self.bytes as i64,
            modification_time: now,
            data_change: true,
            stats: Some(stats_json(self.rows, self.bounds.as_ref())),
            tags: self
                .bounds
                .as_ref()
                .map(|b| HashMap::from([(RESIDUES_TAG.to_owned(), Some(b.residues_hex()))])),
            ..Add::default()
        }
    }
}

/// What a commit replaces: files removed, remnants added, rows taken out.
#[derive(Default)]
struct Replacing {
    removes: Vec<TableFile>,
    remnants: Vec<Upload>,
    rows_removed: u64,
}

impl DeltaSink {
    fn runtime(&self) -> Arc<tokio::runtime::Runtime> {
        self.rt.clone().expect("started by Sink::start")
    }

    fn remote(&self) -> &Remote {
        self.remote.as_ref().expect("opened by Sink::start")
    }

    /// The table's active data files, as our names and statistics describe them.
    fn table_files(&self) -> Result<Vec<TableFile>, SinkError> {
        let table = self.table.as_ref().expect("opened by Sink::start");
        let snapshot = table
            .snapshot()
            .map_err(|e| delta_err("reading its files", e))?;
        let mut out = Vec::new();
        for f in snapshot.log_data().iter() {
            let path = f.path().to_string();
            let (rows, mut bounds) = f
                .stats()
                .as_deref()
                .map(parse_stats)
                .unwrap_or((None, None));
            #[allow(deprecated)] // the one public way to a file's tags in deltalake 1.1
            let tags = f.add_action().tags.unwrap_or_default();
            if let (Some(b), Some(Some(hex))) = (bounds.as_mut(), tags.get(RESIDUES_TAG)) {
                b.residues = RowBounds::residues_from_hex(hex).unwrap_or_default();
            }
            let (unit, cells_from, cells_to) = parse_name(&path).unwrap_or_default();
            out.push(TableFile {
                rows: rows.unwrap_or(0),
                size: f.size(),
                partition: f.partition_values_map(),
                unit,
                cells_from,
                cells_to,
                bounds,
                path,
            });
        }
        Ok(out)
    }

    /// The files whose rows this commit re-exports: removed whole when of the same unit and
    /// cells, else read and rewritten without those rows (remnants, uploaded).
    async fn plan_replacing(
        &self,
        info: &UnitInfo,
        cells: &[CellRef],
        attempt: usize,
    ) -> Result<Replacing, SinkError> {
        let cells_to = info.first_cell + cells.len() as u32;
        let cell_map: CellMap<'_> = cells.iter().map(|c| (c.user.as_ref(), c.window)).collect();
        let users = || cells.iter().map(|c| c.user.as_ref());
        let (min_user, max_user) = (users().min().unwrap_or(""), users().max().unwrap_or(""));
        let start = cells.iter().map(|c| c.window.start_ms).min().unwrap_or(0);
        let end = cells.iter().map(|c| c.window.end_ms).max().unwrap_or(0);
        let mut mine = vec![0u64; (super::rotating::RESIDUE_MODULUS as usize).div_ceil(64)];
        for c in cells {
            let r = super::rotating::residue(&c.user);
            mine[r / 64] |= 1 << (r % 64);
        }
        let mut out = Replacing::default();
        for f in self.table_files()? {
            if f.unit == info.key.0 && f.cells_from >= info.first_cell && f.cells_to <= cells_to {
                out.rows_removed += f.rows;
                out.removes.push(f);
                continue;
            }
            // Only a file that may hold one of the commit's users in its time span is read:
            // user and time bounds, and the users' hash residues (files of other shards have
            // none in common).
            let overlaps = f.bounds.as_ref().is_none_or(|b| {
                b.min_user.as_str() <= max_user
                    && min_user <= b.max_user.as_str()
                    && b.min_ms < end
                    && start <= b.max_ms
                    && (b.residues.is_empty()
                        || b.residues.iter().zip(&mine).any(|(a, m)| a & m != 0))
            });
            if overlaps {
                self.mask_file(f, &cell_map, attempt, &mut out).await?;
            }
        }
        Ok(out)
    }

    /// Reads one candidate file and records what happens to it.
    async fn mask_file(
        &self,
        f: TableFile,
        cells: &CellMap<'_>,
        attempt: usize,
        out: &mut Replacing,
    ) -> Result<(), SinkError> {
        let local = self.staging.join("read").join(&f.path);
        self.remote()
            .download(&f.path, &local)
            .await
            .map_err(|e| delta_err("reading a file", e))?;
        let drop = supersede::parquet_mask(&local, cells)?;
        let dropped = drop.iter().filter(|d| **d).count() as u64;
        if dropped == 0 {
            let _ = std::fs::remove_file(&local);
            return Ok(());
        }
        out.rows_removed += dropped;
        if dropped as usize == drop.len() {
            let _ = std::fs::remove_file(&local);
            out.removes.push(f);
            return Ok(());
        }
        let n = out.remnants.len() + 1;
        let dir = f.path.rsplit_once('/').map_or("", |(d, _)| d);
        let path = format!(
            "{dir}/part-{}-{:05}-{:05}-r{attempt}{n:02}-{}.parquet",
            f.unit, f.cells_from, f.cells_to, self.run8
        );
        let staged = self.staging.join(&path);
        super::durable::create_dir(staged.parent().unwrap_or(&self.staging))?;
        let (rows, done) = supersede::rewrite_parquet(&local, &staged, &self.spec.encoding, &drop)?;
        let _ = std::fs::remove_file(&local);
        let date = f.partition.get(DATE).cloned().flatten().unwrap_or_default();
        out.remnants.push(Upload {
            local: staged,
            path,
            date,
            rows,
            bytes: done.bytes,
            bounds: f.bounds.clone(),
        });
        out.removes.push(f);
        Ok(())
    }

    /// Uploads `files` (the new data files, or remnants).
    async fn upload(&self, files: &[Upload]) -> Result<(), SinkError> {
        for u in files {
            self.remote()
                .upload(&u.path, &u.local)
                .await
                .map_err(|e| delta_err("uploading a file", e))?;
        }
        Ok(())
    }

    /// Commits `adds` in one Delta transaction with what they replace; re-plans when a
    /// concurrent writer invalidated the plan.
    async fn publish(
        &mut self,
        info: &UnitInfo,
        cells: &[CellRef],
        adds: Vec<Upload>,
    ) -> Result<(u64, Vec<Upload>, Replacing), SinkError> {
        self.upload(&adds).await?;
        let cells_to = info.first_cell + cells.len() as u32;
        let app_id = format!("engati-etl/{}/{}", self.namespace, info.key.0);
        let mut last_error = None;
        for attempt in 0..MAX_PLANS {
            let table = self.table.as_mut().expect("opened");
            table
                .update_incremental(None)
                .await
                .map_err(|e| delta_err("refreshing", e))?;
            let replacing = self.plan_replacing(info, cells, attempt).await?;
            self.upload(&replacing.remnants).await?;
            let now = crate::time::now_ms();
            let mut actions: Vec<Action> = adds.iter().map(|u| Action::Add(u.add(now))).collect();
            actions.extend(replacing.remnants.iter().map(|u| Action::Add(u.add(now))));
            actions.extend(
                replacing
                    .removes
                    .iter()
                    .map(|f| Action::Remove(remove(f, now))),
            );
            actions.push(Action::Txn(Transaction::new_with_last_update(
                &app_id,
                i64::from(cells_to),
                Some(now),
            )));
            fail::fail_point!("delta::before_commit", |_| crate::hooks::crash(
                "before a Delta commit"
            ));
            let table = self.table.as_ref().expect("opened");
            let snapshot = table.snapshot().map_err(|e| delta_err("committing", e))?;
            let op = DeltaOperation::Write {
                mode: SaveMode::Append,
                partition_by: Some(vec![DATE.to_owned()]),
                predicate: None,
            };
            let result = CommitBuilder::default()
                .with_actions(actions)
                .build(Some(snapshot), table.log_store(), op)
                .await;
            match result {
                Ok(done) => return Ok((done.version(), adds, replacing)),
                Err(e) => {
                    tracing::info!(error = %e, attempt, "Delta commit conflicted; planning again.");
                    for r in &replacing.remnants {
                        let _ = self.remote().delete(&r.path).await;
                    }
                    last_error = Some(e);
                }
            }
        }
        Err(delta_err(
            "committing",
            last_error.map_or_else(String::new, |e| e.to_string()),
        ))
    }
}

fn remove(f: &TableFile, now: i64) -> Remove {
    Remove {
        path: f.path.clone(),
        data_change: true,
        deletion_timestamp: Some(now),
        extended_file_metadata: Some(true),
        partition_values: Some(f.partition.clone()),
        size: Some(f.size),
        ..Remove::default()
    }
}

/// The table path of a staged file: `date=D/part-<unit>-<from>-<seq>.parquet` becomes
/// `date=D/part-<unit>-<from>-<to>-<seq>-<run8>.parquet`.
fn table_path(staged: &StagedFile, cells_to: u32, run8: &str) -> String {
    let (dir, name) = staged.path.rsplit_once('/').unwrap_or(("", &staged.path));
    let stem = name.strip_suffix(".parquet").unwrap_or(name);
    let (head, seq) = stem.rsplit_once('-').unwrap_or((stem, "000"));
    format!("{dir}/{head}-{cells_to:05}-{seq}-{run8}.parquet")
}

impl Sink for DeltaSink {
    fn start(&mut self) -> Result<(), SinkError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| SinkError::Crashed(format!("cannot start the Delta runtime: {e}")))?;
        let rt = Arc::new(rt);
        self.rt = Some(rt.clone());
        rt.block_on(self.open())
    }

    fn begin_unit(&mut self, info: Arc<UnitInfo>) -> Result<(), SinkError> {
        self.abort();
        let layout = Layout {
            root: self.staging.clone(),
            dir_prefix: DATE,
            stem: format!("part-{}-{:05}", info.key.0, info.first_cell),
            run8: self.run8.clone(),
            encoding: self.spec.encoding.clone(),
            schema: file_schema(),
            target_bytes: self.spec.target_file_bytes,
            stats: true,
            transform: Some(to_file_batch),
        };
        let parts = DayPartitions::new(layout, info.window.end_ms - info.window.start_ms);
        self.unit = Some(OpenUnit { info, parts });
        Ok(())
    }

    fn write(&mut self, rows: RecordBatch) -> Result<(), SinkError> {
        let unit = self
            .unit
            .as_mut()
            .ok_or_else(|| SinkError::Crashed("rows arrived outside a unit".into()))?;
        unit.parts.write(rows)
    }

    fn commit(&mut self, cells_done: u32, dead: DeadLetters) -> Result<Committed, SinkError> {
        let unit = self
            .unit
            .take()
            .ok_or_else(|| SinkError::Crashed("EndUnit outside a unit".into()))?;
        let info = unit.info;
        let staged = unit.parts.finish()?;
        let done = (cells_done as usize).min(info.cells.len());
        let result = if done == 0 {
            Ok(Committed::default())
        } else {
            self.commit_cells(&info, done, staged.clone(), dead)
        };
        for (_, f) in &staged {
            let _ = std::fs::remove_file(self.staging.join(&f.staged));
        }
        result
    }

    fn abort(&mut self) {
        if let Some(unit) = self.unit.take() {
            unit.parts.discard();
        }
    }

    fn finish(self: Box<Self>) -> SinkEnd {
        SinkEnd {
            crm: None,
            state: Some(self.state),
            rows_uncommitted: 0,
        }
    }
}

impl DeltaSink {
    /// Publishes the first `done` cells of `info` and records them in the local state.
    fn commit_cells(
        &mut self,
        info: &UnitInfo,
        done: usize,
        staged: Vec<(i64, StagedFile)>,
        dead: DeadLetters,
    ) -> Result<Committed, SinkError> {
        let cells = &info.cells[..done];
        let cells_to = info.first_cell + done as u32;
        let adds: Vec<Upload> = staged
            .into_iter()
            .map(|(day, f)| Upload {
                local: self.staging.join(&f.staged),
                path: table_path(&f, cells_to, &self.run8),
                date: crate::time::date_string(day * DAY_MS),
                rows: f.rows,
                bytes: f.bytes,
                bounds: f.bounds,
            })
            .collect();
        let rt = self.runtime();
        let (version, adds, replacing) = rt.block_on(self.publish(info, cells, adds))?;
        fail::fail_point!("delta::after_commit", |_| crate::hooks::crash(
            "after a Delta commit, before the local state recorded it"
        ));
        let mut files: Vec<WrittenFile> = adds
            .iter()
            .chain(&replacing.remnants)
            .map(|u| WrittenFile {
                path: u.path.clone(),
                bytes: u.bytes,
            })
            .collect();
        if !dead.is_empty() {
            files.push(rt.block_on(self.dead_letters(info, cells_to, &dead))?);
        }
        for r in &replacing.remnants {
            let _ = std::fs::remove_file(&r.local);
        }
        let plan = CommitPlan {
            unit_progress: Some((info.key.0.clone(), cells_to)),
            watermarks: self
                .watermarks
                .as_deref()
                .map(|ns| watermark_moves(ns, cells, &dead.unreadable))
                .unwrap_or_default(),
            ..CommitPlan::default()
        };
        self.state
            .commit(&self.run_id, &plan, &self.staging, crate::time::now_ms())?;
        tracing::debug!(version, unit = %info.key.0, "Delta commit.");
        Ok(Committed {
            rows: adds.iter().map(|u| u.rows).sum(),
            rejects: dead.rows,
            files,
            files_replaced: replacing.removes.len() as u64,
            rows_replaced: replacing.rows_removed,
        })
    }

    /// Uploads the unit's dead letters to `_dead_letter/` beside the table's data (Delta
    /// readers ignore `_`-prefixed directories).
    async fn dead_letters(
        &self,
        info: &UnitInfo,
        cells_to: u32,
        dead: &DeadLetters,
    ) -> Result<WrittenFile, SinkError> {
        let path = format!(
            "_dead_letter/part-{}-{:05}-{:05}-{}.jsonl",
            info.key.0, info.first_cell, cells_to, self.run8
        );
        let local = self.staging.join(&path);
        super::durable::write_file(&local, &dead.lines)?;
        self.remote()
            .upload(&path, &local)
            .await
            .map_err(|e| delta_err("uploading dead letters", e))?;
        let _ = std::fs::remove_file(&local);
        Ok(WrittenFile {
            path,
            bytes: dead.lines.len() as u64,
        })
    }
}
