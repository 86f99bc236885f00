//! `[sink]` and the output flags: where rows go and how files are encoded. Validates into a
//! [`sink::OutputSpec`](crate::sink::OutputSpec); the CRM keys are checked by [`super::crm`].

use std::path::{Path, PathBuf};

use clap::{ArgAction, Args};
use serde::Deserialize;

use super::values::{EnumParser, NumParser};
use super::{
    Command, DEFAULT_ROW_GROUP_BYTES, DEFAULT_TARGET_FILE_BYTES, DEFAULT_ZSTD_LEVEL, Problems,
    SourceSection,
};
use crate::schema::RawJson;
use crate::sink::crm::{ContactPolicy, CrmKind};
use crate::sink::delta::DeltaSpec;
use crate::sink::files::FilesSpec;
use crate::sink::{Encoding, Format, OutputSpec};

/// `sink.format` / `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// Apache Parquet files (zstd), Hive-partitioned by UTC date.
    Parquet,
    /// JSON Lines files (optionally gzip), or stdout with `--out -`.
    Jsonl,
    /// Transcripts on a CRM's contact timelines (`--crm hubspot|bottlecrm`).
    Crm,
    /// A Delta Lake table (local directory or object storage), partitioned by UTC date.
    Delta,
}

/// `[sink]`: where rows go. Also the output and CRM flags.
#[derive(Debug, Clone, Default, Deserialize, Args)]
#[serde(deny_unknown_fields)]
#[command(next_help_heading = "Output")]
pub struct SinkSection {
    /// parquet, jsonl, delta or crm (export: required; run: default parquet).
    #[arg(long, value_name = "FORMAT",
          value_parser = EnumParser::<OutputFormat>::new("format (--format)"))]
    pub format: Option<OutputFormat>,
    /// Gzip JSONL files (.jsonl.gz). Default false.
    #[arg(
        long,
        num_args = 0,
        default_missing_value = "true",
        overrides_with = "no_gzip"
    )]
    pub gzip: Option<bool>,
    /// Do not gzip JSONL files.
    #[arg(long, overrides_with = "gzip")]
    #[serde(skip)]
    pub no_gzip: bool,
    /// Output directory, an object-store URL (s3://bucket/prefix, gs://, az://), or - for
    /// JSONL on stdout.
    #[arg(long, value_name = "DIR", env = "ENGATI_ETL_OUT")]
    pub out: Option<PathBuf>,
    /// State directory [default: OUT/_state].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Write into an output directory that holds files engati-etl did not write (refused by
    /// default: readers globbing the directory would mix them in).
    #[arg(long, action = ArgAction::SetTrue)]
    #[serde(default)]
    pub allow_foreign_files: Option<bool>,
    /// Rotate output files at this many bytes [default: 134217728].
    #[arg(long, value_name = "BYTES", help_heading = "Tuning",
          value_parser = NumParser::<u64>::new("target_file_bytes (--target-file-bytes)", 1024, u64::MAX))]
    pub target_file_bytes: Option<u64>,
    /// Parquet row-group size in estimated encoded bytes [default: 4194304].
    #[arg(long, value_name = "BYTES", help_heading = "Tuning",
          value_parser = NumParser::<usize>::new("row_group_bytes (--row-group-bytes)", 1024, usize::MAX))]
    pub row_group_bytes: Option<usize>,
    /// zstd level for Parquet, 1..=22 [default: 1].
    #[arg(long, value_name = "N", help_heading = "Tuning",
          value_parser = NumParser::<i32>::new("zstd_level (--zstd-level)", 1, 22))]
    pub zstd_level: Option<i32>,
    /// What the raw_json column holds: residual (the fields no other column holds verbatim)
    /// or full (the message as the API sent it) [default: residual].
    #[arg(long, value_name = "WHAT",
          value_parser = EnumParser::<RawJson>::new("raw_json (--raw-json)"))]
    pub raw_json: Option<RawJson>,
    /// Users per window committed together (the unit of resume) [default: 5000].
    #[arg(long, value_name = "N", help_heading = "Tuning",
          value_parser = NumParser::<usize>::new("checkpoint_users (--checkpoint-users)", 1, 10_000_000))]
    pub checkpoint_users: Option<usize>,
    /// With --format crm: hubspot or bottlecrm.
    #[arg(long, value_name = "CRM", help_heading = "CRM",
          value_parser = EnumParser::<CrmKind>::new("crm (--crm)"))]
    pub crm: Option<CrmKind>,
    /// CRM base URL (HubSpot default https://api.hubapi.com; required for BottleCRM).
    #[arg(long, value_name = "URL", help_heading = "CRM")]
    pub crm_base_url: Option<String>,
    /// Read the CRM token from this file (else HUBSPOT_ACCESS_TOKEN / BOTTLECRM_TOKEN).
    #[arg(long, value_name = "PATH", help_heading = "CRM")]
    pub crm_token_file: Option<PathBuf>,
    /// Inactivity that starts a new conversation session [default: 30m].
    #[arg(long, value_name = "DURATION", help_heading = "CRM")]
    pub session_gap: Option<String>,
    /// create (default) or skip users whose contact is not in the CRM.
    #[arg(long, value_name = "POLICY", help_heading = "CRM",
          value_parser = EnumParser::<ContactPolicy>::new("contact_policy (--contact-policy)"))]
    pub contact_policy: Option<ContactPolicy>,
    /// CRM requests per rolling 10 s at most. Default 100 (HubSpot's lowest tier).
    #[arg(skip)]
    pub crm_requests_per_10s: Option<u32>,
    /// HubSpot `hs_communication_channel_type` for users not on WhatsApp. Default `SMS`.
    #[arg(skip)]
    pub hubspot_other_channel_type: Option<String>,
    /// Print the planned CRM operations as JSONL on stdout; send nothing.
    #[arg(long, help_heading = "CRM", action = ArgAction::SetTrue)]
    #[serde(default)]
    pub dry_run: Option<bool>,
}

