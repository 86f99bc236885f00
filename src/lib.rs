//! engati-etl: export the conversations of Engati chatbots (and the white-label brands
//! AlertsPanel, Technowiz, Floatchat) to Parquet, JSONL or a CRM, correctly and fast.
//!
//! The code follows the data's path:
//!
//! ```text
//! users (engati::users: Users API by attribute, or a file of ids)
//!   -> windows x pages (plan: grid windows, checkpoint units; engati::client: limits, retries;
//!      engati::seek: adaptive windows split by time)
//!   -> normalize (wire JSON -> `messages` rows with a deterministic message_id)
//!   -> sink (sink::files: Parquet | JSONL, Hive partitions; sink::crm: HubSpot | BottleCRM;
//!            sink::stdout), committed atomically through the state journal
//!   -> state (SQLite: file ledger, commit journal, watermarks, run history, CRM ledger)
//!   -> run report (report)
//! ```
//!
//! Modules: [`cli`] and [`commands`] (the binary's surface), [`config`] (pipeline files,
//! precedence, validation), [`pipeline`] (the walk: ordered lookahead, cancellation),
//! [`engati`] (everything that knows the API), [`grid`] (where windows lie), [`plan`] (and its
//! estimate), [`shard`] (which
//! users a sharded worker takes), [`normalize`], [`schema`] (the output
//! columns), [`sink`], [`state`], [`report`], [`progress`], [`sandbox`] (an Engati-compatible
//! server and a HubSpot emulator for the demo, tests and benchmarks), [`secret`], [`time`],
//! [`storage`] (object stores), and [`send`] (the write side: templates, broadcasts and API
//! triggers from a table, never twice).
//! Operations: [`summary`] (the one-line JSON result on stdout), [`logging`] (text or JSON
//! logs), [`metrics`] (a Prometheus textfile), [`timeline`] (the run's time series in the
//! report), [`report_html`] (`engati-etl report --html`), [`privacy`] (pseudonymized ids,
//! redaction, dropped columns), [`malloc`] (glibc's allocator tuned at start-up).
//! The API contract is `docs/engati-api.md`; the README documents flags, schema, guarantees and
//! exit codes.

#![warn(missing_docs)]

pub mod cli;
pub mod commands;
pub mod config;
pub mod engati;
pub mod error;
pub mod grid;
pub mod hooks;
pub mod logging;
pub mod malloc;
pub mod metrics;
pub mod model;
pub mod normalize;
pub mod pipeline;
pub mod plan;
pub mod privacy;
pub mod progress;
pub mod report;
pub mod report_html;
pub mod retry;
pub mod sandbox;
pub mod schema;
pub mod secret;
pub mod send;
pub mod shard;
pub mod sink;
pub mod state;
pub mod storage;
pub mod summary;
pub mod time;
pub mod timeline;
pub mod verify;
