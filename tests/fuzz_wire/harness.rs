//! The wire fuzz harness, shared by the short seeded run in `cargo test` (`tests/fuzz_wire`)
//! and the long run (`cargo run --release --example fuzz_wire -- N`).
//!
//! [`Harness`] feeds response bodies through the exporter's own path and checks invariants
//! after each one:
//! - Conversations pages, exactly as `engati::client` and `pipeline` handle them: a body that is
//!   not UTF-8 is refused before parsing; `wire::parse_conversations_page` finds the message
//!   spans; one `PageNormalizer` per (user, window) cell appends rows to one reused
//!   `MessageBatchBuilder`, finished into a `RecordBatch` at the pipeline's batch limits
//!   (4,096 rows or 2 MiB of pages); rejects are handed on (cleared) after each page.
//!   Invariants: the spans are in order, in bounds, on character boundaries, and each is one
//!   whole JSON value; `rows + out_of_window + rejected == spans` for every page; each message
//!   is classified independently (readable object? readable timestamp? inside the window?) and
//!   every unreadable one is exactly one reject, in order, with a non-empty reason, its raw JSON
//!   verbatim and its page number; every row of every finished batch is the message it came
//!   from (`raw_json`), with its `sent_at` and a 32-hex-digit `message_id`. Decode errors name
//!   what they must (the body length, a JSON path, what was looked for and found).
//! - Users bodies through `wire::parse_users` (every listed user has an id), and any body
//!   through `ErrorBody::parse` (what the client reads from a non-2xx answer).
//!
//! Nothing here can stop a panic: the caller runs inputs under `catch_unwind` (the example) or
//! lets the test fail. [`Seeds`] makes the inputs: real sandbox pages and Users bodies, mutated
//! with structure (keys dropped, duplicated, swapped, renamed; values replaced by numbers, null,
//! arrays, objects, long or odd strings, broken timestamps, 10,000-level nesting, invalid
//! UTF-8) and then, for some, at the byte level (truncation, bit flips, inserted or deleted
//! bytes, splices); [`heavy`] builds the large adversarial bodies (50 MB pages, deep nesting,
//! a Users response of a million entries). Every input comes from a ChaCha8 stream seeded by
//! (seed, case index), so any case can be replayed alone.

#![allow(dead_code)]

use std::fmt;
use std::io::Write as _;
use std::ops::Range;

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMillisecondType;
use engati_etl::engati::wire::{
    self, DecodeError, ErrorBody, UsersKeys, WireMessage, parse_timestamp,
};
use engati_etl::engati::wire_message::FIELDS;
use engati_etl::model::Window;
use engati_etl::normalize::{PageCounts, PageNormalizer, Reject};
use engati_etl::sandbox::dataset::{DataConfig, Dataset};
use engati_etl::sandbox::render_page;
use engati_etl::schema::{MessageBatchBuilder, RowContext};
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use xxhash_rust::xxh3::xxh3_64;

/// Rows per batch at most (the pipeline's `Batcher::ROWS`).
pub const BATCH_ROWS: usize = 4096;
/// Page bytes per batch at most (the pipeline's `Batcher::BYTES`).
pub const BATCH_BYTES: usize = 2 << 20;

/// Running totals of a fuzz run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Bodies fed in (pages, Users bodies, error bodies).
    pub inputs: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Conversations pages fed in.
    pub pages: u64,
    /// Pages refused because they are not UTF-8 (the client's check).
    pub not_utf8: u64,
    /// Pages that were not JSON, or cut short (`DecodeError::Syntax`).
    pub decode_syntax: u64,
    /// Pages of a shape with no message list (`DecodeError::Shape`).
    pub decode_shape: u64,
    /// Pages read (a message list found).
    pub pages_read: u64,
    /// Messages found in the pages read.
    pub messages: u64,
    /// Rows appended.
    pub rows: u64,
    /// Messages outside the cell window.
    pub out_of_window: u64,
    /// Messages rejected (dead-lettered).
    pub rejects: u64,
    /// Batches finished.
    pub batches: u64,
    /// Users bodies fed in.
    pub users_bodies: u64,
    /// Users bodies read.
    pub users_read: u64,
    /// Users listed by the bodies read.
    pub users_listed: u64,
    /// Users bodies refused (syntax or shape).
    pub users_refused: u64,
    /// Bodies read as error bodies.
    pub error_bodies: u64,
}

impl fmt::Display for Totals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "inputs {} ({:.1} MB): {} pages, {} users bodies, {} error bodies",
            self.inputs,
            self.bytes as f64 / 1e6,
            self.pages,
            self.users_bodies,
            self.error_bodies
        )?;
        writeln!(
            f,
            "pages: {} read, {} not UTF-8, {} syntax errors, {} shape errors",
            self.pages_read, self.not_utf8, self.decode_syntax, self.decode_shape
        )?;
        writeln!(
            f,
            "messages {} = rows {} + out of window {} + rejects {}; {} batches",
            self.messages, self.rows, self.out_of_window, self.rejects, self.batches
        )?;
        write!(
            f,
            "users bodies: {} read ({} users), {} refused",
            self.users_read, self.users_listed, self.users_refused
        )
    }
}

/// What became of one page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Refused: not UTF-8.
    NotUtf8,
    /// Refused by the page parser.
    Decode(DecodeError),
    /// Read: the counts of its messages.
    Read(PageCounts),
}

/// What the normalizer must do with one message, decided independently of it.
enum Expect {
    Row(i64),
    Outside,
    Reject,
}

fn classify(raw: &str, window: Window) -> Expect {
    let Ok(m) = WireMessage::parse(raw) else {
        return Expect::Reject;
    };
    match parse_timestamp(m.timestamp) {
        Err(_) => Expect::Reject,
        Ok(t) if window.contains(t) => Expect::Row(t),
        Ok(_) => Expect::Outside,
    }
}

/// Feeds bodies through the product path and checks the invariants (module docs).
pub struct Harness {
    cx: RowContext,
    keys: Vec<String>,
    users_keys: UsersKeys,
    builder: MessageBatchBuilder,
    batch_bytes: usize,
    /// (xxh3 of raw JSON, sent_at) of each row appended since the last finish, in order.
    pending: Vec<(u64, i64)>,
    /// The totals so far.
    pub totals: Totals,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    /// A harness with the exporter's default keys and batch limits.
    pub fn new() -> Self {
        Harness {
            cx: RowContext {
                provider: "engati".into(),
                customer_id: "61179".into(),
                bot_key: "bb67e0773bed4c7e".into(),
                run_id: "fuzz".into(),
                extracted_at_ms: 0,
                raw_json: engati_etl::schema::RawJson::Full,
            },
            keys: vec!["conversations".into(), "messages".into()],
            users_keys: UsersKeys::default(),
            builder: MessageBatchBuilder::with_capacity(BATCH_ROWS, BATCH_BYTES),
            batch_bytes: 0,
            pending: Vec::new(),
            totals: Totals::default(),
        }
    }

    /// Runs one generated case.
    pub fn run(&mut self, case: &Case) {
        match case {
            Case::Cell {
                user,
                channel,
                window,
                pages,
            } => {
                self.cell(user, channel.as_deref(), *window, pages);
            }
            Case::Users(body) => {
                let _ = self.users(body);
            }
            Case::ErrorBody(body) => self.error_body(body),
        }
    }

