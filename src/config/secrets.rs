//! The I/O a run needs after validation and before its first request: the API key and CRM
//! token (never a flag value or a pipeline value: docs/engati-api.md, "Auth"), and a writable
//! output directory.

use std::path::Path;

use super::ConfigError;
use crate::secret::Secret;
use crate::sink::OutputSpec;
use crate::sink::crm::CrmSpec;

/// The environment variable holding the API key.
pub const API_KEY_ENV: &str = "ENGATI_API_KEY";

/// Reads the API key: `api_key_file` if set, else `env_key` (the value of `ENGATI_API_KEY`).
///
/// # Errors
/// [`ConfigError::Invalid`] naming the file or variable (never the value).
pub fn read_key(
    api_key_file: Option<&Path>,
    env_key: Option<String>,
) -> Result<Secret, ConfigError> {
    if let Some(f) = api_key_file {
        return Secret::from_file(f).map_err(|e| {
            ConfigError::invalid(format!(
                "api_key_file (--api-key-file) {}: {e}",
                f.display()
            ))
        });
    }
    match env_key.map(Secret::new) {
        Some(k) if !k.is_empty() => match k.problem() {
            Some(bad) => Err(ConfigError::invalid(format!("{API_KEY_ENV}: {bad}"))),
            None => Ok(k),
        },
        _ => Err(ConfigError::invalid(format!(
            "no API key: set {API_KEY_ENV} or pass --api-key-file PATH (the key is never a flag or a pipeline value)"
        ))),
    }
}

/// Reads the CRM token: `crm.token_file` if set, else the CRM's environment variable
/// (`env_value(name)`). A dry run needs none (`Ok(None)`).
///
/// # Errors
/// [`ConfigError::Invalid`] naming the file or variable.
pub fn read_crm_token(
    crm: &CrmSpec,
    env_value: impl FnOnce(&str) -> Option<String>,
) -> Result<Option<Secret>, ConfigError> {
    if let Some(f) = &crm.token_file {
        return Secret::from_file(f).map(Some).map_err(|e| {
            ConfigError::invalid(format!(
                "crm_token_file (--crm-token-file) {}: {e}",
                f.display()
            ))
        });
    }
    let var = crm.kind.token_env();
    match env_value(var).map(Secret::new) {
        Some(t) if !t.is_empty() => Ok(Some(t)),
        _ if crm.dry_run => Ok(None),
        _ => Err(ConfigError::invalid(format!(
            "no {} token: set {var} or pass --crm-token-file PATH (never a flag value or a pipeline value)",
            crm.kind.as_str()
        ))),
    }
}

/// Checks that the output directory can be created and written (before any request).
///
/// # Errors
/// [`ConfigError::Invalid`] naming the directory.
pub fn check_output(output: &OutputSpec) -> Result<(), ConfigError> {
    let Some(out) = output.out_dir() else {
        return Ok(());
    };
    let bad = |e: std::io::Error| {
        ConfigError::invalid(format!(
            "out (--out) {}: not writable ({e}); choose a directory you can write to",
            out.display()
        ))
    };
    if let OutputSpec::Files(f) = output
        && f.remote.is_none()
        && !f.allow_foreign_files
        && let Some(name) = foreign_entry(out, &f.state_dir)
    {
        return Err(ConfigError::invalid(format!(
            "out (--out) {} holds files engati-etl did not write (e.g. `{name}`), which readers globbing the output would mix in; choose an empty or new directory, or pass --allow-foreign-files",
            out.display()
        )));
    }
    std::fs::create_dir_all(out).map_err(bad)?;
    let probe = out.join(".engati-etl-write-probe.tmp");
    std::fs::write(&probe, b"").map_err(bad)?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// The first entry of an existing output directory that engati-etl does not write, if the
/// directory has no state of ours. The run reports of shards (`_run_report-s<I>of<N>.json`)
/// are ours: N shards share one output, each with its own state.
fn foreign_entry(out: &Path, state_dir: &Path) -> Option<String> {
    if state_dir.join("state.sqlite3").exists() {
        return None;
    }
    let ours = [
        "messages",
        "users",
        "_dead_letter",
        "_run_report.json",
        "_state",
    ];
    std::fs::read_dir(out)
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !ours.contains(&n.as_str()) && !n.starts_with(".engati-etl-"))
        .filter(|n| !(n.starts_with("_run_report-") && n.ends_with(".json")))
        .min()
}