impl super::Merge for SinkSection {
    fn merge(mut self, over: Self) -> Self {
        macro_rules! take {
            ($($f:ident),*) => { $( if over.$f.is_some() { self.$f = over.$f; } )* };
        }
        take!(
            format,
            gzip,
            out,
            state_dir,
            target_file_bytes,
            row_group_bytes,
            zstd_level,
            raw_json,
            checkpoint_users,
            crm,
            crm_base_url,
            crm_token_file,
            session_gap,
            contact_policy,
            crm_requests_per_10s,
            hubspot_other_channel_type
        );
        if over.no_gzip {
            self.gzip = Some(false);
        }
        if over.dry_run == Some(true) {
            self.dry_run = Some(true);
        }
        if over.allow_foreign_files == Some(true) {
            self.allow_foreign_files = Some(true);
        }
        self
    }
}

impl SinkSection {
    /// Validates the section for `command` into the output's runtime settings (a CRM token
    /// stays empty until read by `config::read_crm_token`). `source` names the default CRM state
    /// directory.
    pub fn validate(
        &self,
        command: Command,
        source: &SourceSection,
        sandbox: bool,
        p: &mut Problems,
    ) -> Option<OutputSpec> {
        let format = match self.format {
            Some(f) => Some(f),
            None if command == Command::Export => {
                p.push("format (--format) is required: parquet, jsonl, delta or crm");
                None
            }
            None => Some(OutputFormat::Parquet),
        };
        if format == Some(OutputFormat::Crm) {
            if self.raw_json.is_some() {
                p.push("raw_json (--raw-json) applies to parquet, jsonl and delta; the CRM sink writes transcripts, not raw_json");
            }
            return super::crm::validate(self, source, sandbox, p).map(OutputSpec::Crm);
        }
        if format == Some(OutputFormat::Delta) {
            return self.delta(p).map(OutputSpec::Delta);
        }
        if self.crm.is_some() || self.crm_base_url.is_some() || self.dry_run == Some(true) {
            p.push("crm, crm_base_url and dry_run (--crm, --crm-base-url, --dry-run) need format crm (--format crm)");
        }
        let format = match format {
            Some(OutputFormat::Jsonl) => Format::Jsonl,
            _ => Format::Parquet,
        };
        let gzip = self.gzip.unwrap_or(false);
        let out = self.out_target(format, gzip, p);
        if gzip && format == Format::Parquet {
            p.push("gzip (--gzip) applies to JSONL only; Parquet files are zstd-compressed");
        }
        let target_file_bytes = self.target_file_bytes.unwrap_or(DEFAULT_TARGET_FILE_BYTES);
        if target_file_bytes < 1024 {
            p.push(format!(
                "target_file_bytes {target_file_bytes} is too small (at least 1024)"
            ));
        }
        let row_group_bytes = self.row_group_bytes.unwrap_or(DEFAULT_ROW_GROUP_BYTES);
        if row_group_bytes < 1024 {
            p.push(format!(
                "row_group_bytes {row_group_bytes} is too small (at least 1024)"
            ));
        }
        let zstd_level = self.zstd_level.unwrap_or(DEFAULT_ZSTD_LEVEL);
        if !(1..=22).contains(&zstd_level) {
            p.push(format!(
                "zstd_level (--zstd-level) {zstd_level} must be between 1 and 22"
            ));
        }
        let encoding = Encoding::new(format, gzip, zstd_level, row_group_bytes.max(1), 6)
            .map_err(|e| p.push(format!("zstd_level: {e}")))
            .ok();
        match out? {
            None => Some(OutputSpec::Stdout),
            Some(out_dir) => {
                let (out_dir, state_dir, remote) = self.files_location(out_dir, p)?;
                Some(OutputSpec::Files(FilesSpec {
                    state_dir,
                    out_dir,
                    remote,
                    encoding: encoding?,
                    target_file_bytes,
                    allow_foreign_files: self.allow_foreign_files.unwrap_or(false),
                }))
            }
        }
    }

