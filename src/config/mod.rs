//! Configuration: the pipeline file, flag overrides, precedence and validation.
//!
//! One type per section ([`SourceSection`], [`RangeSection`], [`SinkSection`],
//! [`SandboxSection`]) is both the pipeline file's `[section]` (serde, unknown keys refused with
//! their line) and the command line's flags for it (clap), so a setting is declared once: its
//! doc comment is the `--help` text and the reference of the key. Precedence is **flags >
//! environment > pipeline file > defaults**: clap reads a flag's environment variable when the
//! flag is absent, then [`Merge`] lays the flags over the file, field by field.
//!
//! Each section validates itself and produces its part of the runtime spec directly
//! ([`source`], [`range`], [`sink`], [`crm`], [`sandbox`]); [`validate`] joins them into a
//! [`RunSpec`]. Validation is pure (no I/O, no network) and reports every problem at once, each
//! naming the key or flag, the value and the fix. The I/O a run needs before its first request
//! (reading the API key and CRM token, checking the output is writable) comes after, in
//! [`secrets`] and [`check_output`].
//!
//! Relative paths (`out`, `users_file`, `api_key_file`, `state_dir`) are relative to the
//! current directory.

pub mod crm;
pub mod privacy;
pub mod range;
pub mod sandbox;
pub mod secrets;
pub mod sink;
pub mod source;
mod toml_error;
pub mod values;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use privacy::PrivacySection;
pub use range::{RangeMode, RangeSection};
pub use sandbox::SandboxSection;
pub use secrets::{API_KEY_ENV, check_output, read_crm_token, read_key};
pub use sink::{OutputFormat, SinkSection};
pub use source::SourceSection;

use crate::pipeline::{RunSpec, Tuning};

/// Default `page_size` (the API's documented default and our maximum).
pub const DEFAULT_PAGE_SIZE: u32 = 500;
/// Default requests in flight.
pub const DEFAULT_CONCURRENCY: usize = 16;
/// Default ceiling of `concurrency = "auto"`.
pub const DEFAULT_MAX_CONCURRENCY: usize = 64;
/// Default requests per second.
pub const DEFAULT_MAX_RPS: u32 = 50;
/// Default request timeout, seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// Default retries per request.
pub const DEFAULT_MAX_RETRIES: usize = 8;
/// Default window.
pub const DEFAULT_WINDOW: &str = "1d";
/// Default lookback for incremental runs.
pub const DEFAULT_LOOKBACK: &str = "1d";
/// Default file rotation size: 128 MiB.
pub const DEFAULT_TARGET_FILE_BYTES: u64 = 128 * 1024 * 1024;
/// Default Parquet row-group size: 4 MiB (estimated encoded bytes; about 40,000 messages).
pub const DEFAULT_ROW_GROUP_BYTES: usize = 4 * 1024 * 1024;
/// Default zstd level, for every compressed column: 1, zstd's fastest. With `raw_json` as a
/// residual, level 1 files are 5-9% larger than level 3 ones and 28-29% smaller than the files
/// before the residual (README "Performance", benchmark 3).
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;
/// Default cells per checkpoint unit.
pub const DEFAULT_CHECKPOINT_USERS: usize = 5000;
/// Cells fetched ahead of the one being written, per request allowed in flight: enough to keep
/// every permit busy while the cell being written waits, without running far ahead of the
/// commit point (what a stop or a closed pipe would waste).
pub const LOOKAHEAD_CELLS_PER_REQUEST: usize = 8;
/// Cells fetched ahead of the one being written, at most, whatever the concurrency.
pub const MAX_LOOKAHEAD_CELLS: usize = 1024;
/// Page bodies buffered ahead of the writer before only the cell being written may fetch: 8 MiB.
pub const DEFAULT_BUFFER_BYTES: u64 = 8 * 1024 * 1024;

/// A pipeline file (`pipelines/*.toml`). Unknown keys are errors.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    /// Pipeline name, for logs and reports. Default: the file name.
    pub name: Option<String>,
    /// Where the data comes from.
    #[serde(default)]
    pub source: SourceSection,
    /// Which time range.
    #[serde(default)]
    pub range: RangeSection,
    /// Where the data goes.
    #[serde(default)]
    pub sink: SinkSection,
    /// What personal data the output may carry.
    #[serde(default)]
    pub privacy: PrivacySection,
    /// Run against the embedded sandbox instead of a real API.
    pub sandbox: Option<SandboxSection>,
    /// `engati-etl send run`: what to send to whom (`send::config`).
    pub send: Option<crate::send::config::SendSection>,
}

/// Errors found in configuration (exit 2). Lists every problem found.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The pipeline file cannot be read.
    #[error("cannot read pipeline file {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The pipeline file is not valid TOML or has unknown keys.
    #[error("pipeline file {path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the key and line; values of secret-looking keys masked).
        reason: String,
    },
    /// One or more invalid values.
    #[error("{}", problems_text(.0))]
    Invalid(Vec<String>),
}

impl ConfigError {
    /// One problem.
    pub fn invalid(problem: impl Into<String>) -> Self {
        ConfigError::Invalid(vec![problem.into()])
    }
}

fn problems_text(p: &[String]) -> String {
    if p.len() == 1 {
        return format!("configuration error: {}", p[0]);
    }
    let mut s = format!("{} configuration errors:", p.len());
    for x in p {
        s.push_str("\n  - ");
        s.push_str(x);
    }
    s
}

/// The problems a validation found so far (each names the key/flag, the value and the fix).
#[derive(Debug, Default)]
pub struct Problems(Vec<String>);