    /// The pages of one (user, window) cell, in order, through one `PageNormalizer`.
    pub fn cell(
        &mut self,
        user: &str,
        channel: Option<&str>,
        window: Window,
        pages: &[Vec<u8>],
    ) -> Vec<Outcome> {
        let Harness {
            cx,
            keys,
            builder,
            batch_bytes,
            pending,
            totals,
            ..
        } = self;
        let mut norm = PageNormalizer::new(cx, user, channel, window);
        let mut outcomes = Vec::with_capacity(pages.len());
        for (i, body) in pages.iter().enumerate() {
            let page_number = i as u32 + 1;
            totals.inputs += 1;
            totals.pages += 1;
            totals.bytes += body.len() as u64;
            // The client refuses a body that is not UTF-8 before parsing it (client.rs).
            let Ok(text) = std::str::from_utf8(body) else {
                totals.not_utf8 += 1;
                parser_alone(body, keys);
                outcomes.push(Outcome::NotUtf8);
                continue;
            };
            let spans = match wire::parse_conversations_page(body, keys) {
                Ok(spans) => spans,
                Err(e) => {
                    check_decode_error(&e, body.len());
                    match e {
                        DecodeError::Syntax { .. } => totals.decode_syntax += 1,
                        DecodeError::Shape { .. } => totals.decode_shape += 1,
                    }
                    outcomes.push(Outcome::Decode(e));
                    continue;
                }
            };
            check_spans(text, &spans);
            let rows_before = builder.len();
            // A fresh list per page, handed to the sink with the page (pipeline.rs).
            let mut rejects: Vec<Reject> = Vec::new();
            let counts = norm.page(text, &spans, page_number, builder, &mut rejects);
            assert_eq!(
                counts.rows + counts.out_of_window + counts.rejected,
                spans.len() as u64,
                "every message is a row, outside the window, or a reject: {counts:?}"
            );
            assert_eq!(rejects.len() as u64, counts.rejected, "one reject each");
            assert_eq!(builder.len() - rows_before, counts.rows as usize);
            let (mut rows, mut outside) = (0u64, 0u64);
            let mut given = rejects.iter();
            for span in &spans {
                let raw = &text[span.clone()];
                match classify(raw, window) {
                    Expect::Row(t) => {
                        rows += 1;
                        pending.push((xxh3_64(raw.as_bytes()), t));
                    }
                    Expect::Outside => outside += 1,
                    Expect::Reject => {
                        let r = given
                            .next()
                            .unwrap_or_else(|| panic!("unreadable message not rejected: {raw}"));
                        assert_eq!(r.raw_json, raw, "rejects keep their raw JSON, in order");
                        assert!(!r.reason.trim().is_empty(), "reject without a reason");
                        assert_eq!(r.page_number, page_number);
                    }
                }
            }
            assert!(given.next().is_none(), "a readable message was rejected");
            assert_eq!((rows, outside), (counts.rows, counts.out_of_window));
            totals.pages_read += 1;
            totals.messages += spans.len() as u64;
            totals.rows += counts.rows;
            totals.out_of_window += counts.out_of_window;
            totals.rejects += counts.rejected;
            drop(rejects);
            *batch_bytes += body.len();
            if builder.len() >= BATCH_ROWS || *batch_bytes >= BATCH_BYTES {
                finish(builder, pending, totals);
                *batch_bytes = 0;
            }
            outcomes.push(Outcome::Read(counts));
        }
        outcomes
    }

    /// Finishes the batch being built (the pipeline does at the end of a unit), checking it.
    pub fn flush(&mut self) {
        if !self.builder.is_empty() {
            finish(&mut self.builder, &mut self.pending, &mut self.totals);
        }
        self.batch_bytes = 0;
    }

    /// A Users API body: the users read, or the error.
    pub fn users(&mut self, body: &[u8]) -> Result<Vec<engati_etl::model::User>, DecodeError> {
        let t = &mut self.totals;
        t.inputs += 1;
        t.users_bodies += 1;
        t.bytes += body.len() as u64;
        let read = wire::parse_users(body, &self.users_keys);
        match &read {
            Ok(users) => {
                assert!(
                    users.iter().all(|u| !u.channel_user_id.is_empty()),
                    "a listed user without an id"
                );
                t.users_read += 1;
                t.users_listed += users.len() as u64;
            }
            Err(e) => {
                check_decode_error(e, body.len());
                t.users_refused += 1;
            }
        }
        read
    }

    /// Any body read as a non-2xx answer (never fails).
    pub fn error_body(&mut self, body: &[u8]) {
        let t = &mut self.totals;
        t.inputs += 1;
        t.error_bodies += 1;
        t.bytes += body.len() as u64;
        let b = ErrorBody::parse(body);
        std::hint::black_box(b);
    }
}

fn finish(builder: &mut MessageBatchBuilder, pending: &mut Vec<(u64, i64)>, totals: &mut Totals) {
    let batch = builder.finish();
    assert_eq!(batch.num_rows(), pending.len(), "rows in the batch");
    let col = |name: &str| {
        batch
            .column_by_name(name)
            .unwrap_or_else(|| panic!("column {name}"))
    };
    let ids = col("message_id").as_string::<i32>();
    let raw = col("raw_json").as_string::<i32>();
    let sent = col("sent_at").as_primitive::<TimestampMillisecondType>();
    for (i, (hash, t)) in pending.iter().enumerate() {
        assert_eq!(xxh3_64(raw.value(i).as_bytes()), *hash, "row {i} raw_json");
        assert_eq!(sent.value(i), *t, "row {i} sent_at");
        let id = ids.value(i);
        assert!(
            id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "message_id {id:?}"
        );
    }
    pending.clear();
    totals.batches += 1;
}

/// The page parser on a body the client would refuse (not UTF-8): it must not panic, and any
/// span it returns must be in bounds and UTF-8.
fn parser_alone(body: &[u8], keys: &[String]) {
    match wire::parse_conversations_page(body, keys) {
        Ok(spans) => {
            for s in spans {
                assert!(s.start < s.end && s.end <= body.len(), "span {s:?}");
                assert!(std::str::from_utf8(&body[s]).is_ok(), "a span is not UTF-8");
            }
        }
        Err(e) => check_decode_error(&e, body.len()),
    }
}

fn check_spans(text: &str, spans: &[Range<usize>]) {
    let mut end = 0;
    for s in spans {
        assert!(
            s.start >= end && s.start < s.end && s.end <= text.len(),
            "span {s:?} after {end}, body {} bytes",
            text.len()
        );
        assert!(text.is_char_boundary(s.start) && text.is_char_boundary(s.end));
        let raw = &text[s.clone()];
        let whole = serde_json::from_str::<&RawValue>(raw)
            .unwrap_or_else(|e| panic!("span {s:?} is not one JSON value: {e}"));
        assert_eq!(whole.get(), raw);
        end = s.end;
    }
}

fn check_decode_error(e: &DecodeError, len: usize) {
    assert!(!e.to_string().is_empty());
    match e {
        DecodeError::Syntax { detail, len: l, .. } => {
            assert_eq!(*l, len, "Syntax names the body length");
            assert!(!detail.is_empty());
        }
        DecodeError::Shape {
            path,
            looked_for,
            found,
        } => {
            assert!(path.starts_with('$'), "path {path}");
            assert!(!looked_for.is_empty() && !found.is_empty());
        }
    }
}

/// Peak resident set size (`VmHWM`) and current (`VmRSS`) of this process, in KiB.
pub fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

// ---------------------------------------------------------------------------------------------
// JSON trees that keep key order and duplicates, and can hold bytes that are not JSON.

/// A JSON value for mutation: object keys in order, duplicates allowed; numbers as text (so
/// `1e400` or 30-digit integers survive); `Raw` bytes written verbatim (nesting bombs, invalid
/// UTF-8, broken escapes).
#[derive(Debug, Clone, PartialEq)]
pub enum J {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number, as written.
    Num(String),
    /// A string (escaped when written).
    Str(String),
    /// An array.
    Arr(Vec<J>),
    /// An object.
    Obj(Vec<(String, J)>),
    /// Bytes written as they are.
    Raw(Vec<u8>),
}

