//! Integration tests: the real binary against a fresh sandbox on 127.0.0.1:0 per test.
//!
//! - `export`: full exports read back from Parquet and JSONL, compared row for row with the
//!   sandbox's own data; date-bound semantics; users variants and users files; stdout.
//! - `faults`: 500s, 429 + Retry-After, truncated bodies, stalls: nothing lost or duplicated.
//! - `errors`: every exit-code class, error texts, and the key never leaking.
//! - `dead_letter`: unknown types flow through; malformed timestamps are dead-lettered.
//! - `commands`: demo pipeline, users, validate, sandbox.
//! - `concurrency`: `--concurrency auto` and fixed against the sandbox's capacity mode.
//! - `incremental`: nightly runs, backfills, state commands, live arrivals.
//! - `windows`: adaptive windows (`--window auto`): rows equal to daily windows with about the
//!   minimum of requests, a too-long range halved, kills and nightly runs exactly once.
//! - `paging`: pages that shift under live data, in both page orders; dead-lettered windows.
//! - `crash`: SIGKILL at random points and between journal and rename.
//! - `crm`: HubSpot emulator timelines, growth, 207/429, budget, crashes, dry run, BottleCRM.
//! - `plan`: the estimate against the actual run (cells, requests, messages; never times).
//! - `shards`: N shards into one output equal one export, one after the other or at once.
//! - `remote_files`: Parquet/JSONL on object storage (`file://`; S3 via s3s-fs, ignored):
//!   manifests, empty state dirs, kills at each commit step, two workers, watermarks.
//! - `ops`: the JSON summary line, JSON logs, the metrics file, the rejects exit code, the
//!   timeline, completions and man pages.
//! - `privacy`: pseudonymized ids, redaction, dropped columns; exactly once under them.
//! - `fuzz_wire`: the page parser, normalizer and Users reader under seeded fuzzing and
//!   adversarial bodies (no sandbox; the long run is `examples/fuzz_wire.rs`).
//! - `send`: templates, triggers, broadcasts from a table: never twice, every row accounted
//!   for, under faults and crashes; dry run, reconciliation, retries, exit codes.

mod util;

mod commands;
mod concurrency;
mod crash;
mod crm;
mod dead_letter;
mod delta;
mod deploy;
mod docs;
mod encoding;
mod errors;
mod export;
mod faults;
mod fuzz_wire;
mod hardening;
mod incremental;
mod object_store;
mod ops;
mod paging;
mod plan;
mod privacy;
mod remote_files;
mod report_html;
mod send;
mod shards;
mod verify;
mod windows;
