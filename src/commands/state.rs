//! `state show` and `state reset`.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::cli::{StateCmd, StateTarget};
use crate::config::PipelineFile;
use crate::error::Error;
use crate::report::human_bytes;
use crate::shard::Shard;
use crate::state::StateStore;
use crate::time::{parse_user_instant, rfc3339_ms};

/// Resolves (output dir, state dir, shard) from a pipeline file or flags; a shard's state is
/// in its subdirectory `s<I>of<N>` of the state directory.
///
/// # Errors
/// [`Error::Usage`] when no output is named, for stdout, a bad `--shard`, or no state there
/// (for a sharded output without `--shard`, the error says to pass one).
pub(super) fn locate(t: &StateTarget) -> Result<(PathBuf, PathBuf, Option<Shard>), Error> {
    locate_with(t, "pass --shard I/N for one shard's state")
}

/// [`locate`], with `sharded_hint` as what its error says when the output is sharded and no
/// shard was given (a command that takes no `--shard` says what it does instead).
///
/// # Errors
/// As [`locate`].
pub(super) fn locate_with(
    t: &StateTarget,
    sharded_hint: &str,
) -> Result<(PathBuf, PathBuf, Option<Shard>), Error> {
    let (mut out, mut state) = (t.out.clone(), t.state_dir.clone());
    if let Some(p) = &t.pipeline {
        let f = PipelineFile::load(p)?;
        out = out.or(f.sink.out);
        state = state.or(f.sink.state_dir);
    }
    let usage = |m: String| Error::Usage(m);
    let out = out.ok_or_else(|| {
        usage("say which state: a PIPELINE.toml, --out DIR or --state-dir DIR".into())
    })?;
    if out.as_os_str() == "-" {
        return Err(usage("an export to stdout (--out -) keeps no state".into()));
    }
    let state = state.unwrap_or_else(|| {
        let location = out.to_string_lossy();
        if crate::storage::is_remote(&location) {
            crate::config::sink::remote_state_dir(&location)
        } else {
            out.join("_state")
        }
    });
    let shard = match t.shard.as_deref() {
        Some(text) => Shard::parse(text).map_err(|e| usage(format!("--shard: {e}")))?,
        None => None,
    };
    let state = match shard {
        Some(s) => state.join(s.tag()),
        None => state,
    };
    if !state.join("state.sqlite3").exists() {
        let sharded = shard.is_none() && has_shard_dirs(&state);
        return Err(usage(format!(
            "no state at {}{}",
            state.display(),
            if sharded {
                format!(" (this output is sharded: {sharded_hint})")
            } else {
                " (nothing has run with this output yet)".to_owned()
            }
        )));
    }
    Ok((out, state, shard))
}

/// True when `dir` holds shards' state directories (`s<I>of<N>`).
fn has_shard_dirs(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|rd| {
        rd.flatten()
            .any(|e| Shard::tag_in(&e.file_name().to_string_lossy()).is_some())
    })
}