impl<'de> Deserialize<'de> for J {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = J;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("JSON")
            }
            fn visit_unit<E: de::Error>(self) -> Result<J, E> {
                Ok(J::Null)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<J, E> {
                Ok(J::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<J, E> {
                Ok(J::Num(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<J, E> {
                Ok(J::Num(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<J, E> {
                Ok(J::Num(v.to_string()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<J, E> {
                Ok(J::Str(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<J, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = a.next_element()? {
                    v.push(x);
                }
                Ok(J::Arr(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<J, A::Error> {
                let mut v = Vec::new();
                while let Some(kv) = a.next_entry()? {
                    v.push(kv);
                }
                Ok(J::Obj(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// How a tree is written: whitespace between tokens, and escapes in strings.
#[derive(Debug, Clone, Copy, Default)]
pub struct Style {
    /// Random whitespace (space, tab, CR, LF) between tokens.
    pub spaces: bool,
    /// Escape characters at random (`\u00e9`, surrogate pairs, `\/`), keys included.
    pub escapes: bool,
}

impl J {
    /// Writes the tree as JSON text (or not quite, with `Raw` parts).
    pub fn write(&self, out: &mut Vec<u8>, style: Style, rng: &mut impl Rng) {
        match self {
            J::Null => out.extend_from_slice(b"null"),
            J::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            J::Num(n) => out.extend_from_slice(n.as_bytes()),
            J::Str(s) => write_str(out, s, style, rng),
            J::Raw(b) => out.extend_from_slice(b),
            J::Arr(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    space(out, style, rng);
                    item.write(out, style, rng);
                }
                space(out, style, rng);
                out.push(b']');
            }
            J::Obj(entries) => {
                out.push(b'{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    space(out, style, rng);
                    write_str(out, k, style, rng);
                    space(out, style, rng);
                    out.push(b':');
                    space(out, style, rng);
                    v.write(out, style, rng);
                }
                space(out, style, rng);
                out.push(b'}');
            }
        }
    }

    /// The tree as bytes.
    pub fn to_bytes(&self, style: Style, rng: &mut impl Rng) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.write(&mut out, style, rng);
        out
    }

    fn entries_mut(&mut self) -> Option<&mut Vec<(String, J)>> {
        match self {
            J::Obj(e) => Some(e),
            _ => None,
        }
    }

    /// Sets `key` (the first entry of that name), adding it when absent.
    fn set(&mut self, key: &str, value: J) {
        if let J::Obj(e) = self {
            match e.iter_mut().find(|(k, _)| k == key) {
                Some(slot) => slot.1 = value,
                None => e.push((key.to_owned(), value)),
            }
        }
    }
}

fn space(out: &mut Vec<u8>, style: Style, rng: &mut impl Rng) {
    if style.spaces && rng.random_ratio(1, 3) {
        const WS: [&[u8]; 5] = [b" ", b"\n", b"\t", b"\r\n", b"  \n\t "];
        out.extend_from_slice(WS[rng.random_range(0..WS.len())]);
    }
}

fn write_str(out: &mut Vec<u8>, s: &str, style: Style, rng: &mut impl Rng) {
    if !style.escapes || s.len() > 4096 || rng.random_ratio(1, 2) {
        serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
        return;
    }
    out.push(b'"');
    let mut buf = [0u16; 2];
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '/' if rng.random_ratio(1, 2) => out.extend_from_slice(b"\\/"),
            c if (c as u32) < 0x20 || rng.random_ratio(1, 3) => {
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
    out.push(b'"');
}

// ---------------------------------------------------------------------------------------------
// Seeds and mutations.

/// One generated case: the pages of a cell, a Users body, or a body read as an error body.
#[derive(Debug, Clone)]
pub enum Case {
    /// Pages of one (user, window) cell.
    Cell {
        /// Channel-user id.
        user: String,
        /// Channel.
        channel: Option<String>,
        /// The cell window.
        window: Window,
        /// Page bodies.
        pages: Vec<Vec<u8>>,
    },
    /// A Users API body.
    Users(Vec<u8>),
    /// A body read as an error answer.
    ErrorBody(Vec<u8>),
}

impl Case {
    /// Body bytes in the case.
    pub fn bytes(&self) -> usize {
        match self {
            Case::Cell { pages, .. } => pages.iter().map(Vec::len).sum(),
            Case::Users(b) | Case::ErrorBody(b) => b.len(),
        }
    }

    /// The bodies, for a crash file.
    pub fn bodies(&self) -> Vec<&[u8]> {
        match self {
            Case::Cell { pages, .. } => pages.iter().map(Vec::as_slice).collect(),
            Case::Users(b) | Case::ErrorBody(b) => vec![b.as_slice()],
        }
    }
}

/// A real sandbox page: its bytes and tree.
pub struct SeedPage {
    /// Index into [`Seeds::users`].
    pub user: usize,
    /// The body as the sandbox serves it.
    pub body: Vec<u8>,
    /// The same, as a tree.
    pub tree: J,
    /// Messages on the page.
    pub messages: usize,
}

/// The seed corpus: real sandbox Conversations pages and Users bodies.
pub struct Seeds {
    /// Pages, a few messages to a few dozen each, every message type and timestamp form.
    pub pages: Vec<SeedPage>,
    /// Users bodies: every documented shape and id key.
    pub users_bodies: Vec<(Vec<u8>, J)>,
    /// (channel-user id, channel) of each sandbox user.
    pub users: Vec<(String, &'static str)>,
    /// The generated history: `[start_ms, end_ms)`.
    pub history: Window,
}

/// The stream of case `index` of a run seeded with `seed`.
pub fn case_rng(seed: u64, index: u64) -> ChaCha8Rng {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..].copy_from_slice(&index.to_le_bytes());
    ChaCha8Rng::seed_from_u64(xxh3_64(&key))
}

impl Seeds {
    /// Seeds from a sandbox dataset generated with `seed`: 24 users, 10 days, 2% malformed
    /// timestamps, 5% unknown types, 1% 20 KB pastes; pages of 1 to 30 messages.
    pub fn new(seed: u64) -> Self {
        let data = Dataset::generate(DataConfig {
            seed,
            users: 24,
            days: 10,
            sessions_per_user: 8.0,
            malformed_rate: 0.02,
            unknown_type_rate: 0.05,
            long_message_rate: 0.01,
            ..DataConfig::default()
        });
        let start = data.config.start_ms;
        let history = Window {
            start_ms: start,
            end_ms: start + i64::from(data.config.days) * 86_400_000,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let sandbox_users = data.users();
        let mut pages = Vec::new();
        for ui in 0..sandbox_users.len() {
            let all = data.messages_between(ui, i64::MIN, i64::MAX);
            let mut rest = &all[..];
            while !rest.is_empty() {
                let n = rng.random_range(1..=30usize).min(rest.len());
                let key = if rng.random_ratio(1, 5) {
                    "messages"
                } else {
                    "conversations"
                };
                let body = render_page(key, &rest[..n]);
                let tree = serde_json::from_slice(&body).expect("sandbox pages are JSON");
                pages.push(SeedPage {
                    user: ui,
                    body,
                    tree,
                    messages: n,
                });
                rest = &rest[n..];
            }
        }
        let users: Vec<(String, &'static str)> = sandbox_users
            .iter()
            .map(|u| (u.channel_user_id.clone(), u.channel))
            .collect();
        let mut users_bodies = Vec::new();
        for id_key in ["channel_user_id", "channelUserId", "user_id"] {
            let list = J::Arr(
                sandbox_users
                    .iter()
                    .map(|u| {
                        J::Obj(vec![
                            (id_key.into(), J::Str(u.channel_user_id.clone())),
                            ("channel".into(), J::Str(u.channel.into())),
                            ("user_name".into(), J::Str(u.user_name.clone())),
                            (
                                "attributes".into(),
                                J::Obj(
                                    u.attributes
                                        .iter()
                                        .map(|(k, v)| (k.clone(), J::Str(v.clone())))
                                        .collect(),
                                ),
                            ),
                        ])
                    })
                    .collect(),
            );
            for tree in users_shapes(list) {
                let body = tree.to_bytes(Style::default(), &mut rng);
                users_bodies.push((body, tree));
            }
        }
        Seeds {
            pages,
            users_bodies,
            users,
            history,
        }
    }

    /// Messages in all seed pages.
    pub fn messages(&self) -> usize {
        self.pages.iter().map(|p| p.messages).sum()
    }

    /// Case `index` of a run seeded with `seed`.
    pub fn case(&self, seed: u64, index: u64) -> Case {
        let mut rng = case_rng(seed, index);
        let roll = rng.random_range(0..100u32);
        if roll < 85 {
            let p = &self.pages[rng.random_range(0..self.pages.len())];
            let (user, channel) = &self.users[p.user];
            let window = self.window(&mut rng);
            let n = rng.random_range(1..=3usize);
            let pages = (0..n).map(|_| self.page(&mut rng)).collect();
            Case::Cell {
                user: user.clone(),
                channel: rng.random_ratio(9, 10).then(|| (*channel).to_owned()),
                window,
                pages,
            }
        } else if roll < 95 {
            Case::Users(self.users_body(&mut rng))
        } else {
            let body = match rng.random_range(0..3u32) {
                0 => self.page(&mut rng),
                1 => self.users_body(&mut rng),
                _ => error_body(&mut rng),
            };
            Case::ErrorBody(body)
        }
    }

    fn window(&self, rng: &mut impl Rng) -> Window {
        let h = self.history;
        match rng.random_range(0..10u32) {
            0..=6 => h,
            7 | 8 => {
                let day = rng.random_range(0..(h.end_ms - h.start_ms) / 86_400_000);
                let start_ms = h.start_ms + day * 86_400_000;
                Window {
                    start_ms,
                    end_ms: start_ms + 86_400_000,
                }
            }
            _ => Window {
                start_ms: i64::MIN,
                end_ms: i64::MAX,
            },
        }
    }

    /// One page: a seed, mutated with structure and/or bytes, or a made-up body.
    pub fn page(&self, rng: &mut impl Rng) -> Vec<u8> {
        let seed = &self.pages[rng.random_range(0..self.pages.len())];
        let style = Style {
            spaces: rng.random_ratio(1, 10),
            escapes: rng.random_ratio(1, 10),
        };
        match rng.random_range(0..100u32) {
            0..5 => seed.body.clone(),
            5..60 => self.mutated_page(seed, style, rng),
            60..85 => {
                let mut body = self.mutated_page(seed, style, rng);
                self.mutate_bytes(&mut body, rng);
                body
            }
            85..95 => {
                let mut body = seed.body.clone();
                self.mutate_bytes(&mut body, rng);
                body
            }
            _ => self.made_up_page(rng),
        }
    }

    fn mutated_page(&self, seed: &SeedPage, style: Style, rng: &mut impl Rng) -> Vec<u8> {
        let mut tree = seed.tree.clone();
        for _ in 0..rng.random_range(1..=4u32) {
            self.mutate_page(&mut tree, rng);
        }
        tree.to_bytes(style, rng)
    }

    fn users_body(&self, rng: &mut impl Rng) -> Vec<u8> {
        let (body, tree) = &self.users_bodies[rng.random_range(0..self.users_bodies.len())];
        let style = Style {
            spaces: rng.random_ratio(1, 10),
            escapes: rng.random_ratio(1, 10),
        };
        match rng.random_range(0..10u32) {
            0 => body.clone(),
            1..=6 => {
                let mut tree = tree.clone();
                for _ in 0..rng.random_range(1..=4u32) {
                    mutate_users(&mut tree, rng);
                }
                tree.to_bytes(style, rng)
            }
            7 | 8 => {
                let mut tree = tree.clone();
                mutate_users(&mut tree, rng);
                let mut body = tree.to_bytes(style, rng);
                self.mutate_bytes(&mut body, rng);
                body
            }
            _ => {
                let mut body = body.clone();
                self.mutate_bytes(&mut body, rng);
                body
            }
        }
    }

    /// One structural mutation of a page tree.
    fn mutate_page(&self, tree: &mut J, rng: &mut impl Rng) {
        let roll = rng.random_range(0..100u32);
        if roll < 12 {
            mutate_envelope(tree, rng);
            return;
        }
        let Some(list) = message_list(tree) else {
            mutate_envelope(tree, rng);
            return;
        };
        if roll < 22 || list.is_empty() {
            mutate_list(list, &self.pages, rng);
            return;
        }
        let i = rng.random_range(0..list.len());
        mutate_message(&mut list[i], self.history, rng);
    }

    /// Byte-level mutations (1 to 3).
    pub fn mutate_bytes(&self, body: &mut Vec<u8>, rng: &mut impl Rng) {
        for _ in 0..rng.random_range(1..=3u32) {
            if body.is_empty() {
                body.extend_from_slice(b"{");
            }
            let at = rng.random_range(0..body.len());
            match rng.random_range(0..8u32) {
                0 => body.truncate(at),
                1 => {
                    for _ in 0..rng.random_range(1..=8u32) {
                        let i = rng.random_range(0..body.len());
                        // Mostly below the top bit: a flip there breaks UTF-8, which the
                        // client refuses before the parser sees it.
                        let bit = if rng.random_ratio(1, 8) {
                            7
                        } else {
                            rng.random_range(0..7u32)
                        };
                        body[i] ^= 1 << bit;
                    }
                }
                2 => body[at] = interesting_byte(rng),
                3 => {
                    let n = rng.random_range(1..=8usize);
                    let bytes: Vec<u8> = (0..n)
                        .map(|_| {
                            if rng.random_ratio(1, 2) {
                                interesting_byte(rng)
                            } else {
                                rng.random()
                            }
                        })
                        .collect();
                    body.splice(at..at, bytes);
                }
                4 => {
                    let end = (at + rng.random_range(1..=64usize)).min(body.len());
                    body.drain(at..end);
                }
                5 => {
                    let end = (at + rng.random_range(1..=64usize)).min(body.len());
                    let copy = body[at..end].to_vec();
                    let to = rng.random_range(0..=body.len());
                    body.splice(to..to, copy);
                }
                6 => {
                    // Splice: this body's head, another page's tail.
                    let other = &self.pages[rng.random_range(0..self.pages.len())].body;
                    let from = rng.random_range(0..other.len());
                    body.truncate(at);
                    body.extend_from_slice(&other[from..]);
                }
                _ => {
                    // A multi-byte character cut, or an invalid sequence, inside the text.
                    const BAD: [&[u8]; 6] = [
                        b"\xff",
                        b"\xc3",
                        b"\xe2\x82",
                        b"\xed\xa0\x80",
                        b"\xc0\xaf",
                        b"\xf4\x90\x80\x80",
                    ];
                    body.splice(at..at, BAD[rng.random_range(0..BAD.len())].iter().copied());
                }
            }
        }
    }

    fn made_up_page(&self, rng: &mut impl Rng) -> Vec<u8> {
        let ts = J::Str("2026-08-03 10:00:00.000+0530".into());
        match rng.random_range(0..12u32) {
            0 => nested(b"[", b"]", rng.random_range(1..=10_000)),
            1 => nested(b"{\"a\":", b"}", rng.random_range(1..=10_000)),
            2 => {
                // Unclosed nesting.
                b"[".repeat(rng.random_range(1..=10_000))
            }
            3 => {
                let deep = J::Raw(nested(b"[", b"]", rng.random_range(100..=10_000)));
                let key = FIELDS[rng.random_range(0..FIELDS.len())];
                let msg = J::Obj(vec![("timestamp".into(), ts), (key.into(), deep)]);
                J::Obj(vec![("conversations".into(), J::Arr(vec![msg]))])
                    .to_bytes(Style::default(), rng)
            }
            4 => {
                let deep = J::Raw(nested(b"{\"x\":", b"}", rng.random_range(100..=10_000)));
                J::Obj(vec![
                    ("meta".into(), deep),
                    ("conversations".into(), J::Arr(vec![])),
                ])
                .to_bytes(Style::default(), rng)
            }
            5 => {
                // Numbers where strings belong, everywhere.
                let msg = J::Obj(
                    FIELDS
                        .iter()
                        .map(|k| ((*k).to_owned(), gen_number(rng)))
                        .collect(),
                );
                J::Obj(vec![("conversations".into(), J::Arr(vec![msg; 3]))])
                    .to_bytes(Style::default(), rng)
            }
            6 => {
                const SMALL: [&[u8]; 16] = [
                    b"",
                    b" ",
                    b"null",
                    b"0",
                    b"-0",
                    b"1e400",
                    b"\"x\"",
                    b"[]",
                    b"{}",
                    b"{\"conversations\":null}",
                    b"{\"conversations\":[]}{}",
                    b"\xef\xbb\xbf{\"conversations\":[]}",
                    b"{\"conversations\":[]} x",
                    b"{\"conversations\":[],}",
                    b"[1,]",
                    b"\0",
                ];
                SMALL[rng.random_range(0..SMALL.len())].to_vec()
            }
            7 => {
                // Invalid UTF-8 inside a string of a real page.
                let mut body = self.pages[rng.random_range(0..self.pages.len())]
                    .body
                    .clone();
                if let Some(q) = body.iter().rposition(|&b| b == b'"') {
                    body.splice(q..q, *b"\xff\xfe");
                }
                body
            }
            8 => {
                // Duplicate keys everywhere.
                let seed = &self.pages[rng.random_range(0..self.pages.len())];
                let mut tree = seed.tree.clone();
                if let Some(list) = message_list(&mut tree) {
                    for m in list.iter_mut() {
                        if let Some(e) = m.entries_mut() {
                            let copy = e.clone();
                            e.extend(copy);
                        }
                    }
                }
                if let Some(e) = tree.entries_mut() {
                    let copy = e.clone();
                    e.extend(copy);
                }
                tree.to_bytes(Style::default(), rng)
            }
            9 => {
                // Many tiny non-objects.
                let n = rng.random_range(0..2000usize);
                let mut body = b"[".to_vec();
                for i in 0..n {
                    if i > 0 {
                        body.push(b',');
                    }
                    gen_value(rng, 2).write(&mut body, Style::default(), rng);
                }
                body.push(b']');
                body
            }
            10 => gen_value(rng, 0).to_bytes(Style::default(), rng),
            _ => {
                // Random bytes.
                let n = rng.random_range(0..256usize);
                (0..n).map(|_| rng.random()).collect()
            }
        }
    }
}

fn users_shapes(list: J) -> Vec<J> {
    vec![
        J::Obj(vec![("users".into(), list.clone())]),
        list.clone(),
        J::Obj(vec![("responseObject".into(), list.clone())]),
        J::Obj(vec![
            (
                "status".into(),
                J::Obj(vec![
                    ("code".into(), J::Num("1000".into())),
                    ("desc".into(), J::Str("SUCCESS".into())),
                ]),
            ),
            (
                "responseObject".into(),
                J::Obj(vec![
                    ("content".into(), list.clone()),
                    ("totalElements".into(), J::Num("16".into())),
                ]),
            ),
        ]),
        J::Obj(vec![(
            "responseObject".into(),
            J::Obj(vec![("users".into(), list)]),
        )]),
    ]
}

/// The message list of a page tree: a top-level array, or the first array value of the
/// top-level object.
fn message_list(tree: &mut J) -> Option<&mut Vec<J>> {
    match tree {
        J::Arr(list) => Some(list),
        J::Obj(entries) => entries.iter_mut().find_map(|(_, v)| match v {
            J::Arr(list) => Some(list),
            _ => None,
        }),
        _ => None,
    }
}

fn mutate_envelope(tree: &mut J, rng: &mut impl Rng) {
    const KEYS: [&str; 8] = [
        "conversations",
        "messages",
        "Conversations",
        "data",
        "users",
        "",
        "conversation",
        "responseObject",
    ];
    let list = message_list(tree).map(std::mem::take).unwrap_or_default();
    fn key(rng: &mut impl Rng) -> String {
        KEYS[rng.random_range(0..KEYS.len())].to_owned()
    }
    match rng.random_range(0..8u32) {
        0 => *tree = J::Obj(vec![(key(rng), J::Arr(list))]),
        1 => {
            let k = key(rng);
            let v = gen_value(rng, 1);
            *tree = J::Obj(vec![(k, v)]);
        }
        2 => *tree = J::Arr(list),
        3 => {
            let inner = std::mem::replace(tree, J::Null);
            *tree = J::Obj(vec![("responseObject".into(), inner)]);
        }
        4 => {
            let k = key(rng);
            let v = gen_value(rng, 0);
            let mut entries = vec![("conversations".into(), J::Arr(list))];
            let at = rng.random_range(0..=entries.len());
            entries.insert(at, (k, v));
            *tree = J::Obj(entries);
        }
        5 => {
            // The list key twice: the first one wins.
            let other = J::Arr(list.iter().rev().cloned().collect());
            *tree = J::Obj(vec![
                ("conversations".into(), J::Arr(list)),
                ("conversations".into(), other),
            ]);
        }
        6 => *tree = J::Obj(vec![("messages".into(), J::Arr(list))]),
        _ => *tree = gen_value(rng, 0),
    }
}

fn mutate_list(list: &mut Vec<J>, pages: &[SeedPage], rng: &mut impl Rng) {
    match rng.random_range(0..6u32) {
        0 if !list.is_empty() => {
            let i = rng.random_range(0..list.len());
            let copy = list[i].clone();
            list.insert(i, copy);
        }
        1 if !list.is_empty() => {
            list.remove(rng.random_range(0..list.len()));
        }
        2 if list.len() > 1 => {
            let (a, b) = (
                rng.random_range(0..list.len()),
                rng.random_range(0..list.len()),
            );
            list.swap(a, b);
        }
        3 => {
            let v = gen_value(rng, 1);
            list.insert(rng.random_range(0..=list.len()), v);
        }
        4 => {
            // A message from another page.
            let other = &pages[rng.random_range(0..pages.len())].tree;
            if let J::Obj(e) = other
                && let Some((_, J::Arr(msgs))) = e.first()
                && !msgs.is_empty()
            {
                let m = msgs[rng.random_range(0..msgs.len())].clone();
                list.insert(rng.random_range(0..=list.len()), m);
            }
        }
        _ => list.clear(),
    }
}

fn mutate_message(msg: &mut J, history: Window, rng: &mut impl Rng) {
    if !matches!(msg, J::Obj(_)) {
        *msg = gen_value(rng, 1);
        return;
    }
    fn field(rng: &mut impl Rng) -> &'static str {
        FIELDS[rng.random_range(0..FIELDS.len())]
    }
    match rng.random_range(0..14u32) {
        0 => {
            let e = msg.entries_mut().expect("object");
            if !e.is_empty() {
                e.remove(rng.random_range(0..e.len()));
            }
        }
        1 => {
            // A key twice (serde refuses duplicate fields: a reject).
            let e = msg.entries_mut().expect("object");
            if !e.is_empty() {
                let (k, v) = e[rng.random_range(0..e.len())].clone();
                let v = if rng.random_ratio(1, 2) {
                    v
                } else {
                    gen_value(rng, 1)
                };
                e.insert(rng.random_range(0..=e.len()), (k, v));
            }
        }
        2 => {
            let e = msg.entries_mut().expect("object");
            if e.len() > 1 {
                let (a, b) = (rng.random_range(0..e.len()), rng.random_range(0..e.len()));
                let va = std::mem::replace(&mut e[a].1, J::Null);
                let vb = std::mem::replace(&mut e[b].1, va);
                e[a].1 = vb;
            }
        }
        3 | 4 => {
            let f = field(rng);
            let v = gen_value(rng, 1);
            msg.set(f, v);
        }
        5..=7 => {
            let v = gen_timestamp(history, rng);
            msg.set("timestamp", v);
        }
        8 | 9 => {
            let (kind, response) = gen_themed(rng);
            msg.set("message_type", kind);
            msg.set("response", response);
            if rng.random_ratio(1, 3) {
                msg.set(
                    "sender",
                    J::Str(["agent", "AGENT", "bot", "user", ""][rng.random_range(0..5)].into()),
                );
            }
        }
        10 => {
            let k = if rng.random_ratio(1, 2) {
                "file"
            } else {
                "media"
            };
            let v = gen_file(rng);
            msg.set(k, v);
        }
        11 => {
            // An unknown key, or a near miss of a known one.
            const NEAR: [&str; 8] = [
                "Timestamp",
                "time stamp",
                "timestamp ",
                "mime_type",
                "messageType",
                "",
                "sénder",
                "wa_message_id",
            ];
            let k = NEAR[rng.random_range(0..NEAR.len())];
            let v = gen_value(rng, 1);
            msg.entries_mut().expect("object").push((k.into(), v));
        }
        12 => {
            let depth = if rng.random_ratio(1, 4) {
                10_000
            } else {
                rng.random_range(1..=300)
            };
            let deep = if rng.random_ratio(1, 2) {
                nested(b"[", b"]", depth)
            } else {
                nested(b"{\"a\":", b"}", depth)
            };
            let f = field(rng);
            msg.set(f, J::Raw(deep));
        }
        _ => *msg = gen_value(rng, 1),
    }
}

fn mutate_users(tree: &mut J, rng: &mut impl Rng) {
    // The user list wherever it is.
    fn list(tree: &mut J) -> Option<&mut Vec<J>> {
        match tree {
            J::Arr(l) => Some(l),
            J::Obj(e) => e.iter_mut().find_map(|(_, v)| list(v)),
            _ => None,
        }
    }
    let roll = rng.random_range(0..10u32);
    if roll == 0 {
        const KEYS: [&str; 6] = ["users", "responseObject", "content", "data", "", "Users"];
        if let J::Obj(e) = tree
            && !e.is_empty()
        {
            let i = rng.random_range(0..e.len());
            e[i].0 = KEYS[rng.random_range(0..KEYS.len())].into();
        } else {
            *tree = gen_value(rng, 0);
        }
        return;
    }
    let Some(l) = list(tree) else {
        *tree = gen_value(rng, 0);
        return;
    };
    if l.is_empty() || roll == 1 {
        let v = gen_value(rng, 1);
        l.insert(rng.random_range(0..=l.len()), v);
        return;
    }
    let i = rng.random_range(0..l.len());
    let user = &mut l[i];
    let Some(e) = user.entries_mut() else {
        *user = gen_value(rng, 1);
        return;
    };
    const KEYS: [&str; 8] = [
        "channel_user_id",
        "channelUserId",
        "user_id",
        "channel",
        "user_name",
        "name",
        "attributes",
        "platform",
    ];
    match rng.random_range(0..5u32) {
        0 if !e.is_empty() => {
            e.remove(rng.random_range(0..e.len()));
        }
        1 => {
            let k = KEYS[rng.random_range(0..KEYS.len())];
            let v = gen_value(rng, 1);
            user.set(k, v);
        }
        2 => {
            let k = KEYS[rng.random_range(0..KEYS.len())];
            let v = gen_value(rng, 1);
            e.push((k.into(), v));
        }
        3 => {
            let v = J::Obj(
                (0..rng.random_range(0..5u32))
                    .map(|_| (gen_short_string(rng), gen_value(rng, 2)))
                    .collect(),
            );
            user.set("attributes", v);
        }
        _ => *user = gen_value(rng, 1),
    }
}

/// `open` x depth then `close` x depth.
pub fn nested(open: &[u8], close: &[u8], depth: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(depth * (open.len() + close.len()) + 1);
    for _ in 0..depth {
        v.extend_from_slice(open);
    }
    if open.ends_with(b":") {
        v.push(b'1');
    }
    for _ in 0..depth {
        v.extend_from_slice(close);
    }
    v
}

fn interesting_byte(rng: &mut impl Rng) -> u8 {
    const B: [u8; 20] = [
        b'"', b'\\', b'{', b'}', b'[', b']', b',', b':', b'0', b'-', b'e', b'n', b' ', 0x00, 0x1f,
        0x7f, 0x80, 0xc3, 0xed, 0xff,
    ];
    B[rng.random_range(0..B.len())]
}

/// A JSON value meant to be where it does not belong.
pub fn gen_value(rng: &mut impl Rng, depth: u32) -> J {
    match rng.random_range(0..100u32) {
        0..8 => J::Null,
        8..12 => J::Bool(rng.random()),
        12..35 => gen_number(rng),
        35..55 => J::Str(gen_short_string(rng)),
        55..72 => J::Str(gen_odd_string(rng)),
        72..74 => J::Str(gen_long_string(rng)),
        74..82 if depth < 3 => J::Arr(
            (0..rng.random_range(0..4u32))
                .map(|_| gen_value(rng, depth + 1))
                .collect(),
        ),
        82..90 if depth < 3 => J::Obj(
            (0..rng.random_range(0..4u32))
                .map(|_| (gen_short_string(rng), gen_value(rng, depth + 1)))
                .collect(),
        ),
        90..93 => J::Raw(nested(b"[", b"]", rng.random_range(1..=400))),
        93..97 => J::Raw(gen_broken_string(rng)),
        _ => J::Str(String::new()),
    }
}

fn gen_number(rng: &mut impl Rng) -> J {
    const NUMS: [&str; 24] = [
        "0",
        "-0",
        "1",
        "-1",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775808",
        "-9223372036854775809",
        "18446744073709551615",
        "18446744073709551616",
        "123456789012345678901234567890",
        "1e400",
        "-1e400",
        "1E+2",
        "1.5",
        "0.000001",
        "2.5e-324",
        "1786523607512",
        "1786523607",
        "99999999999",
        "100000000000",
        "1.786523607512e12",
        "-1786523607512",
        "1e11",
    ];
    match rng.random_range(0..4u32) {
        0 => J::Num(rng.random::<i64>().to_string()),
        1 => J::Num(format!("{:e}", rng.random::<f64>() * 1e300)),
        _ => J::Num(NUMS[rng.random_range(0..NUMS.len())].into()),
    }
}

fn gen_short_string(rng: &mut impl Rng) -> String {
    let n = rng.random_range(0..12usize);
    (0..n)
        .map(|_| char::from(rng.random_range(0x20u8..0x7f)))
        .collect()
}

const FRAGMENTS: [&str; 52] = [
    "",
    " ",
    "\0",
    "\u{7f}",
    "\u{80}",
    "\u{feff}",
    "\u{200d}",
    "\u{202e}",
    "é",
    "e\u{301}",
    "👩‍👩‍👧",
    "𝕏",
    "\u{fffd}",
    "\u{10ffff}",
    "१२३",
    "０",
    "\n",
    "\r\n",
    "\t",
    "<",
    ">",
    "&",
    "&amp;",
    "&#0;",
    "&#x110000;",
    "&#xFFFFFFFFFF;",
    "&#99999999999;",
    "&lt",
    "&unknown;",
    "<br>",
    "<p>",
    "</div>",
    "<!--",
    "<strong>x</strong>",
    "<a href=\"x\">",
    "<<>>",
    "[",
    "]",
    ", ",
    "[a, b]",
    "[]",
    "[ , ]",
    " - [image/jpeg]",
    "[/]",
    "{",
    "}",
    "\"",
    "\\",
    "{\"PARTICIPATION_MESSAGE\":",
    "null",
    "2026-08-12 14:03:27.512+0530",
    "⭐",
];

fn gen_odd_string(rng: &mut impl Rng) -> String {
    let n = rng.random_range(1..=6usize);
    (0..n)
        .map(|_| FRAGMENTS[rng.random_range(0..FRAGMENTS.len())])
        .collect()
}

fn gen_long_string(rng: &mut impl Rng) -> String {
    let len = if rng.random_ratio(1, 20) {
        rng.random_range(1 << 20..=2 << 20)
    } else {
        rng.random_range(1024..=64 << 10)
    };
    let unit = gen_odd_string(rng);
    let unit = if unit.is_empty() { "x".into() } else { unit };
    unit.repeat(len / unit.len() + 1)
}

/// A string token that is not valid JSON text, or not UTF-8.
fn gen_broken_string(rng: &mut impl Rng) -> Vec<u8> {
    const BROKEN: [&[u8]; 10] = [
        b"\"\\ud800\"",
        b"\"\\udc00\\ud800\"",
        b"\"\\u12\"",
        b"\"\\x41\"",
        b"\"\xff\xfe\"",
        b"\"\xc3\"",
        b"\"\xed\xa0\x80\"",
        b"\"\xc0\xaf\"",
        b"\"unterminated",
        b"\"tab\there\"",
    ];
    BROKEN[rng.random_range(0..BROKEN.len())].to_vec()
}

/// A timestamp value: a documented form of a time near the history, or a broken one.
pub fn gen_timestamp(history: Window, rng: &mut impl Rng) -> J {
    let span = history.end_ms - history.start_ms;
    let t = history.start_ms + rng.random_range(-span / 4..span + span / 4);
    let roll = rng.random_range(0..100u32);
    if roll < 12 {
        return match rng.random_range(0..8u32) {
            0 => J::Num(t.to_string()),
            1 => J::Num((t / 1000).to_string()),
            2 => J::Str(t.to_string()),
            3 => J::Str(format!(" {} ", t / 1000)),
            4 => J::Num(format!("{}.5", t)),
            5 => J::Num(format!("-{t}")),
            6 => J::Str("9".repeat(rng.random_range(12..=40))),
            _ => gen_value(rng, 1),
        };
    }
    let offsets: [i32; 7] = [0, 330, -300, 60, 345, -720, 840];
    let off = offsets[rng.random_range(0..offsets.len())];
    let local = t + i64::from(off) * 60_000;
    let days = local.div_euclid(86_400_000);
    let (y, m, d) = engati_etl::time::civil_from_days(days);
    let in_day = local.rem_euclid(86_400_000);
    let (hh, mm, ss, ms) = (
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000,
    );
    let sep = if rng.random_ratio(1, 4) { '/' } else { '-' };
    let t_sep = if rng.random_ratio(1, 4) { 'T' } else { ' ' };
    let frac_digits = rng.random_range(0..=10u32);
    let frac = match frac_digits {
        0 => String::new(),
        n => {
            let digits = format!("{ms:03}{:07}", rng.random_range(0..10_000_000u32));
            let dot = if rng.random_ratio(1, 8) { ',' } else { '.' };
            format!("{dot}{}", &digits[..n as usize])
        }
    };
    let (sign, oa) = (if off < 0 { '-' } else { '+' }, off.abs());
    let offset = match rng.random_range(0..8u32) {
        0..=2 => format!("{sign}{:02}{:02}", oa / 60, oa % 60),
        3 => format!("{sign}{:02}:{:02}", oa / 60, oa % 60),
        4 if oa % 60 == 0 => format!("{sign}{:02}", oa / 60),
        5 if off == 0 => ["Z", "z"][rng.random_range(0..2)].into(),
        6 => String::new(),
        _ => format!("{sign}{:02}{:02}", oa / 60, oa % 60),
    };
    let mut s = format!("{y:04}{sep}{m:02}{sep}{d:02}{t_sep}{hh:02}:{mm:02}:{ss:02}{frac}{offset}");
    if roll >= 55 {
        // Break it.
        match rng.random_range(0..10u32) {
            0 => s.replace_range(5..7, ["00", "13", "99"][rng.random_range(0..3)]),
            1 => s.replace_range(
                8..10,
                ["00", "32", "31", "30", "29"][rng.random_range(0..5)],
            ),
            2 => s.replace_range(11..13, ["24", "99", "-1"][rng.random_range(0..3)]),
            3 => s.replace_range(14..16, ["60", "6"][rng.random_range(0..2)]),
            4 => s.replace_range(17..19, ["60", "61"][rng.random_range(0..2)]),
            5 => {
                s.truncate(19);
                s.push_str(
                    [
                        "+2400", "+0060", "+05:3", "+5", "+05:300", "+", "-", "Z0", "UTC", "+0५30",
                    ][rng.random_range(0..10)],
                );
            }
            6 => {
                let at = rng.random_range(0..=s.len());
                let frag = FRAGMENTS[rng.random_range(0..FRAGMENTS.len())];
                if s.is_char_boundary(at) {
                    s.insert_str(at, frag);
                }
            }
            7 => {
                let at = rng.random_range(0..s.len());
                if s.is_char_boundary(at) {
                    s.truncate(at);
                }
            }
            8 => s = s.replace('0', "０"),
            _ => s.replace_range(
                0..4,
                ["0000", "9999", "-001", "20260"][rng.random_range(0..4)],
            ),
        }
    }
    J::Str(s)
}

/// A (message_type, response) pair of a type the normalizer treats specially.
fn gen_themed(rng: &mut impl Rng) -> (J, J) {
    let s = |v: &str| J::Str(v.into());
    match rng.random_range(0..6u32) {
        0 => {
            const OPTS: [&str; 10] = [
                "[a, b]",
                "[",
                "]",
                "[]",
                "[, ]",
                " [⭐, ⭐⭐] ",
                "[[nested], x]",
                "[a,b,c]",
                "[\u{0}, \u{feff}]",
                "no list",
            ];
            let r = if rng.random_ratio(4, 5) {
                s(OPTS[rng.random_range(0..OPTS.len())])
            } else {
                gen_value(rng, 1)
            };
            (s("OPTIONS"), r)
        }
        1 => {
            let inner = match rng.random_range(0..7u32) {
                0 => format!(
                    "{{\"agentId\":1,\"PARTICIPATION_MESSAGE\":{}}}",
                    serde_json::to_string(&gen_odd_string(rng)).expect("string")
                ),
                1 => "{\"PARTICIPATION_MESSAGE\":12}".into(),
                2 => "{\"PARTICIPATION_MESSAGE\":null}".into(),
                3 => "{\"PARTICIPATION_MESSAGE\":{\"x\":[1]}}".into(),
                4 => "{\"PARTICIPATION_MESSAGE\":\"<b>x".into(),
                5 => format!(
                    "{{\"PARTICIPATION_MESSAGE\":\"x\",\"deep\":{}}}",
                    String::from_utf8(nested(b"[", b"]", rng.random_range(1..=2000)))
                        .expect("ASCII")
                ),
                _ => gen_odd_string(rng),
            };
            let r = if rng.random_ratio(9, 10) {
                J::Str(inner)
            } else {
                gen_value(rng, 1)
            };
            (s("AGENT_PARTICIPATION_STATUS"), r)
        }
        2 => {
            const PLACEHOLDERS: [&str; 6] = [
                "User uploaded a.jpeg - [image/jpeg]",
                "User uploaded a - []",
                "[",
                "]",
                "x [/]",
                "User uploaded a.pdf - [application/pdf] ",
            ];
            (
                s("FILE_RECEIVED"),
                s(PLACEHOLDERS[rng.random_range(0..PLACEHOLDERS.len())]),
            )
        }
        3 => (s("TEXT"), J::Str(gen_odd_string(rng))),
        4 => {
            const KINDS: [&str; 7] = [
                "",
                "X_STATUS",
                "_EVENT",
                "LOCATION",
                "CAROUSEL",
                "télé",
                "FILE_RECEIVED ",
            ];
            (
                s(KINDS[rng.random_range(0..KINDS.len())]),
                gen_value(rng, 1),
            )
        }
        _ => (gen_value(rng, 1), gen_value(rng, 1)),
    }
}

fn gen_file(rng: &mut impl Rng) -> J {
    match rng.random_range(0..6u32) {
        0 => J::Null,
        1 => J::Obj(vec![
            ("url".into(), J::Str(gen_odd_string(rng))),
            ("mimeType".into(), J::Str(gen_odd_string(rng))),
            ("uploadType".into(), J::Str("IMAGE".into())),
        ]),
        2 => J::Obj(vec![
            ("value".into(), J::Str("https://x/y.jpg".into())),
            ("mimeType".into(), J::Str("image/jpeg".into())),
            ("mime_type".into(), J::Str("image/png".into())),
        ]),
        3 => J::Obj(vec![
            ("url".into(), gen_value(rng, 2)),
            ("mime_type".into(), gen_value(rng, 2)),
        ]),
        4 => J::Obj(vec![("url".into(), J::Str(gen_long_string(rng)))]),
        _ => gen_value(rng, 1),
    }
}

fn error_body(rng: &mut impl Rng) -> Vec<u8> {
    let status = J::Obj(vec![
        ("code".into(), gen_value(rng, 2)),
        ("desc".into(), gen_value(rng, 2)),
        ("message".into(), gen_value(rng, 2)),
    ]);
    let tree = match rng.random_range(0..4u32) {
        0 => J::Obj(vec![
            ("status".into(), status),
            ("error_details".into(), gen_value(rng, 1)),
        ]),
        1 => J::Obj(vec![
            ("type".into(), J::Str("about:blank".into())),
            ("title".into(), gen_value(rng, 1)),
            ("status".into(), gen_number(rng)),
            ("detail".into(), gen_value(rng, 1)),
        ]),
        2 => J::Raw(b"<html><body>502 Bad Gateway</body></html>".to_vec()),
        _ => J::Raw(nested(b"{\"status\":", b"}", rng.random_range(1..=10_000))),
    };
    tree.to_bytes(Style::default(), rng)
}

// ---------------------------------------------------------------------------------------------
// Heavy adversarial bodies.

/// The large adversarial bodies, built one at a time.
pub mod heavy {
    use super::*;

    /// Bytes in a "50 MB" body.
    pub const MB50: usize = 50_000_000;

    /// A page of real messages (repeated) of at least `bytes` bytes.
    pub fn page_of_real_messages(seeds: &Seeds, bytes: usize) -> Vec<u8> {
        let mut msgs: Vec<&[u8]> = Vec::new();
        for p in &seeds.pages {
            let Ok(spans) = wire::parse_conversations_page(&p.body, &["conversations".into()])
            else {
                continue;
            };
            msgs.extend(spans.into_iter().map(|s| &p.body[s]));
        }
        let mut body = Vec::with_capacity(bytes + (64 << 10));
        body.extend_from_slice(b"{\"conversations\":[");
        let mut i = 0;
        while body.len() < bytes {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(msgs[i % msgs.len()]);
            i += 1;
        }
        body.extend_from_slice(b"]}");
        body
    }

    /// One message whose `response` is a string of `bytes` bytes (escapes and non-ASCII in it).
    pub fn one_huge_message(bytes: usize) -> Vec<u8> {
        let mut body = Vec::with_capacity(bytes + 256);
        body.extend_from_slice(
            b"{\"conversations\":[{\"sender\":\"user\",\"message_type\":\"TEXT\",\"timestamp\":\"2026-08-03 10:00:00.000+0530\",\"response\":\"",
        );
        let unit = "Hello \\\"world\\\" \\u00e9 नमस्ते 😊 ".as_bytes();
        while body.len() < bytes {
            body.extend_from_slice(unit);
        }
        body.extend_from_slice(b"\"}]}");
        body
    }

    /// A top-level array of `bytes` bytes of `item`s (every one a reject: not an object).
    pub fn many_items(item: &[u8], bytes: usize) -> Vec<u8> {
        let mut body = Vec::with_capacity(bytes + 16);
        body.push(b'[');
        while body.len() < bytes {
            if body.len() > 1 {
                body.push(b',');
            }
            body.extend_from_slice(item);
        }
        body.push(b']');
        body
    }

    /// Bodies nested `depth` levels in every place that matters, with what must become of
    /// each page: `Some(n)` read with `n` rejects, `None` refused (a decode error).
    pub fn nesting(depth: usize) -> Vec<(&'static str, Vec<u8>, Option<u64>)> {
        let arr = String::from_utf8(nested(b"[", b"]", depth)).expect("ASCII");
        let obj = String::from_utf8(nested(b"{\"a\":", b"}", depth)).expect("ASCII");
        let ts = "\"timestamp\":\"2026-08-03 10:00:00.000+0530\"";
        vec![
            ("top-level array", arr.clone().into_bytes(), Some(1)),
            ("top-level object", obj.clone().into_bytes(), None),
            (
                "a message's response (kept verbatim: a row)",
                format!("{{\"conversations\":[{{{ts},\"response\":{arr}}}]}}").into_bytes(),
                Some(0),
            ),
            (
                "a message's sender",
                format!("{{\"conversations\":[{{{ts},\"sender\":{obj}}}]}}").into_bytes(),
                Some(1),
            ),
            (
                "a message's unknown field",
                format!("{{\"conversations\":[{{{ts},\"extra\":{obj}}}]}}").into_bytes(),
                Some(0),
            ),
            (
                "a list item",
                format!("{{\"conversations\":[{arr},{{{ts}}}]}}").into_bytes(),
                Some(1),
            ),
            (
                "an envelope key beside the list",
                format!("{{\"meta\":{obj},\"conversations\":[{{{ts}}}]}}").into_bytes(),
                Some(0),
            ),
            ("unclosed", "[".repeat(depth).into_bytes(), None),
        ]
    }

    /// A Users response (`{"users": [...]}`) of `n` users like the sandbox's.
    pub fn users_body(n: usize) -> Vec<u8> {
        let mut body = Vec::with_capacity(n * 200 + 16);
        body.extend_from_slice(b"{\"users\":[");
        for i in 0..n {
            if i > 0 {
                body.push(b',');
            }
            let _ = write!(
                body,
                "{{\"channel_user_id\":\"91{:010}\",\"channel\":\"whatsapp\",\"user_name\":\"User {i}\",\"attributes\":{{\"feedback\":\"{}\",\"segment\":\"vip\",\"opt1\":\"yes\",\"city\":\"Pune\",\"language\":\"en\"}}}}",
                7_000_000_000u64 + i as u64,
                i % 5 + 1
            );
        }
        body.extend_from_slice(b"]}");
        body
    }
}
