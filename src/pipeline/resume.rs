//! Before the walk: the state store opened (and an interrupted commit recovered before anything
//! reads the output), the run started or resumed (an unfinished run with the same parameters in
//! the same namespace continues: its committed units are skipped), and each listed user's range
//! planned in the store (incremental runs: from the watermark minus the lookback).

use std::sync::Arc;

use serde::Serialize;

use super::listing::Listing;
use super::{RunError, RunSpec};
use crate::engati::UsersSource;
use crate::engati::users::RejectedUser;
use crate::plan::{Mode, Plan};
use crate::sink::{OutputSpec, SinkError};
use crate::state::{ListedReader, StateError, StateStore};
use crate::time::{now_ms, rfc3339_ms};

/// The run's identity and plan, once the state said whether it resumes.
pub struct Prepared {
    /// The run id (the interrupted run's when resumed).
    pub run_id: String,
    /// True when an unfinished run with the same parameters is continued.
    pub resumed: bool,
    /// Users x windows, the users read from the store a page at a time.
    pub plan: Plan,
    /// The store's reader, for what a resumed run committed.
    pub reader: Arc<ListedReader>,
    /// Users the Users API listed whose id cannot be exported.
    pub rejected_users: Vec<RejectedUser>,
    /// Users listed that belong to other shards.
    pub other_shards: u64,
}

impl Prepared {
    /// Cells of unit `key` that the resumed run already committed (0 for a new run).
    ///
    /// # Errors
    /// The store's errors.
    pub fn cells_done(&self, key: &str) -> Result<u32, StateError> {
        if !self.resumed {
            return Ok(0);
        }
        Ok(self.reader.cells_done(&self.run_id, key)?.unwrap_or(0))
    }
}

/// The run's start, ms since epoch UTC (`extracted_at`, the run id). Tests pin it with the
/// failpoint `pipeline::start_ms=return(MS)` (feature `fault-injection`) to compare outputs
/// byte for byte.
pub fn start_ms() -> i64 {
    fail::fail_point!("pipeline::start_ms", |v| v
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(now_ms));
    now_ms()
}

/// `20260812T083327Z-a1b2c3`: the start time and 24 random bits (zero when the start is
/// pinned by a test).
fn new_run_id(now: i64) -> String {
    let t = rfc3339_ms(now);
    let compact: String = t[..19]
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .collect();
    fail::fail_point!("pipeline::start_ms", |_| format!("{compact}Z-000000"));
    format!("{compact}Z-{:06x}", rand::random::<u32>() & 0xff_ffff)
}

/// Opens the output's state store (none for stdout) and finishes an interrupted commit. A
/// sharded run claims the store for its shard first (a store another shard used is refused),
/// so that recovery only touches its own shard's staged files.
///
/// # Errors
/// [`RunError::Config`] when the output directory cannot be created; [`RunError::State`].
pub fn open_state(spec: &RunSpec) -> Result<Option<StateStore>, RunError> {
    let (Some(out_dir), Some(state_dir)) = (spec.output.out_dir(), spec.output.state_dir()) else {
        return Ok(None);
    };
    std::fs::create_dir_all(out_dir).map_err(|e| {
        RunError::Config(format!(
            "out: cannot create output directory {}: {e}",
            out_dir.display()
        ))
    })?;
    let files_dir = match &spec.output {
        OutputSpec::Files(f) => f.out_dir.as_path(),
        _ => out_dir,
    };
    let mut st = StateStore::open(state_dir)?;
    st.claim_shard(spec.shard)?;
    let (finished, strays) = st.recover(files_dir)?;
    if finished + strays > 0 {
        tracing::info!(
            commits = finished,
            staged_files = strays,
            "Recovered from an interrupted run."
        );
    }
    Ok(Some(st))
}