    /// Where a file output's files are written, its state directory and, on object storage,
    /// its URL: a local `out` is both; a URL's files are written to the local mirror
    /// `<state_dir>/mirror` and uploaded (`sink::remote_files`), the state directory defaulting
    /// to one per URL under the user's data directory.
    fn files_location(
        &self,
        out: PathBuf,
        p: &mut Problems,
    ) -> Option<(PathBuf, PathBuf, Option<String>)> {
        let location = out.to_string_lossy().into_owned();
        if !crate::storage::is_remote(&location) {
            let state_dir = self.state_dir.clone().unwrap_or_else(|| out.join("_state"));
            return Some((out, state_dir, None));
        }
        if let Err(e) = crate::storage::Remote::open(&location) {
            p.push(format!("out (--out): {e}"));
            return None;
        }
        let state_dir = self
            .state_dir
            .clone()
            .unwrap_or_else(|| remote_state_dir(&location));
        Some((state_dir.join("mirror"), state_dir, Some(location)))
    }

    /// `Some(None)` for stdout, `Some(Some(dir))` for a directory, `None` when invalid.
    fn out_target(&self, format: Format, gzip: bool, p: &mut Problems) -> Option<Option<PathBuf>> {
        match self.out.as_deref() {
            Some(o) if o == Path::new("-") => {
                if format == Format::Parquet {
                    p.push("--out - (stdout) needs --format jsonl; Parquet needs a directory");
                }
                if gzip {
                    p.push("--gzip does not apply to --out - (stdout); pipe into gzip instead");
                }
                Some(None)
            }
            Some(o) => Some(Some(o.to_owned())),
            None => {
                p.push("out (--out) is required: an output directory, or - for JSONL on stdout");
                None
            }
        }
    }
}

impl SinkSection {
    /// The Delta output: a table at `out` (a directory or an object-store URL).
    fn delta(&self, p: &mut Problems) -> Option<DeltaSpec> {
        let Some(out) = self.out.as_deref() else {
            p.push("out (--out) is required: the Delta table's directory or URL, e.g. s3://bucket/engati/messages");
            return None;
        };
        let location = out.to_string_lossy().into_owned();
        if location == "-" {
            p.push("--out - (stdout) needs --format jsonl; a Delta table needs a directory or URL");
            return None;
        }
        if self.gzip == Some(true) {
            p.push("gzip (--gzip) applies to JSONL only; Delta tables are Parquet (zstd)");
        }
        if crate::storage::is_remote(&location)
            && let Err(e) = crate::storage::Remote::open(&location)
        {
            p.push(format!("out (--out): {e}"));
        }
        let state_dir = match &self.state_dir {
            Some(d) => d.clone(),
            None if crate::storage::is_remote(&location) => remote_state_dir(&location),
            None => out.join("_state"),
        };
        let zstd_level = self.zstd_level.unwrap_or(DEFAULT_ZSTD_LEVEL);
        let row_group_bytes = self.row_group_bytes.unwrap_or(DEFAULT_ROW_GROUP_BYTES);
        let encoding = Encoding::new(
            Format::Parquet,
            false,
            zstd_level,
            row_group_bytes.max(1),
            6,
        )
        .map_err(|e| p.push(format!("zstd_level: {e}")))
        .ok()?;
        Some(DeltaSpec {
            location,
            state_dir,
            encoding,
            target_file_bytes: self.target_file_bytes.unwrap_or(DEFAULT_TARGET_FILE_BYTES),
        })
    }
}

/// The default local state directory of an output on object storage:
/// `$XDG_DATA_HOME/engati-etl/remote/<xxh3 of the URL>` (else `~/.local/share/...`).
pub fn remote_state_dir(url: &str) -> PathBuf {
    let base = std::env::var("XDG_DATA_HOME")
        .ok()
        .filter(|x| !x.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var("HOME")
                .ok()
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".local/share"))
        })
        .unwrap_or_else(|| PathBuf::from("engati-etl-state"));
    base.join("engati-etl/remote").join(format!(
        "{:016x}",
        xxhash_rust::xxh3::xxh3_64(url.as_bytes())
    ))
}
