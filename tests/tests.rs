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
//! - `paging`: pages that shift under live data, in both page orders; dead-lettered windows.
//! - `crash`: SIGKILL at random points and between journal and rename.
//! - `crm`: HubSpot emulator timelines, growth, 207/429, budget, crashes, dry run, BottleCRM.
//! - `fuzz_wire`: the page parser, normalizer and Users reader under seeded fuzzing and
//!   adversarial bodies (no sandbox; the long run is `examples/fuzz_wire.rs`).

mod util;

mod commands;
mod concurrency;
mod crash;
mod crm;
mod dead_letter;
mod docs;
mod encoding;
mod errors;
mod export;
mod faults;
mod fuzz_wire;
mod hardening;
mod incremental;
mod paging;