/// For an output on object storage: empties the local mirror (nothing in it outlives a
/// commit) and replays the output's manifests into the state, before the run is planned, so a
/// worker with an empty state directory resumes, supersedes and keeps watermarks as if it had
/// run every earlier commit itself. The object-store I/O runs on a thread and runtime of its
/// own, off the pipeline's executor.
///
/// # Errors
/// [`RunError::Sink`] for the store; [`RunError::State`].
pub async fn replay_remote(
    spec: &RunSpec,
    state: Option<StateStore>,
) -> Result<Option<StateStore>, RunError> {
    let (url, mirror) = match &spec.output {
        OutputSpec::Files(f) if f.remote.is_some() => (f.remote.clone(), f.out_dir.clone()),
        _ => return Ok(state),
    };
    let (Some(url), Some(mut st)) = (url, state) else {
        return Ok(None);
    };
    let job = move || -> Result<StateStore, RunError> {
        if mirror.exists() {
            std::fs::remove_dir_all(&mirror).map_err(|source| StateError::Io {
                action: "emptying the local mirror",
                path: mirror.clone(),
                source,
            })?;
        }
        std::fs::create_dir_all(&mirror).map_err(|source| StateError::Io {
            action: "creating the local mirror",
            path: mirror.clone(),
            source,
        })?;
        let replayed = crate::sink::remote_replay::replay(&url, &mut st)?;
        tracing::info!(
            output = %url,
            manifests = replayed.manifests,
            applied = replayed.applied,
            "Read the state in the output."
        );
        Ok(st)
    };
    match tokio::task::spawn_blocking(job).await {
        Ok(r) => r.map(Some),
        Err(e) => Err(RunError::Sink(SinkError::Crashed(format!(
            "reading the output's manifests: {e}"
        )))),
    }
}

/// What identifies a run for resume: a resumed run must plan exactly the same cells.
#[derive(Serialize)]
struct ParamsForResume<'a> {
    namespace: &'a str,
    provider: &'a str,
    base_url: &'a str,
    customer_id: &'a str,
    bot_key: &'a str,
    users: String,
    mode: String,
    window_ms: i64,
    /// `auto` for adaptive windows; absent for fixed ones, so a run interrupted before
    /// adaptive windows existed still resumes with the same parameters.
    #[serde(skip_serializing_if = "Option::is_none")]
    windowing: Option<&'static str>,
    page_size: u32,
    checkpoint_users: usize,
    format: &'a str,
    /// `residual` when `raw_json` holds the residual; absent for the whole message (what every
    /// run wrote before the residual existed), so such a run resumes only with the same form
    /// and no output mixes the two.
    #[serde(skip_serializing_if = "Option::is_none")]
    raw_json: Option<&'static str>,
}

fn params(spec: &RunSpec) -> (String, String) {
    let s = &spec.source;
    let p = ParamsForResume {
        namespace: &spec.namespace,
        provider: s.provider.as_str(),
        base_url: &s.client.base_url,
        customer_id: &s.client.customer_id,
        bot_key: &s.client.bot_key,
        users: match &s.users {
            UsersSource::Filters(f) => f
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            UsersSource::File(p) => format!("file:{}", p.display()),
        },
        mode: format!("{:?}", spec.range.mode),
        window_ms: spec.range.window_ms,
        windowing: (spec.range.windowing == crate::plan::Windowing::Auto).then_some("auto"),
        page_size: s.page_size,
        checkpoint_users: spec.tuning.checkpoint_users,
        format: spec.output.format_key(),
        raw_json: (spec.raw_json == crate::schema::RawJson::Residual).then_some("residual"),
    };
    let json = serde_json::to_string(&p).unwrap_or_default();
    let hash = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(json.as_bytes()));
    (json, hash)
}

/// Starts or resumes the run (when `keeps_state`: the output's store) and plans it over the
/// users listed in `store`.
///
/// # Errors
/// [`RunError::State`].
pub fn prepare(
    spec: &RunSpec,
    store: &mut StateStore,
    keeps_state: bool,
    listing: Listing,
    started: i64,
) -> Result<Prepared, RunError> {
    let until_ms = spec.range.mode.until_ms();
    let (run_id, resumed) = if keeps_state {
        let (json, hash) = params(spec);
        let start = store.begin_run(
            &spec.namespace,
            &hash,
            &json,
            Some(until_ms),
            &new_run_id(started),
            started,
        )?;
        (start.run_id, start.resumed)
    } else {
        (new_run_id(started), false)
    };
    if let Mode::Incremental {
        start_ms,
        lookback_ms,
        ..
    } = spec.range.mode
        && keeps_state
    {
        store.start_from_watermarks(
            "main",
            &spec.namespace,
            &run_id,
            start_ms,
            lookback_ms,
            until_ms,
        )?;
    }
    let stats = store.listed_stats(until_ms, spec.range.grid())?;
    let reader = Arc::new(ListedReader::open(store.path())?);
    Ok(Prepared {
        rejected_users: listing.rejected,
        other_shards: listing.other_shards,
        run_id,
        resumed,
        plan: Plan {
            users: reader.clone(),
            user_count: stats.users,
            cells: stats.cells,
            earliest_ms: stats.earliest_ms,
            until_ms,
            grid: spec.range.grid(),
            checkpoint_users: spec.tuning.checkpoint_users,
            shard: spec.shard,
        },
        reader,
    })
}