impl Problems {
    /// Records a problem.
    pub fn push(&mut self, problem: impl Into<String>) {
        self.0.push(problem.into());
    }

    /// `Ok(value)` when nothing was found, else every problem.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] listing the problems.
    pub fn into_result<T>(self, value: impl FnOnce() -> T) -> Result<T, ConfigError> {
        if self.0.is_empty() {
            Ok(value())
        } else {
            Err(ConfigError::Invalid(self.0))
        }
    }
}

/// Lays one layer of settings over another: a field set in `over` wins.
pub trait Merge {
    /// `self` with `over`'s set fields.
    fn merge(self, over: Self) -> Self;
}

/// Implements [`Merge`] for a section of `Option` fields.
macro_rules! merge_fields {
    ($t:ty; $($f:ident),* $(,)?) => {
        impl $crate::config::Merge for $t {
            fn merge(mut self, over: Self) -> Self {
                $( if over.$f.is_some() { self.$f = over.$f; } )*
                self
            }
        }
    };
}
pub(crate) use merge_fields;

impl PipelineFile {
    /// Reads and parses a pipeline file.
    ///
    /// # Errors
    /// [`ConfigError::Read`] / [`ConfigError::Parse`] naming the file, key and line; a value of a
    /// secret-looking key is never shown.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            reason: toml_error::describe(&e, &text),
        })
    }

    /// Lays flag values over the file (flags win).
    pub fn merge_flags(
        mut self,
        source: Option<&SourceSection>,
        range: Option<&RangeSection>,
        sink: Option<&SinkSection>,
    ) -> Self {
        if let Some(s) = source {
            self.source = self.source.merge(s.clone());
        }
        if let Some(r) = range {
            self.range = self.range.merge(r.clone());
        }
        if let Some(k) = sink {
            self.sink = self.sink.merge(k.clone());
        }
        self
    }

    /// Lays privacy flags over the file (flags win).
    pub fn merge_privacy(mut self, privacy: &PrivacySection) -> Self {
        self.privacy = self.privacy.merge(privacy.clone());
        self
    }

    /// True when the pipeline runs against the embedded sandbox.
    pub fn uses_sandbox(&self) -> bool {
        self.sandbox.as_ref().is_some_and(|s| s.enabled)
    }
}

/// What kind of run the settings are for (changes defaults and the state namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `export`: ad hoc, fixed range, state only in `OUT/_state` for exactly-once.
    Export,
    /// `run`: the pipeline's mode.
    Run,
    /// `backfill --from --to`: a fixed range in its own namespace.
    Backfill,
}

/// Validates a merged pipeline file into a [`RunSpec`] (pure: no I/O, no network). `now_ms`
/// resolves relative dates (`today`, `yesterday`). The secrets in the spec are empty until
/// [`secrets`] reads them.
///
/// # Errors
/// [`ConfigError::Invalid`] listing every problem, each naming the key/flag and the fix.
pub fn validate(
    file: &PipelineFile,
    command: Command,
    now_ms: i64,
) -> Result<RunSpec, ConfigError> {
    let mut p = Problems::default();
    let sandbox = file.uses_sandbox();
    let source = file.source.validate(sandbox, &mut p);
    let range = file.range.validate(command, now_ms, &mut p);
    let mut output = file.sink.validate(command, &file.source, sandbox, &mut p);
    let shard = file.source.shard_spec(&mut p);
    if let (Some(s), Some(out)) = (shard, output.as_mut()) {
        shard_state_dir(out, s);
    }
    let privacy = file.privacy.validate(output.as_ref(), &mut p);
    let checkpoint_users = file
        .sink
        .checkpoint_users
        .unwrap_or(DEFAULT_CHECKPOINT_USERS);
    if checkpoint_users == 0 {
        p.push("checkpoint_users must be at least 1");
    }
    p.into_result(|| {
        let range = range.expect("no problems: the range validated");
        let source = source.expect("no problems: the source validated");
        RunSpec {
            name: file.name.clone(),
            namespace: range::namespace(command, &range.mode, shard),
            shard,
            range,
            output: output.expect("no problems: the sink validated"),
            tuning: Tuning {
                checkpoint_users,
                lookahead: (source.client.concurrency * LOOKAHEAD_CELLS_PER_REQUEST)
                    .clamp(32, MAX_LOOKAHEAD_CELLS),
                buffer_bytes: DEFAULT_BUFFER_BYTES,
            },
            source,
            privacy: privacy.map(crate::privacy::Privacy::unkeyed),
            raw_json: file.sink.raw_json.unwrap_or_default(),
        }
    })
}

/// A shard keeps its state in a subdirectory of the state directory named by its tag
/// (`OUT/_state/s1of4` by default), so that N shards writing one output never share a store
/// (nor, on object storage, the mirror files are staged in).
fn shard_state_dir(output: &mut crate::sink::OutputSpec, shard: crate::shard::Shard) {
    use crate::sink::OutputSpec;
    let dir = match output {
        OutputSpec::Files(f) => {
            f.state_dir = f.state_dir.join(shard.tag());
            // On object storage the files are staged in a mirror under the state directory:
            // each shard its own, or one shard's start would sweep another's staged files.
            if f.remote.is_some() {
                f.out_dir = f.state_dir.join("mirror");
            }
            return;
        }
        OutputSpec::Crm(c) => &mut c.state_dir,
        OutputSpec::Delta(d) => &mut d.state_dir,
        OutputSpec::Stdout => return,
    };
    *dir = dir.join(shard.tag());
}

#[cfg(test)]
mod tests;
