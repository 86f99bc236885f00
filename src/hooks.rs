//! Test hooks. Crash points and test knobs are failpoints of the `fail` crate
//! (`fail::fail_point!`), compiled to nothing unless the cargo feature `fault-injection` is on
//! (`cargo test` turns it on; release builds never carry them). A test arms one with the
//! `FAILPOINTS` environment variable, e.g. `FAILPOINTS=state::after_journal=2*off->return`
//! crashes the process at the third journaled commit.
//!
//! The failpoints: `pipeline::page` (a page received, before it is normalized),
//! `files::before_journal` (a unit's files staged, before its commit is journaled),
//! `state::after_journal` (a commit journaled, before its renames), `state::mid_apply` (after
//! the first rename of a commit), `crm::after_create` (CRM activities created, before the ledger
//! records them), `remote::after_upload` / `remote::after_manifest` /
//! `remote::after_local_commit` (an output on object storage: a commit's files uploaded, its
//! manifest created, the local state committed; `sink::remote_files`), and the knobs
//! `files::pending_limit=return(BYTES)` and `remote::gate=return(PATH)` (`hold_until`).

/// Ends the process at once, as `kill -9` would (no destructor, no flush), after saying so on
/// stderr: `engati-etl: crash injected <what>`.
pub fn crash(what: &str) -> ! {
    eprintln!("engati-etl: crash injected {what}");
    std::process::abort()
}

/// Arms failpoints from `FAILPOINTS` for the life of the returned guard (feature
/// `fault-injection` only).
#[cfg(feature = "fault-injection")]
pub fn setup() -> fail::FailScenario<'static> {
    fail::FailScenario::setup()
}

/// Arms the failpoint `name` to fire at its `nth` evaluation (1-based): the hidden test flags
/// `--crash-after-journal N` and `--crash-after-crm-writes N`.
#[cfg(feature = "fault-injection")]
pub fn crash_at(name: &str, nth: u64) {
    let actions = format!("{}*off->return", nth.saturating_sub(1));
    if let Err(e) = fail::cfg(name, &actions) {
        eprintln!("engati-etl: cannot arm failpoint {name}: {e}");
    }
}

/// Holds the calling thread until the file `gate` exists, after creating `<gate>.waiting` (what
/// a test waits for). The knob `remote::gate=return(PATH)` holds a worker after its commit's
/// uploads, before its manifest, so a test can let another worker commit first, in a fixed
/// order rather than by timing.
#[cfg(feature = "fault-injection")]
pub fn hold_until(gate: &str) {
    let gate = std::path::Path::new(gate);
    let mut waiting = gate.as_os_str().to_owned();
    waiting.push(".waiting");
    if let Err(e) = std::fs::write(&waiting, b"") {
        eprintln!("engati-etl: cannot write {}: {e}", gate.display());
    }
    while !gate.exists() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