/// `engati-etl state show|reset ...`.
///
/// # Errors
/// [`Error::Usage`] when no state is found; [`Error::State`].
pub fn state(cmd: StateCmd) -> Result<ExitCode, Error> {
    let target = match &cmd {
        StateCmd::Show(a) => &a.target,
        StateCmd::Reset(a) => &a.target,
    };
    let (out, dir, shard) = locate(target)?;
    // An output on object storage keeps its local files in the state's mirror.
    let files = if crate::storage::is_remote(&out.to_string_lossy()) {
        dir.join("mirror")
    } else {
        out.clone()
    };
    match cmd {
        StateCmd::Show(a) => {
            // While a run holds the store, look without touching it (WAL readers).
            let st = match StateStore::open(&dir) {
                Ok(mut st) => {
                    st.recover(&files)?;
                    st
                }
                Err(crate::state::StateError::Locked(_)) => StateStore::open_read_only(&dir)?,
                Err(e) => return Err(e.into()),
            };
            show(&st, &out, a.user.as_deref(), a.runs, a.json)?;
        }
        StateCmd::Reset(a) => {
            let mut st = StateStore::open(&dir)?;
            st.recover(&files)?;
            let namespace = match shard {
                Some(s) if !a.namespace.contains('@') => format!("{}@{}", a.namespace, s.tag()),
                _ => a.namespace.clone(),
            };
            reset(&mut st, a.user.as_deref(), a.to.as_deref(), &namespace)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn show(
    st: &StateStore,
    out: &std::path::Path,
    user: Option<&str>,
    runs: usize,
    json: bool,
) -> Result<(), Error> {
    let streams = st.stream_stats()?;
    let marks = st.watermark_summaries()?;
    let history = st.runs(None, runs)?;
    let user_marks = match user {
        Some(u) => Some(st.user_watermarks(u)?),
        None => None,
    };
    let view = View {
        out,
        user,
        streams: &streams,
        marks: &marks,
        user_marks: user_marks.as_deref(),
        history: &history,
    };
    if json {
        return show_json(st, &view);
    }
    show_text(st, &view);
    Ok(())
}

/// What `state show` shows.
struct View<'a> {
    out: &'a std::path::Path,
    user: Option<&'a str>,
    streams: &'a [crate::state::StreamStats],
    marks: &'a [crate::state::WatermarkSummary],
    user_marks: Option<&'a [crate::state::UserWatermark]>,
    history: &'a [crate::state::RunRecord],
}

fn show_json(st: &StateStore, view: &View<'_>) -> Result<(), Error> {
    let View {
        out,
        user,
        streams,
        marks,
        user_marks,
        history,
    } = *view;
    {
        let runs_json: Vec<serde_json::Value> = history
            .iter()
            .map(|r| {
                serde_json::json!({
                    "run_id": r.run_id, "namespace": r.namespace, "status": shown_status(st, r),
                    "started_at": rfc3339_ms(r.started_ms),
                    "finished_at": r.finished_ms.map(rfc3339_ms),
                    "report": r.report.as_deref().and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok()),
                })
            })
            .collect();
        let v = serde_json::json!({
            "state": st.path(), "out": out, "files": streams, "watermarks": marks,
            "user": user.map(|u| serde_json::json!({"channel_user_id": u, "watermarks": user_marks})),
            "runs": runs_json,
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        Ok(())
    }
}

fn show_text(st: &StateStore, view: &View<'_>) {
    let View {
        out,
        user,
        streams,
        marks,
        user_marks,
        history,
    } = *view;
    println!(
        "state      {} (output {})",
        st.path().display(),
        out.display()
    );
    if streams.is_empty() {
        println!("files      none");
    }
    for s in streams {
        println!(
            "files      {}: {} files, {} rows, {}",
            s.stream,
            s.files,
            s.rows,
            human_bytes(s.bytes)
        );
    }
    if marks.is_empty() {
        println!("watermarks none (no incremental run yet)");
    }
    for m in marks {
        println!(
            "watermarks {}: {} users, from {} to {}",
            m.namespace,
            m.users,
            m.min_end_ms.map(rfc3339_ms).unwrap_or_default(),
            m.max_end_ms.map(rfc3339_ms).unwrap_or_default()
        );
    }
    if let (Some(u), Some(list)) = (user, user_marks) {
        if list.is_empty() {
            println!(
                "user       {u}: no watermark (a new user: the next incremental run exports their full history)"
            );
        }
        for w in list {
            println!(
                "user       {u} [{}]: exported {} .. {}{}",
                w.namespace,
                rfc3339_ms(w.start_ms),
                rfc3339_ms(w.end_ms),
                w.run_id
                    .as_deref()
                    .map(|r| format!(" (moved by unfinished run {r})"))
                    .unwrap_or_default()
            );
        }
    }
    println!("runs       {} most recent:", history.len());
    for r in history {
        let rep: Option<serde_json::Value> = r
            .report
            .as_deref()
            .and_then(|t| serde_json::from_str(t).ok());
        let (msgs, rejects, secs, skipped) = match &rep {
            Some(v) => (
                v["messages"]["written"].as_u64().unwrap_or(0),
                v["messages"]["rejected"].as_u64().unwrap_or(0),
                v["duration_ms"].as_u64().unwrap_or(0) as f64 / 1000.0,
                v["cells"]["skipped"].as_u64().unwrap_or(0),
            ),
            None => (0, 0, 0.0, 0),
        };
        println!(
            "  {}  {:<22} {:<22} {}  {secs:.1} s  {msgs} messages, {rejects} rejected, {skipped} cells skipped",
            r.run_id,
            r.namespace.chars().take(22).collect::<String>(),
            shown_status(st, r),
            rfc3339_ms(r.started_ms)
        );
    }
}

fn reset(
    st: &mut StateStore,
    user: Option<&str>,
    to: Option<&str>,
    namespace: &str,
) -> Result<(), Error> {
    let to_ms = match to {
        Some(t) => Some(
            parse_user_instant(t, crate::time::now_ms())
                .map_err(|e| Error::Usage(format!("--to: {e}")))?,
        ),
        None => None,
    };
    let n = st.reset_watermarks(namespace, user, to_ms)?;
    if n == 0 {
        let whose = user.map_or("any user".to_owned(), |u| format!("user {u}"));
        println!("state reset [{namespace}]: no watermark of {whose}; nothing changed");
        return Ok(());
    }
    let what = match (user, to_ms) {
        (Some(u), Some(t)) => format!("moved the watermark of {u} back to {}", rfc3339_ms(t)),
        (Some(u), None) => format!("removed the watermark of {u} (full history next run)"),
        (None, Some(t)) => format!("moved {n} watermarks back to {}", rfc3339_ms(t)),
        (None, None) => format!("removed {n} watermarks (full history next run)"),
    };
    println!(
        "state reset [{namespace}]: {what}; rows already written are replaced, not duplicated, when re-exported"
    );
    Ok(())
}

/// A run's status as shown: `running` only if a run holds the store now; a run recorded
/// `running` while nothing holds the lock was killed (or its machine lost), and shows as
/// `crashed` (the next run with the same parameters resumes it).
fn shown_status<'a>(st: &StateStore, r: &'a crate::state::RunRecord) -> &'a str {
    if r.status == "running" && st.holds_lock() {
        "crashed"
    } else {
        &r.status
    }
}
