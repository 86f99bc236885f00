//! Before the walk: the state store opened (and an interrupted commit recovered before anything
//! reads the output), the run started or resumed (an unfinished run with the same parameters in
//! the same namespace continues: its committed units are skipped), and each user's range
//! planned (incremental runs: from the watermark minus the lookback).

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use super::{RunError, RunSpec};
use crate::engati::UsersSource;
use crate::engati::users::RejectedUser;
use crate::model::User;
use crate::plan::{Mode, Plan};
use crate::state::StateStore;
use crate::time::{now_ms, rfc3339_ms};

/// The run's identity and plan, once the state said whether it resumes.
pub struct Prepared {
    /// The run id (the interrupted run's when resumed).
    pub run_id: String,
    /// True when an unfinished run with the same parameters is continued.
    pub resumed: bool,
    /// Units the resumed run already committed: unit key -> cells done.
    pub done_units: HashMap<String, u32>,
    /// Users x windows.
    pub plan: Plan,
    /// Users the Users API listed whose id cannot be exported.
    pub rejected_users: Vec<RejectedUser>,
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

/// Opens the output's state store (none for stdout) and finishes an interrupted commit.
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
    let mut st = StateStore::open(state_dir)?;
    let (finished, strays) = st.recover(out_dir)?;
    if finished + strays > 0 {
        tracing::info!(
            commits = finished,
            staged_files = strays,
            "Recovered from an interrupted run."
        );
    }
    Ok(Some(st))
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
    page_size: u32,
    checkpoint_users: usize,
    format: &'a str,
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
        page_size: s.page_size,
        checkpoint_users: spec.tuning.checkpoint_users,
        format: spec.output.format_key(),
    };
    let json = serde_json::to_string(&p).unwrap_or_default();
    let hash = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(json.as_bytes()));
    (json, hash)
}

/// Starts or resumes the run and plans it.
///
/// # Errors
/// [`RunError::State`].
pub fn prepare(
    spec: &RunSpec,
    state: Option<&mut StateStore>,
    users: Vec<User>,
    rejected_users: Vec<RejectedUser>,
    started: i64,
) -> Result<Prepared, RunError> {
    let until_ms = spec.range.mode.until_ms();
    let (run_id, resumed, done_units, marks) = match state {
        Some(st) => {
            let (json, hash) = params(spec);
            let start = st.begin_run(
                &spec.namespace,
                &hash,
                &json,
                Some(until_ms),
                &new_run_id(started),
                started,
            )?;
            let done = if start.resumed {
                st.run_units(&start.run_id)?
            } else {
                HashMap::new()
            };
            let marks = match spec.range.mode {
                Mode::Incremental { .. } => st.watermarks(&spec.namespace, &start.run_id)?,
                Mode::Range { .. } => HashMap::new(),
            };
            (start.run_id, start.resumed, done, marks)
        }
        None => (new_run_id(started), false, HashMap::new(), HashMap::new()),
    };
    let from_ms: Vec<i64> = match spec.range.mode {
        Mode::Range { since_ms, .. } => vec![since_ms; users.len()],
        Mode::Incremental {
            start_ms,
            lookback_ms,
            ..
        } => users
            .iter()
            .map(|u| match marks.get(&u.channel_user_id) {
                Some(&(_, end)) if end >= until_ms => until_ms,
                Some(&(_, end)) => (end - lookback_ms).max(start_ms),
                None => start_ms,
            })
            .collect(),
    };
    Ok(Prepared {
        rejected_users,
        run_id,
        resumed,
        done_units,
        plan: Plan {
            users: Arc::new(users),
            from_ms: Arc::new(from_ms),
            until_ms,
            window_ms: spec.range.window_ms,
            checkpoint_users: spec.tuning.checkpoint_users,
        },
    })
}
