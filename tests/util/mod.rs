//! Test helpers: a fresh sandbox per test, the real binary, and readers for the output.

#![allow(dead_code)]

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMillisecondType;
use engati_etl::sandbox::{self, SandboxConfig, SandboxHandle, StoredMessage};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

pub mod s3;

/// Starts a sandbox on 127.0.0.1:0.
pub async fn start(cfg: SandboxConfig) -> SandboxHandle {
    sandbox::start(SandboxConfig { port: 0, ..cfg })
        .await
        .expect("sandbox starts")
}

/// A small default dataset (fast tests).
pub fn small() -> SandboxConfig {
    let mut c = SandboxConfig::default();
    c.data.users = 24;
    c.data.days = 10;
    c
}

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_engati-etl")
}

/// Runs the binary with `args` and the sandbox key in ENGATI_API_KEY (unless `key` is None).
pub async fn run(args: &[String], key: Option<&str>) -> Output {
    let env: Vec<(&str, &str)> = key.map(|k| ("ENGATI_API_KEY", k)).into_iter().collect();
    run_env(args, &env).await
}

/// A hermetic command for the binary: no ENGATI_* / CRM variables from the caller.
pub fn command(args: &[String], env: &[(&str, &str)]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(bin());
    cmd.args(args).env("RUST_LOG", "warn").kill_on_drop(true);
    for v in [
        "ENGATI_API_KEY",
        "ENGATI_PROVIDER",
        "ENGATI_BASE_URL",
        "ENGATI_CUSTOMER_ID",
        "ENGATI_BOT_KEY",
        "ENGATI_ETL_OUT",
        "ENGATI_API_KEY_FILE",
        "HUBSPOT_ACCESS_TOKEN",
        "BOTTLECRM_TOKEN",
        "XDG_DATA_HOME",
    ] {
        cmd.env_remove(v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs the binary with these environment variables (and none of the caller's ENGATI_*).
pub async fn run_env(args: &[String], env: &[(&str, &str)]) -> Output {
    let mut cmd = command(args, env);
    tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .expect("the binary finishes within 5 minutes")
        .expect("the binary runs")
}

/// Text of stdout and stderr, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `export` flags for a sandbox (add --attribute/--users-file, --format, --out, extras).
pub fn export_args(sb: &SandboxHandle, since: &str, until: &str) -> Vec<String> {
    [
        "export",
        "--provider",
        "custom",
        "--base-url",
        &sb.base_url,
        "--customer-id",
        &sb.ids.customer_id,
        "--bot-key",
        &sb.ids.bot_key,
        "--since",
        since,
        "--until",
        until,
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Appends flags.
pub fn with(mut args: Vec<String>, more: &[&str]) -> Vec<String> {
    args.extend(more.iter().map(|s| s.to_string()));
    args
}

/// A comparable message: (user, sent_at ms, sender, type, content).
pub type Key = (String, i64, Option<String>, Option<String>, Option<String>);

/// A row read back from the output.
#[derive(Debug, Clone)]
pub struct Row {
    pub message_id: String,
    pub key: Key,
    pub direction: String,
    pub text: Option<String>,
    pub raw_json: String,
    pub channel: Option<String>,
    pub options: Option<Vec<String>>,
    pub file_url: Option<String>,
}

/// All files under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Data files under `out/messages` with the given suffix (`.parquet`, `.jsonl`, `.jsonl.gz`),
/// as a reader's glob sees them (`*.parquet` etc.; hidden staged files excluded by the glob
/// only if they do not end with the suffix).
pub fn message_files(out: &Path, suffix: &str) -> Vec<PathBuf> {
    files_under(&out.join("messages"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect()
}

/// Reads every `*.parquet` under `out/messages`.
pub fn read_parquet(out: &Path) -> Vec<Row> {
    read_parquet_files(&message_files(out, ".parquet"))
}

/// The rows of a Delta table at the local directory `table`: the files its log says are
/// active (through the `deltalake` crate), read back.
pub async fn read_delta(table: &Path) -> Vec<Row> {
    let url = reqwest::Url::from_directory_path(std::fs::canonicalize(table).unwrap()).unwrap();
    let t = deltalake::open_table(url).await.expect("a Delta table");
    let files: Vec<PathBuf> = t
        .get_file_uris()
        .unwrap()
        .map(|u| {
            let u = u.strip_prefix("file://").unwrap_or(&u).to_owned();
            PathBuf::from(percent_decode(&u))
        })
        .collect();
    read_parquet_files(&files)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// Reads the rows of Parquet files (timestamps in ms or µs).
pub fn read_parquet_files(files: &[PathBuf]) -> Vec<Row> {
    let mut rows = Vec::new();
    for f in files {
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(f).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let b = batch.unwrap();
            let s = |name: &str| b.column_by_name(name).unwrap().as_string::<i32>().clone();
            let (id, user, sender, kind, content, dir, text, raw, channel, url) = (
                s("message_id"),
                s("channel_user_id"),
                s("sender"),
                s("message_type"),
                s("content"),
                s("direction"),
                s("text"),
                s("raw_json"),
                s("channel"),
                s("file_url"),
            );
            let ms = arrow_schema::DataType::Timestamp(arrow_schema::TimeUnit::Millisecond, None);
            let sent = arrow_cast::cast(b.column_by_name("sent_at").unwrap(), &ms).unwrap();
            let sent = sent.as_primitive::<TimestampMillisecondType>().clone();
            let opts = b
                .column_by_name("options")
                .unwrap()
                .as_list::<i32>()
                .clone();
            let opt = |a: &arrow_array::StringArray, i: usize| {
                (!a.is_null(i)).then(|| a.value(i).to_owned())
            };
            for i in 0..b.num_rows() {
                rows.push(Row {
                    message_id: id.value(i).to_owned(),
                    key: (
                        user.value(i).to_owned(),
                        sent.value(i),
                        opt(&sender, i),
                        opt(&kind, i),
                        opt(&content, i),
                    ),
                    direction: dir.value(i).to_owned(),
                    text: opt(&text, i),
                    raw_json: raw.value(i).to_owned(),
                    channel: opt(&channel, i),
                    options: (!opts.is_null(i)).then(|| {
                        let v = opts.value(i);
                        let v = v.as_string::<i32>();
                        (0..v.len()).map(|j| v.value(j).to_owned()).collect()
                    }),
                    file_url: opt(&url, i),
                });
            }
        }
    }
    rows
}

/// Reads JSON lines of a file (gz or not).
pub fn json_lines(f: &Path) -> Vec<serde_json::Value> {
    use std::io::Read;
    let mut text = String::new();
    let file = std::fs::File::open(f).unwrap();
    if f.to_string_lossy().ends_with(".gz") {
        flate2::read::MultiGzDecoder::new(file)
            .read_to_string(&mut text)
            .unwrap();
    } else {
        std::io::BufReader::new(file)
            .read_to_string(&mut text)
            .unwrap();
    }
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A row from a JSONL object.
pub fn row_from_json(v: &serde_json::Value) -> Row {
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    let sent = engati_etl::engati::wire::parse_datetime(v["sent_at"].as_str().unwrap()).unwrap();
    Row {
        message_id: s("message_id").unwrap(),
        key: (
            s("channel_user_id").unwrap(),
            sent,
            s("sender"),
            s("message_type"),
            s("content"),
        ),
        direction: s("direction").unwrap(),
        text: s("text"),
        raw_json: s("raw_json").unwrap(),
        channel: s("channel"),
        options: v["options"]
            .as_array()
            .map(|a| a.iter().map(|x| x.as_str().unwrap().to_owned()).collect()),
        file_url: s("file_url"),
    }
}

/// Reads every `*.jsonl` / `*.jsonl.gz` under `out/messages`.
pub fn read_jsonl(out: &Path) -> Vec<Row> {
    let mut rows = Vec::new();
    for f in files_under(&out.join("messages")) {
        let name = f.to_string_lossy();
        if name.ends_with(".jsonl") || name.ends_with(".jsonl.gz") {
            rows.extend(json_lines(&f).iter().map(row_from_json));
        }
    }
    rows
}

/// Channel-user ids matching any of the filters, per the sandbox's own data.
pub fn matching(sb: &SandboxHandle, filters: &[(&str, &str)]) -> Vec<String> {
    let mut ids = BTreeSet::new();
    for (k, v) in filters {
        for u in sb.data().users_matching(k, v) {
            ids.insert(u.channel_user_id.clone());
        }
    }
    ids.into_iter().collect()
}

/// The messages the sandbox holds for `users` in `[since, until)` with a readable timestamp.
pub fn expected(sb: &SandboxHandle, users: &[String], since: i64, until: i64) -> Vec<Key> {
    let mut out = Vec::new();
    for u in users {
        let i = sb.data().user_index(u).unwrap();
        for m in sb.data().messages_between(i, since, until) {
            if m.ts_form == engati_etl::sandbox::dataset::MALFORMED {
                continue;
            }
            out.push(key_of(u, &m));
        }
    }
    out.sort();
    out
}

/// The key of a stored message.
pub fn key_of(user: &str, m: &StoredMessage) -> Key {
    (
        user.to_owned(),
        m.ts_ms,
        Some(m.sender.to_owned()),
        Some(m.message_type.to_owned()),
        Some(m.response.to_string()),
    )
}

/// Sorted keys of rows.
pub fn keys(rows: &[Row]) -> Vec<Key> {
    let mut k: Vec<Key> = rows.iter().map(|r| r.key.clone()).collect();
    k.sort();
    k
}

/// Asserts the output equals the expectation row for row, with unique message ids.
pub fn assert_same(rows: &[Row], want: &[Key], context: &str) {
    let got = keys(rows);
    if got != want {
        let g: HashSet<&Key> = got.iter().collect();
        let w: HashSet<&Key> = want.iter().collect();
        let missing: Vec<_> = want.iter().filter(|k| !g.contains(k)).take(5).collect();
        let extra: Vec<_> = got.iter().filter(|k| !w.contains(k)).take(5).collect();
        panic!(
            "{context}: {} rows, want {}; missing (first 5): {missing:?}; unexpected (first 5): {extra:?}",
            got.len(),
            want.len()
        );
    }
    let ids: HashSet<&str> = rows.iter().map(|r| r.message_id.as_str()).collect();
    assert_eq!(ids.len(), rows.len(), "{context}: duplicate message_id");
}

/// ms since epoch of a UTC date.
pub fn day(s: &str) -> i64 {
    engati_etl::time::parse_user_instant(s, 0).unwrap()
}

/// Writes a pipeline file for `sb` and returns its path.
pub fn pipeline_file(
    dir: &Path,
    sb: &SandboxHandle,
    range: &str,
    sink: &str,
    attributes: &[&str],
) -> PathBuf {
    let attrs: Vec<String> = attributes.iter().map(|a| format!("\"{a}\"")).collect();
    let text = format!(
        "[source]\nprovider = \"custom\"\nbase_url = \"{}\"\ncustomer_id = \"{}\"\nbot_key = \"{}\"\nattributes = [{}]\n[range]\n{range}\n[sink]\n{sink}\n",
        sb.base_url,
        sb.ids.customer_id,
        sb.ids.bot_key,
        attrs.join(", ")
    );
    let p = dir.join(format!("pipeline-{}.toml", rand_suffix()));
    std::fs::write(&p, text).unwrap();
    p
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Args from string slices.
pub fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// The run report of an output.
pub fn report(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("_run_report.json")).unwrap()).unwrap()
}

/// Files whose name ends with `.tmp` (staged files a reader must never see).
pub fn staged_files(out: &Path) -> Vec<PathBuf> {
    files_under(out)
        .into_iter()
        .filter(|f| f.to_string_lossy().ends_with(".tmp"))
        .collect()
}
